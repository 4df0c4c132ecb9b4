"""benchmarks/recipes.py on two tiny presets: every corpus x recipe x seed trains for the budget and is
evaluated; the table has one gain per corpus (its arithmetic checked against the runs); a rerun trains
nothing; bad options and a directory the race did not make are refused in one line."""

import dataclasses
import json
import math

import pytest

from benchmarks import recipes
from experiments.budget import tokens_per_step
from experiments.presets import DEMO, PRESETS, Preset
from nanodd.config import DataConfig
from nanodd.model import DiTConfig

ONE_RUN_EACH = ["--budget", "2", "--corpora", "builtin", "--seeds", "0", "--recipes", "slow", "fast"]
"""A race of the two tiny recipes, one 2 s run each on the built-in corpus."""
TINY_MODEL = DiTConfig(d_model=32, n_heads=2, n_blocks=1, cond_dim=16, dropout=0.0)


def tiny(lr: float, dtype: str = "fp32") -> Preset:
    train = dataclasses.replace(
        DEMO.train, batch_size=8, max_iters=40, warmup_iters=4, lr=lr, dtype=dtype, device="cpu"
    )
    return Preset("tiny", dataclasses.replace(DEMO, model=TINY_MODEL, data=DataConfig(seq_len=32), train=train))


@pytest.fixture
def presets(monkeypatch, tmp_path):
    monkeypatch.setenv("NANODD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(recipes, "PRESETS", {"slow": tiny(1e-4), "fast": tiny(3e-3)})
    trained = []
    race_in = recipes.race_in
    monkeypatch.setattr(recipes, "race_in", lambda cfg, *a: trained.append(cfg.train.out_dir) or race_in(cfg, *a))
    return trained


def test_two_recipes_on_two_corpora_and_two_seeds_then_a_rerun_trains_nothing(presets, corpus, tmp_path, capsys):
    args = ["--budget", "2", "--corpora", str(corpus), "builtin", "--seeds", "0", "1", "--recipes", "slow", "fast"]
    args += ["--n-t", "1", "--out-dir", str(tmp_path / "r")]
    recipes.cli(args)
    out = capsys.readouterr().out
    assert len(presets) == 8 and len(set(presets)) == 8
    done = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert len(done) == 8 and all(r["steps"] > 0 and 0 < r["bpc"] < 6 and r["stderr"] > 0 for r in done)
    gains = [line for line in out.splitlines() if line.startswith("| ") and "goal" in line]
    assert [line.split(" | ")[0] for line in gains] == [f"| {recipes.slug(str(corpus))}", "| builtin"]
    by = {r["key"]: r for r in done}
    for corpus_name, line in zip([str(corpus), "builtin"], gains):
        runs = [[by[recipes.key(corpus_name, r, s, 2.0, "fp32")] for s in (0, 1)] for r in ("slow", "fast")]
        g = (sum(r["bpc"] for r in runs[0]) - sum(r["bpc"] for r in runs[1])) / 2
        assert float(line.split(" | ")[3].split(" ± ")[0]) == pytest.approx(g, abs=1e-3)
        se = float(line.split(" | ")[3].split(" ± ")[1].split()[0])
        assert se >= math.sqrt(sum(r["stderr"] ** 2 for rs in runs for r in rs)) / 2 - 1e-3
    runs = [cells for cells in (line.split(" | ") for line in out.splitlines()) if cells[2:3] == ["fp32"]]
    assert len(runs) == 8
    for cells in runs:  # corpus, recipe, precision, seed, steps, tokens trained: steps x tokens per step
        per_step = tokens_per_step(recipes.PRESETS[cells[1].strip("`")].cfg)
        assert float(cells[5].rstrip("M")) == pytest.approx(int(cells[4]) * per_step / 1e6, abs=0.006)
    assert (tmp_path / "r" / "results-2s.md").read_text() in out

    recipes.cli(args)
    assert len(presets) == 8 and capsys.readouterr().err.count("finished earlier, skipped") == 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["--recipes", "demo", "nope"], "--recipes must name two presets"),
        (["--seeds", "0", "0"], "--seeds must name distinct seeds"),
        (["--budget", "0"], "--budget must be >= 1"),
        (["--corpora", "/no/such/file.txt"], "--corpora"),
    ],
)
def test_bad_options_are_one_line_before_anything_runs(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        recipes.cli([*args, "--out-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_run_directory_the_race_did_not_make_is_refused(presets, tmp_path, capsys):
    run = tmp_path / "r" / recipes.key("builtin", "slow", 0, 2.0, "fp32")
    run.mkdir(parents=True)
    (run / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit) as exit:
        recipes.cli([*ONE_RUN_EACH, "--out-dir", str(tmp_path / "r")])
    assert exit.value.code == 2 and "not made by a race" in capsys.readouterr().err
    assert (run / "mine.txt").read_text() == "keep" and not presets


def test_demo_race_is_demos_recipe_on_nanodd_races_network():
    """The race's challenger is the demo preset's recipe: nanoDD's method and optimiser (as nanodd-race
    has them) at a quarter of nanodd-race's tokens per step, a third of the run warming up; only the
    network and the sequence length are the race's."""
    demo, ours, nanodd = (PRESETS[name].cfg for name in ("demo", "demo-race", "nanodd-race"))

    def optimiser(t):
        return (t.lr, t.min_lr, t.weight_decay, t.beta1, t.beta2, t.grad_clip, t.ema_decay)

    assert tokens_per_step(demo) == tokens_per_step(ours) == tokens_per_step(nanodd) // 4
    assert optimiser(demo.train) == optimiser(ours.train) == optimiser(nanodd.train)
    assert demo.method == ours.method == nanodd.method == PRESETS["d3pm-text8"].cfg.method
    assert (ours.model, ours.data) == (nanodd.model, nanodd.data)
    assert 3 * demo.train.warmup_iters == demo.train.max_iters and 3 * ours.train.warmup_iters == ours.train.max_iters


def test_dtype_sets_every_runs_precision_and_names_it_in_the_keys_and_the_table(monkeypatch, tmp_path, capsys):
    """--dtype overrides each preset's precision (here a bf16 preset is raced in fp32, so nothing runs at
    bf16 speed on a CPU without it); the run keys and the table name the precision the runs trained in."""
    monkeypatch.setenv("NANODD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(recipes, "PRESETS", {"slow": tiny(1e-4, "bf16"), "fast": tiny(3e-3, "bf16")})
    dtypes = []
    race_in = recipes.race_in
    monkeypatch.setattr(recipes, "race_in", lambda cfg, *a: dtypes.append(cfg.train.dtype) or race_in(cfg, *a))
    recipes.cli([*ONE_RUN_EACH, "--n-t", "1", "--dtype", "fp32", "--out-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert dtypes == ["fp32", "fp32"]
    keys = [json.loads(line)["key"] for line in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    assert keys == [recipes.key("builtin", r, 0, 2.0, "fp32") for r in ("slow", "fast")]
    assert all(k.endswith("/fp32") for k in keys)
    assert [line.split(" | ")[2] for line in out.splitlines() if line.startswith("| builtin | `")] == ["fp32"] * 2
    assert recipes.config(recipes.Options(recipes=("slow", "fast")), "slow")[0].train.dtype == "bf16"
