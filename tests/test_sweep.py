"""experiments/sweep.py: one row per value, finished rows never redone (counted, and their files'
mtimes unchanged), a sweep interrupted mid-row (SIGINT or SIGKILL to a real process) finishes only
the missing row, and every input mistake is one error line."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import sweep

TINY = [
    "--model.d-model",
    "32",
    "--model.n-heads",
    "2",
    "--model.n-blocks",
    "1",
    "--model.cond-dim",
    "16",
    "--data.seq-len",
    "32",
    "--train.batch-size",
    "8",
    "--train.eval-batches",
    "2",
    "--train.warmup-iters",
    "2",
    "--train.dtype",
    "fp32",
    "--train.device",
    "cpu",
    "--sweep.eval-chunks",
    "4",
]
LR = ["--sweep.field", "train.lr", "--sweep.values", "1e-3", "3e-3"]
ROWS = ["train.lr=0.001", "train.lr=0.003"]


def args(corpus, tmp_path, *extra) -> list[str]:
    return [
        "demo",
        *TINY,
        "--data.source",
        str(corpus),
        "--data.data-dir",
        str(tmp_path / "data"),
        "--sweep.dir",
        str(tmp_path / "sweep"),
        *extra,
    ]


def results(root: Path) -> list[dict]:
    return list(csv.DictReader((root / "results.csv").open()))


def mtimes(run: Path) -> dict[Path, int]:
    """Every file of a row's run directory and its modification time."""
    return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


@pytest.fixture
def trainings(monkeypatch):
    """The run directories sweep.train is called with, in order (it still trains)."""
    calls = []

    def counted(cfg):
        calls.append(Path(cfg.train.out_dir).name)
        return train(cfg)

    train = sweep.train
    monkeypatch.setattr(sweep, "train", counted)
    return calls


def test_two_values_write_two_rows_and_a_rerun_redoes_neither(corpus, tmp_path, trainings, capsys):
    root, cli_args = (
        tmp_path / "sweep",
        args(corpus, tmp_path, "--train.max-iters", "20", "--train.log-interval", "10", *LR),
    )
    sweep.cli(cli_args)
    rows = results(root)
    assert trainings == ROWS and [r["row"] for r in rows] == ROWS
    assert [float(r["train.lr"]) for r in rows] == [1e-3, 3e-3]
    for r in rows:
        assert r["steps"] == "20" and r["n_chunks"] == "4" and 0 < float(r["val_bpc"]) < 10 and float(r["val_se"]) > 0
        assert float(r["tokens_per_s"]) > 0 and float(r["wall_s"]) > 0
    table = [line for line in (root / "results.md").read_text().splitlines() if line.startswith("| 0.00")]
    assert [line.split(" | ")[0] for line in table] == ["| 0.001", "| 0.003"] and "±" in table[0]
    assert capsys.readouterr().out.count("| 0.00") == 2
    before = {name: mtimes(root / name) for name in ROWS}

    sweep.cli(cli_args)
    assert trainings == ROWS  # no further training
    assert results(root) == rows and {name: mtimes(root / name) for name in ROWS} == before
    assert capsys.readouterr().err.count("finished earlier, skipped") == 2


def test_a_budget_fits_each_row_to_its_seconds_per_step(corpus, tmp_path, monkeypatch):
    """--sweep.budget: each row is probed in its own directory (the tokens of probe_steps steps of the
    largest row), then trains the steps that fit (the warmup scaled with them), from scratch.  The probe
    runs, but the test decides what it measured (0.01 s per sequence of the batch), so that the steps are
    known."""
    probes, runs = [], []

    def timed(cfg, probe_steps, out):
        probes.append((cfg.train.batch_size, probe_steps, out.name))
        assert probe(cfg, probe_steps, out) > 0
        return 0.01 * cfg.train.batch_size

    def counted(cfg):
        runs.append(cfg.train)
        return train(cfg)

    probe, train = sweep.budget.seconds_per_step, sweep.train
    monkeypatch.setattr(sweep.budget, "seconds_per_step", timed)
    monkeypatch.setattr(sweep, "train", counted)
    root = tmp_path / "sweep"
    batches = ["--sweep.field", "train.batch-size", "--sweep.values", "2", "16"]
    sweep.cli(args(corpus, tmp_path, "--train.max-iters", "100", "--sweep.budget", "3", *batches))
    rows = results(root)
    assert probes == [(2, 80, "train.batch_size=2"), (16, 10, "train.batch_size=16")]  # equal tokens
    assert [r.max_iters for r in runs] == [int(r["steps"]) for r in rows]
    assert [int(r["steps"]) for r in rows] == [150, 18]  # 3 s / (0.02 s), 3 s / (0.16 s)
    assert [r.warmup_iters for r in runs] == [3, 0]  # 2 of 100 steps, scaled
    for row in ("train.batch_size=2", "train.batch_size=16"):  # the probe's log is gone: trained from scratch
        lines = (root / row / "metrics.jsonl").read_text().splitlines()
        steps = [sweep.json.loads(line)["step"] for line in lines if '"step"' in line]
        assert steps == sorted(steps) and steps[-1] == int(rows[0 if row.endswith("=2") else 1]["steps"])
    assert sweep.json.loads((root / "sweep.json").read_text())["budget"] == 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_sweep_stopped_mid_row_keeps_the_finished_row_and_a_rerun_finishes_only_the_missing_one(
    corpus, tmp_path, trainings, sig
):
    root, cli_args = (
        tmp_path / "sweep",
        args(
            corpus,
            tmp_path,
            "--train.max-iters",
            "120",
            "--train.log-interval",
            "1",
            "--train.eval-interval",
            "60",
            *LR,
        ),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.sweep", *cli_args],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    second = root / ROWS[1] / "metrics.jsonl"
    deadline = time.time() + 120
    while not (second.exists() and (root / "results.csv").exists()):  # row 1 recorded, row 2 training
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
    if sig == signal.SIGINT:
        assert "interrupted" in err.splitlines()[-1]
    [first] = results(root)
    assert first["row"] == ROWS[0]
    steps = [line for line in second.read_text().splitlines() if '"loss"' in line]
    assert 0 < len(steps) < 120  # row 2 was stopped mid-way
    kept = mtimes(root / ROWS[0])

    sweep.cli(cli_args)
    assert trainings == [ROWS[1]]  # only the missing row ran again
    rows = results(root)
    assert [r["row"] for r in rows] == ROWS and rows[0] == first and rows[1]["steps"] == "120"
    assert mtimes(root / ROWS[0]) == kept
    assert len([line for line in second.read_text().splitlines() if '"loss"' in line]) == 120  # started afresh


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--sweep.field", "train.nope", "--sweep.values", "1"],
            "train (TrainConfig) has no field 'nope'; it has batch_size",
        ),
        (["--sweep.field", "nope.lr", "--sweep.values", "1"], "the config (Config) has no field 'nope'"),
        (["--sweep.field", "train.lr.x", "--sweep.values", "1"], "train.lr (float) has no field 'x' (it is a value"),
        (["--sweep.field", "train", "--sweep.values", "1"], "--sweep.field train is a section (TrainConfig)"),
        (
            ["--sweep.field", "method.hybrid_coeff", "--sweep.values", "x"],
            "'x' is not a value of method.hybrid_coeff (float)",
        ),
        (
            ["--sweep.field", "train.max-iters", "--sweep.values", "10", "1.5"],
            "'1.5' is not a value of train.max_iters (int)",
        ),
        (["--sweep.field", "train.dtype", "--sweep.values", "fp16"], "'fp16' is not a value of train.dtype (Literal"),
        (
            ["--sweep.field", "train.lr", "model.d-model", "--sweep.values", "1e-3,3e-3"],
            "2 fields need 2 comma-separated",
        ),
        (
            ["--sweep.field", "train.lr", "train.seed", "--sweep.values", "1e-3,3e-3", "1", "--sweep.mode", "zip"],
            "zip needs as many values for every field, got [2, 1]",
        ),
        (["--sweep.field", "method.T", "--sweep.values", "0"], ("row method.T=0: ", "--method.T")),
        (["--sweep.field", "train.min-lr", "--sweep.values", "1"], ("row train.min_lr=1.0: ", "--train.min-lr")),
        (["--sweep.field", "train.out-dir", "--sweep.values", "x"], "not train.out_dir or train.resume"),
        (
            ["--sweep.field", "train.lr", "--sweep.values", "1e-3", "--sweep.eval-chunks", "1"],
            "--sweep.eval-chunks must be >= 2",
        ),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2_before_anything_runs(corpus, tmp_path, capsys, extra, message):
    """(A row's own config check is quoted after the row's name, whatever its wording.)"""
    with pytest.raises(SystemExit) as exit:
        sweep.cli(args(corpus, tmp_path, *extra))
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert all(part in err for part in ((message,) if isinstance(message, str) else message))
    assert not (tmp_path / "sweep").exists()


def test_a_directory_holding_another_sweep_is_refused(corpus, tmp_path, capsys):
    root = tmp_path / "sweep"
    sweep.claim(root, sweep.tyro.cli(sweep.PresetChoice, args=["demo"]), ["train.lr"])
    with pytest.raises(SystemExit):
        sweep.cli(args(corpus, tmp_path, *LR))
    assert "holds a sweep of another preset, overrides, fields or budget" in capsys.readouterr().err
