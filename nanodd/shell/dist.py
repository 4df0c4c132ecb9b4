"""Devices, precision and torch.distributed, read from torchrun's environment.

Run under ``torchrun`` (which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and the
process group starts with NCCL on CUDA or gloo on CPU; run plainly and everything is one process.
Side effects (printing, writing files) belong to rank 0 only: ``runtime.is_main``.
"""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from nanodd import checks


@dataclass(frozen=True)
class Runtime:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Runtime:
    """Choose the device and, under torchrun, join the process group (NCCL on CUDA, gloo on CPU)."""
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device == "cuda" and not torch.cuda.is_available():
        raise checks.FieldError(
            checks.Field("device"),
            " cuda was requested but no CUDA GPU is visible (try ",
            checks.Field("device", "cpu"),
            ")",
        )
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return Runtime(rank, local_rank, world_size, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, runtime: Runtime) -> bool:
    """True if ``flag`` is true on any rank (so every rank stops at the same step)."""
    if not runtime.distributed:
        return flag
    t = torch.tensor([float(flag)], device=runtime.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 in /proc/cpuinfo: bf16 matmuls run ~2-4x faster than fp32 there (elsewhere
    ~50-80x slower).  ``NANODD_NO_NATIVE_BF16=1`` says no on any CPU: the test suite runs that way."""
    if os.environ.get("NANODD_NO_NATIVE_BF16", "") not in ("", "0"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a ``dtype`` setting ('auto', 'fp32', 'bf16'): None means plain fp32."""
    if dtype == "bf16" or (dtype == "auto" and (device.type == "cuda" or cpu_has_native_bf16())):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def check_compile_possible(device: torch.device) -> None:
    """torch.compile's CPU backend (and Triton's launcher) build C++: refuse early without a compiler."""
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "g++", "clang", "c++")):
        raise checks.FieldError(
            checks.Field("train.compile"),
            " needs a C/C++ compiler (none of cc, gcc, g++, clang on PATH); install one or pass ",
            checks.Field("train.compile", False),
        )
