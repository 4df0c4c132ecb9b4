"""Every entry point speaks the same way: malformed nanoDD files, benchmarks.sampling's refusals, OS
errors naming the option they came from, a demo resumed after it finished, and interrupted runs
exiting 130 (SIGINT) / 143 (SIGTERM) after their checkpoint is saved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import cli
from nanodd.shell import upstream
from nanodd.shell.checkpoint import CheckpointError, Checkpoints
from test_checkpoint import MODEL_ARGS, nanodd_file, random_dit, step_losses, wait_for_step
from test_errors import refused_in_one_line, run_cli, run_main

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
TINY = (
    "--model.d-model 32 --model.n-heads 2 --model.n-blocks 2 --model.cond-dim 16 --data.seq-len 32 "
    "--train.batch-size 4 --train.eval-batches 1 --train.log-interval 1 --train.device cpu --train.dtype fp32"
).split()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: {k: v for k, v in c.items() if k != "ema"}, "no 'ema' weights"),
        (lambda c: c | {"ema": ["not", "a", "dict"]}, "no 'ema' weights"),
        (lambda c: c | {"model_args": "vocab_size=27"}, "model_args is a str"),
        (lambda c: c | {"model_args": MODEL_ARGS | {"n_embed": "32"}}, "n_embed='32'"),
        (lambda c: c | {"model_args": MODEL_ARGS | {"n_embed": 10**9}}, "n_embed"),
        (lambda c: c | {"model_args": MODEL_ARGS | {"n_blocks": 10**6}}, "n_blocks"),
        (lambda c: c | {"model_args": MODEL_ARGS | {"n_heads": 3}}, "describe no valid model"),
        (lambda c: c | {"training_args": "seq_len=256"}, None),  # unread beyond seq_len: loads
    ],
    ids=["no-ema", "ema-list", "args-str", "str-dim", "huge-width", "huge-depth", "bad-heads", "args-str-training"],
)
def test_malformed_nanodd_checkpoints_are_one_checkpoint_error_before_any_allocation(tmp_path, change, message):
    """KeyError, TypeError and multi-GB allocations before: now one CheckpointError line naming the file."""
    ckpt = torch.load(nanodd_file(tmp_path, random_dit(0), random_dit(1)), weights_only=True)
    torch.save(change(ckpt), tmp_path / "bad.pt")
    if message is None:
        upstream.load(tmp_path / "bad.pt")
        return
    with pytest.raises(CheckpointError, match=message) as e:
        upstream.load(tmp_path / "bad.pt")
    assert str(tmp_path / "bad.pt") in str(e.value) and "\n" not in str(e.value)
    code, err = run_cli(["sample", str(tmp_path / "bad.pt"), "--sample.device", "cpu", "--sample.no-live"], False)
    assert refused_in_one_line(code, err, "bad.pt"), err


def test_benchmarks_sampling_refuses_in_one_line(tmp_path):
    from benchmarks import sampling

    nanodd = nanodd_file(tmp_path, random_dit(0), random_dit(1))  # a D3PM: not an autoregressive judge
    for argv, named in [
        ([str(tmp_path / "missing"), "--judge", str(nanodd)], "CHECKPOINT"),
        ([str(nanodd), "--judge", str(tmp_path / "missing")], "--judge"),
        ([str(nanodd), "--judge", str(nanodd)], "not an autoregressive judge"),
        ([str(nanodd), "--judge", str(nanodd), "--batch", "0"], "--batch"),
        ([str(nanodd), "--judge", str(nanodd), "--batches", "-1"], "--batches"),
    ]:
        code, err = run_main(sampling.cli, argv)
        assert refused_in_one_line(code, err, named), (argv, err)


def test_benchmarks_sampling_refuses_a_ratio_network_in_one_line(tmp_path, monkeypatch):
    """A SEDD checkpoint: the grid's samplers need x0 (a traceback from the first row before)."""
    from benchmarks import sampling
    from nanodd.methods import sedd
    from nanodd.processes.absorbing import Absorbing

    class Loaded:
        diffusion = sedd.diffusion(sedd.SEDDConfig(process=Absorbing(n_symbols=27)))

    monkeypatch.setattr(sampling, "load_checkpoint", lambda path: Loaded())
    monkeypatch.setattr(sampling, "load_judge", lambda path: None)
    code, err = run_main(sampling.cli, [str(tmp_path), "--judge", str(tmp_path)])
    assert refused_in_one_line(code, err, "CHECKPOINT", "masked-diffusion"), err


def test_os_errors_name_the_option_of_their_path(tmp_path):
    """'[Errno 36] File name too long' and '[Errno 17] File exists' named no option."""
    long = str(tmp_path / ("a" * 300))
    code, err = run_cli(["sample", str(tmp_path), "--sample.out", long])
    assert refused_in_one_line(code, err, "--sample.out", "File name too long") and "Errno" not in err, err
    code, err = run_cli(["train", "demo", "--train.out-dir", long])
    assert refused_in_one_line(code, err, "--train.out-dir", "File name too long"), err
    error = FileExistsError(17, "File exists", str(tmp_path / "run" / "tokenizer"))
    line = cli.os_error_line(error, ["train", "demo", "--train.out-dir", str(tmp_path / "run")])
    assert line == f"--train.out-dir {tmp_path / 'run'}: {tmp_path / 'run' / 'tokenizer'}: File exists"
    assert cli.os_error_line(error, []) == f"{tmp_path / 'run' / 'tokenizer'}: File exists"


def demo_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.text8", "demo", *TINY, "--train.out-dir", str(out), *extra]


def test_a_demo_resumed_after_it_finished_samples_instead_of_a_key_error(tmp_path):
    out, tail = tmp_path / "run", ("--sample.no-live", "--sample.steps", "4", "--sample.device", "cpu")
    first = subprocess.run(
        demo_cmd(out, "--train.max-iters", "3", "--train.eval-interval", "3", *tail),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    again = subprocess.run(
        demo_cmd(out, "--train.max-iters", "3", "--train.eval-interval", "3", "--train.resume", *tail),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0 and "had already finished" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr and "2 sample(s)" in again.stderr


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_demo_saves_its_checkpoint_and_exits_128_plus_the_signal(tmp_path, sig, code):
    """train/demo exited 0 after a signal (the sweep 130 for either); a script could not tell."""
    out = tmp_path / "run"
    cmd = demo_cmd(out, "--train.max-iters", "100000", "--train.eval-interval", "1000", "--sample.no-live")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(out, 5, proc)
    proc.send_signal(sig)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    stopped = max(step_losses(out))
    assert f"stopped at step {stopped}" in err and stopped in Checkpoints(out / "checkpoints", is_main=False).steps()
    assert not stdout.strip() and "Traceback" not in err  # no samples after an interrupted training
