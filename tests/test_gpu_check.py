"""benchmarks/gpu_check.py on the CPU: a tiny model through every check (2 gloo ranks for DDP), a
failing loss match's exit code, and the no-CUDA notice."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--device",
    "cpu",
    "--d-model",
    "32",
    "--n-blocks",
    "2",
    "--n-heads",
    "2",
    "--seq-len",
    "32",
    "--batch-size",
    "4",
    "--steps",
    "3",
    "--loss-steps",
    "5",
    "--no-compile",
]  # compiling costs ~30 s here


def gpu_check(args: list[str], cache: Path, script: bool = False) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "NANODD_CACHE": str(cache), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "benchmarks/gpu_check.py"] if script else [sys.executable, "-m", "benchmarks.gpu_check"]
    return subprocess.run(cmd + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_every_check_on_cpu_with_two_gloo_ranks(tmp_path):
    done = gpu_check(TINY + ["--ddp-procs", "2"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[0].strip("| "): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert {
        "throughput",
        "MFU vs measured bf16 matmul peak",
        "MFU vs spec bf16 peak",
        "peak memory",
        "loss match, 5 steps",
        "DDP, 2 processes (gloo)",
        "DDP parameters across ranks",
    } <= set(rows), done.stdout
    assert "tokens/s" in rows["throughput"] and "ru_maxrss" in rows["peak memory"]
    assert "PASS" in rows["loss match, 5 steps"]
    assert "bit-identical" in rows["DDP parameters across ranks"]


def test_failed_loss_match_exits_1_and_ddp_is_skipped_on_cpu_by_default(tmp_path):
    done = gpu_check(TINY + ["--tolerance", "1e-12", "--steps", "1"], tmp_path, script=True)  # run as a file
    assert done.returncode == 1, done.stderr
    assert "| loss match, 5 steps | FAIL" in done.stdout
    assert "| DDP | skipped (on CPU it runs with --ddp-procs 2) |" in done.stdout


def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    done = gpu_check([], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "no CUDA device is visible: nothing to check (pass --device cpu to run the check on the CPU)"
    )


def test_a_bad_option_is_one_error_line(tmp_path):
    done = gpu_check(["--ddp-procs", "1"], tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == "error: --ddp-procs must be 0 or >= 2, got 1"
