r"""What every sampler shares: the time grid, the loop from the prior to clean data, and the NFE count.

**Grid.**  ``steps`` evenly spaced steps 1 = t_0 > t_1 > ... > t_n = 0.  On a model trained with T
discrete steps the grid snaps to multiples of 1/T, so the network only ever sees the steps it was
trained on.  The last step lands on clean data, alpha = 1, even where the schedule's alpha(0) is just
below 1 (geometric noise: exp(-sigma_min)); that is SEDD's final "denoising" step.

**Loop.**  z_1 is drawn from the prior; each step t -> s draws its uniforms ``u`` [B, L] and Gumbels
[B, L, K] from the explicit generator and hands them to the sampler's step, which is a pure function.
A step in which the sampler's ``may_move`` says no token can change is skipped without calling the
network, so the NFE returned counts real network evaluations.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nanodd import sampling
from nanodd.bounds import model_log_ratios
from nanodd.functional import Apply, Params
from nanodd.protocols import Diffusion, Noise, OnStep, Process, Samples

DEFAULT_STEPS = 1000
"""Steps on a continuous-time model when none are given (a discrete model defaults to its T)."""

Step = Callable[[Tensor, Tensor, Tensor, Noise], Tensor]
"""(z_t [B, L], t [B], s [B], noise) -> z_s: one reverse step with the network bound in."""
StepProbs = Callable[[Process, Tensor, Tensor, Tensor, Tensor], Tensor]
"""(process, z_t [B, L], log s [B, L, K] float64, alpha_t [B], alpha_s [B]) -> p(z_s | z_t) [B, L, K]."""
MayMove = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""(z_t, alpha_t [1], alpha_s [1], u) -> bool [B, L]: which tokens the step could change at all."""


def time_grid(diffusion: Diffusion, steps: int) -> list[float]:
    """1 = t_0 > ... > t_steps = 0, evenly spaced, snapped to multiples of 1/T on a discrete model."""
    if diffusion.T is None:
        return torch.linspace(1, 0, steps + 1, dtype=torch.float64).tolist()
    if not 1 <= steps <= diffusion.T:
        raise ValueError(f"steps must be in [1, T={diffusion.T}] for this model, got {steps}")
    return (torch.linspace(diffusion.T, 0, steps + 1, dtype=torch.float64).round() / diffusion.T).tolist()


def alpha(diffusion: Diffusion, t: Tensor) -> Tensor:
    """alpha_t of the model's schedule for t [B] float64, and exactly 1 at t = 0 (clean data)."""
    return torch.where(t == 0, 1.0, diffusion.schedule(t)[0])


def any_state_moves(diffusion: Diffusion) -> MayMove:
    """Tokens in a state nothing flows into (pi_z = 0: absorbing's clean tokens) never move in reverse."""

    def may_move(zt: Tensor, alpha_t: Tensor, alpha_s: Tensor, u: Tensor) -> Tensor:
        return diffusion.process.prior(zt.device)[zt] > 0

    return may_move


def ratio_step(step_probs: StepProbs, apply: Apply, params: Params, diffusion: Diffusion, zt: Tensor, t: Tensor,
               s: Tensor, noise: Noise, transform: sampling.Transform) -> Tensor:
    """One step of a sampler that jumps with the model's ratios (``bounds.model_log_ratios``: read from
    a ratio network, or implied by an x0 network): z_s ~ transform(step_probs(...)) by Gumbel-max."""
    alpha_t, alpha_s = alpha(diffusion, t), alpha(diffusion, s)
    log_s = model_log_ratios(diffusion, apply(params, zt, diffusion.time_input(t).float()), zt, alpha_t)
    probs = step_probs(diffusion.process, zt, log_s.double(), alpha_t, alpha_s)
    return sampling.categorical(transform(probs.log()), noise["gumbel"])


def run(step: Step, diffusion: Diffusion, *, batch_size: int, seq_len: int, generator: torch.Generator,
        steps: int | None, on_step: OnStep | None, may_move: MayMove) -> Samples:
    """Walk the grid from z_1 ~ prior with ``step``; returns the samples [B, L] and the NFE.

    ``steps`` defaults to the model's T (discrete) or ``DEFAULT_STEPS``; ``on_step(s, z_s)`` sees every
    intermediate state (live views, trajectories).
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
        if may_move(z, alpha(diffusion, t_b[:1]), alpha(diffusion, s_b[:1]), noise["u"]).any():
            z = step(z, t_b, s_b, noise)
            nfe += 1
        if on_step is not None:
            on_step(s, z)
    return Samples(z, nfe)
