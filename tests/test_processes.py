"""Closed forms of the absorbing process against brute-force products of explicit K x K matrices."""

import torch

from nanodd import processes
from nanodd.schedules import alpha_bars_from_betas, d3pm_absorbing_betas

K, T = 5, 10
M = K - 1  # mask id


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
        torch.testing.assert_close(processes.marginal_probs(x0, alpha_bar[t], K), Qbar_t[x0])


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
                    closed = processes.posterior_probs(torch.tensor(zt), torch.tensor(x0), alpha_bar[t], alpha_bar[s], K)
                    torch.testing.assert_close(closed, brute, msg=f"t={t} s={s} x0={x0} zt={zt}")


def test_corrupt_frequencies_and_nesting():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, K - 1, (400, 250), generator=g)
    u = torch.rand(x0.shape, generator=g)
    z_lo, z_hi = processes.corrupt(x0, torch.tensor(0.7), u, M), processes.corrupt(x0, torch.tensor(0.2), u, M)
    assert abs((z_lo == M).float().mean() - 0.3) < 0.005 and abs((z_hi == M).float().mean() - 0.8) < 0.005
    assert ((z_lo == M) <= (z_hi == M)).all()  # shared uniforms: masks are nested in t
    assert ((z_hi == x0) | (z_hi == M)).all()


def test_posterior_sample_frequencies_match_probs():
    g = torch.Generator().manual_seed(1)
    zt = torch.full((200_000, 1), M)
    x0 = torch.full_like(zt, 2)
    u = torch.rand(zt.shape, generator=g)
    alpha_t, alpha_s = torch.tensor(0.3), torch.tensor(0.5)
    zs = processes.posterior_sample(zt, x0, alpha_t, alpha_s, u, M)
    probs = processes.posterior_probs(zt[:1, 0], x0[:1, 0], alpha_t, alpha_s, K)[0]
    freq = torch.bincount(zs.flatten(), minlength=K).double() / zs.numel()
    torch.testing.assert_close(freq, probs, atol=3e-3, rtol=0)
    clean = torch.tensor([[1]])
    assert processes.posterior_sample(clean, torch.tensor([[3]]), alpha_t, alpha_s, torch.zeros(1, 1), M) == 1
