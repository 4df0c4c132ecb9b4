"""Writing files so that a reader never sees a partial one, and never over something that is not a file.

The rule for every output (samples, GIFs, reports, sweep tables, prepared data): an output replaces a
regular file or nothing.  A symbolic link (``/dev/stdout`` is one), a FIFO, a device, a socket or a
directory at the path is refused, not replaced by a regular file and not written through: what the
path names is the user's, and its target is not ours to change.  ``not_replaceable`` says why in a
few words; the CLIs ask it before any work starts (``experiments.paths.check_writable``) and
``atomic_write`` asks it again (for its temporary name too) just before it writes.
"""

import fcntl
import os
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

KINDS = {
    stat.S_ISLNK: "a symbolic link",
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def not_replaceable(path: Path) -> str | None:
    """Why an output may not replace ``path`` ('is a symbolic link, not a regular file; ...'), or None: it
    is a regular file or nothing."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in KINDS.items() if test(mode)), "not a regular file")
    return f"is {kind}, which an output does not replace (name a regular file or a new path)"


def atomic_write(path: Path, data) -> None:
    """Write bytes-like ``data`` to ``path`` via a temporary name (removed if the write fails), so ``path`` is
    never partial; a ``path`` (or temporary name) that is not a regular file or nothing is refused (``OSError``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    for p in (path, tmp):
        if why := not_replaceable(p):
            raise OSError(f"{p}: {why}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data).cast("B"))
        os.replace(tmp, path)
    except BaseException:  # a full disk, a kill by signal: no partial temporary file stays behind
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def exclusive(lock: Path, waiting: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` within the block, saying ``waiting`` on stderr when another
    process holds it first.  A POSIX record lock (``lockf``): it belongs to this process alone, so worker
    processes forked inside the block do not hold it, and the kernel releases it when the process exits,
    even by kill -9.  Where ``lock`` cannot be created (a read-only directory, where nothing can be written
    either) or is a symbolic link (not followed: what it names is not ours) the block runs without it."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = os.fdopen(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644), "w")
    except OSError:
        yield
        return
    with f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EAGAIN / EACCES: held by another process
            print(waiting, file=sys.stderr, flush=True)
            fcntl.lockf(f, fcntl.LOCK_EX)
        yield
