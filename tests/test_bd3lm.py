"""BD3-LM: the block NELBO is exact for the exact block denoiser (and fails without its weight), block size
1 is the AR judge's exact NLL, block size L is MDLM draw for draw (through the DiT's attention mask), the times are
stratified per block index, gradients flow, and the clip search ranks a narrow clip below the full one."""

import math
from dataclasses import replace

import pytest
import torch

import nanodd.checks as checks
from nanodd.functional import make_apply, params_of
from nanodd.methods import METHODS, ar, bd3lm, mdlm
from nanodd.model import DiT, DiTConfig
from nanodd.processes.absorbing import Absorbing
from nanodd.protocols import Slot
from nanodd.schedules import LogLinear
from toy import exact_apply, loss_of_each_sequence, toy_distribution

TOY = Absorbing(n_symbols=3)
L = 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    seqs, p = toy_distribution(n_symbols=3, L=L, seed=1)
    return seqs, p, exact_apply(seqs, p, TOY.mask_id)


def exact_block_apply(table_apply):
    """The exact denoiser of x_t (+) x0 under any attention mask: at noisy position i, log p(x0^i | the
    tokens row i of the mask sees), by enumeration (``table_apply`` of an L-token state with masks where
    nothing is seen; a clean copy wins over a noisy one).  The clean half's outputs are unscored: zeros."""

    def apply(params, z, t, *, mask, positions):
        B, n = z.shape[0], z.shape[1] // 2
        zt, x0 = z[:, None, :n], z[:, None, n:]  # [B, 1, L], against rows [L, L] of the mask
        seen = torch.where(mask[:n, n:], x0, torch.where(mask[:n, :n], zt, TOY.mask_id))  # [B, L rows, L]
        logits = table_apply(None, seen.reshape(B * n, n), None).reshape(B, n, n, -1)
        noisy = logits.diagonal(dim1=1, dim2=2).transpose(1, 2)  # row i's output at position i, [B, L, K]
        return torch.cat([noisy, torch.zeros_like(noisy)], 1)

    return apply


def exact_ar_apply(table_apply):
    """The exact AR judge: reads [BOS, x_1, ..., x_{L-1}] and gives log p(x_i | x_<i) at position i."""

    def apply(params, inputs, t):
        B, n = inputs.shape
        prefix = torch.cat([inputs[:, 1:], inputs[:, :1]], 1)  # x_1..x_{L-1}, then anything (never seen)
        seen = torch.where(torch.arange(n)[None] < torch.arange(n)[:, None], prefix[:, None], TOY.mask_id)
        return table_apply(None, seen.reshape(B * n, n), None).reshape(B, n, n, -1).diagonal(dim1=1, dim2=2).mT

    return apply


def cfg_of(block_size, **kw):
    return bd3lm.BD3LMConfig(block_size=block_size, process=TOY, **kw)


def within_its_errors(mean, se, nll):
    """(every x0 within 4 s.e., the sum over x0 within 3 s.e. of the sum).  4 per x0, not 3: a bound over
    81 sequences x 3 block sizes (Bonferroni), where 3 would flag some correct x0 about half the time."""
    tol = 1e-6 * nll  # the loss is fp32
    each = ((mean - nll).abs() <= 4 * se + tol).all()
    pooled = (mean - nll).sum().abs() <= 3 * se.pow(2).sum().sqrt() + tol.sum()
    return bool(each), bool(pooled)


@pytest.mark.parametrize("block_size", [1, 2, 4])
def test_block_nelbo_of_the_exact_denoiser_is_the_exact_nll_of_every_sequence(toy, block_size):
    """The loss on batches of one x0 (its own stratified t per block), 40 batches of 100, for all 81 x0."""
    seqs, p, table = toy
    mean, se = loss_of_each_sequence(bd3lm, exact_block_apply(table), seqs, cfg_of(block_size), n_batches=40, batch=100)
    nll = -p.log()
    assert (se < 0.03 * nll).all(), (se / nll).max()
    assert within_its_errors(mean, se, nll) == (True, True), ((mean - nll) / se).abs().max()


@pytest.mark.parametrize("block_size", [1, 2, 4])
def test_the_exactness_check_fails_without_the_weight(toy, block_size, monkeypatch):
    seqs, p, table = toy
    dropped = lambda schedule, T, t: (t, schedule(t)[0], torch.ones_like(t))  # noqa: E731  weight 1 for 1/t
    monkeypatch.setattr(bd3lm, "masked_weight", dropped)
    mean, se = loss_of_each_sequence(bd3lm, exact_block_apply(table), seqs, cfg_of(block_size), n_batches=10, batch=100)
    assert within_its_errors(mean, se, -p.log()) == (False, False)


def test_block_size_one_is_the_ar_judges_exact_nll_draw_by_draw(toy):
    """One draw per sequence: with the linear schedule, w(t) P(mask) = (1/t) t = 1 for a one-token block."""
    seqs, p, table = toy
    cfg = cfg_of(1)
    judge = ar.nll(exact_ar_apply(table), None, seqs, ar.ARConfig(process=TOY))
    torch.testing.assert_close(judge, -p.log(), rtol=0, atol=1e-9)
    for seed in range(3):
        n = bd3lm.noise(torch.Generator().manual_seed(seed), seqs, cfg)
        nelbo = bd3lm.bound(cfg)(exact_block_apply(table), None, seqs, n["t"], n)
        torch.testing.assert_close(nelbo, judge, rtol=0, atol=1e-6)


def tiny_dit():
    torch.manual_seed(0)
    model = DiT(DiTConfig(vocab_size=8, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0))
    with torch.no_grad():
        for w in model.parameters():
            w.add_(0.1 * torch.randn_like(w))  # leave adaLN-Zero so gradients reach every block
    return model


def test_block_size_L_is_mdlms_loss_draw_for_draw():
    model, schedule = tiny_dit(), LogLinear()
    apply, params = make_apply(model), params_of(model)
    x0 = torch.randint(0, 7, (6, 16), generator=torch.Generator().manual_seed(0))
    bd_cfg = bd3lm.BD3LMConfig(block_size=16, schedule=schedule, process=Absorbing(7))
    md_cfg = mdlm.MDLMConfig(schedule=schedule, process=Absorbing(7))
    for seed in range(3):
        bd_noise = bd3lm.noise(torch.Generator().manual_seed(seed), x0, bd_cfg, Slot(1, 2))
        md_noise = mdlm.noise(torch.Generator().manual_seed(seed), x0, md_cfg, Slot(1, 2))
        assert bd_noise.keys() == md_noise.keys()  # t [B, 1], u [B, L], v [B, 1] against t [B], u, v [B]
        assert all(torch.equal(bd_noise[k].reshape(md_noise[k].shape), md_noise[k]) for k in md_noise)
        bd, bd_aux = bd3lm.loss(apply, params, x0, bd_noise, cfg=bd_cfg)
        md, _ = mdlm.loss(apply, params, x0, md_noise, cfg=md_cfg)
        torch.testing.assert_close(bd, md, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(bd_aux["bpt"], bd / math.log(2))
    for T in (1, 10):  # the T-step bounds evaluation's elbo-vs-t reads, on one t per sequence
        bd_bound, md_bound = replace(bd3lm.bound(bd_cfg), T=T), replace(mdlm.bound(md_cfg), T=T)
        bd_values = bd_bound(apply, params, x0, md_noise["t"], bd_noise)
        torch.testing.assert_close(bd_values, md_bound(apply, params, x0, md_noise["t"], md_noise))


def test_grad_through_the_loss_equals_backward():
    model, cfg = tiny_dit(), bd3lm.BD3LMConfig(block_size=4, process=Absorbing(7))
    apply, params = make_apply(model), params_of(model)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 7, (4, 16), generator=g)
    noise = bd3lm.noise(g, x0, cfg)
    grads = torch.func.grad(lambda ps: bd3lm.loss(apply, ps, x0, noise, cfg=cfg)[0])(
        {k: v.detach() for k, v in params.items()}
    )
    bd3lm.loss(apply, params, x0, noise, cfg=cfg)[0].backward()
    for name, w in params.items():
        torch.testing.assert_close(grads[name], w.grad, rtol=1e-5, atol=1e-7)
    assert all(grads[name].abs().sum() > 0 for name in grads if "blocks.1" in name)


def test_each_block_index_is_stratified_over_the_global_batch():
    """2 slots of 8 sequences, 3 blocks: every block index's 16 times fill its 16 strata once."""
    x0 = torch.zeros(8, 6, dtype=torch.long)
    cfg = cfg_of(2)
    t = torch.cat([bd3lm.noise(torch.Generator().manual_seed(i), x0, cfg, Slot(i, 2))["t"] for i in range(2)])
    assert t.shape == (16, 3) and t.dtype == torch.float64
    for b in range(3):
        assert sorted(torch.ceil(t[:, b] * 16).long().tolist()) == list(range(1, 17))
    assert not torch.equal(t[:, 0], t[:, 1])
    clipped = bd3lm.noise(torch.Generator().manual_seed(0), x0, cfg_of(2, beta=0.3, omega=0.8))["t"]
    assert 0.3 < clipped.min() and clipped.max() <= 0.8


def test_the_config_refuses_what_it_cannot_run():
    with pytest.raises(checks.FieldError, match=r"block_size must divide the sequence length L = 6, got 4") as e:
        bd3lm.noise(torch.Generator(), torch.zeros(2, 6, dtype=torch.long), cfg_of(4))
    assert e.value.field == "block_size"
    with pytest.raises(checks.FieldError, match=r"omega must be in \(beta 0.5, 1\], got 0.5"):
        cfg_of(2, beta=0.5, omega=0.5)
    assert METHODS["bd3lm"] is bd3lm


def test_clip_search_measures_the_losss_variance_under_each_clip(toy):
    """One batch of the exact toy, 40 noise draws.  Block size 1: the loss is the AR log-loss whatever t, so
    every clip has variance 0 and the NLL as its mean.  Block size 4: the unclipped loss is unbiased for the
    NLL, and the clip (0.9, 1] has a far lower variance (nearly every token masked: z_t almost fixed)."""
    seqs, p, table = toy
    g = torch.Generator().manual_seed(0)
    x0 = seqs[torch.multinomial(p, 64, replacement=True, generator=g)]
    nll = float(ar.nll(exact_ar_apply(table), None, x0, ar.ARConfig(process=TOY)).mean()) / L
    grid = [(0.0, 1.0), (0.5, 1.0), (0.9, 1.0)]
    rows = bd3lm.clip_variance(exact_block_apply(table), None, [x0] * 40, grid, g, cfg=cfg_of(1))
    assert [(r.beta, r.omega) for r in rows] == grid
    assert all(r.variance < 1e-12 and r.mean == pytest.approx(nll, abs=1e-6) for r in rows)
    full, _, clipped = bd3lm.clip_variance(exact_block_apply(table), None, [x0] * 40, grid, g, cfg=cfg_of(4))
    assert all(math.isfinite(r.mean) and math.isfinite(r.variance) for r in (full, clipped))
    assert abs(full.mean - nll) < 3 * math.sqrt(full.variance / 40)
    assert clipped.variance < full.variance / 3
