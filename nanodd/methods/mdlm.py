r"""MDLM / MD4: continuous-time masked diffusion — Sahoo et al. 2024, "Simple and Effective Masked
Diffusion Language Models"; Shi et al. 2024, "Simplified and Generalized Masked Diffusion for
Discrete Data".

Forward process: absorbing (``nanodd.processes.absorbing``), each token masked independently,

    q(z_t | x0) = Cat(alpha_t onehot(x0) + (1 - alpha_t) onehot(mask)),   t in [0, 1],

with alpha_t from a schedule (``nanodd.schedules``: linear, cosine, log-linear with its eps,
polynomial).  Reverse model: the SUBS parameterisation (MDLM §3.2.3): the network's x0 logits with
the mask logit at -inf on masked tokens, clean tokens carried over (``Absorbing.log_p_x0``).

NELBO in continuous time (MDLM eq. 10, MD4 eq. 5), nats per sequence:

    L_inf(x0) = int_0^1  -alpha'_t / (1 - alpha_t)  E_{z_t ~ q(z_t|x0)} [ sum_{i: z_t^i = mask} -log p(x0^i | z_t) ] dt,

the limit T -> inf of the T-step bound.  For alpha_1 = 0 it bounds -log p(x0) with no prior term;
with log-linear's alpha_1 = eps the prior KL is left out, as MDLM does (``nanodd.bounds``).  With the
exact denoiser the bound is tight: masked diffusion is then an exact any-order autoregressive model,
whatever the schedule (tested on a toy distribution).  The discrete-T variant (``T``) reads t on the
grid k/T with weight T r_k, r_k = (alpha_{(k-1)/T} - alpha_{k/T}) / (1 - alpha_{k/T}) (D3PM's bound
for the linear schedule).

Training: one t per sequence, stratified over the *global* batch (``antithetic``: every rank and
accumulation micro-step owns its strata, ``sampling.stratified_times``), z_t ~ q, and the loss is
w(t) * masked CE / L, the single-sample bound estimate itself, in nats per token.  By default z_t is
drawn given at least one mask and the term weighted by that event's probability 1 - alpha_t^L
(``nanodd.bounds``): the same expectation, but a finite variance where the plain draw's diverges
(w ~ 1/t while a mask has probability ~ L t).  The network is
fed t itself, or nothing with ``time_conditioning=False`` (a time-agnostic denoiser, as the
exact one is).  Sampling is ancestral on any grid (``nanodd.samplers.ancestral``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from nanodd import sampling
import nanodd.checks as checks
from nanodd.bounds import MaskedBound, bound_loss, identity_time
from nanodd.functional import Apply, Params
from nanodd.processes.absorbing import Absorbing
from nanodd.protocols import Aux, Diffusion, Noise, Slot
from nanodd.schedules import LogLinear, Schedule


@dataclass(frozen=True)
class MDLMConfig:
    """MDLM / MD4: the continuous-time masked-diffusion NELBO (or its T-step form)."""

    schedule: Schedule = field(default_factory=LogLinear)
    """alpha_t: linear, cosine, log-linear (MDLM's, with eps) or polynomial (MD4's family)."""
    T: int | None = None
    """None: the continuous-time NELBO.  An integer: the T-step bound through the same weight."""
    antithetic: bool = True
    """Stratify t over the global batch (every rank and micro-step gets its own strata); False: iid t."""
    at_least_one_mask: bool = True
    """Draw z_t given at least one mask, times its probability (unbiased, finite variance as t -> 0);
    False: the papers' plain draw, whose variance diverges logarithmically there."""
    process: Absorbing = field(default_factory=Absorbing)
    """The absorbing process: its data symbols (the mask is one more id)."""

    def __post_init__(self):
        if self.T is not None:  # None: continuous time
            checks.at_least("T", self.T, 1)


Config = MDLMConfig


def diffusion(cfg: MDLMConfig) -> Diffusion:
    """The network is fed t in [0, 1]."""
    return Diffusion(cfg.process, cfg.schedule, cfg.T, identity_time)


def bound(cfg: MDLMConfig) -> MaskedBound:
    """The NELBO as an integrand over t (L_inf, or L_T when ``cfg.T`` is set)."""
    return MaskedBound(cfg.process, cfg.schedule, cfg.T, identity_time, cfg.at_least_one_mask)


def noise(gen: torch.Generator, x0: Tensor, cfg: MDLMConfig, slot: Slot = Slot()) -> Noise:
    """t [B] in (0, 1] float64 (stratified over the global batch, or iid) and the integrand's z_t draws."""
    return {"t": sampling.times(gen, x0.shape[0], slot, cfg.antithetic), **bound(cfg).noise(gen, x0)}


def loss(apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: MDLMConfig) -> tuple[Tensor, Aux]:
    """The NELBO estimate w(t) * masked CE, averaged over the batch, in nats per token; aux ``bpt`` is
    the same in bits per token.  Per sequence it is ``bound(cfg)``, the integrand evaluation uses."""
    return bound_loss(bound(cfg), apply, params, x0, noise)
