"""The race: every method on the same corpus and model for the same wall-clock budget, then the audited
bound and its default sampler's text under an AR judge trained the same way.

    python -m benchmarks.race                                  # from the repository root; ~35 min on 2 cores
    python -m benchmarks.race --budget 30 --plot docs/race-timesteps.png
    python -m benchmarks.race --methods mdlm-demo bd3lm-demo-4 bd3lm-demo-8 bd3lm-demo-16

**Equal time, honestly.**  Each method trains its demo preset (the same DiT, 4 blocks of 128, on
128 characters, batch 32) with only the corpus changed; ``bd3lm-demo-4``, ``-8`` and ``-16`` are
``bd3lm-demo`` at block sizes 4, 8 and 16 (``RACERS``: a racer is a demo preset, or one with overrides).
A probe of ``probe_steps`` optimizer steps measures the method's seconds per step after warm-up;
``max_iters = budget / (seconds per step)`` then sets the run's length, so the warmup and EMA horizon
(scaled with it) and the cosine decay end on time (``experiments.budget``).  The table reports the wall time each
training really took (startup and the final validation included) next to the budget.

**Corpus**: text8 when it is prepared, else tinyshakespeare at ``../shared/data`` when present (the
text8 normaliser makes it text8-style), else the built-in corpus; ``--corpus`` picks one.

**Scores**: the checkpoint's own bound (``evaluate``: stratified times on the canonical validation
chunks, EMA weights, mean and standard error), and ``samples`` texts from its default sampler
(ancestral for x0 networks, analytic for SEDD's ratios, block for BD3-LM) at L steps (BD3-LM: the block
size per block, one token per step on average, so L steps in all): the judge's gen-BPC (the ``ar-demo``
preset trained on the same corpus for the same budget, unless ``--judge`` names one), the share of
words in the training split's vocabulary, the unigram entropy and seconds per sample at batch
``samples``.  ``--plot`` adds the per-timestep integrand and gradient variance of every racer
(``experiments.timesteps``).  Run nothing else at the same time: the budget is wall-clock.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator

import tyro

from benchmarks.demos import which_bound
from benchmarks.sampling import data_bpc
from experiments import budget, timesteps
from experiments.cli import exit_if_stopped, run
from experiments.paths import check_checkpoint, check_corpus, check_directory, check_writable
from experiments.presets import DEMOS, PRESETS, variant
from nanodd import checks, evaluate as ev
from nanodd.config import Config, DataConfig
from nanodd.data import DataError, load_split
from nanodd.data.prepare import prepare_data
from nanodd.samplers import default_sampler
from nanodd.shell.workflows import evaluate_checkpoint, generate, judge_bpb, load_checkpoint, load_judge, prepared_dir
from nanodd.shell import lock
from nanodd.shell.lock import run_lock
from nanodd.shell.trainer import train

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
MARK = ".race"
"""In every run directory a race makes: the next race may replace it; a directory without it is never touched."""
RACERS: dict[str, Config] = {
    **{name: preset.cfg for name, preset in DEMOS.items()},
    **{
        f"bd3lm-demo-{n}": variant(
            DEMOS["bd3lm-demo"].cfg,
            f"runs/bd3lm-demo-{n}",
            method=dataclasses.replace(DEMOS["bd3lm-demo"].cfg.method, block_size=n),
        )
        for n in (4, 8, 16)
    },
}
"""What can race: every demo preset, and bd3lm-demo at block sizes 4, 8 and 16 (a preset with overrides)."""


@dataclasses.dataclass(frozen=True)
class Options:
    budget: float = 180.0
    """Seconds of training per method (and for the judge)."""
    methods: tuple[str, ...] = (
        "demo",
        "mdlm-demo",
        "sedd-absorb-demo",
        "sedd-uniform-demo",
        "udlm-demo",
        "bd3lm-demo-4",
        "bd3lm-demo-8",
        "bd3lm-demo-16",
    )
    """Racers (demo presets, or bd3lm-demo-4 / -8 / -16: bd3lm-demo at that block size), in this order."""
    corpus: str | None = None
    """Corpus of every run (default: text8 if prepared, else tinyshakespeare from ../shared/data, else builtin)."""
    judge: str | None = None
    """An AR judge checkpoint to score with (default: train ar-demo on the corpus for the same budget)."""
    probe_steps: int = 10
    """Optimizer steps of the timing probe (the second half is timed)."""
    eval_chunks: int = 200
    """Validation chunks for each bound."""
    samples: int = 16
    """Samples per method for gen-BPC, words and entropy."""
    out_dir: str = "runs/race"
    """One run directory per racer (replaced on every race; a directory there that no race made is refused)."""
    plot: str | None = None
    """Write the racers' per-timestep integrand and gradient variance to this PNG (needs matplotlib)."""

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in RACERS]
        checks.require(
            "methods",
            not unknown and len(self.methods) > 0,
            f"name demo presets or their block-size variants ({', '.join(RACERS)})",
            " ".join(self.methods),
        )
        checks.at_least("budget", self.budget, 1)
        checks.at_least("probe_steps", self.probe_steps, 4)
        checks.at_least("eval_chunks", self.eval_chunks, 2)
        checks.at_least("samples", self.samples, 2)
        for name in ("corpus", "judge", "out_dir", "plot"):
            checks.named(name, getattr(self, name))


def default_corpus() -> str:
    try:
        load_split(prepared_dir(DataConfig(source="text8")), "train")
        return "text8"
    except DataError:
        return str(SHAKESPEARE) if SHAKESPEARE.is_file() else "builtin"


def on_corpus(cfg: Config, corpus: str, out_dir: Path, **train) -> Config:
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, source=corpus),
        train=dataclasses.replace(cfg.train, out_dir=str(out_dir), **train),
    )


def probe_dir(out: Path) -> Path:
    return out.with_name(out.name + "-probe")


def check_ours(path: Path) -> None:
    """``path`` is new, empty or made by a race (it holds ``MARK``): a race may replace it, and nothing else."""
    if lock.entries(path) and not (path / MARK).is_file():
        raise ValueError(
            f"--out-dir: {path} exists and was not made by a race; the race replaces only its own runs "
            "(move it away, or choose another --out-dir)"
        )


@contextmanager
def fresh(path: Path) -> Iterator[None]:
    """Within the block, ``path`` is locked, emptied (it was the race's: ``check_ours``) and marked as the race's."""
    with run_lock(path):
        check_ours(path)  # again, under the lock
        lock.clear(path)
        (path / MARK).touch()
        yield


def race(cfg: Config, opt: Options, out: Path) -> dict:
    """Train ``cfg`` for the budget (probe, then max_iters to fit); returns steps, tokens/s and wall time."""
    with fresh(out):
        return race_in(on_corpus(cfg, opt.corpus, out), opt.budget, opt.probe_steps)


def race_in(cfg: Config, budget_s: float, probe_steps: int) -> dict:
    """``race`` in its fresh run directory: the probe in a directory of its own, then the run."""
    probe = probe_dir(Path(cfg.train.out_dir))
    with fresh(probe):
        sps = budget.seconds_per_step(cfg, probe_steps, probe)
    shutil.rmtree(probe)
    cfg = budget.fit(cfg, budget_s, sps)
    start = time.perf_counter()
    last = train(cfg)
    exit_if_stopped(last)  # Ctrl-C / SIGTERM: the race is off, not scored on a short run (exit 130 / 143)
    return {
        "steps": cfg.train.max_iters,
        "wall_s": time.perf_counter() - start,
        "tokens_per_s": budget.tokens_per_step(cfg) / sps,
        "train_val": last["val_bpc"],
    }


def score(run: Path, judge, vocab: set[str], opt: Options) -> dict:
    ckpt = load_checkpoint(run)
    bound = evaluate_checkpoint(ckpt, n_t=4, max_chunks=opt.eval_chunks)["results"]
    sampler, L = default_sampler(ckpt.diffusion), ckpt.cfg.data.seq_len
    steps = ckpt.diffusion.block_size or L  # BD3-LM: steps per block, L in all
    out = generate(ckpt, sampler=sampler, batch_size=opt.samples, steps=steps, seed=0, dtype="auto")
    bpc = judge_bpb(judge, out.tokens, ckpt.tokenizer)
    return {
        "bpc": bound["bpc"],
        "stderr": bound["stderr"],
        "sampler": f"{sampler} {steps}" + (f" per block of {steps}" if ckpt.diffusion.block_size else ""),
        "nfe": out.nfe,
        "s_per_sample": out.seconds / opt.samples,
        "gen_bpc": float(bpc.mean()),
        "gen_bpc_se": float(bpc.std() / math.sqrt(len(bpc))),
        "words": ev.word_in_vocab_fraction(out.texts, vocab),
        "entropy": ev.char_entropy(out.texts),
    }


def check_inputs(opt: Options, root: Path) -> None:
    """Everything the race reads and writes, before it deletes or trains anything: the corpus (prepared
    now, so a missing file or failed download stops it here), the judge, the plot's files, and every run
    directory it will replace (``check_ours``)."""
    check_corpus("--corpus", opt.corpus, None, must_exist=True)
    check_checkpoint("--judge", opt.judge)
    check_directory("--out-dir", opt.out_dir, must_exist=False)
    for path in (opt.plot, opt.plot and str(Path(opt.plot).with_suffix(".csv"))):
        check_writable("--plot", path, new_parent=True)
    for name in (*([] if opt.judge else ["judge"]), *opt.methods):
        check_ours(root / name)
        check_ours(probe_dir(root / name))
    prepare_data(DataConfig(source=opt.corpus))


def main(opt: Annotated[Options, tyro.conf.arg(name="")]) -> None:
    opt = dataclasses.replace(opt, corpus=opt.corpus or default_corpus())
    root = Path(opt.out_dir)
    check_inputs(opt, root)
    judge = load_judge(opt.judge) if opt.judge else None  # an input: loaded before anything is replaced
    with run_lock(root):  # one race per directory at a time
        race_all(opt, root, judge)


def race_all(opt: Options, root: Path, judge) -> None:
    """Train the judge (unless given), race every method, print the table (and the plot)."""
    print(f"racing {', '.join(opt.methods)} for {opt.budget:.0f} s each on {opt.corpus}", file=sys.stderr)
    if judge is None:
        print("training the judge (ar-demo) ...", file=sys.stderr, flush=True)
        race(PRESETS["ar-demo"].cfg, opt, root / "judge")
        judge = load_judge(root / "judge")
    train_text = judge.tokenizer.decode(load_split(prepared_dir(DataConfig(source=opt.corpus)), "train")[:10_000_000])
    vocab = set(ev.words(train_text))
    rows = []
    for name in opt.methods:
        print(f"racing {name} ...", file=sys.stderr, flush=True)
        rows.append(
            {
                "name": name,
                "bound": which_bound(RACERS[name]),
                **race(RACERS[name], opt, root / name),
                **score(root / name, judge, vocab, opt),
            }
        )
    print(f"\n{opt.budget:.0f} s of training per method on {opt.corpus}; samples: {opt.samples} per method.\n")
    print(
        "| method | steps | train wall time | tokens/s | val bound, bits/char | which bound | sampler (NFE) "
        "| s / sample | gen-BPC | words in vocab | unigram entropy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['name']}` | {r['steps']} | {r['wall_s']:.0f} s | {r['tokens_per_s'] / 1e3:.1f}k | {r['bpc']:.3f} ± "
            f"{r['stderr']:.3f} | {r['bound']} | {r['sampler']} ({r['nfe']}) | {r['s_per_sample']:.2f} | "
            f"{r['gen_bpc']:.3f} ± {r['gen_bpc_se']:.3f} | {100 * r['words']:.1f}% | {r['entropy']:.3f} |"
        )
    print(
        f"\nJudge: {data_bpc(judge, judge):.3f} bits/char on validation text; data unigram "
        f"entropy {ev.char_entropy(train_text[:1_000_000]):.3f}."
    )
    if opt.plot:
        timesteps.main(
            timesteps.Options(
                tuple(str(root / n) for n in opt.methods),
                n_t=16,
                batch=8,
                csv=str(Path(opt.plot).with_suffix(".csv")),
                plot=opt.plot,
            )
        )


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m benchmarks.race", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
