r"""D3PM with the absorbing ("masking") transition — Austin et al. 2021, "Structured Denoising
Diffusion Models in Discrete State-Spaces".

Forward process (T steps, mask id m, ``nanodd.processes.absorbing``).  Each step keeps a token or
absorbs it into m:

    Q_t = (1 - beta_t) I + beta_t 1 e_m^T,      beta_t = 1 / (T - t + 1)                 (App. A.2)
    q(x_t | x0) = Cat(x0 Qbar_t),  Qbar_t = Q_1 ... Q_t,  so  alpha_bar_t = 1 - t/T          (eq. 3)

Posterior, closed form (eq. 2): a masked x_t is revealed at step t - 1 with probability
r_t = (alpha_bar_{t-1} - alpha_bar_t) / (1 - alpha_bar_t) = 1/t; a clean one is kept.

Reverse model, x0-parameterisation (eq. 4): the network predicts p~(x0 | x_t) and

    p(x_{t-1} | x_t) = sum_{x0~} q(x_{t-1} | x_t, x0~) p~(x0~ | x_t).

Variational bound (eq. 1), in nats per sequence:

    L_vb = KL(q(x_T | x0) || p(x_T)) + sum_{t=2}^T E_q KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))
           - E_q log p(x0 | x_1).

For absorbing noise every term collapses to a weighted masked cross-entropy.  The prior term is 0
(alpha_bar_T = 0, x_T is all masks), clean tokens are copied so they contribute 0, and on a masked
token both distributions put mass (1 - r_t) on m and r_t on a symbol (x0, resp. p~), so

    L_{t-1} = KL(...) = r_t * sum_{i: x_t^i = m} -log p~(x0^i | x_t),   and L_0 is the t = 1 case
    (r_1 = 1).  Hence  L_vb = sum_{t=1}^T (1/t) E_q [ sum_{i masked} -log p~(x0^i | x_t) ].

Training uses the hybrid loss (eq. 5) with one t ~ U{1..T} per sequence, per token:

    L_lambda = ( L_{t-1} + lambda * sum_{i masked} -log p~(x0^i | x_t) ) / L,

and T * L_{t-1} / (L ln 2) is an unbiased single-sample estimate of the full bound in bits/token.
L_vb is MDLM's discrete bound with the linear schedule (``bound``); sampling is ancestral
(``nanodd.samplers.ancestral``): start from all masks and apply the posterior with x0 drawn from p~.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nanodd import sampling
from nanodd.bounds import MaskedBound
from nanodd.functional import Apply, Params
from nanodd.processes.absorbing import Absorbing, masked_nll, reveal_prob
from nanodd.protocols import Aux, Diffusion, Noise, Slot
from nanodd.schedules import Linear, alpha_bars_from_betas, d3pm_absorbing_betas


@dataclass(frozen=True)
class D3PMConfig:
    """Absorbing D3PM (nanoDD's method): T discrete steps, hybrid loss L_vb + lambda CE."""

    T: int = 1000
    """Number of diffusion steps."""
    hybrid_coeff: float = 0.05
    """lambda: weight of the auxiliary x0 cross-entropy in the hybrid loss."""
    process: Absorbing = field(default_factory=Absorbing)
    """The absorbing process: its data symbols (the mask is one more id)."""

    def __post_init__(self):
        if self.T < 1:
            raise ValueError(f"--method.T must be positive, got {self.T}")
        if self.hybrid_coeff < 0:
            raise ValueError(f"--method.hybrid-coeff must be >= 0, got {self.hybrid_coeff}")


Config = D3PMConfig


class D3PMAux(Aux):
    vb: Tensor
    """L_{t-1} per token, nats."""
    ce: Tensor
    """The masked cross-entropy per token, nats."""


def tables(cfg: D3PMConfig, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """alpha_bar_t and r_t = (alpha_bar_{t-1} - alpha_bar_t) / (1 - alpha_bar_t), each [T + 1] fp32."""
    alpha_bar = alpha_bars_from_betas(d3pm_absorbing_betas(cfg.T))
    r = reveal_prob(alpha_bar[1:], alpha_bar[:-1])
    r = torch.cat([torch.zeros(1, dtype=r.dtype), r])  # r_0 is never used
    return alpha_bar.float().to(device), r.float().to(device)


def diffusion(cfg: D3PMConfig) -> Diffusion:
    """alpha_bar_t = 1 - t/T is the linear schedule on the grid k/T; the network is fed the step t T."""
    return Diffusion(cfg.process, Linear(), cfg.T, lambda t: t * cfg.T)


def noise(gen: torch.Generator, x0: Tensor, cfg: D3PMConfig, slot: Slot = Slot()) -> Noise:
    """Every random draw of one loss evaluation: t ~ U{1..T} per sequence (iid, as nanoDD), u ~ U[0,1) per token."""
    B, L = x0.shape
    t = torch.randint(1, cfg.T + 1, (B,), generator=gen, device=gen.device)
    return {"t": t, "u": sampling.uniforms(gen, (B, L))}


def vb_terms(apply: Apply, params: Params, x0: Tensor, t: Tensor, u: Tensor, *, cfg: D3PMConfig
             ) -> tuple[Tensor, Tensor]:
    """(L_{t-1}, masked NLL) per sequence in nats, each [B], for x0 [B, L], t [B] in 1..T, u [B, L]."""
    alpha_bar, r = tables(cfg, x0.device)
    zt = cfg.process.corrupt(x0, alpha_bar[t][:, None], u)
    nll = masked_nll(cfg.process.log_p_x0(apply(params, zt, t.float()), zt), x0)
    return r[t] * nll, nll


def loss(apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: D3PMConfig) -> tuple[Tensor, D3PMAux]:
    """Hybrid loss L_vb + lambda * CE (eq. 5), nats per token, averaged over the batch.

    aux: ``bpt``, the single-sample estimate of the full T-step bound in bits per token, and ``vb``
    and ``ce`` (nats/token).
    """
    vb, nll = vb_terms(apply, params, x0, noise["t"], noise["u"], cfg=cfg)
    L = x0.shape[1]
    total = ((vb + cfg.hybrid_coeff * nll) / L).mean()
    return total, D3PMAux(bpt=cfg.T * vb.mean() / (L * math.log(2)), vb=vb.mean() / L, ce=nll.mean() / L)


def bound(cfg: D3PMConfig) -> MaskedBound:
    """L_vb as an integrand over t: the masked bound with the linear schedule on T steps (r_k = 1/k)."""
    d = diffusion(cfg)
    return MaskedBound(cfg.process, d.schedule, d.T, d.time_input)
