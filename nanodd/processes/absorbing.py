r"""The absorbing ("masking") forward process, its posterior and its output parameterisation.

Vocabulary: ids ``0..N-1`` are the N data symbols and ``mask_id = N`` is the absorbing state, so
the network sees K = N + 1 ids.  Every random draw comes in as uniforms ``u ~ U[0, 1)``.  It is the
process of ``nanodd.processes.mixing`` with prior pi = onehot(mask); the closed forms below are
what its general formulas become (tested against them and against explicit K x K matrices).

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
KL between (2) and that step is ``r * (-log p(x0 | z_t))`` on masked tokens and 0 elsewhere (4), so
every masked-diffusion bound is a weighted masked cross-entropy of log p(x0 | z_t) at the data only,
which ``Absorbing.log_p_of_x0`` computes as logit_x0 - logsumexp(data logits) without the [B, L, K]
table of (3): at GPT-2's 50,257 ids that table, not the network, dominates a training step's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nanodd import draws
import nanodd.checks as checks


def reveal_prob(alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
    """r = (alpha_s - alpha_t) / (1 - alpha_t): P(masked at t, clean at s), eq. (2b)."""
    return (alpha_s - alpha_t) / (1 - alpha_t)


class LogSoftmaxAt(torch.autograd.Function):
    """log_softmax(logits[..., :n])[index] = logit_index - logsumexp(logits[..., :n]), whose backward forms
    the gradient g (onehot(index) - softmax) (0 past n) in one buffer, in place: besides the logits
    themselves, one [..., K] tensor is alive, not the several an autograd graph of logsumexp and gather
    allocates.  Works under torch.func.grad, vmap and torch.compile."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: Tensor, index: Tensor, n: int) -> tuple[Tensor, Tensor]:
        lse = torch.logsumexp(logits[..., :n], -1)
        return logits.gather(-1, index[..., None]).squeeze(-1) - lse, lse

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        logits, index, ctx.n = inputs
        ctx.save_for_backward(logits, index, output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, g: Tensor, _: Tensor):
        logits, index, lse = ctx.saved_tensors
        grad = (logits - lse[..., None]).exp_()  # softmax over the first n, [..., K]
        grad[..., ctx.n :] = 0
        grad.mul_(-g[..., None]).scatter_add_(-1, index[..., None], g[..., None])
        return grad, None, None


def log_softmax_at(logits: Tensor, index: Tensor, n: int) -> Tensor:
    """log_softmax(logits[..., :n])[index] for logits [..., K] and index [...] < n, in fp32 or wider, without
    a [..., K] table of log-probabilities (``LogSoftmaxAt``)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return LogSoftmaxAt.apply(logits, index, n)[0]


@dataclass(frozen=True)
class Absorbing:
    """Absorbing diffusion over ``n_symbols`` data symbols plus one mask id."""

    n_symbols: int = 27
    """N, the number of data symbols (text8: 27).  The mask is id N, so the network sees N + 1 ids."""

    def __post_init__(self):
        checks.at_least("n_symbols", self.n_symbols, 1)

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

    def reverse_sample(
        self, zt: Tensor, log_p: Tensor, alpha_t: Tensor, alpha_s: Tensor, u: Tensor, gumbel: Tensor
    ) -> Tensor:
        """z_s ~ sum_x0 q(z_s | z_t, x0) p(x0 | z_t): x0 drawn by Gumbel-max from log_p [B, L, K], then (2)."""
        return self.posterior_sample(zt, draws.categorical(log_p, gumbel), alpha_t, alpha_s, u)

    def step_kl(self, zt: Tensor, x0: Tensor, log_p: Tensor, alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
        """KL(q(z_s | z_t, x0) || p(z_s | z_t)) per token, (4): r * (-log p(x0 | z_t)) where z_t is masked."""
        nll = -log_p.gather(-1, x0[..., None]).squeeze(-1)  # 0 on clean tokens, by (3b)
        return reveal_prob(alpha_t, alpha_s) * nll

    def prior_kl(self, x0: Tensor, alpha_1: Tensor) -> Tensor:
        """The prior term KL(q(z_1 | x0) || pi) per token, taken as 0: it is 0 when alpha_1 = 0, and
        infinite for any alpha_1 > 0 (pi gives the unmasked tokens no mass), where it is left out, as
        MDLM and SEDD do; the bound then misses at most alpha_1 L log-likelihood units' worth."""
        return torch.zeros(x0.shape, dtype=torch.float64, device=x0.device)

    def prior(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
        """pi = onehot(mask), [K]."""
        return (torch.arange(self.K, device=device) == self.mask_id).to(dtype)

    def log_p_of_x0(self, logits: Tensor, zt: Tensor, x0: Tensor) -> Tensor:
        """log p(x0 | z_t) at the data x0 [B, L] only, [B, L]: ``log_p_x0(logits, zt)`` gathered at x0,
        computed as (3a) = logit_x0 - logsumexp of the data logits, (3b) = 0 where z_t carries x0."""
        clean = torch.where(zt == x0, 0.0, -torch.inf)
        return torch.where(zt == self.mask_id, log_softmax_at(logits, x0, self.n_symbols), clean)

    def log_p_x0(self, logits: Tensor, zt: Tensor) -> Tensor:
        """SUBS, eq. (3): logits [B, L, K] -> log p(x0 | z_t), [B, L, K] in fp32 (fp64 stays fp64)."""
        ids = torch.arange(self.K, device=logits.device)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32; fp64 stays
        predicted = torch.log_softmax(logits.masked_fill(ids == self.mask_id, -torch.inf), dim=-1)
        carried = torch.where(zt[..., None] == ids, 0.0, -torch.inf)
        return torch.where((zt == self.mask_id)[..., None], predicted, carried)
