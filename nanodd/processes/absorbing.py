r"""The absorbing ("masking") forward process, its posterior and its output parameterisation.

Vocabulary: ids ``0..N-1`` are the N data symbols and ``mask_id = N`` is the absorbing state, so
the network sees K = N + 1 ids.  Every random draw comes in as uniforms ``u ~ U[0, 1)``.

Marginal (each token independently, ``alpha_t`` from a schedule):

    q(z_t | x0) = alpha_t * onehot(x0) + (1 - alpha_t) * onehot(mask).                 (1)

Posterior for ``s < t`` (so ``alpha_s >= alpha_t``):

    if z_t != mask:  q(z_s | z_t, x0) = onehot(z_t)                                     (2a)
    if z_t == mask:  q(z_s | z_t, x0) = r * onehot(x0) + (1 - r) * onehot(mask),
                     r = (alpha_s - alpha_t) / (1 - alpha_t)                             (2b)

``r`` is the chance that a token still masked at ``t`` is revealed by time ``s``.

Output parameterisation ("SUBS", Sahoo et al. 2024 §3.2.3).  The network's logits over K ids become

    log p(x0^i | z_t) = log_softmax(logits^i with the mask logit at -inf)   if z_t^i = mask   (3a)
                      = log onehot(z_t^i)                                   otherwise         (3b)

(3a) never predicts the mask ("zero masking probabilities"), (3b) copies clean tokens ("carry-over
unmasking"), both true of the exact denoiser.  The reverse step is (2) with x0 drawn from (3), and the
KL between (2) and that step is ``r * (-log p(x0 | z_t))`` on masked tokens and 0 elsewhere, so every
masked-diffusion bound is a weighted masked cross-entropy (``masked_nll``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def reveal_prob(alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
    """r = (alpha_s - alpha_t) / (1 - alpha_t): P(masked at t, clean at s), eq. (2b)."""
    return (alpha_s - alpha_t) / (1 - alpha_t)


def masked_nll(log_p: Tensor, x0: Tensor) -> Tensor:
    """sum_{i : z_t^i = mask} -log p(x0^i | z_t) per sequence, [B] nats, from log p = ``log_p_x0(...)``.

    Unmasked tokens add exactly 0: under (3b) they carry x0 with probability 1.
    """
    return -log_p.gather(-1, x0[..., None]).squeeze(-1).sum(-1)


@dataclass(frozen=True)
class Absorbing:
    """Absorbing diffusion over ``n_symbols`` data symbols plus one mask id."""

    n_symbols: int = 27
    """N, the number of data symbols (text8: 27).  The mask is id N, so the network sees N + 1 ids."""

    def __post_init__(self):
        if self.n_symbols < 1:
            raise ValueError(f"n_symbols must be >= 1, got {self.n_symbols}")

    @property
    def K(self) -> int:
        return self.n_symbols + 1

    @property
    def mask_id(self) -> int:
        return self.n_symbols

    def prior_sample(self, u: Tensor) -> Tensor:
        """z_1 = all masks (alpha_1 = 0), [B, L] long."""
        return torch.full(u.shape, self.mask_id, dtype=torch.long, device=u.device)

    def corrupt(self, x0: Tensor, alpha_t: Tensor, u: Tensor) -> Tensor:
        """Sample z_t ~ q(z_t | x0), eq. (1): token i is masked iff u_i >= alpha_t.

        x0, u: [B, L]; alpha_t broadcastable to [B, L] (e.g. [B, 1]).  With shared ``u`` the masks are
        nested in t: a token masked at t stays masked at every t' > t.
        """
        return torch.where(u >= alpha_t, torch.full_like(x0, self.mask_id), x0)

    def moves(self, zt: Tensor, alpha_t: Tensor, alpha_s: Tensor, u: Tensor) -> Tensor:
        """The tokens the step t -> s reveals: masked at t and u < r.  Bool [B, L]."""
        return (zt == self.mask_id) & (u < reveal_prob(alpha_t, alpha_s))

    def posterior_sample(self, zt: Tensor, x0: Tensor, alpha_t: Tensor, alpha_s: Tensor, u: Tensor) -> Tensor:
        """Sample z_s ~ q(z_s | z_t, x0), eq. (2), from uniforms u: [B, L]."""
        return torch.where(self.moves(zt, alpha_t, alpha_s, u), x0, zt)

    def marginal_probs(self, x0: Tensor, alpha_t: Tensor) -> Tensor:
        """q(z_t | x0) as probabilities, eq. (1): [..., K] float64."""
        alpha_t = torch.as_tensor(alpha_t, dtype=torch.float64)[..., None]
        return alpha_t * F.one_hot(x0, self.K) + (1 - alpha_t) * self.mask_onehot(x0)

    def posterior_probs(self, zt: Tensor, x0: Tensor, alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
        """q(z_s | z_t, x0) as probabilities, eq. (2): [..., K] float64."""
        r = torch.as_tensor(reveal_prob(alpha_t, alpha_s), dtype=torch.float64)[..., None]
        from_mask = r * F.one_hot(x0, self.K) + (1 - r) * self.mask_onehot(zt)
        return torch.where((zt == self.mask_id)[..., None], from_mask, F.one_hot(zt, self.K).double())

    def mask_onehot(self, like: Tensor) -> Tensor:
        return F.one_hot(torch.full_like(like, self.mask_id), self.K)

    def log_p_x0(self, logits: Tensor, zt: Tensor) -> Tensor:
        """SUBS, eq. (3): logits [B, L, K] -> log p(x0 | z_t), [B, L, K] in fp32 (fp64 stays fp64)."""
        ids = torch.arange(self.K, device=logits.device)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32; fp64 stays
        predicted = torch.log_softmax(logits.masked_fill(ids == self.mask_id, -torch.inf), dim=-1)
        carried = torch.where(zt[..., None] == ids, 0.0, -torch.inf)
        return torch.where((zt == self.mask_id)[..., None], predicted, carried)
