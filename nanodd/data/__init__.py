"""nanodd's data layer: text8 and other corpora in the text8 alphabet, prepared once, batched by step.

This package does I/O (network, files); the pure core never imports it.
"""

from nanodd.data.batches import canonical_chunks, eval_chunks, train_batch
from nanodd.data.download import default_cache_dir, download
from nanodd.data.errors import DataError
from nanodd.data.prepare import load_split, prepare
from nanodd.data.text import VOCAB, builtin_text, decode, encode, normalize_text8
from nanodd.data.text8 import TEXT8, Text8Spec

__all__ = [
    "DataError",
    "TEXT8",
    "Text8Spec",
    "VOCAB",
    "builtin_text",
    "canonical_chunks",
    "decode",
    "default_cache_dir",
    "download",
    "encode",
    "eval_chunks",
    "load_split",
    "normalize_text8",
    "prepare",
    "train_batch",
]
