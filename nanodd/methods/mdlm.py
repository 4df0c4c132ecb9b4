r"""MDLM / MD4: continuous-time masked diffusion — Sahoo et al. 2024, "Simple and Effective Masked
Diffusion Language Models"; Shi et al. 2024, "Simplified and Generalized Masked Diffusion for
Discrete Data".

Forward process: absorbing (``nanodd.processes.absorbing``), each token masked independently,

    q(z_t | x0) = Cat(alpha_t onehot(x0) + (1 - alpha_t) onehot(mask)),   t in [0, 1],

with alpha_t from a schedule (``nanodd.schedules``: linear, cosine, log-linear with its eps,
polynomial).  Reverse model: the SUBS parameterisation (MDLM §3.2.3): the network's x0 logits with
the mask logit at -inf on masked tokens, clean tokens carried over (``Absorbing.log_p_x0``; the loss reads it at x0 only, ``log_p_of_x0``).

NELBO.  With the masked cross-entropy NLL(z_t) = sum_{i : z_t^i = mask} -log p(x0^i | z_t), every
masked-diffusion bound is, in nats per sequence,

    L(x0) = E_{t ~ U(0, 1]}  w(t) * E_{z_t ~ q(z_t | x0)} NLL(z_t),                              (1)

and only the weight differs:

    continuous (MDLM eq. 10, MD4 eq. 5):  w(t) = -alpha'_t / (1 - alpha_t),
    T steps (Austin et al. 2021 D3PM, eq. 1):  t is read on the grid k/T, k = ceil(t T), and
        w = T r_k,   r_k = (alpha_bar_{k-1} - alpha_bar_k) / (1 - alpha_bar_k),   alpha_bar_k = alpha(k/T),

so (1) is  L_T = sum_{k=1}^T r_k E NLL(z_{k/T})  -- the reconstruction term (k = 1, r_1 = 1) plus the
T - 1 KL terms -- and L_inf = int_0^1 w(t) E NLL dt, the limit T -> inf.  With alpha_bar_k = 1 - k/T
(the linear schedule) L_T is D3PM-absorbing's bound exactly (r_k = 1/k; ``nanodd.methods.d3pm``).
L_T >= L_inf >= -log p(x0), and L_T decreases towards L_inf as T grows.  For alpha_1 = 0 there is no
prior term; with log-linear's alpha_1 = eps the prior KL is left out, as MDLM does.  With the exact
denoiser L_inf is tight: masked diffusion is then an exact any-order autoregressive model, whatever
the schedule (tested on a toy distribution).

Training: one t per sequence, stratified over the *global* batch (``antithetic``: every rank and
accumulation micro-step owns its strata, ``draws.stratified_times``), z_t ~ q, and the loss is
w(t) * masked CE / L, the single-sample bound estimate itself, in nats per token.  By default z_t is
drawn given at least one mask and the term weighted by that event's probability 1 - alpha_t^L
(``nanodd.methods.estimate``): the same expectation, but a finite variance where the plain draw's
diverges (w ~ 1/t while a mask has probability ~ L t).  The network is
fed t itself, or nothing with ``time_conditioning=False`` (a time-agnostic denoiser, as the
exact one is).  Sampling is ancestral on any grid (``nanodd.samplers.ancestral``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from nanodd import draws
import nanodd.checks as checks
from nanodd.functional import Apply, Params
from nanodd.methods.estimate import bound_loss, corrupt_some
from nanodd.processes.absorbing import Absorbing, reveal_prob
from nanodd.protocols import Aux, Diffusion, Noise, Slot, TimeInput, identity_time
from nanodd.schedules import Linear, LogLinear, Schedule, discretize


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


def masked_weight(schedule: Schedule, T: int | None, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(t read on the grid, alpha there, w) of (1) for t in (0, 1] float64 [B]: continuous if T is None."""
    if T is None:
        alpha_t, dalpha_t = schedule(t)
        return t, alpha_t, -dalpha_t / (1 - alpha_t)
    k = torch.ceil(t * T).long().clamp(1, T)
    alpha_bar = discretize(schedule, T).to(t.device)
    return k.double() / T, alpha_bar[k], T * reveal_prob(alpha_bar[k], alpha_bar[k - 1])


@dataclass(frozen=True)
class MaskedBound:
    """The bound (1) of absorbing diffusion: ``T`` steps of ``schedule``, or L_inf when ``T`` is None.

    ``time_input`` maps t (on the bound's grid) to what the network was trained on: t T for D3PM (the
    integer step k when the bound's T is the model's), the identity for a continuous-time model.
    ``at_least_one_mask`` draws z_t conditioned on a mask (``estimate.corrupt_some``); False draws it
    plainly from q, as the papers' training losses do (unbiased as well, but with a variance that
    diverges logarithmically as t -> 0).
    """

    process: Absorbing
    schedule: Schedule = Linear()
    T: int | None = None
    time_input: TimeInput = identity_time
    at_least_one_mask: bool = True

    def noise(self, gen: torch.Generator, x0: Tensor) -> Noise:
        """u [B, L] decides the masks; v [B] draws how many there are (``corrupt_some``)."""
        return {"u": draws.uniforms(gen, x0.shape), "v": draws.uniforms(gen, x0.shape[:1])}

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        """w(t) * NLL(z_t) (* P(some mask)) per sequence, nats [B]: an unbiased single-(t, z_t) estimate of (1)."""
        t_k, alpha_t, w = masked_weight(self.schedule, self.T, t)
        if self.at_least_one_mask:
            zt, p_some = corrupt_some(self.process, x0, alpha_t, noise["u"], noise["v"], noise["u"])
            w = w * p_some
        else:
            zt = self.process.corrupt(x0, alpha_t[:, None].to(noise["u"].dtype), noise["u"])
        logits = apply(params, zt, self.time_input(t_k).float())
        nll = -self.process.log_p_of_x0(logits, zt, x0).sum(-1)  # the masked CE: clean tokens add 0
        return w.to(nll.dtype) * nll


def diffusion(cfg: MDLMConfig) -> Diffusion:
    """The network is fed t in [0, 1]."""
    return Diffusion(cfg.process, cfg.schedule, cfg.T, identity_time)


def bound(cfg: MDLMConfig) -> MaskedBound:
    """The NELBO as an integrand over t (L_inf, or L_T when ``cfg.T`` is set)."""
    return MaskedBound(cfg.process, cfg.schedule, cfg.T, identity_time, cfg.at_least_one_mask)


def noise(gen: torch.Generator, x0: Tensor, cfg: MDLMConfig, slot: Slot = Slot()) -> Noise:
    """t [B] in (0, 1] float64 (stratified over the global batch, or iid) and the integrand's z_t draws."""
    return {"t": draws.times(gen, x0.shape[0], slot, cfg.antithetic), **bound(cfg).noise(gen, x0)}


def loss(apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: MDLMConfig) -> tuple[Tensor, Aux]:
    """The NELBO estimate w(t) * masked CE, averaged over the batch, in nats per token; aux ``bpt`` is
    the same in bits per token.  Per sequence it is ``bound(cfg)``, the integrand evaluation uses."""
    return bound_loss(bound(cfg), apply, params, x0, noise)
