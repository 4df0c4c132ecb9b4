"""Test-only: every CPU bf16 matmul runs as slowly as on a CPU without native bf16.

On AMD Zen 3 (AVX2, no AVX512-BF16) a bf16 matmul falls back to ~1 GFLOP/s, 50-80x slower than
fp32.  A test that does bf16 work of real size passes on a Zen 4 host and times out on a Zen 3 one,
so the default test run makes every host a Zen 3 host for bf16: ``tests/conftest.py`` loads this
file and puts its folder first on PYTHONPATH (Python imports ``sitecustomize`` at start-up in every
subprocess a test starts), and once ``torch`` is imported a torch-function mode charges each bf16
matmul on the CPU (bf16 inputs, or fp32 inputs under bf16 autocast) ``FLOPs / RATE`` seconds of sleep.
It also sets ``NANODD_NO_NATIVE_BF16=1``, so ``dtype auto`` and the benchmarks choose as they would there.
Compiled graphs are not charged (Dynamo traces past the mode); their eager twins are.
"""

import importlib.abc
import importlib.machinery
import math
import os
import sys
import time

RATE = 1e9
"""FLOP/s charged for a bf16 matmul on the CPU: what Zen 3 reaches (measured 1.0-1.6 GFLOP/s)."""


def matmul_flops(func, args, kwargs) -> float:
    """2 m k n (times the batch) of the matmul-like call ``func(*args, **kwargs)``, 0 if it is none."""
    import torch
    import torch.nn.functional as F

    shapes = [a.shape for a in args if isinstance(a, torch.Tensor)]
    if func is F.linear:
        return 2.0 * math.prod(shapes[0]) * shapes[1][0]
    if func is F.scaled_dot_product_attention:  # q [..., L, E], k [..., S, E], v [..., S, Ev]
        q, k, v = shapes[:3]
        return 2.0 * math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])
    if func in (torch.addmm, torch.baddbmm, torch.Tensor.addmm, torch.Tensor.baddbmm):
        shapes = shapes[1:]
    if len(shapes) < 2 or len(shapes[0]) < 1 or len(shapes[1]) < 1:
        return 0.0
    a, b = shapes[0], shapes[1]
    n = b[-1] if len(b) > 1 else 1
    return 2.0 * math.prod(a) * n


def install() -> None:
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    matmuls = {
        F.linear,
        F.scaled_dot_product_attention,
        torch.matmul,
        torch.mm,
        torch.bmm,
        torch.addmm,
        torch.baddbmm,
        torch.Tensor.matmul,
        torch.Tensor.__matmul__,
        torch.Tensor.mm,
        torch.Tensor.bmm,
        torch.Tensor.addmm,
        torch.Tensor.baddbmm,
    }

    class SlowBF16(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in matmuls and not torch.compiler.is_compiling():
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                on_cpu = bool(tensors) and all(t.device.type == "cpu" for t in tensors)
                bf16 = any(t.dtype == torch.bfloat16 for t in tensors) or (
                    torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
                )
                if on_cpu and bf16:
                    time.sleep(matmul_flops(func, args, kwargs) / RATE)
            return func(*args, **kwargs)

    SlowBF16().__enter__()  # for the life of the process


class InstallAfterTorch(importlib.abc.MetaPathFinder):
    """Installs the mode right after ``import torch`` finishes, so processes without torch pay nothing."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_install(module):
            exec_module(module)
            sys.meta_path.remove(self)
            install()

        spec.loader.exec_module = exec_then_install
        return spec


if not getattr(sys, "nanodd_slow_bf16", False):  # once per process, however often this file is loaded
    sys.nanodd_slow_bf16 = True
    os.environ["NANODD_NO_NATIVE_BF16"] = "1"
    if "torch" in sys.modules:
        install()
    else:
        sys.meta_path.insert(0, InstallAfterTorch())
