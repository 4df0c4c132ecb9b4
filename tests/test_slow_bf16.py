"""The default test run is a CPU without native bf16 (tests/slow_bf16): bf16 matmuls cost ~1 GFLOP/s in
the test process and in its subprocesses, fp32 ones nothing extra, and ``dtype auto`` picks fp32."""

import subprocess
import sys
import time

import torch

from nanodd.shell import dist

SECONDS = 2 * 512**3 / 1e9  # what a 512 x 512 bf16 matmul is charged


def timed_matmuls() -> tuple[float, float, float]:
    a = torch.randn(512, 512)
    times = []
    for run in (lambda: a @ a, lambda: a.bfloat16() @ a.bfloat16(), lambda: torch.nn.functional.linear(a, a)):
        t = time.perf_counter()
        if len(times) == 2:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                run()
        else:
            run()
        times.append(time.perf_counter() - t)
    return tuple(times)


def test_bf16_matmuls_are_slow_here_and_auto_is_fp32():
    fp32, bf16, autocast_linear = timed_matmuls()
    assert bf16 >= SECONDS and autocast_linear >= SECONDS
    assert fp32 < SECONDS  # ~3 ms on a 2-core CPU
    assert not dist.cpu_has_native_bf16() and dist.autocast_dtype("auto", torch.device("cpu")) is None


def test_subprocesses_are_slow_too():
    code = (
        "import time, torch; a = torch.randn(512, 512).bfloat16(); t = time.perf_counter(); a @ a; "
        "from nanodd.shell import dist; print(time.perf_counter() - t, dist.cpu_has_native_bf16())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) >= SECONDS and out[1] == "False"
