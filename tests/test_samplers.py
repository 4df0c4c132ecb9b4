"""Samplers, driven by the exact denoiser or the exact ratios of a toy distribution: they must
reproduce it, count their real network calls, and serve D3PM (discrete T), MDLM (continuous time),
UDLM (uniform) and SEDD (ratio network) checkpoints."""

import pytest
import torch

import nanodd.processes.mixing as mixing
from nanodd.bounds import model_log_ratios
from nanodd.methods import d3pm, mdlm, sedd, udlm
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.uniform import Uniform
from nanodd.protocols import Diffusion
from nanodd.samplers import analytic, ancestral, euler, loop
from nanodd.schedules import Cosine, LogLinear
from toy import exact_apply, exact_ratio_apply, exact_uniform_apply, toy_distribution

PROCESS = Absorbing(n_symbols=3)
UNIFORM = Uniform(n_symbols=3)
D3PM = d3pm.diffusion(d3pm.D3PMConfig(T=1000, process=PROCESS))
MDLM = mdlm.diffusion(mdlm.MDLMConfig(schedule=LogLinear(), process=PROCESS))


def tv_to_p(x, p):
    """Total variation between the empirical distribution of x [n, 3] and p over the 27 toy sequences."""
    freq = torch.bincount((x * torch.tensor([9, 3, 1])).sum(-1), minlength=len(p)).double() / len(x)
    return float(0.5 * (freq - p).abs().sum())


@pytest.mark.parametrize("diffusion", [D3PM, MDLM], ids=["d3pm-T1000", "mdlm-continuous"])
def test_ancestral_with_the_exact_denoiser_reproduces_p(diffusion):
    seqs, p = toy_distribution(n_symbols=3, L=3)
    x, nfe = ancestral.sample(exact_apply(seqs, p, 3), None, diffusion, batch_size=20_000, seq_len=3,
                              generator=torch.Generator().manual_seed(0), steps=1000)
    assert (x < 3).all() and nfe <= 1000
    assert tv_to_p(x, p) < 0.03  # a sampler ignoring correlations between tokens is at 0.42


def test_network_calls_are_counted_and_silent_steps_skipped():
    seqs, p = toy_distribution(n_symbols=3, L=3)
    calls, states = [], []
    exact = exact_apply(seqs, p, 3)

    def counting(params, zt, t):
        calls.append(float(t[0]))
        return exact(params, zt, t)

    diffusion = d3pm.diffusion(d3pm.D3PMConfig(T=100, process=PROCESS))
    x, nfe = ancestral.sample(counting, None, diffusion, batch_size=1, seq_len=3,
                              generator=torch.Generator().manual_seed(3), on_step=lambda s, z: states.append(z))
    assert nfe == len(calls) and 1 <= nfe <= 3  # one reveal per token at most: at most L calls, not T
    assert all(t == round(t) and 1 <= t <= 100 for t in calls)  # D3PM's network only sees integer steps
    assert len(states) == 100 and (states[-1] == x).all() and (x < 3).all()
    masks = torch.stack([(z == 3).sum() for z in states])
    assert (masks.diff() <= 0).all()  # tokens are only ever revealed
    with pytest.raises(ValueError, match="steps"):
        ancestral.sample(counting, None, diffusion, batch_size=1, seq_len=3, generator=torch.Generator(), steps=0)
    with pytest.raises(ValueError, match="steps"):
        ancestral.sample(counting, None, diffusion, batch_size=1, seq_len=3, generator=torch.Generator(), steps=101)


@pytest.mark.parametrize("diffusion", [D3PM, mdlm.diffusion(mdlm.MDLMConfig(schedule=Cosine(), process=PROCESS))],
                         ids=["d3pm", "mdlm-cosine"])
def test_fewer_steps_drift_by_parallel_decoding_and_converge(diffusion):
    """With few steps several tokens are revealed at once from factorised marginals, so the sample
    distribution drifts from p; it must converge as steps grow."""
    seqs, p = toy_distribution(n_symbols=3, L=3)
    tvs = []
    for steps in (1, 100):
        x, nfe = ancestral.sample(exact_apply(seqs, p, 3), None, diffusion, batch_size=20_000, seq_len=3,
                                  generator=torch.Generator().manual_seed(1), steps=steps)
        assert nfe == steps
        tvs.append(tv_to_p(x, p))
    assert tvs[0] > 0.1 and tvs[1] < 0.04, tvs


def test_a_discrete_grid_snaps_to_the_models_steps():
    assert loop.time_grid(D3PM, 3) == [1.0, 0.667, 0.333, 0.0]
    assert loop.time_grid(MDLM, 4) == [1.0, 0.75, 0.5, 0.25, 0.0]


def sedd_diffusion(graph, schedule=LogLinear()):
    cfg = sedd.SEDDConfig(process=graph, schedule=schedule, scale_by_sigma=isinstance(graph, Absorbing))
    return cfg, sedd.diffusion(cfg)


@pytest.mark.parametrize("sampler", [analytic, euler], ids=["analytic", "euler"])
@pytest.mark.parametrize("graph", [PROCESS, UNIFORM], ids=["absorbing", "uniform"])
def test_ratio_samplers_with_the_exact_ratios_reproduce_p(sampler, graph):
    """SEDD's samplers driven by the exact ratios (by enumeration): close to p at 40 steps, far at 2
    (each step factorises over positions, so few steps cannot carry the correlations)."""
    seqs, p = toy_distribution(n_symbols=3, L=3)
    cfg, diffusion = sedd_diffusion(graph)
    tvs = {}
    for steps in (2, 40):
        x, nfe = sampler.sample(exact_ratio_apply(seqs, p, cfg), None, diffusion, batch_size=20_000, seq_len=3,
                                generator=torch.Generator().manual_seed(0), steps=steps)
        assert (x < 3).all() and nfe == steps
        tvs[steps] = tv_to_p(x, p)
    assert tvs[40] < 0.05 and tvs[2] > 0.2, tvs


def test_uniform_ancestral_with_the_exact_denoiser_reproduces_p_and_is_the_analytic_step():
    """UDLM's ancestral step with the exact x0 network p(x0^i | z_t^{-i}) is SEDD's analytic step with
    the exact ratios: the same draws give the same samples, and they reproduce p."""
    seqs, p = toy_distribution(n_symbols=3, L=3)
    cfg = udlm.UDLMConfig(process=UNIFORM)
    apply = exact_uniform_apply(seqs, p, UNIFORM, lambda t: cfg.schedule(t)[0])
    x, nfe = ancestral.sample(apply, None, udlm.diffusion(cfg), batch_size=20_000, seq_len=3,
                              generator=torch.Generator().manual_seed(0), steps=40)
    assert nfe == 40 and tv_to_p(x, p) < 0.05
    ratio_cfg, diffusion = sedd_diffusion(UNIFORM)
    y, _ = analytic.sample(exact_ratio_apply(seqs, p, ratio_cfg), None, diffusion, batch_size=20_000, seq_len=3,
                           generator=torch.Generator().manual_seed(0), steps=40)
    assert (x == y).float().mean() > 0.999  # equal up to float ties at a few Gumbel-max boundaries


@pytest.mark.parametrize("process", [PROCESS, UNIFORM], ids=["absorbing", "uniform"])
def test_the_analytic_step_of_an_x0_network_is_its_ancestral_step(process):
    """(A) with the ratios an x0 network implies equals mixing (3), the x0-parameterised reverse step."""
    g = torch.Generator().manual_seed(0)
    zt = torch.randint(0, process.K, (64, 5), generator=g)
    logits = torch.randn(64, 5, process.K, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.9 + 0.1
    alpha_t, alpha_s = LogLinear()(t)[0], LogLinear()(t - 0.05)[0]
    diffusion = Diffusion(process, LogLinear(), None, lambda t: t)
    log_s = model_log_ratios(diffusion, logits, zt, alpha_t)
    pi, p_x0 = process.prior(), process.log_p_x0(logits, zt).exp()
    expected = mixing.reverse_probs(pi, zt, p_x0, alpha_t[:, None, None], alpha_s[:, None, None])
    torch.testing.assert_close(analytic.step_probs(process, zt, log_s, alpha_t, alpha_s), expected)


def test_ratio_samplers_stop_calling_once_nothing_can_move_and_ancestral_refuses_ratios():
    seqs, p = toy_distribution(n_symbols=3, L=3)
    cfg, diffusion = sedd_diffusion(PROCESS)
    for sampler in (analytic, euler):
        x, nfe = sampler.sample(exact_ratio_apply(seqs, p, cfg), None, diffusion, batch_size=1, seq_len=3,
                                generator=torch.Generator().manual_seed(0), steps=1000)
        assert (x < 3).all() and 1 <= nfe < 1000  # no call after the last mask is revealed
    with pytest.raises(ValueError, match="analytic or euler"):
        ancestral.sample(exact_ratio_apply(seqs, p, cfg), None, diffusion, batch_size=1, seq_len=3,
                         generator=torch.Generator(), steps=10)
