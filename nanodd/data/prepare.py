"""Turn a source (builtin, text8, a file, a URL) into memory-mappable uint8 splits plus meta.json.

Layout: ``<data_dir>/<name>/{train,val,test}.bin`` and ``meta.json``, where ``<name>`` is
``builtin``, ``text8``, ``file-<slug of the file name>`` or ``url-<slug of the URL's file name>``.
Downloads go to ``<data_dir>/downloads/``. ``meta.json`` is written last, so a directory with a
matching meta is complete and is reused; one from another source or format version is refused
unless ``force`` rebuilds it.
"""

import hashlib
import json
import re
import sys
import urllib.parse
from pathlib import Path

import numpy as np

from nanodd.data.download import default_cache_dir, download
from nanodd.data.errors import DataError
from nanodd.data.files import atomic_write
from nanodd.data.text import VOCAB, builtin_text, decode_utf8, encode, normalize_text8
from nanodd.data.text8 import TEXT8, Text8Spec, fetch_text8

FORMAT = 1
SPLITS = ("train", "val", "test")
NAMED = ("builtin", "text8")  # sources that are not paths; a local file called text8 is "./text8"
PROPORTIONAL = "contiguous, in order: first 90%, next 5%, last 5% (floored; test takes the rest)"


def prepare(
    source: str = "builtin",
    data_dir: Path | None = None,
    *,
    seq_len: int = 256,
    force: bool = False,
    progress: bool = True,
    text8: Text8Spec = TEXT8,
) -> Path:
    """Prepare ``source`` under ``data_dir`` (default: ``default_cache_dir()``); return its directory.

    ``source`` is ``"builtin"`` (CPython's documentation, offline), ``"text8"`` (the official zip,
    split 90M/5M/5M as nanoDD does), a local text file, or an http(s) URL of one. Files and URLs
    must be UTF-8; they are normalised by ``normalize_text8`` and split 90/5/5 contiguously.
    Every split must hold at least ``seq_len + 1`` tokens. ``force`` rebuilds even a matching
    preparation (a downloaded zip is still reused); ``text8`` lets tests stand in a small zip.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_cache_dir()
    out = root / dataset_name(source)
    identity = _identity(source, text8)
    old = _read_meta(out)
    matches = old is not None and old.get("format") == FORMAT and old.get("identity") == identity
    if matches and _complete(out, old) and not force:
        _check_sizes(old["sizes"], seq_len, source)
        return out
    if old is not None and not matches and not force:
        raise DataError(
            f"{out} was prepared from another source or format ({old.get('source')!r}, format "
            f"{old.get('format')}); rebuild it for {source!r} with --data.force (force=True)"
        )
    ids, rule, sizes = _load(source, root, text8, progress)
    _check_sizes(sizes, seq_len, source)
    meta = {
        "format": FORMAT,
        "name": out.name,
        "source": _describe(source),
        "identity": identity,
        "vocab": VOCAB,
        "n_chars": len(ids),
        "sizes": sizes,
        "split": rule,
        "sha256": hashlib.sha256(ids).hexdigest(),
    }
    _write(out, ids, meta)
    if progress:
        print(f"prepared {out}: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()), file=sys.stderr)
    return out


def load_split(data_dir: Path, split: str) -> np.memmap:
    """Read-only uint8 memmap of ``split`` ("train", "val" or "test") in a prepared directory."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    meta = _read_meta(data_dir) or {}
    if not _complete(data_dir, meta) or not meta["sizes"][split]:
        source = meta.get("source") or (data_dir.name if data_dir.name in NAMED else "<file or URL>")
        raise DataError(
            f"no complete prepared {split} split in {data_dir}; prepare it with "
            f"`python -m experiments.text8 prepare --data.source {source}`"
        )
    return np.memmap(data_dir / f"{split}.bin", dtype=np.uint8, mode="r")


def dataset_name(source: str) -> str:
    """Directory name for ``source``: builtin, text8, url-<slug> or file-<slug>."""
    if source in NAMED:
        return source
    if _is_url(source):
        url = urllib.parse.urlparse(source)
        return "url-" + _slug(Path(urllib.parse.unquote(url.path)).stem or url.netloc)
    return "file-" + _slug(Path(source).stem)


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
        ident = {"kind": "file", "sha256": hashlib.sha256(_read_file(source)).hexdigest()}
    return json.loads(json.dumps(ident))


def _load(source: str, root: Path, spec: Text8Spec, progress: bool) -> tuple[np.ndarray, str, dict]:
    """Token ids of the whole corpus, the split rule in words, and the split sizes."""
    if source == "text8":
        if sum(spec.splits) != spec.n_chars:
            raise DataError(f"text8 splits {spec.splits} do not add up to {spec.n_chars:,} characters")
        rule = "train = first {:,}, val = next {:,}, test = last {:,} (nanoDD)".format(*spec.splits)
        return fetch_text8(spec, root, progress=progress), rule, dict(zip(SPLITS, spec.splits))
    if source == "builtin":
        text = builtin_text()
    else:
        raw = _fetch_url(source, root, progress) if _is_url(source) else _read_file(source)
        text = normalize_text8(decode_utf8(raw, source))
    if not text:
        raise DataError(f"{source} has no usable characters: nothing is left after text8 normalisation")
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


def _write(out: Path, ids: np.ndarray, meta: dict) -> None:
    """Each split, then meta.json, each written to a temporary name and renamed into place."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "meta.json").unlink(missing_ok=True)
        start = 0
        for split in SPLITS:
            end = start + meta["sizes"][split]
            atomic_write(out / f"{split}.bin", ids[start:end])
            start = end
        atomic_write(out / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
    except OSError as e:
        raise DataError(f"could not write the prepared data to {out}: {e.strerror or e}") from None


def _complete(out: Path, meta: dict) -> bool:
    """Whether every split file exists with the size ``meta`` records."""
    sizes = meta.get("sizes")
    if not isinstance(sizes, dict) or set(sizes) != set(SPLITS):
        return False
    return all((out / f"{k}.bin").is_file() and (out / f"{k}.bin").stat().st_size == sizes[k] for k in SPLITS)


def _read_meta(out: Path) -> dict | None:
    """The meta.json in ``out``; None when absent; a stand-in that matches nothing when unreadable."""
    try:
        meta = json.loads((out / "meta.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        meta = None
    return meta if isinstance(meta, dict) else {"source": "an unreadable meta.json", "format": None}


def _read_file(source: str) -> bytes:
    """The bytes of a local file, or a DataError saying what ``--data.source`` accepts."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"no such file: {path} (--data.source takes builtin, text8, a text file or a URL)")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def _fetch_url(url: str, root: Path, progress: bool) -> bytes:
    """The bytes at ``url``, kept in ``downloads/`` under a name unique to the URL."""
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    return download(url, root / "downloads" / f"{dataset_name(url)}-{key}", progress=progress).read_bytes()


def _describe(source: str) -> str:
    """The source as recorded in meta.json: a local file by its absolute path."""
    if source in NAMED or _is_url(source):
        return source
    return str(Path(source).expanduser().resolve())


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "text"
