"""Training throughput: tokens/s, model FLOP utilisation and peak memory for fp32 / bf16, eager / compiled.

    python benchmarks/train_throughput.py                 # width 256, 4 blocks, batch 16 x 256, CPU
    python benchmarks/train_throughput.py --d-model 768 --n-blocks 12 --n-heads 12 --batch-size 4
    python benchmarks/train_throughput.py --device cuda --d-model 768 --n-blocks 12 --n-heads 12 --batch-size 64

Runs the real ``Trainer.train_step`` (data, loss, backward, clipping, AdamW, EMA) on the built-in
corpus.  Each path (dtype x compile) lives in its own worker process, built and warmed up (compiled)
first; then the workers take turns, ``rounds`` times ``steps`` steps each, one at a time, so slow
drift of a shared machine hits every path alike, and each path reports its median round.  MFU
divides the model's training FLOPs (6 N per token for N non-embedding parameters, plus 12 n_blocks L
d for attention) by a matmul peak this script measures on the same device and dtype.  Peak memory is
the worker's peak resident set on CPU (the Python process included), max allocated on CUDA.  On a
CPU without native bf16 the bf16 paths are skipped (and the output says so): their matmuls run at
~1 GFLOP/s there.  Prints a table; asserts nothing.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import platform
import resource
import statistics
import time
import sys
from pathlib import Path
from typing import Annotated, Literal

if __package__ in (None, ""):  # run as a file: make benchmarks/ and experiments/ importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import tyro

import nanodd.checks as checks
from experiments.cli import run
from nanodd.config import Config, DataConfig, TrainConfig
from nanodd.methods.d3pm import D3PMConfig
from nanodd.model import DiTConfig
from nanodd.shell import dist
from nanodd.shell.log import Log
from nanodd.shell.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class Args:
    d_model: int = 256
    """Model width."""
    n_blocks: int = 4
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads."""
    batch_size: int = 16
    """Sequences per step."""
    seq_len: int = 256
    """Characters per sequence."""
    steps: int = 5
    """Timed steps per path in each round."""
    rounds: int = 3
    """Rounds; each path reports its median round."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where to train."""
    compile: tuple[bool, ...] = (False, True)
    """torch.compile off and/or on."""
    dtypes: tuple[Literal["fp32", "bf16"], ...] = ("fp32", "bf16")
    """Training precisions (bf16 = autocast, fp32 master weights)."""
    skip_slow_bf16: bool = True
    """Skip bf16 on a CPU without native bf16 (AVX512-BF16 / AMX), where it runs ~50-80x slower than fp32;
    --no-skip-slow-bf16 runs it anyway."""

    def __post_init__(self):
        # width, heads and blocks refused as the network refuses them (heads of even width, for rotary)
        DiTConfig(d_model=self.d_model, n_heads=self.n_heads, n_blocks=self.n_blocks)
        for name in ("batch_size", "seq_len", "steps", "rounds"):
            checks.at_least(name, getattr(self, name), 1)
        checks.require("compile", len(self.compile) > 0, "name at least one setting", self.compile)
        checks.require("dtypes", len(self.dtypes) > 0, "name at least one precision", self.dtypes)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, budget_s: float = 1.0) -> float:
    """Best observed FLOP/s of a square matmul of size up to n.  The size doubles from 256 while one
    matmul takes under a tenth of ``budget_s``, then it repeats (10 times at most) for about ``budget_s``:
    a slow path (bf16 on a CPU without native bf16, ~1 GFLOP/s) is measured at a size that finishes."""

    def seconds(a: torch.Tensor, b: torch.Tensor) -> float:
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        return time.perf_counter() - t

    def square(size: int) -> torch.Tensor:
        return torch.randn(size, size, device=device, dtype=dtype)

    size = min(256, n)
    while size < n and seconds(square(size), square(size)) < budget_s / 10:
        size *= 2
    a, b = square(size), square(size)
    times = [seconds(a, b)]
    while len(times) < 10 and sum(times) < budget_s:
        times.append(seconds(a, b))
    return 2 * size**3 / min(times)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def flops_per_token(model: torch.nn.Module, cfg: DiTConfig, seq_len: int) -> float:
    """6 N for the N weights applied at every token (not the embedding lookup, and not the time MLP
    or adaLN layers, which run once per sequence), plus 12 n_blocks L d for attention scores."""
    per_sequence = ("vocab_embed", "c_embed", "adaLN_modulation")
    n = sum(p.numel() for name, p in model.named_parameters() if not any(s in name for s in per_sequence))
    return 6 * n + 12 * cfg.n_blocks * seq_len * cfg.d_model


def trainer_for(args: Args, dtype: str, compile: bool) -> Trainer:
    """The D3PM trainer of the benchmark's model (no dropout, no warmup) on the built-in corpus."""
    cfg = Config(
        model=DiTConfig(d_model=args.d_model, n_heads=args.n_heads, n_blocks=args.n_blocks, cond_dim=128, dropout=0.0),
        method=D3PMConfig(),
        data=DataConfig(source="builtin", seq_len=args.seq_len),
        train=TrainConfig(
            batch_size=args.batch_size, grad_accum=1, dtype=dtype, compile=compile, device=args.device, warmup_iters=0
        ),
    )
    return Trainer(cfg, dist.setup(args.device), Log(None, False))


def peak_memory(device: torch.device) -> float:
    """Bytes: max allocated on CUDA, else this process's peak resident set (Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(args: Args, dtype: str, compile: bool, pipe) -> None:
    """Build and warm up one path, then time ``args.steps`` steps whenever the parent asks."""
    torch.set_num_threads(pipe.recv())
    trainer = trainer_for(args, dtype, compile)
    device = trainer.runtime.device
    t = time.perf_counter()
    for _ in range(3):
        trainer.train_step()
    sync(device)
    pipe.send((time.perf_counter() - t, flops_per_token(trainer.state.model, trainer.cfg.model, args.seq_len)))
    while pipe.recv():
        t = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        sync(device)
        pipe.send(time.perf_counter() - t)
    pipe.send(peak_memory(device))


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in info.splitlines() if ":" in line)}
    name = fields.get("model name", platform.processor())
    family = f"family {fields['cpu family']} model {fields['model']}, " if "cpu family" in fields else ""
    return f"{name} ({family}{torch.backends.cpu.get_cpu_capability()})"


def main(args: Annotated[Args, tyro.conf.arg(name="")]) -> None:
    device = torch.device(args.device)
    peaks = {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
    print(f"device {machine(device)}, {torch.get_num_threads()} threads")
    print(
        f"model: width {args.d_model}, {args.n_blocks} blocks; batch {args.batch_size} x {args.seq_len}; "
        f"median of {args.rounds} rounds of {args.steps} steps per path",
        flush=True,
    )
    dtypes = args.dtypes
    if device.type == "cpu" and args.skip_slow_bf16 and "bf16" in dtypes and not dist.cpu_has_native_bf16():
        dtypes = tuple(d for d in dtypes if d != "bf16")
        print(
            f"skipped: bf16 (this CPU has no native bf16: its bf16 matmul peak is {peaks['bf16'] / 1e9:,.1f} GFLOP/s, "
            f"fp32's {peaks['fp32'] / 1e9:,.0f}; --no-skip-slow-bf16 runs it anyway)",
            flush=True,
        )
    ctx = mp.get_context("spawn")
    paths = [(dtype, compile) for compile in args.compile for dtype in dtypes]
    if not paths:
        print("no path left to run")
        return
    workers = []
    for dtype, compile in paths:  # build and warm up one at a time: compilation does not share the CPU
        here, there = ctx.Pipe()
        process = ctx.Process(target=worker, args=(args, dtype, compile, there), daemon=True)
        process.start()
        here.send(torch.get_num_threads())
        warmup, flops = here.recv()
        workers.append((here, process, warmup, flops))
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(args.rounds):
        for (pipe, *_), spent in zip(workers, times):
            time.sleep(0.5)  # the last worker's OpenMP threads spin for a while after its round
            pipe.send(True)
            spent.append(pipe.recv())
    for dtype, torch_dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):  # before and after: a busy
        peaks[dtype] = max(peaks[dtype], matmul_peak(device, torch_dtype))  # moment must not lower a peak
    print(
        f"matmul peak (best before and after) fp32 {peaks['fp32'] / 1e9:,.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:,.0f} "
        f"GFLOP/s: bf16 / fp32 = {peaks['bf16'] / peaks['fp32']:.2f}x\n"
    )
    print("| dtype | compile | tokens/s | vs fp32 eager | MFU | peak memory | warm-up s |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for (dtype, compile), (pipe, process, warmup, flops), spent in zip(paths, workers, times):
        pipe.send(False)
        memory = pipe.recv()
        process.join()
        tps = args.steps * args.batch_size * args.seq_len / statistics.median(spent)
        base = base or tps
        print(
            f"| {dtype} | {'on' if compile else 'off'} | {tps:,.0f} | {tps / base:.2f}x | "
            f"{100 * tps * flops / peaks[dtype]:.1f}% | {memory / 2**30:.2f} GiB | {warmup:.1f} |",
            flush=True,
        )


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python benchmarks/train_throughput.py", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
