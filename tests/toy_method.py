"""A method defined outside nanodd, for the seam test: BERT-style masked LM at one masking rate."""

import math
from dataclasses import dataclass, field

import torch

from nanodd import draws
from nanodd.methods.mdlm import MaskedBound
from nanodd.processes.absorbing import Absorbing
from nanodd.protocols import Aux, Diffusion, Slot, identity_time
from nanodd.schedules import Linear


@dataclass(frozen=True)
class ToyConfig:
    rate: float = 0.5
    process: Absorbing = field(default_factory=Absorbing)


Config = ToyConfig
diffusion = lambda cfg: Diffusion(cfg.process, Linear(), None, identity_time)  # noqa: E731
bound = lambda cfg: MaskedBound(cfg.process, Linear())  # noqa: E731
noise = lambda gen, x0, cfg, slot=Slot(): {"u": draws.uniforms(gen, x0.shape)}  # noqa: E731


def loss(apply, params, x0, noise, *, cfg):
    zt = cfg.process.corrupt(x0, torch.tensor(1 - cfg.rate), noise["u"])
    ce = -cfg.process.log_p_of_x0(apply(params, zt, torch.full(x0.shape[:1], cfg.rate)), zt, x0).sum(-1)
    return ce.mean() / x0.shape[1], Aux(bpt=ce.mean() / (x0.shape[1] * math.log(2)))
