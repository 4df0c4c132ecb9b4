"""Noise schedules: the probability ``alpha_t`` that a token has not been touched by time ``t``.

Every process mixes a token towards its prior pi (``nanodd.processes.mixing``):

    q(z_t | x0) = alpha_t onehot(x0) + (1 - alpha_t) pi      (absorbing: pi = the mask; uniform: 1/N).

SEDD writes the same as a total noise sigma_t = -log alpha_t.

Continuous schedules map ``t in [0, 1]`` to ``alpha_t`` with ``alpha_0 ~= 1`` and ``alpha_1 ~= 0``.
Calling one returns the value *and* its time derivative, ``(alpha_t, dalpha_t)``, because every
continuous-time loss weight is built from both (MDLM/MD4: ``w(t) = -alpha'_t / (1 - alpha_t)``).
Each schedule is a frozen dataclass, so it is a config value and a pure function at once.

The discrete D3PM absorbing schedule (Austin et al. 2021, App. A.2) uses

    beta_t = 1 / (T - t + 1),   t = 1..T,      alpha_bar_t = prod_{s<=t} (1 - beta_s) = 1 - t/T,

i.e. the linear schedule read at ``t/T``: each token is masked at a uniformly random step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

import nanodd.checks as checks


@dataclass(frozen=True)
class Linear:
    """alpha_t = 1 - t."""

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1 - t, torch.full_like(t, -1.0)


@dataclass(frozen=True)
class Cosine:
    """alpha_t = 1 - cos(pi/2 (1 - t))   (MD4, Shi et al. 2024, Table 1)."""

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        angle = 0.5 * math.pi * (1 - t)
        return 1 - torch.cos(angle), -0.5 * math.pi * torch.sin(angle)


@dataclass(frozen=True)
class LogLinear:
    """alpha_t = 1 - (1 - eps) t, i.e. sigma_t = -log(1 - (1 - eps) t)   (MDLM, Sahoo et al. 2024).

    ``eps`` keeps ``alpha_1 = eps > 0`` so the total noise ``sigma_1`` stays finite.
    """

    eps: float = 1e-3
    """alpha_1 = eps: the fraction of tokens still clean at t = 1."""

    def __post_init__(self):
        checks.require("eps", 0 < self.eps < 1, "be in (0, 1) (alpha_1 = eps)", self.eps)

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1 - (1 - self.eps) * t, torch.full_like(t, -(1 - self.eps))


@dataclass(frozen=True)
class Polynomial:
    """alpha_t = 1 - t^w   (MD4's polynomial family; w = 1 is linear)."""

    w: float = 2.0
    """The power: w = 1 is linear, larger w keeps tokens clean longer."""

    def __post_init__(self):
        checks.positive("w", self.w)

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1 - t**self.w, -self.w * t ** (self.w - 1)


@dataclass(frozen=True)
class Geometric:
    """sigma_t = sigma_min^(1 - t) sigma_max^t, alpha_t = exp(-sigma_t)   (SEDD, Lou et al. 2024 §5.1).

    alpha_0 = exp(-sigma_min) is just below 1 and alpha_1 = exp(-sigma_max) just above 0.
    """

    sigma_min: float = 1e-5
    """Total noise at t = 0."""
    sigma_max: float = 20.0
    """Total noise at t = 1."""

    def __post_init__(self):
        checks.positive("sigma_min", self.sigma_min)
        checks.positive("sigma_max", self.sigma_max)
        checks.require(
            "sigma_max",
            self.sigma_max > self.sigma_min,
            ("be > ", checks.Field("sigma_min"), f" {self.sigma_min}"),
            self.sigma_max,
        )

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        sigma = self.sigma_min * torch.exp(t * log_ratio)
        alpha = torch.exp(-sigma)
        return alpha, -sigma * log_ratio * alpha


Schedule = Linear | Cosine | LogLinear | Polynomial | Geometric


def time_of(schedule: Schedule, alpha: Tensor, iters: int = 60) -> Tensor:
    """The t in [0, 1] with schedule(t)'s alpha_t = alpha, float64, by bisection (every schedule is
    decreasing in t); alpha outside the schedule's range gives the nearer end."""
    alpha = alpha.double()
    lo, hi = torch.zeros_like(alpha), torch.ones_like(alpha)
    for _ in range(iters):
        mid = (lo + hi) / 2
        later = schedule(mid)[0] > alpha  # alpha_mid still above the target: the time is later
        lo, hi = torch.where(later, mid, lo), torch.where(later, hi, mid)
    return (lo + hi) / 2


def discretize(schedule: Schedule, T: int) -> Tensor:
    """alpha_bar_t = alpha(t/T) for t = 0..T: any continuous schedule as a T-step one, [T + 1] float64."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    alpha, _ = schedule(t)
    return alpha
