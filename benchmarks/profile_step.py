"""Where a training step's time goes: ``torch.profiler`` over the real ``Trainer.train_step``.

    python -m benchmarks.profile_step                        # benchmark size and the demo, eager, CPU
    python -m benchmarks.profile_step --compile --sizes benchmark

For each size, after warm-up steps, profiles ``steps`` steps and prints two tables: the step's
phases (the ``record_function`` ranges of ``train_step``: data, forward, backward, clip, optimizer,
ema) as shares of the step's wall time, and the operators taking the most self time (compiled code
shows up as its fused kernels).  "benchmark" is ``benchmarks/train_throughput.py``'s model (width
256, 4 blocks, batch 16 x 256, no dropout); "demo" is the ``demo`` preset of ``experiments.text8``
as it trains.  Asserts nothing.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Literal

import torch
import tyro
from torch.profiler import ProfilerActivity, profile

import nanodd.checks as checks
from benchmarks.train_throughput import Args as ThroughputArgs, trainer_for
from experiments.cli import run
from experiments.presets import DEMO
from nanodd.shell import dist
from nanodd.shell.log import Log
from nanodd.shell.trainer import Trainer

PHASES = ("data", "forward", "backward", "clip", "optimizer", "ema")


@dataclasses.dataclass(frozen=True)
class Args:
    sizes: tuple[Literal["benchmark", "demo"], ...] = ("benchmark", "demo")
    """Which steps to profile."""
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    """Training precision ('auto': bf16 on CUDA and on CPUs with native bf16, else fp32)."""
    compile: bool = False
    """torch.compile the model (Inductor's kernels appear by name)."""
    steps: int = 5
    """Profiled steps (after 3 warm-up steps)."""
    rows: int = 12
    """Operators listed."""

    def __post_init__(self):
        checks.require("sizes", len(self.sizes) > 0, "name at least one of benchmark, demo", self.sizes)
        checks.at_least("steps", self.steps, 1)
        checks.at_least("rows", self.rows, 1)


def build(size: str, args: Args) -> Trainer:
    if size == "benchmark":
        return trainer_for(ThroughputArgs(), args.dtype, args.compile)
    cfg = dataclasses.replace(
        DEMO,
        train=dataclasses.replace(DEMO.train, dtype=args.dtype, compile=args.compile, device="cpu", warmup_iters=0),
    )
    return Trainer(cfg, dist.setup("cpu"), Log(None, False))


def main(args: Annotated[Args, tyro.conf.arg(name="")]) -> None:
    if args.compile:
        torch._inductor.config.cpp.enable_kernel_profile = True  # name each fused kernel in the table
    for size in args.sizes:
        trainer = build(size, args)
        for _ in range(3):
            trainer.train_step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step()
            wall = (time.perf_counter() - t) / args.steps
        model, tc = trainer.cfg.model, trainer.cfg.train
        precision = "bf16" if dist.autocast_dtype(args.dtype, trainer.runtime.device) else "fp32"
        print(
            f"\n{size}: width {model.d_model}, {model.n_blocks} blocks, batch {tc.batch_size} x "
            f"{trainer.cfg.data.seq_len}, {precision}, compile {'on' if args.compile else 'off'}: "
            f"{wall * 1e3:.0f} ms per step ({torch.get_num_threads()} threads)\n"
        )
        events = prof.key_averages()
        print("| phase | ms/step | share |\n|---|---|---|")
        for e in sorted((e for e in events if e.key in PHASES), key=lambda e: PHASES.index(e.key)):
            ms = e.cpu_time_total / 1e3 / args.steps
            print(f"| {e.key} | {ms:.1f} | {ms / wall / 10:.1f}% |")
        print("\n| operator | calls/step | ms/step | share |\n|---|---|---|---|")
        ops = sorted((e for e in events if e.key not in PHASES), key=lambda e: -e.self_cpu_time_total)
        for e in ops[: args.rows]:
            ms = e.self_cpu_time_total / 1e3 / args.steps
            name = e.key if len(e.key) <= 60 else e.key[:57] + "..."
            print(f"| `{name}` | {e.count // args.steps} | {ms:.1f} | {ms / wall / 10:.1f}% |", flush=True)


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m benchmarks.profile_step", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
