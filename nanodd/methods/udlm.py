r"""UDLM: uniform-state diffusion in continuous time — Schiff et al. 2024, "Simple Guidance Mechanisms
for Discrete Diffusion Models" (its uniform diffusion language model).

Forward process: uniform (``nanodd.processes.uniform``), each token kept with probability alpha_t
and otherwise redrawn uniformly from the N symbols, q(z_t | x0) = alpha_t onehot(x0) + (1 - alpha_t)/N.

Reverse model: x0-parameterised, p(z_s | z_t) = q(z_s | z_t, x0 = x_theta(z_t)) with the network's
softmax x_theta in place of onehot(x0) (D3PM eq. 4; ``mixing`` (3)).  In continuous time it jumps
z -> y at the rate sigma'_t / N * s_y with the ratios s_y = (alpha_t x_theta_y + c)/(alpha_t x_theta_z + c),
c = (1 - alpha_t)/N (``mixing`` (6)).

NELBO: SEDD's rate bound (``nanodd.methods.sedd`` (R)), the ELBO of any network's reverse jump rates,
here with the rates of this x0 network; it is the T -> inf limit of D3PM-uniform's bound:

    L(x0) = int_0^1 sigma'_t / N  E_{z_t} sum_i sum_{y != z_t^i} [s_y - rho_y + rho_y log(rho_y / s_y)] dt + KL(q(z_1 | x0) || 1/N),

sigma'_t = -alpha'_t / alpha_t and rho_y = q_t(y | x0^i) / q_t(z_t^i | x0^i).  Written with
xbar = N alpha_t x + 1 - alpha_t it is UDLM's closed form (their "term 1" is sum_y (s_y - rho_y), their
"term 2" the log terms).  The prior term vanishes for alpha_1 = 0 and is O(alpha_1^2) per token
otherwise (log-linear: alpha_1 = eps).  The bound is tight when x_theta(z_t)^i is the posterior of x0^i
given the *other* tokens z_t^{-i} (then s_y is the data's ratio q_t(z^{i <- y}) / q_t(z)), up to
E_{q(z_1|x0)} log(q(z_1) / pi(z_1)) = O(alpha_1^2): tested on an exact toy distribution.

Training: one t per sequence stratified over the global batch, z_t ~ q, and the loss is the integrand
/ L in nats per token.  Sampling: ancestral through the uniform reverse step (``nanodd.samplers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from nanodd import draws
from nanodd.functional import Apply, Params
from nanodd.methods.estimate import bound_loss
from nanodd.methods.sedd import RateBound
from nanodd.processes.uniform import Uniform
from nanodd.protocols import Aux, Diffusion, Noise, Slot, identity_time
from nanodd.schedules import LogLinear, Schedule


@dataclass(frozen=True)
class UDLMConfig:
    """UDLM: the continuous-time NELBO of uniform-state diffusion."""

    schedule: Schedule = field(default_factory=LogLinear)
    """alpha_t (UDLM: log-linear, alpha_t = 1 - (1 - eps) t)."""
    antithetic: bool = True
    """Stratify t over the global batch (every rank and micro-step gets its own strata); False: iid t."""
    process: Uniform = field(default_factory=Uniform)
    """The uniform process over the data symbols."""


Config = UDLMConfig


def diffusion(cfg: UDLMConfig) -> Diffusion:
    """The network is fed t in [0, 1]."""
    return Diffusion(cfg.process, cfg.schedule, None, identity_time)


def bound(cfg: UDLMConfig) -> RateBound:
    """The NELBO as an integrand over t, prior term included: SEDD's rate bound read through this x0
    network's ratios (``readout.log_ratios``)."""
    return RateBound(diffusion(cfg))


def noise(gen: torch.Generator, x0: Tensor, cfg: UDLMConfig, slot: Slot = Slot()) -> Noise:
    """t [B] in (0, 1] float64 (stratified over the global batch, or iid) and u [B, L] for z_t."""
    return {"t": draws.times(gen, x0.shape[0], slot, cfg.antithetic), **bound(cfg).noise(gen, x0)}


def loss(apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: UDLMConfig) -> tuple[Tensor, Aux]:
    """The NELBO estimate averaged over the batch, nats per token; aux ``bpt`` in bits per token."""
    return bound_loss(bound(cfg), apply, params, x0, noise)
