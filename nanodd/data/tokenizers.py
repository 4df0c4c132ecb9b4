"""Tokenizers: text <-> ids, the data axis (``nanodd.protocols.Tokenizer``), ``nanodd.data.tokenizers``.

    text8   27 ids: space = 0, a-z = 1-26 (nanoDD's); raw text is normalised by wikifil's rules
    bytes   257 ids: the 256 byte values, then the end of document; lossless on any UTF-8 text
    bpe     byte-level BPE trained on the training split with Hugging Face ``tokenizers``; lossless
    gpt2    GPT-2's byte-level BPE through ``tiktoken`` (50,257 ids, ``<|endoftext|>`` = 50256)
    wordpiece  BERT's WordPiece from a local ``vocab.txt`` (bert-base-uncased: LM1B's), through ``tokenizers``;
            lossy: it lowercases, strips accents and splits off punctuation (its vocabulary, then the end of
            document)

Every id stands for a fixed byte string (``table``; a WordPiece word start is its text after one space,
a ``##`` continuation its text alone), so decoding a run of ids is the concatenation of
their bytes and the UTF-8 byte count of any run is exact (bits per byte).  The end-of-document id
(which stands for no bytes and decodes to ``EOD``) is the last id, kept out of the learned
vocabularies: ``encode`` never produces it, not even from a literal ``<|endoftext|>`` in the text.

A tokenizer is saved as a directory (``save`` / ``load``): ``tokenizer.json`` with its name and
identity, plus the file that defines it (BPE's model, GPT-2's ranks), so a prepared corpus and a run
directory each carry the tokenizer they were made with.  This module reads and writes files, so it is
part of the data layer, not of the pure core.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from nanodd.checks import Field, Message
from nanodd.data.errors import DataError
from nanodd.data.files import atomic_write
from nanodd.data.text import VOCAB, decode as text8_decode, encode as text8_encode, normalize_text8

NAMES = ("text8", "bytes", "bpe", "gpt2", "wordpiece")
EOD = "<|endoftext|>"
"""How the end-of-document id decodes."""
MASKED = "_"
"""How an id outside the vocabulary (the mask) decodes."""
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
"""SHA-256 of GPT-2's ranks file ``gpt2.tiktoken`` (= tiktoken's ``r50k_base.tiktoken``)."""
GPT2_RANKS_ENV = "NANODD_GPT2_RANKS"
GPT2_HELP = Message(
    f"GPT-2's ranks file gpt2.tiktoken (SHA-256 {GPT2_SHA256[:12]}...): pass its path (",
    Field("data.tokenizer_file"),
    f") or set ${GPT2_RANKS_ENV}, or allow tiktoken to download it (network)",
)
WORDPIECE_HELP = Message(
    "BERT's WordPiece needs its vocab.txt (one token per line; bert-base-uncased's for LM1B): pass its path (",
    Field("data.tokenizer_file"),
    ")",
)
BPE_MIN_VOCAB = 258
"""The 256 byte values, one merge and the end of document."""


def as_ids(ids: Any) -> np.ndarray:
    """int64 ids [n] of a list, numpy array or tensor (any shape, flattened in order)."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    return np.asarray(ids, dtype=np.int64).reshape(-1)


@dataclasses.dataclass(frozen=True, eq=False)
class TableTokenizer:
    """A tokenizer whose ids each stand for a byte string ``table[id]``; ``encode_fn`` maps text to ids.

    ``payload`` is the file that defines it (saved beside ``tokenizer.json``), ``normalize_fn`` what it
    reads of raw text."""

    name: str
    table: tuple[bytes, ...]
    eod_id: int | None
    encode_fn: Callable[[str], Any]
    payload: bytes = b""
    normalize_fn: Callable[[str], str] = lambda text: text

    @property
    def vocab_size(self) -> int:
        return len(self.table)

    def normalize(self, text: str) -> str:
        return self.normalize_fn(text)

    def encode(self, text: str) -> np.ndarray:
        return as_ids(self.encode_fn(text))

    def decode(self, ids: Any) -> str:
        pieces, run = [], bytearray()
        for i in as_ids(ids).tolist():
            if 0 <= i < len(self.table) and i != self.eod_id:
                run += self.table[i]
                continue
            pieces += [run.decode("utf-8", errors="replace"), EOD if i == self.eod_id else MASKED]
            run = bytearray()
        return "".join(pieces) + run.decode("utf-8", errors="replace")

    def n_bytes(self, ids: Any) -> int:
        ids = as_ids(ids)
        ids = ids[(ids >= 0) & (ids < len(self.table))]
        return int(self.lengths()[ids].sum())

    def lengths(self) -> np.ndarray:
        """Bytes per id [vocab_size]."""
        return np.array([len(b) for b in self.table], dtype=np.int64)

    def identity(self) -> dict:
        h = hashlib.sha256(f"{self.name}|{self.eod_id}|".encode())
        for token in self.table:
            h.update(len(token).to_bytes(4, "little") + token)
        h.update(self.payload)
        return {"name": self.name, "vocab_size": self.vocab_size, "eod_id": self.eod_id, "sha256": h.hexdigest()}


class Text8Tokenizer(TableTokenizer):
    """text8's 27 symbols; decoding is the fast numpy path of ``nanodd.data.text.decode`` (same result)."""

    def decode(self, ids: Any) -> str:
        return text8_decode(as_ids(ids))


def text8() -> TableTokenizer:
    table = tuple(c.encode() for c in VOCAB)
    return Text8Tokenizer("text8", table, None, text8_encode, normalize_fn=normalize_text8)


def byte_level() -> TableTokenizer:
    """The 256 byte values, then the end of document (id 256)."""
    table = tuple(bytes([b]) for b in range(256)) + (b"",)
    return TableTokenizer("bytes", table, 256, lambda text: np.frombuffer(text.encode("utf-8"), dtype=np.uint8))


# ---- byte-level BPE, trained locally ---------------------------------------------------------------------


def gpt2_byte_alphabet() -> dict[str, int]:
    """The printable character byte-level BPE writes for each byte (GPT-2's convention, which Hugging Face's
    ByteLevel pre-tokenizer follows): printable Latin-1 bytes stand for themselves, the other 68 bytes for
    the code points 256, 257, ... in byte order.  Returned inverted: character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in chars:
            chars[b], extra = chr(256 + extra), extra + 1
    return {c: b for b, c in chars.items()}


def bpe_from_json(model: bytes) -> TableTokenizer:
    """A byte-level BPE tokenizer from Hugging Face ``tokenizers`` JSON (as ``train_bpe`` writes it)."""
    from tokenizers import Tokenizer as HFTokenizer

    try:
        hf = HFTokenizer.from_str(model.decode())
    except Exception as e:  # the library raises a bare Exception on malformed JSON
        raise DataError(f"not a tokenizers BPE model: {e}") from None
    byte_of = gpt2_byte_alphabet()
    vocab = hf.get_vocab(with_added_tokens=False)
    table = [b""] * len(vocab)
    for token, i in vocab.items():
        table[i] = bytes(byte_of[c] for c in token)
    encode = lambda text: hf.encode(text, add_special_tokens=False).ids
    return TableTokenizer("bpe", (*table, b""), len(table), encode, payload=model)


def train_bpe(texts: Iterable[str], vocab_size: int) -> TableTokenizer:
    """Byte-level BPE with ``vocab_size`` ids (the end of document included) learned from ``texts``.

    GPT-2's pre-tokenisation splits the text into words, numbers, punctuation and whitespace runs;
    starting from the 256 bytes, the trainer repeatedly merges the most frequent adjacent pair within
    words until the vocabulary is full (fewer ids when the text has no more pairs).  Deterministic: the
    same texts in the same order give the same vocabulary and merges."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < BPE_MIN_VOCAB:
        raise DataError(f"a byte-level BPE needs at least {BPE_MIN_VOCAB} ids, got vocab_size {vocab_size}")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.train_from_iterator(texts, trainer)
    return bpe_from_json(hf.to_str().encode())


# ---- GPT-2 through tiktoken ------------------------------------------------------------------------------


def gpt2(ranks_file: str | None = None, *, sha256: str = GPT2_SHA256) -> TableTokenizer:
    """GPT-2's encoding: from ``ranks_file`` (else ``$NANODD_GPT2_RANKS``), which must have ``sha256``;
    with neither, tiktoken's own copy (downloaded once into its cache where the network allows)."""
    path = ranks_file or os.environ.get(GPT2_RANKS_ENV)
    if path:
        try:
            ranks = Path(path).expanduser().read_bytes()
        except OSError as e:
            raise DataError(Message(f"cannot read GPT-2's ranks file {path}: {e.strerror or e}; ", GPT2_HELP)) from None
        if (found := hashlib.sha256(ranks).hexdigest()) != sha256:
            raise DataError(f"{path} is not GPT-2's ranks file (SHA-256 {found[:12]}..., expected {sha256[:12]}...)")
        return gpt2_from_ranks(ranks)
    import tiktoken

    try:
        enc = tiktoken.get_encoding("gpt2")
    except Exception:  # no network (requests' errors), a broken cache, ...: one line either way
        raise DataError(Message("cannot load GPT-2's tokenizer offline: ", GPT2_HELP)) from None
    lines = (base64.b64encode(enc.decode_single_token_bytes(i)) + b" %d\n" % i for i in range(enc.n_vocab - 1))
    return gpt2_from_ranks(b"".join(lines))


def gpt2_from_ranks(ranks: bytes) -> TableTokenizer:
    """GPT-2's tokenizer from a ranks file: one ``base64(token) rank`` line per token, ranks 0 .. n - 1;
    the end of document is id n (50256 for GPT-2's 50,256 ranks)."""
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str

    try:
        pairs = [line.split() for line in ranks.splitlines() if line]
        mergeable = {base64.b64decode(token): int(rank) for token, rank in pairs}
    except ValueError:
        raise DataError("not a tiktoken ranks file (expected lines 'base64-token rank')") from None
    if sorted(mergeable.values()) != list(range(len(mergeable))):
        raise DataError("not a tiktoken ranks file (its ranks are not 0 .. n - 1)")
    n = len(mergeable)
    enc = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=mergeable, special_tokens={EOD: n})
    table = [b""] * (n + 1)
    for token, rank in mergeable.items():
        table[rank] = token
    return TableTokenizer("gpt2", tuple(table), n, enc.encode_ordinary, payload=ranks)


# ---- BERT's WordPiece from vocab.txt -------------------------------------------------------------------------


def read_vocab_file(path: str | None) -> bytes:
    """The bytes of a WordPiece ``vocab.txt`` (a DataError naming the field when there is none to read)."""
    if not path:
        raise DataError(Message("no vocabulary for the wordpiece tokenizer: ", WORDPIECE_HELP))
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise DataError(Message(f"cannot read {path}: {e.strerror or e}; ", WORDPIECE_HELP)) from None


def wordpiece(vocab: bytes) -> TableTokenizer:
    """BERT's uncased WordPiece (Devlin et al. 2019) from the lines of ``vocab`` (id = line number).

    Text is cleaned, lowercased and stripped of accents (BERT's normaliser), split at whitespace and around
    every punctuation character, and each word is cut greedily into the longest vocabulary pieces from the
    left (continuations are written ``##piece``); a word with no such cut is ``[UNK]``.  Decoding writes a
    space before every word start, so ids decode to the normalised text with spaces around punctuation
    (``"Don't!"`` -> ``" don ' t !"``): bits per byte count those bytes."""
    from tokenizers import Tokenizer as HFTokenizer, models, normalizers, pre_tokenizers

    try:
        tokens = vocab.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(Message("not a WordPiece vocab.txt (not UTF-8); ", WORDPIECE_HELP)) from None
    if "[UNK]" not in tokens or len(set(tokens)) != len(tokens) or "" in tokens:
        raise DataError(
            Message("not a WordPiece vocab.txt (one distinct token per line, [UNK] among them); ", WORDPIECE_HELP)
        )
    hf = HFTokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    hf.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    table = [t[2:].encode() if t.startswith("##") else b" " + t.encode() for t in tokens]
    encode = lambda text: hf.encode(text, add_special_tokens=False).ids
    normalize = hf.normalizer.normalize_str
    return TableTokenizer("wordpiece", (*table, b""), len(table), encode, payload=vocab, normalize_fn=normalize)


# ---- building, saving and loading ------------------------------------------------------------------------

PAYLOAD = {"bpe": "bpe.json", "gpt2": "gpt2.tiktoken", "wordpiece": "vocab.txt"}
"""The file beside tokenizer.json that defines a tokenizer."""


def build(name: str, *, texts: Callable[[], Iterable[str]] | None = None, vocab_size: int = 4096, tokenizer_file=None):
    """The tokenizer ``name``; ``bpe`` learns ``vocab_size`` ids from ``texts()`` (the training split);
    ``gpt2`` its ranks from ``tokenizer_file`` (see ``gpt2``), ``wordpiece`` its vocab.txt."""
    if name == "text8":
        return text8()
    if name == "bytes":
        return byte_level()
    if name == "bpe":
        if texts is None:
            raise ValueError("a bpe tokenizer is trained from texts")
        return train_bpe(texts(), vocab_size)
    if name == "gpt2":
        return gpt2(tokenizer_file)
    if name == "wordpiece":
        return wordpiece(read_vocab_file(tokenizer_file))
    raise DataError(f"unknown tokenizer {name!r}; choose one of {', '.join(NAMES)}")


def save(tok: TableTokenizer, directory: Path) -> None:
    """``directory``/tokenizer.json (name and identity) and the file that defines ``tok``, each written
    under a temporary name and renamed, tokenizer.json last."""
    directory.mkdir(parents=True, exist_ok=True)
    if tok.name in PAYLOAD:
        atomic_write(directory / PAYLOAD[tok.name], tok.payload)
    atomic_write(directory / "tokenizer.json", (json.dumps(tok.identity(), indent=2) + "\n").encode())


def load(directory: Path) -> TableTokenizer:
    """The tokenizer saved in ``directory``, checked against the identity saved with it."""
    try:
        saved = json.loads((Path(directory) / "tokenizer.json").read_text())
        name = saved["name"]
        payload = (Path(directory) / PAYLOAD[name]).read_bytes() if name in PAYLOAD else b""
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"no readable tokenizer in {directory} ({type(e).__name__}: {e})") from None
    if name not in NAMES:
        raise DataError(f"{directory}: unknown tokenizer {name!r}")
    if name == "bpe":
        tok = bpe_from_json(payload)
    elif name == "gpt2":
        tok = gpt2_from_ranks(payload)
    elif name == "wordpiece":
        tok = wordpiece(payload)
    else:
        tok = build(name)
    if tok.identity() != saved:
        raise DataError(f"{directory}: the tokenizer's files do not match its recorded identity (edited or corrupt)")
    return tok
