"""The absorbing ("masking") forward process and its posterior, as pure functions.

Vocabulary: ids ``0..K-2`` are data symbols and ``mask_id = K - 1`` is the absorbing state.
Every random draw comes in as a tensor of uniforms ``u ~ U[0, 1)`` of the tokens' shape.

Marginal (each token independently, ``alpha_t`` from a schedule):

    q(z_t | x0) = alpha_t * onehot(x0) + (1 - alpha_t) * onehot(mask).                 (1)

Posterior for ``s < t`` (so ``alpha_s >= alpha_t``):

    if z_t != mask:  q(z_s | z_t, x0) = onehot(z_t)                                     (2a)
    if z_t == mask:  q(z_s | z_t, x0) = r * onehot(x0) + (1 - r) * onehot(mask),
                     r = (alpha_s - alpha_t) / (1 - alpha_t)                             (2b)

``r`` is the chance that a token still masked at ``t`` is revealed by time ``s``.  With an
x0-parameterised denoiser ``p(x0 | z_t)`` the reverse step is (2) with ``x0`` drawn from it, and
the KL between (2) and that step is ``r * (-log p(x0 | z_t))`` on masked tokens and 0 elsewhere,
so every masked-diffusion bound is a weighted masked cross-entropy (see ``masked_nll``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def corrupt(x0: Tensor, alpha_t: Tensor, u: Tensor, mask_id: int) -> Tensor:
    """Sample z_t ~ q(z_t | x0), eq. (1): token i is masked iff u_i >= alpha_t.

    x0, u: [B, L]; alpha_t broadcastable to [B, L] (e.g. [B, 1]).  Returns z_t: [B, L] long.
    With shared ``u`` the masks are nested in t: a token masked at t stays masked at every t' > t.
    """
    return torch.where(u >= alpha_t, torch.full_like(x0, mask_id), x0)


def reveal_prob(alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
    """r = (alpha_s - alpha_t) / (1 - alpha_t): P(masked at t, clean at s), eq. (2b)."""
    return (alpha_s - alpha_t) / (1 - alpha_t)


def reveal_mask(zt: Tensor, alpha_t: Tensor, alpha_s: Tensor, u: Tensor, mask_id: int) -> Tensor:
    """Which tokens the step t -> s unmasks: masked at t and u < r.  Bool [B, L]."""
    return (zt == mask_id) & (u < reveal_prob(alpha_t, alpha_s))


def posterior_sample(zt: Tensor, x0: Tensor, alpha_t: Tensor, alpha_s: Tensor, u: Tensor,
                     mask_id: int) -> Tensor:
    """Sample z_s ~ q(z_s | z_t, x0), eq. (2), from uniforms u: [B, L]."""
    return torch.where(reveal_mask(zt, alpha_t, alpha_s, u, mask_id), x0, zt)


def marginal_probs(x0: Tensor, alpha_t: Tensor, K: int) -> Tensor:
    """q(z_t | x0) as probabilities, eq. (1): [..., K].  ``alpha_t`` broadcastable to x0."""
    alpha_t = torch.as_tensor(alpha_t, dtype=torch.float64)[..., None]
    mask = F.one_hot(torch.full_like(x0, K - 1), K)
    return alpha_t * F.one_hot(x0, K) + (1 - alpha_t) * mask


def posterior_probs(zt: Tensor, x0: Tensor, alpha_t: Tensor, alpha_s: Tensor, K: int) -> Tensor:
    """q(z_s | z_t, x0) as probabilities, eq. (2): [..., K]."""
    r = torch.as_tensor(reveal_prob(alpha_t, alpha_s), dtype=torch.float64)[..., None]
    masked = (zt == K - 1)[..., None]
    from_mask = r * F.one_hot(x0, K) + (1 - r) * F.one_hot(torch.full_like(zt, K - 1), K)
    return torch.where(masked, from_mask, F.one_hot(zt, K).double())


def masked_nll(logits: Tensor, x0: Tensor, zt: Tensor, mask_id: int) -> Tensor:
    """sum_{i : z_t^i = mask} -log p(x0^i | z_t): the per-sequence masked cross-entropy, [B] nats."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    nll = -log_p.gather(-1, x0[..., None]).squeeze(-1)  # [B, L]
    return torch.where(zt == mask_id, nll, torch.zeros_like(nll)).sum(-1)
