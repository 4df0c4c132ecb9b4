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
w(t) * masked CE / L, the single-sample bound estimate itself, in nats per token.  The network is
fed t itself, or nothing with ``--model.no-time-conditioning`` (a time-agnostic denoiser, as the
exact one is).  Sampling is ancestral on any grid (``nanodd.samplers.ancestral``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nanodd import sampling
from nanodd.bounds import MaskedBound, identity_time, masked_weight
from nanodd.functional import Apply, Params
from nanodd.processes.absorbing import Absorbing, masked_nll
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
    process: Absorbing = field(default_factory=Absorbing)
    """The absorbing process: its data symbols (the mask is one more id)."""

    def __post_init__(self):
        if self.T is not None and self.T < 1:
            raise ValueError(f"--method.T must be positive (or None for continuous time), got {self.T}")


Config = MDLMConfig


class MDLMAux(Aux):
    ce: Tensor
    """The unweighted masked cross-entropy per token, nats."""


def diffusion(cfg: MDLMConfig) -> Diffusion:
    """The network is fed t in [0, 1]."""
    return Diffusion(cfg.process, cfg.schedule, cfg.T, identity_time)


def noise(gen: torch.Generator, x0: Tensor, cfg: MDLMConfig, slot: Slot = Slot()) -> Noise:
    """t [B] in (0, 1] float64 (stratified over the global batch, or iid), u [B, L] for the masks."""
    B, L = x0.shape
    t = sampling.stratified_times(gen, B, slot) if cfg.antithetic else 1 - sampling.uniforms(gen, (B,)).double()
    return {"t": t, "u": sampling.uniforms(gen, (B, L))}


def nelbo_terms(apply: Apply, params: Params, x0: Tensor, t: Tensor, u: Tensor, *, cfg: MDLMConfig
                ) -> tuple[Tensor, Tensor]:
    """(w(t) * masked NLL, masked NLL) per sequence in nats, each [B], for x0 [B, L], t [B] in (0, 1]
    float64 and u [B, L]: an unbiased single-sample estimate of the NELBO of each x0, and its CE."""
    t_k, alpha_t, w = masked_weight(cfg.schedule, cfg.T, t)
    zt = cfg.process.corrupt(x0, alpha_t[:, None].to(u.dtype), u)
    nll = masked_nll(cfg.process.log_p_x0(apply(params, zt, t_k.float()), zt), x0)
    return w.to(nll.dtype) * nll, nll


def loss(apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: MDLMConfig) -> tuple[Tensor, MDLMAux]:
    """The NELBO estimate averaged over the batch, nats per token.

    aux: ``bpt`` (the same estimate in bits per token) and ``ce`` (the unweighted masked
    cross-entropy, nats per token, as D3PM's).
    """
    nelbo, nll = nelbo_terms(apply, params, x0, noise["t"], noise["u"], cfg=cfg)
    L = x0.shape[1]
    return nelbo.mean() / L, MDLMAux(bpt=nelbo.mean() / (L * math.log(2)), ce=nll.mean() / L)


def bound(cfg: MDLMConfig) -> MaskedBound:
    """The NELBO as an integrand over t (L_inf, or L_T when ``cfg.T`` is set)."""
    return MaskedBound(cfg.process, cfg.schedule, cfg.T, identity_time)
