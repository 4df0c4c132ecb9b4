r"""The one loop of every sampler: the grid, conditioning, the explicit generator and the NFE count.

A sampler is a pure step z_t -> z_s, its ``Options`` and what makes it different (which models it
serves, a rule for skipping the network); ``sampler`` turns them into the ``sample`` function of
``nanodd.protocols.Sampler``, the one signature every sampler shares.  (``first_hitting`` draws its
reveal times instead of reading them off a grid, so it has a loop of its own, with the same signature
and the helpers below.)

**Grid.**  ``steps`` evenly spaced steps 1 = t_0 > t_1 > ... > t_n = 0.  On a model trained with T
discrete steps the grid snaps to multiples of 1/T, so the network only ever sees the steps it was
trained on.  The last step lands on clean data, alpha = 1, even where the schedule's alpha(0) is just
below 1 (geometric noise: exp(-sigma_min)); that is SEDD's final "denoising" step.

**Conditioning.**  ``condition`` [L] or [B, L] long holds a fixed token id where one is given and -1
where the sampler generates (a prefix, or characters anywhere: infill).  Fixed tokens are placed in
z_1 and put back after every step, so they never change.  On the absorbing process they are clean
tokens, which every step carries over, so the model's p(x0 | z_t) conditions on them from the first
call: with the exact denoiser the samples are exactly p(x | fixed) (tested by enumeration).

On a process without a mask (uniform noise: UDLM, SEDD-uniform, D3PM-uniform) putting the fixed tokens
back is not exact: every step treats them as noisy tokens at level alpha_t, so p(x0 | z_t) conditions
on less than the fixed tokens say (the toy with its middle token fixed: TV 0.17 to p(x | fixed) at 100
steps with the exact network, where unconditioned samples are at 0.015).
Making it exact needs a network that reads clean tokens as clean, which an x0 or ratio network of a
uniform process is not trained to do, so ``check_condition`` warns (``UNIFORM_CONDITIONING``) and
samples as asked (docs/samplers.md).

**Loop.**  z_1 is drawn from the prior; each step t -> s draws its uniforms ``u`` [B, L] and Gumbels
[B, L, K] from the explicit generator and hands them to the sampler's step, a pure function.  The
step gets the network as ``apply`` wrapped in a counter, so the NFE returned is the number of real
network evaluations, whatever a step decides to skip.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from nanodd import draws
from nanodd.functional import Apply, Params
from nanodd.protocols import Diffusion, OnStep, Process, Samples

DEFAULT_STEPS = 1000
"""Steps on a continuous-time model when none are given (a discrete model defaults to its T)."""

MAX_STEPS = 1_000_000
"""The most steps a continuous-time grid takes (a discrete model: its T).  The grid is held as floats
(8 bytes a step, and a Python float each) and every step draws its noise, so a count far beyond any
sequence length (``10**9``: an 8 GB grid, years of steps) is refused in one line instead of tried."""

Step = Callable[..., Tensor]
"""step(apply, params, diffusion, z_t [B, L], t [B], s [B], noise, *, transform, options, condition) -> z_s:
one reverse step, a pure function of its noise (``u`` [B, L], ``gumbel`` [B, L, K]) that calls
``apply`` only when it needs to; ``condition`` is [B, L] or None (the loop puts the fixed tokens back)."""


@dataclass(frozen=True)
class NoOptions:
    """The options of a sampler that has no settings of its own."""


def time_grid(diffusion: Diffusion, steps: int) -> list[float]:
    """1 = t_0 > ... > t_steps = 0, evenly spaced, snapped to multiples of 1/T on a discrete model; at most
    T steps there, and ``MAX_STEPS`` in continuous time."""
    if diffusion.T is None:
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be in [1, {MAX_STEPS:_}] for a continuous-time model, got {steps}")
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
    if not hasattr(diffusion.process, "mask_id") or diffusion.output != "x0":
        raise ValueError(
            f"the {sampler} sampler needs a masked-diffusion model that predicts x0 (D3PM, MDLM); "
            "use ancestral, analytic or euler for this one"
        )


def require_whole_sequence(diffusion: Diffusion) -> None:
    """Refuse a block-diffusion network: it reads blocks against a clean prefix, which ``nanodd.samplers.block``
    gives it (and runs this sampler inside each block)."""
    if diffusion.block_size is not None:
        raise ValueError(
            f"this model diffuses blocks of {diffusion.block_size} tokens (BD3-LM): sample it with the block "
            "sampler, which runs this one inside each block (--sample.block.inner)"
        )


def conditioned(condition: Tensor | None, z: Tensor) -> Tensor:
    """z with the fixed tokens of ``condition`` (-1: free) put back."""
    return z if condition is None else torch.where(condition >= 0, condition, z)


UNIFORM_CONDITIONING = (
    "a prefix or infill on a uniform-noise model is approximate (the fixed tokens are put back after each "
    "step, which is exact only for absorbing noise; see docs/samplers.md)"
)


def check_condition(condition: Tensor | None, process: Process, shape: tuple[int, int]) -> Tensor | None:
    """``condition`` broadcast to [B, L] on its device, after checking its shape and ids; a warning
    (``UNIFORM_CONDITIONING``) on a process without a mask, where conditioning is approximate."""
    if condition is None:
        return None
    if not hasattr(process, "mask_id"):
        warnings.warn(UNIFORM_CONDITIONING, stacklevel=3)
    if condition.shape[-1] != shape[1] or condition.dim() > 2:
        raise ValueError(f"the condition must be [L] or [B, L] with L = {shape[1]}, got shape {tuple(condition.shape)}")
    if ((condition < -1) | (condition >= process.n_symbols)).any():
        raise ValueError(f"fixed tokens must be data symbols 0..{process.n_symbols - 1} (or -1: generate)")
    return condition.expand(shape)


def start(process: Process, generator: torch.Generator, shape: tuple[int, int], condition: Tensor | None) -> Tensor:
    """z_1: the prior, with the fixed tokens in place."""
    return conditioned(condition, process.prior_sample(draws.uniforms(generator, shape)))


def model_steps(diffusion: Diffusion, seq_len: int) -> int:
    """The default number of steps: the model's T (discrete), or ``DEFAULT_STEPS``."""
    return diffusion.T or DEFAULT_STEPS


def sampler(
    step: Step,
    Options: type = NoOptions,
    *,
    check: Callable[[Diffusion], None] | None = None,
    default_steps: Callable[[Diffusion, int], int] = model_steps,
):
    """The ``sample`` function of a sampler that walks the grid with ``step`` (``protocols.Sampler``).

    ``check(diffusion)`` refuses, in one line, a model the sampler cannot serve; ``default_steps(diffusion,
    seq_len)`` is the number of steps when none are given.
    """

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
        transform: draws.Transform = draws.identity,
        on_step: OnStep | None = None,
        condition: Tensor | None = None,
        options=None,
    ) -> Samples:
        """Walk the grid from z_1 ~ prior: the samples [B, L] and the NFE.  ``on_step(s, z_s)`` sees every
        intermediate state (live views, trajectories); ``options``: the sampler's ``Options`` (None: defaults)."""
        require_whole_sequence(diffusion)
        if check is not None:
            check(diffusion)
        steps = steps if steps is not None else default_steps(diffusion, seq_len)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        process, device, shape = diffusion.process, generator.device, (batch_size, seq_len)
        condition = check_condition(condition, process, shape)
        counted, z = Counted(apply), start(process, generator, shape, condition)
        kw = dict(transform=transform, options=options or Options(), condition=condition)
        grid = time_grid(diffusion, steps)
        for t, s in zip(grid[:-1], grid[1:]):
            noise = {
                "u": draws.uniforms(generator, shape),
                "gumbel": draws.gumbels(generator, (*shape, process.K)),
            }
            t_b, s_b = (torch.full((batch_size,), v, dtype=torch.float64, device=device) for v in (t, s))
            z = conditioned(condition, step(counted, params, diffusion, z, t_b, s_b, noise, **kw))
            if on_step is not None:
                on_step(s, z)
        return Samples(z, counted.calls)

    return sample
