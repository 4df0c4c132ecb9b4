r"""D3PM — Austin et al. 2021, "Structured Denoising Diffusion Models in Discrete State-Spaces":
T discrete steps on any process, the hybrid loss, and its bound.  Written out below for the
absorbing ("masking") transition, nanoDD's method; the uniform transition is the same code with the
per-step KL of ``nanodd.processes.uniform`` (Austin et al. use the cosine schedule for it).

Forward process (T steps, mask id m, ``nanodd.processes.absorbing``).  Each step keeps a token or
absorbs it into m:

    Q_t = (1 - beta_t) I + beta_t 1 e_m^T,      beta_t = 1 / (T - t + 1)                 (App. A.2)
    q(x_t | x0) = Cat(x0 Qbar_t),  Qbar_t = Q_1 ... Q_t,  so  alpha_bar_t = 1 - t/T          (eq. 3)

Posterior, closed form (eq. 2): a masked x_t is revealed at step t - 1 with probability
r_t = (alpha_bar_{t-1} - alpha_bar_t) / (1 - alpha_bar_t) = 1/t; a clean one is kept.

Reverse model, x0-parameterisation (eq. 4): the network predicts p~(x0 | x_t) and

    p(x_{t-1} | x_t) = sum_{x0~} q(x_{t-1} | x_t, x0~) p~(x0~ | x_t).

Variational bound (eq. 1), in nats per sequence:

    L_vb = KL(q(x_T | x0) || p(x_T)) + sum_{t=2}^T E_q KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))
           - E_q log p(x0 | x_1).

For absorbing noise every term collapses to a weighted masked cross-entropy.  The prior term is 0
(alpha_bar_T = 0, x_T is all masks), clean tokens are copied so they contribute 0, and on a masked
token both distributions put mass (1 - r_t) on m and r_t on a symbol (x0, resp. p~), so

    L_{t-1} = KL(...) = r_t * sum_{i: x_t^i = m} -log p~(x0^i | x_t),   and L_0 is the t = 1 case
    (r_1 = 1).  Hence  L_vb = sum_{t=1}^T (1/t) E_q [ sum_{i masked} -log p~(x0^i | x_t) ].

Training uses the hybrid loss (eq. 5) with one t ~ U{1..T} per sequence, per token:

    L_lambda = ( L_{t-1} + lambda * sum_{i masked} -log p~(x0^i | x_t) ) / L,

and T * L_{t-1} / (L ln 2) is an unbiased single-sample estimate of the full bound in bits/token.
For any process L_{t-1} is ``Process.step_kl`` summed over tokens (on absorbing noise, the closed form
above) and the bound gains the prior term KL(q(x_T | x0) || pi), 0 when alpha_bar_T = 0
(``StepBound``, the one place both are computed).  For absorbing noise L_vb is the T-step form of MDLM's
masked bound (``nanodd.methods.mdlm`` (1), r_t = 1/t for the linear schedule), and ``bound`` evaluates
it in that form: z_t can then be drawn given at least one mask, with the same expectation and a
lower variance (tested against ``StepBound``).  Sampling is ancestral (``nanodd.samplers.ancestral``):
start from the prior and apply the model's reverse step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nanodd import draws
import nanodd.checks as checks
from nanodd.functional import Apply, Params
from nanodd.methods.mdlm import MaskedBound
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.uniform import Uniform
from nanodd.protocols import Aux, Diffusion, Noise, Process, Slot, TimeInput
from nanodd.schedules import Linear, Schedule, discretize


@dataclass(frozen=True)
class D3PMConfig:
    """D3PM: T discrete steps, hybrid loss L_vb + lambda CE (absorbing by default: nanoDD's method)."""

    T: int = 1000
    """Number of diffusion steps."""
    hybrid_coeff: float = 0.05
    """lambda: weight of the auxiliary x0 cross-entropy in the hybrid loss."""
    schedule: Schedule = field(default_factory=Linear)
    """alpha_bar_t = alpha(t / T).  Linear is the absorbing betas 1/(T - t + 1) (App. A.2); Austin et al.
    use cosine for uniform noise."""
    process: Absorbing | Uniform = field(default_factory=Absorbing)
    """absorbing (its data symbols; the mask is one more id) or uniform."""
    antithetic: bool = False
    """Stratify the steps over the global batch, k = ceil(t T) for stratified t in (0, 1] (unbiased over
    random batches; less variance where the integrand varies with t); False: iid k ~ U{1..T}, nanoDD's."""

    def __post_init__(self):
        checks.at_least("T", self.T, 1)
        checks.at_least("hybrid_coeff", self.hybrid_coeff, 0)


Config = D3PMConfig


class D3PMAux(Aux):
    vb: Tensor
    """L_{t-1} per token, nats."""
    ce: Tensor
    """The cross-entropy -log p(x0 | z_t) per token (absorbing: masked tokens only), nats."""


def alpha_bars(cfg: D3PMConfig, device: torch.device | str = "cpu") -> Tensor:
    """alpha_bar_t for t = 0..T, [T + 1] float64."""
    return discretize(cfg.schedule, cfg.T).to(device)


def diffusion(cfg: D3PMConfig) -> Diffusion:
    """The schedule on the grid k/T; the network is fed the step t T (nanoDD feeds raw steps)."""
    return Diffusion(cfg.process, cfg.schedule, cfg.T, lambda t: t * cfg.T)


def step_of(t: Tensor, T: int) -> Tensor:
    """The step k = ceil(t T) in 1..T that a time t in (0, 1] reads (uniform t: uniform k), long."""
    return torch.ceil(t * T).long().clamp(1, T)


def noise(gen: torch.Generator, x0: Tensor, cfg: D3PMConfig, slot: Slot = Slot()) -> Noise:
    """Every random draw of one loss evaluation: the step t in 1..T per sequence (iid, as nanoDD, or
    stratified over the global batch: ``antithetic``), u ~ U[0,1) per token."""
    B, L = x0.shape
    if cfg.antithetic:  # each step is drawn with probability 1/T either way: the loss stays unbiased
        t = step_of(draws.stratified_times(gen, B, slot), cfg.T)
    else:
        t = torch.randint(1, cfg.T + 1, (B,), generator=gen, device=gen.device)
    return {"t": t, "u": draws.uniforms(gen, (B, L))}


@dataclass(frozen=True)
class StepBound:
    """L_vb (eq. 1) for any process as an integrand over t: a time t reads the step k = ceil(t T), whose
    term L_{k-1} it weights by T, plus the prior term.  ``terms`` is one step's L_{k-1} and the
    cross-entropy -log p~(x0 | x_k), which the hybrid loss trains on."""

    process: Process
    schedule: Schedule
    T: int
    time_input: TimeInput

    def __post_init__(self):
        if self.T is None:
            raise ValueError(
                "D3PM's bound on a non-absorbing process has only its T-step form: use the stratified, "
                "exact or elbo-vs-t estimator (its continuous-time limit is UDLM's bound)"
            )

    def noise(self, gen: torch.Generator, x0: Tensor) -> Noise:
        """u [B, L] draws x_k ~ q(x_k | x0)."""
        return {"u": draws.uniforms(gen, x0.shape)}

    def terms(self, apply: Apply, params: Params, x0: Tensor, k: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """(L_{k-1}, -log p~(x0 | x_k)) per sequence in nats, each [B], for x0 [B, L], k [B] in 1..T and
        u [B, L]; L_{k-1} in the precision of ``Process.step_kl`` (float64)."""
        alpha_bar = discretize(self.schedule, self.T).to(x0.device)
        alpha_t, alpha_s = alpha_bar[k][:, None], alpha_bar[k - 1][:, None]
        zt = self.process.corrupt(x0, alpha_t.to(u.dtype), u)
        log_p = self.process.log_p_x0(apply(params, zt, self.time_input(k.double() / self.T).float()), zt)
        nll = -log_p.gather(-1, x0[..., None]).squeeze(-1).sum(-1)
        return self.process.step_kl(zt, x0, log_p, alpha_t, alpha_s).sum(-1), nll

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        """T * L_{k-1} at k = ceil(t T) plus the prior term, per sequence, nats [B]."""
        vb, _ = self.terms(apply, params, x0, step_of(t, self.T), noise["u"])
        return self.T * vb.double() + self.process.prior_kl(x0, discretize(self.schedule, self.T)[-1]).sum(-1)


def step_bound(cfg: D3PMConfig) -> StepBound:
    """L_vb of this config as the sum of per-step KLs."""
    d = diffusion(cfg)
    return StepBound(cfg.process, d.schedule, d.T, d.time_input)


@dataclass(frozen=True)
class HybridLoss:
    """What D3PM trains on, as an integrand over t (for ``nanodd.analysis``): at k = ceil(t T),

        f(x0, t) = L_{k-1} + lambda * sum_i -log p~(x0^i | x_k)      nats per sequence,

    so E_{t ~ U(0, 1]} f / L is the hybrid loss (eq. 5) that ``loss`` estimates with one k per sequence.
    Unlike the bound it is not a likelihood: evaluate with ``bound``, analyse training with this."""

    steps: StepBound
    hybrid_coeff: float

    @property
    def T(self) -> int:
        return self.steps.T

    def noise(self, gen: torch.Generator, x0: Tensor) -> Noise:
        return self.steps.noise(gen, x0)

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        vb, nll = self.steps.terms(apply, params, x0, step_of(t, self.T), noise["u"])
        return vb.to(nll.dtype) + self.hybrid_coeff * nll


def hybrid_loss(cfg: D3PMConfig) -> HybridLoss:
    """The hybrid loss of this config as an integrand over t."""
    return HybridLoss(step_bound(cfg), cfg.hybrid_coeff)


def loss(apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: D3PMConfig) -> tuple[Tensor, D3PMAux]:
    """Hybrid loss L_vb + lambda * CE (eq. 5), nats per token, averaged over the batch.

    aux: ``bpt``, the single-sample estimate of the full T-step bound in bits per token (the prior
    term included), and ``vb`` and ``ce`` (nats/token).
    """
    vb, nll = step_bound(cfg).terms(apply, params, x0, noise["t"], noise["u"])
    vb, L = vb.to(nll.dtype), x0.shape[1]
    total = ((vb + cfg.hybrid_coeff * nll) / L).mean()
    prior = cfg.process.prior_kl(x0, alpha_bars(cfg)[-1]).sum(-1).mean().to(vb.dtype)
    bpt = (cfg.T * vb.mean() + prior) / (L * math.log(2))
    return total, D3PMAux(bpt=bpt, vb=vb.mean() / L, ce=nll.mean() / L)


def bound(cfg: D3PMConfig) -> MaskedBound | StepBound:
    """L_vb as an integrand over t.  Absorbing: MDLM's masked bound on T steps of this schedule (r_k = 1/k
    for linear), z_t drawn given at least one mask for a low variance; any other process: the sum of
    per-step KLs (``StepBound``).  Both have the same expectation on absorbing noise (tested)."""
    if isinstance(cfg.process, Absorbing):
        d = diffusion(cfg)
        return MaskedBound(cfg.process, d.schedule, d.T, d.time_input)
    return step_bound(cfg)
