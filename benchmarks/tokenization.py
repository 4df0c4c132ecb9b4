"""Tokenisation throughput against worker processes, prepare time, peak memory, and GPT-2's known ids.

    python -m benchmarks.tokenization                                        # 32 MB per row, prepare 100 MB
    python -m benchmarks.tokenization --mb 8 --prepare-mb 20 --workers 1 2   # smaller
    NANODD_GPT2_RANKS=../shared/data/gpt2.tiktoken python -m benchmarks.tokenization   # our machines

The corpus is generated (CPython's documentation topics, raw, repeated over files of ``--file-mb``), so
nothing is downloaded.  Each row tokenises it with ``nanodd.data.shards.write_shards`` (what ``prepare``
runs after the tokenizer exists) in a fresh process and reports MB/s of UTF-8 text, tokens per
byte, and the peak resident memory of the main process and of the largest worker (they stay flat as the
corpus grows: at most 2 chunks per worker are in flight).  Then ``prepare`` runs once per tokenizer on
``--prepare-mb`` of text, BPE training included (on the training split, at most ``--bpe-train-mb``).

GPT-2 needs its ranks file: ``--gpt2-ranks PATH`` (default: ``$NANODD_GPT2_RANKS``).  With one, the
benchmark first checks two facts of GPT-2's encoding and exits 1 unless "Hello world" -> [15496, 995]
and "The quick brown fox jumps over the lazy dog." -> [464, 2068, 7586, 21831, 18045, 625, 262,
16931, 3290, 13]; without one, the gpt2 rows are skipped.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import torch
import tyro

import nanodd.checks as checks
import nanodd.data.tokenizers as toks
from benchmarks.train_throughput import machine
from experiments.cli import run
from nanodd.data import prepare
from nanodd.data.corpus import builtin_documents, file_corpus
from nanodd.data.shards import CHUNK_BYTES, write_shards

GPT2_FACTS = {
    "Hello world": [15496, 995],
    "The quick brown fox jumps over the lazy dog.": [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13],
}


@dataclasses.dataclass(frozen=True)
class Args:
    mb: float = 32
    """MB of generated text each throughput row tokenises."""
    prepare_mb: float = 100
    """MB of generated text ``prepare`` runs on, once per tokenizer (0: skip)."""
    workers: tuple[int, ...] = (1, 2)
    """Worker process counts to measure."""
    tokenizers: tuple[str, ...] = ("bytes", "bpe", "gpt2")
    vocab_size: int = 4096
    """bpe: ids of the tokenizer (trained once on the first 32 MB of the generated text)."""
    bpe_train_mb: float = 32
    """bpe: MB of the training split prepare learns its merges from."""
    file_mb: float = 8
    """Size of each generated file."""
    chunk_mb: float = CHUNK_BYTES / 2**20
    """MiB of text per chunk handed to a worker."""
    gpt2_ranks: str | None = os.environ.get(toks.GPT2_RANKS_ENV)
    """GPT-2's ranks file gpt2.tiktoken (default: $NANODD_GPT2_RANKS)."""

    def __post_init__(self):
        for name in ("mb", "prepare_mb", "bpe_train_mb", "file_mb", "chunk_mb"):
            checks.positive(name, getattr(self, name))
        checks.at_least("vocab_size", self.vocab_size, 258)  # as DataConfig: the 256 bytes, one merge, end of document
        checks.require("workers", len(self.workers) > 0 and min(self.workers) >= 1, "be >= 1", self.workers)
        checks.require("tokenizers", len(self.tokenizers) > 0, "name at least one tokenizer", self.tokenizers)


def generate(directory: Path, n_bytes: int, file_bytes: int) -> list[Path]:
    """Files of ``file_bytes`` (the last shorter) holding ``n_bytes`` of CPython's topics, repeated."""
    directory.mkdir(parents=True, exist_ok=True)
    text = b"\n\n".join(t for _, t in builtin_documents())
    files, left = [], n_bytes
    while left > 0:
        size = min(file_bytes, left)
        data = (text * (size // len(text) + 1))[:size]
        path = directory / f"part{len(files):05d}.txt"
        path.write_bytes(data[: len(data.decode("utf-8", "ignore").encode())])  # whole characters only
        files.append(path)
        left -= size
    return files


def check_gpt2(path: str) -> toks.TableTokenizer:
    """GPT-2 from ``path``; exits 1 unless it encodes ``GPT2_FACTS`` exactly."""
    tok = toks.gpt2(path)
    for text, ids in GPT2_FACTS.items():
        got = tok.encode(text).tolist()
        print(f"gpt2 {text!r} -> {got} {'ok' if got == ids else f'WRONG, expected {ids}'}")
        if got != ids:
            sys.exit(1)
    return tok


def measure(files, tok_dir: Path, out: Path, workers: int, chunk: int, pipe) -> None:
    """In a child process: tokenise ``files``, send (seconds, bytes, tokens, peak RSS MB of self, of children)."""
    tok = toks.load(tok_dir)
    t = time.perf_counter()
    counts = write_shards(file_corpus(files, "bench"), tok, tok_dir, out, workers=workers, chunk_bytes=chunk)
    seconds = time.perf_counter() - t
    rss = [resource.getrusage(who).ru_maxrss / 1024 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    pipe.send((seconds, sum(counts.bytes.values()), sum(counts.tokens.values()), *rss))


def run_row(files, tok_dir: Path, out: Path, workers: int, chunk: int) -> tuple:
    ctx = multiprocessing.get_context("spawn")  # a fresh process: its peak memory is its own
    here, there = ctx.Pipe()
    child = ctx.Process(target=measure, args=(files, tok_dir, out, workers, chunk, there))
    child.start()
    result = here.recv()
    child.join()
    return result


def build(name: str, args: Args, files: list[Path], work: Path) -> Path | None:
    """The tokenizer ``name`` saved under ``work``; None when it cannot be had (gpt2 without a ranks file)."""
    if name == "gpt2":
        if not args.gpt2_ranks:
            print("gpt2: skipped (no ranks file: --gpt2-ranks PATH or $NANODD_GPT2_RANKS)")
            return None
        tok = check_gpt2(args.gpt2_ranks)
    else:
        budget = int(args.bpe_train_mb * 1e6)
        texts = lambda: (p.read_bytes().decode() for p in files[: max(1, budget // files[0].stat().st_size)])
        tok = toks.build(name, texts=texts, vocab_size=args.vocab_size)
    toks.save(tok, work / f"tok-{name}")
    return work / f"tok-{name}"


def main(args: Annotated[Args, tyro.conf.arg(name="")]) -> None:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    bf16 = "avx512_bf16" in flags
    print(f"device {machine(torch.device('cpu'))}, avx512_bf16 {'yes' if bf16 else 'no'}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = generate(work / "corpus", int(args.mb * 1e6), int(args.file_mb * 1e6))
        print(f"corpus: {sum(p.stat().st_size for p in files) / 1e6:.1f} MB in {len(files)} files; "
              f"chunks of {args.chunk_mb:g} MiB")  # fmt: skip
        print(f"\n{'tokenizer':<10} {'workers':>7} {'MB/s':>8} {'tokens/byte':>11} {'main MB':>8} {'worker MB':>9}")
        for name in args.tokenizers:
            tok_dir = build(name, args, files, work)
            for w in args.workers if tok_dir else ():
                (work / "out").mkdir(exist_ok=True)
                seconds, n_bytes, tokens, rss, rss_child = run_row(
                    files, tok_dir, work / "out", w, int(args.chunk_mb * 2**20)
                )
                child = f"{rss_child:9.0f}" if w > 1 else f"{'-':>9}"
                print(f"{name:<10} {w:>7} {n_bytes / seconds / 1e6:8.1f} {tokens / n_bytes:11.3f} {rss:8.0f} {child}")
        if args.prepare_mb:
            prepare_rows(args, work)


def prepare_rows(args: Args, work: Path) -> None:
    files = generate(work / "big", int(args.prepare_mb * 1e6), int(args.file_mb * 1e6))
    n = sum(p.stat().st_size for p in files)
    print(f"\nprepare of {n / 1e6:.0f} MB ({len(files)} files), {max(args.workers)} workers")
    print(f"{'tokenizer':<10} {'seconds':>8} {'MB/s':>8}")
    for name in args.tokenizers:
        if name == "gpt2" and not args.gpt2_ranks:
            continue
        t = time.perf_counter()
        prepare(
            str(work / "big"), work / "data", tokenizer=name, vocab_size=args.vocab_size,
            tokenizer_file=args.gpt2_ranks, workers=max(args.workers), progress=False,
            bpe_train_bytes=int(args.bpe_train_mb * 1e6), chunk_bytes=int(args.chunk_mb * 2**20),
        )  # fmt: skip
        seconds = time.perf_counter() - t
        print(f"{name:<10} {seconds:8.1f} {n / seconds / 1e6:8.1f}")


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m benchmarks.tokenization", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
