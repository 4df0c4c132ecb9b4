r"""SDTT: self-distillation through time — Deschenaux & Gulcehre 2024, "Beyond Autoregression: Fast LLMs
via Self-Distillation Through Time" — for absorbing-process x0 networks (D3PM, MDLM).

A student learns to take in ONE step of size m dt what the teacher takes in m ancestral steps of size
dt (m = 2: the paper's default), from the same z_t; then the student becomes the next teacher and dt
doubles (1024 -> 512 -> ... steps).  Teacher and student are two parameter dicts through one ``apply``.

Grid.  The student samples on S steps (``student_steps``), t in {k / S : k = 1..S}; the teacher on
m S steps of dt = 1 / (m S).  Training draws k ~ U{1..S} per sequence, t = k / S, and
z_t ~ q(z_t | x0) = Cat(alpha_t onehot(x0) + (1 - alpha_t) onehot(mask)).  On a model of T discrete
steps (D3PM) every time is the samplers' (``loop.time_grid``): snapped to a multiple of 1 / T, where the
teacher's m S-step grid meets the student's S-step grid at every m-th point, so student and teacher are
trained and called on the times they sample at (m S <= T, any S: 64 -> 32 steps of T = 1000 too).

Teacher trajectory (its own draws, ``noise``).  z^0 = z_t, and for j = 0..m-1, with t_j = t - j dt,

    p_j = p_teacher(x0 | z^j)                       (one call, SUBS parameterisation (3) of absorbing)
    z^{j+1} ~ sum_x0 q(z_{t_{j+1}} | z^j, x0) p_j   (``Absorbing.reverse_sample``: x0 by Gumbel-max,
                                                     revealed where u_j < r(t_j, t_{j+1}))

Target.  For every position i masked in z_t, with j_i the step that revealed it (z^{j_i} masked,
z^{j_i + 1} clean there),

    target^i = p_{j_i}(. | i)                 if i is revealed by one of the m steps,
             = p_{m-1}(. | i)                 if i is still masked at t - m dt ("last", the default),
               or p_teacher(x0^i | z^m)       with ``unrevealed = "end"`` (one more teacher call).

That is: a token's target is the teacher's distribution in the step that revealed it; a token the
teacher has not revealed gets the teacher's latest distribution for it.  "last" (m teacher calls) is the
paper's target algorithm as we read it: tokens still masked after the m steps take the teacher's output
of the last step it took; "end" also conditions them on the m-th step's reveals, for one more call.

Loss.  The student, from the same z_t in one call at t, predicts p_student(x0 | z_t), and

    loss = E [ (1/L) sum_{i : z_t^i = mask} D(target^i || p_student(. | z_t)^i) ],   nats per token,

with D = KL (the paper's main choice), or the squared error sum_v (target_v - p_v)^2 ("mse") or the
total variation 1/2 sum_v |target_v - p_v| ("tvd") on probabilities; clean tokens carry over and add
nothing.  The teacher runs under ``torch.no_grad`` (its dict is frozen, gradients reach the student
only).  aux ``bpt`` is the divergence in bits per token (not a likelihood bound: the trainer's
validation reports the student's own bound), ``ce`` the student's masked cross-entropy at the data.

What the target means.  For an exact teacher and a z_t with at most two masked tokens, E[target^i]
= p(x0^i | z_t): revealing one other token from its exact marginal and conditioning on it averages
back to the marginal.  With three or more masked tokens it is not: the teacher reveals several tokens
in one step from the product of their marginals, and E[target^i] is the teacher's distribution for
token i averaged over that factorised walk (tested by enumeration against its closed form).  Minimising
E KL(target || q) over q gives q = E[target]: the student learns, per token, the teacher's m-step
distribution in one step.  An exact teacher is therefore almost a fixed point (its one-step marginals
are already right); what distillation carries over is a teacher's better low-noise predictions into its
high-noise ones, which few-step sampling leans on (the toy tests: a teacher blurred at high noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from nanodd import draws
import nanodd.checks as checks
from nanodd.functional import Apply, Params
from nanodd.protocols import Aux, Diffusion, Noise, Slot
import nanodd.samplers.loop as loop


@dataclass(frozen=True)
class SDTTConfig:
    """One SDTT round: a student of ``student_steps`` steps from a teacher of ``teacher_steps`` times as many."""

    diffusion: Diffusion
    """The teacher's (and student's) process, schedule, time grid and time input (``method.diffusion``)."""
    student_steps: int
    """S: the student samples on S steps of size 1/S; the teacher on m S steps."""
    teacher_steps: int = 2
    """m: teacher steps per student step (the paper: 2)."""
    divergence: Literal["kl", "mse", "tvd"] = "kl"
    """D(target || student) per masked token: KL (the paper's main choice), squared error or total variation."""
    unrevealed: Literal["last", "end"] = "last"
    """The target of a token the teacher leaves masked: its distribution in the teacher's last step (the
    paper), or one more teacher call at t - m dt."""

    def __post_init__(self):
        if not hasattr(self.diffusion.process, "mask_id") or self.diffusion.output != "x0":
            raise ValueError("diffusion: SDTT distils an absorbing-process x0 network (D3PM, MDLM)")
        checks.at_least("student_steps", self.student_steps, 1)
        checks.at_least("teacher_steps", self.teacher_steps, 1)
        T, n = self.diffusion.T, self.student_steps * self.teacher_steps
        if T is not None and n > T:
            raise ValueError(f"student_steps * teacher_steps = {n} must be at most the model's T = {T}")


class SDTTAux(Aux):
    divergence: Tensor
    """D(target || student) per token, nats (``bpt`` is the same in bits)."""
    ce: Tensor
    """The student's masked cross-entropy -log p_student(x0 | z_t) per token, nats."""


def noise(gen: torch.Generator, x0: Tensor, cfg: SDTTConfig, slot: Slot = Slot()) -> Noise:
    """k [B] in 1..S (t = k / S), u [B, L] for z_t, and per teacher step u_steps [m, B, L] and gumbel_steps
    [m, B, L, K] float64 (``draws``; m B L K 8 bytes, the largest tensor of a step at a large vocabulary).
    ``slot`` is unused: the times are iid on the student's grid."""
    B, L = x0.shape
    m, K = cfg.teacher_steps, cfg.diffusion.process.K
    k = torch.randint(1, cfg.student_steps + 1, (B,), generator=gen, device=gen.device)
    u_steps = torch.stack([draws.uniforms(gen, (B, L)) for _ in range(m)])
    gumbel_steps = torch.stack([draws.gumbels(gen, (B, L, K)) for _ in range(m)])
    return {"k": k, "u": draws.uniforms(gen, (B, L)), "u_steps": u_steps, "gumbel_steps": gumbel_steps}


def times(cfg: SDTTConfig, k: Tensor, j: int) -> Tensor:
    """t_j = t - j dt = (m k - j) / (m S) for k [B], float64, exactly 0 at the end of the grid: the point
    m (S - k) + j of the samplers' grid of m S steps (snapped to multiples of 1 / T on a discrete model)."""
    m, S = cfg.teacher_steps, cfg.student_steps
    grid = torch.tensor(loop.time_grid(cfg.diffusion, m * S), dtype=torch.float64, device=k.device)
    return grid[m * (S - k) + j]


def log_p(apply: Apply, params: Params, d: Diffusion, z: Tensor, t: Tensor) -> Tensor:
    """log p(x0 | z_t) [B, L, K] fp32 of the network at time t [B]."""
    return d.process.log_p_x0(apply(params, z, loop.network_time(d, t)), z)


@torch.no_grad()
def target(apply: Apply, teacher_params: Params, zt: Tensor, k: Tensor, noise: Noise, cfg: SDTTConfig) -> Tensor:
    """log target [B, L, K] (module docstring): the teacher's m steps from z_t [B, L] at t = k / S, each
    masked token's log p_teacher(x0 | .) from the step that revealed it, or the latest one; clean tokens
    of z_t keep their carried-over onehot."""
    d, mask_id = cfg.diffusion, cfg.diffusion.process.mask_id
    z, out = zt, None
    for j in range(cfg.teacher_steps):
        t_j, s_j = times(cfg, k, j), times(cfg, k, j + 1)
        alpha_t, alpha_s = loop.alpha(d, t_j)[:, None], loop.alpha(d, s_j)[:, None]
        log_p_j = log_p(apply, teacher_params, d, z, t_j)  # [B, L, K]
        out = log_p_j if out is None else torch.where((z == mask_id)[..., None], log_p_j, out)  # latest for masked
        z = d.process.reverse_sample(z, log_p_j, alpha_t, alpha_s, noise["u_steps"][j], noise["gumbel_steps"][j])
    if cfg.unrevealed == "end":
        out = torch.where(
            (z == mask_id)[..., None], log_p(apply, teacher_params, d, z, times(cfg, k, cfg.teacher_steps)), out
        )
    return out


def divergence(log_target: Tensor, log_q: Tensor, kind: str, n_symbols: int) -> Tensor:
    """D(target || q) per token [B, L] over the data symbols, for log-probabilities [B, L, K]."""
    p, lq = log_target[..., :n_symbols].exp(), log_q[..., :n_symbols]
    if kind == "kl":
        return (torch.xlogy(p, p) - p * lq).sum(-1)
    if kind == "mse":
        return (p - lq.exp()).square().sum(-1)
    return 0.5 * (p - lq.exp()).abs().sum(-1)


def per_token(
    apply: Apply, params: Params, x0: Tensor, noise: Noise, cfg: SDTTConfig, teacher_params: Params
) -> tuple[Tensor, Tensor]:
    """(D(target || student), -log p_student(x0 | z_t)) per token [B, L], 0 on the clean tokens of z_t."""
    d = cfg.diffusion
    alpha_t = loop.alpha(d, times(cfg, noise["k"], 0))[:, None]
    zt = d.process.corrupt(x0, alpha_t.to(noise["u"].dtype), noise["u"])
    masked = zt == d.process.mask_id
    log_target = target(apply, teacher_params, zt, noise["k"], noise, cfg)
    log_q = log_p(apply, params, d, zt, times(cfg, noise["k"], 0))
    div = divergence(log_target, torch.where(masked[..., None], log_q, 0.0), cfg.divergence, d.process.n_symbols)
    ce = -log_q.gather(-1, x0[..., None]).squeeze(-1)
    return torch.where(masked, div, 0.0), torch.where(masked, ce, 0.0)


def loss(
    apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: SDTTConfig, teacher_params: Params
) -> tuple[Tensor, SDTTAux]:
    """The SDTT loss (module docstring), nats per token averaged over the batch; aux ``bpt`` is the same
    in bits per token."""
    div, ce = per_token(apply, params, x0, noise, cfg, teacher_params)
    total = div.mean()
    return total, SDTTAux(bpt=total / math.log(2), divergence=total, ce=ce.mean())


def make_loss(
    teacher_params: Params, cfg: SDTTConfig
) -> Callable[[Apply, Params, Tensor, Noise], tuple[Tensor, SDTTAux]]:
    """``loss(apply, params, x0, noise)`` with the teacher's frozen (detached) dict bound in: the trainer's
    loss hook, ``Trainer(cfg, runtime, log, loss=make_loss(teacher, sdtt_cfg), noise=lambda g, x0, slot:
    noise(g, x0, sdtt_cfg, slot))``."""
    frozen = {name: v.detach() for name, v in teacher_params.items()}
    return lambda apply, params, x0, noise: loss(apply, params, x0, noise, cfg=cfg, teacher_params=frozen)
