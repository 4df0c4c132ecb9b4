"""The subcommands of a corpus's CLI, built from its presets: prepare, train, sample, evaluate, convert, demo.

    COMMANDS = commands.subcommands(PRESETS, DEMOS, prog="python -m experiments.text8")
    commands.main(COMMANDS, argv, prog="python -m experiments.text8", description="...")

Each subcommand first runs the cheap checks (every value, when its dataclass is built; then the paths,
``experiments/paths.py``) and returns its work, which ``main`` runs unless ``check_only``.  The work
itself lives in the library (``nanodd.shell.trainer``, ``nanodd.shell.workflows``); this file parses and
prints.

``subcommands`` makes them afresh for each command line, as closures whose annotations are what tyro
parses: the choice of preset (``train``, ``demo``) from the table it is given, and ``sample``'s options
from the samplers registered then (``nanodd.samplers.register``), so one registered since is on the
command line too.  (Hence no ``from __future__ import annotations`` here: an annotation must be the
object, not a name looked up in this module.)
"""

import dataclasses
import functools
import json
import shutil
import sys
import time
import typing
from pathlib import Path
from typing import Annotated, Callable, Literal, Sequence

import tyro

import nanodd.checks as checks
from experiments import cli, unmasking
from experiments.distill import distilled_steps
from experiments.paths import check_checkpoint, check_corpus, check_directory, check_file, check_writable
from experiments.presets import Preset, choice
from nanodd import config as config_lib
from nanodd.config import Config, DataConfig, check_source, validate
from nanodd.data.prepare import atomic_write, prepare_data
from nanodd.evaluate import char_entropy
from nanodd.samplers import SAMPLERS, default_sampler
from nanodd.shell import dist
from nanodd.shell.lock import run_lock
from nanodd.shell.trainer import train as run_training
from nanodd.shell.workflows import (
    Estimator,
    check_judge,
    check_empty_run_dir,
    check_pattern,
    condition_of,
    convert_nanodd,
    evaluate_checkpoint,
    generate as sample_text,
    judge_bpb,
    load_checkpoint,
    load_judge,
    sample_metrics,
)

Work = Callable[[], None]
"""What a subcommand returns once its checks pass: the work itself (train, sample, ...)."""
DEMO_SAMPLE = {"batch_size": 2, "top_p": 0.9}
"""What ``demo`` samples by default, where it differs from ``sample``."""


def check_data(data: DataConfig) -> None:
    """A corpus that exists, a data directory that can be one, a GPT-2 ranks file that exists."""
    check_corpus("--data.source", data.source, data.tokenizer, must_exist=True)
    check_directory("--data.data-dir", data.data_dir, must_exist=False)
    check_file("--data.tokenizer-file", data.tokenizer_file)


def check_training(cfg: Config) -> None:
    """What training needs before it starts: sections that agree, a corpus, directories where they go."""
    validate(cfg)
    check_data(cfg.data)
    check_directory("--train.out-dir", cfg.train.out_dir, must_exist=False)
    check_checkpoint("--train.init-from", cfg.train.init_from)  # what it holds is checked when training loads it


@dataclasses.dataclass(frozen=True)
class CommonSampleOptions:
    """What ``sample`` takes whatever the sampler; ``sample_options`` adds each sampler's own options."""

    batch_size: int = 1
    """Sequences to generate."""
    sampler: str | None = None
    """The sampler's name in ``nanodd.samplers.SAMPLERS`` (default: ancestral, or analytic for a ratio network)."""
    steps: int | None = None
    """Sampling steps (default: the model's T, or 1000 in continuous time; confidence: the length;
    first-hitting takes none), at most T, or 1,000,000 in continuous time.  Fewer steps reveal several
    tokens per step."""
    prefix: str = ""
    """Fixed opening text, encoded by the checkpoint's tokenizer (text8: a-z and space only); the sampler
    writes the rest."""
    infill: str = ""
    """Fixed text with '_' where the sampler writes, one token per '_' (text8: one character, e.g.
    "the q___k brown f__"; BPE: "The king ___ to the castle" lets it write 3 tokens there); the text
    between gaps is encoded as written, and positions past the pattern's end are written too."""
    seed: int = 0
    """Seed of the sampler's generator."""
    temperature: float = 1.0
    """Divide the logits by this before drawing a token."""
    top_p: float = 1.0
    """Nucleus sampling: draw only from the smallest set of tokens holding this probability."""
    top_k: int = 0
    """Draw only from the k most likely tokens (0: all)."""
    ema: bool = True
    """Use the EMA weights (--sample.no-ema: the raw trained weights)."""
    live: bool = True
    """Show the unmasking of the first sequence as it happens (on a terminal)."""
    out: str | None = None
    """Write the samples to this file (one per line) instead of stdout."""
    gif: str | None = None
    """Also draw the unmasking of the first sequence into this animated GIF (masked positions as grey
    blocks; needs Pillow: pip install -e '.[plot]')."""
    gif_every: int | None = None
    """A GIF frame every this many sampler steps, and one after the last (default: about 48 frames)."""
    gif_ms: int = 80
    """How long each GIF frame shows, in milliseconds (the finished sample stays 2 s)."""
    judge: str | None = None
    """An autoregressive judge checkpoint trained on the same tokenizer (train ar-demo, ar-text8, ...):
    print its bits per byte on the samples (gen-BPC for text8, where a byte is a character; lower is more
    plausible) with the samples' unigram entropy."""
    metrics: bool = False
    """Print sample metrics against the training data (word-in-vocabulary fraction, character
    entropies, word length), using the first 10M characters of its prepared training split."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run the network ('auto': CUDA when available)."""
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    """Autocast precision of the network ('auto': bf16 on CUDA and on CPUs with native bf16, else fp32).
    Categorical draws are float64 whatever this says."""

    def __post_init__(self):
        checks.at_least("batch_size", self.batch_size, 1)
        if self.steps is not None:
            checks.at_least("steps", self.steps, 1)
        check_pattern(self.prefix, self.infill)
        checks.seed("seed", self.seed)
        checks.positive("temperature", self.temperature)
        checks.require("top_p", 0 < self.top_p <= 1, "be in (0, 1]", self.top_p)
        checks.at_least("top_k", self.top_k, 0)
        checks.named("out", self.out)
        checks.named("gif", self.gif)
        if self.gif_every is not None:
            checks.at_least("gif_every", self.gif_every, 1)
        checks.at_least("gif_ms", self.gif_ms, 1)
        checks.named("judge", self.judge)

    def check_paths(self) -> None:
        check_writable("--sample.out", self.out)
        if self.gif is not None:
            check_writable("--sample.gif", self.gif)
            unmasking.require_pillow()
        check_checkpoint("--sample.judge", self.judge)


def options_field(sampler: str) -> str:
    """The field of ``sample_options()`` holding a sampler's options (``--sample.<name>.*``)."""
    return sampler.replace("-", "_")


def sample_options(**defaults) -> type:
    """``CommonSampleOptions`` with the samplers registered now (``nanodd.samplers.register``): ``--sample.sampler``
    takes their names, its help lists their ``SUMMARY``, and each sampler's ``Options`` is a field named after
    it (``--sample.remdm.eta``).  ``defaults`` replaces common fields' defaults (the demo's).  Generated
    fields rather than a tyro union of options: a union would make the options a subcommand
    (``sample.options:remdm``), not the flags every sampler's options have always had."""
    hints = typing.get_type_hints(CommonSampleOptions)
    menu = "; ".join(f"{name} ({sampler.SUMMARY})" for name, sampler in SAMPLERS.items())
    choice = Literal[tuple(SAMPLERS)] | None
    text = f"The sampler (nanodd.samplers): {menu}.  Default: ancestral, or analytic for a ratio network (SEDD)."
    fields = [("sampler", Annotated[choice, tyro.conf.arg(help=text)], None)]
    fields += [(name, hints[name], dataclasses.field(default=value)) for name, value in defaults.items()]
    for name, sampler in SAMPLERS.items():
        if options_field(name) in hints:
            raise ValueError(f"a sampler named {name!r} would shadow the sample option of that name")
        option = Annotated[sampler.Options, tyro.conf.arg(help=f"Options of the {name} sampler.")]
        fields.append((options_field(name), option, dataclasses.field(default_factory=sampler.Options)))
    return dataclasses.make_dataclass("SampleOptions", fields, bases=(CommonSampleOptions,), frozen=True)


SampleOptions, DemoSampleOptions = sample_options(), sample_options(batch_size=2, top_p=0.9)
"""The options of ``sample`` and ``demo`` for the samplers registered at import; ``main`` rebuilds them
when it parses, so that a sampler registered since is on the command line too."""


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    split: Literal["val", "test"] = "val"
    estimator: Estimator = "stratified"
    """The checkpoint's own bound (D3PM: L_T; MDLM: L_inf, or L_T if trained with --method.T):
    stratified: t stratified over chunks (n_t network calls per chunk); exact: a discrete bound with
    all T steps summed for every chunk (T calls per chunk); continuous: the same integrand as T -> inf
    (L_inf); elbo-vs-t: L_T for T in 10, 20, 100, 256, 1000 and L_inf, with shared noise."""
    n_t: int = 1
    """Times per chunk for stratified, continuous and elbo-vs-t."""
    max_chunks: int | None = None
    """Evaluate only the first N canonical chunks (default: the whole split)."""
    seq_len: int | None = None
    """A check, not a setting: must equal the checkpoint's sequence length, which every chunk has."""
    batch_size: int = 64
    """(chunk, time) pairs per network call."""
    seed: int = 0
    """Seed of the evaluation's generator (times and masks)."""
    ema: bool = True
    """Evaluate the EMA weights (--eval.no-ema: the raw weights)."""
    data_source: str | None = None
    """Corpus to evaluate on (default: the one the checkpoint was trained on); must be prepared."""
    data_dir: str | None = None
    """Where prepared data lives (default: $NANODD_CACHE, else ~/.cache/nanodd)."""
    out: str | None = None
    """Also write the JSON report to this file."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run the network ('auto': CUDA when available)."""

    def __post_init__(self):
        for name in ("max_chunks", "seq_len"):
            if getattr(self, name) is not None:
                checks.at_least(name, getattr(self, name), 1)
        checks.at_least("n_t", self.n_t, 1)
        checks.at_least("batch_size", self.batch_size, 1)
        checks.seed("seed", self.seed)
        if self.data_source is not None:
            check_source("data_source", self.data_source)
        checks.named("data_dir", self.data_dir)
        checks.named("out", self.out)


def evaluate_work(checkpoint: str, eval: EvalOptions) -> None:
    with checks.within("eval"):  # its refusal names --eval.device
        device = dist.setup(eval.device).device
    ckpt = load_checkpoint(checkpoint, ema=eval.ema, device=device)
    if eval.seq_len is not None and eval.seq_len != ckpt.cfg.data.seq_len:
        raise ValueError(
            f"--eval.seq-len {eval.seq_len} differs from the checkpoint's sequence length "
            f"{ckpt.cfg.data.seq_len}; the bound is defined per chunk of the model's length"
        )
    report = evaluate_checkpoint(
        ckpt,
        split=eval.split,
        estimator=eval.estimator,
        n_t=eval.n_t,
        max_chunks=eval.max_chunks,
        batch_size=eval.batch_size,
        seed=eval.seed,
        data_source=eval.data_source,
        data_dir=eval.data_dir,
        on_batch=Progress("bits/char" if ckpt.tokenizer.name == "text8" else "bits/token"),
    )
    text = json.dumps(report | {"ema": eval.ema}, indent=2)
    print(text)
    if eval.out:
        atomic_write(Path(eval.out), (text + "\n").encode())


class Progress:
    """A running estimate on one refreshed stderr line, at most ~4 updates a second."""

    def __init__(self, unit: str):
        self.last, self.unit = 0.0, unit

    def __call__(self, info: dict) -> None:
        done = info["done"] == info["total"]
        if not done and time.time() - self.last < 0.25:
            return
        self.last = time.time()
        label = f"T={info['T'] or 'inf'} " if "T" in info else ""
        sys.stderr.write(
            f"\r{label}{info['done']:,}/{info['total']:,} | {info['bpc']:.4f} +- {info['stderr']:.4f} "
            f"{self.unit} over {info['n_chunks']:,} chunks" + ("\n" if done else "")
        )
        sys.stderr.flush()


def convert(checkpoint: tyro.conf.Positional[str], out_dir: tyro.conf.Positional[str]) -> Work:
    """Write a nanoDD ckpt.pt as one of our checkpoints (raw and EMA weights) under OUT_DIR/checkpoints."""
    check_checkpoint("CHECKPOINT", checkpoint)
    if Path(checkpoint).is_dir():
        raise ValueError(f"CHECKPOINT {checkpoint}: is a directory; convert reads a nanoDD ckpt.pt file")
    checks.named("OUT_DIR", out_dir)
    check_directory("OUT_DIR", out_dir, must_exist=False)
    check_empty_run_dir(out_dir, "OUT_DIR")
    return lambda: print(f"wrote {convert_nanodd(checkpoint, out_dir)}", file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    replace: str | None = None
    """Replace the run in this directory (it must be --train.out-dir) whatever made it: its checkpoints and
    metrics are deleted before the demo trains.  Without it, demo replaces only a demo run of the same
    preset (method, model, data) and refuses any other (--train.resume continues one instead)."""

    def __post_init__(self):
        checks.named("replace", self.replace)


DEMO_MARK = "demo.json"
"""In a demo run's ``checkpoints/``: what it trains (``demo_identity``), so only a demo of the same preset
replaces it; it goes when the checkpoints go."""


def demo_identity(cfg: Config) -> dict:
    """What makes a demo run the same preset: its config without the train section (JSON-normalised)."""
    return json.loads(json.dumps({k: v for k, v in config_lib.to_dict(cfg).items() if k != "train"}))


def replaces_run(cfg: Config, demo: DemoOptions) -> bool:
    """Whether ``demo`` removes the previous run in ``--train.out-dir`` before training: no when there is
    none or ``--train.resume`` continues it; yes for a demo run of the same preset or when ``--demo.replace``
    names the directory; any other run is refused in one line, before anything is touched."""
    out = Path(cfg.train.out_dir)
    if demo.replace is not None and Path(demo.replace).absolute().resolve() != out.absolute().resolve():
        raise ValueError(f"--demo.replace {demo.replace}: is not --train.out-dir ({out}), the run demo would replace")
    if cfg.train.resume or not (out / "checkpoints").exists():
        return False
    mark = out / "checkpoints" / DEMO_MARK
    if demo.replace is not None or mark.is_file() and json.loads(mark.read_text()) == demo_identity(cfg):
        return True
    made_by = "a demo of another preset or settings" if mark.is_file() else "not marked as a demo run"
    raise ValueError(
        f"--train.out-dir {out}: holds a run this demo did not start ({made_by}); pass --train.resume to "
        f"continue it, --demo.replace {out} to replace it, or choose another --train.out-dir"
    )


def demo_work(cfg: Config, sample: CommonSampleOptions, demo: DemoOptions) -> None:
    out = Path(cfg.train.out_dir)
    with run_lock(out):  # held from the check to the end of training (run_training takes it again)
        if replaces_run(cfg, demo):  # checked again under the lock
            print(f"demo: replacing the previous run in {out} (its checkpoints and metrics)", file=sys.stderr)
            shutil.rmtree(out / "checkpoints")
            (out / "metrics.jsonl").unlink(missing_ok=True)
        if not (out / "checkpoints").exists():  # a fresh run: mark it as this demo's
            (out / "checkpoints").mkdir()
            atomic_write(out / "checkpoints" / DEMO_MARK, (json.dumps(demo_identity(cfg)) + "\n").encode())
        last = cli.exit_if_stopped(run_training(cfg))
    if "val_bpc" not in last:  # --train.resume of a finished run: no step, no new validation
        print(f"demo: the run in {out} had already finished; sampling from it", file=sys.stderr)
    elif cfg.data.tokenizer == "text8":
        print(
            f"validation bound: {last['val_bpc']:.3f} bits/char (unigram entropy of text8-style English: ~4.1)",
            file=sys.stderr,
        )
    else:
        print(f"validation bound: {last['val_bpc']:.3f} bits/token, {last['val_bpb']:.3f} bits/byte", file=sys.stderr)
    generate(str(out), sample)


def generate(checkpoint: str, opt: CommonSampleOptions) -> None:
    with checks.within("sample"):  # its refusal names --sample.device
        device = dist.setup(opt.device).device
    ckpt = load_checkpoint(checkpoint, ema=opt.ema, device=device)
    if ckpt.model.cfg.causal:
        raise ValueError(
            f"{checkpoint} is an autoregressive judge: it scores samples (--sample.judge), it does not write them"
        )
    judge = load_judge(opt.judge, device) if opt.judge else None
    if judge is not None:
        check_judge(judge, ckpt.tokenizer)  # before the sampling it would score
    sampler = opt.sampler or default_sampler(ckpt.diffusion)
    options = getattr(opt, options_field(sampler), None)
    length = getattr(options, "length", None) or ckpt.cfg.data.seq_len  # the block sampler may write more
    condition = condition_of(ckpt.tokenizer, length, opt.prefix, opt.infill)
    view = unmasking.LiveView(opt.live, ckpt.tokenizer)
    frames = unmasking.Frames(ckpt.tokenizer) if opt.gif else None
    out = sample_text(
        ckpt,
        sampler=sampler,
        batch_size=opt.batch_size,
        steps=opt.steps if opt.steps is not None else distilled_steps(Path(checkpoint)),
        seed=opt.seed,
        temperature=opt.temperature,
        top_p=opt.top_p,
        top_k=opt.top_k,
        on_step=view if frames is None else unmasking.tee(view, frames),
        condition=condition,
        options=options,
        dtype=opt.dtype,
    )
    view.close()
    print(f"{len(out.texts)} sample(s), {out.nfe} network evaluations, {out.seconds:.1f} s", file=sys.stderr)
    if frames is not None:
        atomic_write(Path(opt.gif), unmasking.render(frames.texts, every=opt.gif_every, ms=opt.gif_ms))
        print(f"wrote {opt.gif}", file=sys.stderr)
    if opt.out:  # all or nothing: a kill leaves no partial file
        atomic_write(Path(opt.out), ("\n".join(out.texts) + "\n").encode())
        print(f"wrote {opt.out}", file=sys.stderr)
    else:
        print("\n\n".join(out.texts))
    if judge is not None:
        bpb, unit = judge_bpb(judge, out.tokens, ckpt.tokenizer), gen_unit(ckpt.tokenizer)
        print(
            json.dumps(
                {
                    f"gen_{unit}": round(float(bpb.mean()), 4),
                    f"gen_{unit}_per_sample": [round(float(b), 4) for b in bpb],
                    "unigram_entropy": round(char_entropy(out.texts), 4),
                }
            ),
            file=sys.stderr,
        )
    if opt.metrics:
        print(json.dumps({k: round(v, 4) for k, v in sample_metrics(ckpt, out.texts).items()}), file=sys.stderr)


def gen_unit(tokenizer) -> str:
    """What the judge's score is called: bits per character for text8 (gen-BPC), per byte otherwise."""
    return "bpc" if tokenizer.name == "text8" else "bpb"


def subcommands(
    presets: dict[str, Preset], demos: dict[str, Preset], *, prog: str, data: DataConfig = DataConfig()
) -> dict[str, Callable[..., Work]]:
    """The subcommands of the CLI run as ``prog``: ``train`` takes one of ``presets``, ``demo`` one of ``demos``
    (the first by default), ``prepare`` the fields of ``data``; ``sample`` and ``demo`` the options of the
    samplers registered now."""
    Choice, DemoChoice = choice(presets), choice(demos)

    def prepare(data: DataConfig = data) -> Work:
        """Download (text8 or a URL) or read (a local file, a directory or glob of them, the built-in corpus,
        an hf: dataset), tokenize and split a corpus."""
        check_data(data)
        return lambda: print(prepare_data(data))

    SampleOptions, DemoSampleOptions = sample_options(), sample_options(**DEMO_SAMPLE)
    first = next(iter(demos.values())).cfg

    def train(cfg: Annotated[Choice, tyro.conf.arg(name="")]) -> Work:
        """Train from a preset; every field can be overridden (--train.lr 3e-4, --model.n-blocks 6,
        method.schedule:cosine, ...)."""
        check_training(cfg)
        return lambda: cli.exit_if_stopped(run_training(cfg))

    def sample(checkpoint: tyro.conf.Positional[str], sample: SampleOptions) -> Work:
        """Generate text from a checkpoint: a run directory, a checkpoint directory, or a nanoDD ckpt.pt."""
        check_checkpoint("CHECKPOINT", checkpoint)
        sample.check_paths()
        return functools.partial(generate, checkpoint, sample)

    def evaluate(checkpoint: tyro.conf.Positional[str], eval: EvalOptions = EvalOptions()) -> Work:
        """The bound on the val or test split, per token (text8: per character), per byte and as perplexity:
        canonical chunks, standard errors, a JSON report."""
        check_checkpoint("CHECKPOINT", checkpoint)
        check_corpus("--eval.data-source", eval.data_source, None, must_exist=False)
        check_directory(
            "--eval.data-dir", eval.data_dir, must_exist=True, hint=f" (prepare the data first: {prog} prepare)"
        )
        check_writable("--eval.out", eval.out)
        return functools.partial(evaluate_work, checkpoint, eval)

    def demo(
        cfg: Annotated[DemoChoice, tyro.conf.arg(name="")] = first,
        *,
        sample: DemoSampleOptions,
        demo: DemoOptions = DemoOptions(),
    ) -> Work:
        check_training(cfg)
        sample.check_paths()
        replaces_run(cfg, demo)  # refuses a run it may not replace, before anything runs
        return functools.partial(demo_work, cfg, sample, demo)

    kind, rest = type(first.method).__name__.removesuffix("Config"), ", ".join(list(demos)[1:])
    demo.__doc__ = (  # its help: the demos, named
        f"Train a demo preset ({kind} by default{'; ' + rest if rest else ''}) on the built-in corpus, then "
        "sample from it."
    )
    return {
        "prepare": prepare,
        "train": train,
        "sample": sample,
        "evaluate": evaluate,
        "convert": convert,
        "demo": demo,
    }


def main(
    commands: dict[str, Callable[..., Work]],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    check_only: bool = False,
) -> None:
    """Parse ``argv`` (None: sys.argv) into one of ``commands``, check, and run its work; ``check_only``
    stops after the checks (what the option-walking test runs: nothing is loaded, trained or written)."""
    with cli.one_line_errors(argv=argv):
        work = tyro.extras.subcommand_cli_from_dict(
            commands,
            prog=prog,
            description=description,
            args=argv,
            config=(tyro.conf.CascadeSubcommandArgs,),  # --method.T works without naming method:<name> first
        )
        if not check_only:
            work()
