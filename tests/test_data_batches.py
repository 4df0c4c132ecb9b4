"""Step-indexed training crops and canonical evaluation chunks."""

import numpy as np
import pytest
import torch

from nanodd.data import canonical_chunks, eval_chunks, train_batch
from nanodd.data.batches import padded_rows


@pytest.fixture
def memmap(tmp_path):
    path = tmp_path / "train.bin"
    np.arange(5000, dtype=np.int64).astype(np.uint8).tofile(path)
    return np.memmap(path, dtype=np.uint8, mode="r")


def test_train_batch_is_a_function_of_seed_rank_step(memmap):
    kw = dict(batch_size=4, seq_len=32, seed=7)
    a = train_batch(memmap, 3, **kw)
    assert a.dtype == torch.long and a.shape == (4, 32)
    assert torch.equal(a, train_batch(memmap, 3, **kw))
    assert torch.equal(a, train_batch(memmap, 3, **kw, rank=0))
    assert not torch.equal(a, train_batch(memmap, 3, **kw, rank=1))
    assert not torch.equal(a, train_batch(memmap, 4, **kw))
    assert not torch.equal(a, train_batch(memmap, 3, batch_size=4, seq_len=32, seed=8))


def test_train_batch_rows_are_contiguous_crops(memmap):
    x = train_batch(memmap, 0, batch_size=64, seq_len=16, seed=0).numpy()
    full = np.asarray(memmap)
    for row in x:
        starts = np.flatnonzero(full[: len(full) - 15] == row[0])
        assert any(np.array_equal(full[s : s + 16], row) for s in starts)


def test_train_batch_replays_a_resumed_run(memmap):
    run = [train_batch(memmap, s, batch_size=2, seq_len=8, seed=1) for s in range(10)]
    resumed = [train_batch(memmap, s, batch_size=2, seq_len=8, seed=1) for s in range(5, 10)]
    assert all(torch.equal(a, b) for a, b in zip(run[5:], resumed))


def test_train_batch_fits_exactly_sized_data():
    data = np.arange(8, dtype=np.uint8)
    x = train_batch(data, 0, batch_size=3, seq_len=8, seed=0)
    assert (x == torch.arange(8)).all()
    with pytest.raises(ValueError, match="fewer than seq_len"):
        train_batch(data, 0, batch_size=1, seq_len=9, seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        train_batch(data, -1, batch_size=1, seq_len=4, seed=0)


def test_canonical_chunks_cover_the_split_contiguously(memmap):
    n, rem = eval_chunks(memmap, 64)
    assert (n, rem) == (78, 8)
    chunks = canonical_chunks(memmap, 64)
    assert chunks.dtype == torch.long and chunks.shape == (78, 64)
    assert np.array_equal(chunks.reshape(-1).numpy(), np.asarray(memmap[: n * 64]))
    assert torch.equal(canonical_chunks(memmap, 64, max_chunks=10), chunks[:10])


def test_canonical_chunks_of_data_shorter_than_a_chunk():
    assert eval_chunks(np.zeros(5, np.uint8), 8) == (0, 5)
    assert canonical_chunks(np.zeros(5, np.uint8), 8).shape == (0, 8)


def brute_force_rows(ids: list[int], eod: int, L: int) -> list[list[int]]:
    """One row per document (through its end of document), cut at L, padded with eod."""
    rows, doc = [], []
    for i in ids:
        doc.append(i)
        if i == eod:
            rows.append(doc)
            doc = []
    rows += [doc] if doc else []
    return [(d[:L] + [eod] * L)[:L] for d in rows]


@pytest.mark.parametrize("block", [1, 3, 7, 1 << 20])
def test_padded_rows_hold_one_document_each_whatever_the_block(block):
    rng = np.random.default_rng(block)
    eod, L = 9, 5
    ids = rng.choice([1, 2, 3, eod], p=[0.3, 0.3, 0.25, 0.15], size=400).astype(np.uint16)
    ids[50:70] = 1  # a document longer than a row (and than small blocks)
    rows = np.concatenate(list(padded_rows(ids, eod, L, block=block)))
    assert rows.dtype == np.uint16 and rows.tolist() == brute_force_rows(ids.tolist(), eod, L)


def test_aligned_training_crops_are_whole_rows():
    rows = np.arange(40, dtype=np.int64).reshape(10, 4)
    x = train_batch(rows.reshape(-1), 3, batch_size=64, seq_len=4, seed=0, aligned=True)
    assert all(r[0] % 4 == 0 and r.tolist() == list(range(r[0], r[0] + 4)) for r in x)
    assert len({int(r[0]) for r in x}) > 5  # rows drawn from all over the split
