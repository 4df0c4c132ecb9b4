r"""What every sampler shares: the time grid, conditioning, the loop from the prior to clean data, and
the NFE count.

**Grid.**  ``steps`` evenly spaced steps 1 = t_0 > t_1 > ... > t_n = 0.  On a model trained with T
discrete steps the grid snaps to multiples of 1/T, so the network only ever sees the steps it was
trained on.  The last step lands on clean data, alpha = 1, even where the schedule's alpha(0) is just
below 1 (geometric noise: exp(-sigma_min)); that is SEDD's final "denoising" step.

**Conditioning.**  ``condition`` [L] or [B, L] long holds a fixed token id where one is given and -1
where the sampler generates (a prefix, or characters anywhere: infill).  Fixed tokens are placed in
z_1 and put back after every step, so they never change.  On the absorbing process they are clean
tokens, which every step carries over, so the model's p(x0 | z_t) conditions on them from the first
call: with the exact denoiser the samples are exactly p(x | fixed) (tested by enumeration).

**Loop.**  z_1 is drawn from the prior; each step t -> s draws its uniforms ``u`` [B, L] and Gumbels
[B, L, K] from the explicit generator and hands them to the sampler's step, a pure function.  The
step gets the network as ``apply`` wrapped in a counter, so the NFE returned is the number of real
network evaluations, whatever a step decides to skip.
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

Step = Callable[[Apply, Tensor, Tensor, Tensor, Noise], Tensor]
"""(apply, z_t [B, L], t [B], s [B], noise) -> z_s: one reverse step; it calls ``apply`` only when needed."""
StepProbs = Callable[[Process, Tensor, Tensor, Tensor, Tensor], Tensor]
"""(process, z_t [B, L], log s [B, L, K] float64, alpha_t [B], alpha_s [B]) -> p(z_s | z_t) [B, L, K]."""


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


def network_time(diffusion: Diffusion, t: Tensor) -> Tensor:
    """What the network is fed at time t [B]: ``time_input`` of t, read on the model's grid (t -> ceil(t T) / T)
    when it was trained on T steps, as fp32."""
    if diffusion.T is not None:
        t = torch.ceil(t * diffusion.T - 1e-9).clamp(min=1) / diffusion.T
    return diffusion.time_input(t).float()


class Counted:
    """``apply`` that counts its calls."""

    def __init__(self, apply: Apply):
        self.apply, self.calls = apply, 0

    def __call__(self, params: Params, zt: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.apply(params, zt, t)


def require_masked_x0_network(diffusion: Diffusion, sampler: str) -> None:
    """Refuse, with one clear line, a model this masked-diffusion sampler cannot serve."""
    if not hasattr(diffusion.process, "mask_id") or diffusion.log_ratios is not None:
        raise ValueError(
            f"the {sampler} sampler needs a masked-diffusion model that predicts x0 (D3PM, MDLM); "
            "use ancestral, analytic or euler for this one"
        )


def conditioned(condition: Tensor | None, z: Tensor) -> Tensor:
    """z with the fixed tokens of ``condition`` (-1: free) put back."""
    return z if condition is None else torch.where(condition >= 0, condition, z)


def check_condition(condition: Tensor | None, process: Process, shape: tuple[int, int]) -> Tensor | None:
    """``condition`` broadcast to [B, L] on its device, after checking its shape and ids."""
    if condition is None:
        return None
    if condition.shape[-1] != shape[1] or condition.dim() > 2:
        raise ValueError(f"the condition must be [L] or [B, L] with L = {shape[1]}, got shape {tuple(condition.shape)}")
    if ((condition < -1) | (condition >= process.n_symbols)).any():
        raise ValueError(f"fixed tokens must be data symbols 0..{process.n_symbols - 1} (or -1: generate)")
    return condition.expand(shape)


def start(process: Process, generator: torch.Generator, shape: tuple[int, int], condition: Tensor | None) -> Tensor:
    """z_1: the prior, with the fixed tokens in place."""
    return conditioned(condition, process.prior_sample(sampling.uniforms(generator, shape)))


def ratio_step(
    step_probs: StepProbs,
    apply: Apply,
    params: Params,
    diffusion: Diffusion,
    zt: Tensor,
    t: Tensor,
    s: Tensor,
    noise: Noise,
    transform: sampling.Transform,
) -> Tensor:
    """One step of a sampler that jumps with the model's ratios (``bounds.model_log_ratios``: read from
    a ratio network, or implied by an x0 network): z_s ~ transform(step_probs(...)) by Gumbel-max.
    Skipped (no call) when no token is in a state anything flows into (absorbing: no mask left)."""
    process = diffusion.process
    if not (process.prior(zt.device)[zt] > 0).any():
        return zt
    # alpha_t = 0 (all noise at t = 1: linear, cosine) would make the ratios 0 and the analytic step 0/0;
    # a floor of 1e-12 keeps every formula finite in float64 and changes no probability visibly.
    alpha_t, alpha_s = alpha(diffusion, t).clamp(min=1e-12), alpha(diffusion, s)
    log_s = model_log_ratios(diffusion, apply(params, zt, network_time(diffusion, t)), zt, alpha_t)
    probs = step_probs(process, zt, log_s.double(), alpha_t, alpha_s)
    return sampling.categorical(transform(probs.log()), noise["gumbel"])


def run(
    step: Step,
    apply: Apply,
    diffusion: Diffusion,
    *,
    batch_size: int,
    seq_len: int,
    generator: torch.Generator,
    steps: int | None,
    on_step: OnStep | None,
    condition: Tensor | None,
) -> Samples:
    """Walk the grid from z_1 ~ prior with ``step``; returns the samples [B, L] and the NFE.

    ``steps`` defaults to the model's T (discrete) or ``DEFAULT_STEPS``; ``on_step(s, z_s)`` sees every
    intermediate state (live views, trajectories).
    """
    steps = steps if steps is not None else diffusion.T or DEFAULT_STEPS
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    process, device, shape = diffusion.process, generator.device, (batch_size, seq_len)
    condition = check_condition(condition, process, shape)
    counted, z = Counted(apply), start(process, generator, shape, condition)
    grid = time_grid(diffusion, steps)
    for t, s in zip(grid[:-1], grid[1:]):
        noise = {"u": sampling.uniforms(generator, shape), "gumbel": sampling.gumbels(generator, (*shape, process.K))}
        t_b, s_b = (torch.full((batch_size,), v, dtype=torch.float64, device=device) for v in (t, s))
        z = conditioned(condition, step(counted, z, t_b, s_b, noise))
        if on_step is not None:
            on_step(s, z)
    return Samples(z, counted.calls)


def ratio_sampler(step_probs: StepProbs, what: str):
    """The ``sample`` function of a sampler whose step is ``ratio_step`` with ``step_probs``."""

    @torch.no_grad()
    def sample(
        apply: Apply,
        params: Params,
        diffusion: Diffusion,
        *,
        batch_size: int,
        seq_len: int,
        generator: torch.Generator,
        steps: int | None = None,
        transform: sampling.Transform = sampling.identity,
        on_step: OnStep | None = None,
        condition: Tensor | None = None,
        options: None = None,
    ) -> Samples:
        return run(
            lambda f, z, t, s, noise: ratio_step(step_probs, f, params, diffusion, z, t, s, noise, transform),
            apply,
            diffusion,
            batch_size=batch_size,
            seq_len=seq_len,
            generator=generator,
            steps=steps,
            on_step=on_step,
            condition=condition,
        )

    sample.__doc__ = f"{what} from the prior z_1: the samples [B, L] and the NFE (``loop.run``); no options."
    return sample
