r"""SEDD on an exact toy distribution: with the exact ratios (by enumeration) the score-entropy bound
plus the prior term is -log p(x0) for every x0, on the absorbing and the uniform graph.

Residual.  The bound is the KL between the forward path measure on [sigma_min, sigma_max] and the
model's; with the exact ratios the only gaps are at the two ends.  At t = 1 the model starts from pi
while q(z_1 | x0) leaves alpha_1 = exp(-sigma_max) ~ 2e-9 of mass elsewhere (its share is O(alpha_1)).
At t = 0 the chain starts from q_0(. | x0) = T_{alpha_0}(x0), alpha_0 = exp(-sigma_min), not from x0,
so the exact ratios give KL(q_0(. | x0) || p_0), p_0 the data noised as much; its difference from
-log p(x0) is O(sigma_min / p(x0)).  ``residual`` computes it exactly by enumeration, and the test
checks that it is below a tenth of the standard error for every x0.
"""

import functools
import itertools
import math

import pytest
import torch

from nanodd.methods import sedd
from nanodd.processes import mixing, readout
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.uniform import Uniform
from nanodd.schedules import Geometric
from toy import exact_ratio_apply, loss_of_each_sequence, toy_distribution

GRAPHS = {"absorbing": Absorbing(n_symbols=3), "uniform": Uniform(n_symbols=3)}


@pytest.fixture(scope="module")
def toy():
    return toy_distribution(n_symbols=3, L=3)


def residual(seqs, p, cfg):
    """KL(q_0(. | x0) || p_0) + log p(x0) for every x0, by enumeration of all K^L states: [N]."""
    process, L = cfg.process, seqs.shape[1]
    alpha_0 = cfg.schedule(torch.zeros(1, dtype=torch.float64))[0]
    states = torch.tensor(list(itertools.product(range(process.K), repeat=L)))  # [S, L]
    per_token = mixing.transition(process.prior(), mixing.onehot(seqs, process.K), alpha_0)  # [N, L, K]
    q0 = per_token[:, torch.arange(L), states].prod(-1)  # q_0(z | x0), [N, S]
    p0 = p @ q0
    kl = torch.where(q0 > 0, q0 * (q0.log() - p0.log()), 0.0).sum(-1)
    return kl + p.log()


def config(graph):
    return sedd.SEDDConfig(process=GRAPHS[graph], schedule=Geometric(), scale_by_sigma=graph == "absorbing")


@pytest.mark.parametrize("graph", GRAPHS)
def test_score_entropy_of_the_exact_ratios_is_the_exact_nll_of_every_sequence(toy, graph):
    seqs, p = toy
    cfg = config(graph)
    mean, se = loss_of_each_sequence(sedd, exact_ratio_apply(seqs, p, cfg), seqs, cfg)
    nll = -p.log()
    assert (residual(seqs, p, cfg).abs() < 0.5 * se).all()  # negligible beside the 3 s.e. tolerance
    assert (se < 0.035 * nll).all(), (se / nll).max()
    assert ((mean - nll).abs() < 3 * se).all(), (mean - nll) / se


@pytest.mark.parametrize("graph", GRAPHS)
def test_the_sedd_check_fails_with_a_flipped_log_term_or_without_the_constant(toy, graph, monkeypatch):
    seqs, p = toy
    cfg, nll = config(graph), -p.log()
    apply = exact_ratio_apply(seqs, p, cfg)
    wrong = {
        "flipped sign": lambda log_s, rho: log_s.exp() - rho - torch.xlogy(rho, rho) + rho * log_s,
        "no K(rho) term": lambda log_s, rho: log_s.exp() - rho * log_s,
    }
    for name, entropy in wrong.items():
        monkeypatch.setattr(sedd, "score_entropy", entropy)
        mean, se = loss_of_each_sequence(sedd, apply, seqs, cfg, n_batches=10)
        assert mean.isfinite().all() and ((mean - nll).abs() > 3 * se).sum() >= 20, name


def test_the_ratio_reader_scales_by_sigma_and_fixes_the_current_symbol():
    cfg = sedd.SEDDConfig(process=Absorbing(n_symbols=3))
    zt = torch.tensor([[0, 3]])
    alpha = torch.tensor([0.25], dtype=torch.float64)
    log_s = readout.log_ratios(sedd.diffusion(cfg), torch.zeros(1, 2, 4), zt, alpha)
    expected = math.log(0.25 / 0.75) - math.log(3)  # an untrained network: the ratios of a uniform x0
    assert log_s[0, 0, 0] == 0 and log_s[0, 1, 3] == 0
    torch.testing.assert_close(log_s[0, 1, :3], torch.full((3,), expected, dtype=torch.float64))
    plain = functools.partial(
        readout.log_ratios, sedd.diffusion(sedd.SEDDConfig(process=Uniform(n_symbols=3), scale_by_sigma=False))
    )
    assert (plain(torch.ones(1, 2, 3), torch.tensor([[0, 2]]), alpha) == torch.tensor([[[0, 1, 1], [1, 1, 0.0]]])).all()
