"""Samplers, one file each: a pure ``step`` and a ``sample`` loop with an explicit generator that
returns the samples and the true number of network calls (``nanodd.protocols.Sampler``).  Every
sampler is parameterised by the model's ``Diffusion`` (process, schedule, time grid), so it serves
every method whose process it supports."""

from types import ModuleType

from nanodd.samplers import ancestral

SAMPLERS: dict[str, ModuleType] = {"ancestral": ancestral}
"""name -> sampler module (the name is what ``--sample.sampler`` takes)."""
