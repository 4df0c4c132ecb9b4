"""text8 experiments: prepare data, train, sample, evaluate, and a five-minute CPU demo.

    python -m experiments.text8 demo                              # no download: train + sample on CPU
    python -m experiments.text8 demo mdlm-demo                    # the same with MDLM (or sedd-absorb-demo,
                                                                  #   sedd-uniform-demo, udlm-demo)
    python -m experiments.text8 prepare --data.source text8       # download and split text8
    python -m experiments.text8 train d3pm-text8 --train.lr 3e-4  # nanoDD's recipe, any field overridable
    python -m experiments.text8 train mdlm-text8 method.schedule:cosine   # MDLM / MD4 with another schedule
    torchrun --standalone --nproc_per_node=8 -m experiments.text8 train d3pm-text8-8gpu
    python -m experiments.text8 sample runs/d3pm-text8 --sample.batch-size 4
    python -m experiments.text8 sample runs/sedd-absorb-demo --sample.sampler euler --sample.steps 256
    python -m experiments.text8 sample nanoDD-D3PM-text8/ckpt.pt     # nanoDD's published weights
    python -m experiments.text8 convert nanoDD-D3PM-text8/ckpt.pt runs/nanodd   # as our checkpoint
    python -m experiments.text8 evaluate runs/d3pm-text8 --eval.split test --eval.estimator exact

Every mistake in the arguments or the data is reported with exit code 2 and one line ``error: ...``
naming the option (``experiments/cli.py``; set NANODD_DEBUG=1 to see the traceback instead).  Each
subcommand first runs the cheap checks (every value, when its dataclass is built; then the paths) and
returns its work, which ``main`` runs unless ``check_only``.  The work itself lives in the library
(``nanodd.shell.trainer``, ``nanodd.shell.workflows``); this file parses and prints.
"""

from __future__ import annotations

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
from nanodd.config import Config, DataConfig, TrainConfig, check_source, validate
from nanodd.data import decode, prepare as prepare_data
from nanodd.data.prepare import atomic_write, dataset_name
from nanodd.methods.ar import ARConfig
from nanodd.methods.d3pm import D3PMConfig
from nanodd.methods.mdlm import MDLMConfig
from nanodd.methods.sedd import SEDDConfig
from nanodd.methods.udlm import UDLMConfig
from nanodd.model import DiTConfig
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.uniform import Uniform
from nanodd.samplers import SAMPLERS, default_sampler
from nanodd.schedules import Geometric, LogLinear
from nanodd.shell import dist
from nanodd.evaluate import char_entropy
from nanodd.shell.workflows import (
    Estimator,
    check_pattern,
    condition_of,
    convert_nanodd,
    evaluate_checkpoint,
    generate as sample_text,
    judge_bpc,
    load_checkpoint,
    load_judge,
    sample_metrics,
)
from nanodd.shell.trainer import train as run_training

D3PM_TEXT8 = Config(
    model=DiTConfig(),
    method=D3PMConfig(T=1000, hybrid_coeff=0.05),
    data=DataConfig(source="text8", seq_len=256),
    train=TrainConfig(compile=True, out_dir="runs/d3pm-text8"),
)
MDLM_TEXT8 = Config(
    model=DiTConfig(dropout=0.05),
    method=MDLMConfig(schedule=LogLinear(eps=1e-4)),
    data=DataConfig(source="text8", seq_len=256),
    train=TrainConfig(
        batch_size=256,
        grad_accum=2,
        max_iters=1_000_000,
        lr=3e-4,
        min_lr=0.0,
        warmup_iters=2_000,
        weight_decay=0.03,
        beta2=0.999,
        grad_clip=1.0,
        ema_decay=0.9999,
        compile=True,
        out_dir="runs/mdlm-text8",
    ),
)
"""Continuous-time masked diffusion on text8 with MD4's recipe (Shi et al. 2024, App. J.1; Table 2 reports
<= 1.37 bits/char).  The MDLM paper (Sahoo et al. 2024) has no text8 experiment; MD4's is the
published one for this objective.  From MD4 App. J.1: a 12-layer, 12-head, 768-wide transformer
(ours: the same DiT as d3pm-text8), sequence length 256, batch 512, 1M steps, AdamW at 3e-4 with
weight decay 0.03, 2000 warmup steps then cosine decay, dropout 0.05, EMA 0.9999, the linear schedule
alpha_t = 1 - (1 - eps) t with eps = 1e-4 (our LogLinear(eps=1e-4): MDLM's "log-linear" noise is this
linear alpha_t), antithetic t, a time-conditioned network.  Not stated there, so ours: beta2 = 0.999
(optax's AdamW default), gradient clipping at 1.0, decay to 0; the batch is 256 x 2 accumulation
steps on one GPU."""
SEDD_TRAIN = TrainConfig(
    batch_size=256,
    grad_accum=2,
    max_iters=1_000_000,
    lr=3e-4,
    min_lr=3e-4,
    warmup_iters=2_000,
    weight_decay=0.0,
    beta2=0.999,
    grad_clip=1.0,
    ema_decay=0.9999,
    compile=True,
)
SEDD_ABSORB_TEXT8 = Config(
    model=DiTConfig(),
    method=SEDDConfig(process=Absorbing(), schedule=LogLinear(eps=1e-3), scale_by_sigma=True),
    data=DataConfig(source="text8", seq_len=256),
    train=dataclasses.replace(SEDD_TRAIN, out_dir="runs/sedd-absorb-text8"),
)
"""SEDD with the absorbing graph on text8 (Lou et al. 2024, §5.2 and Table 2, <= 1.39 bits/char).  The
paper follows D3PM's text8 setup, so the network is d3pm-text8's DiT (768 wide, 12 heads, 12 blocks) on
256 characters; batch 512 (256 x 2 accumulation steps), AdamW at 3e-4 with 2,000 warmup steps,
gradient clipping at 1, EMA 0.9999; log-linear noise with scale_by_sigma, as its code's README pairs
with the absorbing graph.  Not stated in what we checked, so ours: a constant rate after warmup, no
weight decay, beta2 = 0.999, 1M steps (MD4's and UDLM's count)."""
SEDD_UNIFORM_TEXT8 = Config(
    model=DiTConfig(),
    method=SEDDConfig(process=Uniform(), schedule=Geometric(sigma_min=1e-5, sigma_max=20.0), scale_by_sigma=False),
    data=DataConfig(source="text8", seq_len=256),
    train=dataclasses.replace(SEDD_TRAIN, out_dir="runs/sedd-uniform-text8"),
)
"""SEDD with the uniform graph on text8 (Table 2, <= 1.47 bits/char): sedd-absorb-text8's recipe with the
geometric noise sigma_t = 1e-5^(1-t) 20^t (§5.1) and no scale_by_sigma, as its code's README pairs
with the uniform graph.  27 ids: the uniform process has no mask."""
UDLM_TEXT8 = Config(
    model=DiTConfig(),
    method=UDLMConfig(schedule=LogLinear(eps=1e-3), process=Uniform()),
    data=DataConfig(source="text8", seq_len=256),
    train=TrainConfig(
        batch_size=256,
        grad_accum=2,
        max_iters=1_000_000,
        lr=3e-4,
        min_lr=3e-4,
        warmup_iters=2_500,
        weight_decay=0.0,
        beta2=0.999,
        grad_clip=1.0,
        ema_decay=0.9999,
        compile=True,
        out_dir="runs/udlm-text8",
    ),
)
"""UDLM on text8 (Schiff et al. 2024; its text8 training script): a 12-block, 768-wide, 12-head DiT on 256
characters, batch 512, AdamW at 3e-4 with a constant rate after warmup, 1M steps, the log-linear
schedule, a time-conditioned network, EMA 0.9999, gradient clipping at 1.  Ours where not stated in
what we checked: 2,500 warmup steps, no weight decay, beta2 = 0.999, eps = 1e-3.  Published text8
results for UDLM are around 1.44 bits/char (quoted by later papers; not confirmed here)."""
AR_TEXT8 = dataclasses.replace(
    D3PM_TEXT8, method=ARConfig(), train=dataclasses.replace(D3PM_TEXT8.train, out_dir="runs/ar-text8")
)
"""The judge for text8 samples: d3pm-text8's DiT and recipe with a causal mask, trained on next-character
prediction (our choice of recipe; it scores, it is not a published baseline)."""
DEMO = Config(
    model=DiTConfig(d_model=128, n_heads=4, n_blocks=4, cond_dim=64, dropout=0.0),
    method=D3PMConfig(T=1000, hybrid_coeff=0.05),
    data=DataConfig(source="builtin", seq_len=128),
    train=TrainConfig(
        batch_size=32,
        grad_accum=1,
        max_iters=1200,
        lr=2e-3,
        min_lr=1e-4,
        warmup_iters=100,
        grad_clip=1.0,
        ema_decay=0.99,
        eval_interval=400,
        eval_batches=5,
        log_interval=50,
        out_dir="runs/demo",
    ),
)
DEMOS = {
    "demo": ("A small D3PM that learns visibly on 2 CPU cores in a few minutes, on the built-in corpus.", DEMO),
}


def demo_of(name: str, method, what: str) -> tuple[str, Config]:
    """demo with another method: the same model, data and budget, its own run directory."""
    return (
        f"demo's model, data and budget trained with {what}.",
        dataclasses.replace(DEMO, method=method, train=dataclasses.replace(DEMO.train, out_dir=f"runs/{name}")),
    )


DEMOS |= {
    "mdlm-demo": demo_of(
        "mdlm-demo", MDLMConfig(schedule=LogLinear(eps=1e-3)), "MDLM's continuous-time NELBO (log-linear, antithetic t)"
    ),
    "sedd-absorb-demo": demo_of(
        "sedd-absorb-demo",
        SEDDConfig(process=Absorbing(), schedule=LogLinear(eps=1e-3)),
        "SEDD's score entropy on the absorbing graph (log-linear noise, ratios scaled by sigma)",
    ),
    "sedd-uniform-demo": demo_of(
        "sedd-uniform-demo",
        SEDDConfig(process=Uniform(), schedule=Geometric(), scale_by_sigma=False),
        "SEDD's score entropy on the uniform graph (geometric noise 1e-5 -> 20)",
    ),
    "udlm-demo": demo_of(
        "udlm-demo", UDLMConfig(schedule=LogLinear(eps=1e-3)), "UDLM's continuous-time uniform-state NELBO (log-linear)"
    ),
}
PRESETS = {
    "d3pm-text8": (
        "nanoDD's single-GPU recipe: DiT 768 wide, 12 heads, 12 blocks; T = 1000, lambda = 0.05; batch 256 "
        "per device x 4 accumulation steps; AdamW 1e-3 -> 1e-5 cosine, 500k steps.",
        D3PM_TEXT8,
    ),
    "d3pm-text8-8gpu": (
        "d3pm-text8 for 8 GPUs under torchrun: grad_accum 1, so the global batch stays 8 x 256 = 2048. "
        "batch_size is per device.",
        dataclasses.replace(
            D3PM_TEXT8, train=dataclasses.replace(D3PM_TEXT8.train, grad_accum=1, out_dir="runs/d3pm-text8-8gpu")
        ),
    ),
    "mdlm-text8": (
        "MDLM / MD4 on text8 with MD4's recipe (Shi et al. 2024, App. J.1; <= 1.37 bits/char in its Table 2): "
        "DiT 768 wide, 12 heads, 12 blocks, dropout 0.05; alpha_t = 1 - (1 - 1e-4) t, antithetic t; batch "
        "256 x 2; AdamW 3e-4, weight decay 0.03, 2k warmup, cosine decay, 1M steps; EMA 0.9999.",
        MDLM_TEXT8,
    ),
    "sedd-absorb-text8": (
        "SEDD, absorbing graph, on text8 (Lou et al. 2024; <= 1.39 bits/char in its Table 2): d3pm-text8's DiT; "
        "log-linear noise, scale_by_sigma; batch 256 x 2; AdamW 3e-4, 2k warmup, constant; clip 1; EMA 0.9999; 1M steps.",
        SEDD_ABSORB_TEXT8,
    ),
    "sedd-uniform-text8": (
        "SEDD, uniform graph, on text8 (<= 1.47 bits/char in its Table 2): sedd-absorb-text8's recipe with "
        "geometric noise 1e-5 -> 20 and unscaled ratios; 27 ids (no mask).",
        SEDD_UNIFORM_TEXT8,
    ),
    "udlm-text8": (
        "UDLM (Schiff et al. 2024) on text8: DiT 768 wide, 12 heads, 12 blocks; log-linear schedule; batch "
        "256 x 2; AdamW 3e-4, 2.5k warmup, constant; clip 1; EMA 0.9999; 1M steps.",
        UDLM_TEXT8,
    ),
    "ar-text8": (
        "The autoregressive judge on text8: d3pm-text8's DiT and recipe, causal, next-character NLL "
        "(scores samples: gen-BPC).",
        AR_TEXT8,
    ),
    "ar-demo": (
        "The autoregressive judge for the demos: demo's model, data and budget, causal, next-character NLL.",
        dataclasses.replace(DEMO, method=ARConfig(), train=dataclasses.replace(DEMO.train, out_dir="runs/ar-demo")),
    ),
    **DEMOS,
}
Preset = tyro.extras.subcommand_type_from_defaults(
    {k: v for k, (_, v) in PRESETS.items()}, {k: d for k, (d, _) in PRESETS.items()}
)
DemoPreset = tyro.extras.subcommand_type_from_defaults(
    {k: v for k, (_, v) in DEMOS.items()}, {k: d for k, (d, _) in DEMOS.items()}
)


Work = Callable[[], None]
"""What a subcommand returns once its checks pass: the work itself (train, sample, ...)."""


def check_corpus(option: str, source: str | None, *, must_exist: bool) -> None:
    """A corpus that names a local file (builtin, text8 and URLs are checked when fetched) names no directory,
    and (with ``must_exist``; evaluate only needs the name of a prepared corpus) a file that exists."""
    if source is None or not dataset_name(source).startswith("file-"):
        return
    path = Path(source).expanduser()
    if path.is_dir() or must_exist and not path.is_file():
        raise ValueError(
            f"{option} {source}: {'is a directory' if path.is_dir() else 'no such file'} "
            "(it takes builtin, text8, a text file or an http(s) URL)"
        )


def check_directory(option: str, path: str | None, *, must_exist: bool) -> None:
    """``path`` (None: the default) is a directory, or (unless ``must_exist``) nothing yet."""
    if path is None:
        return
    exists = Path(path).exists()
    if exists and not Path(path).is_dir() or must_exist and not exists:
        raise ValueError(
            f"{option} {path}: {'not a directory' if exists else 'not found'}"
            f"{'' if exists else ' (prepare the data first: python -m experiments.text8 prepare)'}"
        )


def check_checkpoint(option: str, path: str | None) -> None:
    """``path`` (None: none given) names a checkpoint that exists; what is in it is checked when it loads."""
    checks.named(option, path)
    if path is not None and not Path(path).exists():
        raise ValueError(
            f"{option} {path}: not found (expected a run directory, its checkpoints/ directory, "
            "a step directory, or a nanoDD ckpt.pt)"
        )


def check_writable(option: str, path: str | None) -> None:
    """``path`` can become a file: not a directory, in a directory that exists."""
    if path is not None and (Path(path).is_dir() or not Path(path).absolute().parent.is_dir()):
        what = "is a directory" if Path(path).is_dir() else "its directory does not exist"
        raise ValueError(f"{option} {path}: {what}")


def prepare(data: DataConfig = DataConfig()) -> Work:
    """Download (text8 or a URL) or read (a local file, the built-in corpus) and split a corpus."""
    check_corpus("--data.source", data.source, must_exist=True)
    check_directory("--data.data-dir", data.data_dir, must_exist=False)
    return lambda: print(
        prepare_data(
            data.source, Path(data.data_dir) if data.data_dir else None, seq_len=data.seq_len, force=data.force
        )
    )


def check_training(cfg: Config) -> None:
    """What training needs before it starts: sections that agree, a corpus, directories where they go."""
    validate(cfg)
    check_corpus("--data.source", cfg.data.source, must_exist=True)
    check_directory("--data.data-dir", cfg.data.data_dir, must_exist=False)
    check_directory("--train.out-dir", cfg.train.out_dir, must_exist=False)


def train(cfg: Annotated[Preset, tyro.conf.arg(name="")]) -> Work:
    """Train from a preset; every field can be overridden (--train.lr 3e-4, --model.n-blocks 6,
    method.schedule:cosine, ...)."""
    check_training(cfg)
    return functools.partial(run_training, cfg)


@dataclasses.dataclass(frozen=True)
class CommonSampleOptions:
    """What ``sample`` takes whatever the sampler; ``sample_options`` adds each sampler's own options."""

    batch_size: int = 1
    """Sequences to generate."""
    sampler: str | None = None
    """The sampler's name in ``nanodd.samplers.SAMPLERS`` (default: ancestral, or analytic for a ratio network)."""
    steps: int | None = None
    """Sampling steps (default: the model's T, or 1000 in continuous time; confidence: the length;
    first-hitting takes none).  Fewer steps reveal several tokens per step."""
    prefix: str = ""
    """Fixed opening characters (a-z and space); the sampler writes the rest."""
    infill: str = ""
    """A pattern of fixed characters with '_' where the sampler writes, e.g. "the q___k brown f__";
    positions past its end are written too."""
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
    """An autoregressive judge checkpoint (train ar-demo or ar-text8): print its bits per character on
    the samples (gen-BPC: lower is more plausible) with the samples' unigram entropy."""
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
    """The field of ``SampleOptions`` holding a sampler's options (``--sample.<name>.*``)."""
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


def sample(checkpoint: tyro.conf.Positional[str], sample: SampleOptions) -> Work:
    """Generate text from a checkpoint: a run directory, a checkpoint directory, or a nanoDD ckpt.pt."""
    check_checkpoint("CHECKPOINT", checkpoint)
    sample.check_paths()
    return functools.partial(generate, checkpoint, sample)


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


def evaluate(checkpoint: tyro.conf.Positional[str], eval: EvalOptions = EvalOptions()) -> Work:
    """Bits per character on the val or test split: canonical chunks, standard errors, a JSON report."""
    check_checkpoint("CHECKPOINT", checkpoint)
    check_corpus("--eval.data-source", eval.data_source, must_exist=False)
    check_directory("--eval.data-dir", eval.data_dir, must_exist=True)
    check_writable("--eval.out", eval.out)
    return functools.partial(evaluate_work, checkpoint, eval)


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
        on_batch=Progress(),
    )
    text = json.dumps(report | {"ema": eval.ema}, indent=2)
    print(text)
    if eval.out:
        atomic_write(Path(eval.out), (text + "\n").encode())


class Progress:
    """A running estimate on one refreshed stderr line, at most ~4 updates a second."""

    def __init__(self):
        self.last = 0.0

    def __call__(self, info: dict) -> None:
        done = info["done"] == info["total"]
        if not done and time.time() - self.last < 0.25:
            return
        self.last = time.time()
        label = f"T={info['T'] or 'inf'} " if "T" in info else ""
        sys.stderr.write(
            f"\r{label}{info['done']:,}/{info['total']:,} | {info['bpc']:.4f} +- {info['stderr']:.4f} "
            f"bits/char over {info['n_chunks']:,} chunks" + ("\n" if done else "")
        )
        sys.stderr.flush()


def convert(checkpoint: tyro.conf.Positional[str], out_dir: tyro.conf.Positional[str]) -> Work:
    """Write a nanoDD ckpt.pt as one of our checkpoints (raw and EMA weights) under OUT_DIR/checkpoints."""
    check_checkpoint("CHECKPOINT", checkpoint)
    if Path(checkpoint).is_dir():
        raise ValueError(f"CHECKPOINT {checkpoint}: is a directory; convert reads a nanoDD ckpt.pt file")
    checks.named("OUT_DIR", out_dir)
    check_directory("OUT_DIR", out_dir, must_exist=False)
    return lambda: print(f"wrote {convert_nanodd(checkpoint, out_dir)}", file=sys.stderr)


def demo(cfg: Annotated[DemoPreset, tyro.conf.arg(name="")] = DEMO, *, sample: DemoSampleOptions) -> Work:
    """Train a demo preset (D3PM by default; mdlm-demo, sedd-absorb-demo, sedd-uniform-demo, udlm-demo) on
    the built-in corpus, then sample from it."""
    check_training(cfg)
    sample.check_paths()
    return functools.partial(demo_work, cfg, sample)


def demo_work(cfg: Config, sample: SampleOptions) -> None:
    out = Path(cfg.train.out_dir)
    if (out / "checkpoints").exists() and not cfg.train.resume:
        shutil.rmtree(out / "checkpoints")  # the demo always starts fresh unless told to resume
        (out / "metrics.jsonl").unlink(missing_ok=True)
        print(f"demo: starting fresh (removed the previous run in {out})", file=sys.stderr)
    last = run_training(cfg)
    print(
        f"validation bound: {last['val_bpc']:.3f} bits/char (unigram entropy of text8-style English: ~4.1)",
        file=sys.stderr,
    )
    generate(str(out), sample)


def generate(checkpoint: str, opt: SampleOptions) -> None:
    with checks.within("sample"):  # its refusal names --sample.device
        device = dist.setup(opt.device).device
    ckpt = load_checkpoint(checkpoint, ema=opt.ema, device=device)
    if ckpt.model.cfg.causal:
        raise ValueError(
            f"{checkpoint} is an autoregressive judge: it scores samples (--sample.judge), it does not write them"
        )
    judge = load_judge(opt.judge, device) if opt.judge else None
    sampler = opt.sampler or default_sampler(ckpt.diffusion)
    condition = condition_of(ckpt.cfg.data.seq_len, opt.prefix, opt.infill)
    view = LiveView(enabled=opt.live)
    frames = unmasking.Frames() if opt.gif else None
    out = sample_text(
        ckpt,
        sampler=sampler,
        batch_size=opt.batch_size,
        steps=opt.steps,
        seed=opt.seed,
        temperature=opt.temperature,
        top_p=opt.top_p,
        top_k=opt.top_k,
        on_step=view if frames is None else unmasking.tee(view, frames),
        condition=condition,
        options=getattr(opt, options_field(sampler), None),
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
        bpc = judge_bpc(judge, out.tokens)
        print(
            json.dumps(
                {
                    "gen_bpc": round(float(bpc.mean()), 4),
                    "gen_bpc_per_sample": [round(float(b), 4) for b in bpc],
                    "unigram_entropy": round(char_entropy(out.texts), 4),
                }
            ),
            file=sys.stderr,
        )
    if opt.metrics:
        print(json.dumps({k: round(v, 4) for k, v in sample_metrics(ckpt, out.texts).items()}), file=sys.stderr)


class LiveView:
    """Redraws the first sequence in place as tokens are revealed ('_' = still masked).
    Off a terminal it prints a few snapshots instead, so logs still show the unmasking."""

    def __init__(self, enabled: bool):
        self.enabled, self.tty = enabled, sys.stderr.isatty()
        self.lines, self.shown = 0, set()

    def __call__(self, s: float, z) -> None:
        if not self.enabled:
            return
        text = decode(z[0].cpu())
        masked = text.count("_") / len(text)
        if self.tty:
            width = shutil.get_terminal_size().columns
            rows = [text[i : i + width] for i in range(0, len(text), width)]
            sys.stderr.write((f"\x1b[{self.lines}F" if self.lines else "") + "\x1b[J" + "\n".join(rows) + "\n")
            sys.stderr.flush()
            self.lines = len(rows)
        elif (quarter := int(4 * (1 - masked))) not in self.shown and quarter < 4:
            self.shown.add(quarter)
            print(f"[{100 * masked:3.0f}% masked] {text}", file=sys.stderr)

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


COMMANDS = {
    "prepare": prepare,
    "train": train,
    "sample": sample,
    "evaluate": evaluate,
    "convert": convert,
    "demo": demo,
}


def main(argv: Sequence[str] | None = None, *, check_only: bool = False) -> None:
    """Parse ``argv`` (default: sys.argv), check, and run the subcommand's work; ``check_only`` stops after
    the checks (what the option-walking test runs: nothing is loaded, trained or written).  The sampling
    options are those of the samplers registered when it runs."""
    global SampleOptions, DemoSampleOptions
    SampleOptions, DemoSampleOptions = sample_options(), sample_options(batch_size=2, top_p=0.9)
    with cli.one_line_errors():
        work = tyro.extras.subcommand_cli_from_dict(
            COMMANDS,
            prog="python -m experiments.text8",
            description=__doc__.split("\n")[0],
            args=argv,
            config=(tyro.conf.CascadeSubcommandArgs,),  # --method.T works without naming method:<name> first
        )
        if not check_only:
            work()


if __name__ == "__main__":
    main()
