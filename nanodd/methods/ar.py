r"""An autoregressive character model: the judge that scores generated text (gen-BPC).

The same DiT with a causal attention mask (``DiTConfig.causal``, set by ``CAUSAL`` below) reads [BOS, x_1, ..., x_{L-1}] and
predicts every next character, so

    -log p(x) = sum_{i=1}^L -log p(x_i | x_<i),        p(x_i | x_<i) = softmax(logits_i) over the N symbols,

exactly, in one call.  BOS is the id N (the absorbing process's mask id, which the output never
predicts), and the network is fed t = 0.  The loss is this NLL per token; the "bound" is the same
exact NLL (an integrand constant in t), so training, validation and ``evaluate`` report bits per
character like every other method.  A judge scores text; it does not sample (``diffusion`` only
names its symbols and ids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nanodd.functional import Apply, Params
from nanodd.processes.absorbing import Absorbing, log_softmax_at
from nanodd.protocols import Aux, Diffusion, Noise, Slot, identity_time
from nanodd.schedules import Linear


CAUSAL = True
"""The network this method trains attends causally (``nanodd.config.network_config`` sets it)."""


@dataclass(frozen=True)
class ARConfig:
    """Next-character prediction with a causal DiT (the network is made causal for this method)."""

    process: Absorbing = field(default_factory=Absorbing)
    """Only its symbols and ids: the data symbols, and the extra id used as BOS."""


Config = ARConfig


def diffusion(cfg: ARConfig) -> Diffusion:
    """No diffusion: the ids (N symbols + BOS) for the network; samplers do not apply."""
    return Diffusion(cfg.process, Linear(), None, identity_time)


def nll(apply: Apply, params: Params, x0: Tensor, cfg: ARConfig) -> Tensor:
    """-log p(x0) per sequence, nats [B] (fp32 or wider), for x0 [B, L]."""
    bos = torch.full_like(x0[:, :1], cfg.process.mask_id)
    logits = apply(params, torch.cat([bos, x0[:, :-1]], 1), torch.zeros(x0.shape[0], device=x0.device))
    return -log_softmax_at(logits, x0, cfg.process.n_symbols).sum(-1)


@dataclass(frozen=True)
class ExactNLL:
    """The AR model's exact -log p(x0) as an integrand over t (constant in t): nats per sequence."""

    cfg: ARConfig
    T: None = None

    def noise(self, gen: torch.Generator, x0: Tensor) -> Noise:
        return {}

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        return nll(apply, params, x0, self.cfg).double()


def bound(cfg: ARConfig) -> ExactNLL:
    return ExactNLL(cfg)


def noise(gen: torch.Generator, x0: Tensor, cfg: ARConfig, slot: Slot = Slot()) -> Noise:
    """Nothing is random in the AR loss."""
    return {}


def loss(apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: ARConfig) -> tuple[Tensor, Aux]:
    """The NLL averaged over the batch, nats per token; aux ``bpt`` in bits per token (exact)."""
    per_token = nll(apply, params, x0, cfg).mean() / x0.shape[1]
    return per_token, Aux(bpt=per_token / math.log(2))
