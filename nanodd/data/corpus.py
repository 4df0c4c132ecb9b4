"""Corpora as ordered documents of UTF-8 bytes, cut into chunks and splits where no tokenizer can differ.

A source names its documents, in a fixed order:

    builtin        CPython's ``pydoc_data`` topics, raw (not normalised), one document per topic, by key
    text8          the text8 corpus (its zip, as ``prepare`` fetches it), one document
    FILE           one text file, one document; an http(s) URL is downloaded first and read the same way
    DIRECTORY      every regular file under it, recursively, sorted by relative path; names starting
                   with '.' (hidden files and directories) are skipped, symlinked directories not followed
    GLOB           the regular files a pattern such as ``corpus/*.txt`` (``**`` recursive) matches, sorted
    hf:NAME[/CONFIG][?data_files=PATTERN]
                   a Hugging Face dataset through the optional ``datasets`` package; each row's ``text``
                   is one document (``hf:text?data_files=...`` reads local files, one document per file)

Files are strict UTF-8; a leading byte-order mark is dropped and not counted.

**Safe points.** A position is safe when tokenising the text on either side of it separately gives
the same ids as tokenising the whole: every document boundary, and every ``' '`` or ``'\\n'`` whose
preceding byte is a visible ASCII character (0x21-0x7e).  GPT-2's pre-tokeniser (which byte-level BPE
and ``gpt2`` use) never lets a token run from a non-space character into the whitespace after it, and
a token starting at the whitespace is found the same way whatever came before; merges never cross a
pre-token; byte ids cross nothing.  Chunks and splits are cut only at safe points, so chunked
tokenisation equals whole-document tokenisation, and the splits are a function of the text alone.

**Splits** (``SPLIT_RULE``): contiguous and in order by UTF-8 bytes of the corpus: the train/val cut is
the first safe point at or after 90% of the bytes, the val/test cut the first at or after 95%; a
document's end-of-document id belongs to the split its text is in.  A dataset that brings train,
validation and test splits of its own keeps them (``HF_SPLIT_RULE``).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from nanodd.data.errors import DataError

BOM = b"\xef\xbb\xbf"
SAFE = re.compile(rb"(?<=[\x21-\x7e])[ \n]")
"""A safe point inside a document: a space or newline after a visible ASCII byte."""
SPLIT_RULE = (
    "contiguous, in order, by UTF-8 bytes: train ends at the first safe point at or after 90% of the "
    "corpus's bytes, val at the first at or after 95%, test takes the rest; a safe point is a document "
    "boundary or a ' ' or '\\n' after a visible ASCII character (tokens never span one)"
)
HF_SPLIT_RULE = "the dataset's own train, validation and test splits, in order"
HF_HINT = "hf: sources need the optional datasets package: pip install datasets (or pip install 'nanodd[hf]')"
END = b"\xff"
"""Written after each document into the corpus digest: UTF-8 never contains the byte 0xff."""


@dataclasses.dataclass(frozen=True)
class Piece:
    """Consecutive bytes of one document (``name``) from byte ``offset`` on; ``last``: the document ends here."""

    data: bytes
    name: str
    offset: int
    last: bool


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Ordered documents: ``documents()`` yields (name, blocks of bytes) per document, BOM already dropped.

    ``n_bytes`` is the total of their bytes; ``cuts`` the train/val and val/test targets (byte positions,
    snapped forward to safe points) and ``rule`` those cuts in words."""

    description: str
    n_bytes: int
    n_documents: int
    documents: Callable[[], Iterator[tuple[str, Iterable[bytes]]]]
    cuts: tuple[int, int]
    rule: str = SPLIT_RULE


def proportional_cuts(n_bytes: int) -> tuple[int, int]:
    return n_bytes * 90 // 100, n_bytes * 95 // 100


# ---- naming and recognising sources ------------------------------------------------------------------------


def kind(source: str) -> str:
    """builtin, text8, url, hf, dir, glob or file."""
    if source in ("builtin", "text8"):
        return source
    if source.startswith(("http://", "https://")):
        return "url"
    if source.startswith("hf:"):
        return "hf"
    path = Path(source).expanduser()
    if path.is_dir():
        return "dir"
    if not path.exists() and glob.has_magic(source):
        return "glob"
    return "file"


def files_of(source: str) -> list[Path]:
    """The files a directory or glob source names, in document order; a DataError when there are none."""
    if kind(source) == "dir":
        root = Path(source).expanduser()
        found = []
        for parent, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [Path(parent, n) for n in names if not n.startswith(".") and Path(parent, n).is_file()]
        files = sorted(found, key=lambda p: p.relative_to(root).as_posix())
        what = f"directory {root} holds no readable files (hidden ones are skipped)"
    else:
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True) if Path(p).is_file())
        what = f"no file matches {source}"
    if not files:
        raise DataError(what)
    return files


def listing_identity(files: list[Path]) -> dict:
    """What must match for a preparation of ``files`` to be reused: their number, total size, and a digest of
    each one's path, size and modification time (cheap to check on every run; contents are not re-read)."""
    h, total = hashlib.sha256(), 0
    for path in files:
        st = path.stat()
        total += st.st_size
        h.update(f"{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return {"files": len(files), "bytes": total, "listing_sha256": h.hexdigest()}


# ---- opening a corpus --------------------------------------------------------------------------------------


def file_corpus(files: list[Path], description: str, block: int = 1 << 22) -> Corpus:
    """Each file one document, read in blocks of ``block`` bytes."""
    sizes = []
    for path in files:
        try:
            with open(path, "rb") as f:
                sizes.append(os.fstat(f.fileno()).st_size - (3 if f.read(3) == BOM else 0))
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}") from None

    def blocks(path: Path) -> Iterator[bytes]:
        try:
            with open(path, "rb") as f:
                if f.read(3) != BOM:
                    f.seek(0)
                while data := f.read(block):
                    yield data
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}") from None

    documents = lambda: ((str(path), blocks(path)) for path in files)
    return Corpus(description, sum(sizes), len(files), documents, proportional_cuts(sum(sizes)))


def text_corpus(texts: list[tuple[str, bytes]], description: str) -> Corpus:
    """Documents held in memory as (name, UTF-8 bytes)."""
    n = sum(len(t) for _, t in texts)
    return Corpus(description, n, len(texts), lambda: ((name, [t]) for name, t in texts), proportional_cuts(n))


def builtin_documents() -> list[tuple[str, bytes]]:
    """CPython's ``pydoc_data`` topics, raw, sorted by key: (``builtin:<key>``, UTF-8 text)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise DataError("this Python lacks the standard module pydoc_data that holds the built-in corpus") from None
    return [(f"builtin:{k}", topics[k].encode()) for k in sorted(topics)]


def digest(texts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t + END)
    return h.hexdigest()


# ---- Hugging Face datasets ---------------------------------------------------------------------------------


def parse_hf(source: str) -> tuple[str, str | None, str | None]:
    """``hf:NAME[/CONFIG][?data_files=PATTERN]`` -> (name, config, data_files).  One '/' separates NAME and
    CONFIG (``hf:wikitext/wikitext-103-raw-v1``); a namespaced name takes two parts
    (``hf:org/name/config``, or ``hf:org/name/`` without a config)."""
    body, _, query = source[len("hf:") :].partition("?")
    parts = body.split("/")
    name, config = ("/".join(parts[:2]), parts[2]) if len(parts) == 3 else (parts[0], "/".join(parts[1:]))
    files = None
    if query:
        key, _, files = query.partition("=")
        if key != "data_files" or not files:
            raise DataError(f"{source}: the only option after '?' is data_files=PATTERN")
    if not name:
        raise DataError(f"{source}: no dataset name after hf:")
    return name, config or None, files


def hf_identity(source: str) -> dict:
    name, config, files = parse_hf(source)
    local = listing_identity(files_of(files)) if files else None
    return {"kind": "hf", "name": name, "config": config, "data_files": local}


def hf_corpus(source: str) -> Corpus:
    """The rows of a Hugging Face dataset (each row's ``text`` one document), all its splits in order."""
    try:
        import datasets
    except ImportError:
        raise DataError(HF_HINT) from None
    import pyarrow.compute as pc

    name, config, files = parse_hf(source)
    kwargs = {"data_files": [str(p) for p in files_of(files)]} if files else {}
    if name == "text" and files:
        kwargs["sample_by"] = "document"  # one row per file, not per line
    try:
        loaded = datasets.load_dataset(name, config, **kwargs)
    except Exception as e:  # no network, no such dataset, a bad config: the library's own words, on one line
        raise DataError(f"cannot load {source}: {type(e).__name__}: {e}") from None
    own = all(s in loaded for s in ("train", "validation", "test"))
    order = ["train", "validation", "test"] if own else sorted(loaded, key=lambda s: (s != "train", s))
    parts = [(s, loaded[s]) for s in order]
    for s, ds in parts:
        if "text" not in ds.column_names:
            raise DataError(f"{source} split {s} has no 'text' column (columns: {', '.join(ds.column_names)})")
    sizes = [int(pc.sum(pc.binary_length(ds.data.column("text"))).as_py() or 0) for _, ds in parts]

    def documents() -> Iterator[tuple[str, Iterable[bytes]]]:
        for s, ds in parts:
            for i, row in enumerate(ds.select_columns(["text"]).iter(batch_size=1024)):
                for j, text in enumerate(row["text"]):
                    yield f"{source} [{s} row {i * 1024 + j}]", [(text or "").encode("utf-8")]

    n, n_docs = sum(sizes), sum(len(ds) for _, ds in parts)
    if own:
        cuts = (sizes[0], sizes[0] + sizes[1])
        return Corpus(source, n, n_docs, documents, cuts, HF_SPLIT_RULE)
    return Corpus(source, n, n_docs, documents, proportional_cuts(n))


# ---- chunks and splits -------------------------------------------------------------------------------------


def first_safe(data: bytes, start: int) -> int | None:
    """The first safe point at or after ``start`` inside ``data`` (which starts at a safe point), or None."""
    m = SAFE.search(data, start)
    return m.start() if m else None


def last_safe(data: bytes, end: int) -> int:
    """The last safe point p with 0 < p <= ``end`` inside ``data``; 0 when there is none."""
    for start in (max(0, end - 65536), 0):
        last = None
        for last in SAFE.finditer(data, start, end + 1):
            pass
        if last is not None:
            return last.start()
        if start == 0:
            break
    return 0


def pieces(corpus: Corpus, chunk_bytes: int) -> Iterator[Piece]:
    """Every document cut at safe points into pieces of at most ``chunk_bytes`` (longer only where a document
    has no safe point for that long), in order; each document's last piece (maybe empty) has ``last``."""
    for name, blocks in corpus.documents():
        buf, offset, blocks, ended = bytearray(), 0, iter(blocks), False
        while True:
            if not ended and len(buf) <= chunk_bytes:
                block = next(blocks, None)
                ended = block is None
                buf += block or b""
                continue
            if ended and len(buf) <= chunk_bytes:
                yield Piece(bytes(buf), name, offset, True)
                break
            cut = last_safe(buf, chunk_bytes) or first_safe(buf, chunk_bytes + 1)
            if cut is None and not ended:
                block = next(blocks, None)  # no safe point yet: read on
                ended = block is None
                buf += block or b""
                continue
            if cut is None:
                yield Piece(bytes(buf), name, offset, True)
                break
            yield Piece(bytes(buf[:cut]), name, offset, False)
            del buf[:cut]
            offset += cut


def split_pieces(corpus: Corpus, chunk_bytes: int) -> Iterator[tuple[int, Piece]]:
    """(split index 0/1/2, piece) for the whole corpus: ``pieces`` further cut at the split points, the first
    safe point at or after each of ``corpus.cuts``."""
    split, pos = 0, 0
    for piece in pieces(corpus, chunk_bytes):
        while split < 2 and pos <= corpus.cuts[split] <= pos + len(piece.data):
            rel = corpus.cuts[split] - pos
            cut = 0 if rel == 0 else first_safe(piece.data, rel) or len(piece.data)
            if cut == len(piece.data) and cut:
                yield split, piece
                pos, piece = pos + cut, Piece(b"", piece.name, piece.offset + cut, False)
            elif cut:
                yield split, dataclasses.replace(piece, data=piece.data[:cut], last=False)
                pos, piece = pos + cut, Piece(piece.data[cut:], piece.name, piece.offset + cut, piece.last)
            split += 1
        if piece.data or piece.last:
            yield split, piece
            pos += len(piece.data)
