"""Samplers, one file each: a pure ``step`` and a ``sample`` loop with an explicit generator that
returns the samples and the true number of network calls (``nanodd.protocols.Sampler``).  Every
sampler is parameterised by the model's ``Diffusion`` (process, schedule, time grid), so it serves
every method whose process it supports: ``ancestral`` needs an x0 network (D3PM, MDLM, UDLM);
``analytic`` and ``euler`` jump with the model's ratios, read from a ratio network (SEDD) or implied by
an x0 network, so they serve every checkpoint.  ``loop`` is the grid and loop they share."""

from types import ModuleType

from nanodd.protocols import Diffusion

from nanodd.samplers import analytic, ancestral, euler

SAMPLERS: dict[str, ModuleType] = {"ancestral": ancestral, "analytic": analytic, "euler": euler}
"""name -> sampler module (the name is what ``--sample.sampler`` takes)."""


def default_sampler(diffusion: Diffusion) -> str:
    """ancestral for an x0 network, analytic for a ratio network (which ancestral cannot serve)."""
    return "ancestral" if diffusion.log_ratios is None else "analytic"
