"""Batches as pure functions of their index: random training crops and canonical eval chunks.

A training batch depends only on (seed, rank, step), so a resumed run sees exactly the batches
it would have seen, and the data position to checkpoint is the step itself. Only the crops are
read, so ``data`` can be a memmap far larger than RAM.
"""

from collections.abc import Iterator

import numpy as np
import torch


def train_batch(data: np.ndarray, step: int, *, batch_size: int, seq_len: int, seed: int,
                rank: int = 0) -> torch.Tensor:
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


def eval_batches(data: np.ndarray, seq_len: int, batch_size: int) -> Iterator[torch.Tensor]:
    """LongTensor[b, seq_len] batches of contiguous, non-overlapping chunks, in order.

    Chunk i is ``data[i * seq_len : (i + 1) * seq_len]``; the last batch may hold fewer than
    ``batch_size`` chunks, and the remainder from ``eval_chunks`` is left out.
    """
    n_chunks, _ = eval_chunks(data, seq_len)
    for first in range(0, n_chunks, batch_size):
        b = min(batch_size, n_chunks - first)
        x = np.asarray(data[first * seq_len:(first + b) * seq_len]).reshape(b, seq_len)
        yield torch.from_numpy(x.astype(np.int64))
