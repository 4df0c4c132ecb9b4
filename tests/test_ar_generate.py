"""The AR judge writes: cached generation gives the tokens recomputing the whole prefix every step gives
(a tiny random causal DiT, the same generator), the cache slides past its window, samples from the exact toy
AR model reproduce p; text longer than the judge's length is scored in overlapping windows."""

import dataclasses
import math

import pytest
import torch

from nanodd import draws
from nanodd.functional import make_apply, params_of
from nanodd.methods import ar
from nanodd.processes.absorbing import Absorbing
from test_model import TINY, randomized
from toy import exact_apply, toy_distribution

TOY = Absorbing(n_symbols=3)
L, N_SAMPLES = 4, 20_000


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def exact_ar_apply(table_apply):
    """The exact toy AR model as the judge's network: reads [BOS, x_1, ..] (after the tokens in ``past``, the
    cache holding the tokens themselves) and gives log p(x_{j+1} | x_1..x_j) at input position j."""

    def apply(params, inputs, t, *, positions=None, past=None, return_kv=False):
        seen = inputs if past is None else torch.cat([past[0][0][:, 0, :, 0].long(), inputs], 1)
        B, n, N = seen.shape[0], seen.shape[1], inputs.shape[1]
        rows = []
        for j in range(n - N, n):  # x_1..x_j known, the rest masked
            state = torch.full((B, L), TOY.mask_id)
            state[:, :j] = seen[:, 1 : j + 1]
            rows.append(table_apply(None, state, None)[:, j])
        logits = torch.stack(rows, 1)
        kv = inputs.double()[:, None, :, None]
        return (logits, ((kv, kv),)) if return_kv else logits

    return apply


def causal_network(n_symbols=8, seed=0):
    """A tiny causal DiT over n_symbols and BOS, every weight random, so each output depends on its context."""
    model = randomized(dataclasses.replace(TINY, vocab_size=n_symbols + 1, causal=True), seed=seed)
    return make_apply(model), params_of(model), ar.ARConfig(process=Absorbing(n_symbols=n_symbols))


def recomputed(apply, params, cfg, batch_size, length, seed):
    """The reference: the whole prefix [BOS, x_1..x_i] through the network at every step, the same draws."""
    gen, N = torch.Generator().manual_seed(seed), cfg.process.n_symbols
    seq = torch.full((batch_size, 1), cfg.process.mask_id)
    with torch.no_grad():
        for _ in range(length):
            logits = apply(params, seq, torch.zeros(batch_size))[:, -1, :N]
            seq = torch.cat([seq, draws.categorical(logits, draws.gumbels(gen, (batch_size, N)))[:, None]], 1)
    return seq[:, 1:]


def generate(apply, params, cfg, batch_size, length, seed, **kw):
    return ar.generate(
        apply, params, cfg, batch_size=batch_size, length=length, generator=torch.Generator().manual_seed(seed), **kw
    )


@pytest.mark.parametrize("window", [None, 32])
def test_cached_generation_gives_the_tokens_of_recomputing_the_prefix(window):
    apply, params, cfg = causal_network()
    expected = recomputed(apply, params, cfg, 4, 24, seed=5)
    cached = generate(apply, params, cfg, 4, 24, seed=5, window=window)
    again = generate(apply, params, cfg, 4, 24, seed=5, window=window, cache=False)
    assert cached.nfe == again.nfe == 24
    assert torch.equal(cached.x, expected) and torch.equal(again.x, expected)
    assert len(set(expected.flatten().tolist())) > 3  # the draws depend on the context: not one token


class CacheSizes:
    """An apply that records the cached length each call reads and the rotary positions it is given."""

    def __init__(self, apply):
        self.apply, self.past, self.positions = apply, [], []

    def __call__(self, params, z, t, **kw):
        past = kw.get("past")
        self.past.append(0 if past is None else past[0][0].shape[2])
        self.positions.append(kw["positions"].tolist())
        return self.apply(params, z, t, **kw)


def test_past_the_window_the_cache_slides_and_positions_keep_counting():
    apply, params, cfg = causal_network()
    sizes = CacheSizes(apply)
    out = generate(sizes, params, cfg, 2, 40, seed=1, window=7)
    assert out.x.shape == (2, 40) and out.nfe == 40 and 0 <= out.x.min() and out.x.max() < 8
    assert sizes.past == [min(i, 7) for i in range(40)]
    assert sizes.positions == [[i] for i in range(40)]
    # within the window the cache is exact: the first 8 tokens are the recomputed ones
    assert torch.equal(out.x[:, :8], recomputed(apply, params, cfg, 2, 40, seed=1)[:, :8])


def tv(x, p):
    code = (x * 3 ** torch.arange(L - 1, -1, -1)).sum(-1)
    return float(0.5 * (torch.bincount(code, minlength=len(p)).double() / len(x) - p).abs().sum())


def test_samples_of_the_exact_toy_ar_model_reproduce_p():
    seqs, p = toy_distribution(n_symbols=3, L=L, seed=4)
    apply, cfg = exact_ar_apply(exact_apply(seqs, p, TOY.mask_id)), ar.ARConfig(process=TOY)
    x, nfe = generate(apply, None, cfg, N_SAMPLES, L, seed=0)
    assert nfe == L and tv(x, p) < 0.03
    assert tv(generate(apply, None, cfg, N_SAMPLES, L, seed=0, cache=False).x, p) < 0.03


def test_the_exact_toy_check_fails_for_a_model_that_forgets_the_context():
    seqs, p = toy_distribution(n_symbols=3, L=L, seed=4)
    exact = exact_ar_apply(exact_apply(seqs, p, TOY.mask_id))

    def forgetful(params, inputs, t, **kw):  # drops the cache: every draw from the first token's marginal
        return exact(params, inputs, t, **{**kw, "past": None})

    x, _ = generate(forgetful, None, ar.ARConfig(process=TOY), N_SAMPLES, L, seed=0)
    assert tv(x, p) > 0.05


def test_long_text_is_scored_in_overlapping_windows_of_the_judge():
    apply, params, cfg = causal_network(seed=2)
    x = torch.randint(0, 8, (3, 45), generator=torch.Generator().manual_seed(0))
    W, S = 16, 8
    with torch.no_grad():
        assert torch.allclose(ar.windowed_nll(apply, params, x[:, :W], cfg, W), ar.nll(apply, params, x[:, :W], cfg))
        got = ar.windowed_nll(apply, params, x, cfg, W, S)
        expected = torch.zeros(3, dtype=torch.float64)
        for k in range(x.shape[1]):  # token k read after the window that scores it: x[end - W .. k - 1]
            end = W if k < W else min(W + S * math.ceil((k + 1 - W) / S), x.shape[1])
            context = x[:, end - W : k]
            logits = apply(params, torch.cat([torch.full((3, 1), cfg.process.mask_id), context], 1), torch.zeros(3))
            expected -= logits[:, -1, :8].double().log_softmax(-1).gather(1, x[:, k : k + 1])[:, 0]
    assert torch.allclose(got, expected, atol=1e-4)
