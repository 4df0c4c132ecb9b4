"""The absorbing process: closed forms against brute-force products of explicit K x K matrices, and
its output parameterisation."""

import math

import torch

from nanodd.processes.absorbing import Absorbing, masked_nll
from nanodd.schedules import alpha_bars_from_betas, d3pm_absorbing_betas

K, T = 5, 10
PROCESS = Absorbing(n_symbols=K - 1)
M = PROCESS.mask_id


def transition_matrices():
    """Q_t = (1 - beta_t) I + beta_t 1 e_m^T for t = 0..T (Q_0 = I), rows index x_{t-1}."""
    betas = d3pm_absorbing_betas(T)
    e_m = torch.nn.functional.one_hot(torch.tensor(M), K).double()
    return [(1 - b) * torch.eye(K, dtype=torch.float64) + b * torch.ones(K, 1, dtype=torch.float64) * e_m
            for b in betas]


def product(Qs):
    out = torch.eye(K, dtype=torch.float64)
    for Q in Qs:
        out = out @ Q
    return out


def test_marginals_equal_matrix_products():
    Qs, alpha_bar = transition_matrices(), alpha_bars_from_betas(d3pm_absorbing_betas(T))
    x0 = torch.arange(K - 1)
    for t in range(T + 1):
        Qbar_t = product(Qs[1 : t + 1])
        torch.testing.assert_close(PROCESS.marginal_probs(x0, alpha_bar[t]), Qbar_t[x0])


def test_posteriors_equal_bayes_rule_on_matrices():
    """q(z_s | z_t, x0) = q(z_t | z_s) q(z_s | x0) / q(z_t | x0) for every s < t, x0, reachable z_t."""
    Qs, alpha_bar = transition_matrices(), alpha_bars_from_betas(d3pm_absorbing_betas(T))
    for t in range(1, T + 1):
        for s in range(t):
            Q_st, Qbar_s, Qbar_t = product(Qs[s + 1 : t + 1]), product(Qs[1 : s + 1]), product(Qs[1 : t + 1])
            for x0 in range(K - 1):
                for zt in range(K):
                    if Qbar_t[x0, zt] == 0:
                        continue
                    brute = Q_st[:, zt] * Qbar_s[x0] / Qbar_t[x0, zt]
                    closed = PROCESS.posterior_probs(torch.tensor(zt), torch.tensor(x0), alpha_bar[t], alpha_bar[s])
                    torch.testing.assert_close(closed, brute, msg=f"t={t} s={s} x0={x0} zt={zt}")


def test_corrupt_frequencies_and_nesting():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, K - 1, (400, 250), generator=g)
    u = torch.rand(x0.shape, generator=g)
    z_lo, z_hi = PROCESS.corrupt(x0, torch.tensor(0.7), u), PROCESS.corrupt(x0, torch.tensor(0.2), u)
    assert abs((z_lo == M).float().mean() - 0.3) < 0.005 and abs((z_hi == M).float().mean() - 0.8) < 0.005
    assert ((z_lo == M) <= (z_hi == M)).all()  # shared uniforms: masks are nested in t
    assert ((z_hi == x0) | (z_hi == M)).all()
    assert (PROCESS.prior_sample(u) == M).all()


def test_posterior_sample_frequencies_match_probs():
    g = torch.Generator().manual_seed(1)
    zt = torch.full((200_000, 1), M)
    x0 = torch.full_like(zt, 2)
    u = torch.rand(zt.shape, generator=g)
    alpha_t, alpha_s = torch.tensor(0.3), torch.tensor(0.5)
    zs = PROCESS.posterior_sample(zt, x0, alpha_t, alpha_s, u)
    probs = PROCESS.posterior_probs(zt[:1, 0], x0[:1, 0], alpha_t, alpha_s)[0]
    freq = torch.bincount(zs.flatten(), minlength=K).double() / zs.numel()
    torch.testing.assert_close(freq, probs, atol=3e-3, rtol=0)
    clean = torch.tensor([[1]])
    assert PROCESS.posterior_sample(clean, torch.tensor([[3]]), alpha_t, alpha_s, torch.zeros(1, 1)) == 1
    assert not PROCESS.moves(clean, alpha_t, alpha_s, torch.zeros(1, 1)).any()


def test_subs_output_never_predicts_the_mask_and_carries_clean_tokens():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 6, K, generator=g)
    zt = torch.tensor([[M, 0, M, 3, 2, M]] * 3)
    log_p = PROCESS.log_p_x0(logits, zt)
    masked = zt == M
    torch.testing.assert_close(log_p[masked].exp().sum(-1), torch.ones(int(masked.sum())))
    assert torch.isneginf(log_p[masked][:, M]).all() and torch.isfinite(log_p[masked][:, :M]).all()
    expected = torch.log_softmax(logits[..., :M], -1)
    torch.testing.assert_close(log_p[masked][:, :M], expected[masked])
    carried = log_p[~masked]  # probability 1 on z_t itself
    assert (carried.exp() == torch.nn.functional.one_hot(zt[~masked], K)).all()
    # so the NLL of x0 counts masked tokens only
    x0 = torch.where(masked, torch.tensor(1), zt)
    torch.testing.assert_close(masked_nll(log_p, x0), -(expected[..., 1] * masked).sum(-1))
    assert math.isinf(float(masked_nll(log_p, torch.where(masked, 1, (zt + 1) % M)).max()))  # a changed clean token
