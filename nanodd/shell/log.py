"""Metrics as JSON lines plus a readable progress line; rank 0 only."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Iterator

from nanodd.checks import Field, Message

SPELLING: ContextVar[Callable[[Field], str]] = ContextVar("spelling", default=str)
"""How ``Log.say`` writes the fields a ``checks.Message`` names: as Python does (``train.resume=True``), or
as a CLI's flags inside its ``spelled_as`` (``--train.resume``, ``experiments/cli.py``)."""


@contextmanager
def spelled_as(spell: Callable[[Field], str]) -> Iterator[None]:
    """Within the block, ``Log.say`` writes each field of a message as ``spell(field)``."""
    token = SPELLING.set(spell)
    try:
        yield
    finally:
        SPELLING.reset(token)


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 125 -> '2m05s', 7.2 -> '7s'."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Log:
    """``metrics(record)`` appends one JSON object to <out_dir>/metrics.jsonl; ``say(line)`` prints."""

    def __init__(self, out_dir: Path | None, is_main: bool):
        self.is_main = is_main
        self.path = out_dir / "metrics.jsonl" if (is_main and out_dir is not None) else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            drop_partial_line(self.path)

    def metrics(self, record: dict) -> None:
        """Append one line with a single write(2), so a killed run never leaves half a record."""
        if self.path is not None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(record) + "\n").encode())
            finally:
                os.close(fd)

    def say(self, line: str) -> None:
        """Print ``line``; a ``checks.Message`` with its fields spelled as ``SPELLING`` says."""
        if self.is_main:
            print(line.render(SPELLING.get()) if isinstance(line, Message) else line, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A user-facing warning: one line ``warning: <message>`` on stderr, from rank 0 only (RANK, as
    torchrun sets it), never Python's format with its source line."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A ``warnings.showwarning`` that prints any ``warnings.warn`` as ``warn`` does."""
    warn(str(message))


def drop_partial_line(path: Path) -> None:
    """Cut a trailing record without its newline (a crash mid-write on some filesystems) before appending."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
