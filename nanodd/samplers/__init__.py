"""Samplers, one file each, in one registry.

A sampler satisfies ``nanodd.protocols.Sampler``: its ``Options`` dataclass (empty when it has no
settings), a ``SUMMARY`` for the CLI's help, and ``sample`` with the signature every sampler shares,
which ``loop.sampler`` writes once around the sampler's pure ``step``: the grid, conditioning, the
explicit generator and the true NFE count are the loop's, so a sampler file is its step, its options
and what makes it different.  (``first_hitting`` draws its reveal times instead of walking a grid:
the one sampler with a loop of its own, with the same signature.)  Every sampler is parameterised by
the model's ``Diffusion`` (process, schedule, time grid), so it serves every method whose process it
supports: ``ancestral`` needs an x0 network (D3PM, MDLM, UDLM); ``first_hitting``, ``confidence`` and
``remdm`` a masked-diffusion x0 network (D3PM, MDLM); ``analytic`` and ``euler`` jump with the model's
ratios, read from a ratio network (SEDD) or implied by an x0 network, so they serve every checkpoint;
``block`` writes block by block with one of the masked samplers inside (BD3-LM with its key/value cache,
or semi-autoregressive decoding of D3PM and MDLM).

Adding one is its file plus one ``register`` line below; research code can ``register`` a sampler of
its own at run time, and the CLI (the sampler's name and each sampler's options) is built from
``SAMPLERS`` when it parses.
"""

from __future__ import annotations

from nanodd.protocols import Diffusion, Sampler, mismatches
from nanodd.samplers import analytic, ancestral, block, confidence, euler, first_hitting, remdm

SAMPLERS: dict[str, Sampler] = {}
"""name -> sampler, in registration order (the name is what the CLI's sampler option takes)."""


def register(name: str, sampler: Sampler) -> None:
    """Add a sampler under ``name``; refuse one that does not satisfy the Sampler protocol."""
    if problems := mismatches(sampler, Sampler):
        raise TypeError(
            f"sampler {name!r} ({getattr(sampler, '__name__', type(sampler).__name__)}) does not satisfy "
            "nanodd.protocols.Sampler: " + "; ".join(problems)
        )
    SAMPLERS[name] = sampler


def default_sampler(diffusion: Diffusion) -> str:
    """block for a block-diffusion network, ancestral for an x0 network, analytic for a ratio network
    (which ancestral cannot serve)."""
    if diffusion.block_size is not None:
        return "block"
    return "ancestral" if diffusion.output == "x0" else "analytic"


register("ancestral", ancestral)
register("first-hitting", first_hitting)
register("confidence", confidence)
register("remdm", remdm)
register("analytic", analytic)
register("euler", euler)
register("block", block)
