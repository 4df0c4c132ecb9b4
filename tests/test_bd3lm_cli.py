"""BD3-LM from the command line, in process on tiny models: train (text8 ids of the built-in corpus, and raw
bytes), sample (the block sampler by default, past the training length, a prefix kept), evaluate,
timesteps, the clip search, a sweep; ``--train.init-from`` starts a run from another run's EMA weights
bitwise and refuses a network of another shape in one line."""

import json
import sys

import pytest
import torch

from experiments import clip, corpus as corpus_cli, sweep, text8, timesteps
from nanodd.samplers import default_sampler
from nanodd.shell import trainer as trainer_lib
from nanodd.shell.workflows import load_checkpoint
from conftest import run_main as run, words_text

TINY = [
    *("--model.d-model", "32", "--model.n-heads", "2", "--model.n-blocks", "1", "--model.cond-dim", "16"),
    *("--data.seq-len", "32", "--train.batch-size", "8", "--train.max-iters", "3", "--train.warmup-iters", "1"),
    *(
        "--train.eval-interval",
        "3",
        "--train.eval-batches",
        "1",
        "--train.log-interval",
        "3",
        "--train.ema-decay",
        "0.99",
    ),
    *("--train.dtype", "fp32", "--train.device", "cpu"),
]
SAMPLE = ["--sample.no-live", "--sample.device", "cpu", "--sample.steps", "4"]
TEXT8 = set("abcdefghijklmnopqrstuvwxyz ")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"mdlm", "bd3lm", "bytes"}: tiny runs of 3 steps (text8 ids of the built-in corpus; bd3lm also on bytes)."""
    root = tmp_path_factory.mktemp("bd3lm")
    (root / "docs").mkdir()
    for i in range(2):
        (root / "docs" / f"doc{i}.txt").write_text(words_text(2000, seed=i) + f"\ncafé {i} 🙂\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("NANODD_CACHE", str(root / "cache"))
    data = ["--data.data-dir", str(root / "data")]
    argv = {
        "mdlm": ["train", "mdlm-demo", *TINY, *data],
        "bd3lm": ["train", "bd3lm-demo", "--method.block-size", "8", *TINY, *data],
    }
    for name, args in argv.items():
        mp.setattr(sys, "argv", ["text8", *args, "--train.out-dir", str(root / name)])
        text8.main()
    bytes_args = ["--data.source", str(root / "docs"), "--data.tokenizer", "bytes", *data]
    mp.setattr(
        sys,
        "argv",
        ["corpus", "train", "bytes-demo", "method:bd3lm", "--method.block-size", "8", *TINY, *bytes_args]
        + ["--train.out-dir", str(root / "bytes")],
    )
    corpus_cli.main()
    yield {name: root / name for name in ("mdlm", "bd3lm", "bytes")} | {"root": root}
    mp.undo()


def test_a_bd3lm_run_samples_with_the_block_sampler_by_default(runs, monkeypatch, capsys):
    ckpt = load_checkpoint(runs["bd3lm"])
    assert ckpt.cfg.method.block_size == 8 and default_sampler(ckpt.diffusion) == "block"
    code, default, err = run(monkeypatch, capsys, text8.main, "sample", str(runs["bd3lm"]), *SAMPLE)
    assert code == 0, err
    code, block, _ = run(
        monkeypatch, capsys, text8.main, "sample", str(runs["bd3lm"]), *SAMPLE, "--sample.sampler", "block"
    )
    assert default == block and len(default.strip("\n")) == 32 and set(default.strip("\n")) <= TEXT8


def test_samples_longer_than_the_training_length_decode_and_a_prefix_is_kept(runs, monkeypatch, capsys):
    args = ["sample", str(runs["bd3lm"]), *SAMPLE, "--sample.block.length", "128"]
    code, out, err = run(monkeypatch, capsys, text8.main, *args)
    text = out.strip("\n")
    assert code == 0 and len(text) == 128 and set(text) <= TEXT8, (err, out)
    code, out, err = run(monkeypatch, capsys, text8.main, *args, "--sample.prefix", "the cat ")
    assert code == 0 and out.startswith("the cat ") and len(out.strip("\n")) == 128, (err, out)


def test_a_bytes_bd3lm_run_writes_past_its_length_in_bytes_that_decode(runs, monkeypatch, capsys):
    ckpt = load_checkpoint(runs["bytes"])
    assert ckpt.tokenizer.name == "bytes" and ckpt.cfg.method.block_size == 8
    args = ["sample", str(runs["bytes"]), *SAMPLE, "--sample.block.length", "64", "--sample.prefix", "the "]
    code, out, err = run(monkeypatch, capsys, corpus_cli.main, *args)
    assert code == 0 and out.startswith("the "), (err, out)


def test_evaluate_reports_the_block_bound(runs, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, text8.main, "evaluate", str(runs["bd3lm"]), "--eval.device", "cpu")
    report = json.loads(out)
    assert code == 0 and 0 < report["results"]["bpc"] < 10 and report["tokenizer"]["name"] == "text8", err


def test_timesteps_profiles_a_bd3lm_run(runs, monkeypatch, capsys, tmp_path):
    csv = tmp_path / "t.csv"
    args = [str(runs["bd3lm"]), "--n-t", "2", "--batch", "2", "--csv", str(csv)]
    code, out, err = run(monkeypatch, capsys, timesteps.cli, *args)
    assert code == 0 and "(bd3lm)" in out and len(csv.read_text().splitlines()) == 3, err


def test_the_clip_search_prints_its_grid_and_the_flags_to_train_with(runs, monkeypatch, capsys):
    args = [str(runs["bd3lm"]), "--batches", "2", "--batch-size", "2", "--widths", "0.5", "0.8", "--delta", "0.25"]
    code, out, err = run(monkeypatch, capsys, clip.cli, *args)
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| 0.")]
    clips = [tuple(float(c) for c in row.split("|")[1:3]) for row in rows]
    assert clips == [(0, 1), (0, 0.5), (0.25, 0.75), (0.5, 1), (0, 0.8)]  # clip.grid((0.5, 0.8), 0.25)
    best = next(row for row in rows if "least variance" in row).split("|")
    assert f"train with --method.beta {float(best[1]):g} --method.omega {float(best[2]):g}" in out
    assert all(float(row.split("|")[4]) >= 0 for row in rows)
    code, _, err = run(monkeypatch, capsys, clip.cli, str(runs["mdlm"]))
    assert code == 2 and err.startswith("error: CHECKPOINT") and "not BD3-LM" in err and len(err.splitlines()) == 1


def test_init_from_starts_at_the_other_runs_ema_weights_bitwise_with_a_fresh_optimizer(
    runs, monkeypatch, capsys, tmp_path
):
    seen = {}
    original = trainer_lib.Trainer.run

    def recording(self, ckpts):
        st = self.state
        seen.update(step=st.step, params=dict(st.model.state_dict()), ema=dict(st.ema), opt=st.optimizer.state_dict())
        seen.update(
            params={k: v.clone() for k, v in seen["params"].items()}, ema={k: v.clone() for k, v in st.ema.items()}
        )
        return original(self, ckpts)

    monkeypatch.setattr(trainer_lib.Trainer, "run", recording)
    out = tmp_path / "fine-tuned"
    data = ["--data.data-dir", str(runs["root"] / "data")]
    argv = ["train", "bd3lm-demo", "--method.block-size", "8", *TINY, *data, "--train.out-dir", str(out)]
    code, _, err = run(monkeypatch, capsys, text8.main, *argv, "--train.init-from", str(runs["mdlm"]))
    assert code == 0 and "initialised from" in err and "EMA weights, method mdlm" in err, err
    mdlm = load_checkpoint(runs["mdlm"])  # its EMA weights
    assert seen["step"] == 0 and not seen["opt"]["state"]
    assert seen["params"].keys() == mdlm.model.state_dict().keys()
    assert all(torch.equal(seen["params"][k], v) for k, v in mdlm.model.state_dict().items())
    assert all(torch.equal(seen["ema"][k], mdlm.params[k]) for k in seen["ema"])
    assert load_checkpoint(out).cfg.train.init_from == str(runs["mdlm"])
    # resuming wins over init-from, with a note
    code, _, err = run(monkeypatch, capsys, text8.main, *argv, "--train.init-from", str(runs["mdlm"]), "--train.resume")
    assert code == 0 and "--train.init-from" in err and "ignored: the run resumed" in err, err


def test_init_from_refuses_another_network_shape_or_a_missing_run_in_one_line(runs, monkeypatch, capsys, tmp_path):
    data = ["--data.data-dir", str(runs["root"] / "data")]
    argv = ["train", "bd3lm-demo", *TINY, *data, "--train.out-dir", str(tmp_path / "wide")]
    code, _, err = run(
        monkeypatch, capsys, text8.main, *argv, "--model.d-model", "64", "--train.init-from", str(runs["mdlm"])
    )
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: --train.init-from {runs['mdlm']}: its network (vocab_size 28, d_model 32,"), err
    assert "differs from this run's (vocab_size 28, d_model 64," in err
    code, _, err = run(monkeypatch, capsys, text8.main, *argv, "--train.init-from", str(tmp_path / "none"))
    assert code == 2 and err.startswith(f"error: --train.init-from {tmp_path / 'none'}: not found"), err
    # the bytes run has another vocabulary (258 ids) than text8's (28)
    code, _, err = run(monkeypatch, capsys, text8.main, *argv, "--train.init-from", str(runs["bytes"]))
    assert code == 2 and len(err.splitlines()) == 1 and "vocab_size 258" in err, err


def test_a_sweep_over_block_sizes_trains_and_scores_each(runs, monkeypatch, capsys, tmp_path):
    args = ["bd3lm-demo", *TINY, "--data.data-dir", str(runs["root"] / "data")]
    args += ["--sweep.field", "method.block_size", "--sweep.values", "4", "16", "--sweep.dir", str(tmp_path / "s")]
    code, out, err = run(monkeypatch, capsys, sweep.cli, *args)
    assert code == 0, err
    table = (tmp_path / "s" / "results.csv").read_text().splitlines()
    assert len(table) == 3 and "method.block_size=4" in table[1] + table[2], table


def test_the_bd3lm_presets_have_their_mdlm_runs_network_so_init_from_fits():
    import dataclasses

    from experiments.presets import CORPUS_PRESETS, DEMO, DEMOS, PRESETS
    from nanodd.config import network_config, validate

    for bd3lm, mdlm in [
        (PRESETS["bd3lm-text8"].cfg, PRESETS["mdlm-text8"].cfg),
        (CORPUS_PRESETS["bd3lm-owt"].cfg, CORPUS_PRESETS["mdlm-owt"].cfg),
    ]:
        validate(bd3lm)
        assert bd3lm.method.block_size == 16 and network_config(bd3lm) == network_config(mdlm)
        assert (bd3lm.data, dataclasses.replace(bd3lm.train, out_dir="x")) == (
            mdlm.data,
            dataclasses.replace(mdlm.train, out_dir="x"),
        )
    demo = DEMOS["bd3lm-demo"].cfg
    assert (demo.model, demo.data, dataclasses.replace(demo.train, out_dir="x")) == (
        DEMO.model,
        DEMO.data,
        dataclasses.replace(DEMO.train, out_dir="x"),
    )
    assert demo.train.out_dir == "runs/bd3lm-demo" and "--method.block-size 4" in PRESETS["bd3lm-text8"].about
