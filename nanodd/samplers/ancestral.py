r"""Ancestral sampling: walk a time grid 1 = t_0 > t_1 > ... > t_n = 0 with the model's reverse step

    p(z_s | z_t) = sum_{x0} q(z_s | z_t, x0) p(x0 | z_t),

drawn in two stages: x0 ~ transform(p(x0 | z_t)) by Gumbel-max, then z_s ~ q(z_s | z_t, x0) from
the process's posterior.  The pair (x0, z_s) has the joint p(x0 | z_t) q(z_s | z_t, x0), so z_s has
exactly the mixture above (D3PM eq. 4; MDLM eq. 7).  Nothing here is specific to a process or a
method: D3PM and MDLM checkpoints share this sampler, with any number of steps.

**Grid.**  ``steps`` evenly spaced steps.  On a model trained with T discrete steps the grid snaps
to multiples of 1/T, so the network only ever sees the steps it was trained on; ``steps = T`` is
D3PM's own sampler.  Skipping steps is exact for the process, whose posterior holds for any s < t.

**NFE.**  A step in which the process says no token can move (absorbing: no masked token is
revealed, which depends only on the step's uniforms) leaves z unchanged, so it is skipped without
calling the network.  The NFE returned counts real network evaluations: about L distinct reveal
steps, not ``steps``, for one sequence of length L on a fine grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nanodd import sampling
from nanodd.functional import Apply, Params
from nanodd.protocols import Diffusion, Noise, OnStep, Samples

DEFAULT_STEPS = 1000
"""Steps on a continuous-time model when none are given (a discrete model defaults to its T)."""


def time_grid(diffusion: Diffusion, steps: int) -> list[float]:
    """1 = t_0 > ... > t_steps = 0, evenly spaced, snapped to multiples of 1/T on a discrete model."""
    if diffusion.T is None:
        return torch.linspace(1, 0, steps + 1, dtype=torch.float64).tolist()
    if not 1 <= steps <= diffusion.T:
        raise ValueError(f"steps must be in [1, T={diffusion.T}] for this model, got {steps}")
    return (torch.linspace(diffusion.T, 0, steps + 1, dtype=torch.float64).round() / diffusion.T).tolist()


def step(apply: Apply, params: Params, diffusion: Diffusion, zt: Tensor, t: Tensor, s: Tensor, noise: Noise, *,
         transform: sampling.Transform = sampling.identity) -> Tensor:
    """One reverse step z_t -> z_s, for t, s: [B] float64 (s < t) and noise ``u`` [B, L] and
    ``gumbel`` [B, L, K]: the process's reverse step given transform(log p(x0 | z_t))."""
    process, schedule = diffusion.process, diffusion.schedule
    log_p = process.log_p_x0(apply(params, zt, diffusion.time_input(t).float()), zt)
    (alpha_t, _), (alpha_s, _) = schedule(t), schedule(s)
    return process.reverse_sample(zt, transform(log_p), alpha_t[:, None], alpha_s[:, None], noise["u"], noise["gumbel"])


@torch.no_grad()
def sample(apply: Apply, params: Params, diffusion: Diffusion, *, batch_size: int, seq_len: int,
           generator: torch.Generator, steps: int | None = None, transform: sampling.Transform = sampling.identity,
           on_step: OnStep | None = None) -> Samples:
    """Ancestral sampling from the prior z_1: returns the samples [B, L] and the NFE.

    ``steps`` defaults to the model's T (discrete) or ``DEFAULT_STEPS``.  ``on_step(s, z_s)`` sees
    every intermediate state (for live views and trajectories).
    """
    steps = steps if steps is not None else diffusion.T or DEFAULT_STEPS
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    process, device, shape = diffusion.process, generator.device, (batch_size, seq_len)
    z = process.prior_sample(sampling.uniforms(generator, shape))
    grid = time_grid(diffusion, steps)
    nfe = 0
    for t, s in zip(grid[:-1], grid[1:]):
        noise = {"u": sampling.uniforms(generator, shape), "gumbel": sampling.gumbels(generator, (*shape, process.K))}
        t_b, s_b = (torch.full((batch_size,), v, dtype=torch.float64, device=device) for v in (t, s))
        (alpha_t, _), (alpha_s, _) = diffusion.schedule(t_b[:1]), diffusion.schedule(s_b[:1])
        if process.moves(z, alpha_t, alpha_s, noise["u"]).any():
            z = step(apply, params, diffusion, z, t_b, s_b, noise, transform=transform)
            nfe += 1
        if on_step is not None:
            on_step(s, z)
    return Samples(z, nfe)
