"""Both processes against brute force: explicit K x K transition matrices built from the papers'
definitions (D3PM App. A.2: absorbing Q_t = (1 - beta_t) I + beta_t 1 e_m^T, uniform
Q_t = (1 - beta_t) I + beta_t / N 1 1^T) give every marginal, posterior, per-step KL, rate and ratio
that the closed forms compute, for every s < t (K = 5, T = 10).  Then sampling frequencies and the
absorbing output parameterisation."""

import math

import pytest
import torch

from nanodd.processes import mixing
from nanodd.processes.absorbing import Absorbing, log_softmax_at
from nanodd.processes.uniform import Uniform
from nanodd.schedules import Cosine, discretize
from toy import alpha_bars_from_betas, d3pm_absorbing_betas

T = 10
ABSORBING, UNIFORM = Absorbing(n_symbols=4), Uniform(n_symbols=5)  # K = 5 ids for both
M = ABSORBING.mask_id


def step_matrices(process):
    """Q_t for t = 0..T (Q_0 = I) from the papers' definitions, rows index z_{t-1}; and alpha_bar_t."""
    K, eye, ones = process.K, torch.eye(process.K, dtype=torch.float64), torch.ones(process.K, 1, dtype=torch.float64)
    if isinstance(process, Absorbing):
        betas = d3pm_absorbing_betas(T)
        e_m = torch.nn.functional.one_hot(torch.tensor(M), K).double()
        return [(1 - b) * eye + b * ones * e_m for b in betas], alpha_bars_from_betas(betas)
    alpha_bar = discretize(Cosine(), T)
    betas = torch.cat([torch.zeros(1, dtype=torch.float64), 1 - alpha_bar[1:] / alpha_bar[:-1]])
    return [(1 - b) * eye + b / K * ones @ ones.T for b in betas], alpha_bar


def product(Qs, K):
    out = torch.eye(K, dtype=torch.float64)
    for Q in Qs:
        out = out @ Q
    return out


def data_ids(process):
    return range(process.n_symbols)


PROCESSES = pytest.mark.parametrize("process", [ABSORBING, UNIFORM], ids=["absorbing", "uniform"])


@PROCESSES
def test_marginals_equal_matrix_products(process):
    Qs, alpha_bar = step_matrices(process)
    pi, x0 = process.prior(), torch.tensor(list(data_ids(process)))
    for t in range(T + 1):
        brute = product(Qs[1 : t + 1], process.K)[x0]
        torch.testing.assert_close(mixing.transition(pi, mixing.onehot(x0, process.K), alpha_bar[t]), brute)


@PROCESSES
def test_posteriors_equal_bayes_rule_on_matrices(process):
    """q(z_s | z_t, x0) = q(z_t | z_s) q(z_s | x0) / q(z_t | x0) for every s < t, x0, reachable z_t."""
    Qs, alpha_bar = step_matrices(process)
    pi, K = process.prior(), process.K
    for t in range(1, T + 1):
        for s in range(t):
            Q_st, Qbar_s, Qbar_t = product(Qs[s + 1 : t + 1], K), product(Qs[1 : s + 1], K), product(Qs[1 : t + 1], K)
            for x0 in data_ids(process):
                for zt in range(K):
                    if Qbar_t[x0, zt] == 0:
                        continue
                    brute = Q_st[:, zt] * Qbar_s[x0] / Qbar_t[x0, zt]
                    closed = mixing.reverse_probs(
                        pi, torch.tensor(zt), mixing.onehot(torch.tensor(x0), K), alpha_bar[t], alpha_bar[s]
                    )
                    torch.testing.assert_close(closed, brute, msg=f"t={t} s={s} x0={x0} zt={zt}")


@PROCESSES
def test_per_step_kl_equals_the_generic_matrix_kl(process):
    """L_{t-1} = KL(q(z_{t-1} | z_t, x0) || p(z_{t-1} | z_t)), the model's step from D3PM eq. 4 on
    the matrices, p(z_{t-1} | z_t) propto Q_t[:, z_t] * (p~(x0 | z_t) Qbar_{t-1}); closed form per process."""
    Qs, alpha_bar = step_matrices(process)
    g = torch.Generator().manual_seed(0)
    B, L, K = 32, 6, process.K
    x0 = torch.randint(0, process.n_symbols, (B, L), generator=g)
    for t in range(1, T + 1):
        zt = process.corrupt(x0, alpha_bar[t], torch.rand(B, L, generator=g, dtype=torch.float64))
        log_p = process.log_p_x0(torch.randn(B, L, K, generator=g, dtype=torch.float64), zt)
        closed = process.step_kl(zt, x0, log_p, alpha_bar[t], alpha_bar[t - 1])
        q_fwd = Qs[t][:, zt].permute(1, 2, 0)  # q(z_t | z_{t-1} = k): [B, L, K]
        Qbar = product(Qs[1:t], K)
        q_post = q_fwd * Qbar[x0]
        q_post = q_post / q_post.sum(-1, keepdim=True)
        p = q_fwd * (log_p.exp() @ Qbar)
        p = p / p.sum(-1, keepdim=True)
        kl = torch.where(q_post > 0, q_post * (q_post.log() - p.log()), torch.zeros_like(q_post)).sum(-1)
        torch.testing.assert_close(closed, kl, msg=f"t={t}")
        torch.testing.assert_close(
            mixing.step_kl(process.prior(), zt, x0, log_p.exp(), alpha_bar[t], alpha_bar[t - 1]),
            kl,
            msg=f"generic, t={t}",
        )


@PROCESSES
def test_rates_are_the_derivative_of_the_kernel_and_ratios_are_marginal_ratios(process):
    """rates_into(z)[y] = lim (T_{exp(-h)}(y -> z) - delta) / h;  ratios = q(y | x0) / q(z | x0)."""
    pi, K, h = process.prior(), process.K, 1e-7
    z = torch.arange(K)
    identity = mixing.onehot(z, K)
    numeric = (mixing.transition_into(pi, z, torch.tensor(math.exp(-h), dtype=torch.float64)) - identity) / h
    torch.testing.assert_close(mixing.rates_into(pi, z), numeric * (1 - identity), atol=1e-6, rtol=1e-6)
    Qs, alpha_bar = step_matrices(process)
    Qbar = product(Qs[1:5], K)
    for x0 in data_ids(process):
        for zt in range(K):
            if Qbar[x0, zt] > 0:
                ratio = mixing.ratios(pi, mixing.onehot(torch.tensor(x0), K), torch.tensor(zt), alpha_bar[4])
                torch.testing.assert_close(ratio, Qbar[x0] / Qbar[x0, zt])


@PROCESSES
def test_corruption_and_prior_frequencies_match_the_marginals(process):
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((200_000,), 2)
    for alpha in (0.9, 0.4, 0.0):
        zt = process.corrupt(x0, torch.tensor(alpha), torch.rand(x0.shape, generator=g))
        freq = torch.bincount(zt, minlength=process.K).double() / len(zt)
        expected = mixing.transition(process.prior(), mixing.onehot(x0[:1], process.K), torch.tensor(alpha))[0]
        torch.testing.assert_close(freq, expected, atol=4e-3, rtol=0)
    prior = torch.bincount(process.prior_sample(torch.rand(x0.shape, generator=g)), minlength=process.K) / len(x0)
    torch.testing.assert_close(prior.double(), process.prior(), atol=4e-3, rtol=0)


@PROCESSES
def test_reverse_sample_frequencies_match_the_model_step(process):
    """Drawing z_s from the process's reverse step, for a fixed denoiser output, follows mixing (3)."""
    g = torch.Generator().manual_seed(2)
    n, K = 200_000, process.K
    zt = torch.full((n, 1), M if isinstance(process, Absorbing) else 1)
    log_p = process.log_p_x0(torch.tensor([0.5, -1.0, 2.0, 0.0, 0.3]).expand(n, 1, K), zt)
    alpha_t, alpha_s = torch.tensor([[0.3]]), torch.tensor([[0.6]])
    zs = process.reverse_sample(
        zt,
        log_p,
        alpha_t,
        alpha_s,
        torch.rand(n, 1, generator=g),
        -torch.log(-torch.log(torch.rand(n, 1, K, generator=g))),
    )
    freq = torch.bincount(zs.flatten(), minlength=K).double() / n
    expected = mixing.reverse_probs(process.prior(), zt[:1, 0], log_p[:1, 0].double().exp(), alpha_t, alpha_s)[0]
    torch.testing.assert_close(freq, expected, atol=4e-3, rtol=0)


def test_absorbing_corruption_nests_and_posterior_keeps_clean_tokens():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, M, (400, 250), generator=g)
    u = torch.rand(x0.shape, generator=g)
    z_lo, z_hi = ABSORBING.corrupt(x0, torch.tensor(0.7), u), ABSORBING.corrupt(x0, torch.tensor(0.2), u)
    assert ((z_lo == M) <= (z_hi == M)).all()  # shared uniforms: masks are nested in t
    assert ((z_hi == x0) | (z_hi == M)).all() and (ABSORBING.prior_sample(u) == M).all()
    clean, alpha_t, alpha_s = torch.tensor([[1]]), torch.tensor(0.3), torch.tensor(0.5)
    assert ABSORBING.posterior_sample(clean, torch.tensor([[3]]), alpha_t, alpha_s, torch.zeros(1, 1)) == 1
    assert not ABSORBING.moves(clean, alpha_t, alpha_s, torch.zeros(1, 1)).any()


def test_subs_output_never_predicts_the_mask_and_carries_clean_tokens():
    K = ABSORBING.K
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 6, K, generator=g)
    zt = torch.tensor([[M, 0, M, 3, 2, M]] * 3)
    log_p = ABSORBING.log_p_x0(logits, zt)
    masked = zt == M
    torch.testing.assert_close(log_p[masked].exp().sum(-1), torch.ones(int(masked.sum())))
    assert torch.isneginf(log_p[masked][:, M]).all() and torch.isfinite(log_p[masked][:, :M]).all()
    expected = torch.log_softmax(logits[..., :M], -1)
    torch.testing.assert_close(log_p[masked][:, :M], expected[masked])
    carried = log_p[~masked]  # probability 1 on z_t itself
    assert (carried.exp() == torch.nn.functional.one_hot(zt[~masked], K)).all()
    # so the NLL of x0 counts masked tokens only; log_p_of_x0 is log_p gathered at x0, without the table
    x0 = torch.where(masked, torch.tensor(1), zt)
    nll = -ABSORBING.log_p_of_x0(logits, zt, x0).sum(-1)
    torch.testing.assert_close(nll, -(expected[..., 1] * masked).sum(-1))
    torch.testing.assert_close(nll, -log_p.gather(-1, x0[..., None]).squeeze(-1).sum(-1))
    changed = torch.where(masked, 1, (zt + 1) % M)  # a changed clean token has probability 0
    assert torch.isinf(ABSORBING.log_p_of_x0(logits, zt, changed)).sum() == (~masked).sum()


def test_log_p_of_x0_has_the_gradient_of_the_gathered_table():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, ABSORBING.K, generator=g, dtype=torch.float64, requires_grad=True)
    zt = torch.tensor([[M, 0, M, M, 2], [1, M, M, 3, M]])
    x0 = torch.where(zt == M, torch.randint(0, M, zt.shape, generator=g), zt)
    table = ABSORBING.log_p_x0(logits, zt).gather(-1, x0[..., None]).squeeze(-1)
    (want,) = torch.autograd.grad(table.sum(), logits)
    (have,) = torch.autograd.grad(ABSORBING.log_p_of_x0(logits, zt, x0).sum(), logits)
    torch.testing.assert_close(have, want, rtol=0, atol=1e-12)
    functional = torch.func.grad(lambda lg: ABSORBING.log_p_of_x0(lg, zt, x0).sum())(logits.detach())
    torch.testing.assert_close(functional, want, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda lg: log_softmax_at(lg, x0, M), (logits,))  # its in-place backward
