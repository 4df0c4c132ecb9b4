"""The block sampler: with the exact block denoiser it reproduces the toy distribution (BD3-LM, and semi-AR
on a whole-sequence model), conditioning included; the key/value cache gives the samples recomputation
gives, draw for draw, with fewer attention products; text runs past the training length and stops at a
chosen id."""

import dataclasses
from dataclasses import replace

import pytest
import torch

from nanodd.functional import make_apply, params_of
from nanodd.methods import bd3lm, mdlm
from nanodd.processes.absorbing import Absorbing
from nanodd.samplers import SAMPLERS, ancestral, block, default_sampler
from nanodd.schedules import Linear
from test_model import TINY, randomized
from toy import exact_apply, toy_distribution

TOY = Absorbing(n_symbols=3)
L, N_SAMPLES = 4, 20_000


@pytest.fixture(scope="module")
def toy():
    seqs, p = toy_distribution(n_symbols=3, L=L, seed=3)
    return seqs, p, exact_apply(seqs, p, TOY.mask_id)


def tv(x, p):
    """Total variation between the empirical distribution of x [n, L] and p over the 81 toy sequences."""
    code = (x * 3 ** torch.arange(L - 1, -1, -1)).sum(-1)
    return float(0.5 * (torch.bincount(code, minlength=len(p)).double() / len(x) - p).abs().sum())


def exact_block_apply(table_apply):
    """The exact p(x0^b | z^b, x^{<b}) as the recomputing block sampler calls it: the clean prefix and the
    noisy block at their positions of the toy's L, masks after them, every sequence enumerated."""

    def apply(params, z, t, *, mask, positions):
        state = torch.full((z.shape[0], L), TOY.mask_id)
        state[:, positions] = z
        return table_apply(None, state, None)[:, positions]

    return apply


def bd3lm_diffusion(block_size):
    return bd3lm.diffusion(bd3lm.BD3LMConfig(block_size=block_size, process=TOY))


def draw(apply, diffusion, n, seed=0, seq_len=L, steps=8, **options):
    return block.sample(
        apply,
        None,
        diffusion,
        batch_size=n,
        seq_len=seq_len,
        generator=torch.Generator().manual_seed(seed),
        steps=steps,
        options=block.Options(**options),
    )


@pytest.mark.parametrize("inner", ["ancestral", "first-hitting"])
def test_block_diffusion_with_the_exact_denoiser_reproduces_p(toy, inner):
    seqs, p, table = toy
    steps = None if inner == "first-hitting" else 1000  # few steps reveal tokens together: not exact
    x, nfe = draw(exact_block_apply(table), bd3lm_diffusion(2), N_SAMPLES, steps=steps, cache=False, inner=inner)
    assert x.shape == (N_SAMPLES, L) and tv(x, p) < 0.03 and nfe > 0


def test_reading_no_prefix_is_detectably_wrong(toy):
    """The same sampler through a denoiser that forgets the finished blocks (masks in their place) samples
    the product of block marginals, which is far from p: the TV test above can fail."""
    seqs, p, table = toy

    def forgetful(params, z, t, *, mask, positions):
        state = torch.full((z.shape[0], L), TOY.mask_id)
        state[:, positions[-2:]] = z[:, -2:]
        return table(None, state, None)[:, positions]

    x, _ = draw(forgetful, bd3lm_diffusion(2), N_SAMPLES, cache=False)
    assert tv(x, p) > 0.05


def test_semi_autoregressive_decoding_of_a_whole_sequence_model_reproduces_p(toy):
    seqs, p, table = toy
    diffusion = mdlm.diffusion(mdlm.MDLMConfig(schedule=Linear(), process=TOY))
    x, nfe = draw(table, diffusion, N_SAMPLES, block_size=2, steps=1000)
    assert tv(x, p) < 0.03 and nfe > 0
    with pytest.raises(ValueError, match="length must be the model's length 4"):
        draw(table, diffusion, 2, block_size=2, length=8)


def test_a_prefix_through_the_block_sampler_samples_p_given_it(toy):
    seqs, p, table = toy
    fixed = seqs[:, :2] == torch.tensor([2, 0])
    cond_p = torch.where(fixed.all(-1), p, 0.0)
    condition = torch.tensor([2, 0, -1, -1])
    x, _ = block.sample(
        exact_block_apply(table),
        None,
        bd3lm_diffusion(2),
        batch_size=N_SAMPLES,
        seq_len=L,
        generator=torch.Generator().manual_seed(1),
        steps=1000,
        condition=condition,
        options=block.Options(cache=False),
    )
    assert (x[:, :2] == condition[:2]).all() and tv(x, cond_p / cond_p.sum()) < 0.03


def bd3lm_network():
    """A tiny DiT over 8 symbols and the mask, every weight random, so each output depends on its context."""
    model = randomized(dataclasses.replace(TINY, vocab_size=9), seed=0)
    return make_apply(model), params_of(model)


class CountingProducts:
    """An apply that adds up query x key products (the attention's cost) over its calls."""

    def __init__(self, apply):
        self.apply, self.products = apply, 0

    def __call__(self, params, z, t, **kw):
        past = kw.get("past")
        M = 0 if past is None else past[0][0].shape[2]
        self.products += z.shape[1] * (M + z.shape[1])
        return self.apply(params, z, t, **kw)


def sample_network(apply, params, diffusion, seq_len, **options):
    return block.sample(
        apply,
        params,
        diffusion,
        batch_size=4,
        seq_len=seq_len,
        generator=torch.Generator().manual_seed(7),
        steps=6,
        options=block.Options(**options),
    )


@pytest.mark.parametrize("length, window", [(32, None), (64, 64)])
def test_the_cache_gives_the_samples_recomputation_gives_with_fewer_products(length, window):
    apply, params = bd3lm_network()
    diffusion = bd3lm.diffusion(bd3lm.BD3LMConfig(block_size=4, process=Absorbing(n_symbols=8)))
    cached, recomputed = CountingProducts(apply), CountingProducts(apply)
    with torch.no_grad():
        x_cached, nfe_cached = sample_network(cached, params, diffusion, 32, length=length, window=window)
        x_again, nfe_again = sample_network(
            recomputed, params, diffusion, 32, length=length, window=window, cache=False
        )
    assert torch.equal(x_cached, x_again) and x_cached.shape == (4, length)
    n_blocks = length // 4
    assert nfe_cached == nfe_again + n_blocks - 1  # the cache's appends: one call per finished block
    assert cached.products < recomputed.products / 2


def test_text_runs_past_the_training_length_and_stops_at_the_chosen_id():
    apply, params = bd3lm_network()
    diffusion = bd3lm.diffusion(bd3lm.BD3LMConfig(block_size=4, process=Absorbing(n_symbols=8)))
    with torch.no_grad():
        x, _ = sample_network(apply, params, diffusion, 16, length=64)  # 4x the training length, window 12
        assert x.shape == (4, 64) and ((0 <= x) & (x < 8)).all()  # every token written, none left masked
        stop = int(x[0, 5])
        condition = torch.full((64,), -1)
        condition[1] = stop  # every sequence writes it in the first block
        y, _ = block.sample(
            apply,
            params,
            diffusion,
            batch_size=4,
            seq_len=16,
            generator=torch.Generator().manual_seed(7),
            steps=6,
            condition=condition,
            options=block.Options(length=64, stop_id=stop),
        )
    assert y.shape == (4, 4) and (y[:, 1] == stop).all()


def test_block_models_default_to_the_block_sampler_and_others_refuse_them():
    diffusion = bd3lm_diffusion(2)
    assert default_sampler(diffusion) == "block" and "block" in SAMPLERS
    with pytest.raises(ValueError, match="sample it with the block sampler"):
        ancestral.sample(lambda *a: None, None, diffusion, batch_size=1, seq_len=4, generator=torch.Generator())
    with pytest.raises(ValueError, match="length must be a multiple of the block size 2"):
        draw(lambda *a, **k: None, diffusion, 1, length=5)
    whole = replace(diffusion, block_size=None)
    assert default_sampler(whole) == "ancestral"
