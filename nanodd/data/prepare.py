"""Turn a source into memory-mappable token splits plus meta.json, for any tokenizer.

Layout: ``<data_dir>/<name>/{train,val,test}.bin`` and ``meta.json``, where ``<name>`` is the source's
(``builtin``, ``text8``, ``file-<slug>-<hash>``, ``url-<slug>-<hash>``, ``dir-<slug>-<hash>``,
``glob-<slug>-<hash>``, ``hf-<slug>``; ``<hash>``: 8 hex digits of the SHA-256 of the absolute path or URL,
so ``a/good.txt`` and ``b/good.txt`` never share a directory) followed, for every tokenizer but text8, by
the tokenizer's (``builtin.bytes``, ``file-book-1a2b3c4d.bpe4096``, ``dir-corpus-5e6f7a8b.gpt2``), so one
corpus prepared with two tokenizers keeps both.  Those directories also hold
``tokenizer/`` (``nanodd.data.tokenizers.save``).  Downloads go to ``<data_dir>/downloads/``.
``meta.json`` is written last, so a directory with a matching meta is complete and is reused; one from
another source, tokenizer or format version is refused unless ``force`` rebuilds it.  One process at a
time prepares a directory: the others wait on the empty lock file ``<data_dir>/.<name>.lock``, then reuse it.

The text8 tokenizer keeps nanoDD's data: uint8 ids of the normalised text, split by characters; a file or
URL is normalised in blocks of ``TEXT8_BLOCK`` bytes (``_normalized_ids``), so memory does not grow with it.  The
others read the source's documents raw (``nanodd.data.corpus``: files, directories, globs, URLs, ``hf:``
datasets), join them with the end-of-document id, split them by UTF-8 bytes at safe points, and write
``uint16`` ids (``uint32`` above 65,536 ids) in parallel and in bounded memory (``nanodd.data.shards``).
"""

import codecs
import dataclasses
import glob
import hashlib
import json
import os
import re
import sys
import urllib.parse
from pathlib import Path

import numpy as np

from nanodd.checks import Field, Message
from nanodd.data.batches import padded_rows
import nanodd.data.corpus as corpora
import nanodd.data.tokenizers as tokenizers
from nanodd.data.download import default_cache_dir, download
from nanodd.data.errors import DataError
from nanodd.data.corpus import BOM
from nanodd.data.files import atomic_write, exclusive
from nanodd.data.shards import CHUNK_BYTES, decode_chunk, dtype_for, write_shards
from nanodd.data.text import VOCAB, builtin_text, encode, normalize_text8
from nanodd.data.text8 import TEXT8, Text8Spec, fetch_text8

FORMAT = 1
SPLITS = ("train", "val", "test")
NAMED = ("builtin", "text8")  # sources that are not paths; a local file called text8 is "./text8"
PROPORTIONAL = "contiguous, in order: first 90%, next 5%, last 5% (floored; test takes the rest)"
DTYPES = ("uint8", "uint16", "uint32")
BPE_TRAIN_BYTES = 100_000_000
TEXT8_BLOCK = 1 << 20
"""Bytes of a text file the text8 path decodes and normalises at a time."""
_LETTER = re.compile(r"[A-Za-z]")
"""BPE learns its merges from at most this many bytes from the start of the training split."""


def prepare(
    source: str = "builtin",
    data_dir: Path | None = None,
    *,
    seq_len: int = 256,
    force: bool = False,
    progress: bool = True,
    text8: Text8Spec = TEXT8,
    tokenizer: str = "text8",
    vocab_size: int = 4096,
    tokenizer_file: str | None = None,
    workers: int | None = None,
    bpe_train_bytes: int = BPE_TRAIN_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
) -> Path:
    """Prepare ``source`` under ``data_dir`` (default: ``default_cache_dir()``); return its directory.

    With the ``text8`` tokenizer, ``source`` is ``"builtin"`` (CPython's documentation, offline, normalised),
    ``"text8"`` (the official zip, split 90M/5M/5M as nanoDD does), a local text file, or an http(s) URL of
    one; files and URLs must be UTF-8, are normalised by ``normalize_text8`` and split 90/5/5 contiguously.
    With ``bytes``, ``bpe`` (``vocab_size`` ids, learned from the first ``bpe_train_bytes`` of the training
    split), ``gpt2`` (from ``tokenizer_file``, else ``$NANODD_GPT2_RANKS``, else tiktoken's download) or
    ``wordpiece`` (BERT's, from the vocab.txt ``tokenizer_file``),
    ``source`` may also be a directory, a glob or ``hf:NAME[/CONFIG]`` (``nanodd.data.corpus``), and is
    tokenised raw by ``workers`` processes (default: one per core) in chunks of ``chunk_bytes``.
    Every split must hold at least ``seq_len + 1`` tokens. ``force`` rebuilds even a matching
    preparation and downloads a URL again (text8's verified zip is reused); ``text8`` lets tests stand in a
    small zip.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_cache_dir()
    if tokenizer != "text8" and tokenizer not in tokenizers.NAMES:
        raise DataError(Message(Field("data.tokenizer"), f" must be one of {', '.join(tokenizers.NAMES)}"))
    if tokenizer == "text8" and corpora.kind(source) in ("dir", "glob", "hf"):
        raise DataError(
            Message(
                f"{source} names many documents (a directory, glob or hf: dataset), which the text8 tokenizer "
                "does not read (it takes builtin, text8, one text file or a URL); choose ",
                Field("data.tokenizer", "bytes"),
                ", bpe, gpt2 or wordpiece",
            )
        )
    out = root / dataset_name(source, tokenizer, vocab_size)
    request = _request(tokenizer, vocab_size, bpe_train_bytes, tokenizer_file)
    identity = _identity(source, text8) if tokenizer == "text8" else {**_source_identity(source, text8), **request}
    # one preparation of a directory at a time: two runs preparing it at once would write the same temporary files
    with exclusive(root / f".{out.name}.lock", f"waiting for another process preparing {out} ..."):
        old = _read_meta(out)
        matches = old is not None and old.get("format") == FORMAT and old.get("identity") == identity
        if matches and _complete(out, old) and not force:
            _check_sizes(old["sizes"], seq_len, source)
            return out
        if old is not None and not matches and not force:
            raise DataError(
                Message(
                    f"{out} was prepared from another source, tokenizer or format ({old.get('source')!r}, format "
                    f"{old.get('format')}); rebuild it for {source!r} with ",
                    Field("data.force", True),
                )
            )
        if tokenizer == "text8":
            meta = _prepare_text8(source, root, out, seq_len, text8, progress, force)
        else:
            corpus = _open(source, root, text8, progress, force)
            options = dict(vocab_size=vocab_size, tokenizer_file=tokenizer_file, bpe_train_bytes=bpe_train_bytes)
            meta = _prepare_tokens(corpus, tokenizer, out, identity, seq_len, workers, chunk_bytes, progress, **options)
        meta = {"format": FORMAT, "name": out.name, "source": _describe(source), "identity": identity, **meta}
        _write_meta(out, meta)
        if progress:
            print(f"prepared {out}: " + ", ".join(f"{k} {v:,}" for k, v in meta["sizes"].items()), file=sys.stderr)
        return out


def _prepare_text8(source: str, root: Path, out: Path, seq_len: int, spec: Text8Spec, progress, force) -> dict:
    """text8 ids of the normalised corpus in ``out``'s uint8 splits; the meta that describes them."""
    if source in NAMED:
        ids, rule, sizes = _load(source, root, spec, progress)
        _check_sizes(sizes, seq_len, source)
        _write(out, ids, sizes)
        n, sha256 = len(ids), hashlib.sha256(ids).hexdigest()
    else:
        path = _download(source, root, progress, force) if _is_url(source) else _existing(source)
        n, sha256, sizes = _write_normalized(path, source, out, seq_len)
        rule = PROPORTIONAL
    meta = {"vocab": VOCAB, "n_chars": n, "sizes": sizes, "split": rule, "sha256": sha256}
    return {**meta, "tokenizer": tokenizers.text8().identity(), "dtype": "uint8"}


def _write_normalized(path: Path, source: str, out: Path, seq_len: int) -> tuple[int, str, dict]:
    """The text8 ids of a text file, normalised block by block into a temporary file beside ``out``, then
    cut 90/5/5 into ``out``'s splits: (characters, their SHA-256, split sizes).  Memory: a few blocks."""
    ids_tmp = out.with_name(out.name + ".ids.tmp")
    try:
        h, n = hashlib.sha256(), 0
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(ids_tmp, "wb") as f:
            for ids in _normalized_ids(path, source):
                f.write(ids.tobytes())
                h.update(ids)
                n += len(ids)
        if not n:
            raise DataError(f"{source} has no usable characters: nothing is left after text8 normalisation")
        n_train, n_val = n * 90 // 100, n * 5 // 100
        sizes = dict(zip(SPLITS, (n_train, n_val, n - n_train - n_val)))
        _check_sizes(sizes, seq_len, source)
        _copy_splits(ids_tmp, out, sizes)
    except OSError as e:
        raise DataError(f"could not write the prepared data to {out}: {e.strerror or e}") from None
    finally:
        ids_tmp.unlink(missing_ok=True)
    return n, h.hexdigest(), sizes


def _copy_splits(ids_tmp: Path, out: Path, sizes: dict) -> None:
    """``ids_tmp`` cut into ``out``'s splits, a block at a time, each written as ``.tmp`` and renamed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    with open(ids_tmp, "rb") as src:
        for split in SPLITS:
            tmp, left = out / f"{split}.bin.tmp", sizes[split]
            try:
                with open(tmp, "wb") as f:
                    while left:
                        f.write(block := src.read(min(left, TEXT8_BLOCK)))
                        left -= len(block)
                os.replace(tmp, out / f"{split}.bin")
            finally:
                tmp.unlink(missing_ok=True)


def _normalized_ids(path: Path, source: str):
    """``encode(normalize_text8(text))`` of a UTF-8 file, in pieces, reading ``TEXT8_BLOCK`` bytes at a time.

    Normalising pieces and joining them with one space is normalising the whole, except where a piece ends
    and the next begins with an ASCII letter: that is one word, so those two join without the space."""
    decoder, offset, last_letter, started = codecs.getincrementaldecoder("utf-8")(), 0, False, False
    for block, final in _blocks(path):
        if offset == 0 and block.startswith(BOM):
            block, offset = block[3:], 3
        pending = decoder.getstate()[0]
        try:
            text = decoder.decode(block, final=final)
        except UnicodeDecodeError as e:
            raw = pending + block
            raise DataError(
                f"{source} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {offset - len(pending) + e.start}); "
                "convert it first, e.g. `iconv -f latin1 -t utf-8`"
            ) from None
        offset += len(block)
        if not text:
            continue
        normal = normalize_text8(text)
        if normal:
            glue = started and not (last_letter and _LETTER.match(text[0]))
            yield encode((" " if glue else "") + normal)
            started = True
        last_letter = bool(_LETTER.match(text[-1]))


def _blocks(path: Path):
    """(bytes, whether it is the last block) of a file, ``TEXT8_BLOCK`` at a time."""
    try:
        with open(path, "rb") as f:
            block = f.read(TEXT8_BLOCK)
            while True:
                following = f.read(TEXT8_BLOCK)
                yield block, not following
                if not following:
                    return
                block = following
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def _prepare_tokens(corpus, name, out, identity, seq_len, workers, chunk_bytes, progress, **options) -> dict:
    """``corpus`` tokenised by the tokenizer ``name`` (trained here for bpe, saved in ``out/tokenizer``)."""
    if corpus.n_bytes == 0:
        raise DataError(f"{corpus.description} holds no text")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "meta.json").unlink(missing_ok=True)
        texts = lambda: _bpe_texts(corpus, options["bpe_train_bytes"], chunk_bytes)
        tok = tokenizers.build(
            name, texts=texts, vocab_size=options["vocab_size"], tokenizer_file=options["tokenizer_file"]
        )
        tokenizers.save(tok, out / "tokenizer")
        workers = workers or os.cpu_count() or 1
        counts = write_shards(
            corpus, tok, out / "tokenizer", out, workers=workers, chunk_bytes=chunk_bytes, progress=progress
        )
    except OSError as e:
        raise DataError(f"could not write the prepared data to {out}: {e.strerror or e}") from None
    _check_sizes(counts.tokens, seq_len, corpus.description)
    return {
        "tokenizer": tok.identity(),
        "dtype": dtype_for(tok.vocab_size).name,
        "eod_id": tok.eod_id,
        "sizes": counts.tokens,
        "bytes": counts.bytes,
        "documents": counts.documents,
        "split": corpus.rule,
        "sha256": counts.sha256,
        "digest": "sha256 of the documents' UTF-8 bytes in order, each followed by the byte 0xff",
    }


def _bpe_texts(corpus, cap: int, chunk_bytes: int):
    """The training split's text up to the first safe point at or after ``cap`` bytes, in pieces."""
    done = 0
    for split, piece in corpora.split_pieces(corpus, chunk_bytes):
        if split > 0 or done >= cap:
            return
        if done + len(piece.data) > cap:
            piece = dataclasses.replace(piece, data=piece.data[: corpora.first_safe(piece.data, cap - done) or None])
        done += len(piece.data)
        yield decode_chunk(piece)


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """A prepared split: ``tokens`` ids holding ``bytes`` UTF-8 bytes of text and ``documents`` document ends."""

    tokens: int
    bytes: int
    documents: int


def prepare_data(data, *, progress: bool = True) -> Path:
    """``prepare`` as a ``nanodd.config.DataConfig`` says (what training and the CLI's prepare do)."""
    return prepare(
        data.source,
        Path(data.data_dir) if data.data_dir else None,
        seq_len=data.seq_len,
        force=data.force,
        progress=progress,
        tokenizer=data.tokenizer,
        vocab_size=data.vocab_size,
        tokenizer_file=data.tokenizer_file,
        workers=data.workers,
    )


def split_info(data_dir: Path) -> dict[str, SplitInfo]:
    """Tokens, bytes and documents of each split of a complete prepared directory (bits per byte need bytes)."""
    meta = _complete_meta(Path(data_dir), "train")
    sizes, n_bytes, docs = meta["sizes"], meta.get("bytes", meta["sizes"]), meta.get("documents", {})
    return {k: SplitInfo(sizes[k], n_bytes[k], docs.get(k, 0)) for k in SPLITS}


def data_identity(data_dir: Path) -> dict:
    """What a run records of the prepared data it trains on: the directory's name, its source and the SHA-256
    its meta.json holds (of the text8 ids, or of the documents' bytes for the other tokenizers)."""
    meta = _complete_meta(Path(data_dir), "train")
    return {"name": Path(data_dir).name, "source": meta.get("source"), "sha256": meta.get("sha256")}


def load_tokenizer(data_dir: Path):
    """The tokenizer a complete prepared directory was made with: text8 for text8's, else its ``tokenizer/``."""
    data_dir = Path(data_dir)
    meta = _complete_meta(data_dir, "train")
    if meta.get("tokenizer", {}).get("name", "text8") == "text8":
        return tokenizers.text8()
    tok = tokenizers.load(data_dir / "tokenizer")
    if tok.identity() != meta["tokenizer"]:
        raise DataError(f"{data_dir}/tokenizer is not the tokenizer its meta.json records (edited or replaced)")
    return tok


def load_split(data_dir: Path, split: str, rows: str = "wrap", seq_len: int | None = None) -> np.memmap:
    """Read-only memmap of ``split`` ("train", "val" or "test") in a prepared directory, of the dtype its
    meta records (uint8 for text8, uint16 or uint32 for the others).

    ``rows="pad"``: the split as ``padded_rows`` of ``seq_len`` ids (one document per row), flattened; written
    once beside the split as ``<split>.pad<seq_len>.<sha>.bin`` (``<sha>``: 8 hex digits of the data's digest,
    so data prepared again never meets old rows), under a temporary name, then renamed."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    meta = _complete_meta(data_dir, split)
    data = np.memmap(data_dir / f"{split}.bin", dtype=_dtype(meta), mode="r")
    if rows == "wrap":
        return data
    if meta.get("eod_id") is None:
        raise DataError(
            Message(Field("data.rows", "pad"), " needs documents with an end-of-document id; text8's ids have none")
        )
    path = data_dir / f"{split}.pad{seq_len}.{meta['sha256'][:8]}.bin"
    if not path.is_file():
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # ranks of one run may write it at once
        try:
            with open(tmp, "wb") as f:
                for block in padded_rows(data, meta["eod_id"], seq_len):
                    f.write(block.tobytes())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"could not write the padded rows {path}: {e.strerror or e}") from None
    return np.memmap(path, dtype=_dtype(meta), mode="r")


def _complete_meta(data_dir: Path, split: str) -> dict:
    """The meta of a directory whose splits are all complete (and ``split`` not empty), else a DataError."""
    meta = _read_meta(data_dir) or {}
    if not _complete(data_dir, meta) or not meta["sizes"][split]:
        source = meta.get("source") or (data_dir.name if data_dir.name in NAMED else "<file or URL>")
        raise DataError(
            Message(
                f"no complete prepared {split} split in {data_dir}; prepare it first: ", Field("data.source", source)
            )
        )
    return meta


def dataset_name(source: str, tokenizer: str = "text8", vocab_size: int = 4096) -> str:
    """Directory name for ``source``: builtin, text8, url-<slug>-<hash>, file-<slug>-<hash>, dir-<slug>-<hash>,
    glob-<slug>-<hash> or hf-<slug> (``<hash>``: 8 hex digits of the SHA-256 of the URL or absolute path), then
    (for every tokenizer but text8) ``.bytes``, ``.gpt2`` or ``.bpe<vocab_size>``."""
    kind = corpora.kind(source)
    hashed = f"-{hashlib.sha256(_describe(source).encode()).hexdigest()[:8]}"  # the absolute path or URL
    if kind in NAMED:
        name, hashed = source, ""
    elif kind == "url":
        url = urllib.parse.urlparse(source)
        name = "url-" + _slug(Path(urllib.parse.unquote(url.path)).stem or url.netloc)
    elif kind == "hf":
        name, hashed = "hf-" + _slug(source[3:]), ""
    elif kind == "dir":
        name = "dir-" + _slug(Path(source).expanduser().resolve().name)
    elif kind == "glob":  # the directory above the first wildcard, and what follows: corpus/*.txt -> corpus-txt
        parts = Path(source).parts
        first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        name = "glob-" + _slug("-".join(parts[max(first - 1, 0) :]))
    else:
        name = "file-" + _slug(Path(source).stem)
    name += hashed
    if tokenizer == "text8":
        return name
    return f"{name}.{tokenizer}{vocab_size if tokenizer == 'bpe' else ''}"


def _request(tokenizer: str, vocab_size: int, bpe_train_bytes: int, tokenizer_file: str | None) -> dict:
    """The tokenizer a preparation asks for, as its identity records it (WordPiece's by its vocab.txt)."""
    if tokenizer == "bpe":
        return {"tokenizer": tokenizer, "vocab_size": vocab_size, "bpe_train_bytes": bpe_train_bytes}
    if tokenizer == "wordpiece":
        vocab = tokenizers.read_vocab_file(tokenizer_file)
        return {"tokenizer": tokenizer, "vocab_sha256": hashlib.sha256(vocab).hexdigest()}
    return {"tokenizer": tokenizer}


def _source_identity(source: str, spec: Text8Spec) -> dict:
    """What must match of the source's documents (read raw) for a preparation to be reused."""
    kind = corpora.kind(source)
    if kind == "builtin":
        ident = {"kind": "builtin-raw", "sha256": corpora.digest(t for _, t in corpora.builtin_documents())}
    elif kind in ("text8", "url"):
        ident = _identity(source, spec)
    elif kind == "hf":
        ident = corpora.hf_identity(source)
    elif kind in ("dir", "glob"):
        ident = {"kind": kind, **corpora.listing_identity(corpora.files_of(source))}
    else:
        ident = {"kind": "file", **corpora.listing_identity([_existing(source)])}
    return json.loads(json.dumps(ident))


def _open(source: str, root: Path, spec: Text8Spec, progress: bool, force: bool) -> corpora.Corpus:
    """The documents of ``source``, raw (downloading a URL or text8 first)."""
    kind = corpora.kind(source)
    if kind == "builtin":
        return corpora.text_corpus(corpora.builtin_documents(), "builtin")
    if kind == "text8":
        text = np.frombuffer(VOCAB.encode(), dtype=np.uint8)[fetch_text8(spec, root, progress=progress)]
        return corpora.text_corpus([("text8", text.tobytes())], "text8")
    if kind == "url":
        return corpora.file_corpus([_download(source, root, progress, force)], source)
    if kind == "hf":
        return corpora.hf_corpus(source)
    files = corpora.files_of(source) if kind in ("dir", "glob") else [_existing(source)]
    return corpora.file_corpus(files, _describe(source))


def _identity(source: str, spec: Text8Spec) -> dict:
    """What must match for an existing preparation to be reused (JSON round-tripped)."""
    if source == "builtin":
        ident = {"kind": "builtin", "sha256": hashlib.sha256(builtin_text().encode()).hexdigest()}
    elif source == "text8":
        ident = {
            "kind": "text8",
            "url": spec.url,
            "zip_size": spec.zip_size,
            "n_chars": spec.n_chars,
            "splits": spec.splits,
        }
    elif _is_url(source):
        ident = {"kind": "url", "url": source}
    else:
        ident = {"kind": "file", "sha256": _file_sha256(source)}
    return json.loads(json.dumps(ident))


def _load(source: str, root: Path, spec: Text8Spec, progress: bool) -> tuple[np.ndarray, str, dict]:
    """Token ids of the whole of text8 or builtin (both of a fixed size), the split rule in words, the split sizes."""
    if source == "text8":
        if sum(spec.splits) != spec.n_chars:
            raise DataError(f"text8 splits {spec.splits} do not add up to {spec.n_chars:,} characters")
        rule = "train = first {:,}, val = next {:,}, test = last {:,} (nanoDD)".format(*spec.splits)
        return fetch_text8(spec, root, progress=progress), rule, dict(zip(SPLITS, spec.splits))
    text = builtin_text()
    n_train, n_val = len(text) * 90 // 100, len(text) * 5 // 100
    return encode(text), PROPORTIONAL, dict(zip(SPLITS, (n_train, n_val, len(text) - n_train - n_val)))


def _check_sizes(sizes: dict, seq_len: int, source: str) -> None:
    """Every split must hold one sequence plus one token."""
    if min(sizes.values()) < seq_len + 1:
        counts = "/".join(f"{sizes[k]:,}" for k in SPLITS)
        raise DataError(
            f"{source} is smaller than one sequence: its train/val/test splits hold {counts} tokens, "
            f"each needs at least seq_len+1 = {seq_len + 1:,}; use a larger text or a shorter seq_len"
        )


def _write(out: Path, ids: np.ndarray, sizes: dict) -> None:
    """Each split of ``ids``, written to a temporary name and renamed into place (meta.json removed first)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "meta.json").unlink(missing_ok=True)
        start = 0
        for split in SPLITS:
            atomic_write(out / f"{split}.bin", ids[start : start + sizes[split]])
            start += sizes[split]
    except OSError as e:
        raise DataError(f"could not write the prepared data to {out}: {e.strerror or e}") from None


def _write_meta(out: Path, meta: dict) -> None:
    """meta.json, last: it marks the splits complete."""
    try:
        atomic_write(out / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
    except OSError as e:
        raise DataError(f"could not write the prepared data to {out}: {e.strerror or e}") from None


def _dtype(meta: dict) -> np.dtype:
    return np.dtype(meta.get("dtype", "uint8"))


def _complete(out: Path, meta: dict) -> bool:
    """Whether every split file exists with the size ``meta`` records (tokens times the bytes of one id)."""
    sizes = meta.get("sizes")
    if not isinstance(sizes, dict) or set(sizes) != set(SPLITS) or meta.get("dtype", "uint8") not in DTYPES:
        return False
    n = _dtype(meta).itemsize
    return all((out / f"{k}.bin").is_file() and (out / f"{k}.bin").stat().st_size == n * sizes[k] for k in SPLITS)


def _read_meta(out: Path) -> dict | None:
    """The meta.json in ``out``; None when absent; a stand-in that matches nothing when unreadable."""
    try:
        meta = json.loads((out / "meta.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        meta = None
    return meta if isinstance(meta, dict) else {"source": "an unreadable meta.json", "format": None}


def _existing(source: str) -> Path:
    """A local file's path, or a DataError saying what ``data.source`` accepts."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(
            Message(
                f"no such file: {path} (",
                Field("data.source"),
                " takes builtin, text8, a text file or a URL; with a tokenizer other than text8 also a "
                "directory, a glob or hf:NAME)",
            )
        )
    return path


def _file_sha256(source: str) -> str:
    """SHA-256 of a local file's bytes, read a block at a time."""
    h = hashlib.sha256()
    for block, _ in _blocks(_existing(source)):
        h.update(block)
    return h.hexdigest()


def _download(url: str, root: Path, progress: bool, force: bool = False) -> Path:
    """The text file at ``url``, kept in ``downloads/`` under a name unique to the URL (fetched again
    with ``force``)."""
    return download(url, root / "downloads" / dataset_name(url), progress=progress, text=True, force=force)


def _describe(source: str) -> str:
    """The source as recorded in meta.json: a local file, directory or glob by its absolute path."""
    if source in NAMED or _is_url(source) or source.startswith("hf:"):
        return source
    return (
        str(Path(source).expanduser().absolute())
        if corpora.kind(source) == "glob"
        else str(Path(source).expanduser().resolve())
    )


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "text"
