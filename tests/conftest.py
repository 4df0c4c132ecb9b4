"""Fixtures shared by the test files: a small English-like corpus written by the test itself.

Every test runs as on a CPU without native bf16 (``slow_bf16/sitecustomize.py``): bf16 matmuls are
slowed to ~1 GFLOP/s here and in every subprocess, and ``dtype auto`` picks fp32."""

import importlib.util
import os
import sys
from pathlib import Path

SLOW_BF16 = Path(__file__).resolve().parent / "slow_bf16"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SLOW_BF16), os.environ.get("PYTHONPATH")]))
_spec = importlib.util.spec_from_file_location("nanodd_tests_slow_bf16", SLOW_BF16 / "sitecustomize.py")
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))

import pytest  # noqa: E402
import torch  # noqa: E402

WORDS = (
    "the quick brown fox jumps over the lazy dog while seven wizards quietly hex a jovial "
    "sphinx of black quartz and the dog sleeps near the river bank every day"
).split()


@pytest.fixture(scope="module")
def one_thread():
    """Toy tensors are tiny: a second thread only adds synchronisation (10 ms per op on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_main(monkeypatch, capsys, main, *args):
    """``main()`` with ``sys.argv`` set to ``args``, in process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["prog", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def words_text(n: int, seed: int = 0) -> str:
    """n words from WORDS in a fixed random order."""
    g = torch.Generator().manual_seed(seed)
    return " ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (n,), generator=g))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small English-like text file of 6,000 words."""
    path = tmp_path_factory.mktemp("corpus") / "words.txt"
    path.write_text(words_text(6000))
    return path
