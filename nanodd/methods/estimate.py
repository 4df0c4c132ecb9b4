r"""What the methods' bound estimates share: z_t drawn given at least one touched token, and a bound as a loss.

Every bound here is an integral over time, L(x0) = E_{t ~ U(0, 1]} f(x0, t) (``protocols.Integrand``),
estimated from one t and one z_t per sequence.

**t -> 0.**  A token is touched (redrawn from pi; absorbing: masked) with probability 1 - alpha_t ~ t,
and a touched token makes f ~ 1/t (masked bound: the weight w(t) ~ 1/t; rate bound: the ratio rho ~ 1/t
of the token it left), so a plain draw of z_t has a heavy tail: a log-divergent variance.  Drawing z_t
given at least one touched token and multiplying by P(at least one) = 1 - alpha_t^L keeps the same
expectation and a bounded variance wherever f = 0 without a touched token (``corrupt_some``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nanodd.functional import Apply, Params
from nanodd.protocols import Aux, Integrand, Noise, Process


def touched_count(alpha_t: Tensor, v: Tensor, L: int) -> Tensor:
    """m ~ Binomial(L, 1 - alpha_t) conditioned on m >= 1, by inverting v ~ U[0, 1): [B] in 1..L."""
    m = torch.arange(1, L + 1, dtype=torch.float64, device=alpha_t.device)
    alpha = alpha_t.double()[:, None]
    log_binom = math.lgamma(L + 1) - torch.lgamma(m + 1) - torch.lgamma(L - m + 1)
    log_pmf = log_binom + torch.xlogy(m, 1 - alpha) + torch.xlogy(L - m, alpha)  # [B, L]
    cdf = log_pmf.softmax(-1).cumsum(-1)  # softmax renormalises over m >= 1
    return (1 + (cdf < v[:, None]).sum(-1)).clamp(max=L)


def corrupt_some(
    process: Process, x0: Tensor, alpha_t: Tensor, u: Tensor, v: Tensor, r: Tensor
) -> tuple[Tensor, Tensor]:
    """(z_t ~ q(z_t | x0, at least one token touched), P(at least one touched) = 1 - alpha_t^L).

    A token is touched, i.e. redrawn from pi, with probability 1 - alpha_t (absorbing: masked).
    m = ``touched_count(alpha_t, v)`` tokens are touched, those with the m largest u (given m, every
    set of m positions is equally likely, as under q), and redrawn by ``process.prior_sample(r)``.
    x0, u, r: [B, L]; alpha_t, v: [B].
    """
    L = x0.shape[-1]
    m = touched_count(alpha_t, v, L)
    rank = u.argsort(-1).argsort(-1)  # 0..L-1, a uniformly random order of the positions
    zt = torch.where(rank >= (L - m)[:, None], process.prior_sample(r), x0)
    return zt, -torch.expm1(L * torch.log(alpha_t))


def bound_loss(integrand: Integrand, apply: Apply, params: Params, x0: Tensor, noise: Noise) -> tuple[Tensor, Aux]:
    """A loss that is its own bound: the integrand at noise["t"], averaged over the batch, in nats per
    token (fp32), with ``bpt`` the same in bits per token."""
    per_token = (integrand(apply, params, x0, noise["t"], noise).mean() / x0.shape[1]).float()
    return per_token, Aux(bpt=per_token / math.log(2))
