"""Explicit-generator noise, categorical draws and logit transforms, shared by losses and samplers.

A loss or a sampler step never draws random numbers itself; the caller draws them from a
``torch.Generator`` (``uniforms``, ``gumbels``, ``stratified_times``) and passes them in.  A categorical draw is then deterministic:

    x ~ Cat(softmax(logits))   <=>   x = argmax(logits + g),  g_k = -log(-log U_k)  (Gumbel-max)

Logit transforms (temperature, nucleus/top-p, top-k) are plain functions ``logits -> logits`` composed
with ``compose`` and handed to a step, so no step is ever copied to add a sampling trick.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nanodd.protocols import Slot

Transform = Callable[[Tensor], Tensor]


def uniforms(gen: torch.Generator, shape: tuple[int, ...]) -> Tensor:
    """U[0, 1) draws from an explicit generator, on the generator's device."""
    return torch.rand(shape, generator=gen, device=gen.device)


def stratified_times(gen: torch.Generator, n: int, slot: Slot = Slot()) -> Tensor:
    """n times in (0, 1], float64, one per stratum of the global batch (antithetic / low-discrepancy t).

    Sequence i of slot ``slot.index`` is position j = slot.index * n + i of a global batch of
    N = slot.count * n and gets t = (j + 1 - u) / N, u ~ U[0, 1): together the slots of one optimizer
    step put exactly one time in each stratum (j/N, (j + 1)/N], which lowers the variance of the
    batch's loss estimate without biasing it.  (The low-discrepancy sampler of Kingma et al. 2021, VDM,
    which MDLM trains with, shares one u across strata; an independent u per stratum needs no
    coordination between ranks and is unbiased as well.)
    """
    j = slot.index * n + torch.arange(n, dtype=torch.float64, device=gen.device)
    return (j + 1 - uniforms(gen, (n,)).double()) / (slot.count * n)


def times(gen: torch.Generator, n: int, slot: Slot = Slot(), antithetic: bool = True) -> Tensor:
    """n diffusion times in (0, 1], float64: ``stratified_times`` over the global batch, or iid."""
    return stratified_times(gen, n, slot) if antithetic else 1 - uniforms(gen, (n,)).double()


def gumbels(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> Tensor:
    """Standard Gumbel draws g = -log(-log U), with U kept inside (0, 1), in ``dtype``.

    float64 by default: float32 uniforms lie on a grid of 2^-24, which caps g below about 16.6, so a
    token whose log-probability sits ~16 below the best one can almost never win a Gumbel-max draw.
    Over a vocabulary with a long tail of small probabilities this drops the tail's mass, a lower
    effective temperature (Zheng et al. 2024, "Masked Diffusion Models are Secretly Time-Agnostic
    Masked Models and Exploit Inaccurate Categorical Sampling"; tested).
    """
    u = torch.rand(shape, generator=gen, device=gen.device, dtype=dtype)
    u = u.clamp(torch.finfo(dtype).tiny, 1 - torch.finfo(dtype).eps)
    return -torch.log(-torch.log(u))


def categorical(logits: Tensor, gumbel: Tensor) -> Tensor:
    """Gumbel-max draw from softmax(logits) along the last axis, in the Gumbels' precision: [..., K] -> [...] long."""
    return torch.argmax(logits.to(gumbel.dtype) + gumbel, dim=-1)


def identity(logits: Tensor) -> Tensor:
    return logits


def temperature(tau: float) -> Transform:
    """logits / tau: tau < 1 sharpens, tau > 1 flattens, in float64 and shifted by the largest logit first,
    (logits - max) / tau, which changes no probability: the most likely tokens stay at 0 and the rest go to
    -inf as tau -> 0 (greedy at tau = 1e-320, not an all -inf row that a float32 logits / tau underflows to),
    and every finite logit goes to 0 as tau -> inf (uniform; -inf stays -inf, never -inf / inf = nan)."""
    if not tau > 0:
        raise ValueError(f"temperature must be > 0, got {tau}")
    if tau == 1:
        return identity

    def transform(logits: Tensor) -> Tensor:
        shifted = logits.double() - logits.double().amax(-1, keepdim=True)
        return torch.where((shifted == 0) | torch.isinf(shifted), shifted, shifted / tau)

    return transform


def top_p(p: float) -> Transform:
    """Nucleus filtering: keep the smallest set of tokens whose probability reaches p (Holtzman et
    al. 2020); the rest get logit -inf.  The most likely token is always kept."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p == 1:
        return identity  # every token (a float cumsum can pass 1 before the tail and would drop it)

    def transform(logits: Tensor) -> Tensor:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.double().softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # probability of strictly more likely tokens
        drop_sorted = mass_before >= p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))

    return transform


def top_k(k: int) -> Transform:
    """Keep the k largest logits (ties at the k-th value kept too); the rest get logit -inf.  k = 0: all."""
    if k < 0:
        raise ValueError(f"top_k must be >= 0 (0 keeps every token), got {k}")

    def transform(logits: Tensor) -> Tensor:
        if k == 0 or k >= logits.shape[-1]:
            return logits
        kth = logits.topk(k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))

    return transform


TRANSFORMS: dict[str, Callable[..., Transform]] = {"temperature": temperature, "top_p": top_p, "top_k": top_k}
"""The logit transforms, by the name of the sampling option that sets each (``generate``'s keyword)."""


def compose(*transforms: Transform) -> Transform:
    """compose(f, g)(logits) = g(f(logits)): apply transforms left to right."""

    def transform(logits: Tensor) -> Tensor:
        for f in transforms:
            logits = f(logits)
        return logits

    return transform
