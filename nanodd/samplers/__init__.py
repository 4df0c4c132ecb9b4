"""Samplers, one file each: a pure ``step`` and a ``sample`` loop with an explicit generator that
returns the samples and the true number of network calls (``nanodd.protocols.Sampler``).  Every
sampler is parameterised by the model's ``Diffusion`` (process, schedule, time grid), so it serves
every method whose process it supports: ``ancestral`` needs an x0 network (D3PM, MDLM, UDLM);
``first_hitting``, ``confidence`` and ``remdm`` a masked-diffusion x0 network (D3PM, MDLM);
``analytic`` and ``euler`` jump with the model's ratios, read from a ratio network (SEDD) or implied by
an x0 network, so they serve every checkpoint.  A sampler with settings of its own has an ``Options``
dataclass and takes it as ``options``.  ``loop`` is the grid, conditioning and loop they share."""

from types import ModuleType

from nanodd.protocols import Diffusion

from nanodd.samplers import analytic, ancestral, confidence, euler, first_hitting, remdm

SAMPLERS: dict[str, ModuleType] = {
    "ancestral": ancestral,
    "first-hitting": first_hitting,
    "confidence": confidence,
    "remdm": remdm,
    "analytic": analytic,
    "euler": euler,
}
"""name -> sampler module (the name is what the CLI's sampler option takes)."""


def default_sampler(diffusion: Diffusion) -> str:
    """ancestral for an x0 network, analytic for a ratio network (which ancestral cannot serve)."""
    return "ancestral" if diffusion.log_ratios is None else "analytic"
