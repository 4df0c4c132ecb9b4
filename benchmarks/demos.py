"""Every demo preset, one after another on this machine: its own validation bound and its speed.

    python -m benchmarks.demos                                  # from the repository root; ~25 min on 2 cores
    python -m benchmarks.demos --presets demo udlm-demo --n-t 8
    python -m benchmarks.demos --presets demo bytes-demo bpe-demo --samples   # characters, bytes, BPE

Each preset is run as ``python -m experiments.text8 demo PRESET`` (``experiments.corpus`` for its
presets: bytes-demo, bpe-demo; the same model, corpus, steps and seed for all), then ``evaluate RUN
--eval.n-t N`` gives the checkpoint's own bound (EMA weights) on the same canonical validation chunks.
Prints a Markdown table: bound +- standard error per token and per byte (the axis on which
tokenizers compare), which bound, median training tokens/s and the wall time of the demo (sampling
included); with ``--samples``, one sample of each.  Run nothing else at the same time: the tokens/s are
only comparable side by side.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import tyro

import nanodd.checks as checks
from experiments.cli import run as run_cli

from experiments.presets import CORPUS_DEMOS, DEMOS

ALL = {**DEMOS, **CORPUS_DEMOS}


@dataclasses.dataclass(frozen=True)
class Options:
    presets: tuple[str, ...] = tuple(DEMOS)
    """Demo presets to run, in this order (text8's demos, bytes-demo, bpe-demo)."""
    n_t: int = 8
    """Stratified times per validation chunk for the bound."""
    out_dir: str = "runs/demos"
    """Where the runs go (one directory per preset)."""
    samples: bool = False
    """Print one sample of each run after the table."""
    max_iters: int | None = None
    """Train each demo for this many steps instead of its own."""

    def __post_init__(self):
        unknown = [p for p in self.presets if p not in ALL]
        checks.require("presets", self.presets and not unknown, f"name demo presets ({', '.join(ALL)})", self.presets)
        checks.at_least("n_t", self.n_t, 1)
        checks.named("out_dir", self.out_dir)
        if self.max_iters is not None:
            checks.at_least("max_iters", self.max_iters, 1)


def entry(preset: str, *args: str) -> subprocess.CompletedProcess:
    """``args`` run by the entry point whose demo ``preset`` is."""
    entry = "experiments.corpus" if preset in CORPUS_DEMOS else "experiments.text8"
    return subprocess.run([sys.executable, "-m", entry, *args], capture_output=True, text=True)


def which_bound(cfg) -> str:
    T = getattr(cfg.method, "T", None)
    return f"L_T, T = {T}" if T else "L_∞"


def run(preset: str, opt: Options) -> dict:
    out = Path(opt.out_dir) / preset
    start = time.perf_counter()
    steps = [] if opt.max_iters is None else ["--train.max-iters", str(opt.max_iters)]
    done = entry(
        preset, "demo", preset, *steps, "--train.out-dir", str(out), "--sample.no-live", "--sample.batch-size", "1"
    )
    wall = time.perf_counter() - start
    if done.returncode:
        raise ValueError(f"demo {preset} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = entry(preset, "evaluate", str(out), "--eval.n-t", str(opt.n_t))
    if evaluated.returncode:
        raise ValueError(
            f"evaluate {preset} failed: {evaluated.stderr.strip().splitlines()[-1:] or evaluated.returncode}"
        )
    report = json.loads(evaluated.stdout)["results"]
    return {
        "preset": preset,
        "bpc": report["bpc"],
        "stderr": report["stderr"],
        "bpb": report["bpb"],
        "bpb_stderr": report["bpb_stderr"],
        "n_chunks": report["n_chunks"],
        "bound": which_bound(ALL[preset].cfg),
        "sample": done.stdout.strip(),
        "wall_s": wall,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in records if "tokens_per_s" in r),
    }


def main(opt: Annotated[Options, tyro.conf.arg(name="")]) -> None:
    print(
        "| run | tokenizer | val bound, bits/token | bits/byte | which bound | tokens/s (median) "
        "| wall time, sampling included |"
    )
    print("|---|---|---|---|---|---|---|")
    samples = {}
    for preset in opt.presets:
        print(f"running {preset} ...", file=sys.stderr, flush=True)
        r = run(preset, opt)
        minutes, seconds = divmod(round(r["wall_s"]), 60)
        data = ALL[preset].cfg.data
        tokenizer = data.tokenizer + (f" {data.vocab_size}" if data.tokenizer == "bpe" else "")
        print(
            f"| `{preset}` | {tokenizer} | {r['bpc']:.3f} ± {r['stderr']:.3f} | {r['bpb']:.3f} ± {r['bpb_stderr']:.3f} "
            f"| {r['bound']} | {r['tokens_per_s'] / 1e3:.1f}k | {minutes} min {seconds:02d} s |",
            flush=True,
        )
        samples[preset] = r["sample"]
    if opt.samples:
        for preset, text in samples.items():
            print(f"\n{preset}:\n\n```\n{text}\n```")


def cli(args: list[str] | None = None) -> None:
    run_cli(main, args, prog="python -m benchmarks.demos", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
