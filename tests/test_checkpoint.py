"""Checkpoints: exact round trips, integrity, bitwise resume after kill -9, clean stop, nanoDD import."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nanodd.config import Config
from nanodd.model import DiT, DiTConfig
from nanodd.shell import upstream
from nanodd.shell.checkpoint import CheckpointError, Checkpoints
from nanodd.shell.workflows import load_checkpoint


ROOT = Path(__file__).resolve().parents[1]


def biggest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_round_trip_is_exact_for_every_dtype(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {
        "params": {
            "w": torch.randn(7, 5, generator=g),
            "b16": torch.randn(33, generator=g).bfloat16(),
            "f64": torch.randn(3, generator=g, dtype=torch.float64),
        },
        "ema": {"w": torch.randn(2, generator=g)},
        "opt": {"0.step": torch.tensor(12.0), "i": torch.arange(5)},
    }
    ckpts = Checkpoints(tmp_path)
    ckpts.save(3, state, {"config": {}})
    ckpts.wait()
    restored, meta = ckpts.restore(3)
    assert meta["step"] == 3 and ckpts.steps() == [3]
    for part in state:
        for k, v in state[part].items():
            assert restored[part][k].dtype == v.dtype and torch.equal(restored[part][k], v), (part, k)


def test_flipped_bytes_are_caught_by_name_and_restore_falls_back(tmp_path):
    ckpts = Checkpoints(tmp_path)
    big = {step: torch.randn(300_000, generator=torch.Generator().manual_seed(step)) for step in (1, 2)}
    for step in (1, 2):  # random (incompressible) data, so the biggest file holds the array's bytes
        ckpts.save(step, {"params": {"big": big[step], "small": torch.ones(3)}}, {})
    ckpts.wait()
    flip_byte(biggest_file(tmp_path / "2" / "state"))
    with pytest.raises(CheckpointError, match=r"checkpoint .*/2: array 'params/big' does not match its saved digest"):
        ckpts.restore(2)
    warnings = []
    state, meta = ckpts.restore_latest_good(warn=warnings.append)
    assert meta["step"] == 1 and torch.equal(state["params"]["big"], big[1])
    assert len(warnings) == 1 and warnings[0].endswith(f"using the older checkpoint {tmp_path / '1'} instead")


def edit_meta(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (old, text)
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("field", ['"seq_len": 64', '"T": 100', '"step": 2'])
def test_a_one_byte_edit_of_the_metadata_is_corrupt_and_restore_falls_back(tmp_path, field):
    ckpts = Checkpoints(tmp_path)
    config = {"data": {"seq_len": 64}, "method": {"T": 100}}
    for step in (1, 2):
        ckpts.save(step, {"params": {"w": torch.full((3,), float(step))}}, {"config": config})
    ckpts.wait()
    edit_meta(tmp_path / "2" / "meta" / "metadata", field, field[:-1] + str(int(field[-1]) + 1))
    with pytest.raises(CheckpointError, match=r"checkpoint .*/2: its metadata .* does not match its saved digest"):
        ckpts.restore(2)
    warnings = []
    state, meta = ckpts.restore_latest_good(warn=warnings.append)
    assert meta["step"] == 1 and torch.equal(state["params"]["w"], torch.ones(3)) and len(warnings) == 1


def test_checkpoints_without_a_metadata_digest_still_load(tmp_path):
    ckpts = Checkpoints(tmp_path)
    ckpts.save(1, {"params": {"w": torch.ones(3)}}, {"config": {"data": {"seq_len": 64}}})
    ckpts.wait()
    path = tmp_path / "1" / "meta" / "metadata"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in meta.items() if k != "meta_sha256"}))  # as written before digests
    _, restored = ckpts.restore(1)
    assert restored["config"] == {"data": {"seq_len": 64}} and "meta_sha256" not in restored


def test_keeps_the_last_n_and_the_best(tmp_path):
    ckpts = Checkpoints(tmp_path, keep=2)
    for step, val in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 2.5), (5, 2.6)]:
        ckpts.save(step, {"params": {"w": torch.zeros(1)}}, {}, val_bpc=val)
        ckpts.wait()
    assert ckpts.steps() == [2, 4, 5]


def test_save_failure_names_the_last_good_checkpoint(tmp_path, monkeypatch):
    ckpts = Checkpoints(tmp_path)
    ckpts.save(1, {"params": {"w": torch.zeros(1)}}, {})
    ckpts.wait()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpts.manager, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*last complete checkpoint is 1"):
        ckpts.save(2, {"params": {"w": torch.zeros(1)}}, {})


def test_a_disk_that_fills_during_an_async_save_is_one_line_naming_that_step(tmp_path, monkeypatch, capfd):
    from orbax.checkpoint._src.handlers.json_checkpoint_handler import JsonCheckpointHandler

    ckpts = Checkpoints(tmp_path)
    ckpts.save(1, {"params": {"w": torch.ones(3)}}, {})
    ckpts.wait()

    async def disk_full(self, x, directory):  # runs in orbax's background commit thread
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(JsonCheckpointHandler, "_save_fn", disk_full)
    ckpts.save(2, {"params": {"w": torch.zeros(3)}}, {})  # returns at once; the failure comes with the next call
    capfd.readouterr()
    with pytest.raises(CheckpointError) as e:
        ckpts.save(3, {"params": {"w": torch.zeros(3)}}, {})
    message = str(e.value)
    assert message.startswith("could not write checkpoint 2 under") and "\n" not in message
    assert "No space left on device" in message and message.endswith("the last complete checkpoint is 1")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ERROR" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # no temporary directory left behind
    monkeypatch.undo()
    assert torch.equal(Checkpoints(tmp_path, is_main=False).restore(1)[0]["params"]["w"], torch.ones(3))


def test_a_file_where_the_checkpoints_directory_belongs_is_one_line(tmp_path):
    (tmp_path / "checkpoints").write_text("not a directory")
    for is_main in (True, False):
        with pytest.raises(CheckpointError, match=r"checkpoints is not a directory; move it away or choose another"):
            Checkpoints(tmp_path / "checkpoints", is_main=is_main)
    assert (tmp_path / "checkpoints").read_text() == "not a directory"


def test_a_truncated_only_checkpoint_is_one_line_without_event_loop_noise(tmp_path, capfd, monkeypatch):
    unraisable = []  # what Python would print as a bare traceback after our error line
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value}"))
    ckpts = Checkpoints(tmp_path)
    g = torch.Generator().manual_seed(0)
    ckpts.save(1, {"params": {f"w{i}": torch.randn(20_000, generator=g) for i in range(16)}}, {})
    ckpts.wait()
    big = biggest_file(tmp_path / "1" / "state")
    big.write_bytes(big.read_bytes()[:100])  # orbax fails on one read while the others are in flight
    capfd.readouterr()
    for _ in range(10):  # the noise came in about half the runs
        with pytest.raises(CheckpointError, match=r"checkpoint .*/1 cannot be read: .*no older good checkpoint exists"):
            ckpts.restore_latest_good(warn=lambda _: None)
    time.sleep(0.5)  # late callbacks of the reads would print by now
    err = capfd.readouterr().err
    assert not unraisable and "Traceback" not in err, (unraisable[:2], err)


def test_missing_or_partial_checkpoint_directories_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "run" / "checkpoints" / "7.orbax-checkpoint-tmp-123").mkdir(parents=True)  # an interrupted save
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "run")


# ---- training runs in subprocesses: kill -9 and SIGTERM ---------------------------------------


STEPS = 120
"""Optimizer steps of each run below; it checkpoints every 20 and is killed or stopped part way."""


def train_cmd(corpus, out, *extra, dtype="fp32"):
    return [
        sys.executable,
        "-m",
        "experiments.text8",
        "train",
        "demo",
        "--model.d-model",
        "32",
        "--model.n-heads",
        "2",
        "--model.n-blocks",
        "2",
        "--model.cond-dim",
        "16",
        "--model.dropout",
        "0.1",
        "--data.source",
        str(corpus),
        "--data.data-dir",
        str(out.parent / "data"),
        "--data.seq-len",
        "32",
        "--train.batch-size",
        "8",
        "--train.max-iters",
        str(STEPS),
        "--train.warmup-iters",
        "10",
        "--train.eval-interval",
        "20",
        "--train.eval-batches",
        "1",
        "--train.log-interval",
        "1",
        "--train.dtype",
        dtype,
        "--train.device",
        "cpu",
        "--train.out-dir",
        str(out),
        *extra,
    ]


def step_losses(out: Path) -> dict[int, float]:
    """step -> loss, the last record of each step winning (a resumed run repeats a few steps)."""
    losses = {}
    text = (out / "metrics.jsonl").read_text()
    for line in text[: text.rfind("\n") + 1].splitlines():  # the writer may be mid-line while we poll
        record = json.loads(line)
        if "losses" in record:
            losses[record["step"]] = record["losses"][-1]
    return losses


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and max(step_losses(out), default=0) >= step:
            return
        time.sleep(0.01)
    raise AssertionError(f"run did not reach step {step}: {proc.poll()}")


def final_state(out: Path, step: int):
    return Checkpoints(out / "checkpoints", is_main=False).restore(step)[0]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_resume_after_kill_9_is_bitwise_identical(corpus, tmp_path, dtype):
    """fp32 and the bf16 fast path (autocast, bf16 attention as written, fused AdamW) alike."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    whole = tmp_path / "whole"
    subprocess.run(train_cmd(corpus, whole, dtype=dtype), check=True, cwd=ROOT, env=env, capture_output=True)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(train_cmd(corpus, cut, dtype=dtype), cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    wait_for_step(cut, STEPS // 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(step_losses(cut))
    assert killed_at < STEPS, "the run finished before it could be killed"
    done = subprocess.run(
        train_cmd(corpus, cut, "--train.resume", dtype=dtype), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    resumed_from = int(done.stderr.split("resumed from step ")[1].split()[0])
    assert 0 < resumed_from <= killed_at

    a, b = final_state(whole, STEPS), final_state(cut, STEPS)
    for part in ("params", "ema", "opt"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    la, lb = step_losses(whole), step_losses(cut)
    assert [la[s] for s in range(resumed_from + 1, STEPS + 1)] == [lb[s] for s in range(resumed_from + 1, STEPS + 1)]


def test_sigterm_stops_cleanly_with_a_checkpoint_and_resume_finishes(corpus, tmp_path):
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(corpus, out), cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    wait_for_step(out, 20, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err  # 128 + SIGTERM, after the checkpoint is saved, as a shell reports it
    stopped = max(step_losses(out))
    assert stopped < STEPS and f"stopped at step {stopped}" in err and "--train.resume" in err
    assert stopped in Checkpoints(out / "checkpoints", is_main=False).steps()
    changed = subprocess.run(
        train_cmd(corpus, out, "--train.resume", "--model.n-blocks", "3"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert changed.returncode == 2 and "was trained with model" in changed.stderr
    done = subprocess.run(train_cmd(corpus, out, "--train.resume"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and f"resumed from step {stopped}" in done.stderr


# ---- nanoDD's ckpt.pt ---------------------------------------------------------------------------

MODEL_ARGS = dict(vocab_size=27, n_embed=32, n_heads=2, n_blocks=2, n_cond=16, dropout=0.0, T=100, lambda_ce=0.05)


def nanodd_file(tmp_path, model: DiT, ema: DiT, **overrides) -> Path:
    """A checkpoint laid out as nanoDD writes it: D3PMAbsorbing's state dict (DiT under 'net.', plus
    betas / alpha_bars buffers), the EMA copy prefixed 'ema_model.', args and counters."""
    T = MODEL_ARGS["T"]
    buffers = {"betas": torch.rand(T + 1), "alpha_bars": torch.rand(T + 1)}
    raw = {f"net.{k}": v for k, v in model.state_dict().items()} | buffers
    ckpt = {
        "model": raw,
        "ema": {
            f"ema_model.{k}": v for k, v in ({f"net.{k}": v for k, v in ema.state_dict().items()} | buffers).items()
        },
        "optimizer": {},
        "model_cls": "D3PMAbsorbing",
        "model_args": dict(MODEL_ARGS),
        "training_args": {"batch_size": 4},
        "iter_num": 1234,
        "best_val_loss": 1.5,
    } | overrides
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    return path


def random_dit(seed):
    torch.manual_seed(seed)
    model = DiT(DiTConfig(vocab_size=28, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("ema", [True, False])
def test_nanodd_checkpoint_loads_with_identical_logits(tmp_path, ema):
    raw, averaged = random_dit(0), random_dit(1)
    path = nanodd_file(tmp_path, raw, averaged)
    ckpt = load_checkpoint(path, ema=ema)
    model, cfg = ckpt.model, ckpt.cfg
    assert (cfg.model.d_model, model.cfg.vocab_size, cfg.method.T, cfg.method.process.mask_id) == (32, 28, 100, 27)
    zt, t = torch.randint(0, 28, (2, 16)), torch.tensor([3.0, 90.0])
    expected = (averaged if ema else raw)(zt, t)
    torch.testing.assert_close(model(zt, t), expected, rtol=0, atol=0)


def test_nanodd_convert_then_sample(tmp_path, monkeypatch, capsys):
    from test_train import run_cli

    path = nanodd_file(tmp_path, random_dit(0), random_dit(1))
    code, _, err = run_cli(monkeypatch, capsys, "convert", str(path), str(tmp_path / "converted"))
    assert code == 0, err
    model, reference = load_checkpoint(tmp_path / "converted").model, load_checkpoint(path).model
    zt, t = torch.randint(0, 28, (2, 16)), torch.tensor([3.0, 90.0])
    torch.testing.assert_close(model(zt, t), reference(zt, t), rtol=0, atol=0)
    code, out, err = run_cli(
        monkeypatch, capsys, "sample", str(path), "--sample.steps", "20", "--sample.no-live", "--sample.device", "cpu"
    )
    assert code == 0 and len(out.split("\n")[0]) == 256, err


def test_nanodd_bad_files_give_clear_errors(tmp_path):
    good = nanodd_file(tmp_path, random_dit(0), random_dit(1))
    ckpt = torch.load(good, weights_only=True)
    torch.save(ckpt | {"model_cls": "SEDD"}, tmp_path / "cls.pt")
    with pytest.raises(CheckpointError, match="model_cls 'SEDD' is not supported"):
        upstream.load(tmp_path / "cls.pt")
    torch.save(ckpt | {"model_args": MODEL_ARGS | {"n_embed": 64}}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="weights do not fit the DiT"):
        upstream.load(tmp_path / "shape.pt")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"model_args": Config()}, f)  # unpickling needs to import and build arbitrary classes
    with pytest.raises(CheckpointError, match="refused"):
        upstream.load(tmp_path / "evil.pt")
