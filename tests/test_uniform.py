"""Uniform-state diffusion on an exact toy distribution: D3PM-uniform's T-step bound computed exactly,
UDLM's continuous bound by its training loss, and the rate bound against MDLM's on absorbing noise."""

import itertools

import pytest
import torch

from nanodd.methods import d3pm, sedd, udlm
from nanodd.methods.mdlm import MaskedBound
from nanodd.methods.sedd import RateBound
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.uniform import Uniform
from nanodd.protocols import Diffusion, identity_time
from nanodd.schedules import Cosine, Linear, LogLinear
from toy import entropy, exact_apply, exact_uniform_apply, loss_of_each_sequence, toy_distribution

TOY = Uniform(n_symbols=3)


@pytest.fixture(scope="module")
def toy():
    return toy_distribution(n_symbols=3, L=3)


def exact_d3pm_bound(T, seqs, p, cfg):
    """E_{x0 ~ p} L_T(x0) in nats with every expectation exact: every step k and every z_t, weighted
    by q(z_t | x0) p(x0), through ``d3pm.StepBound.terms`` (uniforms chosen to realise each z_t)."""
    (N, L), n = seqs.shape, TOY.n_symbols
    states = torch.tensor(list(itertools.product(range(n), repeat=L)))
    x0, zt = seqs.repeat_interleave(len(states), 0), states.repeat(N, 1)
    alpha_bar = d3pm.alpha_bars(cfg)
    apply = exact_uniform_apply(seqs, p, TOY, lambda t_in: cfg.schedule(t_in / T)[0])
    total = 0.0
    for k in range(1, T + 1):
        a = alpha_bar[k]
        u = torch.where(zt == x0, 0.0, a + (1 - a) * (zt + 0.5) / n)  # keep, or redraw exactly z_t
        q = torch.where(zt == x0, a + (1 - a) / n, (1 - a) / n).prod(-1)
        vb, _ = d3pm.step_bound(cfg).terms(apply, None, x0, torch.full((len(x0),), k), u)
        total += float((vb.view(N, -1) * q.view(N, -1) * p[:, None]).sum())
    return total  # the prior term is 0: alpha_bar_T = 0 for the cosine schedule


def test_d3pm_uniform_exact_bound_is_above_the_entropy_and_decreases_towards_it(toy):
    seqs, p = toy
    H = entropy(p)
    gaps = [
        exact_d3pm_bound(T, seqs, p, d3pm.D3PMConfig(T=T, schedule=Cosine(), process=TOY)) - H for T in (10, 100, 1000)
    ]
    assert all(g > 0 for g in gaps) and gaps[0] > gaps[1] > gaps[2], gaps
    assert gaps[2] < 0.02 * gaps[0], gaps


@pytest.mark.parametrize("schedule", [Cosine(), LogLinear(eps=1e-3)], ids=lambda s: type(s).__name__)
def test_udlm_bound_of_the_exact_denoiser_is_the_exact_nll_of_every_sequence(toy, schedule):
    """With x_theta(z_t)^i = p(x0^i | z_t^{-i}) the model's jump rates are the data's, so the bound is
    -log p(x0) + E_{q(z_1|x0)} log(q(z_1)/pi(z_1)): exactly for alpha_1 = 0 (cosine), and up to
    O(alpha_1^2) ~ 1e-6 nats for log-linear's alpha_1 = eps, whose prior term the bound includes."""
    seqs, p = toy
    apply = exact_uniform_apply(seqs, p, TOY, lambda t: schedule(t)[0])
    mean, se = loss_of_each_sequence(udlm, apply, seqs, udlm.UDLMConfig(schedule=schedule, process=TOY))
    nll = -p.log()
    assert (se < 0.035 * nll).all(), (se / nll).max()
    assert ((mean - nll).abs() < 3 * se).all(), (mean - nll) / se


def test_the_udlm_check_fails_for_a_denoiser_that_sees_its_own_token_or_a_flipped_log_term(toy, monkeypatch):
    seqs, p = toy
    cfg, nll = udlm.UDLMConfig(schedule=Cosine(), process=TOY), -p.log()
    exact = exact_uniform_apply(seqs, p, TOY, lambda t: Cosine()(t)[0])
    own = exact_uniform_apply(seqs, p, TOY, lambda t: Cosine()(t)[0], sees_own_token=True)
    mean, se = loss_of_each_sequence(udlm, own, seqs, cfg, n_batches=10)
    assert ((mean - nll).abs() > 3 * se).sum() >= 20
    monkeypatch.setattr(
        sedd, "score_entropy", lambda log_s, rho: log_s.exp() - rho - torch.xlogy(rho, rho) + rho * log_s
    )
    mean, se = loss_of_each_sequence(udlm, exact, seqs, cfg, n_batches=10)
    assert mean.isfinite().all() and ((mean - nll).abs() > 3 * se).sum() >= 20


def test_on_absorbing_noise_the_rate_bound_is_mdlms_masked_bound_draw_for_draw(toy):
    """For an x0 network on absorbing noise the rates bound's integrand equals -alpha'/(1 - alpha)
    times the masked cross-entropy, for every draw (the same z_t from the same uniforms)."""
    seqs, p = toy
    process, apply = Absorbing(n_symbols=3), exact_apply(seqs, p, 3)
    g = torch.Generator().manual_seed(0)
    x0 = seqs[torch.multinomial(p, 512, replacement=True, generator=g)]
    t = torch.rand(512, generator=g, dtype=torch.float64).clamp(min=1e-3)
    for schedule in (Linear(), Cosine()):
        rate = RateBound(Diffusion(process, schedule, None, identity_time))
        noise = rate.noise(g, x0)
        torch.testing.assert_close(
            rate(apply, None, x0, t, noise), MaskedBound(process, schedule)(apply, None, x0, t, noise)
        )
