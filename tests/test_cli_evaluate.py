"""`python -m experiments.text8 evaluate` on a nanoDD-format checkpoint, and its bad-input errors."""

import json
from pathlib import Path

import pytest

from nanodd.data import prepare
from test_checkpoint import nanodd_file, random_dit
from conftest import words_text
from test_train import run_cli


@pytest.fixture
def setup(tmp_path):
    corpus = tmp_path / "words.txt"
    corpus.write_text(words_text(4000, seed=2))
    prepare(str(corpus), tmp_path / "data", seq_len=32, progress=False)
    ckpt = nanodd_file(tmp_path, random_dit(0), random_dit(1), training_args={"seq_len": 32})
    return ckpt, ["--eval.data-source", str(corpus), "--eval.data-dir", str(tmp_path / "data"), "--eval.device", "cpu"]


def test_evaluate_a_nanodd_checkpoint_writes_a_json_report(monkeypatch, capsys, tmp_path, setup):
    ckpt, data = setup
    reports = {}
    for estimator in ("exact", "stratified"):
        code, out, err = run_cli(
            monkeypatch,
            capsys,
            "evaluate",
            str(ckpt),
            *data,
            "--eval.estimator",
            estimator,
            "--eval.n-t",
            "8",
            "--eval.out",
            str(tmp_path / f"{estimator}.json"),
        )
        assert code == 0, err
        reports[estimator] = json.loads((tmp_path / f"{estimator}.json").read_text())
        assert json.loads(out) == reports[estimator] and "bits/char over" in err
    exact, strat = reports["exact"]["results"], reports["stratified"]["results"]
    assert exact["n_chunks"] == strat["n_chunks"] > 0
    assert (exact["n_t"], strat["n_t"], reports["exact"]["T"]) == (100, 8, 100)
    assert abs(exact["bpc"] - strat["bpc"]) < 3 * (exact["stderr"] ** 2 + strat["stderr"] ** 2) ** 0.5
    assert 0 <= reports["exact"]["remainder_chars"] < 32


def test_elbo_vs_T_reports_every_T(monkeypatch, capsys, setup):
    ckpt, data = setup
    code, out, err = run_cli(
        monkeypatch, capsys, "evaluate", str(ckpt), *data, "--eval.estimator", "elbo-vs-t", "--eval.max-chunks", "8"
    )
    assert code == 0, err
    results = json.loads(out)["results"]
    assert list(results) == ["10", "20", "100", "256", "1000", "inf"]
    assert all(r["n_chunks"] == 8 for r in results.values())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--eval.split", "test", "--eval.data-dir", str(Path(__file__).parent)], "prepare it first"),
        (["--eval.data-dir", "/nonexistent"], "--eval.data-dir /nonexistent: not found (prepare the data first"),
        (["--eval.seq-len", "256"], "differs from the checkpoint's sequence length 32"),
        (["--eval.max-chunks", "0"], "--eval.max-chunks must be >= 1, got 0"),
    ],
)
def test_bad_input(monkeypatch, capsys, setup, extra, message):
    ckpt, data = setup
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(ckpt), *data, *extra)
    assert code == 2 and message in err and "Traceback" not in err
