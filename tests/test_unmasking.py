"""The unmasking animation (``sample --sample.gif``): a GIF of a tiny model read back with Pillow, for
every sampler; its options in ``--help``; a bad path and a missing Pillow refused in one line before
any work."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from experiments import text8, unmasking
from nanodd.config import DataConfig, network_config, to_dict
from nanodd.methods.mdlm import MDLMConfig
from nanodd.methods.sedd import SEDDConfig
from nanodd.model import DiT, DiTConfig
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.uniform import Uniform
from nanodd.samplers import SAMPLERS
from nanodd.schedules import Geometric
from nanodd.shell.checkpoint import Checkpoints
from test_errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "d3pm": text8.DEMO.method,
    "mdlm": MDLMConfig(),
    "sedd-absorb": SEDDConfig(process=Absorbing()),
    "sedd-uniform": SEDDConfig(process=Uniform(), schedule=Geometric(), scale_by_sigma=False),
}


def tiny_run(tmp_path: Path, method=text8.DEMO.method, seq_len: int = 64) -> Path:
    """A run directory holding one checkpoint of a random 2-block DiT (no training)."""
    cfg = dataclasses.replace(
        text8.DEMO,
        model=DiTConfig(d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0),
        method=method,
        data=DataConfig(source="builtin", seq_len=seq_len),
    )
    torch.manual_seed(0)
    model = DiT(network_config(cfg)).eval()
    ckpts = Checkpoints(tmp_path / "run" / "checkpoints")
    ckpts.save(1, {"params": model.state_dict(), "ema": dict(model.named_parameters())}, {"config": to_dict(cfg)})
    ckpts.wait()
    return tmp_path / "run"


def frames_of(path: Path) -> list[Image.Image]:
    with Image.open(path) as gif:
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(gif.convert("RGB"))
        return frames


def count(frame: Image.Image, colour: tuple[int, int, int]) -> int:
    return sum(n for n, c in frame.getcolors(1 << 16) if c == colour)


def test_a_three_frame_gif_of_a_tiny_model_reads_back_and_unmasks(tmp_path):
    run, gif = tiny_run(tmp_path), tmp_path / "unmasking.gif"
    argv = ["sample", str(run), "--sample.steps", "6", "--sample.gif-every", "2", "--sample.gif", str(gif)]
    code, err = run_cli([*argv, "--sample.no-live", "--sample.device", "cpu"], check_only=False)
    assert code == 0 and f"wrote {gif}" in err.splitlines(), err
    frames = frames_of(gif)
    columns, rows = unmasking.COLUMNS, -(-64 // unmasking.COLUMNS)
    size = tuple(unmasking.SCALE * (2 * unmasking.PAD + n * cell) for n, cell in ((columns, 6), (rows, 13)))
    assert len(frames) == 3 and all(f.size == size for f in frames)
    masked = [count(f, unmasking.BLOCK) for f in frames]
    assert masked[0] > masked[1] > masked[2] == 0, masked  # blocks give way to ink, none left at the end
    assert count(frames[-1], unmasking.INK) > 0
    with Image.open(gif) as image:
        assert image.info["loop"] == 0 and image.info["duration"] == 80  # the first frame's


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_sampler_that_serves_a_checkpoint_draws_its_unmasking(tmp_path, method, sampler):
    """D3PM and MDLM with every sampler (first hitting: a step per token), SEDD with its two; the others
    refuse a ratio network in one line and draw nothing."""
    run, gif = tiny_run(tmp_path, METHODS[method], seq_len=16), tmp_path / "s.gif"
    steps = [] if sampler == "first-hitting" else ["--sample.steps", "8"]
    argv = ["sample", str(run), "--sample.sampler", sampler, *steps, "--sample.gif", str(gif)]
    code, err = run_cli([*argv, "--sample.no-live", "--sample.device", "cpu"], check_only=False)
    if method.startswith("sedd") and sampler not in ("analytic", "euler"):
        assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and not gif.exists(), err
        return
    assert code == 0, err
    frames = frames_of(gif)
    assert 1 <= len(frames) <= 16 and count(frames[-1], unmasking.BLOCK) == 0
    if method != "sedd-uniform":
        assert count(frames[0], unmasking.BLOCK) > 0
    else:  # no mask: every frame shows what the state decodes to
        assert all(count(f, unmasking.BLOCK) == 0 < count(f, unmasking.INK) + count(f, unmasking.NEW) for f in frames)


def test_frames_are_every_kth_step_and_the_last_and_unchanged_ones_only_wait():
    texts = ["____", "a___", "ab__", "ab__", "abc_", "abcd", "abcd"]
    assert unmasking.pick(texts, 2) == ["a___", "ab__", "abcd", "abcd"]
    assert unmasking.pick(texts, 7) == ["abcd"] and unmasking.pick(texts, 100) == ["abcd"]
    assert unmasking.every_for(1000, None) == 21 and unmasking.every_for(10, None) == 1
    gif = Image.open(__import__("io").BytesIO(unmasking.render(texts, every=1, ms=50)))
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    assert durations == [50, 50, 100, 50, unmasking.HOLD_MS]  # "ab__" twice: one frame, twice as long


def test_the_gif_options_are_in_help(capsys):
    with pytest.raises(SystemExit) as exit:
        text8.main(["sample", "--help"])
    help = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert exit.value.code == 0
    for option in ("--sample.gif", "--sample.gif-every", "--sample.gif-ms"):
        assert option + " " in help
    assert "pip install -e '.[plot]'" in help and "about 48 frames" in help


def test_a_gif_path_in_a_missing_directory_is_one_line_before_any_work(tmp_path):
    gif = tmp_path / "no" / "such" / "x.gif"
    assert run_cli(["sample", str(tmp_path), "--sample.gif", str(gif)], check_only=False) == (
        2,
        f"error: --sample.gif {gif}: its directory does not exist\n",
    )


@pytest.mark.parametrize("command", ["sample", "demo"])
def test_without_pillow_the_gif_is_one_line_naming_the_extra_before_any_work(tmp_path, command):
    """PIL made unimportable in a fresh interpreter; ``sample`` is given a directory that is no checkpoint and
    ``demo`` a run directory, so any work started would fail or write something first."""
    gif = tmp_path / "x.gif"
    argv = ["sample", str(tmp_path)] if command == "sample" else ["demo", "--train.out-dir", str(tmp_path / "run")]
    code = f"import sys; sys.modules['PIL'] = None; from experiments import text8; text8.main({argv + ['--sample.gif', str(gif)]!r})"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "NANODD_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "error: --sample.gif needs Pillow: pip install -e '.[plot]' (or pip install pillow)\n",
    )
    assert not gif.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
