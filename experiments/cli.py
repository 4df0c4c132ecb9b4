"""How the experiments/ CLIs end: a user's mistake is one ``error: ...`` line and exit code 2 (set
NANODD_DEBUG=1 for the traceback), Ctrl-C outside training is one line and exit code 130, and a
warning is one ``warning: ...`` line (``nanodd.shell.log.warn``).

Mistakes come from three places, all ending the same way: tyro rejecting a token (an unknown
option, ``nan`` for an int, a value outside a choice), which ``reject`` turns into one line naming the
option; a config or options dataclass refusing a value in ``__post_init__`` (``nanodd.checks``),
whose ValueError already names the option; and the library refusing the work (a missing
checkpoint, data too short), raised as one of ``USER_ERRORS``.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Sequence

import tyro
import tyro._errors  # private, pinned in pyproject.toml: tyro's only hook on its parse errors

from nanodd.data import DataError
from nanodd.shell import log
from nanodd.shell.checkpoint import CheckpointError
from nanodd.shell.trainer import StopTraining


class Rejected(Exception):
    """tyro refused the command line; the message is one line naming the option."""


USER_ERRORS = (Rejected, ValueError, OSError, DataError, CheckpointError, StopTraining)


def reject(event: tyro._errors.ParseErrorEvent) -> None:
    """tyro's parse-error hook: raise ``Rejected`` with one line instead of tyro's box."""
    arg = getattr(event, "argument", None)
    option = "/".join(arg.lowered.name_or_flags) or str(arg.lowered.metavar) if arg is not None else ""
    if isinstance(event, tyro._errors.InstantiationFailure):  # a bad literal, or a __post_init__ ValueError
        raise Rejected(f"{option}: {event.message}" if option else event.message)
    if isinstance(event, tyro._errors.InvalidChoice):
        raise Rejected(f"{option} must be one of {', '.join(event.choices)}, got {event.value!r}")
    if isinstance(event, tyro._errors.UnrecognizedArgs):
        raise Rejected(f"unrecognized argument(s) {' '.join(event.tokens)} (see --help)")
    if isinstance(event, tyro._errors.MissingArgs):
        raise Rejected(f"missing {', '.join(a.arg.display_name() for a in event.missing_arguments)} (see --help)")
    if isinstance(event, tyro._errors.MissingSubcommand):
        raise Rejected(f"{event.prog}: choose one of {', '.join(event.subcommand_spec.parser_from_name)}")
    if isinstance(event, tyro._errors.BadValue):
        raise Rejected(f"{option}: {'takes no value' if event.reason == 'fixed' else 'needs a value'}")
    raise Rejected(f"{event.prog}: the arguments do not parse ({type(event).__name__}; see --help)")


@contextmanager
def one_line_errors(interrupted: str = "interrupted"):
    """Within the block: every user mistake prints one ``error:`` line and exits 2, every warning prints one
    ``warning:`` line, Ctrl-C prints ``interrupted`` and exits 130."""
    try:
        with warnings.catch_warnings(), tyro._errors.on_parse_error(reject):
            warnings.showwarning = log.show_warning
            yield
    except USER_ERRORS as e:
        if os.environ.get("NANODD_DEBUG"):
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, whatever the message holds
        sys.exit(2)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)


def run(
    main: Callable, args: Sequence[str] | None, *, prog: str, description: str, interrupted: str = "interrupted"
) -> None:
    """``tyro.cli(main)`` on ``args`` (default: sys.argv), options allowed after subcommands."""
    with one_line_errors(interrupted):
        tyro.cli(main, args=args, prog=prog, description=description, config=(tyro.conf.CascadeSubcommandArgs,))
