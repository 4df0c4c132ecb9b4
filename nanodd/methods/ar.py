r"""An autoregressive character model: the judge that scores generated text (gen-BPC).

The same DiT with a causal attention mask (``DiTConfig.causal``, set by ``CAUSAL`` below) reads [BOS, x_1, ..., x_{L-1}] and
predicts every next character, so

    -log p(x) = sum_{i=1}^L -log p(x_i | x_<i),        p(x_i | x_<i) = softmax(logits_i) over the N symbols,

exactly, in one call.  BOS is the id N (the absorbing process's mask id, which the output never
predicts), and the network is fed t = 0.  The loss is this NLL per token; the "bound" is the same
exact NLL (an integrand constant in t), so training, validation and ``evaluate`` report bits per
character like every other method.  ``diffusion`` only names its symbols and ids: no diffusion sampler
applies.  Text longer than the judge's length L is scored in overlapping windows (``windowed_nll``).

The judge can also write, one token per network call (``generate``): feed BOS, draw x_1 from the output,
feed x_1 with the cache of BOS's keys and values (``past=``, ``return_kv=True``), draw x_2, and so on,

    x_{i+1} ~ softmax(logits at x_i | cache of BOS, x_1, ..., x_{i-1}),      NFE = length,

the draws Gumbel-max in float64 (``nanodd.draws``).  Past ``window`` cached positions the cache slides
(``nanodd.model.extend_cache``; rotary positions keep counting), so text may be longer than L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nanodd import draws
import nanodd.checks as checks
from nanodd.functional import Apply, Params
from nanodd.model import extend_cache
from nanodd.processes.absorbing import Absorbing, log_softmax_at
from nanodd.protocols import Aux, Diffusion, Noise, Samples, Slot, identity_time
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


def windowed_nll(
    apply: Apply, params: Params, x0: Tensor, cfg: ARConfig, window: int, stride: int | None = None
) -> Tensor:
    """-log p(x0) per sequence, nats [B], for x0 [B, n] longer than the judge's length ``window`` (L): the
    first window [BOS, x_1..x_{L-1}] scores its L tokens, then each window of L tokens moved on by
    ``stride`` (default L / 2) scores its last ``stride`` tokens, so every token after the first window is
    predicted from at least L - stride tokens before it.  Each window starts with BOS, as the judge's
    training windows (cut anywhere in the corpus) do.  n <= L: ``nll`` itself (exact)."""
    B, n = x0.shape
    stride = stride or max(window // 2, 1)
    checks.require("stride", 1 <= stride <= window, f"be in 1..{window} (the window)", stride)
    if n <= window:
        return nll(apply, params, x0, cfg)
    bos = torch.full_like(x0[:, :1], cfg.process.mask_id)
    total, done = torch.zeros(B, dtype=torch.float64, device=x0.device), 0
    while done < n:
        end = min(done + stride, n) if done else window
        x = x0[:, end - window : end]
        logits = apply(params, torch.cat([bos, x[:, :-1]], 1), torch.zeros(B, device=x0.device))
        total += -log_softmax_at(logits, x, cfg.process.n_symbols)[:, window - (end - done) :].double().sum(-1)
        done = end
    return total


@torch.no_grad()
def generate(
    apply: Apply,
    params: Params,
    cfg: ARConfig,
    *,
    batch_size: int,
    length: int,
    generator: torch.Generator,
    window: int | None = None,
    cache: bool = True,
    transform: draws.Transform = draws.identity,
) -> Samples:
    """``length`` tokens from the judge, [B, length], one network call each (NFE = length).  ``window``: the
    most earlier positions a call reads (the judge's length L less one keeps every call within L; None:
    all).  ``cache``: feed only the newest token against the cached keys and values; False: recompute
    the last ``window`` tokens every call (the same tokens while the text fits the window; past it the
    cache holds keys computed with the context they had)."""
    checks.at_least("batch_size", batch_size, 1)
    checks.at_least("length", length, 1)
    if window is not None:
        checks.at_least("window", window, 1)
    B, device, N = batch_size, generator.device, cfg.process.n_symbols
    seq = torch.full((B, 1), cfg.process.mask_id, dtype=torch.long, device=device)  # BOS, then the draws
    t, past = torch.zeros(B, device=device), None
    for i in range(length):  # seq holds BOS, x_1..x_i at positions 0..i
        if cache:
            logits, kv = apply(
                params, seq[:, i:], t, positions=torch.arange(i, i + 1, device=device), past=past, return_kv=True
            )
            past = extend_cache(past, kv, window) if i + 1 < length else None
        else:
            lo = 0 if window is None else max(i - window, 0)
            logits = apply(params, seq[:, lo:], t, positions=torch.arange(lo, i + 1, device=device))
        gumbel = draws.gumbels(generator, (B, N))
        seq = torch.cat([seq, draws.categorical(transform(logits[:, -1, :N]), gumbel)[:, None]], 1)
    return Samples(seq[:, 1:], length)
