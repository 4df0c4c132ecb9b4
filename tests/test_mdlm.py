"""MDLM / MD4: the continuous-time NELBO is exact for the exact denoiser, its T-step form is D3PM's
bound, antithetic times tile the global batch and lower the variance, and the loss composes."""

import math

import pytest
import torch

from nanodd.functional import make_apply, params_of
from nanodd.methods import mdlm
from nanodd.methods.mdlm import masked_weight
from nanodd.model import DiT, DiTConfig
from nanodd.processes.absorbing import Absorbing
from nanodd.protocols import Slot
from nanodd.schedules import Cosine, Linear, LogLinear
from toy import exact_apply, exact_bound, loss_of_each_sequence, toy_distribution

TOY = Absorbing(n_symbols=3)


@pytest.fixture(scope="module")
def toy():
    seqs, p = toy_distribution(n_symbols=3, L=3)
    return seqs, p, exact_apply(seqs, p, TOY.mask_id)


def wrong_weight(schedule, T, t):
    """The weight without its 1/(1 - alpha) factor."""
    t_k, alpha_t, w = masked_weight(schedule, T, t)
    return t_k, alpha_t, w * (1 - alpha_t)


@pytest.mark.parametrize("schedule", [Linear(), Cosine(), LogLinear(eps=1e-3)], ids=lambda s: type(s).__name__)
def test_nelbo_of_the_exact_denoiser_is_the_exact_nll_of_every_sequence(toy, schedule):
    """Masked diffusion with exact conditionals is an exact any-order autoregressive model, whatever
    alpha_t.  Log-linear's alpha_1 = eps leaves out int_{1-eps}^1 (1/s) E_s[NLL] ds ~ eps * 3 ln 3 ~ 0.003
    nats (substitute s = (1 - eps) t), far below the standard error."""
    seqs, p, apply = toy
    mean, se = loss_of_each_sequence(mdlm, apply, seqs, mdlm.MDLMConfig(schedule=schedule, process=TOY))
    nll = -p.log()
    assert (se < 0.01 * nll).all(), (se / nll).max()
    assert ((mean - nll).abs() < 3 * se).all(), (mean - nll) / se


def test_the_exactness_check_fails_without_the_one_over_one_minus_alpha_factor(toy, monkeypatch):
    seqs, p, apply = toy
    monkeypatch.setattr(mdlm, "masked_weight", wrong_weight)
    mean, se = loss_of_each_sequence(mdlm, apply, seqs, mdlm.MDLMConfig(schedule=Linear(), process=TOY), n_batches=20)
    assert ((mean + p.log()).abs() > 3 * se).sum() >= 20


@pytest.mark.parametrize("T", [2, 4, 20])
def test_discrete_T_loss_computed_exactly_is_the_d3pm_bound(toy, T):
    """Every grid cell k (its midpoint time) and every mask pattern (u = +1 masks, u = -1 keeps),
    weighted by their probabilities: E over t and z_t of MDLM's T-step integrand = D3PM's L_vb.
    (Enumerating mask patterns needs the plain draw of z_t; both draws have the same expectation.)"""
    seqs, p, apply = toy
    N, L = seqs.shape
    cfg = mdlm.MDLMConfig(schedule=Linear(), T=T, at_least_one_mask=False, process=TOY)
    patterns = torch.tensor([[(m >> i) & 1 for i in range(L)] for m in range(2**L)])
    x0, u = seqs.repeat_interleave(len(patterns), 0), (2.0 * patterns - 1).repeat(N, 1)
    total = 0.0
    for k in range(1, T + 1):
        alpha = 1 - k / T
        n_masked = patterns.sum(-1)
        weight = (1 - alpha) ** n_masked * alpha ** (L - n_masked)  # [P]
        t = torch.full((len(x0),), (k - 0.5) / T, dtype=torch.float64)
        nelbo = mdlm.bound(cfg)(apply, None, x0, t, {"u": u})
        total += float((nelbo.view(N, -1) * weight * p[:, None]).sum()) / T
    assert total == pytest.approx(exact_bound(T, seqs, p, apply), rel=1e-6)


def test_antithetic_times_tile_the_global_batch_once():
    """2 ranks x 2 accumulation steps of 8 sequences: one t in each of the 32 strata of (0, 1]."""
    cfg, x0 = mdlm.MDLMConfig(), torch.zeros(8, 5, dtype=torch.long)
    times = torch.cat(
        [
            mdlm.noise(torch.Generator().manual_seed(10 * rank + micro), x0, cfg, Slot(rank * 2 + micro, 4))["t"]
            for rank in range(2)
            for micro in range(2)
        ]
    )
    assert 0 < times.min() and times.max() <= 1
    assert sorted(torch.ceil(times * 32).long().tolist()) == list(range(1, 33))
    iid = mdlm.noise(torch.Generator().manual_seed(0), x0, mdlm.MDLMConfig(antithetic=False))["t"]
    assert iid.dtype == torch.float64 and 0 < iid.min() and iid.max() <= 1


def tiny_dit():
    torch.manual_seed(0)
    model = DiT(DiTConfig(vocab_size=8, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # leave adaLN-Zero so gradients reach every block
    return model


def test_antithetic_times_and_the_masked_draw_lower_the_variance_of_the_loss(toy):
    """On a fixed model (the exact toy denoiser) and batch: stratified t beats iid t, and drawing z_t
    given at least one mask beats the plain draw, whose variance diverges as t -> 0."""
    seqs, p, apply = toy
    x0 = seqs[torch.multinomial(p, 64, replacement=True, generator=torch.Generator().manual_seed(0))]

    def variance(**options):
        cfg, g = mdlm.MDLMConfig(process=TOY, **options), torch.Generator().manual_seed(1)
        return torch.stack([mdlm.loss(apply, None, x0, mdlm.noise(g, x0, cfg), cfg=cfg)[0] for _ in range(4000)]).var()

    assert variance(antithetic=True) < 0.9 * variance(antithetic=False)
    assert variance() < 0.5 * variance(at_least_one_mask=False)


def test_loss_is_the_mean_integrand_and_reports_its_bound_in_bits():
    model, cfg = tiny_dit(), mdlm.MDLMConfig(process=Absorbing(7), schedule=Cosine())
    apply, params = make_apply(model), params_of(model)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 7, (4, 16), generator=g)
    noise = mdlm.noise(g, x0, cfg)
    loss, aux = mdlm.loss(apply, params, x0, noise, cfg=cfg)
    torch.testing.assert_close(loss, mdlm.bound(cfg)(apply, params, x0, noise["t"], noise).mean() / 16)
    torch.testing.assert_close(aux["bpt"], loss / math.log(2))
    assert torch.equal(loss, mdlm.loss(apply, params, x0, noise, cfg=cfg)[0])  # a pure function of its noise


def test_vmap_over_times_equals_a_loop():
    model, cfg = tiny_dit(), mdlm.MDLMConfig(process=Absorbing(7))
    apply, params = make_apply(model), params_of(model)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 7, (4, 16), generator=g)
    noise = mdlm.noise(g, x0, cfg)
    ts = torch.tensor([0.05, 0.3, 0.6, 0.99], dtype=torch.float64)
    per_t = lambda t: mdlm.bound(cfg)(apply, params, x0, t.expand(4), noise)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(
            torch.func.vmap(per_t)(ts), torch.stack([per_t(t) for t in ts]), rtol=1e-5, atol=1e-5
        )


def test_compiled_loss_equals_eager():
    model, cfg = tiny_dit(), mdlm.MDLMConfig(process=Absorbing(7))
    apply, params = make_apply(model), params_of(model)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 7, (4, 16), generator=g)
    noise = mdlm.noise(g, x0, cfg)
    fn = lambda ps, x, n: mdlm.loss(apply, ps, x, n, cfg=cfg)[0]  # noqa: E731
    with torch.no_grad():
        eager = fn(params, x0, noise)
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")(params, x0, noise)  # one graph
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
