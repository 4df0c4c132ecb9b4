r"""Confidence-ordered unmasking (MaskGIT: Chang et al. 2022, "MaskGIT: Masked Generative Image
Transformer"; the margin rule as in Kim et al. 2025, "Train for the Worst, Plan for the Best").

Each of ``steps`` steps (default: L) calls the network once, draws a candidate x0^i ~ transform(p(x0^i | z_t)) at
every masked position (Gumbel-max), and reveals the k positions whose candidates it is most sure of:

    probability rule:  c_i = p(x0^i = candidate | z_t)
    margin rule:       c_i = p(top-1) - p(top-2)   (the gap between the two most likely symbols)

k follows a schedule of the fraction still masked after step j of n, gamma(j / n) over the N free
positions: cosine gamma(r) = cos(pi r / 2) (MaskGIT's), or linear 1 - r; at least one position per
step while any is masked, and none left after the last.  Not a sample of the model's distribution
(the order is chosen by the network, not by chance), but deterministic given its noise.  The
network is fed the time whose alpha_t is the fraction of clean tokens.  Masked-diffusion checkpoints only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from nanodd import draws
from nanodd.functional import Apply, Params
from nanodd.protocols import Diffusion, Noise
import nanodd.samplers.loop as loop
from nanodd.schedules import time_of

SUMMARY = "MaskGIT's confidence-ordered unmasking; masked diffusion: D3PM, MDLM"


@dataclass(frozen=True)
class Options:
    rule: Literal["probability", "margin"] = "probability"
    """Confidence of a candidate: its probability, or the top-1 minus top-2 probability margin."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """Fraction of the free positions still masked after step j of n: cos(pi j / 2n), or 1 - j/n."""


def still_masked(n_free: Tensor, s: Tensor, schedule: str) -> Tensor:
    """How many positions stay masked after the step that ends at time s [B] (s = 1 - j/n): [B] long."""
    r = 1 - s
    gamma = torch.cos(0.5 * math.pi * r) if schedule == "cosine" else 1 - r
    return torch.where(s == 0, 0, torch.floor(n_free * gamma + 1e-9)).long()  # 1e-9: 3 * (1/3) is 1


def confidence(log_p: Tensor, candidate: Tensor, rule: str) -> Tensor:
    """c_i for every position, [B, L]."""
    if rule == "probability":
        return log_p.gather(-1, candidate[..., None]).squeeze(-1).exp()
    top2 = log_p.exp().topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


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
    """Reveal the most confident masked positions so that ``still_masked`` of the N free ones remain."""
    masked = zt == diffusion.process.mask_id
    n_masked = masked.sum(-1)
    n_free = torch.full_like(n_masked, zt.shape[-1]) if condition is None else (condition < 0).sum(-1)  # [B]
    k = (n_masked - still_masked(n_free, s, options.schedule)).clamp(min=1) * (n_masked > 0)
    if not k.any():
        return zt
    clean_fraction = 1 - n_masked.double() / zt.shape[-1]
    t_net = time_of(diffusion.schedule, clean_fraction).clamp(min=1e-6)
    log_p = diffusion.process.log_p_x0(apply(params, zt, loop.network_time(diffusion, t_net)), zt)
    candidate = draws.categorical(transform(log_p), noise["gumbel"])
    c = confidence(transform(log_p).log_softmax(-1), candidate, options.rule).masked_fill(~masked, -1.0)
    rank = torch.argsort(c, dim=-1, descending=True, stable=True).argsort(-1)
    return torch.where(masked & (rank < k[:, None]), candidate, zt)


sample = loop.sampler(
    step,
    Options,
    check=lambda diffusion: loop.require_masked_x0_network(diffusion, "confidence"),
    default_steps=lambda diffusion, seq_len: seq_len,
)
