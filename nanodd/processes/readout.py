r"""Reading a network's output: the ratios it states, for the bounds and samplers that jump with them.

An x0 network's logits are read by its process, log p(x0 | z_t) = ``Process.log_p_x0`` (the output
parameterisation: SUBS for absorbing, a softmax for uniform).  What every continuous-time bound and
ratio sampler needs is the ratios

    s_{i, y} = q_t(z_t^{i <- y}) / q_t(z_t),      log s_{i, z_t^i} = 0,

which a ratio network (SEDD, ``Diffusion.output`` "ratios") states directly and an x0 network implies:
the ratios of its x0-parameterised reverse step, mixing (6) at x = p(x0 | z_t).  SEDD's
``scale_by_sigma`` ("scaled-ratios") reads log s = logits + log(alpha_t / (1 - alpha_t)) - log N, which
makes an untrained network's ratios those of a uniform x0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import nanodd.processes.mixing as mixing
from nanodd.protocols import Diffusion


def log_ratios(diffusion: Diffusion, logits: Tensor, zt: Tensor, alpha_t: Tensor) -> Tensor:
    """log s [B, L, K] as the network states it, from logits [B, L, K], z_t [B, L] and alpha_t [B]."""
    process = diffusion.process
    if diffusion.output == "x0":
        p_x0 = process.log_p_x0(logits, zt).exp()
        pi = process.prior(zt.device, p_x0.dtype)
        return mixing.ratios(pi, p_x0, zt, alpha_t[:, None, None].to(p_x0.dtype)).clamp_min(1e-30).log()
    log_s = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if diffusion.output == "scaled-ratios":
        log_s = log_s + (torch.log(alpha_t / (1 - alpha_t)) - math.log(process.n_symbols))[:, None, None]
    return torch.where(zt[..., None] == torch.arange(process.K, device=zt.device), 0.0, log_s)
