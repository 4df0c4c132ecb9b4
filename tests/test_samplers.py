"""Samplers, driven by the exact denoiser or the exact ratios of a toy distribution: they must
reproduce it, count their real network calls, and serve D3PM (discrete T), MDLM (continuous time),
UDLM (uniform) and SEDD (ratio network) checkpoints."""

import pytest
import torch

import nanodd.processes.mixing as mixing
from nanodd.methods import d3pm, mdlm, sedd, udlm
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.readout import log_ratios
from nanodd.processes.uniform import Uniform
from nanodd.protocols import Diffusion
from nanodd.samplers import analytic, ancestral, confidence, euler, first_hitting, loop, remdm
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
    x, nfe = ancestral.sample(
        exact_apply(seqs, p, 3),
        None,
        diffusion,
        batch_size=20_000,
        seq_len=3,
        generator=torch.Generator().manual_seed(0),
        steps=1000,
    )
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
    x, nfe = ancestral.sample(
        counting,
        None,
        diffusion,
        batch_size=1,
        seq_len=3,
        generator=torch.Generator().manual_seed(3),
        on_step=lambda s, z: states.append(z),
    )
    assert nfe == len(calls) and 1 <= nfe <= 3  # one reveal per token at most: at most L calls, not T
    assert all(t == round(t) and 1 <= t <= 100 for t in calls)  # D3PM's network only sees integer steps
    assert len(states) == 100 and (states[-1] == x).all() and (x < 3).all()
    masks = torch.stack([(z == 3).sum() for z in states])
    assert (masks.diff() <= 0).all()  # tokens are only ever revealed
    with pytest.raises(ValueError, match="steps"):
        ancestral.sample(counting, None, diffusion, batch_size=1, seq_len=3, generator=torch.Generator(), steps=0)
    with pytest.raises(ValueError, match="steps"):
        ancestral.sample(counting, None, diffusion, batch_size=1, seq_len=3, generator=torch.Generator(), steps=101)


@pytest.mark.parametrize(
    "diffusion",
    [D3PM, mdlm.diffusion(mdlm.MDLMConfig(schedule=Cosine(), process=PROCESS))],
    ids=["d3pm", "mdlm-cosine"],
)
def test_fewer_steps_drift_by_parallel_decoding_and_converge(diffusion):
    """With few steps several tokens are revealed at once from factorised marginals, so the sample
    distribution drifts from p; it must converge as steps grow."""
    seqs, p = toy_distribution(n_symbols=3, L=3)
    tvs = []
    for steps in (1, 100):
        x, nfe = ancestral.sample(
            exact_apply(seqs, p, 3),
            None,
            diffusion,
            batch_size=20_000,
            seq_len=3,
            generator=torch.Generator().manual_seed(1),
            steps=steps,
        )
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
def test_ratio_samplers_end_on_data_whatever_the_ratios(sampler):
    """A trained network's ratios are not exact, so (A) at alpha_s = 1 need not cancel on the mask: the
    last step must still reveal every token (a judge or decoder cannot read a mask)."""
    cfg, diffusion = sedd_diffusion(PROCESS)
    g = torch.Generator().manual_seed(1)
    wrong = lambda params, zt, t: 3 * torch.randn(*zt.shape, PROCESS.K, generator=g)  # noqa: E731
    for steps in (1, 4, 16):
        x, _ = sampler.sample(
            wrong, None, diffusion, batch_size=2000, seq_len=8, generator=torch.Generator().manual_seed(0), steps=steps
        )
        assert (x < PROCESS.n_symbols).all(), (steps, int((x >= PROCESS.n_symbols).sum()))


@pytest.mark.parametrize("sampler", [analytic, euler], ids=["analytic", "euler"])
@pytest.mark.parametrize("graph", [PROCESS, UNIFORM], ids=["absorbing", "uniform"])
def test_ratio_samplers_with_the_exact_ratios_reproduce_p(sampler, graph):
    """SEDD's samplers driven by the exact ratios (by enumeration): close to p at 40 steps, far at 2
    (each step factorises over positions, so few steps cannot carry the correlations)."""
    seqs, p = toy_distribution(n_symbols=3, L=3)
    cfg, diffusion = sedd_diffusion(graph)
    tvs = {}
    for steps in (2, 40):
        x, nfe = sampler.sample(
            exact_ratio_apply(seqs, p, cfg),
            None,
            diffusion,
            batch_size=20_000,
            seq_len=3,
            generator=torch.Generator().manual_seed(0),
            steps=steps,
        )
        assert (x < 3).all() and nfe == steps
        tvs[steps] = tv_to_p(x, p)
    assert tvs[40] < 0.05 and tvs[2] > 0.2, tvs


def test_uniform_ancestral_with_the_exact_denoiser_reproduces_p_and_is_the_analytic_step():
    """UDLM's ancestral step with the exact x0 network p(x0^i | z_t^{-i}) is SEDD's analytic step with
    the exact ratios: the same draws give the same samples, and they reproduce p."""
    seqs, p = toy_distribution(n_symbols=3, L=3)
    cfg = udlm.UDLMConfig(process=UNIFORM)
    apply = exact_uniform_apply(seqs, p, UNIFORM, lambda t: cfg.schedule(t)[0])
    x, nfe = ancestral.sample(
        apply,
        None,
        udlm.diffusion(cfg),
        batch_size=20_000,
        seq_len=3,
        generator=torch.Generator().manual_seed(0),
        steps=40,
    )
    assert nfe == 40 and tv_to_p(x, p) < 0.05
    ratio_cfg, diffusion = sedd_diffusion(UNIFORM)
    y, _ = analytic.sample(
        exact_ratio_apply(seqs, p, ratio_cfg),
        None,
        diffusion,
        batch_size=20_000,
        seq_len=3,
        generator=torch.Generator().manual_seed(0),
        steps=40,
    )
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
    log_s = log_ratios(diffusion, logits, zt, alpha_t)
    pi, p_x0 = process.prior(), process.log_p_x0(logits, zt).exp()
    expected = mixing.reverse_probs(pi, zt, p_x0, alpha_t[:, None, None], alpha_s[:, None, None])
    torch.testing.assert_close(analytic.step_probs(process, zt, log_s, alpha_t, alpha_s), expected)


def test_ratio_samplers_stop_calling_once_nothing_can_move_and_ancestral_refuses_ratios():
    seqs, p = toy_distribution(n_symbols=3, L=3)
    cfg, diffusion = sedd_diffusion(PROCESS)
    for sampler in (analytic, euler):
        x, nfe = sampler.sample(
            exact_ratio_apply(seqs, p, cfg),
            None,
            diffusion,
            batch_size=1,
            seq_len=3,
            generator=torch.Generator().manual_seed(0),
            steps=1000,
        )
        assert (x < 3).all() and 1 <= nfe < 1000  # no call after the last mask is revealed
    with pytest.raises(ValueError, match="analytic or euler"):
        ancestral.sample(
            exact_ratio_apply(seqs, p, cfg),
            None,
            diffusion,
            batch_size=1,
            seq_len=3,
            generator=torch.Generator(),
            steps=10,
        )


# ---- the masked-diffusion samplers of the sampler axis ------------------------------------------


def draw(sampler, diffusion, n=20_000, seed=0, apply=None, **kw):
    seqs, p = toy_distribution(n_symbols=3, L=3)
    return sampler.sample(
        apply or exact_apply(seqs, p, 3),
        None,
        diffusion,
        batch_size=n,
        seq_len=3,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


def test_the_cache_skips_calls_without_changing_a_sample():
    cached = draw(ancestral, MDLM, n=64, steps=200)
    uncached = draw(ancestral, MDLM, n=64, steps=200, options=ancestral.Options(cache=False))
    assert (cached.x == uncached.x).all()
    assert uncached.nfe == 200 and cached.nfe < 200


@pytest.mark.parametrize("diffusion", [MDLM, D3PM], ids=["mdlm", "d3pm"])
def test_first_hitting_reproduces_p_with_one_call_per_token(diffusion):
    seqs, p = toy_distribution(n_symbols=3, L=3)
    x, nfe = draw(first_hitting, diffusion)
    assert nfe == 3 and (x < 3).all()  # L = 3 masked tokens, one call each, whatever the batch
    assert tv_to_p(x, p) < 0.03


def test_first_hitting_reveal_times_follow_the_process():
    """The k-th reveal of n masked tokens at alpha = 1 - v^(1/n) (1 - alpha_t): the first of n
    independent Uniform(alpha_t, 1) reveal levels, whose mean is alpha_t + (1 - alpha_t) / (n + 1)."""
    v = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    alpha = first_hitting.next_reveal(torch.full_like(v, 0.2), torch.full(v.shape, 4), v)
    assert abs(float(alpha.mean()) - (0.2 + 0.8 / 5)) < 3e-3 and ((alpha >= 0.2) & (alpha <= 1)).all()


def test_remdm_without_remasking_is_ancestral_draw_for_draw_and_with_it_still_reproduces_p():
    seqs, p = toy_distribution(n_symbols=3, L=3)
    plain = draw(ancestral, MDLM, n=2_000, steps=100)
    for strategy in ("cap", "rescale"):
        same = draw(remdm, MDLM, n=2_000, steps=100, options=remdm.Options(eta=0.0, strategy=strategy))
        assert (same.x == plain.x).all() and same.nfe == plain.nfe
    remasked = draw(remdm, MDLM, steps=200, options=remdm.Options(eta=0.01))
    assert (remasked.x < 3).all() and tv_to_p(remasked.x, p) < 0.05


def test_remdm_remasks_revealed_tokens_and_keeps_the_marginals():
    """With sigma > 0 tokens really are masked again, and the fraction masked after each step stays
    1 - alpha_s, as without remasking (the point of ReMDM's reveal rate)."""
    seqs, p = toy_distribution(n_symbols=3, L=3)
    fractions, remasks = [], []

    def watch(s, z):
        if fractions:
            remasks.append(int(((z == 3) & (watch.last != 3)).sum()))
        fractions.append((s, float((z == 3).double().mean())))
        watch.last = z.clone()

    draw(remdm, MDLM, n=20_000, steps=50, options=remdm.Options(eta=0.05, strategy="cap"), on_step=watch)
    assert sum(remasks) > 1000
    for s, masked in fractions:
        assert abs(masked - (1 - float(MDLM.schedule(torch.tensor([s], dtype=torch.float64))[0]))) < 0.02 or s == 0


@pytest.mark.parametrize("rule", ["probability", "margin"])
def test_confidence_reveals_the_most_confident_positions_on_schedule(rule):
    seqs, p = toy_distribution(n_symbols=3, L=3)
    states = []
    x, nfe = draw(
        confidence,
        MDLM,
        n=500,
        steps=3,
        options=confidence.Options(rule=rule, schedule="linear"),
        on_step=lambda s, z: states.append((z == 3).sum(-1)),
    )
    assert nfe == 3 and (x < 3).all()
    assert [int(m.max()) for m in states] == [2, 1, 0]  # one token per step on the linear schedule
    again = draw(confidence, MDLM, n=500, steps=3, options=confidence.Options(rule=rule, schedule="linear"))
    assert (again.x == x).all()  # deterministic given its noise
    first = seqs[p.argmax()]  # the most likely sequence: its tokens are the confident ones
    assert tv_to_p(x, p) < 0.6 and float((x == first).all(-1).double().mean()) > float(p.max())


def test_conditional_samples_follow_p_given_the_fixed_tokens():
    """Fix the middle token: ancestral, first-hitting and ReMDM samples follow p(x | x_2 = v), computed
    by enumeration, and never change the fixed token; so does every sampler's."""
    seqs, p = toy_distribution(n_symbols=3, L=3)
    condition = torch.tensor([-1, 2, -1])
    given = (seqs[:, 1] == 2).double() * p
    given /= given.sum()
    for sampler, kw in [
        (ancestral, {"steps": 200}),
        (first_hitting, {}),
        (remdm, {"steps": 200, "options": remdm.Options(eta=0.01)}),
    ]:
        x, _ = draw(sampler, MDLM, condition=condition, **kw)
        assert (x[:, 1] == 2).all() and tv_to_p(x, given) < 0.05, sampler.__name__
    for sampler in (confidence, analytic, euler):
        x, _ = draw(sampler, MDLM, n=200, steps=8, condition=condition)
        assert (x[:, 1] == 2).all() and (x < 3).all(), sampler.__name__


def test_masked_only_samplers_refuse_other_models_in_one_line():
    cfg, diffusion = sedd_diffusion(UNIFORM)
    for sampler in (first_hitting, confidence, remdm):
        with pytest.raises(ValueError, match="masked-diffusion model"):
            sampler.sample(None, None, diffusion, batch_size=1, seq_len=3, generator=torch.Generator())
    with pytest.raises(ValueError, match="condition"):
        draw(ancestral, MDLM, n=2, steps=4, condition=torch.tensor([-1, 0]))


@pytest.mark.parametrize("sampler", [analytic, euler], ids=["analytic", "euler"])
def test_ratio_samplers_serve_an_x0_network_whose_schedule_reaches_alpha_zero(sampler):
    """D3PM's linear schedule has alpha_1 = 0, where the ratios an x0 network implies vanish and the
    analytic step is 0/0 unless the sampler guards it."""
    seqs, p = toy_distribution(n_symbols=3, L=3)
    x, _ = draw(sampler, D3PM, steps=200)
    assert (x < 3).all() and tv_to_p(x, p) < 0.05
