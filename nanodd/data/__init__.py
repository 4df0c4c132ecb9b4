"""nanodd's data layer: corpora to token ids (text8, bytes, BPE, GPT-2), prepared once, batched by step.

This package does I/O (network, files); the pure core never imports it.
"""

from nanodd.data.batches import canonical_chunks, eval_chunks, train_batch
from nanodd.data.download import default_cache_dir, download
from nanodd.data.errors import DataError
from nanodd.data.prepare import SplitInfo, load_split, load_tokenizer, prepare, split_info
from nanodd.data.text import VOCAB, builtin_text, decode, encode, normalize_text8
from nanodd.data.text8 import TEXT8, Text8Spec

__all__ = [
    "DataError",
    "SplitInfo",
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
    "load_tokenizer",
    "normalize_text8",
    "prepare",
    "split_info",
    "train_batch",
]
