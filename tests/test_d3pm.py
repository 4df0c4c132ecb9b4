"""D3PM absorbing: closed-form loss vs generic matrix KLs, exact toy likelihoods, and the functional
contracts (grad, vmap, compile).  Its sampler is tested with every sampler in test_samplers.py."""

import math

import pytest
import torch

from nanodd.functional import make_apply, params_of
from nanodd.methods import d3pm
from nanodd.model import DiT, DiTConfig
from nanodd.processes.absorbing import Absorbing
from nanodd.protocols import Slot
from toy import alpha_bars_from_betas, d3pm_absorbing_betas, entropy, exact_apply, exact_bound, toy_distribution


def test_closed_form_vb_equals_generic_matrix_kl():
    """L_{t-1} = KL(q(x_{t-1}|x_t,x0) || sum_x0~ q(x_{t-1}|x_t,x0~) p~(x0~|x_t)), built from Q_t, for all t."""
    K, T, B, L = 5, 10, 64, 6
    M, cfg = K - 1, d3pm.D3PMConfig(T=T, process=Absorbing(K - 1))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, K - 1, (B, L), generator=g)
    logits = torch.randn(B, L, K, generator=g, dtype=torch.float64).index_fill(-1, torch.tensor([M]), -math.inf)
    apply = lambda params, zt, t: logits  # noqa: E731  a fixed "denoiser"
    betas = d3pm_absorbing_betas(T)
    alpha_bar = alpha_bars_from_betas(betas)
    eye, e_m = torch.eye(K, dtype=torch.float64), torch.nn.functional.one_hot(torch.tensor(M), K).double()
    Q = [(1 - b) * eye + b * torch.ones(K, 1, dtype=torch.float64) * e_m for b in betas]
    Qbar = [eye]
    for t in range(1, T + 1):
        Qbar.append(Qbar[-1] @ Q[t])
    for t in range(1, T + 1):
        u = torch.rand(B, L, generator=g)
        vb, _ = d3pm.step_bound(cfg).terms(apply, None, x0, torch.full((B,), t), u)
        zt = cfg.process.corrupt(x0, alpha_bar[t].float(), u)
        q_fwd = Q[t][:, zt].permute(1, 2, 0)  # q(x_t | x_{t-1} = k): [B, L, K]
        q_post = q_fwd * Qbar[t - 1][x0]
        q_post = q_post / q_post.sum(-1, keepdim=True)
        p = q_fwd * (logits.softmax(-1) @ Qbar[t - 1])  # D3PM eq. 4, unnormalised
        p = p / p.sum(-1, keepdim=True)
        kl = torch.where(q_post > 0, q_post * (q_post.log() - p.log()), torch.zeros_like(q_post)).sum((-1, -2))
        torch.testing.assert_close(vb.double(), kl, rtol=1e-5, atol=1e-5, msg=f"t={t}")


def test_exact_toy_bound_is_above_entropy_and_tightens_with_T():
    seqs, p = toy_distribution(n_symbols=3, L=3)
    apply = exact_apply(seqs, p, mask_id=3)
    H = entropy(p)
    bounds = [exact_bound(T, seqs, p, apply) for T in (2, 4, 20, 200)]
    assert all(b >= H - 1e-9 for b in bounds), (bounds, H)
    assert all(a > b for a, b in zip(bounds, bounds[1:])), bounds
    assert bounds[-1] - H < 0.02 * (bounds[0] - H), (bounds, H)


# ---- functional contracts on a tiny DiT -------------------------------------------------------

TINY = DiTConfig(vocab_size=8, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0)
CFG = d3pm.D3PMConfig(T=100, process=Absorbing(7))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = DiT(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # leave adaLN-Zero so gradients reach every block
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 7, (4, 16), generator=g)
    return model, x0, d3pm.noise(g, x0, CFG)


def test_loss_is_deterministic_given_noise_and_aux_is_consistent(setup):
    model, x0, noise = setup
    apply, params = make_apply(model), params_of(model)
    total, aux = d3pm.loss(apply, params, x0, noise, cfg=CFG)
    again, _ = d3pm.loss(apply, params, x0, noise, cfg=CFG)
    assert total == again
    torch.testing.assert_close(total, aux["vb"] + CFG.hybrid_coeff * aux["ce"])
    torch.testing.assert_close(aux["bpt"], CFG.T * aux["vb"] / math.log(2))
    assert ((1 <= noise["t"]) & (noise["t"] <= CFG.T)).all()


def test_func_grad_equals_backward(setup):
    model, x0, noise = setup
    apply, params = make_apply(model), params_of(model)
    grads = torch.func.grad(lambda ps: d3pm.loss(apply, ps, x0, noise, cfg=CFG)[0])(
        {k: v.detach() for k, v in params.items()}
    )
    d3pm.loss(apply, params, x0, noise, cfg=CFG)[0].backward()
    assert grads.keys() == params.keys()
    for k, v in params.items():
        torch.testing.assert_close(grads[k], v.grad, msg=k)
    assert all(v.grad.abs().sum() > 0 for k, v in params.items() if "adaLN" not in k or "blocks.1" in k)


def test_vmap_over_timesteps_equals_loop(setup):
    model, x0, noise = setup
    apply, params = make_apply(model), params_of(model)
    B = x0.shape[0]

    def per_t(t):
        return d3pm.loss(apply, params, x0, {"t": t.expand(B), "u": noise["u"]}, cfg=CFG)[1]["vb"]

    ts = torch.tensor([1, 2, 17, 60, 100])
    with torch.no_grad():
        looped = torch.stack([per_t(t) for t in ts])
        vmapped = torch.func.vmap(per_t)(ts)
    torch.testing.assert_close(vmapped, looped, rtol=1e-5, atol=1e-6)


def test_hybrid_loss_integrand_averaged_over_every_step_is_the_loss(setup):
    # t on the T midpoints reads every step k = 1..T once; each step's loss with that k for the whole
    # batch, averaged over k, is the integrand's mean over t (per sequence, divided by L).
    model, x0, noise = setup
    apply, params = make_apply(model), params_of(model)
    f, (B, L) = d3pm.hybrid_loss(CFG), x0.shape
    ts = (torch.arange(CFG.T, dtype=torch.float64) + 0.5) / CFG.T
    with torch.no_grad():
        per_t = torch.stack([f(apply, params, x0, t.expand(B), {"u": noise["u"]}) for t in ts])  # [T, B]
        losses = torch.stack(
            [
                d3pm.loss(apply, params, x0, {"t": k.expand(B), "u": noise["u"]}, cfg=CFG)[0]
                for k in d3pm.step_of(ts, CFG.T)
            ]
        )
    assert torch.equal(d3pm.step_of(ts, CFG.T), torch.arange(1, CFG.T + 1))
    torch.testing.assert_close(per_t.double().mean(1) / L, losses.double(), rtol=1e-5, atol=1e-7)
    assert f.T == CFG.T and f.noise(torch.Generator().manual_seed(0), x0)["u"].shape == x0.shape


def test_compiled_loss_equals_eager(setup):
    model, x0, noise = setup
    apply, params = make_apply(model), params_of(model)
    fn = lambda ps, x, n: d3pm.loss(apply, ps, x, n, cfg=CFG)[0]  # noqa: E731
    with torch.no_grad():
        eager = fn(params, x0, noise)
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")(params, x0, noise)  # one graph
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_antithetic_steps_tile_the_global_batch_once():
    """T = 32 steps, 2 ranks x 2 accumulation steps of 8 sequences: every step exactly once."""
    cfg, x0 = d3pm.D3PMConfig(T=32, antithetic=True), torch.zeros(8, 5, dtype=torch.long)
    steps = torch.cat(
        [
            d3pm.noise(torch.Generator().manual_seed(10 * rank + micro), x0, cfg, Slot(rank * 2 + micro, 4))["t"]
            for rank in range(2)
            for micro in range(2)
        ]
    )
    assert steps.dtype == torch.long and sorted(steps.tolist()) == list(range(1, 33))


def test_antithetic_steps_keep_the_bound_estimate_unbiased():
    """On the exact toy denoiser, over batches drawn from the toy distribution: the single-sample bound
    (aux bpt) has the same mean with stratified steps as with nanoDD's iid steps, and both equal the
    exact bound.  (Sequence j always gets a time in stratum j, so it is unbiased over random batches.)"""
    seqs, p = toy_distribution(n_symbols=3, L=3)
    apply, g = exact_apply(seqs, p, mask_id=3), torch.Generator().manual_seed(0)

    def estimates(antithetic: bool) -> torch.Tensor:
        cfg = d3pm.D3PMConfig(T=20, process=Absorbing(3), antithetic=antithetic)
        x0s = (seqs[torch.multinomial(p, 64, replacement=True, generator=g)] for _ in range(3000))
        return torch.stack([d3pm.loss(apply, None, x0, d3pm.noise(g, x0, cfg), cfg=cfg)[1]["bpt"] for x0 in x0s])

    exact = exact_bound(20, seqs, p, apply) / (3 * math.log(2))  # bits per token
    for bpt in (estimates(True), estimates(False)):
        assert abs(float(bpt.mean()) - exact) < 4 * float(bpt.std()) / math.sqrt(len(bpt))
