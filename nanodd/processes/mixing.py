r"""The math every process here shares: each token is mixed towards a prior pi.

From time s to t (s < t) a token is kept with probability a = alpha_t / alpha_s and otherwise
redrawn from pi, so the kernel, its composition and the marginal are

    T_a(y -> z) = a delta(y, z) + (1 - a) pi_z,        T_a T_b = T_{ab},                     (1)
    q(z_t | x0) = onehot(x0) T_{alpha_t} = alpha_t onehot(x0) + (1 - alpha_t) pi.              (2)

Absorbing diffusion is pi = onehot(mask); uniform diffusion is pi = 1/N (Austin et al. 2021 §3).
Everything below follows from (1).  Distributions over the K ids are the last axis, [..., K].

Reverse step, x0-parameterised (Bayes; D3PM eqs. 3-4).  For x a distribution over x0 (one-hot for
the true posterior q(z_s | z_t, x0), the denoiser's p(x0 | z_t) for the model's step):

    p(z_s = y | z_t, x)  propto  T_{alpha_t / alpha_s}(y -> z_t) * [x T_{alpha_s}](y).          (3)

Per-step KL, D3PM's L_{t-1}:  KL( (3) at x = onehot(x0) || (3) at x = p(x0 | z_t) ).            (4)

Continuous time.  With alpha_t = exp(-sigma_t), T_a is affine in a, so the forward rate of a jump
y -> z (z != y) is sigma'_t pi_z (5).  The ratios that SEDD's score entropy and every continuous-time
bound use compare a token's marginal at z_t with its marginal at any other y; given x,

    s_y = q(z_t^i = y | x) / q(z_t^i = z | x) = [x T_{alpha_t}](y) / [x T_{alpha_t}](z).          (6)
"""

from __future__ import annotations

import torch
from torch import Tensor


def transition(pi: Tensor, v: Tensor, a: Tensor) -> Tensor:
    """v T_a for distributions v [..., K] and keep probabilities a broadcastable to [..., 1], eq. (1)."""
    return a * v + (1 - a) * v.sum(-1, keepdim=True) * pi


def transition_into(pi: Tensor, zt: Tensor, a: Tensor) -> Tensor:
    """T_a(y -> z_t) for every y, [..., K]: the likelihood of z_t [...] from each earlier state."""
    onehot = (zt[..., None] == torch.arange(len(pi), device=zt.device)).to(pi.dtype)
    return a * onehot + (1 - a) * pi[zt][..., None]


def reverse_probs(pi: Tensor, zt: Tensor, x: Tensor, alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
    """p(z_s | z_t, x), eq. (3): zt [...], x [..., K], alpha_t and alpha_s broadcastable to [..., 1]."""
    joint = transition_into(pi, zt, alpha_t / alpha_s) * transition(pi, x, alpha_s)
    return joint / joint.sum(-1, keepdim=True)


def step_kl(pi: Tensor, zt: Tensor, x0: Tensor, p_x0: Tensor, alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
    """KL(q(z_s | z_t, x0) || p(z_s | z_t)) per token, eq. (4), for p_x0 [..., K] the denoiser's probabilities."""
    q = reverse_probs(pi, zt, onehot(x0, len(pi), p_x0.dtype), alpha_t, alpha_s)
    p = reverse_probs(pi, zt, p_x0, alpha_t, alpha_s)
    return torch.where(q > 0, q * (q.log() - p.log()), torch.zeros_like(q)).sum(-1)


def rates_into(pi: Tensor, zt: Tensor) -> Tensor:
    """The forward rate of y -> z_t per unit of sigma, for every y (0 at y = z_t), eq. (5): [..., K]."""
    return transition_into(pi, zt, torch.zeros((), dtype=pi.dtype, device=pi.device)) * (
        zt[..., None] != torch.arange(len(pi), device=zt.device)
    )


def ratios(pi: Tensor, x: Tensor, zt: Tensor, alpha_t: Tensor) -> Tensor:
    """s_y of eq. (6) for x [..., K], zt [...], alpha_t broadcastable to [..., 1]: [..., K] (1 at y = z_t)."""
    marginal = transition(pi, x, alpha_t)
    return marginal / marginal.gather(-1, zt[..., None])


def onehot(x0: Tensor, K: int, dtype: torch.dtype = torch.float64) -> Tensor:
    return (x0[..., None] == torch.arange(K, device=x0.device)).to(dtype)
