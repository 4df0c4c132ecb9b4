"""BD3-LM's clip search: the (beta, omega) whose clipped training loss varies least on validation batches.

    python -m experiments.clip runs/bd3lm-demo
    python -m experiments.clip runs/bd3lm-text8 --batches 16 --widths 0.5 0.7 0.9 --delta 0.1

BD3-LM (Arriola et al. 2025, §4.2) trains with the mask rate drawn from U[beta, omega] instead of U[0, 1]: a
lower-variance surrogate of the bound.  It chooses the clip by the data: for a trained checkpoint, the
variance over validation batches of the loss under each clip of a grid, least wins.  The grid here is its
code's (kuleshov-group/bd3lms, ``clip_search_widths`` and ``clip_search_delta``): for each width
omega - beta in ``--widths``, beta = 0, delta, 2 delta, ... while omega <= 1, plus the unclipped (0, 1).
Every clip sees the same batches and the same draws (``nanodd.methods.bd3lm.clip_variance``), so the rows
differ by the clip alone.  It prints the grid as a Markdown table (the loss in bits per token: mean,
variance, standard deviation) and the flags to train with.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import tyro

from experiments.cli import run
from experiments.paths import check_checkpoint

from nanodd import checks
from nanodd.data import canonical_chunks, load_split
from nanodd.methods.bd3lm import BD3LMConfig, ClipStat, clip_variance
from nanodd.shell import dist
from nanodd.shell.workflows import load_checkpoint, trained_dir


@dataclass(frozen=True)
class Options:
    checkpoint: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="CHECKPOINT")]
    """A BD3-LM run directory, checkpoint directory or step directory (train bd3lm-demo, bd3lm-text8)."""
    batches: int = 8
    """Validation batches the variance is taken over (at least 2)."""
    batch_size: int = 16
    """Chunks per batch (the first batches x batch_size canonical validation chunks)."""
    widths: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    """Clip widths omega - beta to search (each in (0, 1]); the paper's code searches 0.5 to 0.9."""
    delta: float = 0.05
    """Step of beta along each width (the paper's code: 0.05)."""
    seed: int = 0
    """Seeds the loss's draws (times and masks), shared by every clip."""
    ema: bool = True
    """Use the EMA weights (--no-ema: the raw trained weights)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run the network ('auto': CUDA when available)."""

    def __post_init__(self):
        checks.named("checkpoint", self.checkpoint)
        checks.at_least("batches", self.batches, 2)  # a variance needs two batches
        checks.at_least("batch_size", self.batch_size, 1)
        checks.require("widths", len(self.widths) > 0, "name at least one width", self.widths)
        for w in self.widths:
            checks.require("widths", math.isfinite(w) and 0 < w <= 1, "be in (0, 1]", w)
        checks.require("delta", math.isfinite(self.delta) and 0 < self.delta <= 1, "be in (0, 1]", self.delta)
        checks.seed("seed", self.seed)


def grid(widths: tuple[float, ...], delta: float) -> list[tuple[float, float]]:
    """The unclipped (0, 1), then for each width w the clips (beta, beta + w), beta = 0, delta, ... while
    beta + w <= 1 (rounded to 6 decimals, so 0.1 + 0.2 is 0.3); duplicates dropped, in order."""
    clips = [(0.0, 1.0)]
    for w in widths:
        k = 0
        while (beta := round(k * delta, 6)) + w <= 1 + 1e-9:
            clips.append((beta, min(1.0, round(beta + w, 6))))
            k += 1
    return list(dict.fromkeys(clips))


def table(rows: list[ClipStat], best: ClipStat) -> str:
    """The grid as Markdown: the loss in bits per token, the best row marked."""
    bits = math.log(2)
    lines = ["| beta | omega | mean (bits/token) | variance | std | |", "|---:|---:|---:|---:|---:|:---|"]
    for r in rows:
        mark = "least variance" if r is best else ("unclipped" if (r.beta, r.omega) == (0.0, 1.0) else "")
        lines.append(
            f"| {r.beta:.2f} | {r.omega:.2f} | {r.mean / bits:.4f} | {r.variance / bits**2:.3g} | "
            f"{math.sqrt(r.variance) / bits:.3g} | {mark} |"
        )
    return "\n".join(lines)


def main(opt: Annotated[Options, tyro.conf.arg(name="")]) -> None:
    check_checkpoint("CHECKPOINT", opt.checkpoint)
    device = dist.setup(opt.device).device  # its refusal names --device
    ckpt = load_checkpoint(opt.checkpoint, ema=opt.ema, device=device)
    if not isinstance(ckpt.cfg.method, BD3LMConfig):
        raise ValueError(
            f"CHECKPOINT {opt.checkpoint}: trained with {type(ckpt.cfg.method).__name__}, not BD3-LM; the clip "
            "search is for a block-diffusion checkpoint (method:bd3lm)"
        )
    L = ckpt.cfg.data.seq_len
    data = load_split(trained_dir(ckpt), "val", ckpt.cfg.data.rows, L)
    x0 = canonical_chunks(data, L, opt.batches * opt.batch_size).to(device)
    if len(x0) < 2 * opt.batch_size:
        raise ValueError(
            f"CHECKPOINT {opt.checkpoint}: the validation split holds {len(x0)} chunks of {L}, fewer than two "
            f"batches of --batch-size {opt.batch_size}"
        )
    batches = list(x0[: len(x0) // opt.batch_size * opt.batch_size].split(opt.batch_size))
    clips = grid(opt.widths, opt.delta)
    print(
        f"{opt.checkpoint}: {len(clips)} clips over {len(batches)} batches of {opt.batch_size} x {L} tokens "
        f"(block size {ckpt.cfg.method.block_size})",
        file=sys.stderr,
        flush=True,
    )
    gen = torch.Generator(device).manual_seed(opt.seed)
    rows = clip_variance(ckpt.apply, ckpt.params, batches, clips, gen, cfg=ckpt.cfg.method)
    best = min(rows, key=lambda r: r.variance)
    print(table(rows, best))
    print(
        f"\nleast variance: U[{best.beta:g}, {best.omega:g}]; train with --method.beta {best.beta:g} "
        f"--method.omega {best.omega:g}"
    )


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m experiments.clip", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
