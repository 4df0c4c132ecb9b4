r"""SEDD: score entropy discrete diffusion — Lou et al. 2024, "Discrete Diffusion Modeling by
Estimating the Ratios of the Data Distribution".

Forward process: a continuous-time Markov chain on each token with rates sigma'_t Q, here the
absorbing graph (``nanodd.processes.absorbing``, Q = e_mask 1^T - I) or the uniform one
(``nanodd.processes.uniform``, Q = 1 1^T / N - I); alpha_t = exp(-sigma_t) with the geometric
(sigma_min^(1-t) sigma_max^t) or log-linear (sigma_t = -log(1 - (1 - eps) t)) noise.

Network output: not x0 logits but the concrete score, the ratios of the noisy data distribution
between z_t and each of its neighbours (SEDD §3):

    s_theta(z_t, t)_{i, y}  ~  q_t(z_t^{i <- y}) / q_t(z_t),    read as  log s = logits (+ log(alpha_t / (1 - alpha_t)) - log N),

the bracket being SEDD's ``scale_by_sigma`` for the absorbing graph (it makes an untrained network's
ratios those of a uniform x0), and log s = 0 at y = z_t^i (``nanodd.processes.readout``, which also
reads the ratios an x0 network implies).  The network is fed sigma_t.

Loss: the rate bound below (SEDD eq. 9 and Thm. 3.6), the denoising score entropy weighted by the
forward rates, an upper bound on -log p(x0) with the prior term.  With alpha_t = exp(-sigma_t) a token
jumps y -> z forward at rate sigma'_t pi_z (``mixing`` (5)).  The reverse of the process given x0
jumps z -> y at rate sigma'_t pi_z rho_y, rho_y = q_t(y | x0^i) / q_t(z | x0^i), and the model's at
sigma'_t pi_z s_y with its ratios s_y.  The ELBO of a continuous-time Markov chain (Campbell et al.
2022; Thm. 3.6) is then

    -log p(x0) <= int_0^1 sigma'_t E_{z_t ~ q(.|x0)} sum_i sum_{y != z_t^i} pi_{z_t^i} [s_y - rho_y + rho_y log(rho_y / s_y)] dt
                  + KL(q(z_1 | x0) || pi),                                                        (R)

the bracket being SEDD's s - rho log s + K(rho), K(a) = a (log a - 1), which makes each term >= 0 and
0 iff s = rho.  It is tight when the model's ratios are the data's: then the path measures agree and
the gap is E_{z_1 ~ q(.|x0)} log(q(z_1)/pi(z_1)), 0 when alpha_1 = 0.  With the exact ratios it
equals -log p(x0) once q(z_1 | x0) is the prior: the absorbing graph leaves out alpha_1 ~
exp(-sigma_max) of mass and the t -> 0 end sigma_min of it, a residual of at most
(sigma_min + exp(-sigma_max)) sum_i -log p(x0^i | ...) nats; the uniform graph's is O(alpha_1^2)
(tested on an exact toy distribution).  (R) holds for any network: for an x0 network s is the ratio
vector its reverse step implies, which on the uniform process is UDLM's bound (``nanodd.methods.udlm``)
and on the absorbing one reduces to MDLM's weighted masked cross-entropy (tested).  Continuous time only.

Training: one t per sequence stratified over the global batch, z_t ~ q, the loss is the bound's
integrand / L in nats per token.  Sampling: Euler (tau-leaping) or the analytic (Tweedie) step
(``nanodd.samplers``), which jump with these ratios.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from nanodd import draws
from nanodd.functional import Apply, Params
from nanodd.methods.estimate import bound_loss, corrupt_some
import nanodd.processes.mixing as mixing
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.readout import log_ratios
from nanodd.processes.uniform import Uniform
from nanodd.protocols import Aux, Diffusion, Noise, Slot
from nanodd.schedules import LogLinear, Schedule


@dataclass(frozen=True)
class SEDDConfig:
    """SEDD: the network estimates ratios, trained with the diffusion-weighted score entropy."""

    process: Absorbing | Uniform = field(default_factory=Absorbing)
    """The graph: absorbing or uniform."""
    schedule: Schedule = field(default_factory=LogLinear)
    """alpha_t = exp(-sigma_t): geometric (SEDD's sigma_min -> sigma_max) or log-linear."""
    scale_by_sigma: bool = True
    """Read log ratios as logits + log(alpha_t / (1 - alpha_t)) - log N (SEDD's choice for the absorbing
    graph); False: the logits themselves (its choice for the uniform graph)."""
    antithetic: bool = True
    """Stratify t over the global batch (every rank and micro-step gets its own strata); False: iid t."""


Config = SEDDConfig


def score_entropy(log_s: Tensor, rho: Tensor) -> Tensor:
    """s - rho + rho log(rho / s) >= 0, zero iff s = rho: the bracket of (R) per transition, s = exp(log_s)
    the model's ratio and rho the true one (its K(a) = a (log a - 1) term is rho log rho - rho)."""
    return log_s.exp() - rho + torch.where(rho > 0, rho * (rho.log() - log_s), 0.0)


@dataclass(frozen=True)
class RateBound:
    """(R) for any network of a process mixing towards pi, read through ``diffusion`` (its ratios:
    ``readout.log_ratios``), as an integrand over t with the prior term.  Continuous time only (T = None)."""

    diffusion: Diffusion
    T: None = None

    def __post_init__(self):
        if self.T is not None:
            raise ValueError(
                "this method's bound is continuous-time only (no T-step form to evaluate): use the "
                "stratified or continuous estimator"
            )

    def noise(self, gen: torch.Generator, x0: Tensor) -> Noise:
        """u, r [B, L] and v [B] for ``corrupt_some``; w [B] picks the untouched or the touched case."""
        return {
            "u": draws.uniforms(gen, x0.shape),
            "v": draws.uniforms(gen, x0.shape[:1]),
            "w": draws.uniforms(gen, x0.shape[:1]),
            "r": draws.uniforms(gen, x0.shape),
        }

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        """The integrand of (R) at t plus the prior term, per sequence, nats [B]."""
        d = self.diffusion
        alpha_t, dalpha_t = d.schedule(t)
        pi = d.process.prior(x0.device, torch.float64)
        zt, weight = self.draw(pi, x0, alpha_t, noise)
        log_s = log_ratios(d, apply(params, zt, d.time_input(t).float()), zt, alpha_t)
        rates = mixing.rates_into(pi, zt)  # pi_{z_t} off the diagonal, [B, L, K]
        rho = mixing.ratios(pi, mixing.onehot(x0, d.process.K), zt, alpha_t[:, None, None])
        jumps = rates > 0
        entropy = score_entropy(torch.where(jumps, log_s.double(), 0.0), torch.where(jumps, rho, 1.0))
        f = (-dalpha_t / alpha_t) * (rates * entropy).sum((-1, -2))
        return weight * f + d.process.prior_kl(x0, d.schedule(torch.ones_like(t))[0][:, None]).sum(-1)

    def draw(self, pi: Tensor, x0: Tensor, alpha_t: Tensor, noise: Noise) -> tuple[Tensor, Tensor]:
        """(z_t, weight) with E[weight * f(z_t)] = E_{z_t ~ q}[f(z_t)] and a bounded variance as t -> 0.

        A touched token makes f ~ 1/t with probability ~ t (rho ~ 1/t for the token it left), so
        plain draws have a log-divergent variance.  Split on whether any token is touched: with
        probability p0 = min(alpha_t^L, 1/2) take z_t = x0 (weight alpha_t^L / p0), else z_t given at
        least one touched token (weight (1 - alpha_t^L) / (1 - p0)).  Where no jump into x0 is
        possible (absorbing: clean tokens), f(x0) = 0 and p0 = 0, MDLM's draw (``estimate``).
        """
        some, p_some = corrupt_some(self.diffusion.process, x0, alpha_t, noise["u"], noise["v"], noise["r"])
        p0 = torch.where((pi[x0] > 0).any(-1), (1 - p_some).clamp(max=0.5), 0.0)
        untouched = noise["w"] < p0
        weight = torch.where(untouched, (1 - p_some) / p0, p_some / (1 - p0))
        return torch.where(untouched[:, None], x0, some), weight


def diffusion(cfg: SEDDConfig) -> Diffusion:
    """A ratio network, fed sigma_t = -log alpha_t."""
    output = "scaled-ratios" if cfg.scale_by_sigma else "ratios"
    return Diffusion(cfg.process, cfg.schedule, None, lambda t: -torch.log(cfg.schedule(t)[0]), output)


def bound(cfg: SEDDConfig) -> RateBound:
    """The score-entropy bound (R) as an integrand over t, prior term included."""
    return RateBound(diffusion(cfg))


def noise(gen: torch.Generator, x0: Tensor, cfg: SEDDConfig, slot: Slot = Slot()) -> Noise:
    """t [B] in (0, 1] float64 (stratified over the global batch, or iid) and u [B, L] for z_t."""
    return {"t": draws.times(gen, x0.shape[0], slot, cfg.antithetic), **bound(cfg).noise(gen, x0)}


def loss(apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: SEDDConfig) -> tuple[Tensor, Aux]:
    """The score-entropy bound averaged over the batch, nats per token; aux ``bpt`` in bits per token."""
    return bound_loss(bound(cfg), apply, params, x0, noise)
