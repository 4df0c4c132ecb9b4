r"""D3PM with the absorbing ("masking") transition — Austin et al. 2021, "Structured Denoising
Diffusion Models in Discrete State-Spaces".

Forward process (T steps, mask id m = K - 1).  Each step keeps a token or absorbs it into m:

    Q_t = (1 - beta_t) I + beta_t 1 e_m^T,      beta_t = 1 / (T - t + 1)                 (App. A.2)
    q(x_t | x0) = Cat(x0 Qbar_t),  Qbar_t = Q_1 ... Q_t,  so  alpha_bar_t = 1 - t/T          (eq. 3)

Posterior, closed form (``nanodd.processes``, eq. 2): a masked x_t is revealed at step t - 1 with
probability r_t = (alpha_bar_{t-1} - alpha_bar_t) / (1 - alpha_bar_t) = 1/t; a clean one is kept.

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
Sampling is ancestral: start from all masks and apply the posterior with x0 drawn from p~.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from nanodd import processes, sampling
from nanodd.functional import Apply, Params
from nanodd.schedules import Linear, alpha_bars_from_betas, d3pm_absorbing_betas

SCHEDULE = Linear()
"""alpha_bar_t = 1 - t/T is the linear schedule read at t/T (tested), for the shared bounds of
``nanodd.evaluate``."""


@dataclass(frozen=True)
class D3PMConfig:
    """Absorbing D3PM (nanoDD's method)."""

    T: int = 1000
    """Number of diffusion steps."""
    hybrid_coeff: float = 0.05
    """lambda: weight of the auxiliary x0 cross-entropy in the hybrid loss."""
    mask_id: int = 27
    """Id of the absorbing state: the model's vocabulary size minus one."""


def tables(cfg: D3PMConfig, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """alpha_bar_t and r_t = (alpha_bar_{t-1} - alpha_bar_t) / (1 - alpha_bar_t), each [T + 1] fp32."""
    alpha_bar = alpha_bars_from_betas(d3pm_absorbing_betas(cfg.T))
    r = processes.reveal_prob(alpha_bar[1:], alpha_bar[:-1])
    r = torch.cat([torch.zeros(1, dtype=r.dtype), r])  # r_0 is never used
    return alpha_bar.float().to(device), r.float().to(device)


def network_time(cfg: D3PMConfig) -> Callable[[Tensor], Tensor]:
    """Continuous t in (0, 1] -> the network's time input, the step t * T (nanoDD feeds raw steps)."""
    return lambda t: t * cfg.T


def loss_noise(gen: torch.Generator, x0: Tensor, cfg: D3PMConfig) -> dict[str, Tensor]:
    """Every random draw of one loss evaluation: t ~ U{1..T} per sequence, u ~ U[0,1) per token."""
    B, L = x0.shape
    t = torch.randint(1, cfg.T + 1, (B,), generator=gen, device=gen.device)
    return {"t": t, "u": sampling.uniforms(gen, (B, L))}


def vb_terms(apply: Apply, params: Params, x0: Tensor, t: Tensor, u: Tensor, *, cfg: D3PMConfig
             ) -> tuple[Tensor, Tensor]:
    """(L_{t-1}, masked NLL) per sequence in nats, each [B], for x0 [B, L], t [B] in 1..T, u [B, L]."""
    alpha_bar, r = tables(cfg, x0.device)
    zt = processes.corrupt(x0, alpha_bar[t][:, None], u, cfg.mask_id)
    logits = apply(params, zt, t.float())
    nll = processes.masked_nll(logits, x0, zt, cfg.mask_id)
    return r[t] * nll, nll


def loss(apply: Apply, params: Params, x0: Tensor, noise: dict[str, Tensor], *, cfg: D3PMConfig
         ) -> tuple[Tensor, dict[str, Tensor]]:
    """Hybrid loss L_vb + lambda * CE (eq. 5), nats per token, averaged over the batch.

    aux: ``vb`` and ``ce`` (nats/token) and ``bound_bpt``, the single-sample estimate of the full
    T-step bound in bits per token.
    """
    vb, nll = vb_terms(apply, params, x0, noise["t"], noise["u"], cfg=cfg)
    L = x0.shape[1]
    total = ((vb + cfg.hybrid_coeff * nll) / L).mean()
    aux = {"vb": vb.mean() / L, "ce": nll.mean() / L, "bound_bpt": cfg.T * vb.mean() / (L * math.log(2))}
    return total, aux


def step(apply: Apply, params: Params, zt: Tensor, t: Tensor, s: Tensor, noise: dict[str, Tensor], *,
         cfg: D3PMConfig, transform: sampling.Transform = sampling.identity) -> Tensor:
    """One reverse step z_t -> z_s (s < t, integer steps [B]) of p(z_s | z_t) = E_{p~(x0|z_t)} q(z_s | z_t, x0).

    noise: ``u`` [B, L] decides which masked tokens are revealed (prob. r), ``gumbel`` [B, L, K]
    draws their values from transform(logits).  Skipping steps (s < t - 1) is exact for absorbing
    noise: the posterior (2b) holds for any s < t.
    """
    alpha_bar, _ = tables(cfg, zt.device)
    logits = transform(apply(params, zt, t.float()))
    x0 = sampling.categorical(logits, noise["gumbel"])
    return processes.posterior_sample(zt, x0, alpha_bar[t][:, None], alpha_bar[s][:, None], noise["u"], cfg.mask_id)


@torch.no_grad()
def sample(apply: Apply, params: Params, *, cfg: D3PMConfig, batch_size: int, seq_len: int,
           generator: torch.Generator, steps: int | None = None,
           transform: sampling.Transform = sampling.identity,
           on_step: Callable[[int, Tensor], None] | None = None) -> tuple[Tensor, int]:
    """Ancestral sampling from all masks: returns (x0 [B, L], NFE).

    ``steps`` (default T) visits an evenly spaced grid T = t_0 > ... > t_steps = 0.  A step in which
    no token is revealed leaves z unchanged, so it is skipped without calling the network: the NFE
    returned counts real network evaluations (about L distinct reveal steps, not T, for B = 1).
    ``on_step(s, z_s)`` sees every intermediate state (for live views and trajectories).
    """
    steps = cfg.T if steps is None else steps
    if not 1 <= steps <= cfg.T:
        raise ValueError(f"steps must be in [1, T={cfg.T}], got {steps}")
    device, K = generator.device, cfg.mask_id + 1
    alpha_bar, _ = tables(cfg, device)
    grid = torch.linspace(cfg.T, 0, steps + 1, dtype=torch.float64).round().long().tolist()
    z = torch.full((batch_size, seq_len), cfg.mask_id, dtype=torch.long, device=device)
    nfe = 0
    for t, s in zip(grid[:-1], grid[1:]):
        noise = {"u": sampling.uniforms(generator, (batch_size, seq_len)),
                 "gumbel": sampling.gumbels(generator, (batch_size, seq_len, K))}
        if processes.reveal_mask(z, alpha_bar[t], alpha_bar[s], noise["u"], cfg.mask_id).any():
            t_b, s_b = (torch.full((batch_size,), v, device=device) for v in (t, s))
            z = step(apply, params, z, t_b, s_b, noise, cfg=cfg, transform=transform)
            nfe += 1
        if on_step is not None:
            on_step(s, z)
    return z, nfe
