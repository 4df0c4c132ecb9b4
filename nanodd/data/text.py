"""The text8 alphabet: token ids, the wikifil normaliser, and the built-in offline corpus.

Ids follow nanoDD: space = 0, a-z = 1-26. The mask (id 27) belongs to the model; ``decode``
shows it, and any other id >= 27, as ``_``.
"""

import functools
import re

import numpy as np
import torch

from nanodd.data.errors import DataError

VOCAB = " abcdefghijklmnopqrstuvwxyz"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_DECODE = np.frombuffer((VOCAB + "_").encode(), dtype=np.uint8)
_ENCODE = np.full(256, 255, dtype=np.uint8)
_ENCODE[np.frombuffer(VOCAB.encode(), dtype=np.uint8)] = np.arange(len(VOCAB), dtype=np.uint8)
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")
_SPACES = re.compile(r"  +")


def normalize_text8(text: str) -> str:
    """Map any text to the text8 alphabet, following Matt Mahoney's wikifil rules.

    ASCII letters are lowercased; each digit becomes its English word between spaces
    ("1984" -> "one nine eight four"); every other character, including accented and other
    non-ASCII letters ("café" -> "caf"), becomes a space, exactly as wikifil treats the bytes
    of UTF-8 text. Runs of spaces collapse to one and the ends are stripped. Idempotent.
    """
    text = _NOT_ALNUM.sub(" ", text).lower()
    for digit, word in enumerate(DIGIT_WORDS):
        text = text.replace(str(digit), f" {word} ")
    return _SPACES.sub(" ", text).strip(" ")  # only spaces are left: no list of words, whatever the text


def byte_ids(raw: bytes) -> np.ndarray:
    """Token ids (uint8) of text8 bytes; 255 marks a byte outside the alphabet."""
    return _ENCODE[np.frombuffer(raw, dtype=np.uint8)]


def encode(text: str) -> np.ndarray:
    """Token ids (uint8) of text already in text8 form; see ``normalize_text8``."""
    ids = byte_ids(text.encode("utf-8"))
    if (ids == 255).any():
        bad = sorted({c for c in text if c not in VOCAB})[:5]
        raise DataError(f"cannot encode {bad}: only ' ' and a-z are tokens; run normalize_text8 first")
    return ids


def decode(ids) -> str:
    """Text of token ids (numpy array, list or torch tensor, flattened in order).

    Ids outside 0-26, such as the mask (27), print as '_'.
    """
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    ids = np.where((ids >= 0) & (ids < len(VOCAB)), ids, len(VOCAB))
    return _DECODE[ids].tobytes().decode("ascii")


def decode_utf8(raw: bytes, name: str) -> str:
    """Strict UTF-8 decoding (a BOM is dropped); other encodings get a clear error, not a guess."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{name} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "convert it first, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


@functools.cache
def builtin_text() -> str:
    """The built-in offline corpus: CPython's own reference documentation, normalised.

    ``pydoc_data.topics`` ships with every CPython (it backs ``help('if')``) and holds the
    language reference in English prose; topics are joined in sorted order, so the corpus is a
    function of the Python version only.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise DataError(
            "this Python lacks the standard module pydoc_data that holds the built-in corpus; "
            "use data.source text8 or a local text file"
        ) from None
    return normalize_text8("\n\n".join(topics[k] for k in sorted(topics)))
