"""Diffusion methods, one file each: ``loss_noise``, ``loss``, ``step`` and ``sample`` per method.

``module_for(cfg)`` finds a method's functions from its config type, so the trainer and the CLI
never branch on the method.
"""

from types import ModuleType

from nanodd.methods import d3pm

MODULES: dict[type, ModuleType] = {d3pm.D3PMConfig: d3pm}


def module_for(cfg) -> ModuleType:
    """The method module whose config class ``cfg`` is an instance of."""
    return MODULES[type(cfg)]
