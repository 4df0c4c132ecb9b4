"""text8 experiments: prepare data, train, sample, evaluate, and a five-minute CPU demo.

    python -m experiments.text8 demo                              # no download: train + sample on CPU
    python -m experiments.text8 prepare --data.source text8       # download and split text8
    python -m experiments.text8 train d3pm-text8 --train.lr 3e-4  # nanoDD's recipe, any field overridable
    torchrun --standalone --nproc_per_node=8 -m experiments.text8 train d3pm-text8-8gpu
    python -m experiments.text8 sample runs/d3pm-text8 --sample.batch-size 4
    python -m experiments.text8 sample nanoDD-D3PM-text8/ckpt.pt     # nanoDD's published weights
    python -m experiments.text8 convert nanoDD-D3PM-text8/ckpt.pt runs/nanodd   # as our checkpoint
    python -m experiments.text8 evaluate runs/d3pm-text8 --eval.split test --eval.estimator exact

Every mistake in the arguments or the data is reported as one line ``error: ...`` with exit code 2
(set NANODD_DEBUG=1 to see the traceback instead).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from nanodd import evaluate as ev, sampling
from nanodd.config import Config, DataConfig, TrainConfig, to_dict
from nanodd.data import DataError, decode, default_cache_dir, eval_chunks, load_split, prepare as prepare_data
from nanodd.data.prepare import dataset_name
from nanodd.functional import make_apply
from nanodd.methods import module_for
from nanodd.methods.d3pm import D3PMConfig
from nanodd.model import DiTConfig
from nanodd.shell import dist
from nanodd.shell.checkpoint import CheckpointError, Checkpoints, load_model
from nanodd.shell.trainer import StopTraining, train as run_training

D3PM_TEXT8 = Config(
    model=DiTConfig(),
    method=D3PMConfig(T=1000, hybrid_coeff=0.05),
    data=DataConfig(source="text8", seq_len=256),
    train=TrainConfig(compile=True, out_dir="runs/d3pm-text8"),
)
PRESETS = {
    "d3pm-text8": (
        "nanoDD's single-GPU recipe: DiT 768 wide, 12 heads, 12 blocks; T = 1000, lambda = 0.05; batch 256 "
        "per device x 4 accumulation steps; AdamW 1e-3 -> 1e-5 cosine, 500k steps.",
        D3PM_TEXT8,
    ),
    "d3pm-text8-8gpu": (
        "d3pm-text8 for 8 GPUs under torchrun: grad_accum 1, so the global batch stays 8 x 256 = 2048. "
        "batch_size is per device.",
        dataclasses.replace(D3PM_TEXT8, train=dataclasses.replace(D3PM_TEXT8.train, grad_accum=1,
                                                                   out_dir="runs/d3pm-text8-8gpu")),
    ),
    "demo": (
        "A small model that learns visibly on 2 CPU cores in a few minutes, on the built-in corpus.",
        Config(
            model=DiTConfig(d_model=128, n_heads=4, n_blocks=4, cond_dim=64, dropout=0.0),
            method=D3PMConfig(T=1000, hybrid_coeff=0.05),
            data=DataConfig(source="builtin", seq_len=128),
            train=TrainConfig(batch_size=32, grad_accum=1, max_iters=1200, lr=2e-3, min_lr=1e-4, warmup_iters=100,
                              grad_clip=1.0, ema_decay=0.99, eval_interval=400, eval_batches=5,
                              log_interval=50, out_dir="runs/demo"),
        ),
    ),
}
Preset = tyro.extras.subcommand_type_from_defaults({k: v for k, (_, v) in PRESETS.items()},
                                                   {k: d for k, (d, _) in PRESETS.items()})


def prepare(data: DataConfig = DataConfig()) -> None:
    """Download (text8 or a URL) or read (a local file, the built-in corpus) and split a corpus."""
    root = prepare_data(data.source, Path(data.data_dir) if data.data_dir else None,
                        seq_len=data.seq_len, force=data.force)
    print(root)


def train(cfg: Annotated[Preset, tyro.conf.arg(name="")]) -> None:
    """Train from a preset; every field can be overridden (--train.lr 3e-4, --model.n-blocks 6, ...)."""
    run_training(cfg)


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    batch_size: int = 1
    """Sequences to generate."""
    steps: int | None = None
    """Sampling steps (default: the model's T; fewer reveal several tokens per step)."""
    seed: int = 0
    """Seed of the sampler's generator."""
    temperature: float = 1.0
    """Divide the logits by this before drawing a token."""
    top_p: float = 1.0
    """Nucleus sampling: draw only from the smallest set of tokens holding this probability."""
    ema: bool = True
    """Use the EMA weights (--sample.no-ema: the raw trained weights)."""
    live: bool = True
    """Show the unmasking of the first sequence as it happens (on a terminal)."""
    out: str | None = None
    """Write the samples to this file (one per line) instead of stdout."""
    metrics: bool = False
    """Print sample metrics against the training data (word-in-vocabulary fraction, character
    entropies, word length), using the first 10M characters of its prepared training split."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run the network ('auto': CUDA when available)."""


def sample(checkpoint: tyro.conf.Positional[str], sample: SampleOptions = SampleOptions()) -> None:
    """Generate text from a checkpoint: a run directory, a checkpoint directory, or a nanoDD ckpt.pt."""
    generate(checkpoint, sample)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    split: Literal["val", "test"] = "val"
    estimator: Literal["stratified", "exact", "continuous", "elbo-vs-t"] = "stratified"
    """stratified: the model's T-step bound L_T, t stratified over chunks (n_t network calls per chunk);
    exact: L_T with all T steps summed for every chunk (T calls per chunk); continuous: L_inf;
    elbo-vs-t: L_T for T in 10, 20, 100, 256, 1000 and L_inf, with shared noise."""
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


def evaluate(checkpoint: tyro.conf.Positional[str], eval: EvalOptions = EvalOptions()) -> None:
    """Bits per character on the val or test split: canonical chunks, standard errors, a JSON report."""
    device = dist.setup(eval.device).device
    model, params, cfg = load_model(Path(checkpoint), ema=eval.ema, device=device)
    if eval.seq_len is not None and eval.seq_len != cfg.data.seq_len:
        raise ValueError(f"--eval.seq-len {eval.seq_len} differs from the checkpoint's sequence length "
                         f"{cfg.data.seq_len}; the bound is defined per chunk of the model's length")
    source = eval.data_source or cfg.data.source
    data = load_split(prepared_dir(source, eval.data_dir or cfg.data.data_dir), eval.split)
    n_chunks, remainder = eval_chunks(data, cfg.data.seq_len)
    n_chunks = min(n_chunks, eval.max_chunks if eval.max_chunks is not None else n_chunks)
    chunks = torch.from_numpy(data[: n_chunks * cfg.data.seq_len].astype("int64")).view(n_chunks, cfg.data.seq_len).to(device)
    method = module_for(cfg.method)
    kw = dict(generator=torch.Generator(device).manual_seed(eval.seed), mask_id=cfg.method.mask_id,
              time_input=method.network_time(cfg.method), batch_size=eval.batch_size, on_batch=Progress())
    apply = make_apply(model)
    if eval.estimator == "elbo-vs-t":
        curve = ev.elbo_vs_T(apply, params, chunks, schedule=method.SCHEDULE, n_t=eval.n_t, **kw)
        results = {("inf" if T is None else str(T)): e.report() for T, e in curve.items()}
    else:
        bound = ev.Bound(method.SCHEDULE, None if eval.estimator == "continuous" else cfg.method.T)
        if eval.estimator == "exact":
            results = ev.exact_in_t(apply, params, chunks, bound=bound, **kw).report()
        else:
            results = ev.stratified(apply, params, chunks, bound=bound, n_t=eval.n_t, **kw).report()
    report = {"checkpoint": str(checkpoint), "split": eval.split, "source": source, "estimator": eval.estimator,
              "T": cfg.method.T, "seq_len": cfg.data.seq_len, "remainder_chars": remainder, "seed": eval.seed,
              "batch_size": eval.batch_size, "ema": eval.ema, "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if eval.out:
        Path(eval.out).write_text(text + "\n")


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
        sys.stderr.write(f"\r{label}{info['done']:,}/{info['total']:,} | {info['bpc']:.4f} +- {info['stderr']:.4f} "
                         f"bits/char over {info['n_chunks']:,} chunks" + ("\n" if done else ""))
        sys.stderr.flush()


def convert(checkpoint: tyro.conf.Positional[str], out_dir: tyro.conf.Positional[str]) -> None:
    """Write a nanoDD ckpt.pt as one of our checkpoints (raw and EMA weights) under OUT_DIR/checkpoints."""
    from nanodd.shell import nanodd_ckpt

    model, _, cfg, ckpt = nanodd_ckpt.load(Path(checkpoint), ema=False)
    ema = nanodd_ckpt.dit_state(ckpt, ema=True, cfg=cfg.model)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=out_dir))
    ckpts = Checkpoints(Path(out_dir) / "checkpoints")
    step = int(ckpt.get("iter_num", 0))
    ckpts.save(step, {"params": dict(model.state_dict()), "ema": {k: ema[k] for k, _ in model.named_parameters()}},
               {"config": to_dict(cfg), "source": str(Path(checkpoint).absolute())})
    ckpts.wait()
    print(f"wrote {ckpts.directory / str(step)}", file=sys.stderr)


def demo(cfg: Annotated[Config, tyro.conf.arg(name="")] = PRESETS["demo"][1],
         sample: SampleOptions = SampleOptions(batch_size=2, top_p=0.9)) -> None:
    """Train the demo preset on the built-in corpus (no download), then sample from it."""
    out = Path(cfg.train.out_dir)
    if (out / "checkpoints").exists() and not cfg.train.resume:
        shutil.rmtree(out / "checkpoints")  # the demo always starts fresh unless told to resume
        (out / "metrics.jsonl").unlink(missing_ok=True)
        print(f"demo: starting fresh (removed the previous run in {out})", file=sys.stderr)
    last = run_training(cfg)
    print(f"validation bound: {last['val_bpc']:.3f} bits/char (unigram entropy of text8-style English: ~4.1)",
          file=sys.stderr)
    generate(str(out), sample)


def generate(checkpoint: str, opt: SampleOptions) -> None:
    device = dist.setup(opt.device).device
    model, params, cfg = load_model(Path(checkpoint), ema=opt.ema, device=device)
    transform = sampling.compose(sampling.temperature(opt.temperature), sampling.top_p(opt.top_p))
    view = LiveView(enabled=opt.live)
    gen = torch.Generator(device).manual_seed(opt.seed)
    x, nfe = module_for(cfg.method).sample(make_apply(model), params, cfg=cfg.method, batch_size=opt.batch_size,
                                           seq_len=cfg.data.seq_len, generator=gen, steps=opt.steps,
                                           transform=transform, on_step=view)
    view.close()
    texts = [decode(row) for row in x.cpu()]
    print(f"{len(texts)} sample(s), {nfe} network evaluations", file=sys.stderr)
    if opt.out:
        Path(opt.out).write_text("\n".join(texts) + "\n")
        print(f"wrote {opt.out}", file=sys.stderr)
    else:
        print("\n\n".join(texts))
    if opt.metrics:
        train_text = decode(load_split(prepared_dir(cfg.data.source, cfg.data.data_dir), "train")[:10_000_000])
        metrics = ev.sample_metrics(texts, train_text, set(ev.words(train_text)))
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}), file=sys.stderr)


def prepared_dir(source: str, data_dir: str | None) -> Path:
    """Where ``prepare`` puts ``source`` (load_split names the prepare command if it is not there)."""
    return Path(data_dir or default_cache_dir()) / dataset_name(source)


class LiveView:
    """Redraws the first sequence in place as tokens are revealed ('_' = still masked).
    Off a terminal it prints a few snapshots instead, so logs still show the unmasking."""

    def __init__(self, enabled: bool):
        self.enabled, self.tty = enabled, sys.stderr.isatty()
        self.lines, self.shown = 0, set()

    def __call__(self, s: int, z: torch.Tensor) -> None:
        if not self.enabled:
            return
        text = decode(z[0].cpu())
        masked = text.count("_") / len(text)
        if self.tty:
            width = shutil.get_terminal_size().columns
            rows = [text[i:i + width] for i in range(0, len(text), width)]
            sys.stderr.write((f"\x1b[{self.lines}F" if self.lines else "") + "\x1b[J" + "\n".join(rows) + "\n")
            sys.stderr.flush()
            self.lines = len(rows)
        elif (quarter := int(4 * (1 - masked))) not in self.shown and quarter < 4:
            self.shown.add(quarter)
            print(f"[{100 * masked:3.0f}% masked] {text}", file=sys.stderr)

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def main() -> None:
    try:
        tyro.extras.subcommand_cli_from_dict(
            {"prepare": prepare, "train": train, "sample": sample, "evaluate": evaluate, "convert": convert,
             "demo": demo},
            prog="python -m experiments.text8", description=__doc__.split("\n")[0],
        )
    except (ValueError, OSError, DataError, CheckpointError, StopTraining) as e:  # user-facing problems
        if os.environ.get("NANODD_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
