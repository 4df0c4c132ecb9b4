"""Numbers at the edge, over the registries: every registered sampler at 1 step and at a huge step count,
and every logit transform at its tiny and huge legal values, gives correct samples or refuses in one
line; conditioning is exact on absorbing noise and warned about on uniform noise."""

import math
import warnings

import pytest
import torch

from nanodd import draws
from nanodd.methods import d3pm, mdlm, sedd, udlm
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.uniform import Uniform
from nanodd.samplers import SAMPLERS, loop
from nanodd.schedules import Linear, LogLinear
from toy import exact_apply, exact_ratio_apply, exact_uniform_apply, toy_distribution

SEQS, P = toy_distribution(n_symbols=3, L=3)
ABSORBING, UNIFORM = Absorbing(n_symbols=3), Uniform(n_symbols=3)
UDLM_CFG = udlm.UDLMConfig(process=UNIFORM)
SEDD_CFG = sedd.SEDDConfig(process=UNIFORM, schedule=LogLinear(), scale_by_sigma=False)


def float32(apply):
    """A network's logits are float32: the exact denoiser's, rounded."""
    return lambda params, zt, t: apply(params, zt, t).float()


MODELS = {  # name -> (diffusion, exact network)
    "d3pm-T1000": (d3pm.diffusion(d3pm.D3PMConfig(T=1000, process=ABSORBING)), exact_apply(SEQS, P, 3)),
    "mdlm-linear": (mdlm.diffusion(mdlm.MDLMConfig(schedule=Linear(), process=ABSORBING)), exact_apply(SEQS, P, 3)),
    "udlm": (udlm.diffusion(UDLM_CFG), exact_uniform_apply(SEQS, P, UNIFORM, lambda t: UDLM_CFG.schedule(t)[0])),
    "sedd-uniform": (sedd.diffusion(SEDD_CFG), exact_ratio_apply(SEQS, P, SEDD_CFG)),
}


def tv(x, p):
    """Total variation between the empirical distribution of x [n, 3] and p over the 27 toy sequences."""
    freq = torch.bincount((x * torch.tensor([9, 3, 1])).sum(-1), minlength=len(p)).double() / len(x)
    return float(0.5 * (freq - p).abs().sum())


def draw(name, model, n=64, seed=0, **kw):
    diffusion, apply = MODELS[model]
    return SAMPLERS[name].sample(
        float32(apply), None, diffusion, batch_size=n, seq_len=3, generator=torch.Generator().manual_seed(seed), **kw
    )


def refusal(name, model, steps):
    """The one-line ValueError this sampler gives, or None when it samples."""
    try:
        draw(name, model, steps=steps)
    except ValueError as e:
        assert "\n" not in str(e), str(e)
        return str(e)
    return None


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_at_one_step_samples_data_and_at_a_huge_count_refuses_in_one_line(name, model):
    """1 step is one jump to clean data, with at least one network call (remdm on D3PM: alpha_1 = 0 gave
    0/0, all masks and no call); 10**9 steps is refused before anything is allocated (an 8 GB grid in
    continuous time).  A refusal at 1 step must be about the model or the option, not about 1."""
    why = refusal(name, model, 1)
    if why is None:
        x, nfe = draw(name, model, steps=1)
        assert (x < 3).all() and nfe >= 1, (int((x >= 3).sum()), nfe)
    else:
        assert refusal(name, model, 2) == why.replace("got 1", "got 2")
    assert refusal(name, model, 10**9) is not None
    if why is None and MODELS[model][0].T is None:
        assert str(loop.MAX_STEPS) in refusal(name, model, loop.MAX_STEPS + 1).replace("_", "")


def greedy(logits):
    """The limit of every sharpening transform: the most likely tokens only."""
    return torch.where(logits == logits.amax(-1, keepdim=True), 0.0, -math.inf)


EDGES = {  # transform -> its tiny and huge legal values and the transform each must act as
    "temperature": [(5e-324, "greedy"), (1e-320, "greedy"), (1.7e308, "uniform")],
    "top_p": [(1e-30, "greedy"), (1.0, "identity")],
    "top_k": [(1, "greedy"), (10**18, "identity")],
}


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("transform", draws.TRANSFORMS)
def test_every_transform_at_its_tiny_and_huge_values_is_its_limit_draw_for_draw(transform, name):
    """A tiny temperature is greedy (float32 logits / 1e-320 underflowed to an all -inf row: all spaces),
    a huge one uniform over the data (not -inf / inf = nan), top-p 1 and a huge top-k change nothing."""
    assert set(EDGES) == set(draws.TRANSFORMS), "give a new transform its edge values here"
    steps = None if name == "first-hitting" else 8
    uniform = torch.full((27,), 1 / 27, dtype=torch.float64)
    for value, limit in EDGES[transform]:
        x, nfe = draw(name, "mdlm-linear", n=4000, steps=steps, transform=draws.TRANSFORMS[transform](value))
        assert (x < 3).all() and nfe >= 1, (value, int((x >= 3).sum()))
        if limit == "uniform":
            assert tv(x, uniform) < 0.05, (value, tv(x, uniform))
        else:
            reference = draw(
                name, "mdlm-linear", n=4000, steps=steps, transform=greedy if limit == "greedy" else draws.identity
            )
            assert (x == reference.x).all(), (value, float((x != reference.x).double().mean()))


def given_middle(v=2):
    condition = torch.tensor([-1, v, -1])
    given = (SEQS[:, 1] == v).double() * P
    return condition, given / given.sum()


def test_conditioning_is_exact_on_absorbing_noise_without_a_warning():
    condition, given = given_middle()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, _ = draw("ancestral", "mdlm-linear", n=20_000, steps=50, condition=condition)
    assert (x[:, 1] == 2).all() and tv(x, given) < 0.03


@pytest.mark.parametrize("name,model", [("ancestral", "udlm"), ("analytic", "sedd-uniform")])
def test_conditioning_on_uniform_noise_is_biased_and_says_so(name, model):
    """Putting the fixed tokens back is exact only for absorbing noise: on a uniform process the exact
    network still sees them as noisy, and the samples miss p(x | fixed) by far more than sampling error,
    so every sampler warns (the loop's check_condition, shared by all)."""
    condition, given = given_middle()
    with pytest.warns(UserWarning, match="uniform-noise model is approximate"):
        x, _ = draw(name, model, n=20_000, steps=20, condition=condition)
    assert (x[:, 1] == 2).all() and (x < 3).all()
    assert tv(x, given) > 0.1, tv(x, given)  # ancestral: 0.20 (0.17 at 100 steps); unconditioned: 0.04
