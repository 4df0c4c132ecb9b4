r"""BD3-LM: block diffusion -- Arriola et al. 2025, "Block Diffusion: Interpolating Between Autoregressive
and Diffusion Language Models".

Autoregressive over blocks, masked diffusion inside them.  x0 [B, L] is cut into L / L' blocks of
``block_size`` L' (x0^b, b = 1..L/L'), and

    log p(x0) = sum_b log p(x0^b | x0^{<b}),                                                    (1)

each block conditional a masked-diffusion model (absorbing process, SUBS parameterisation, as in
``nanodd.methods.mdlm``) given the clean blocks before it.  Bounding each one by MDLM's NELBO gives the
block NELBO (BD3-LM eq. 8 / Thm. 4.1's continuous form), in nats per sequence:

    L(x0) = sum_b E_{t_b ~ U(0, 1]}  -alpha'_{t_b} / (1 - alpha_{t_b})
                  * E_{z^b ~ q_{t_b}(. | x0^b)}  sum_{i in b : z^{b,i} = mask} -log p(x0^i | z^b, x0^{<b})  (2)

with one t per block, independent across blocks.  With the exact denoiser each block's term is
-log p(x0^b | x0^{<b}) (masked diffusion is an exact any-order model), so (2) is tight by (1).  Block
size L' = L is MDLM; block size 1 is an autoregressive model: z^b is then the single token masked,
with probability 1 - alpha_t, and (2)'s integrand, drawn given that mask (below), is
-alpha'_t * -log p(x0^i | x0^{<i}) -- with the linear schedule exactly the AR log-loss, whatever t.

One network pass scores every block: the network reads x_t (+) x0, length 2L, with rotary positions
(0..L-1, 0..L-1) and the block-diffusion attention mask (``nanodd.model.block_diffusion_mask``): noisy
block b attends to noisy block b and clean blocks < b; clean block b attends to clean blocks <= b.  The outputs at the
noisy half are p(x0^b | z^b, x0^{<b}); the clean half is computed (it is the prefix of later blocks)
but not scored.  The network is fed t_b on noisy block b and 0 on the clean half (a time-agnostic
network, ``model.time_conditioning=False``, ignores both).

Estimation, as MDLM's: z^b is drawn given at least one mask in the block and the term weighted by that
event's probability 1 - alpha_{t_b}^{L'} (``nanodd.methods.estimate``: the same expectation, a finite
variance).  Training draws t [B, L/L'] stratified over the global batch for each block index
(independently across block indices), and may clip it (BD3-LM §4.2): t ~ U[beta, omega], i.e. with the
linear schedule the mask rate 1 - alpha_t ~ U[beta, omega].  A clipped loss is a lower-variance
surrogate, not the bound; ``bound(cfg)`` stays the unclipped (2) over t in (0, 1], which evaluation
integrates (on a T-step grid too, ``BlockBound.T``: each block's T-step bound, MDLM's weight on the
grid, >= the continuous one).  ``clip_variance`` measures the loss's variance over a grid of
(beta, omega), the paper's data-driven choice of the clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from nanodd import draws
import nanodd.checks as checks
from nanodd.functional import Apply, Params
from nanodd.methods.estimate import bound_loss, corrupt_some
from nanodd.methods.mdlm import masked_weight
from nanodd.model import block_diffusion_mask
from nanodd.processes.absorbing import Absorbing
from nanodd.protocols import Aux, Diffusion, Noise, Slot, TimeInput, identity_time
from nanodd.schedules import Linear, Schedule


@dataclass(frozen=True)
class BD3LMConfig:
    """BD3-LM: block diffusion, autoregressive over blocks of block_size tokens, masked diffusion inside."""

    block_size: int = 4
    """L', tokens per block; it must divide the sequence length (1: autoregressive, L: MDLM)."""
    schedule: Schedule = field(default_factory=Linear)
    """alpha_t (linear: the mask rate is t, the weight 1/t)."""
    beta: float = 0.0
    """Training clip: t ~ U[beta, omega] (the mask rate, with the linear schedule); evaluation uses (0, 1]."""
    omega: float = 1.0
    """Upper end of the training clip (see beta)."""
    antithetic: bool = True
    """Stratify each block index's t over the global batch; False: iid t."""
    at_least_one_mask: bool = True
    """Draw each block's z_t given at least one mask in it, times its probability (unbiased, finite variance)."""
    process: Absorbing = field(default_factory=Absorbing)
    """The absorbing process: its data symbols (the mask is one more id)."""

    def __post_init__(self):
        checks.at_least("block_size", self.block_size, 1)
        checks.between("beta", self.beta, 0, 1, open_high=True)
        ok = math.isfinite(self.omega) and self.beta < self.omega <= 1
        checks.require("omega", ok, ("be in (", checks.Field("beta"), f" {self.beta}, 1]"), self.omega)


Config = BD3LMConfig


def check_length(block_size: int, L: int) -> int:
    """The number of blocks L / L'; refuses a block size that does not divide L."""
    checks.require("block_size", L % block_size == 0, f"divide the sequence length L = {L}", block_size)
    return L // block_size


@dataclass(frozen=True)
class BlockBound:
    """The block NELBO (2) as an integrand over t; with ``T`` steps (evaluation's ``elbo-vs-t``), the sum
    over blocks of each block's T-step bound, MDLM's weight read on the grid (``mdlm.masked_weight``).

    Called with t [B] (``nanodd.evaluate``) every block gets the same t: (2) is a sum over blocks of
    expectations, each over a uniform t, so by linearity a common t has the same expectation (only the
    variance differs).  Called with t [B, L/L'] (training) each block gets its own."""

    process: Absorbing
    block_size: int
    schedule: Schedule = Linear()
    time_input: TimeInput = identity_time
    at_least_one_mask: bool = True
    T: int | None = None

    def noise(self, gen: torch.Generator, x0: Tensor) -> Noise:
        """u [B, L] decides the masks; v [B, L/L'] draws how many each block has (``corrupt_some``)."""
        n_blocks = check_length(self.block_size, x0.shape[1])
        return {"u": draws.uniforms(gen, x0.shape), "v": draws.uniforms(gen, (x0.shape[0], n_blocks))}

    def corrupt(self, x0: Tensor, alpha_t: Tensor, noise: Noise) -> tuple[Tensor, Tensor]:
        """(z_t [B, L], P(the draw's condition) [B, L/L']) with block b masked at rate 1 - alpha_t[:, b]."""
        (B, L), Lb = x0.shape, self.block_size
        if not self.at_least_one_mask:
            alpha_tok = alpha_t.repeat_interleave(Lb, 1).to(noise["u"].dtype)  # [B, L]
            return self.process.corrupt(x0, alpha_tok, noise["u"]), torch.ones_like(alpha_t)
        u = noise["u"].reshape(-1, Lb)  # one row per (sequence, block): [B L/L', L']
        zt, p_some = corrupt_some(self.process, x0.reshape(-1, Lb), alpha_t.flatten(), u, noise["v"].flatten(), u)
        return zt.reshape(B, L), p_some.reshape(alpha_t.shape)

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        """sum_b w(t_b) * NLL of block b (* P(some mask in b)) per sequence, nats [B]: one draw of (2)."""
        (B, L), Lb = x0.shape, self.block_size
        n_blocks = check_length(Lb, L)
        t = t[:, None].expand(B, n_blocks) if t.dim() == 1 else t  # [B, L/L']
        t_k, alpha_t, w = masked_weight(self.schedule, self.T, t)  # t_k: t, or t read on the T-step grid
        zt, p_draw = self.corrupt(x0, alpha_t, noise)
        t_in = torch.cat([self.time_input(t_k).repeat_interleave(Lb, 1), torch.zeros_like(x0, dtype=t.dtype)], 1)
        positions = torch.arange(L, device=x0.device).repeat(2)  # [2L]
        mask = block_diffusion_mask(L, Lb, x0.device)  # [2L, 2L]
        logits = apply(params, torch.cat([zt, x0], 1), t_in.float(), mask=mask, positions=positions)  # [B, 2L, K]
        nll = -self.process.log_p_of_x0(logits[:, :L], zt, x0)  # [B, L], masked CE: clean tokens add 0
        return ((w * p_draw).to(nll.dtype) * nll.reshape(B, n_blocks, Lb).sum(-1)).sum(-1)


def diffusion(cfg: BD3LMConfig) -> Diffusion:
    """The network is fed t in [0, 1] on the noisy half (0 on the clean half); it reads blocks of
    ``block_size`` against the clean ones before them (``nanodd.samplers.block`` samples it)."""
    return Diffusion(cfg.process, cfg.schedule, None, identity_time, block_size=cfg.block_size)


def bound(cfg: BD3LMConfig) -> BlockBound:
    """The unclipped block NELBO (2) as an integrand over t."""
    return BlockBound(cfg.process, cfg.block_size, cfg.schedule, identity_time, cfg.at_least_one_mask)


def clip_times(s: Tensor, beta: float, omega: float) -> Tensor:
    """s in (0, 1] -> t = beta + (omega - beta) s in (beta, omega]: the clipped training times."""
    return beta + (omega - beta) * s


def noise(gen: torch.Generator, x0: Tensor, cfg: BD3LMConfig, slot: Slot = Slot()) -> Noise:
    """t [B, L/L'] float64, each block index's column stratified over the global batch (or iid) and clipped
    to (beta, omega], and the integrand's z_t draws."""
    n_blocks = check_length(cfg.block_size, x0.shape[1])
    s = torch.stack([draws.times(gen, x0.shape[0], slot, cfg.antithetic) for _ in range(n_blocks)], 1)
    return {"t": clip_times(s, cfg.beta, cfg.omega), **bound(cfg).noise(gen, x0)}


def loss(apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: BD3LMConfig) -> tuple[Tensor, Aux]:
    """(2) at the noise's times, averaged over the batch, nats per token; aux ``bpt`` the same in bits per
    token (the bound's single-draw estimate when unclipped; with a clip, the clipped surrogate's)."""
    return bound_loss(bound(cfg), apply, params, x0, noise)


class ClipStat(NamedTuple):
    """One row of ``clip_variance``: a clip and the loss (nats per token) it gives over the batches."""

    beta: float
    omega: float
    mean: float
    variance: float


@torch.no_grad()
def clip_variance(
    apply: Apply,
    params: Params,
    batches: Sequence[Tensor],
    grid: Sequence[tuple[float, float]],
    gen: torch.Generator,
    *,
    cfg: BD3LMConfig,
) -> list[ClipStat]:
    """The mean and variance over ``batches`` (x0 [B, L] each, at least two) of the training loss under each clip
    (beta, omega) of ``grid``, in grid order; BD3-LM §4.2 picks the clip of least variance.  Every clip
    sees the same draws (common random numbers): each batch's times s in (0, 1] are drawn once and
    mapped to beta + (omega - beta) s."""
    base = [noise(gen, x0, replace(cfg, beta=0.0, omega=1.0)) for x0 in batches]
    rows = []
    for beta, omega in grid:
        clipped = replace(cfg, beta=beta, omega=omega)  # checks the clip
        values = torch.stack(
            [
                loss(apply, params, x0, n | {"t": clip_times(n["t"], beta, omega)}, cfg=clipped)[0].double()
                for x0, n in zip(batches, base)
            ]
        )
        rows.append(ClipStat(beta, omega, float(values.mean()), float(values.var())))
    return rows
