"""One writer per run directory: an exclusive ``flock`` on ``<dir>/.lock``, held while the writer runs.

    with run_lock(Path("runs/demo")):   # or RunLocked: "runs/demo: in use by another process (pid 4242) ..."
        ...                             # train, convert, clear and refill the directory

Every command that writes a run directory (train, and so demo, sweep rows and race runs, which call it;
convert; a sweep or race for its own directory) takes it first and holds it to the end.  The lock is
non-blocking: a second writer is refused at once, in one line naming the directory and the pid that
holds it (written into the lock file by the holder).  The kernel releases a ``flock`` when its holder
exits, however it exits (kill -9 included), so a lock is never stale: the file stays, the lock does not.
The lock file is never deleted (a writer that unlinked it could race a newcomer onto a second inode);
``clear`` empties a directory around it.

Taking it again inside the same process (demo holds its directory, then trains in it) is a no-op: the
lock is reentrant within a process, by the directory's resolved path.  Under DDP only rank 0 takes it
(the trainer's ``locked_out_dir``); the ranks agree on the refusal so none is left waiting.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK = ".lock"
"""The lock file's name inside the directory it guards."""
HELD: dict[str, int] = {}
"""Resolved directory -> how many ``run_lock`` blocks of this process hold it."""


class RunLocked(OSError):
    """Another process is writing this directory (an ``OSError``: the CLIs print it as one line, exit 2)."""


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Create ``directory`` if needed and hold its lock within the block; ``RunLocked`` if another process
    holds it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = str(directory.resolve())
    if key in HELD:
        HELD[key] += 1
        try:
            yield
        finally:
            HELD[key] -= 1
        return
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise RunLocked(
                f"{directory}: in use by another process{pid}, which holds {directory / LOCK}; wait for it to "
                "finish or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        HELD[key] = 1
        try:
            yield
        finally:
            del HELD[key]
    finally:
        os.close(fd)  # releases the lock


def entries(directory: Path) -> list[Path]:
    """What ``directory`` holds besides its lock file (nothing when it does not exist)."""
    directory = Path(directory)
    return sorted(p for p in directory.iterdir() if p.name != LOCK) if directory.is_dir() else []


def clear(directory: Path) -> None:
    """Remove everything in ``directory`` but its lock file; call it holding ``run_lock(directory)``."""
    if str(Path(directory).resolve()) not in HELD:
        raise RuntimeError(f"clear({directory}) without holding its run_lock")
    for p in entries(directory):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
