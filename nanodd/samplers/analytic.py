r"""The analytic (Tweedie) step of SEDD (Lou et al. 2024, §4.2), from the model's ratios.

For a process that mixes towards pi (``mixing`` (1)) the exact reverse step of one token is

    q(z_s = y | z_t) = q_s(y) T_a(y -> z_t) / q_t(z_t),        a = alpha_t / alpha_s,

and since q_t = q_s T_a with T_a^{-1} = T_{1/a},  q_s(y) / q_t(z_t) = [s T_{1/a}](y)  for the ratios
s_w = q_t(w) / q_t(z_t).  So with the model's ratios the step is

    p(z_s = y | z_t)  propto  T_a(y -> z_t) * max([s T_{1/a}](y), 0),                          (A)

per position, independently (exact as steps -> infinity, like every factorised step).  For an x0
network s is the ratio vector of x T_{alpha_t}, x = p(x0 | z_t), and (A) is exactly the ancestral step
(``mixing`` (3)); for a ratio network (SEDD) it is the Tweedie tau-leaping step.  It works for every
checkpoint; one network call per step in which some token can move (absorbing: while masks remain).
``transform`` (temperature, top-p) acts on the log-probabilities of (A).  ``ratio_step`` is the step of
every sampler that jumps with the ratios (``euler`` too), given its p(z_s | z_t).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from nanodd import draws
from nanodd.functional import Apply, Params
import nanodd.processes.mixing as mixing
from nanodd.processes.readout import log_ratios
from nanodd.protocols import Diffusion, Noise, Process
import nanodd.samplers.loop as loop

SUMMARY = "SEDD's analytic (Tweedie) step with the model's ratios; every checkpoint"
Options = loop.NoOptions
StepProbs = Callable[[Process, Tensor, Tensor, Tensor, Tensor], Tensor]
"""(process, z_t [B, L], log s [B, L, K] float64, alpha_t [B], alpha_s [B]) -> p(z_s | z_t) [B, L, K]."""


def step_probs(process: Process, zt: Tensor, log_s: Tensor, alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
    """p(z_s | z_t) of (A) for every token, [B, L, K] float64, from log ratios log_s [B, L, K].

    At alpha_s = 1 (clean data) q_s has no mass outside the data symbols, so ids >= n_symbols (the
    mask) get none: with exact ratios (A) gives them 0 by cancellation, with a model's ratios only
    approximately, and a sample must not end on a mask (SEDD's final denoising step does the same)."""
    pi, a = process.prior(zt.device), (alpha_t / alpha_s)[:, None, None]
    probs = mixing.transition_into(pi, zt, a) * mixing.transition(pi, log_s.exp(), 1 / a).clamp_min(0)
    not_data = torch.arange(process.K, device=zt.device) >= process.n_symbols
    probs = torch.where((alpha_s == 1)[:, None, None] & not_data, 0.0, probs)
    return probs / probs.sum(-1, keepdim=True)


def ratio_step(step_probs: StepProbs) -> loop.Step:
    """The step z_s ~ transform(step_probs(...)) by Gumbel-max, from the model's ratios (``readout``: read
    from a ratio network, or implied by an x0 network).  It skips the network (no call) when no token is
    in a state anything flows into (absorbing: no mask left)."""

    def step(
        apply: Apply,
        params: Params,
        diffusion: Diffusion,
        zt: Tensor,
        t: Tensor,
        s: Tensor,
        noise: Noise,
        *,
        transform: draws.Transform,
        options: loop.NoOptions,
        condition: Tensor | None,
    ) -> Tensor:
        process = diffusion.process
        if not (process.prior(zt.device)[zt] > 0).any():
            return zt
        # alpha_t = 0 (all noise at t = 1: linear, cosine) would make the ratios 0 and the analytic step 0/0;
        # a floor of 1e-12 keeps every formula finite in float64 and changes no probability visibly.
        alpha_t, alpha_s = loop.alpha(diffusion, t).clamp(min=1e-12), loop.alpha(diffusion, s)
        log_s = log_ratios(diffusion, apply(params, zt, loop.network_time(diffusion, t)), zt, alpha_t)
        probs = step_probs(process, zt, log_s.double(), alpha_t, alpha_s)
        return draws.categorical(transform(probs.log()), noise["gumbel"])

    return step


step = ratio_step(step_probs)
sample = loop.sampler(step)
