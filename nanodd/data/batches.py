"""Batches as pure functions of their index: random training crops and canonical eval chunks.

A training batch depends only on (seed, rank, step), so a resumed run sees exactly the batches
it would have seen, and the data position to checkpoint is the step itself. Only the crops are
read, so ``data`` can be a memmap far larger than RAM.

Two ways documents fill rows of ``seq_len`` ids (``DataConfig.rows``): ``wrap`` (the split as one stream:
crops start anywhere and run across the end-of-document ids) or ``pad`` (``padded_rows``: one document per
row, as LM1B's sentences; crops are then whole rows, ``aligned``).
"""

from typing import Iterator

import numpy as np
import torch


def train_batch(
    data: np.ndarray, step: int, *, batch_size: int, seq_len: int, seed: int, rank: int = 0, aligned: bool = False
) -> torch.Tensor:
    """LongTensor[batch_size, seq_len] of crops at offsets drawn from ``default_rng([seed, rank, step])``.

    Offsets are uniform over every start that fits (0 .. len(data) - seq_len), or with ``aligned`` over the
    multiples of seq_len (whole rows of ``padded_rows``); seed, rank and step must be non-negative.
    """
    if min(seed, rank, step) < 0:
        raise ValueError(f"seed, rank and step must be non-negative, got {seed}, {rank}, {step}")
    if len(data) < seq_len:
        raise ValueError(f"data holds {len(data):,} tokens, fewer than seq_len = {seq_len:,}")
    rng = np.random.default_rng([seed, rank, step])
    if aligned:
        offsets = rng.integers(0, len(data) // seq_len, size=batch_size) * seq_len
    else:
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


def padded_rows(data: np.ndarray, eod_id: int, seq_len: int, block: int = 1 << 20) -> Iterator[np.ndarray]:
    """Rows [n, seq_len] of ``data``'s ids, one per document in order: its ids through its end-of-document id,
    cut at ``seq_len``, then ``eod_id`` up to seq_len (the padding); a last document without its end of
    document is a row too.  ``data`` is read ``block`` ids at a time, so memory stays bounded (the rows of a
    block, and the first seq_len ids of a document that runs on)."""
    head = data[:0]  # the first <= seq_len ids of the document that runs on into the next block
    for start in range(0, len(data), block):
        piece = np.asarray(data[start : start + block])
        ends = np.flatnonzero(piece == eod_id) + 1  # one past each end of document
        if not len(ends):
            head = np.concatenate([head, piece[:seq_len]])[:seq_len]
            continue
        first = np.concatenate([head, piece[: min(ends[0], seq_len)]])
        yield _rows(first, np.array([0]), np.array([len(first)]), eod_id, seq_len)
        yield _rows(piece, ends[:-1], ends[1:], eod_id, seq_len)
        head = piece[ends[-1] : ends[-1] + seq_len]
    if len(head):
        yield _rows(head, np.array([0]), np.array([len(head)]), eod_id, seq_len)


def _rows(ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, pad: int, seq_len: int) -> np.ndarray:
    """ids[starts[r] : ends[r]], cut at seq_len and padded with ``pad``, as rows [len(starts), seq_len]."""
    j = np.arange(seq_len)
    inside = j < np.minimum(ends - starts, seq_len)[:, None]  # [n, seq_len]
    at = np.minimum(starts[:, None] + j, len(ids) - 1)
    return np.where(inside, ids[at], pad).astype(ids.dtype)
