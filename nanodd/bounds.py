r"""The likelihood bound of absorbing diffusion: one integrand, a weight per time grid.

For a schedule alpha(t) (alpha(0) = 1, alpha(1) ~= 0) and the masked cross-entropy
NLL(z_t) = sum_{i : z_t^i = mask} -log p(x0^i | z_t), every masked-diffusion bound is

    L(x0) = E_{t ~ U(0, 1]}  w(t) * E_{z_t ~ q(z_t | x0)} NLL(z_t),                              (1)

and only the weight differs:

    continuous (Sahoo et al. 2024 MDLM eq. 10; Shi et al. 2024 MD4 eq. 5):  w(t) = -alpha'(t) / (1 - alpha(t)),
    T steps (Austin et al. 2021 D3PM, eq. 1):  t is read on the grid k/T, k = ceil(t T), and
        w = T r_k,   r_k = (alpha_bar_{k-1} - alpha_bar_k) / (1 - alpha_bar_k),   alpha_bar_k = alpha(k/T),

so (1) is  L_T = sum_{k=1}^T r_k E NLL(z_{k/T})  -- the reconstruction term (k = 1, r_1 = 1) plus
the T - 1 KL terms -- and L_inf = int_0^1 w(t) E NLL dt.  With alpha_bar_k = 1 - k/T this is
D3PM-absorbing exactly (r_k = 1/k, ``d3pm.vb_terms``).  The prior term KL(q(z_1|x0) || p) is 0
when alpha(1) = 0 and is left out otherwise (LogLinear's alpha(1) = eps, as MDLM does).
L_T >= L_inf >= -log p(x0), and L_T decreases towards L_inf as T grows.

**t -> 0.**  There w(t) ~ 1/t while a token is masked with probability ~ t, so plain Monte Carlo
has a heavy tail (log-divergent variance).  ``MaskedBound`` draws z_t conditioned on at least one
mask and multiplies by P(at least one) = 1 - alpha^L.  This is exact, as NLL = 0 without masks, and
w * (1 - alpha^L) -> L stays bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nanodd import sampling
from nanodd.functional import Apply, Params
from nanodd.processes.absorbing import Absorbing, masked_nll, reveal_prob
from nanodd.protocols import Noise, TimeInput
from nanodd.schedules import Linear, Schedule, discretize


def masked_weight(schedule: Schedule, T: int | None, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(t read on the grid, alpha there, w) of (1) for t in (0, 1] float64 [B]: continuous if T is None."""
    if T is None:
        alpha_t, dalpha_t = schedule(t)
        return t, alpha_t, -dalpha_t / (1 - alpha_t)
    k = torch.ceil(t * T).long().clamp(1, T)
    alpha_bar = discretize(schedule, T).to(t.device)
    return k.double() / T, alpha_bar[k], T * reveal_prob(alpha_bar[k], alpha_bar[k - 1])


def masked_count(alpha_t: Tensor, v: Tensor, L: int) -> Tensor:
    """m ~ Binomial(L, 1 - alpha_t) conditioned on m >= 1, by inverting v ~ U[0, 1): [B] in 1..L."""
    m = torch.arange(1, L + 1, dtype=torch.float64, device=alpha_t.device)
    alpha = alpha_t.double()[:, None]
    log_binom = math.lgamma(L + 1) - torch.lgamma(m + 1) - torch.lgamma(L - m + 1)
    log_pmf = log_binom + torch.xlogy(m, 1 - alpha) + torch.xlogy(L - m, alpha)  # [B, L]
    cdf = log_pmf.softmax(-1).cumsum(-1)  # softmax renormalises over m >= 1
    return (1 + (cdf < v[:, None]).sum(-1)).clamp(max=L)


def corrupt_some(process: Absorbing, x0: Tensor, alpha_t: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(z_t ~ q(z_t | x0, at least one mask), P(at least one mask) = 1 - alpha_t^L).

    m = ``masked_count(alpha_t, v)`` tokens are masked, those with the m largest u: given m, every
    set of m positions is equally likely, as under q.  x0, u: [B, L]; alpha_t, v: [B].
    """
    L = x0.shape[-1]
    m = masked_count(alpha_t, v, L)
    rank = u.argsort(-1).argsort(-1)  # 0..L-1, a uniformly random order of the positions
    zt = process.corrupt(x0, ((L - m) / L)[:, None], rank / L)
    return zt, -torch.expm1(L * torch.log(alpha_t))


def identity_time(t: Tensor) -> Tensor:
    """The time input of a continuous-time network: t itself."""
    return t


@dataclass(frozen=True)
class MaskedBound:
    """The bound (1) of absorbing diffusion: ``T`` steps of ``schedule``, or L_inf when ``T`` is None.

    ``time_input`` maps t (on the bound's grid) to what the network was trained on: t T for D3PM (the
    integer step k when the bound's T is the model's), the identity for a continuous-time model.
    ``at_least_one_mask`` draws z_t conditioned on a mask (see "t -> 0" above); False draws it plainly
    from q, as the papers' training losses do (unbiased as well, but with a variance that diverges
    logarithmically as t -> 0).
    """

    process: Absorbing
    schedule: Schedule = Linear()
    T: int | None = None
    time_input: TimeInput = identity_time
    at_least_one_mask: bool = True

    def noise(self, gen: torch.Generator, x0: Tensor) -> Noise:
        """u [B, L] decides the masks; v [B] draws how many there are (``corrupt_some``)."""
        return {"u": sampling.uniforms(gen, x0.shape), "v": sampling.uniforms(gen, x0.shape[:1])}

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        """w(t) * NLL(z_t) (* P(some mask)) per sequence, nats [B]: an unbiased single-(t, z_t) estimate of (1)."""
        t_k, alpha_t, w = masked_weight(self.schedule, self.T, t)
        if self.at_least_one_mask:
            zt, p_some = corrupt_some(self.process, x0, alpha_t, noise["u"], noise["v"])
            w = w * p_some
        else:
            zt = self.process.corrupt(x0, alpha_t[:, None].to(noise["u"].dtype), noise["u"])
        log_p = self.process.log_p_x0(apply(params, zt, self.time_input(t_k).float()), zt)
        nll = masked_nll(log_p, x0)
        return w.to(nll.dtype) * nll
