"""How long a checkpoint save stalls training: time until ``save`` returns (training resumes) vs.
until the checkpoint is committed on disk, for the state of a DiT of the given size (params, EMA
and AdamW moments, fp32).

    python benchmarks/checkpoint_save.py                       # width 768, 12 blocks (nanoDD's DiT)
    python benchmarks/checkpoint_save.py --n-blocks 4
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from typing import Annotated

import torch
import tyro

import nanodd.checks as checks
from experiments.cli import run

from nanodd.functional import params_of
from nanodd.model import DiT, DiTConfig
from nanodd.shell.checkpoint import Checkpoints


@dataclasses.dataclass(frozen=True)
class Args:
    d_model: int = 768
    n_blocks: int = 12
    saves: int = 3

    def __post_init__(self):
        DiTConfig(vocab_size=28, d_model=self.d_model, n_blocks=self.n_blocks)  # refused as the network refuses it
        checks.at_least("saves", self.saves, 1)


def main(args: Annotated[Args, tyro.conf.arg(name="")]) -> None:
    model = DiT(DiTConfig(vocab_size=28, d_model=args.d_model, n_blocks=args.n_blocks))
    params = {k: v.detach() for k, v in params_of(model).items()}
    state = {
        "params": dict(model.state_dict()),
        "ema": params,
        "opt": {
            f"{i}.{m}": torch.randn_like(v) for i, v in enumerate(params.values()) for m in ("exp_avg", "exp_avg_sq")
        },
    }
    mb = sum(v.numel() * v.element_size() for part in state.values() for v in part.values()) / 2**20
    with tempfile.TemporaryDirectory() as d:
        ckpts = Checkpoints(Path(d))
        print(f"state: {mb:,.0f} MiB; disk: {d}")
        print("| save | blocks training (s) | committed after (s) |\n|---|---|---|")
        for step in range(1, args.saves + 1):
            t = time.perf_counter()
            ckpts.save(step, state, {"config": {}})
            blocked = time.perf_counter() - t
            ckpts.wait()
            print(f"| {step} | {blocked:.2f} | {time.perf_counter() - t:.2f} |", flush=True)


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m benchmarks.checkpoint_save", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
