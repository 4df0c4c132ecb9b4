r"""Ancestral sampling: walk a time grid 1 = t_0 > ... > t_n = 0 (``loop``) with the model's reverse step

    p(z_s | z_t) = sum_{x0} q(z_s | z_t, x0) p(x0 | z_t),

drawn in two stages: x0 ~ transform(p(x0 | z_t)) by Gumbel-max, then z_s ~ q(z_s | z_t, x0) from
the process's posterior (absorbing), or z_s from the mixture itself (uniform: ``mixing`` (3) at the
soft x0).  Either way z_s has exactly the mixture above (D3PM eq. 4; MDLM eq. 7).  Nothing here is
specific to a process or a method: D3PM, MDLM and UDLM checkpoints share this sampler, with any
number of steps; ``steps = T`` on a D3PM model is D3PM's own sampler.  Skipping steps is exact for
the process, whose posterior holds for any s < t.

It needs an x0 network: a ratio network (SEDD) samples with ``analytic`` or ``euler``.

**Caching** (MDLM's idea, Sahoo et al. 2024 §4.2, in an exact form).  A step in which the process
says no token can move (absorbing: no masked token is revealed, which depends only on the step's
uniforms) leaves z unchanged, so it is skipped without calling the network; MDLM instead reuses the
last output of a time-agnostic network.  The samples are the same draw for draw as without the
cache (``Options.cache = False``, a call at every step, nanoDD's sampler), with about L distinct
reveal steps' worth of calls instead of ``steps``; it is exact for time-conditioned networks too.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from nanodd import draws
from nanodd.functional import Apply, Params
from nanodd.protocols import Diffusion, Noise
import nanodd.samplers.loop as loop

SUMMARY = "the model's reverse step; x0 networks: D3PM, MDLM, UDLM"


@dataclass(frozen=True)
class Options:
    cache: bool = True
    """Skip the network in steps that reveal nothing (exact); False calls it at every step."""


def require_x0_network(diffusion: Diffusion) -> None:
    """Refuse a ratio network (SEDD), whose logits are no p(x0 | z_t)."""
    if diffusion.output != "x0":
        raise ValueError(
            "the ancestral sampler needs a network that predicts x0; this one outputs ratios "
            "(SEDD): use the analytic or euler sampler"
        )


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
    options: Options,
    condition: Tensor | None,
) -> Tensor:
    """One reverse step z_t -> z_s, for t, s: [B] float64 (s < t) and noise ``u`` [B, L] and
    ``gumbel`` [B, L, K]: the process's reverse step given transform(log p(x0 | z_t))."""
    process = diffusion.process
    alpha_t, alpha_s = loop.alpha(diffusion, t)[:, None], loop.alpha(diffusion, s)[:, None]
    if options.cache and not process.moves(zt, alpha_t, alpha_s, noise["u"]).any():
        return zt
    log_p = process.log_p_x0(apply(params, zt, loop.network_time(diffusion, t)), zt)
    return process.reverse_sample(zt, transform(log_p), alpha_t, alpha_s, noise["u"], noise["gumbel"])


sample = loop.sampler(step, Options, check=require_x0_network)
