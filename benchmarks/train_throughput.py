"""Training throughput: tokens/s and model FLOP utilisation for fp32 / bf16, eager / compiled.

    python benchmarks/train_throughput.py                 # width 256, 4 blocks, batch 16 x 256, CPU
    python benchmarks/train_throughput.py --device cuda --d-model 768 --n-blocks 12 --batch-size 64

Runs the real ``Trainer.train_step`` (data, loss, backward, clipping, AdamW, EMA) on the built-in
corpus.  MFU divides the model's training FLOPs (6 N per token for N non-embedding parameters,
plus 12 n_blocks L d for attention) by a matmul peak this script measures itself on the same
device and dtype.  Prints a table; asserts nothing.
"""

from __future__ import annotations

import dataclasses
import time

import torch
import tyro

from nanodd.config import Config, DataConfig, TrainConfig
from nanodd.methods.d3pm import D3PMConfig
from nanodd.model import DiTConfig
from nanodd.shell import dist
from nanodd.shell.log import Log
from nanodd.shell.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class Args:
    d_model: int = 256
    n_blocks: int = 4
    n_heads: int = 4
    batch_size: int = 16
    seq_len: int = 256
    steps: int = 10
    """Timed steps per configuration (after warm-up steps, which include compilation)."""
    device: str = "cpu"
    compile: tuple[bool, ...] = (False, True)
    dtypes: tuple[str, ...] = ("fp32", "bf16")


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Best observed FLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def flops_per_token(model: torch.nn.Module, cfg: DiTConfig, seq_len: int) -> float:
    """6 N for the N weights applied at every token (not the embedding lookup, and not the time MLP
    or adaLN layers, which run once per sequence), plus 12 n_blocks L d for attention scores."""
    per_sequence = ("vocab_embed", "c_embed", "adaLN_modulation")
    n = sum(p.numel() for name, p in model.named_parameters() if not any(s in name for s in per_sequence))
    return 6 * n + 12 * cfg.n_blocks * seq_len * cfg.d_model


def measure(args: Args, dtype: str, compile: bool) -> tuple[float, float, float]:
    """(tokens/s, seconds of warm-up, FLOPs per token) of the real train step."""
    cfg = Config(model=DiTConfig(d_model=args.d_model, n_heads=args.n_heads, n_blocks=args.n_blocks,
                                 cond_dim=128, dropout=0.0),
                 method=D3PMConfig(), data=DataConfig(source="builtin", seq_len=args.seq_len),
                 train=TrainConfig(batch_size=args.batch_size, grad_accum=1, dtype=dtype, compile=compile,
                                   device=args.device, warmup_iters=0))
    trainer = Trainer(cfg, dist.setup(args.device), Log(None, False))
    device = trainer.runtime.device
    t = time.perf_counter()
    for _ in range(3):
        trainer.train_step()
    sync(device)
    warmup = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    sync(device)
    tokens_per_s = args.steps * args.batch_size * args.seq_len / (time.perf_counter() - t)
    return tokens_per_s, warmup, flops_per_token(trainer.state.model, cfg.model, args.seq_len)


def main(args: Args) -> None:
    device = torch.device(args.device)
    peaks = {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}
    print(f"device {args.device}, {torch.get_num_threads()} threads; matmul peak fp32 {peaks['fp32'] / 1e9:.0f} "
          f"GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    print(f"model: width {args.d_model}, {args.n_blocks} blocks; batch {args.batch_size} x {args.seq_len}\n")
    print("| dtype | compile | tokens/s | vs fp32 eager | MFU | warm-up s |")
    print("|---|---|---|---|---|---|")
    base = None
    for compile in args.compile:
        for dtype in args.dtypes:
            tps, warmup, fpt = measure(args, dtype, compile)
            base = base or tps
            mfu = tps * fpt / peaks[dtype]
            print(f"| {dtype} | {'on' if compile else 'off'} | {tps:,.0f} | {tps / base:.2f}x | {100 * mfu:.1f}% | "
                  f"{warmup:.1f} |", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
