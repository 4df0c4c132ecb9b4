"""Likelihood evaluation: exact toy likelihoods, closed forms, estimator agreement, sample metrics."""

import math

import pytest
import torch

from nanodd import evaluate as ev
from nanodd.methods.estimate import corrupt_some
from nanodd.methods.mdlm import MaskedBound, masked_weight
from nanodd.functional import make_apply, params_of
from nanodd.methods import d3pm
from nanodd.model import DiT, DiTConfig
from nanodd.processes.absorbing import Absorbing
from nanodd.schedules import Cosine, Linear
from toy import alpha_bars_from_betas, d3pm_absorbing_betas, entropy, exact_apply, exact_bound, toy_distribution

M = 3  # mask id of the toy: 3 symbols + mask
TOY = Absorbing(n_symbols=3)
BITS = 3 * math.log(2)  # nats per toy sequence -> bits per char


def per_sequence(estimate, n):
    """Chunks laid out as every sequence repeated n times in a row -> (means [27], stderrs [27])."""
    values = estimate.per_chunk.view(-1, n)
    return values.mean(1), values.std(1) / math.sqrt(n)


def weighted_by_p(values, p):
    """E_{x0 ~ p} of per-chunk values laid out as [n repeats, 27 sequences] -> (mean, stderr)."""
    n = values.shape[0]
    return float((values.mean(0) * p).sum()), float(((values.var(0) / n) * p**2).sum().sqrt())


@pytest.fixture(scope="module")
def toy():
    seqs, p = toy_distribution(n_symbols=3, L=3)
    return seqs, p, exact_apply(seqs, p, M)


def continuous(apply, chunks, schedule):
    return ev.stratified(
        MaskedBound(TOY, schedule), apply, None, chunks, generator=torch.Generator().manual_seed(0), batch_size=8192
    )


def test_continuous_bound_of_exact_denoiser_is_exact_nll_of_every_sequence(toy):
    """Masked diffusion with exact conditionals is an exact any-order autoregressive model."""
    seqs, p, apply = toy
    n = 16_000
    mean, se = per_sequence(continuous(apply, seqs.repeat_interleave(n, 0), Linear()), n)
    nll = -p.log() / BITS
    assert (se < 0.01 * nll).all(), (se / nll).max()
    assert ((mean - nll).abs() < 3 * se).all(), (mean - nll) / se


def test_the_exactness_check_holds_for_any_schedule_but_fails_for_a_wrong_weight_or_denoiser(toy):
    seqs, p, apply = toy
    n = 4000
    chunks, nll = seqs.repeat_interleave(n, 0), -p.log() / BITS
    mean, se = per_sequence(continuous(apply, chunks, Cosine()), n)
    assert ((mean - nll).abs() < 3 * se).all(), (mean - nll) / se
    half_weight = lambda t: (1 - t, torch.full_like(t, -0.5))  # noqa: E731  alpha' off by a factor 2
    other_seqs, other_p = toy_distribution(n_symbols=3, L=3, seed=1)
    for bad_apply, schedule in [(apply, half_weight), (exact_apply(other_seqs, other_p, M), Linear())]:
        mean, se = per_sequence(continuous(bad_apply, chunks, schedule), n)
        assert ((mean - nll).abs() > 3 * se).sum() >= 20


def test_exact_in_t_bound_is_above_entropy_agrees_with_d3pm_and_decreases_with_T(toy):
    """E_{x0~p} L_T (x0 weighted by p exactly) equals D3PM's bound, enumerated over every mask pattern."""
    seqs, p, apply = toy
    n, H = 300, entropy(p) / BITS
    gaps = []
    for T in (2, 10, 50):
        est = ev.exact_in_t(
            MaskedBound(TOY, Linear(), T),
            apply,
            None,
            seqs.repeat(n, 1),
            generator=torch.Generator().manual_seed(T),
            batch_size=8192,
        )
        mean, se = weighted_by_p(est.per_chunk.view(n, -1), p)
        assert mean > H - 3 * se
        assert abs(mean - exact_bound(T, seqs, p, apply) / BITS) < 3 * se, T
        gaps.append((mean - H, se))
    assert all(a - b > 3 * math.hypot(sa, sb) for (a, sa), (b, sb) in zip(gaps, gaps[1:])), gaps


def test_standard_error_shrinks_like_one_over_sqrt_n(toy):
    seqs, p, apply = toy
    g = torch.Generator().manual_seed(0)
    chunks = seqs[torch.multinomial(p, 4000, replacement=True, generator=g)]
    se = [
        ev.exact_in_t(MaskedBound(TOY, Linear(), 10), apply, None, chunks[:n], generator=g, batch_size=8192).stderr
        for n in (250, 1000, 4000)
    ]
    assert all(1.5 < a / b < 2.5 for a, b in zip(se, se[1:])), se


@pytest.mark.parametrize(
    "schedule, T", [(Linear(), None), (Cosine(), None), (Linear(), 50)], ids=["linear", "cosine", "linear-T50"]
)
def test_unigram_denoiser_gives_the_unigram_cross_entropy(schedule, T):
    """A denoiser that ignores z_t: each token's weighted mask probability integrates to
    int w(t) (1 - alpha(t)) dt = alpha(0) - alpha(1) = 1 (and sum_k r_k k/T = 1), so L = sum_i -log q(x0^i)."""
    K, L, n = 6, 8, 4000
    g = torch.Generator().manual_seed(0)
    frequencies = torch.tensor([0.4, 0.3, 0.1, 0.1, 0.1])
    chunks = torch.multinomial(frequencies, n * L, replacement=True, generator=g).view(n, L)
    log_q = torch.bincount(chunks.view(-1), minlength=K).double().div(n * L).log()  # data unigrams; mask: -inf
    unigram = lambda params, zt, t: log_q.expand(*zt.shape, K)  # noqa: E731
    est = ev.stratified(
        MaskedBound(Absorbing(K - 1), schedule, T), unigram, None, chunks, generator=g, n_t=4, batch_size=8192
    )
    cross_entropy = float(-log_q[chunks].mean() / math.log(2))
    assert est.stderr < 0.01 * cross_entropy
    assert abs(est.bpc - cross_entropy) < 3 * est.stderr, (est.bpc, cross_entropy, est.stderr)


def test_elbo_vs_T_with_exact_denoiser_decreases_towards_L_inf(toy):
    """Common random numbers across T: every gap L_T - L_inf matches its enumerated value."""
    seqs, p, apply = toy
    g, H = torch.Generator().manual_seed(0), entropy(p) / BITS
    chunks = seqs[torch.multinomial(p, 27_000, replacement=True, generator=g)]
    seen = set()
    curve = ev.elbo_vs_T(
        MaskedBound(TOY, Linear()),
        apply,
        None,
        chunks,
        generator=g,
        batch_size=8192,
        on_batch=lambda info: seen.add(info["T"]),
    )
    assert list(curve) == list(ev.ELBO_TS) and seen == set(ev.ELBO_TS)
    assert abs(curve[None].bpc - H) < 3 * curve[None].stderr
    gaps = {}
    for T in ev.ELBO_TS[:-1]:
        d = curve[T].per_chunk - curve[None].per_chunk
        gaps[T] = float(d.mean())
        se = float(d.std()) / math.sqrt(len(d))
        # 4 SE: the differences are skewed (rare z_t changes between grids), so 3 SE is too tight
        assert abs(gaps[T] - (exact_bound(T, seqs, p, apply) / BITS - H)) < 4 * se, (T, gaps[T], se)
    assert gaps[10] > gaps[20] > gaps[100] > 0, gaps


def test_conditioned_corruption_is_q_given_at_least_one_mask():
    """corrupt_some: mask patterns have probability q(pattern) / (1 - alpha^L), and the empty one 0."""
    L, n, alpha = 4, 200_000, 0.7
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(n, L, dtype=torch.long)
    alpha_t = torch.full((n,), alpha, dtype=torch.float64)
    u = torch.rand(n, L, generator=g)
    zt, p_some = corrupt_some(Absorbing(1), x0, alpha_t, u, torch.rand(n, generator=g), u)
    torch.testing.assert_close(p_some, torch.full_like(p_some, 1 - alpha**L))
    pattern = (zt * 2 ** torch.arange(L)).sum(-1)
    freq = torch.bincount(pattern, minlength=2**L).double() / n
    masked = torch.tensor([bin(m).count("1") for m in range(2**L)])
    q = (1 - alpha) ** masked * alpha ** (L - masked)
    expected = torch.where(masked > 0, q / (1 - alpha**L), 0.0)
    assert freq[0] == 0 and 0.5 * (freq - expected).abs().sum() < 0.01


def test_discrete_bound_is_d3pm_and_feeds_the_integer_step():
    """D3PM's bound is the masked bound with D3PM's alpha_bar and r (weight T r_k), fed the step k."""
    T = 1000
    cfg = d3pm.D3PMConfig(T=T)
    alpha_bar = alpha_bars_from_betas(d3pm_absorbing_betas(T))  # D3PM App. A.2: beta_t = 1 / (T - t + 1)
    k = torch.arange(1, T + 1)
    bound = d3pm.bound(cfg)
    t_k, alpha_t, w = masked_weight(bound.schedule, bound.T, ev.exact_in_t_times(1, T)[0])
    torch.testing.assert_close(alpha_t, alpha_bar[k])
    torch.testing.assert_close(w / T, 1 / k.double())  # r_k = 1/k
    assert torch.equal(bound.time_input(t_k).float(), k.float())


# ---- a tiny DiT -----------------------------------------------------------------------------

TINY = DiTConfig(vocab_size=8, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0)


def test_stratified_and_exact_in_t_agree_on_a_tiny_dit():
    torch.manual_seed(0)
    model = DiT(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    apply, params = make_apply(model), params_of(model)
    g = torch.Generator().manual_seed(0)
    chunks = torch.randint(0, 7, (64, 16), generator=g)
    bound, kw = d3pm.bound(d3pm.D3PMConfig(T=20, process=Absorbing(7))), dict(generator=g, batch_size=512)
    exact = ev.exact_in_t(bound, apply, params, chunks, **kw)
    strat = ev.stratified(bound, apply, params, chunks, n_t=8, **kw)
    assert (exact.n_chunks, exact.n_t, strat.n_t) == (64, 20, 8)
    assert abs(exact.bpc - strat.bpc) < 3 * math.hypot(exact.stderr, strat.stderr), (exact, strat)
    assert exact.bpc > math.log2(7) - 3 * exact.stderr  # random data: no model beats uniform


def test_running_estimate_ends_at_the_final_one_and_runs_are_reproducible(toy):
    seqs, p, apply = toy
    infos = []
    run = lambda on_batch=None: ev.stratified(  # noqa: E731
        MaskedBound(TOY, Linear(), 100),
        apply,
        None,
        seqs.repeat(10, 1),
        generator=torch.Generator().manual_seed(5),
        n_t=3,
        batch_size=100,
        on_batch=on_batch,
    )
    est = run(infos.append)
    assert len(infos) == math.ceil(270 * 3 / 100) and infos[-1]["done"] == infos[-1]["total"] == 810
    assert [i["n_chunks"] for i in infos] == [min((100 * b) // 3, 270) for b in range(1, 10)]
    assert infos[-1]["bpc"] == pytest.approx(est.bpc) and infos[-1]["stderr"] == pytest.approx(est.stderr)
    assert est.report() == run().report() == {"bpc": est.bpc, "stderr": est.stderr, "n_chunks": 270, "n_t": 3}


def test_running_estimate_waits_for_chunks_to_finish_under_exact_in_t(toy):
    seqs, _, apply = toy
    infos = []
    est = ev.exact_in_t(
        MaskedBound(TOY, Linear(), 100),
        apply,
        None,
        seqs[:4],
        generator=torch.Generator(),
        batch_size=30,
        on_batch=infos.append,
    )
    assert [i["n_chunks"] for i in infos[:5]] == [0, 0, 0, 1, 1]  # 100 times per chunk, 30 per batch
    assert math.isnan(infos[0]["bpc"]) and math.isnan(infos[3]["stderr"]) and not math.isnan(infos[3]["bpc"])
    assert infos[-1]["bpc"] == pytest.approx(est.bpc) and infos[-1]["stderr"] == pytest.approx(est.stderr)


def test_bad_input_is_refused_with_a_clear_message(toy):
    _, _, apply = toy
    kw = dict(generator=torch.Generator())
    continuous, discrete = MaskedBound(TOY), MaskedBound(TOY, Linear(), 10)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        ev.stratified(continuous, apply, None, torch.empty(0, 3, dtype=torch.long), **kw)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        ev.exact_in_t(discrete, apply, None, torch.empty(0, dtype=torch.long), **kw)
    with pytest.raises(ValueError, match="discrete"):
        ev.exact_in_t(continuous, apply, None, torch.zeros(2, 3, dtype=torch.long), **kw)
    with pytest.raises(ValueError, match="n_t"):
        ev.stratified(continuous, apply, None, torch.zeros(2, 3, dtype=torch.long), n_t=0, **kw)
    with pytest.raises(ValueError, match="n_t"):
        ev.elbo_vs_T(continuous, apply, None, torch.zeros(2, 3, dtype=torch.long), n_t=0, **kw)


# ---- sample metrics -------------------------------------------------------------------------


def test_char_entropies_by_hand():
    assert ev.char_entropy("abab" * 50) == pytest.approx(1.0)
    assert ev.char_entropy("abab" * 50, order=2) == pytest.approx(0.0, abs=1e-12)  # b always follows a
    # "aabb": bigrams aa, ab, bb -> H(pair) = log2 3, H(previous) = H(2/3, 1/3)
    assert ev.char_entropy("aabb", order=2) == pytest.approx(2 / 3)
    assert ev.char_entropy("abcd") == pytest.approx(2.0)
    # bigrams never cross texts: "ab" + "ba" gives ab, ba (not b|b), so the next char is determined
    assert ev.char_entropy(["ab", "ba"], order=2) == pytest.approx(0.0, abs=1e-12)
    assert ev.char_entropy(["ab", "ba"]) == ev.char_entropy("abba") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="order"):
        ev.char_entropy("abc", order=3)
    with pytest.raises(ValueError, match="bigrams"):
        ev.char_entropy(["a", "b"], order=2)


def test_word_metrics_by_hand():
    vocab = set(ev.words("the cat sat on a mat the end"))
    assert vocab == {"the", "cat", "sat", "on", "mat", "end"}  # one-letter words are not counted
    assert ev.word_in_vocab_fraction(["the cat xq a", "on zzz"], vocab) == pytest.approx(3 / 5)
    assert ev.mean_word_length(["the cat", "a  mat "]) == pytest.approx(10 / 4)
    with pytest.raises(ValueError, match="no words"):
        ev.word_in_vocab_fraction(["a b c", ""], vocab)
    metrics = ev.sample_metrics(["the cat sat"], "the cat sat on a mat", vocab)
    assert metrics["word_in_vocab"] == 1.0 and metrics["mean_word_length_data"] == pytest.approx(15 / 6)
    assert set(metrics) == {
        "word_in_vocab",
        "unigram_entropy",
        "unigram_entropy_data",
        "bigram_entropy",
        "bigram_entropy_data",
        "mean_word_length",
        "mean_word_length_data",
    }


def test_bits_per_byte_is_total_bits_over_the_bytes_the_tokens_stand_for(toy):
    """A toy tokenizer whose 3 ids are multi-byte strings, the toy's exact NLL per sequence: the bound
    per byte is (bits per token) x tokens / bytes, which is every sequence's bits over all their bytes."""
    from nanodd.data.tokenizers import TableTokenizer, text8

    seqs, p, _ = toy
    tok = TableTokenizer("toy", (b"ab", "\u00e9".encode(), b"xyz"), None, lambda text: [])
    bits = -p.log() / math.log(2)  # exact NLL of each sequence, bits
    report = ev.summarize(bits / 3, n_t=1).report()  # bits per token of each chunk, meaned
    n_bytes = sum(len(tok.decode(row).encode()) for row in seqs)
    assert n_bytes == tok.n_bytes(seqs) == 27 * 7  # each id appears 27 times over all 27 sequences
    out = ev.per_byte(report, n_tokens=seqs.numel(), n_bytes=n_bytes)
    assert math.isclose(out["bpb"], float(bits.sum()) / n_bytes, rel_tol=0, abs_tol=1e-9)
    assert math.isclose(out["ppl"], math.exp(float(-p.log().sum()) / seqs.numel()), rel_tol=1e-12)
    chars = torch.randint(0, 27, (4, 16), generator=torch.Generator().manual_seed(0))
    per_char = ev.per_byte(report, n_tokens=chars.numel(), n_bytes=text8().n_bytes(chars))
    assert per_char["bpb"] == report["bpc"], "text8: one byte per character, so bits per byte = bits per char"
