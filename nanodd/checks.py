"""Field checks for config and options dataclasses: each class checks its own fields in
``__post_init__``, naming each field as Python spells it (``eps``, ``d_model``)::

    @dataclass(frozen=True)
    class Options:
        eta: float = 0.02

        def __post_init__(self):
            checks.between("eta", self.eta, 0, 1)   # FieldError: eta must be in [0, 1], got 2.0

A refusal is a ``FieldError`` (a ``ValueError``) whose message is a ``Message``: text in which every
field it names is a ``Field``.  ``str(e)`` names the fields as Python does; whoever knows where the
dataclass sits renders them its own way: the CLI (``experiments/cli.py``) knows the prefix under
which tyro built it, and names the flag the user typed (the same schedule is ``method.schedule`` in
a training config and ``extra.schedule`` in ``experiments.compose``).  A rule may name other fields
of the same dataclass (``checks.Field("n_heads")``), and code that holds a whole config may name a
path in it (``Field("train.lr")``) or a setting of one (``Field("train.device", "cpu")``).
``within`` moves a message one dataclass up (``eps`` -> ``schedule.eps``).

Every numeric check also refuses nan and +-inf (a comparison with nan is False, so nan would slip
through ``x >= 1`` written the other way round).
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from typing import Callable, Iterator

UNSET = object()
"""A ``Field`` that names the field only, not a setting of it."""


@dataclasses.dataclass(frozen=True)
class Field:
    """A field named in a message: ``name`` as Python spells it, relative to the dataclass that speaks
    (``eps``; ``train.lr`` from a whole config); with ``value``, a setting of it."""

    name: str
    value: object = UNSET

    def __str__(self) -> str:
        return self.name if self.value is UNSET else f"{self.name}={self.value!r}"


class Message(str):
    """Text naming fields.  As a ``str`` it reads with Python's names (``eps must be in (0, 1), got 2``);
    ``render(spell)`` writes each ``Field`` as ``spell(field)`` instead."""

    parts: tuple[str | Field, ...]

    def __new__(cls, *parts: str | Field) -> Message:
        flat = tuple(q for p in parts for q in (p.parts if isinstance(p, Message) else (p,)))
        self = super().__new__(cls, "".join(map(str, flat)))
        self.parts = flat
        return self

    def render(self, spell: Callable[[Field], str]) -> str:
        return "".join(spell(p) if isinstance(p, Field) else p for p in self.parts)

    def within(self, prefix: str) -> Message:
        """The same text seen from the dataclass that holds this one as its field ``prefix``."""
        return Message(*(Field(f"{prefix}.{p.name}", p.value) if isinstance(p, Field) else p for p in self.parts))


class FieldError(ValueError):
    """A value a dataclass refuses.  ``args[0]`` is the ``Message``; ``field`` the field it is about."""

    def __init__(self, *parts: str | Field):
        super().__init__(Message(*parts))

    @property
    def message(self) -> Message:
        return self.args[0]

    @property
    def field(self) -> str:
        return next(p.name for p in self.message.parts if isinstance(p, Field))

    def within(self, prefix: str) -> FieldError:
        return FieldError(self.message.within(prefix))


@contextmanager
def within(prefix: str) -> Iterator[None]:
    """Re-raise a ``FieldError`` from the block as seen from one dataclass up: ``with within("train"):
    setup(cfg.train.device)`` turns ``device`` into ``train.device``."""
    try:
        yield
    except FieldError as e:
        raise e.within(prefix).with_traceback(e.__traceback__) from None


def require(field: str, ok: bool, rule: str | tuple[str | Field, ...], value) -> None:
    """Raise ``FieldError("<field> must <rule>, got <value>")`` unless ``ok``; a tuple ``rule`` may name
    other fields (``("split into ", Field("n_heads"), " 4 heads")``)."""
    if not ok:
        raise FieldError(Field(field), " must ", *(rule if isinstance(rule, tuple) else (rule,)), f", got {value!r}")


def at_least(field: str, value: float, low: float) -> None:
    """A finite value >= low (ints: ``at_least("batch_size", b, 1)``)."""
    require(field, math.isfinite(value) and value >= low, f"be >= {low}", value)


def positive(field: str, value: float) -> None:
    """A finite value > 0."""
    require(field, math.isfinite(value) and value > 0, "be > 0", value)


def between(field: str, value: float, low: float, high: float, *, open_high: bool = False) -> None:
    """A finite value in [low, high] (or [low, high) with ``open_high``)."""
    ok = math.isfinite(value) and low <= value and (value < high if open_high else value <= high)
    require(field, ok, f"be in [{low}, {high}{')' if open_high else ']'}", value)


def seed(field: str, value: int) -> None:
    """A seed a torch.Generator takes: in [0, 2^63 - 1]."""
    between(field, value, 0, 2**63 - 1)


def named(field: str, value: str | None) -> None:
    """A path or name: not the empty string (None, where allowed, means the default)."""
    require(field, value is None or value.strip() != "", "not be empty", value)
