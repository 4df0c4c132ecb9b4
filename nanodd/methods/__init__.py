"""Diffusion methods (objectives), one file each, in one registry.

A method is a module satisfying ``nanodd.protocols.Method``: its ``Config`` dataclass and
``diffusion``, ``noise``, ``loss`` and ``bound``.  Adding one is its file plus one ``register`` line
below; research code can ``register`` a method of its own at run time.  ``nanodd.config`` builds the
union of ``Config.method`` from ``METHODS`` and the shell finds a config's functions with ``method_of``,
so neither ever names a method.
"""

from __future__ import annotations

from types import ModuleType

from nanodd.methods import ar, bd3lm, d3pm, mdlm, sedd, udlm
from nanodd.protocols import Method, mismatches

METHODS: dict[str, ModuleType] = {}
"""name -> method module, in registration order (the name is the CLI's ``method:<name>``)."""


def register(name: str, method: ModuleType) -> None:
    """Add a method module under ``name``; refuse one that does not satisfy the Method protocol."""
    if problems := mismatches(method, Method):
        raise TypeError(
            f"method {name!r} ({method.__name__}) does not satisfy nanodd.protocols.Method: " + "; ".join(problems)
        )
    METHODS[name] = method


def method_of(cfg) -> ModuleType:
    """The registered method module whose ``Config`` ``cfg`` is an instance of."""
    for method in METHODS.values():
        if type(cfg) is method.Config:
            return method
    raise TypeError(
        f"{type(cfg).__name__} is not the config of a registered method "
        f"({', '.join(METHODS)}); add it with nanodd.methods.register"
    )


register("d3pm", d3pm)
register("mdlm", mdlm)
register("sedd", sedd)
register("udlm", udlm)
register("ar", ar)
register("bd3lm", bd3lm)
