"""Per-timestep analysis of trained checkpoints: where in t a bound is paid, how well the network
denoises there, and how noisy its gradient is (``nanodd.analysis``).

    python -m experiments.timesteps runs/demo runs/mdlm-demo --csv docs/timesteps.csv --plot docs/timesteps.png

For each checkpoint, on the same validation chunks and the same noise at every t of the midpoint grid
t_i = (i - 1/2) / n: the bound's integrand in bits per token, per character for text8 (mean and standard error
over the chunks; its mean over the grid is a quadrature of the bound), the accuracy on corrupted tokens, and
the norm, variance and second moment of the per-sequence gradient, from which it prints what the best
importance sampling of t would keep of that second moment (``analysis.importance``).  ``--of loss``
analyses what D3PM trains on, its hybrid loss, instead of its bound (every other method trains on its
bound).  Several checkpoints share the axes of the plot
(the optional ``plot`` extra: matplotlib).  Autoregressive judges have no time axis and are refused.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from experiments.cli import run
from experiments.paths import check_writable

from nanodd import analysis, checks
from nanodd.data import canonical_chunks, load_split
from nanodd.data.files import atomic_write
from nanodd.methods import d3pm
from nanodd.shell.workflows import LoadedModel, load_checkpoint, trained_dir

COLUMNS = ("checkpoint", "method", "t", "f_bits", "f_se_bits", "accuracy", "grad_norm", "grad_var", "grad_sq")


@dataclass(frozen=True)
class Options:
    checkpoints: tyro.conf.Positional[tuple[str, ...]]
    """Run directories or checkpoints to analyse (any diffusion method; not an AR judge)."""
    n_t: int = 32
    """Times on the midpoint grid t_i = (i - 1/2) / n_t."""
    batch: int = 16
    """Validation chunks x0 (the first ones; the same for checkpoints of the same data and length)."""
    chunk_size: int = 4
    """Times per vmapped call: memory grows as chunk_size x batch x parameters (per-sequence gradients)."""
    seed: int = 0
    """Seeds the integrand's noise, shared by every t."""
    of: Literal["bound", "loss"] = "bound"
    """bound: the method's bound; loss: D3PM's hybrid loss, what it trains on (the gradient a training
    step sees; its mean over t is the loss, not a bound)."""
    csv: str = "timesteps.csv"
    """Where the table goes (one row per checkpoint and t)."""
    plot: str | None = None
    """Also draw the integrand, accuracy and gradient variance against t to this PNG (needs matplotlib)."""

    def __post_init__(self):
        checks.require(
            "checkpoints", len(self.checkpoints) > 0, "name at least one run or checkpoint", self.checkpoints
        )
        checks.at_least("n_t", self.n_t, 1)
        checks.at_least("batch", self.batch, 2)  # a standard error needs two sequences
        checks.at_least("chunk_size", self.chunk_size, 1)
        checks.seed("seed", self.seed)
        checks.named("csv", self.csv)
        checks.named("plot", self.plot)


def profile(ckpt: LoadedModel, opt: Options) -> dict[str, torch.Tensor]:
    """``analysis.per_timestep`` on the checkpoint's first ``batch`` validation chunks, chunk by chunk
    of times with a progress line; f in bits per token."""
    if ckpt.model.cfg.causal:
        raise ValueError(f"{ckpt.path} is an autoregressive judge: its bound has no time axis")
    data = load_split(trained_dir(ckpt), "val", ckpt.cfg.data.rows, ckpt.cfg.data.seq_len)
    x0 = canonical_chunks(data, ckpt.cfg.data.seq_len, opt.batch).to(ckpt.device)
    if len(x0) < 2:
        raise ValueError(f"{ckpt.path}: the validation split holds fewer than 2 chunks of {ckpt.cfg.data.seq_len}")
    integrand, diffusion = ckpt.method.bound(ckpt.cfg.method), ckpt.method.diffusion(ckpt.cfg.method)
    if opt.of == "loss":
        if not isinstance(ckpt.cfg.method, d3pm.D3PMConfig):
            raise ValueError(
                f"{ckpt.path}: --of loss is D3PM's hybrid loss; this method trains on its bound (--of bound)"
            )
        integrand = d3pm.hybrid_loss(ckpt.cfg.method)
    noise = integrand.noise(torch.Generator(ckpt.device).manual_seed(opt.seed), x0)
    process = diffusion.process if diffusion.output == "x0" else None
    parts, start = [], time.perf_counter()
    for ts in analysis.midpoints(opt.n_t).to(ckpt.device).split(opt.chunk_size):
        parts.append(analysis.per_timestep(integrand, ckpt.apply, ckpt.params, x0, noise, ts, process=process))
        done = sum(len(p["t"]) for p in parts)
        print(
            f"  {ckpt.path}: {done}/{opt.n_t} times, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True
        )
    out = {k: torch.cat([p[k] for p in parts]).cpu() for k in parts[0]}
    out["f_bits"], out["f_se_bits"] = out.pop("f") / math.log(2), out.pop("f_se") / math.log(2)
    return out


def plot(curves: dict[tuple[str, str], dict[str, torch.Tensor]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'nanodd[plot]'")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for (checkpoint, method), c in curves.items():
        label, t = f"{checkpoint} ({method})", c["t"].numpy()
        axes[0].plot(t, c["f_bits"].numpy(), label=label)
        axes[0].fill_between(
            t, (c["f_bits"] - c["f_se_bits"]).numpy(), (c["f_bits"] + c["f_se_bits"]).numpy(), alpha=0.2
        )
        axes[1].plot(t, c["accuracy"].numpy(), label=label)
        axes[2].plot(t, c["grad_var"].numpy(), label=label)
    axes[0].set_ylabel("integrand f(t), bits/token")
    axes[0].set_title("the bound = the mean of f over t", fontsize=9)
    axes[1].set_ylabel("accuracy on corrupted tokens")
    axes[2].set_ylabel("per-sequence gradient variance (trace)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("t")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), png.getvalue())
    print(f"wrote {path}", file=sys.stderr)


def main(opt: Annotated[Options, tyro.conf.arg(name="")]) -> None:
    check_writable("--csv", opt.csv, new_parent=True)
    check_writable("--plot", opt.plot, new_parent=True)
    curves = {}  # (checkpoint, method) -> statistics
    for path in opt.checkpoints:
        ckpt = load_checkpoint(path)
        key = (path, type(ckpt.cfg.method).__name__.removesuffix("Config").lower())
        curves[key] = c = profile(ckpt, opt)
        worst, (_, kept) = int(c["grad_var"].argmax()), analysis.importance(c["grad_sq"])
        print(
            f"{path} ({key[1]}): mean over t {float(c['f_bits'].mean()):.3f} bits/token (the {opt.of} by "
            f"quadrature); gradient variance largest at t = {float(c['t'][worst]):.3f}; the best importance "
            f"sampling of t keeps {kept:.2f} of the gradient's second moment"
        )
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for (path, method), c in curves.items():
        for i in range(len(c["t"])):
            writer.writerow([path, method, *(f"{float(c[k][i]):.6g}" for k in COLUMNS[2:])])
    Path(opt.csv).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(opt.csv), text.getvalue().encode())  # complete or absent
    print(f"wrote {opt.csv}", file=sys.stderr)
    if opt.plot:
        plot(curves, opt.plot)


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m experiments.timesteps", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
