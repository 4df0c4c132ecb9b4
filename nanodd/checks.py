"""Field checks for config and options dataclasses: each class checks its own fields in
``__post_init__``, naming each field as the command line spells it, so the library and the CLI say
the same one line::

    @dataclass(frozen=True)
    class Options:
        eta: float = 0.02

        def __post_init__(self):
            checks.between("--sample.remdm.eta", self.eta, 0, 1)   # ValueError: --sample.remdm.eta must
                                                                   # be in [0, 1], got 2.0

Every numeric check also refuses nan and +-inf (a comparison with nan is False, so nan would slip
through ``x >= 1`` written the other way round).  The CLI (``experiments/cli.py``) prints the
ValueError as ``error: <message>`` and exits with code 2.
"""

from __future__ import annotations

import math


def require(option: str, ok: bool, rule: str, value) -> None:
    """Raise ``ValueError("<option> must <rule>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{option} must {rule}, got {value!r}")


def at_least(option: str, value: float, low: float) -> None:
    """A finite value >= low (ints: ``at_least("--train.batch-size", b, 1)``)."""
    require(option, math.isfinite(value) and value >= low, f"be >= {low}", value)


def positive(option: str, value: float) -> None:
    """A finite value > 0."""
    require(option, math.isfinite(value) and value > 0, "be > 0", value)


def between(option: str, value: float, low: float, high: float, *, open_high: bool = False) -> None:
    """A finite value in [low, high] (or [low, high) with ``open_high``)."""
    ok = math.isfinite(value) and low <= value and (value < high if open_high else value <= high)
    require(option, ok, f"be in [{low}, {high}{')' if open_high else ']'}", value)


def seed(option: str, value: int) -> None:
    """A seed a torch.Generator takes: in [0, 2^63 - 1]."""
    between(option, value, 0, 2**63 - 1)


def named(option: str, value: str | None) -> None:
    """A path or name: not the empty string (None, where allowed, means the default)."""
    require(option, value is None or value.strip() != "", "not be empty", value)
