r"""The uniform forward process: a token is kept, or redrawn uniformly from the N data symbols.

No mask token: the network sees K = N ids.  It is the process of ``nanodd.processes.mixing`` with
pi = 1/N (Austin et al. 2021 §3; Schiff et al. 2024 UDLM):

    q(z_t | x0) = alpha_t onehot(x0) + (1 - alpha_t) / N * 1.                              (1)

Posterior, closed form from mixing (3) with a = alpha_t / alpha_s (no K x K matrix is built):

    q(z_s = y | z_t, x0)  propto  (a delta(y, z_t) + (1 - a)/N) (alpha_s delta(y, x0) + (1 - alpha_s)/N).   (2)

Output parameterisation: a plain softmax over the N symbols, p(x0 | z_t); nothing is forced, since any
symbol may be noise.  The model's reverse step is (2) with the soft x0 = p(x0 | z_t) in place of
onehot(x0) (D3PM eq. 4), which is exact when p(x0^i | z_t) is the posterior of x0^i given the *other*
tokens z_t^{-i}: the token's own noisy value enters through (2) itself.  Every step may change every
token, so a sampler never skips one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nanodd import draws
import nanodd.checks as checks
import nanodd.processes.mixing as mixing


@dataclass(frozen=True)
class Uniform:
    """Uniform-state diffusion over ``n_symbols`` data symbols."""

    n_symbols: int = 27
    """N, the number of data symbols (text8: 27); the network sees exactly these N ids."""

    def __post_init__(self):
        checks.at_least("n_symbols", self.n_symbols, 2)

    @property
    def K(self) -> int:
        return self.n_symbols

    def prior(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
        """pi = 1/N, [K]."""
        return torch.full((self.K,), 1 / self.K, device=device, dtype=dtype)

    def prior_sample(self, u: Tensor) -> Tensor:
        """z_1 ~ Uniform over the N symbols (alpha_1 = 0), [B, L] long."""
        return (u * self.K).long().clamp(max=self.K - 1)

    def corrupt(self, x0: Tensor, alpha_t: Tensor, u: Tensor) -> Tensor:
        """Sample z_t ~ (1) from one uniform per token: kept if u < alpha_t, else the symbol
        floor((u - alpha_t) / (1 - alpha_t) * N), uniform given u >= alpha_t."""
        redrawn = ((u - alpha_t) / (1 - alpha_t).clamp(min=1e-12) * self.K).long().clamp(0, self.K - 1)
        return torch.where(u < alpha_t, x0, redrawn)

    def moves(self, zt: Tensor, alpha_t: Tensor, alpha_s: Tensor, u: Tensor) -> Tensor:
        """Any token may change in any step."""
        return torch.ones_like(zt, dtype=torch.bool)

    def reverse_sample(
        self, zt: Tensor, log_p: Tensor, alpha_t: Tensor, alpha_s: Tensor, u: Tensor, gumbel: Tensor
    ) -> Tensor:
        """z_s ~ (2) with the soft x0 = exp(log_p) [B, L, K], by Gumbel-max."""
        probs = mixing.reverse_probs(
            self.prior(zt.device, log_p.dtype), zt, log_p.exp(), alpha_t[..., None], alpha_s[..., None]
        )
        return draws.categorical(probs.log(), gumbel)

    def step_kl(self, zt: Tensor, x0: Tensor, log_p: Tensor, alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
        """KL(q(z_s | z_t, x0) || p(z_s | z_t)) per token (mixing (4))."""
        return mixing.step_kl(
            self.prior(zt.device, log_p.dtype), zt, x0, log_p.exp(), alpha_t[..., None], alpha_s[..., None]
        )

    def prior_kl(self, x0: Tensor, alpha_1: Tensor) -> Tensor:
        """KL(q(z_1 | x0) || 1/N) per token: (alpha + c) log(N (alpha + c)) + (N - 1) c log(N c),
        c = (1 - alpha_1)/N; 0 when alpha_1 = 0.  ``alpha_1`` broadcasts against x0."""
        alpha = torch.as_tensor(alpha_1, dtype=torch.float64, device=x0.device).expand(x0.shape)
        c = (1 - alpha) / self.K
        return torch.xlogy(alpha + c, self.K * (alpha + c)) + (self.K - 1) * torch.xlogy(c, self.K * c)

    def log_p_x0(self, logits: Tensor, zt: Tensor) -> Tensor:
        """log_softmax over the N symbols, [B, L, K] in fp32 (fp64 stays fp64)."""
        return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
