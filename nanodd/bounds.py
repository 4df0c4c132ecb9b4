r"""Likelihood bounds as integrands over t: L(x0) = E_{t ~ U(0, 1]} f(x0, t) (``protocols.Integrand``).

Three integrands serve every method: ``MaskedBound`` (absorbing diffusion: a weight times the masked
cross-entropy, continuous or T-step), ``StepBound`` (any process, T steps: D3PM's sum of per-step
KLs) and ``RateBound`` (any process, continuous time: the ELBO of its reverse jump rates, which is
SEDD's score entropy for a ratio network and UDLM's bound for an x0 network).

**MaskedBound.**
For a schedule alpha(t) (alpha(0) = 1, alpha(1) ~= 0) and the masked cross-entropy
NLL(z_t) = sum_{i : z_t^i = mask} -log p(x0^i | z_t), every masked-diffusion bound is

    L(x0) = E_{t ~ U(0, 1]}  w(t) * E_{z_t ~ q(z_t | x0)} NLL(z_t),                              (1)

and only the weight differs:

    continuous (Sahoo et al. 2024 MDLM eq. 10; Shi et al. 2024 MD4 eq. 5):  w(t) = -alpha'(t) / (1 - alpha(t)),
    T steps (Austin et al. 2021 D3PM, eq. 1):  t is read on the grid k/T, k = ceil(t T), and
        w = T r_k,   r_k = (alpha_bar_{k-1} - alpha_bar_k) / (1 - alpha_bar_k),   alpha_bar_k = alpha(k/T),

so (1) is  L_T = sum_{k=1}^T r_k E NLL(z_{k/T})  -- the reconstruction term (k = 1, r_1 = 1) plus
the T - 1 KL terms -- and L_inf = int_0^1 w(t) E NLL dt.  With alpha_bar_k = 1 - k/T this is
D3PM-absorbing exactly (r_k = 1/k, ``d3pm.vb_terms``).  The prior term KL(q(z_1|x0) || p) is 0
when alpha(1) = 0 and is left out otherwise (LogLinear's alpha(1) = eps, as MDLM does).
L_T >= L_inf >= -log p(x0), and L_T decreases towards L_inf as T grows.

**t -> 0.**  There w(t) ~ 1/t while a token is masked with probability ~ t, so plain Monte Carlo
has a heavy tail (log-divergent variance).  ``MaskedBound`` draws z_t conditioned on at least one
mask and multiplies by P(at least one) = 1 - alpha^L.  This is exact, as NLL = 0 without masks, and
w * (1 - alpha^L) -> L stays bounded.  ``RateBound`` does the same for any process (see there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nanodd import sampling
from nanodd.functional import Apply, Params
import nanodd.processes.mixing as mixing
from nanodd.processes.absorbing import Absorbing, masked_nll, reveal_prob
from nanodd.protocols import Aux, Diffusion, Integrand, Noise, Process, TimeInput
from nanodd.schedules import Linear, Schedule, discretize


def masked_weight(schedule: Schedule, T: int | None, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(t read on the grid, alpha there, w) of (1) for t in (0, 1] float64 [B]: continuous if T is None."""
    if T is None:
        alpha_t, dalpha_t = schedule(t)
        return t, alpha_t, -dalpha_t / (1 - alpha_t)
    k = torch.ceil(t * T).long().clamp(1, T)
    alpha_bar = discretize(schedule, T).to(t.device)
    return k.double() / T, alpha_bar[k], T * reveal_prob(alpha_bar[k], alpha_bar[k - 1])


def touched_count(alpha_t: Tensor, v: Tensor, L: int) -> Tensor:
    """m ~ Binomial(L, 1 - alpha_t) conditioned on m >= 1, by inverting v ~ U[0, 1): [B] in 1..L."""
    m = torch.arange(1, L + 1, dtype=torch.float64, device=alpha_t.device)
    alpha = alpha_t.double()[:, None]
    log_binom = math.lgamma(L + 1) - torch.lgamma(m + 1) - torch.lgamma(L - m + 1)
    log_pmf = log_binom + torch.xlogy(m, 1 - alpha) + torch.xlogy(L - m, alpha)  # [B, L]
    cdf = log_pmf.softmax(-1).cumsum(-1)  # softmax renormalises over m >= 1
    return (1 + (cdf < v[:, None]).sum(-1)).clamp(max=L)


def corrupt_some(
    process: Process, x0: Tensor, alpha_t: Tensor, u: Tensor, v: Tensor, r: Tensor
) -> tuple[Tensor, Tensor]:
    """(z_t ~ q(z_t | x0, at least one token touched), P(at least one touched) = 1 - alpha_t^L).

    A token is touched, i.e. redrawn from pi, with probability 1 - alpha_t (absorbing: masked).
    m = ``touched_count(alpha_t, v)`` tokens are touched, those with the m largest u (given m, every
    set of m positions is equally likely, as under q), and redrawn by ``process.prior_sample(r)``.
    x0, u, r: [B, L]; alpha_t, v: [B].
    """
    L = x0.shape[-1]
    m = touched_count(alpha_t, v, L)
    rank = u.argsort(-1).argsort(-1)  # 0..L-1, a uniformly random order of the positions
    zt = torch.where(rank >= (L - m)[:, None], process.prior_sample(r), x0)
    return zt, -torch.expm1(L * torch.log(alpha_t))


def identity_time(t: Tensor) -> Tensor:
    """The time input of a continuous-time network: t itself."""
    return t


@dataclass(frozen=True)
class MaskedBound:
    """The bound (1) of absorbing diffusion: ``T`` steps of ``schedule``, or L_inf when ``T`` is None.

    ``time_input`` maps t (on the bound's grid) to what the network was trained on: t T for D3PM (the
    integer step k when the bound's T is the model's), the identity for a continuous-time model.
    ``at_least_one_mask`` draws z_t conditioned on a mask (see "t -> 0" above); False draws it plainly
    from q, as the papers' training losses do (unbiased as well, but with a variance that diverges
    logarithmically as t -> 0).
    """

    process: Absorbing
    schedule: Schedule = Linear()
    T: int | None = None
    time_input: TimeInput = identity_time
    at_least_one_mask: bool = True

    def noise(self, gen: torch.Generator, x0: Tensor) -> Noise:
        """u [B, L] decides the masks; v [B] draws how many there are (``corrupt_some``)."""
        return {"u": sampling.uniforms(gen, x0.shape), "v": sampling.uniforms(gen, x0.shape[:1])}

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        """w(t) * NLL(z_t) (* P(some mask)) per sequence, nats [B]: an unbiased single-(t, z_t) estimate of (1)."""
        t_k, alpha_t, w = masked_weight(self.schedule, self.T, t)
        if self.at_least_one_mask:
            zt, p_some = corrupt_some(self.process, x0, alpha_t, noise["u"], noise["v"], noise["u"])
            w = w * p_some
        else:
            zt = self.process.corrupt(x0, alpha_t[:, None].to(noise["u"].dtype), noise["u"])
        log_p = self.process.log_p_x0(apply(params, zt, self.time_input(t_k).float()), zt)
        nll = masked_nll(log_p, x0)
        return w.to(nll.dtype) * nll


@dataclass(frozen=True)
class StepBound:
    r"""D3PM's T-step bound for any process (Austin et al. 2021, eq. 1), as an integrand over t:

        L_T(x0) = sum_{k=1}^T E_{z_{k/T} ~ q} sum_i KL(q(z_s^i | z_t, x0^i) || p(z_s^i | z_t))  +  KL(q(z_1 | x0) || pi),

    s = (k-1)/T, t = k/T; the k = 1 term is the reconstruction -log p(x0 | z_{1/T}) (z_0 = x0).  A time t
    reads k = ceil(t T) and weights its term by T.  The model's step is the x0-parameterised one of
    ``mixing`` (3), whose KL each process computes (``Process.step_kl``).
    """

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
        return {"u": sampling.uniforms(gen, x0.shape)}

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        """T * sum_i KL at step k = ceil(t T) plus the prior term, per sequence, nats [B]."""
        k = torch.ceil(t * self.T).long().clamp(1, self.T)
        alpha_bar = discretize(self.schedule, self.T).to(t.device)
        alpha_t, alpha_s = alpha_bar[k][:, None], alpha_bar[k - 1][:, None]
        zt = self.process.corrupt(x0, alpha_t.to(noise["u"].dtype), noise["u"])
        log_p = self.process.log_p_x0(apply(params, zt, self.time_input(k.double() / self.T).float()), zt)
        kl = self.process.step_kl(zt, x0, log_p, alpha_t, alpha_s).sum(-1)
        return self.T * kl.double() + self.process.prior_kl(x0, alpha_bar[-1]).sum(-1)


def bound_loss(integrand: Integrand, apply: Apply, params: Params, x0: Tensor, noise: Noise) -> tuple[Tensor, Aux]:
    """A loss that is its own bound: the integrand at noise["t"], averaged over the batch, in nats per
    token (fp32), with ``bpt`` the same in bits per token."""
    per_token = (integrand(apply, params, x0, noise["t"], noise).mean() / x0.shape[1]).float()
    return per_token, Aux(bpt=per_token / math.log(2))


def model_log_ratios(diffusion: Diffusion, logits: Tensor, zt: Tensor, alpha_t: Tensor) -> Tensor:
    """log s_y = log q_t(z^{i <- y}) / q_t(z) as the network states it, [B, L, K]: read directly from a
    ratio network (``Diffusion.log_ratios``), or, for an x0 network, mixing (6) at x = p(x0 | z_t)
    (the ratios its x0-parameterised reverse step jumps with).  alpha_t: [B]."""
    if diffusion.log_ratios is not None:
        return diffusion.log_ratios(logits, zt, alpha_t)
    p_x0 = diffusion.process.log_p_x0(logits, zt).exp()
    pi = diffusion.process.prior(zt.device, p_x0.dtype)
    return mixing.ratios(pi, p_x0, zt, alpha_t[:, None, None].to(p_x0.dtype)).clamp_min(1e-30).log()


def score_entropy(log_s: Tensor, rho: Tensor) -> Tensor:
    """s - rho + rho log(rho / s) >= 0, zero iff s = rho: SEDD's (denoising) score entropy per
    transition, s = exp(log_s) the model's ratio and rho the true one (its K(a) = a (log a - 1) term
    is rho log rho - rho)."""
    return log_s.exp() - rho + torch.where(rho > 0, rho * (rho.log() - log_s), 0.0)


@dataclass(frozen=True)
class RateBound:
    r"""The continuous-time ELBO of a process mixing towards pi, from its reverse jump rates.

    With alpha_t = exp(-sigma_t), a token jumps y -> z forward at rate sigma'_t pi_z (``mixing`` (5)).
    The reverse of the process given x0 jumps z -> y at rate sigma'_t pi_z rho_y, rho_y =
    q_t(y | x0)/q_t(z | x0), and the model's at sigma'_t pi_z s_y with its ratios s_y.  The ELBO of a
    continuous-time Markov chain (Campbell et al. 2022; SEDD, Lou et al. 2024, Thm. 3.6) is then

        -log p(x0) <= int_0^1 sigma'_t E_{z_t ~ q(.|x0)} sum_i sum_{y != z_t^i} pi_{z_t^i} [s_y - rho_y + rho_y log(rho_y / s_y)] dt
                      + KL(q(z_1 | x0) || pi),                                                     (R)

    SEDD's denoising score entropy weighted by the forward rates.  It is tight when the model's ratios
    are the data's: then the path measures agree and the gap is E_{z_1 ~ q(.|x0)} log(q(z_1)/pi(z_1)),
    0 when alpha_1 = 0.  For an x0 network the ratios are those of its reverse step (mixing (6) at
    x = p(x0 | z_t)); on the uniform process that is UDLM's bound (Schiff et al. 2024), on the absorbing
    one it reduces to MDLM's weighted masked cross-entropy (tested).  Continuous time only (T = None).
    """

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
            "u": sampling.uniforms(gen, x0.shape),
            "v": sampling.uniforms(gen, x0.shape[:1]),
            "w": sampling.uniforms(gen, x0.shape[:1]),
            "r": sampling.uniforms(gen, x0.shape),
        }

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        """The integrand of (R) at t plus the prior term, per sequence, nats [B]."""
        d = self.diffusion
        alpha_t, dalpha_t = d.schedule(t)
        pi = d.process.prior(x0.device, torch.float64)
        zt, weight = self.draw(pi, x0, alpha_t, noise)
        log_s = model_log_ratios(d, apply(params, zt, d.time_input(t).float()), zt, alpha_t)
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
        possible (absorbing: clean tokens), f(x0) = 0 and p0 = 0, MaskedBound's draw.
        """
        some, p_some = corrupt_some(self.diffusion.process, x0, alpha_t, noise["u"], noise["v"], noise["r"])
        p0 = torch.where((pi[x0] > 0).any(-1), (1 - p_some).clamp(max=0.5), 0.0)
        untouched = noise["w"] < p0
        weight = torch.where(untouched, (1 - p_some) / p0, p_some / (1 - p0))
        return torch.where(untouched[:, None], x0, some), weight
