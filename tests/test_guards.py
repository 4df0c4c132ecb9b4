"""Nothing lost: a command checks everything first and destroys only what it made (demo replaces only its
own preset's run, race only its own directories and only after the corpus checks, convert only into an
empty directory, outputs only over regular files), and one writer per run directory (a lock the OS
releases on kill -9)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import race
from nanodd.data.files import atomic_write
from test_checkpoint import nanodd_file, random_dit, train_cmd, wait_for_step
from test_errors import refused_in_one_line, run_main
from test_errors import run_cli as check_only  # in this process, stopping after the checks
from test_train import TINY_ARGS, run_cli


def run_args(corpus, tmp_path, out):
    return [
        *TINY_ARGS,
        "--data.source",
        str(corpus),
        "--data.data-dir",
        str(tmp_path / "data"),
        "--train.out-dir",
        str(out),
    ]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_demo_replaces_only_a_demo_run_of_its_own_preset(monkeypatch, capsys, corpus, tmp_path):
    out = tmp_path / "run"
    args, sample = run_args(corpus, tmp_path, out), ["--sample.steps", "4", "--sample.no-live"]
    assert run_cli(monkeypatch, capsys, "demo", "mdlm-demo", *args, *sample)[0] == 0
    before = snapshot(out / "checkpoints")
    code, _, err = run_cli(monkeypatch, capsys, "demo", *args, *sample)  # D3PM into the MDLM run
    assert refused_in_one_line(code, err, str(out), "--train.resume", "--demo.replace"), err
    assert snapshot(out / "checkpoints") == before  # nothing deleted
    assert refused_in_one_line(*run_cli(monkeypatch, capsys, "demo", *args, "--demo.replace", str(tmp_path))[::2])
    code, _, err = run_cli(monkeypatch, capsys, "demo", "mdlm-demo", *args, *sample)  # its own preset: replaced
    assert code == 0 and "replacing the previous run" in err, err
    assert err.index("replacing the previous run") < err.index("step")  # the notice comes first
    assert run_cli(monkeypatch, capsys, "train", "demo", *args)[0] == 2  # train keeps its refusal
    code, _, err = run_cli(monkeypatch, capsys, "demo", *args, *sample, "--demo.replace", str(out))
    assert code == 0 and "replacing" in err, err
    assert run_cli(monkeypatch, capsys, "train", "mdlm-demo", *args)[0] == 2
    (out / "checkpoints" / "demo.json").unlink()  # a run no demo marked (train's, or from before marks)
    code, _, err = run_cli(monkeypatch, capsys, "demo", *args, *sample)
    assert refused_in_one_line(code, err, "not marked as a demo run", "--demo.replace"), err


def test_race_checks_every_input_before_it_deletes_and_deletes_only_its_own(monkeypatch, tmp_path):
    monkeypatch.setenv("NANODD_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "race"
    for name in ("judge", "demo"):
        (root / name).mkdir(parents=True)
        (root / name / "keep.txt").write_text(name)
    base = ["--out-dir", str(root), "--methods", "demo", "--budget", "1"]
    code, err = run_main(race.cli, [*base, "--corpus", str(tmp_path / "nonexistent.txt")])
    assert refused_in_one_line(code, err, "--corpus", "nonexistent.txt"), err
    code, err = run_main(race.cli, [*base, "--corpus", "builtin"])  # a corpus, but directories it did not make
    assert refused_in_one_line(code, err, "--out-dir", "not made by a race"), err
    assert sorted(p.read_text() for p in root.glob("*/keep.txt")) == ["demo", "judge"]
    (root / "judge" / race.MARK).touch()  # the judge is the race's now; demo/ is still not
    code, err = run_main(race.cli, [*base, "--corpus", "builtin", "--plot", str(root / "demo")])
    assert refused_in_one_line(code, err, "--plot"), err
    assert refused_in_one_line(*run_main(race.cli, [*base, "--corpus", "builtin"]), str(root / "demo"))
    assert (root / "judge" / "keep.txt").exists()


def test_convert_refuses_a_directory_that_holds_anything(monkeypatch, capsys, tmp_path):
    path = nanodd_file(tmp_path, random_dit(0), random_dit(1))
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    code, _, err = run_cli(monkeypatch, capsys, "convert", str(path), str(out))
    assert refused_in_one_line(code, err, "OUT_DIR", str(out), "metrics.jsonl"), err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]
    assert run_cli(monkeypatch, capsys, "convert", str(path), str(tmp_path / "new"))[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "convert", str(path), str(tmp_path / "new"))  # not twice
    assert refused_in_one_line(code, err, "checkpoints/"), err


def non_regular(tmp_path: Path) -> dict[str, Path]:
    """A symbolic link to a file, a FIFO, a directory, and a link made as /dev/stdout is (never the system's
    own in a write: a broken atomic_write would replace it, as root)."""
    (tmp_path / "target.txt").write_text("precious\n")
    os.symlink(tmp_path / "target.txt", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    os.symlink("/proc/self/fd/1", tmp_path / "stdout")
    return {kind: tmp_path / kind for kind in ("link", "fifo", "dir", "stdout")}


@pytest.mark.parametrize("kind", ["link", "fifo", "dir", "stdout"])
def test_outputs_refuse_every_target_that_is_not_a_regular_file(tmp_path, kind):
    path = non_regular(tmp_path)[kind]
    before = os.lstat(path)
    with pytest.raises(OSError, match="which an output does not replace"):
        atomic_write(path, b"samples\n")
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino) and not Path(f"{path}.tmp").exists()
    assert (tmp_path / "target.txt").read_text() == "precious\n"
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"never read")
    for target in (path, "/dev/stdout"):  # the checks before any work write nothing: the system's is safe here
        for argv, flag in [
            (["sample", str(checkpoint), "--sample.out", str(target)], "--sample.out"),
            (["sample", str(checkpoint), "--sample.gif", str(target)], "--sample.gif"),
            (["evaluate", str(checkpoint), "--eval.out", str(target)], "--eval.out"),
        ]:
            code, err = check_only(argv)
            assert refused_in_one_line(code, err, flag, "not replace"), err
    atomic_write(tmp_path / "target.txt", b"replaced\n")  # a regular file is replaced, atomically
    assert (tmp_path / "target.txt").read_text() == "replaced\n"


def test_a_second_writer_is_refused_and_a_killed_holder_leaves_no_stale_lock(monkeypatch, capsys, corpus, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(train_cmd(corpus, out), stderr=subprocess.DEVNULL)
    try:
        wait_for_step(out, 2, holder)
        argv = train_cmd(corpus, out)[3:]  # the same training, in this process, while the first runs
        code, _, err = run_cli(monkeypatch, capsys, *argv)
        assert refused_in_one_line(code, err, str(out), f"pid {holder.pid}"), err
        code, _, err = run_cli(monkeypatch, capsys, *argv, "--train.resume")
        assert refused_in_one_line(code, err, f"pid {holder.pid}"), err
        path = nanodd_file(tmp_path, random_dit(0), random_dit(1))
        code, _, err = run_cli(monkeypatch, capsys, "convert", str(path), str(tmp_path / "empty"))
        assert code == 0, err  # another directory is free
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
    time.sleep(0.1)
    code, _, err = run_cli(monkeypatch, capsys, *argv, "--train.resume", "--train.max-iters", "2")
    assert code == 0, err  # the kernel released the lock with its holder


def test_demo_and_convert_take_the_lock_too(monkeypatch, capsys, corpus, tmp_path):
    out = tmp_path / "run"
    script = (
        "import sys, time; from pathlib import Path; from nanodd.shell.lock import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_cli(monkeypatch, capsys, "demo", *run_args(corpus, tmp_path, out), "--sample.no-live")
        assert refused_in_one_line(code, err, str(out), f"pid {holder.pid}"), err
        path = nanodd_file(tmp_path, random_dit(0), random_dit(1))
        code, _, err = run_cli(monkeypatch, capsys, "convert", str(path), str(out))
        assert refused_in_one_line(code, err, f"pid {holder.pid}"), err
        assert [p.name for p in out.iterdir()] == [".lock"]
    finally:
        holder.kill()
        holder.wait()
