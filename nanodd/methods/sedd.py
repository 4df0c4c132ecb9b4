r"""SEDD: score entropy discrete diffusion — Lou et al. 2024, "Discrete Diffusion Modeling by
Estimating the Ratios of the Data Distribution".

Forward process: a continuous-time Markov chain on each token with rates sigma'_t Q, here the
absorbing graph (``nanodd.processes.absorbing``, Q = e_mask 1^T - I) or the uniform one
(``nanodd.processes.uniform``, Q = 1 1^T / N - I); alpha_t = exp(-sigma_t) with the geometric
(sigma_min^(1-t) sigma_max^t) or log-linear (sigma_t = -log(1 - (1 - eps) t)) noise.

Network output: not x0 logits but the concrete score, the ratios of the noisy data distribution
between z_t and each of its neighbours (SEDD §3):

    s_theta(z_t, t)_{i, y}  ~  q_t(z_t^{i <- y}) / q_t(z_t),    read as  log s = logits (+ log(alpha_t / (1 - alpha_t)) - log N),

the bracket being SEDD's ``scale_by_sigma`` for the absorbing graph (it makes an untrained network's
ratios those of a uniform x0), and log s = 0 at y = z_t^i.  The network is fed sigma_t.

Loss: the diffusion-weighted denoising score entropy (SEDD eq. 9 and Thm. 3.6; ``nanodd.bounds``
(R)), an upper bound on -log p(x0) with the prior term:

    L(x0) = int_0^1 sigma'_t E_{z_t ~ q} sum_i sum_{y != z_t^i} Q(y, z_t^i) [ s_{i,y} - rho_y log s_{i,y} + K(rho_y) ] dt + KL(q(z_1 | x0) || pi),

with rho_y = q_t(y | x0^i) / q_t(z_t^i | x0^i) and K(a) = a (log a - 1) (which makes each term >= 0).
With the exact ratios it equals -log p(x0) once q(z_1 | x0) is the prior: the absorbing graph leaves
out alpha_1 ~ exp(-sigma_max) of mass and the t -> 0 end sigma_min of it, a residual of at most
(sigma_min + exp(-sigma_max)) sum_i -log p(x0^i | ...) nats; the uniform graph's is O(alpha_1^2)
(tested on an exact toy distribution).

Training: one t per sequence stratified over the global batch, z_t ~ q, the loss is the bound's
integrand / L in nats per token.  Sampling: Euler (tau-leaping) or the analytic (Tweedie) step
(``nanodd.samplers``), which jump with these ratios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nanodd import sampling
from nanodd.bounds import RateBound, bound_loss
from nanodd.functional import Apply, Params
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.uniform import Uniform
from nanodd.protocols import Aux, Diffusion, Noise, Slot
from nanodd.schedules import LogLinear, Schedule


@dataclass(frozen=True)
class SEDDConfig:
    """SEDD: the network estimates ratios, trained with the diffusion-weighted score entropy."""

    process: Absorbing | Uniform = field(default_factory=Absorbing)
    """The graph: absorbing or uniform."""
    schedule: Schedule = field(default_factory=LogLinear)
    """alpha_t = exp(-sigma_t): geometric (SEDD's sigma_min -> sigma_max) or log-linear."""
    scale_by_sigma: bool = True
    """Read log ratios as logits + log(alpha_t / (1 - alpha_t)) - log N (SEDD's choice for the absorbing
    graph); False: the logits themselves (its choice for the uniform graph)."""
    antithetic: bool = True
    """Stratify t over the global batch (every rank and micro-step gets its own strata); False: iid t."""


Config = SEDDConfig


def log_ratios(cfg: SEDDConfig):
    """The output parameterisation: (logits [B, L, K], z_t [B, L], alpha_t [B]) -> log s [B, L, K]."""

    def read(logits: Tensor, zt: Tensor, alpha_t: Tensor) -> Tensor:
        log_s = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if cfg.scale_by_sigma:
            log_s = log_s + (torch.log(alpha_t / (1 - alpha_t)) - math.log(cfg.process.n_symbols))[:, None, None]
        return torch.where(zt[..., None] == torch.arange(cfg.process.K, device=zt.device), 0.0, log_s)

    return read


def diffusion(cfg: SEDDConfig) -> Diffusion:
    """A ratio network, fed sigma_t = -log alpha_t."""
    return Diffusion(cfg.process, cfg.schedule, None, lambda t: -torch.log(cfg.schedule(t)[0]), log_ratios(cfg))


def bound(cfg: SEDDConfig) -> RateBound:
    """The score-entropy bound as an integrand over t, prior term included."""
    return RateBound(diffusion(cfg))


def noise(gen: torch.Generator, x0: Tensor, cfg: SEDDConfig, slot: Slot = Slot()) -> Noise:
    """t [B] in (0, 1] float64 (stratified over the global batch, or iid) and u [B, L] for z_t."""
    return {"t": sampling.times(gen, x0.shape[0], slot, cfg.antithetic), **bound(cfg).noise(gen, x0)}


def loss(apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: SEDDConfig) -> tuple[Tensor, Aux]:
    """The score-entropy bound averaged over the batch, nats per token; aux ``bpt`` in bits per token."""
    return bound_loss(bound(cfg), apply, params, x0, noise)
