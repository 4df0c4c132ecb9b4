r"""Euler / tau-leaping sampling with the model's reverse rates (SEDD, Lou et al. 2024, §4.1;
Campbell et al. 2022).

With alpha_t = exp(-sigma_t) a token at z jumps back to y != z at the rate sigma'_t pi_z s_y (the
forward rate y -> z, sigma'_t pi_z, times the ratio s_y = q_t(y) / q_t(z); ``nanodd.methods.sedd`` (R)).
Holding the rates fixed over a step t -> s, whose total noise is Delta sigma = log(alpha_s / alpha_t):

    p(z_s = y | z_t = z) = Delta sigma pi_z s_y  (y != z),     p(z_s = z | z_t = z) = 1 - sum_{y != z} (...),    (E)

with negative mass clipped (the stay probability at 0; the draw is then proportional to the jumps).
First order: the error per step is O(Delta sigma^2), and from a masked token (E) leaves about half of
the mass it should reveal in the step to clean data, so the step to alpha_s = 1 is the analytic one
(``analytic`` (A)), as SEDD's sampler ends with a denoising step.  Works for ratio and x0 networks
(``nanodd.processes.readout``); one network call per step in which some token can move.
``transform`` acts on the log-probabilities of the step.
"""

from __future__ import annotations

import torch
from torch import Tensor

import nanodd.processes.mixing as mixing
from nanodd.protocols import Process
import nanodd.samplers.analytic as analytic
import nanodd.samplers.loop as loop

SUMMARY = "tau-leaping with the model's rates; every checkpoint"
Options = loop.NoOptions


def step_probs(process: Process, zt: Tensor, log_s: Tensor, alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
    """p(z_s | z_t) of (E) for every token, [B, L, K] float64 (the analytic step where alpha_s = 1)."""
    if bool((alpha_s == 1).all()):
        return analytic.step_probs(process, zt, log_s, alpha_t, alpha_s)
    d_sigma = torch.log(alpha_s / alpha_t)[:, None, None]
    jumps = d_sigma * mixing.rates_into(process.prior(zt.device), zt) * log_s.exp()
    stay = (1 - jumps.sum(-1, keepdim=True)).clamp_min(0)
    probs = jumps + stay * mixing.onehot(zt, process.K)
    return probs / probs.sum(-1, keepdim=True)


step = analytic.ratio_step(step_probs)
sample = loop.sampler(step)
