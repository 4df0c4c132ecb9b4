"""How the experiments/ CLIs end: a user's mistake is one ``error: ...`` line and exit code 2 (set
NANODD_DEBUG=1 for the traceback), Ctrl-C outside training is one line and exit code 130, and a
warning is one ``warning: ...`` line (``nanodd.shell.log.warn``).

Mistakes come from three places, all ending the same way: tyro rejecting a token (an unknown
option, ``nan`` for an int, a value outside a choice), which ``reject`` turns into one line naming the
option; a config or options dataclass refusing a value in ``__post_init__`` (``nanodd.checks``);
and the library refusing the work (a missing checkpoint, data too short), raised as one of
``USER_ERRORS``.

The library names fields as Python spells them (``eps must be in (0, 1), got 2``, a
``nanodd.checks.Message``); this module names the flag the user typed.  A dataclass tyro builds
under a prefix (``MDLMConfig``'s schedule at ``method.schedule`` in ``experiments.text8 train``,
the same class at ``extra.schedule`` in ``experiments.compose``) has its fields spelled as tyro
spells that prefix's arguments (``--method.schedule.eps``, ``--extra.schedule.eps``; a positional
as its name in capitals); a message from outside tyro's construction (the trainer, the sweep) names
paths from the root of what was parsed (``train.lr``: ``--train.lr``), and so does a line the work says
(``nanodd.shell.log.spelled_as``: the trainer's "... plus --train.resume" when a run stops).
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Callable, Iterable, Sequence

import tyro
import tyro._arguments
import tyro._errors  # private, pinned in pyproject.toml: tyro's only hook on its parse errors

from nanodd.checks import UNSET, Field, Message
from nanodd.data import DataError
from nanodd.shell import log
from nanodd.shell.checkpoint import CheckpointError
from nanodd.shell.trainer import StopTraining


class Rejected(Exception):
    """tyro refused the command line; the message is one line naming the option."""


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal at a step boundary, its checkpoint saved: the CLI exits 128 + signum
    (130 for SIGINT, 143 for SIGTERM), as a shell reports a process the signal ended."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def exit_if_stopped(last: dict) -> dict:
    """``last`` (``nanodd.shell.trainer.train``'s) unless a signal stopped the run: then ``Interrupted``."""
    if last.get("stopped"):
        raise Interrupted(int(last["stopped"]))
    return last


USER_ERRORS = (Rejected, ValueError, OSError, DataError, CheckpointError, StopTraining)


DUMMY = ("__tyro_dummy_inner__", "__tyro-dummy-inner__")
"""Segments tyro puts into its own prefixes (the wrapper of root-level subcommands); no flag has them."""


def without_dummies(prefix: str) -> str:
    return ".".join(s for s in prefix.split(".") if s not in DUMMY)


def tyro_parsers(frames: Iterable[FrameType]) -> list:
    """Every parser tyro built for this command line (the chosen subcommands; tyro 1.0's ``_cli_impl``
    holds the root as ``parser_spec``), or none when ``frames`` do not pass through tyro's parse."""
    root = next((f.f_locals["parser_spec"] for f in frames if f.f_code.co_name == "_cli_impl"), None)
    found, todo = [], [root] if root is not None else []
    while todo:
        parser = todo.pop()
        found.append(parser)
        todo += parser.child_from_prefix.values()
        for group in parser.subparsers_from_intern_prefix.values():
            todo += [lazy._cached for lazy in group.parser_from_name.values() if lazy._cached is not None]
    return found


def spelling(parsers: list, intern_prefix: str | None) -> Callable[[Field], str]:
    """How the command line spells a ``Field`` of the dataclass tyro built at ``intern_prefix`` (the path
    of Python names tyro gives it: ``extra.schedule``, ``__tyro-dummy-inner__.cfg.model``); None: the
    root of what was parsed (the config of ``train``, a benchmark's ``Annotated[Args, arg(name="")]``).
    A name already spelled for the command line (a flag, a positional's metavar) stays as it is."""
    target = without_dummies(intern_prefix) if intern_prefix is not None else None
    parser = next((p for p in parsers if without_dummies(p.intern_prefix) == target), None)
    prefix = parser.extern_prefix if parser is not None else ""
    args = {a.field.intern_name: a for a in parser.args} if parser is not None else {}

    def spell(field: Field) -> str:
        name = field.name
        if name.startswith("-") or len(name) > 1 and name.isupper():
            return name  # spelled by the CLI layer itself: a flag, or a positional's metavar (CHECKPOINT)
        flags = args[name].lowered.name_or_flags if name in args else ()
        if flags and not flags[0].startswith("-"):
            return name.upper()  # a positional: CHECKPOINTS
        flag = (flags[0] if flags else "--" + ".".join(filter(None, (prefix, name)))).replace("_", "-")
        if field.value is UNSET or field.value is True:
            return flag
        return f"--no-{flag[2:]}" if field.value is False else f"{flag} {field.value}"

    return spell


def tyro_rejected(error: BaseException | None) -> Callable[[Field], str]:
    """The spelling for a message tyro is rejecting, called from its parse-error hook: tyro 1.0 fires the
    hook inside ``except InstantiationError as error`` (a nested dataclass's ValueError; ``error.arg`` is
    the dataclass's intern prefix, or, for a root-level subcommand under tyro's own wrapper, the class
    name: no parser has it, and its fields are root flags) or ``except ValueError`` (a root class)."""
    arg = getattr(error, "arg", None)
    if isinstance(arg, tyro._arguments.ArgumentDefinition):
        arg = arg.intern_prefix
    stack = traceback.walk_stack(sys._getframe())
    return spelling(tyro_parsers(f for f, _ in stack), arg if isinstance(arg, str) else None)


def escaped(error: BaseException) -> Callable[[Field], str]:
    """The spelling for a message that left tyro unhandled: tyro catches no error of a dataclass at the
    root of the flags (``Annotated[Args, arg(name="")]``), so it escapes from the innermost
    ``callable_with_args`` building it, whose ``prefixed_field_name`` is its intern prefix; a message raised
    after parsing (by the work) names paths from the root."""
    frames = [f for f, _ in traceback.walk_tb(error.__traceback__)]
    building = [f.f_locals.get("prefixed_field_name") for f in frames if f.f_code.co_name == "callable_with_args"]
    return spelling(tyro_parsers(frames), building[-1] if building and isinstance(building[-1], str) else None)


def reject(event: tyro._errors.ParseErrorEvent) -> None:
    """tyro's parse-error hook: raise ``Rejected`` with one line instead of tyro's box."""
    arg = getattr(event, "argument", None)
    option = "/".join(arg.lowered.name_or_flags) or str(arg.lowered.metavar) if arg is not None else ""
    if isinstance(event, tyro._errors.InstantiationFailure):  # a bad literal, or a __post_init__ ValueError
        if isinstance(event.message, Message):  # a field refused (nanodd.checks): name its flag
            raise Rejected(event.message.render(tyro_rejected(sys.exc_info()[1])))
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


def given_paths(argv: Sequence[str]) -> list[tuple[str, str]]:
    """(how it was typed, the path) for every value on the command line: ``--flag value``, ``--flag=value``
    and positionals (named by themselves)."""
    pairs = [tuple(a.split("=", 1)) for a in argv if a.startswith("--") and "=" in a]
    pairs += [(a, b) for a, b in zip(argv, argv[1:]) if a.startswith("--") and "=" not in a and not b.startswith("--")]
    return [*pairs, *((a, a) for a in argv if a and not a.startswith("-"))]


def os_error_line(error: OSError, argv: Sequence[str]) -> str:
    """An OSError as one line naming the option whose path it is about (the path itself, or one under it:
    ``--train.out-dir RUN: RUN/tokenizer: File exists``), or the path alone; never ``[Errno 17]``."""
    if error.filename is None:
        return str(error)
    what, path = error.strerror or str(error), Path(os.fsdecode(error.filename)).absolute()
    for typed, value in given_paths(argv):
        try:
            given = Path(value).expanduser().absolute()
        except (OSError, ValueError):
            continue
        if given == path or given in path.parents:
            shown = f"{typed} {value}" if typed != value else value
            return f"{shown}: {what}" if given == path else f"{shown}: {error.filename}: {what}"
    return f"{error.filename}: {what}"


@contextmanager
def one_line_errors(interrupted: str = "interrupted", argv: Sequence[str] | None = None):
    """Within the block: every user mistake prints one ``error:`` line and exits 2, every warning prints one
    ``warning:`` line, Ctrl-C prints ``interrupted`` and exits 130 (``Interrupted``: 128 + its signal, so 143 for SIGTERM), and the fields a line of the work names
    are flags."""
    try:
        with warnings.catch_warnings(), tyro._errors.on_parse_error(reject), log.spelled_as(spelling([], None)):
            warnings.showwarning = log.show_warning
            yield
    except USER_ERRORS as e:
        if os.environ.get("NANODD_DEBUG"):
            raise
        if e.args and isinstance(e.args[0], Message):
            text = e.args[0].render(escaped(e))
        else:
            text = os_error_line(e, sys.argv[1:] if argv is None else argv) if isinstance(e, OSError) else str(e)
        print(f"error: {' '.join(text.split())}", file=sys.stderr)  # one line, whatever the message holds
        sys.exit(2)
    except KeyboardInterrupt as e:
        print(interrupted, file=sys.stderr)
        sys.exit(128 + getattr(e, "signum", 2))


def run(
    main: Callable, args: Sequence[str] | None, *, prog: str, description: str, interrupted: str = "interrupted"
) -> None:
    """``tyro.cli(main)`` on ``args`` (default: sys.argv), options allowed after subcommands."""
    with one_line_errors(interrupted, args):
        tyro.cli(main, args=args, prog=prog, description=description, config=(tyro.conf.CascadeSubcommandArgs,))
