r"""ReMDM: remasking during ancestral sampling — Wang et al. 2025, "Remasking Discrete Diffusion Models
with Inference-Time Scaling".

Masked diffusion never revisits a revealed token.  ReMDM's reverse step lets a clean token be masked
again with probability sigma_t, and reveals masked tokens a little faster to keep every marginal
q(z_s | x0) = alpha_s onehot(x0) + (1 - alpha_s) onehot(mask) unchanged (its eq. 6):

    z_t = x0 (clean):  z_s = x0 w.p. 1 - sigma_t,   mask w.p. sigma_t
    z_t = mask:        z_s = x0 w.p. (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t),   mask otherwise,

with x0 ~ p(x0 | z_t) from the network, and 0 <= sigma_t <= sigma_max = min(1, (1 - alpha_s) / alpha_t)
so both are probabilities.  Schedules of sigma_t (its §4.1):

    cap:      sigma_t = min(eta, sigma_max)
    rescale:  sigma_t = eta * sigma_max

sigma = 0 is the ancestral step exactly, draw for draw (tested).  The last step lands on alpha_s = 1,
where sigma_max = 0, so the samples end clean.  A clean token uses the step's uniform u to decide on
remasking and a masked one uses it to decide on revealing, so no extra noise is drawn; a step that
reveals nothing needs no network call (remasking does not look at the network).  Fixed tokens of a
condition are put back after each step, so they are never remasked.  Masked-diffusion checkpoints only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from nanodd import draws
import nanodd.checks as checks
from nanodd.functional import Apply, Params
from nanodd.protocols import Diffusion, Noise
import nanodd.samplers.loop as loop

SUMMARY = "ancestral with remasking (ReMDM); masked diffusion: D3PM, MDLM"


@dataclass(frozen=True)
class Options:
    eta: float = 0.02
    """The remasking level: sigma_t = min(eta, sigma_max) (cap) or eta * sigma_max (rescale)."""
    strategy: Literal["cap", "rescale"] = "cap"
    """How eta sets sigma_t."""

    def __post_init__(self):
        checks.between("eta", self.eta, 0, 1)


def remask_prob(alpha_t: Tensor, alpha_s: Tensor, options: Options) -> Tensor:
    """sigma_t of the cap or rescale strategy.  At alpha_t = 0 (t = 1 on D3PM's and the linear schedules)
    nothing is clean, so sigma_max is 1 (0 on the last step, alpha_s = 1): the floor keeps 0/0 out."""
    sigma_max = ((1 - alpha_s) / alpha_t.clamp(min=torch.finfo(alpha_t.dtype).tiny)).clamp(max=1)
    return sigma_max.clamp(max=options.eta) if options.strategy == "cap" else options.eta * sigma_max


def step(
    apply: Apply,
    params: Params,
    diffusion: Diffusion,
    zt: Tensor,
    t: Tensor,
    s: Tensor,
    noise: Noise,
    *,
    transform: draws.Transform,
    options: Options,
    condition: Tensor | None,
) -> Tensor:
    """One ReMDM step z_t -> z_s for t, s [B] float64, noise ``u`` [B, L] and ``gumbel`` [B, L, K]."""
    mask_id, u = diffusion.process.mask_id, noise["u"]
    alpha_t, alpha_s = loop.alpha(diffusion, t)[:, None], loop.alpha(diffusion, s)[:, None]
    sigma = remask_prob(alpha_t, alpha_s, options)
    masked = zt == mask_id
    reveal = masked & (u < (alpha_s - (1 - sigma) * alpha_t) / (1 - alpha_t))
    z = torch.where(~masked & (u < sigma), mask_id, zt)
    if reveal.any():
        log_p = diffusion.process.log_p_x0(apply(params, zt, loop.network_time(diffusion, t)), zt)
        z = torch.where(reveal, draws.categorical(transform(log_p), noise["gumbel"]), z)
    return z


sample = loop.sampler(step, Options, check=lambda diffusion: loop.require_masked_x0_network(diffusion, "remdm"))
