"""Batches as pure functions of their index: random training crops and canonical eval chunks.

A training batch depends only on (seed, rank, step), so a resumed run sees exactly the batches
it would have seen, and the data position to checkpoint is the step itself. Only the crops are
read, so ``data`` can be a memmap far larger than RAM.
"""

import numpy as np
import torch


def train_batch(
    data: np.ndarray, step: int, *, batch_size: int, seq_len: int, seed: int, rank: int = 0
) -> torch.Tensor:
    """LongTensor[batch_size, seq_len] of crops at offsets drawn from ``default_rng([seed, rank, step])``.

    Offsets are uniform over every start that fits (0 .. len(data) - seq_len); seed, rank and
    step must be non-negative.
    """
    if min(seed, rank, step) < 0:
        raise ValueError(f"seed, rank and step must be non-negative, got {seed}, {rank}, {step}")
    if len(data) < seq_len:
        raise ValueError(f"data holds {len(data):,} tokens, fewer than seq_len = {seq_len:,}")
    rng = np.random.default_rng([seed, rank, step])
    offsets = rng.integers(0, len(data) - seq_len + 1, size=batch_size)
    x = data[offsets[:, None] + np.arange(seq_len)]
    return torch.from_numpy(x.astype(np.int64))


def eval_chunks(data: np.ndarray, seq_len: int) -> tuple[int, int]:
    """(number of whole length-``seq_len`` chunks, leftover tokens at the end, never evaluated)."""
    return divmod(len(data), seq_len)


def canonical_chunks(data: np.ndarray, seq_len: int, max_chunks: int | None = None) -> torch.Tensor:
    """LongTensor[n, seq_len]: the split's contiguous, non-overlapping chunks, in order.

    Chunk i is ``data[i * seq_len : (i + 1) * seq_len]``; only the first ``max_chunks`` are read
    (all by default), and the remainder from ``eval_chunks`` is left out.
    """
    n, _ = eval_chunks(data, seq_len)
    n = n if max_chunks is None else min(n, max_chunks)
    return torch.from_numpy(np.asarray(data[: n * seq_len]).astype(np.int64)).view(n, seq_len)
