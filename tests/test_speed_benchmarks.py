"""benchmarks/train_throughput.py and benchmarks/profile_step.py on a tiny model: they print their
tables (every path, every phase), and bad options are one ``error:`` line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.presets import DEMO

ROOT = Path(__file__).resolve().parents[1]


def bench(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "NANODD_CACHE": str(cache)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def table(stdout: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in stdout.splitlines()
        if line.startswith("| ")
        and not line.startswith("| dtype")
        and not line.startswith("| phase")
        and not line.startswith("| operator")
    ]


TINY = [
    "benchmarks/train_throughput.py",
    "--d-model",
    "32",
    "--n-blocks",
    "1",
    "--n-heads",
    "2",
    "--batch-size",
    "2",
    "--seq-len",
    "32",
    "--steps",
    "1",
    "--rounds",
    "2",
    "--compile",
    "False",
]


def test_train_throughput_prints_every_path_the_cpu_has_and_says_what_it_skipped(tmp_path):
    done = bench(TINY, tmp_path)  # the test run is a CPU without native bf16 (tests/slow_bf16)
    assert done.returncode == 0, done.stderr
    rows = table(done.stdout)
    assert [r[:2] for r in rows] == [["fp32", "off"]], done.stdout
    assert "skipped: bf16 (this CPU has no native bf16: its bf16 matmul peak is" in done.stdout
    assert rows[0][3] == "1.00x" and rows[0][5].endswith("GiB")


def test_train_throughput_runs_slow_bf16_when_asked_against_fp32_eager(tmp_path):
    done = bench(TINY + ["--no-skip-slow-bf16"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = table(done.stdout)
    assert [r[:2] for r in rows] == [["fp32", "off"], ["bf16", "off"]], done.stdout
    assert rows[0][3] == "1.00x" and all(r[5].endswith("GiB") for r in rows)
    assert "bf16 / fp32 =" in done.stdout and "skipped" not in done.stdout


def test_profile_step_prints_the_phases_and_the_top_operators(tmp_path):
    done = bench(["-m", "benchmarks.profile_step", "--sizes", "demo", "--steps", "1", "--rows", "3"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = table(done.stdout)
    phases = ["data", "forward", "backward", "clip", "optimizer"] + (["ema"] if DEMO.train.ema_decay > 0 else [])
    assert [r[0] for r in rows[: len(phases)]] == phases, done.stdout  # the demo keeps no EMA: no ema phase
    assert len(rows) == len(phases) + 3 and all(r[-1].endswith("%") for r in rows)
    assert ", fp32, compile off:" in done.stdout  # 'auto' on a CPU without native bf16


@pytest.mark.parametrize(
    "args, message",
    [
        (["benchmarks/train_throughput.py", "--rounds", "0"], "error: --rounds must be >= 1, got 0"),
        (["benchmarks/train_throughput.py", "--d-model", "30"], "error: --d-model must split into --n-heads 4 heads"),
        (["-m", "benchmarks.profile_step", "--sizes", "big"], "error: --sizes must be one of benchmark, demo"),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, message):
    done = bench(args, tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().startswith(message) and len(done.stderr.strip().splitlines()) == 1, done.stderr
