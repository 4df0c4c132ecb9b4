"""Tokenise a corpus into one token file per split, in parallel, in bounded memory, deterministically.

The main process cuts the corpus into chunks at safe points (``nanodd.data.corpus``) and hands them to
``workers`` processes, each of which loads the tokenizer once from its saved directory; results are
written in corpus order, so the files are identical for any number of workers (one worker tokenises
in-process).  At most ``IN_FLIGHT_PER_WORKER * workers`` chunks are submitted and not yet written, so
the memory prepare holds is bounded whatever the corpus size: about
``(IN_FLIGHT_PER_WORKER * workers + 2) * chunk_bytes`` of text and tokens in the main process, and in
each worker one chunk's text, its decoded string and its ids (for ``chunk_bytes`` = 4 MiB: tens of MB
per worker; a document with no safe point for longer than ``chunk_bytes`` makes a longer chunk).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

import nanodd.data.tokenizers as tokenizers
from nanodd.data.corpus import END, Corpus, Piece, split_pieces
from nanodd.data.errors import DataError

SPLITS = ("train", "val", "test")
CHUNK_BYTES = 1 << 22
IN_FLIGHT_PER_WORKER = 2
_TOKENIZER = None
"""The tokenizer a worker process loaded (``_load``)."""


def dtype_for(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


@dataclasses.dataclass
class Counts:
    """What was written per split: UTF-8 bytes of text, tokens, documents (end-of-document ids)."""

    bytes: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    documents: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    sha256: str = ""


def decode_chunk(piece: Piece) -> str:
    """Strict UTF-8 text of a piece; a DataError naming the document and the byte's offset in it."""
    try:
        return piece.data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{piece.name} is not UTF-8 text (byte 0x{piece.data[e.start]:02x} at offset {piece.offset + e.start}); "
            "convert it first, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def encode_piece(tok, piece: Piece, dtype: np.dtype) -> np.ndarray:
    """Ids of ``piece`` as ``dtype``, with the end-of-document id after a document's last piece."""
    ids = tok.encode(decode_chunk(piece)).astype(dtype)
    return np.append(ids, np.array([tok.eod_id], dtype)) if piece.last else ids


def _load(directory: str) -> None:
    global _TOKENIZER
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per worker process
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    _TOKENIZER = tokenizers.load(Path(directory))


def _exit_with(parent: int) -> None:
    """A worker's watch: it ends within a second of the preparing process (a kill -9 leaves none to stop it)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _encode(piece: Piece, dtype: str) -> np.ndarray:
    return encode_piece(_TOKENIZER, piece, np.dtype(dtype))


class Progress:
    """MB read of the total, MB/s, tokens and ETA on one stderr line, redrawn at most every ``every`` s."""

    def __init__(self, name: str, total: int, enabled: bool, every: float = 0.25):
        self.name, self.total, self.enabled, self.every = name, total, enabled, every
        self.done, self.tokens, self.t0, self.last = 0, 0, time.monotonic(), -every

    def update(self, n_bytes: int, n_tokens: int, final: bool = False) -> None:
        self.done, self.tokens = self.done + n_bytes, self.tokens + n_tokens
        now = time.monotonic()
        if not self.enabled or (now - self.last < self.every and not final):
            return
        self.last, rate = now, self.done / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0
        line = (
            f"\r{self.name}: {self.done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB ({100 * self.done / max(self.total, 1):.0f}%)"
            f" {rate / 1e6:.1f} MB/s, {self.tokens:,} tokens, ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        )
        print(line, end="\n" if final else "", file=sys.stderr, flush=True)


def write_shards(
    corpus: Corpus,
    tok,
    tokenizer_dir: Path,
    out: Path,
    *,
    workers: int = 1,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = False,
) -> Counts:
    """Tokenise ``corpus`` with ``tok`` (saved in ``tokenizer_dir``, which workers load) into
    ``out/{train,val,test}.bin``, each written as ``<name>.tmp`` and renamed when complete."""
    dtype, counts = dtype_for(tok.vocab_size), Counts()
    h, bar = hashlib.sha256(), Progress(f"tokenizing {corpus.description}", corpus.n_bytes, progress)
    files = {s: open(out / f"{s}.bin.tmp", "wb") for s in SPLITS}
    try:
        for split, piece, ids in _tokenized(corpus, tok, tokenizer_dir, dtype, workers, chunk_bytes):
            name = SPLITS[split]
            files[name].write(ids.tobytes())
            h.update(piece.data + (END if piece.last else b""))
            counts.bytes[name] += len(piece.data)
            counts.tokens[name] += len(ids)
            counts.documents[name] += piece.last
            bar.update(len(piece.data), len(ids))
        bar.update(0, 0, final=True)
        for s, f in files.items():
            f.close()
            os.replace(out / f"{s}.bin.tmp", out / f"{s}.bin")
    finally:
        for s, f in files.items():
            f.close()
            (out / f"{s}.bin.tmp").unlink(missing_ok=True)  # what a failure (a full disk) left unfinished
    counts.sha256 = h.hexdigest()
    return counts


def _tokenized(corpus: Corpus, tok, tokenizer_dir: Path, dtype: np.dtype, workers: int, chunk_bytes: int):
    """(split, piece, ids) in corpus order; with ``workers`` > 1 (and more than one chunk of text) in a pool
    of that many processes, with at most ``IN_FLIGHT_PER_WORKER * workers`` chunks outstanding."""
    todo = split_pieces(corpus, chunk_bytes)
    if workers <= 1 or corpus.n_bytes <= chunk_bytes:
        for split, piece in todo:
            yield split, piece, encode_piece(tok, piece, dtype)
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_load, initargs=(str(tokenizer_dir),)
    ) as pool:
        queue = collections.deque()
        for split, piece in todo:
            queue.append((split, piece, pool.submit(_encode, piece, dtype.str)))
            if len(queue) >= IN_FLIGHT_PER_WORKER * workers:
                split_, piece_, future = queue.popleft()
                yield split_, piece_, future.result()
        while queue:
            split_, piece_, future = queue.popleft()
            yield split_, piece_, future.result()
