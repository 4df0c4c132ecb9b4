"""How the experiments/ CLIs end: a user's mistake is one ``error: ...`` line and exit code 2 (set
NANODD_DEBUG=1 for the traceback), Ctrl-C outside training is one line and exit code 130."""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

import tyro

from nanodd.data import DataError
from nanodd.shell.checkpoint import CheckpointError
from nanodd.shell.trainer import StopTraining

USER_ERRORS = (ValueError, OSError, DataError, CheckpointError, StopTraining)


def run(main: Callable, args: Sequence[str] | None, *, prog: str, description: str,
        interrupted: str = "interrupted") -> None:
    """``tyro.cli(main)`` on ``args`` (default: sys.argv), options allowed after subcommands."""
    try:
        tyro.cli(main, args=args, prog=prog, description=description, config=(tyro.conf.CascadeSubcommandArgs,))
    except USER_ERRORS as e:
        if os.environ.get("NANODD_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)
