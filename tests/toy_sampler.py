"""A sampler defined outside nanodd, for the seam test: masked tokens revealed left to right."""

from dataclasses import dataclass

import torch

from nanodd import draws
import nanodd.samplers.loop as loop

SUMMARY = "left to right, a few tokens per step; masked diffusion"


@dataclass(frozen=True)
class Options:
    per_step: int = 1
    """Masked tokens revealed per step, the leftmost ones."""


def step(apply, params, diffusion, zt, t, s, noise, *, transform, options, condition):
    masked = zt == diffusion.process.mask_id
    reveal = masked & (masked.cumsum(-1) <= options.per_step)
    if not reveal.any():
        return zt
    log_p = diffusion.process.log_p_x0(apply(params, zt, loop.network_time(diffusion, t)), zt)
    return torch.where(reveal, draws.categorical(transform(log_p), noise["gumbel"]), zt)


sample = loop.sampler(step, Options)
