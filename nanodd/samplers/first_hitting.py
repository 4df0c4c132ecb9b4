r"""First-hitting sampling — Zheng et al. 2024, "Masked Diffusion Models are Secretly Time-Agnostic
Masked Models and Exploit Inaccurate Categorical Sampling" (§4).

In continuous time each masked token is revealed at its own time, and with n tokens masked at time t
(and alpha_s increasing as s decreases) no token is revealed before s with probability

    P(no reveal in (s, t)) = ((1 - alpha_s) / (1 - alpha_t))^n.

So the next reveal time is drawn exactly by inverting it with one uniform v:

    alpha_s = 1 - (1 - alpha_t) v^(1/n),

the revealed position is uniform among the n masked ones, and its symbol is drawn from p(x0^i | z_t)
(the network fed s).  One network call reveals one token: exactly L calls for L masked tokens, with no
time grid and no error from revealing tokens together; with the exact denoiser the samples are exact
(tested).  Batching: every sequence draws its own reveal times, and call k reveals the k-th token of
every sequence at once, each at its own time (the network takes a time per sequence); a sequence that
starts with fewer masks (conditioning) finishes early and rides along.  ``steps`` is not used.  On a
D3PM model the time is read on its grid of T steps.  Masked-diffusion checkpoints only.

The one sampler with a loop of its own (``nanodd.samplers.loop`` walks a grid; this draws its times),
written with the same signature and the loop's helpers (conditioning, the NFE count).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nanodd import draws
from nanodd.functional import Apply, Params
from nanodd.protocols import Diffusion, OnStep, Samples
import nanodd.samplers.loop as loop
from nanodd.schedules import time_of

SUMMARY = "one token per network call at exactly drawn times; masked diffusion: D3PM, MDLM"
Options = loop.NoOptions


def next_reveal(alpha_t: Tensor, n_masked: Tensor, v: Tensor) -> Tensor:
    """alpha at the next reveal of one of n_masked [B] tokens, from uniforms v [B] (float64)."""
    return 1 - (1 - alpha_t) * v ** (1 / n_masked.clamp(min=1).double())


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
    options: None = None,
) -> Samples:
    """Reveal one token per network call at exactly drawn times: the samples [B, L] and the NFE (<= L)."""
    loop.require_whole_sequence(diffusion)
    loop.require_masked_x0_network(diffusion, "first-hitting")
    if steps is not None:
        raise ValueError("the first-hitting sampler takes no step count: it makes one network call per masked token")
    process, shape = diffusion.process, (batch_size, seq_len)
    condition = loop.check_condition(condition, process, shape)
    counted, z = loop.Counted(apply), loop.start(process, generator, shape, condition)
    alpha_t = loop.alpha(diffusion, torch.ones(batch_size, dtype=torch.float64, device=generator.device))
    while (masked := z == process.mask_id).any():
        n = masked.sum(-1)
        alpha_s = torch.where(
            n > 0, next_reveal(alpha_t, n, draws.uniforms(generator, (batch_size,)).double()), alpha_t
        )
        s = time_of(diffusion.schedule, alpha_s).clamp(min=1e-6)
        log_p = process.log_p_x0(counted(params, z, loop.network_time(diffusion, s)), z)
        x0 = draws.categorical(transform(log_p), draws.gumbels(generator, (*shape, process.K)))
        position = draws.uniforms(generator, shape).masked_fill(~masked, -1.0).argmax(-1)  # uniform among masked
        reveal = masked & (torch.arange(seq_len, device=z.device) == position[:, None])
        z, alpha_t = torch.where(reveal, x0, z), alpha_s
        if on_step is not None:
            on_step(float(s.max()), z)
    return Samples(z, counted.calls)
