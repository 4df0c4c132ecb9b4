r"""Likelihood bounds in bits per character, with standard errors, and sample metrics that need no
downloaded model.

**A bound is an integrand.**  Every method states its bound as  L(x0) = E_{t ~ U(0, 1]} E f(x0, t)
(``nanodd.protocols.Integrand``; absorbing diffusion's is ``nanodd.methods.mdlm.MaskedBound``, whose
module derives it), so one set of estimators serves them all.

**Estimators.**  Each chunk x0 [L] (canonical, contiguous, non-overlapping: no special tokens) gets
times t_j and one noise draw per time; its value is  (1/n_t) sum_j f(x0, t_j) / (L ln 2)  bits/char.

    exact in t (discrete bounds only):  t_j = (k - 1/2)/T for every k = 1..T  -> MC over z_t only;
    stratified:  the n * n_t times of all chunks are one per stratum ((s + 1 - u) / (n n_t), s a
                 random permutation of 0..n n_t - 1), so t lies in (0, 1] and, read on the grid,
                 k is stratified over 1..T.

The reported value is the mean over chunks and the standard error is  std(chunk values) / sqrt(n).
Chunks are independent under exact-in-t; under stratified times they are negatively correlated,
so that standard error is conservative.  ``elbo_vs_T`` evaluates the same integrand on several
grids (``dataclasses.replace(integrand, T=...)``) with common random numbers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import torch
from torch import Tensor

from nanodd import draws
from nanodd.functional import Apply, Params
from nanodd.protocols import Integrand

OnBatch = Callable[[dict], None]
ELBO_TS = (10, 20, 100, 256, 1000, None)
"""The T of the ELBO-vs-T curve; None is the continuous-time limit L_inf."""


@dataclass(frozen=True)
class Estimate:
    """A bound in bits per character: mean and standard error over chunks."""

    bpc: float
    stderr: float
    n_chunks: int
    n_t: int
    """Times per chunk (T under exact-in-t): n_chunks * n_t network evaluations in all."""
    per_chunk: Tensor
    """[n_chunks] float64, each chunk's own estimate in bits/char."""

    def report(self) -> dict[str, float | int]:
        """The JSON-ready numbers (without ``per_chunk``)."""
        return {"bpc": self.bpc, "stderr": self.stderr, "n_chunks": self.n_chunks, "n_t": self.n_t}


def summarize(per_chunk: Tensor, n_t: int) -> Estimate:
    """Mean and std / sqrt(n) of the chunk values (stderr is nan for a single chunk)."""
    n = per_chunk.numel()
    mean = per_chunk.mean()
    var = ((per_chunk - mean) ** 2).sum() / torch.tensor(n - 1.0)
    return Estimate(float(mean), float((var / n).sqrt()), n, n_t, per_chunk)


def check_chunks(chunks: Tensor) -> None:
    if chunks.dim() != 2 or chunks.shape[0] == 0 or chunks.shape[1] == 0:
        raise ValueError(
            f"nothing to evaluate: chunks must be [n >= 1, L >= 1] token ids, got shape "
            f"{tuple(chunks.shape)} (is the split shorter than one sequence?)"
        )


@dataclass
class Running:
    """Sums over the chunks finished so far, for a cheap running estimate during long evaluations."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, per_chunk: Tensor) -> None:
        self.n += per_chunk.numel()
        self.total += float(per_chunk.sum())
        self.total_sq += float(per_chunk.square().sum())

    def report(self) -> dict[str, float | int]:
        mean = self.total / self.n if self.n else math.nan
        var = (self.total_sq - self.n * mean**2) / (self.n - 1) if self.n > 1 else math.nan
        return {"n_chunks": self.n, "bpc": mean, "stderr": math.sqrt(max(var, 0.0) / max(self.n, 1))}


@torch.no_grad()
def estimate_bound(
    integrand: Integrand,
    apply: Apply,
    params: Params,
    chunks: Tensor,
    times: Tensor,
    *,
    generator: torch.Generator,
    batch_size: int = 256,
    on_batch: OnBatch | None = None,
) -> Estimate:
    """Evaluate the integrand on every (chunk, time) pair of chunks [n, L] and times [n, n_t] in (0, 1].

    Pairs run chunk by chunk in batches of ``batch_size``, each with fresh noise from ``generator``.
    ``on_batch`` gets the pairs ``done`` of ``total`` and the running ``bpc`` and ``stderr`` over the
    ``n_chunks`` whose every time is done.
    """
    check_chunks(chunks)
    (n, L), n_t = chunks.shape, times.shape[1]
    to_bits = 1 / (L * math.log(2))
    nats = torch.empty(n, n_t, dtype=torch.float64, device=chunks.device)
    running = Running()
    for start in range(0, n * n_t, batch_size):
        pair = torch.arange(start, min(start + batch_size, n * n_t), device=chunks.device)
        x0 = chunks[pair // n_t]
        nats.view(-1)[pair] = integrand(
            apply, params, x0, times.reshape(-1)[pair], integrand.noise(generator, x0)
        ).double()
        if on_batch is not None:
            done = start + len(pair)
            running.add(nats[running.n : done // n_t].mean(1) * to_bits)
            on_batch({"done": done, "total": n * n_t, **running.report()})
    return summarize(nats.mean(1) * to_bits, n_t)


def exact_in_t_times(n: int, T: int, device: torch.device | str = "cpu") -> Tensor:
    """Every step k = 1..T for every chunk, as the stratum midpoints t = (k - 1/2)/T: [n, T] float64."""
    k = torch.arange(1, T + 1, dtype=torch.float64, device=device)
    return ((k - 0.5) / T).expand(n, T)


def chunk_times(generator: torch.Generator, n: int, n_t: int) -> Tensor:
    """One t per stratum ((s + 1 - u) / N, N = n n_t) in random order: [n, n_t] float64 in (0, 1]."""
    if n_t < 1:
        raise ValueError(f"n_t must be >= 1, got {n_t}")
    N = n * n_t
    s = torch.randperm(N, generator=generator, device=generator.device).double()
    u = draws.uniforms(generator, (N,)).double()
    return ((s + 1 - u) / N).view(n, n_t)


def exact_in_t(
    integrand: Integrand,
    apply: Apply,
    params: Params,
    chunks: Tensor,
    *,
    generator: torch.Generator,
    batch_size: int = 256,
    on_batch: OnBatch | None = None,
) -> Estimate:
    """A discrete bound L_T with the sum over all T steps done exactly for every chunk (MC over z_t only)."""
    if integrand.T is None:
        raise ValueError("exact-in-t needs a discrete bound (T steps); this one is continuous: use `stratified`")
    check_chunks(chunks)
    times = exact_in_t_times(chunks.shape[0], integrand.T, chunks.device)
    return estimate_bound(
        integrand, apply, params, chunks, times, generator=generator, batch_size=batch_size, on_batch=on_batch
    )


def stratified(
    integrand: Integrand,
    apply: Apply,
    params: Params,
    chunks: Tensor,
    *,
    generator: torch.Generator,
    n_t: int = 1,
    batch_size: int = 256,
    on_batch: OnBatch | None = None,
) -> Estimate:
    """The bound from ``n_t`` stratified times per chunk (see the module docstring)."""
    check_chunks(chunks)
    times = chunk_times(generator, chunks.shape[0], n_t)
    return estimate_bound(
        integrand, apply, params, chunks, times, generator=generator, batch_size=batch_size, on_batch=on_batch
    )


def elbo_vs_T(
    integrand: Integrand,
    apply: Apply,
    params: Params,
    chunks: Tensor,
    *,
    generator: torch.Generator,
    Ts: Sequence[int | None] = ELBO_TS,
    n_t: int = 1,
    batch_size: int = 256,
    on_batch: OnBatch | None = None,
) -> dict[int | None, Estimate]:
    """The stratified bound on every grid in ``Ts`` (None: L_inf) from one model and integrand.

    Every T sees the same times and the same noise (common random numbers), so the differences
    between the T are far less noisy than each value.  ``on_batch`` info carries ``"T"``.
    """
    check_chunks(chunks)
    times = chunk_times(generator, chunks.shape[0], n_t)
    state = generator.get_state()
    curve = {}
    for T in Ts:
        generator.set_state(state)
        report = None if on_batch is None else (lambda info, T=T: on_batch({"T": T, **info}))
        curve[T] = estimate_bound(
            dataclasses.replace(integrand, T=T),
            apply,
            params,
            chunks,
            times,
            generator=generator,
            batch_size=batch_size,
            on_batch=report,
        )
    return curve


def per_byte(report: dict, n_tokens: int, n_bytes: int) -> dict:
    """A report in bits per token (``bpc``: per character for text8) with the same bound per UTF-8 byte
    of the evaluated text beside it, and the per-token perplexity bound the OWT / LM1B tables use:

        bpb = bits per token * tokens / bytes   (= total bits / total bytes, every chunk holding L tokens)
        ppl = 2^(bits per token) = exp(nats per token)

    Bits per byte is the axis on which models with different tokenizers compare; for text8 (one byte
    per character) it equals bits per character."""
    scale = n_tokens / n_bytes
    return report | {
        "bpb": report["bpc"] * scale,
        "bpb_stderr": report["stderr"] * scale,
        "ppl": 2.0 ** report["bpc"],
        "tokens": n_tokens,
        "bytes": n_bytes,
    }


# ---- sample metrics: pure functions of decoded text ---------------------------------------------


def words(text: str, min_len: int = 2) -> list[str]:
    """Space-separated words of at least ``min_len`` characters."""
    return [w for w in text.split() if len(w) >= min_len]


def word_in_vocab_fraction(samples: Sequence[str], vocab: Collection[str]) -> float:
    """Fraction of the samples' words (length >= 2) found in ``vocab`` (e.g. ``set(words(train))``)."""
    found = [w in vocab for s in samples for w in words(s)]
    if not found:
        raise ValueError("the samples hold no words of length >= 2")
    return sum(found) / len(found)


def mean_word_length(texts: str | Sequence[str]) -> float:
    """Mean length of the space-separated words."""
    lengths = [len(w) for s in as_texts(texts) for w in s.split()]
    if not lengths:
        raise ValueError("the text holds no words")
    return sum(lengths) / len(lengths)


def as_texts(texts: str | Sequence[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def code_points(text: str) -> Tensor:
    """The characters of ``text`` as int64 code points (no Python loop over characters)."""
    return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32).long()


def entropy_bits(symbols: Tensor) -> float:
    """H = -sum_x p(x) log2 p(x) of the empirical distribution of ``symbols``."""
    _, counts = torch.unique(symbols, return_counts=True)
    p = counts.double() / counts.sum()
    return float(-(p * p.log2()).sum())


def char_entropy(texts: str | Sequence[str], order: int = 1) -> float:
    """Empirical character entropy in bits: order 1 is H(c_i); order 2 is the conditional bigram
    entropy H(c_i | c_{i-1}) = H(c_{i-1}, c_i) - H(c_{i-1}), bigrams taken within each text."""
    codes = [code_points(s) for s in as_texts(texts)]
    if order == 1:
        symbols = torch.cat(codes)
        if not symbols.numel():
            raise ValueError("no characters to measure")
        return entropy_bits(symbols)
    if order == 2:
        prev, cur = torch.cat([c[:-1] for c in codes]), torch.cat([c[1:] for c in codes])
        if not prev.numel():
            raise ValueError("no character bigrams to measure")
        return entropy_bits(prev * 0x110000 + cur) - entropy_bits(prev)
    raise ValueError(f"order must be 1 or 2, got {order}")


def sample_metrics(samples: Sequence[str], data: str, vocab: Collection[str]) -> dict[str, float]:
    """Every sample metric, with the data's own value beside each one to compare against."""
    return {
        "word_in_vocab": word_in_vocab_fraction(samples, vocab),
        "unigram_entropy": char_entropy(samples, 1),
        "unigram_entropy_data": char_entropy(data, 1),
        "bigram_entropy": char_entropy(samples, 2),
        "bigram_entropy_data": char_entropy(data, 2),
        "mean_word_length": mean_word_length(samples),
        "mean_word_length_data": mean_word_length(data),
    }
