"""`python -m experiments.timesteps`: trained checkpoints of two methods on the same axes, a CSV with a
row per checkpoint and t whose mean integrand is the bound by quadrature, and one-line refusals."""

import csv
import importlib.util
import dataclasses
import math
import subprocess
import sys

import pytest

from experiments import text8, timesteps
from nanodd.shell.workflows import evaluate_checkpoint, load_checkpoint
from nanodd.shell.trainer import train
from test_train import tiny


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("timesteps")
    out = {}
    for name in ("demo", "mdlm-demo", "ar-demo"):
        cfg = dataclasses.replace(tiny(corpus, root / name), method=text8.PRESETS[name][1].method)
        train(cfg)
        out[name] = str(root / name)
    return out


def test_two_methods_on_one_table_and_plot(runs, tmp_path, capsys):
    table, picture = tmp_path / "out" / "t.csv", tmp_path / "t.png"
    n_t = 8
    timesteps.main(
        timesteps.Options(
            (runs["demo"], runs["mdlm-demo"]),
            n_t=n_t,
            batch=3,
            chunk_size=3,
            csv=str(table),
            plot=str(picture) if has_matplotlib() else None,
        )
    )
    rows = list(csv.DictReader(table.open()))
    assert [r["method"] for r in rows] == ["d3pm"] * n_t + ["mdlm"] * n_t
    assert [float(r["t"]) for r in rows[:n_t]] == [(i + 0.5) / n_t for i in range(n_t)]
    for r in rows:
        assert float(r["f_bits"]) >= 0 and float(r["grad_norm"]) > 0 and float(r["grad_var"]) > 0
        assert 0 <= float(r["accuracy"]) <= 1
    # D3PM's T-step integrand is constant on each step, so 8 midpoints of T = 100 estimate its bound;
    # with 3 chunks and one noise draw that is rough, but it must land near the evaluator's number.
    bound = evaluate_checkpoint(load_checkpoint(runs["demo"]), max_chunks=3, n_t=16)["results"]["bpc"]
    quadrature = sum(float(r["f_bits"]) for r in rows[:n_t]) / n_t
    assert math.isclose(quadrature, bound, rel_tol=0.25), (quadrature, bound)
    out = capsys.readouterr().out
    assert "(the bound by quadrature)" in out
    kept = [float(line.split(" keeps ")[1].split()[0]) for line in out.splitlines() if " keeps " in line]
    assert len(kept) == 2 and all(0 < k <= 1 for k in kept)
    for r in rows:  # the second moment is the variance (over B - 1) plus the squared norm of the mean
        B = 3
        assert math.isclose(
            float(r["grad_sq"]), (B - 1) / B * float(r["grad_var"]) + float(r["grad_norm"]) ** 2, rel_tol=1e-4
        )
    assert not has_matplotlib() or picture.stat().st_size > 10_000


def test_of_loss_is_d3pms_hybrid_loss(runs, tmp_path, capsys):
    # the hybrid loss is ~lambda times the masked cross-entropy: its mean over t is far below the bound
    options = dict(n_t=4, batch=3, chunk_size=2)
    timesteps.main(timesteps.Options((runs["demo"],), of="loss", csv=str(tmp_path / "loss.csv"), **options))
    timesteps.main(timesteps.Options((runs["demo"],), csv=str(tmp_path / "bound.csv"), **options))
    loss, bound = (
        sum(float(r["f_bits"]) for r in csv.DictReader((tmp_path / f"{name}.csv").open())) for name in ("loss", "bound")
    )
    assert 0 < loss < 0.2 * bound, (loss, bound)
    assert "(the loss by quadrature)" in capsys.readouterr().out


def has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch", "1"], "--batch must be >= 2"),
        (["--n-t", "0"], "--n-t must be >= 1"),
        (["--chunk-size", "0"], "--chunk-size must be >= 1"),
        (["JUDGE"], "is an autoregressive judge"),
        (["/nonexistent/run"], "not found"),
        (["MDLM", "--of", "loss"], "this method trains on its bound"),
    ],
)
def test_bad_input_is_one_line(runs, tmp_path, args, message):
    args = [{"JUDGE": runs["ar-demo"], "MDLM": runs["mdlm-demo"]}.get(a, a) for a in args]
    if not any(not a.startswith("-") and not a.isdigit() for a in args):
        args = [runs["demo"], *args]
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.timesteps", *args, "--csv", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.csv").exists()
