"""The GPU training path in one go: throughput and MFU, bf16 + compile against fp32 eager, and DDP.

    python -m benchmarks.gpu_check                          # on a CUDA machine: d3pm-text8's model, batch 64 x 256
    python benchmarks/gpu_check.py --batch-size 256 --steps 50
    python -m benchmarks.gpu_check --device cpu --d-model 32 --n-blocks 2 --n-heads 2 --seq-len 32 \\
        --batch-size 4 --no-compile --ddp-procs 2           # the whole check on the CPU (gloo), to test it

Runs the ``d3pm-text8`` preset's model and method (its optimizer settings too; no warmup, batch
``batch-size`` x ``seq-len``, no accumulation) on the built-in corpus, so nothing is downloaded:

1. **Throughput**: the real ``Trainer.train_step`` with bf16 autocast, torch.compile and fused AdamW,
   ``steps`` timed steps after the loss-match steps (which are the warm-up: compilation
   happens there).  MFU as in ``train_throughput.py``, against the bf16 matmul peak measured here and,
   for a GPU named in ``SPEC_PEAKS``, its data-sheet dense bf16 peak; each row says which.  Peak
   memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process's ``ru_maxrss`` on CPU.
2. **Loss match**: the first ``loss-steps`` losses of that run against an fp32 eager run from the same
   initial weights, batches and noise (the Trainer keys them by (seed, rank, step)).  PASS when the
   max relative difference is within ``tolerance``.  Dropout is off throughout: compiled dropout
   draws from inductor's RNG, not eager's, so its masks would differ between the two runs.
3. **FlexAttention**: ``DiTConfig(attention="flex")`` against "sdpa", same random weights, fp32 (compiled
   when compile is on): the block-diffusion mask over x_t (+) x_0, a causal network without a mask, and a
   block attending to a key/value cache.  PASS when every max |flex - sdpa| / max |sdpa| is within
   ``FLEX_TOLERANCE``; skipped without CUDA (FlexAttention is CUDA-only in nanodd).
4. **DDP**: ``ddp-procs`` processes (NCCL on CUDA, gloo on CPU) run the same steps; aggregate tokens/s
   and whether the parameters are bit-identical across ranks afterwards.

Without a visible CUDA device (and without ``--device cpu``) it says so and exits 0.  Exit code 1
when a check fails (loss match, or ranks that differ); option mistakes are one ``error:`` line, code 2.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

if __package__ in (None, ""):  # run as a file: make benchmarks/ and experiments/ importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.multiprocessing as mp
import tyro

from benchmarks.train_throughput import flops_per_token, matmul_peak, sync
from experiments.cli import run
from experiments.presets import PRESETS
from nanodd import checks
from nanodd.config import Config, DataConfig
from nanodd.model import DiT, DiTConfig, block_causal_mask, block_diffusion_mask
from nanodd.shell import dist
from nanodd.shell.log import Log
from nanodd.shell.trainer import Trainer

PRESET = "d3pm-text8"
SPEC_PEAKS = (
    ("H200", "H200 SXM", 989e12),
    ("H100 PCIe", "H100 PCIe", 756e12),
    ("H100", "H100 SXM", 989e12),
    ("A100", "A100", 312e12),
)
"""(substring of torch.cuda.get_device_name, name, dense bf16 FLOP/s from the data sheet), first match wins."""
FLEX_TOLERANCE = 1e-3
"""Largest allowed max |flex - sdpa| / max |sdpa| of the logits (fp32; the two kernels sum in different orders)."""


@dataclasses.dataclass(frozen=True)
class Args:
    device: Literal["cuda", "cpu"] = "cuda"
    """Where to run; 'cpu' runs the whole check on the CPU (to test this script)."""
    d_model: int = 768
    """Residual stream width (d3pm-text8: 768)."""
    n_blocks: int = 12
    """Transformer blocks (d3pm-text8: 12)."""
    n_heads: int = 12
    """Attention heads (d3pm-text8: 12)."""
    batch_size: int = 64
    """Sequences per step and process (d3pm-text8 trains 256 x 4 accumulation steps)."""
    seq_len: int = 256
    """Sequence length (d3pm-text8: 256)."""
    steps: int = 30
    """Timed steps, after the loss-match steps (the warm-up, where compilation happens)."""
    loss_steps: int = 10
    """Steps whose losses bf16 + compile and fp32 eager must match; also the warm-up before timing."""
    tolerance: float = 0.02
    """Largest allowed relative difference |bf16 - fp32| / fp32 of any step's loss.  2%: on CPU (widths 32 to
    256, 10 to 20 steps at lr 1e-3, eager and compiled) bf16 stayed within 0.1%; another seed's batches differ by ~30%."""
    compile: bool = True
    """torch.compile the bf16 run (--no-compile for quick tests: compiling costs ~30 s on a CPU)."""
    ddp_procs: int | None = None
    """Processes of the DDP check (default: 2 when 2+ GPUs are visible, skipped on CPU); 0 skips it."""
    seed: int = 0
    """Seeds the initial weights, the batches and the noise."""

    def __post_init__(self):
        # width, heads and blocks refused as the network refuses them (heads of even width, for rotary)
        DiTConfig(d_model=self.d_model, n_heads=self.n_heads, n_blocks=self.n_blocks)
        for name in ("batch_size", "seq_len", "steps"):
            checks.at_least(name, getattr(self, name), 1)
        checks.at_least("loss_steps", self.loss_steps, 3)
        checks.positive("tolerance", self.tolerance)
        checks.require("ddp_procs", self.ddp_procs in (None, 0) or self.ddp_procs >= 2, "be 0 or >= 2", self.ddp_procs)
        checks.seed("seed", self.seed)


def config(args: Args, dtype: str, compile: bool) -> Config:
    """The preset with the check's sizes, the built-in corpus, no dropout, warmup or accumulation."""
    preset = PRESETS[PRESET].cfg
    model = dataclasses.replace(
        preset.model, d_model=args.d_model, n_blocks=args.n_blocks, n_heads=args.n_heads, dropout=0.0
    )
    train = dataclasses.replace(
        preset.train,
        batch_size=args.batch_size,
        grad_accum=1,
        warmup_iters=0,
        dtype=dtype,
        compile=compile,
        device=args.device,
        seed=args.seed,
    )
    return dataclasses.replace(
        preset, model=model, data=DataConfig(source="builtin", seq_len=args.seq_len), train=train
    )


def trainer(args: Args, dtype: str, compile: bool) -> Trainer:
    """A Trainer on this process's runtime (under DDP: the rank set in the environment)."""
    return Trainer(config(args, dtype, compile), dist.setup(args.device), Log(None, False))


def losses(t: Trainer, n: int) -> list[float]:
    """Run n steps; their losses (one host sync at the end)."""
    return torch.stack([t.train_step()[0] for _ in range(n)]).tolist()


def timed(t: Trainer, steps: int) -> float:
    """Seconds for ``steps`` train steps, device work included."""
    sync(t.runtime.device)
    start = time.perf_counter()
    for _ in range(steps):
        t.train_step()
    sync(t.runtime.device)
    return time.perf_counter() - start


def checksum(model: torch.nn.Module) -> torch.Tensor:
    """One int64 per parameter tensor: the sum of its fp32 bit patterns (equal weights, equal sums)."""
    return torch.stack([p.detach().float().view(torch.int32).sum(dtype=torch.int64) for p in model.parameters()])


def ddp_worker(rank: int, args: Args, world: int, port: int, results) -> None:
    """One DDP rank: ``ddp_steps``, then leave the process group."""
    os.environ |= {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    try:
        ddp_steps(rank, args, world, results)
    finally:
        # The trainer's DDP wrapper holds the process group: it is gone by now, so the group is destroyed
        # here and not during interpreter shutdown, where gloo's threads can abort the process (SIGABRT).
        dist.teardown()


def ddp_steps(rank: int, args: Args, world: int, results) -> None:
    """The bf16 run's warm-up and timed steps on this rank, then every rank's checksums on rank 0."""
    t = trainer(args, "bf16", args.compile)  # dist.setup joins the process group
    losses(t, args.loss_steps)  # warm-up
    torch.distributed.barrier()
    seconds = torch.tensor([timed(t, args.steps)], device=t.runtime.device)
    torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)  # the slowest rank sets the pace
    local = checksum(t.state.model)
    gathered = [torch.empty_like(local) for _ in range(world)]
    torch.distributed.all_gather(gathered, local)
    if rank == 0:
        tokens = world * args.steps * args.batch_size * args.seq_len
        results.put(
            {
                "tokens_per_s": tokens / seconds.item(),
                "identical": all(torch.equal(g, local) for g in gathered),
                "backend": torch.distributed.get_backend(),
            }
        )
    torch.distributed.barrier()  # no rank leaves while another still works


def ddp(args: Args, world: int) -> dict:
    """Spawn ``world`` ranks on a free local port; rank 0's results."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(ddp_worker, args=(args, world, port, results), nprocs=world)
    return results.get()


def flex_vs_sdpa(args: Args, device: torch.device) -> float:
    """Largest relative logit difference of attention="flex" against "sdpa" over three masked calls."""
    torch.manual_seed(args.seed)
    L, block = args.seq_len, math.gcd(args.seq_len, 16)
    cfg = DiTConfig(vocab_size=28, d_model=args.d_model, n_heads=args.n_heads, n_blocks=args.n_blocks, dropout=0.0)
    sdpa = DiT(cfg).to(device).eval()
    with torch.no_grad():
        for w in sdpa.parameters():
            w.normal_(0, 0.02)
    x0, t = torch.randint(0, 28, (4, 2 * L), device=device), torch.rand(4, device=device)
    calls = [  # (causal, z, kwargs)
        (
            False,
            x0,
            dict(mask=block_diffusion_mask(L, block, device), positions=torch.arange(L, device=device).repeat(2)),
        ),
        (True, x0, {}),
    ]
    _, past = sdpa(x0[:, :L], t, mask=block_causal_mask(L, block, device=device), return_kv=True)
    calls.append((False, x0[:, L : L + block], dict(past=past)))
    worst = 0.0
    for causal, z, kw in calls:
        nets = [DiT(dataclasses.replace(cfg, causal=causal, attention=a)).to(device).eval() for a in ("sdpa", "flex")]
        for net in nets:
            net.load_state_dict(sdpa.state_dict())
        flex = torch.compile(nets[1]) if args.compile else nets[1]
        with torch.no_grad():
            ref, got = nets[0](z, t, **kw), flex(z, t, **kw)
        worst = max(worst, ((got - ref).abs().max() / ref.abs().max()).item())
    return worst


def row(check: str, result: str) -> None:
    print(f"| {check} | {result} |", flush=True)


def main(args: Annotated[Args, tyro.conf.arg(name="")]) -> None:
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device is visible: nothing to check (pass --device cpu to run the check on the CPU)")
        return
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    measured = matmul_peak(device, torch.bfloat16, n=8192 if device.type == "cuda" else 512)
    spec = (
        next(((label, peak) for key, label, peak in SPEC_PEAKS if key in name), None) if device.type == "cuda" else None
    )

    # 1. throughput (the loss-match steps are its warm-up) and 2. loss match
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fast = trainer(args, "bf16", args.compile)
    n_params = sum(p.numel() for p in fast.state.model.parameters())
    fpt = flops_per_token(fast.state.model, fast.cfg.model, args.seq_len)
    fused = fast.state.optimizer.defaults.get("fused")
    fast_losses = losses(fast, args.loss_steps)
    tokens_per_s = args.steps * args.batch_size * args.seq_len / timed(fast, args.steps)
    memory = (
        f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (torch.cuda.max_memory_allocated)"
        if device.type == "cuda"
        else f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (ru_maxrss of the process)"
    )
    del fast
    if device.type == "cuda":
        torch.cuda.empty_cache()
    ref_losses = losses(trainer(args, "fp32", False), args.loss_steps)
    diff = max(abs(a - b) / abs(b) for a, b in zip(fast_losses, ref_losses))
    match = diff <= args.tolerance

    print(
        f"{PRESET} model and method: DiT width {args.d_model}, {args.n_blocks} blocks, {args.n_heads} heads, "
        f"{n_params / 1e6:.2f}M parameters; batch {args.batch_size} x {args.seq_len} on {name}\n"
    )
    print("| check | result |\n|---|---|")
    row(
        "throughput",
        f"{tokens_per_s:,.0f} tokens/s (bf16 autocast, compile {'on' if args.compile else 'off'}, "
        f"{'fused' if fused else 'unfused'} AdamW; {args.steps} steps)",
    )
    row(
        "MFU vs measured bf16 matmul peak",
        f"{100 * tokens_per_s * fpt / measured:.1f}% (peak measured here: {measured / 1e12:.3g} TFLOP/s)",
    )
    row(
        "MFU vs spec bf16 peak",
        f"{100 * tokens_per_s * fpt / spec[1]:.1f}% ({spec[0]} dense bf16: {spec[1] / 1e12:.0f} TFLOP/s)"
        if spec
        else "none on CPU"
        if device.type == "cpu"
        else f"no spec peak known for {name}",
    )
    row("peak memory", memory)
    row(
        f"loss match, {args.loss_steps} steps",
        f"{'PASS' if match else 'FAIL'}: max relative difference "
        f"{100 * diff:.3f}% {'<=' if match else '>'} {100 * args.tolerance:g}% (bf16 + compile "
        f"{'on' if args.compile else 'off'} vs fp32 eager; fp32 losses {ref_losses[0]:.4f} -> {ref_losses[-1]:.4f})",
    )

    # 3. FlexAttention
    flex_ok = True
    if device.type == "cuda":
        flex_diff = flex_vs_sdpa(args, device)
        flex_ok = flex_diff <= FLEX_TOLERANCE
        row(
            "flex vs sdpa attention",
            f"{'PASS' if flex_ok else 'FAIL'}: max relative logit difference {flex_diff:.2e} "
            f"{'<=' if flex_ok else '>'} {FLEX_TOLERANCE:g} (block-diffusion mask, causal, cache; compile "
            f"{'on' if args.compile else 'off'})",
        )
    else:
        row("flex vs sdpa attention", "skipped (FlexAttention needs CUDA)")

    # 4. DDP
    visible = torch.cuda.device_count() if device.type == "cuda" else None
    world = args.ddp_procs if args.ddp_procs is not None else (2 if visible and visible >= 2 else 0)
    identical = True
    if world == 0:
        why = (
            "--ddp-procs 0"
            if args.ddp_procs == 0
            else "on CPU it runs with --ddp-procs 2"
            if visible is None
            else f"{visible} GPU visible, it needs 2"
        )
        row("DDP", f"skipped ({why})")
    elif visible is not None and visible < world:
        row("DDP", f"skipped ({visible} GPU(s) visible, --ddp-procs {world} needs {world})")
    else:
        result = ddp(args, world)
        identical = result["identical"]
        row(
            f"DDP, {world} processes ({result['backend']})",
            f"{result['tokens_per_s']:,.0f} tokens/s aggregate ({result['tokens_per_s'] / tokens_per_s:.2f}x one process)",
        )
        row("DDP parameters across ranks", "bit-identical" if identical else "FAIL: they differ")
    if not (match and identical and flex_ok):
        sys.exit(1)


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
