"""benchmarks/race.py: one line per bad option, the corpus fallback, and (slow) a whole race on the
built-in corpus whose runs end on the budget's step count."""

import json
import subprocess
import sys

import pytest

from benchmarks import race


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "0"], "--budget must be >= 1"),
        (["--budget", "nan"], "--budget must be >= 1"),
        (["--probe-steps", "2"], "--probe-steps must be >= 4"),
        (["--samples", "1"], "--samples must be >= 2"),
        (["--methods", "demo", "nope"], "--methods must name demo presets"),
    ],
)
def test_bad_options_are_one_line_before_anything_runs(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.race", *args, "--out-dir", str(tmp_path / "race")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "race").exists()


def test_corpus_falls_back_to_shakespeare_then_builtin(monkeypatch, tmp_path):
    monkeypatch.setenv("NANODD_CACHE", str(tmp_path / "cache"))  # text8 is not prepared there
    monkeypatch.setattr(race, "SHAKESPEARE", tmp_path / "missing.txt")
    assert race.default_corpus() == "builtin"
    (tmp_path / "present.txt").write_text("to be or not to be")
    monkeypatch.setattr(race, "SHAKESPEARE", tmp_path / "present.txt")
    assert race.default_corpus() == str(tmp_path / "present.txt")


@pytest.mark.slow
def test_a_30_second_race_on_the_builtin_corpus(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NANODD_CACHE", str(tmp_path / "cache"))
    opt = race.Options(
        budget=30,
        corpus="builtin",
        samples=4,
        eval_chunks=16,
        out_dir=str(tmp_path / "race"),
        plot=str(tmp_path / "t.png"),
    )
    race.main(opt)
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in table] == list(opt.methods)
    for name, line in zip(opt.methods, table):
        steps = int(line.split("|")[2])
        records = [json.loads(r) for r in (tmp_path / "race" / name / "metrics.jsonl").read_text().splitlines()]
        assert records[-1]["step"] == steps  # the cosine schedule ended where the probe said the budget ends
        assert 3.0 < float(line.split("|")[5].split("±")[0]) < 5.0  # learnt something, not yet English
    assert (tmp_path / "t.csv").stat().st_size > 0
