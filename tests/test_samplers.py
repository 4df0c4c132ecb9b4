"""Samplers, driven by the exact denoiser of a toy distribution: they must reproduce it, count their
real network calls, and serve D3PM (discrete T) and MDLM (continuous time) checkpoints alike."""

import pytest
import torch

from nanodd.methods import d3pm, mdlm
from nanodd.processes.absorbing import Absorbing
from nanodd.samplers import ancestral
from nanodd.schedules import Cosine, LogLinear
from toy import exact_apply, toy_distribution

PROCESS = Absorbing(n_symbols=3)
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
    assert ancestral.time_grid(D3PM, 3) == [1.0, 0.667, 0.333, 0.0]
    assert ancestral.time_grid(MDLM, 4) == [1.0, 0.75, 0.5, 0.25, 0.0]
