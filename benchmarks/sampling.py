"""Every sampler at a few step counts on one checkpoint: cost and quality in one table.

    python -m benchmarks.sampling runs/demo --judge runs/ar-demo          # from the repository root
    python -m benchmarks.sampling runs/demo --judge runs/ar-demo --plot docs/sampling.png

For each row: the network calls (NFE) and seconds per sample at batch 1 (medians over a few seeds),
the NFE and samples/s at batch ``--batch`` (a cached step is skipped only when no sequence of the
batch reveals anything), and on ``--batches`` x ``--batch`` samples the AR judge's bits per
character (gen-BPC, with its standard error over samples), the share of words found in the training
split's vocabulary and the samples' unigram entropy (the data's own is printed under the table).
A degenerate sampler can score a low gen-BPC, so read it with the entropy.  The first row, ancestral
at 1000 steps calling the network at every step in fp32, is nanoDD's sampler; the speed-up column
is relative to it.  ``--plot`` (the optional ``plot`` extra: matplotlib) draws gen-BPC against NFE.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from pathlib import Path

from typing import Annotated

import torch
import tyro

import nanodd.checks as checks
from experiments.cli import run
from experiments.paths import check_checkpoint, check_writable

from nanodd import evaluate as ev
from nanodd.samplers import ancestral, confidence, remdm
from nanodd.data import load_split
from nanodd.shell.workflows import generate, judge_bpb, load_checkpoint, load_judge, prepared_dir


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    sampler: str
    steps: int | None
    options: object = None
    dtype: str = "auto"
    series: str | None = None  # rows of one series are joined by a line in the plot


def rows(T: int | None) -> list[Row]:
    """The grid: nanoDD's sampler first, then every sampler at a few step counts."""
    full = min(T or 1000, 1000)
    return [
        Row(f"ancestral {full}, no cache, fp32 (nanoDD's)", "ancestral", full, ancestral.Options(cache=False), "fp32"),
        Row(f"ancestral {full}, fp32", "ancestral", full, None, "fp32"),
        *[Row(f"ancestral {n}", "ancestral", n) for n in (full, 256, 128, 64, 32)],
        Row("first-hitting", "first-hitting", None),
        *[
            Row(f"confidence {n}, {rule}", "confidence", n, confidence.Options(rule=rule))
            for n in (128, 32)
            for rule in ("probability", "margin")
        ],
        Row("remdm 256, cap 0.02", "remdm", 256, remdm.Options(eta=0.02)),
        Row("remdm 256, rescale 0.1", "remdm", 256, remdm.Options(eta=0.1, strategy="rescale")),
        Row("analytic 64", "analytic", 64),
        Row("euler 64", "euler", 64),
    ]


@dataclasses.dataclass(frozen=True)
class Options:
    checkpoint: tyro.conf.Positional[str]
    """The masked-diffusion run or checkpoint to sample from."""
    judge: str
    """The autoregressive judge (train ar-demo / ar-text8)."""
    batch: int = 16
    """Batch size of the throughput and quality runs."""
    batches: int = 4
    """Quality runs (seeds) of ``batch`` samples each."""
    single: int = 3
    """Seeds timed at batch 1 (the median is reported)."""
    only: tuple[str, ...] = ()
    """Measure only the rows whose label starts with one of these (the first, reference row always runs)."""
    plot: str | None = None
    """Write gen-BPC against NFE to this PNG (needs matplotlib: pip install 'nanodd[plot]')."""

    def __post_init__(self):
        for name in ("batch", "batches", "single"):
            checks.at_least(name, getattr(self, name), 1)
        checks.named("plot", self.plot)


def measure(ckpt, judge, row: Row, opt: Options, vocab: set[str]) -> dict:
    kw = dict(sampler=row.sampler, steps=row.steps, options=row.options, dtype=row.dtype)
    single = [generate(ckpt, batch_size=1, seed=seed, **kw) for seed in range(opt.single)]
    if row.options == ancestral.Options(cache=False):
        # The cache changes the cost, never the samples: draw the quality samples with it (checked on
        # the timed seeds), so the reference row costs what the cached one does.
        kw["options"] = ancestral.Options(cache=True)
        if any(
            not torch.equal(generate(ckpt, batch_size=1, seed=seed, **kw).tokens, g.tokens)
            for seed, g in enumerate(single)
        ):
            raise SystemExit("error: the cached ancestral sampler drew other samples than the uncached one")
    batches = [generate(ckpt, batch_size=opt.batch, seed=100 + seed, **kw) for seed in range(opt.batches)]
    texts = [t for b in batches for t in b.texts]
    bpc = torch.cat([judge_bpb(judge, b.tokens, ckpt.tokenizer) for b in batches])
    return {
        "label": row.label,
        "nfe_1": statistics.median(g.nfe for g in single),
        "nfe": batches[0].nfe,
        "s_per_sample": statistics.median(g.seconds for g in single),
        "samples_per_s": opt.batch * len(batches) / sum(b.seconds for b in batches),
        "gen_bpc": float(bpc.mean()),
        "gen_bpc_se": float(bpc.std() / math.sqrt(len(bpc))),
        "words": ev.word_in_vocab_fraction(texts, vocab) if any(ev.words(t) for t in texts) else 0.0,
        "entropy": ev.char_entropy(texts),
    }


def main(opt: Annotated[Options, tyro.conf.arg(name="")]) -> None:
    check_checkpoint("CHECKPOINT", opt.checkpoint)
    check_checkpoint("--judge", opt.judge)
    check_writable("--plot", opt.plot)
    ckpt, judge = load_checkpoint(opt.checkpoint), load_judge(opt.judge)
    if ckpt.diffusion.output != "x0" or not hasattr(ckpt.diffusion.process, "mask_id"):
        raise ValueError(
            f"CHECKPOINT {opt.checkpoint}: the grid compares masked-diffusion samplers (ancestral, first-hitting, "
            "confidence, remdm) on a D3PM or MDLM checkpoint; sample this one with python -m experiments.text8 sample"
        )
    grid = rows(ckpt.diffusion.T)
    table(
        judge,
        [(ckpt, row) for row in [grid[0], *(r for r in grid[1:] if not opt.only or r.label.startswith(opt.only))]],
        opt,
    )


def table(judge, grid: list[tuple], opt) -> list[dict]:
    """Measure each (checkpoint, Row) of ``grid`` (the first is the reference) and print the Markdown table as
    it goes, the data's own judge score and entropy (of the first checkpoint's data), the verdict and, with
    ``opt.plot``, the plot; ``opt`` has ``batch``, ``batches``, ``single`` and ``plot``."""
    ckpt = grid[0][0]
    train_text = ckpt.tokenizer.decode(load_split(prepared_dir(ckpt.cfg.data), "train")[:10_000_000])
    vocab = set(ev.words(train_text))
    print(
        f"| sampler | NFE (batch 1) | s / sample (batch 1) | speed-up | NFE (batch {opt.batch}) | samples/s "
        f"(batch {opt.batch}) | gen-BPC | words in vocab | unigram entropy |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for model, row in grid:
        print(f"running {row.label} ...", file=sys.stderr, flush=True)
        r = measure(model, judge, row, opt, vocab) | {"series": row.series}
        results.append(r)
        print(
            f"| {r['label']} | {r['nfe_1']:.0f} | {r['s_per_sample']:.3f} | "
            f"{results[0]['s_per_sample'] / r['s_per_sample']:.1f}x | {r['nfe']} | {r['samples_per_s']:.2f} | {r['gen_bpc']:.3f} ± {r['gen_bpc_se']:.3f} | {100 * r['words']:.1f}% "
            f"| {r['entropy']:.3f} |",
            flush=True,
        )
    print(
        f"\nData (validation split): judge {data_bpc(ckpt, judge):.3f} bits/char, unigram entropy "
        f"{ev.char_entropy(train_text[:1_000_000]):.3f}; {ckpt.cfg.data.seq_len}-character samples."
    )
    print(verdict(results))
    if opt.plot:
        plot(results, opt.plot)
    return results


def verdict(results: list[dict], bits: float = 0.05, points: float = 1.0) -> str:
    """The fastest row at the reference's quality: gen-BPC within ``bits`` and word share within
    ``points`` of the first row (a point estimate: read it with the standard errors)."""
    ref = results[0]
    same = [
        r
        for r in results[1:]
        if abs(r["gen_bpc"] - ref["gen_bpc"]) <= bits and 100 * abs(r["words"] - ref["words"]) <= points
    ]
    if not same:
        return f"No row matches the reference's gen-BPC within {bits} bits and word share within {points} point."
    best = min(same, key=lambda r: r["s_per_sample"])
    return (
        f"Fastest at the reference's quality (gen-BPC within {bits} bits, words within {points} point): "
        f"{best['label']}, {ref['s_per_sample'] / best['s_per_sample']:.1f}x less time per sample at batch 1."
    )


def data_bpc(ckpt, judge) -> float:
    """The judge's bits/char on real text of the samples' length (what gen-BPC should approach)."""
    val = load_split(prepared_dir(ckpt.cfg.data), "val")
    L = ckpt.cfg.data.seq_len
    chunks = torch.as_tensor(val[: (len(val) // L) * L].astype("int64")).view(-1, L)[:64]
    return float(judge_bpb(judge, chunks, ckpt.tokenizer).mean())


def plot(results: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: --plot needs matplotlib: pip install 'nanodd[plot]'")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ax.errorbar(r["nfe_1"], r["gen_bpc"], yerr=r["gen_bpc_se"], fmt="o", capsize=3)
        ax.annotate(r["label"], (r["nfe_1"], r["gen_bpc"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    series = [name for name in dict.fromkeys(r.get("series") for r in results) if name]
    for name in series:
        points = sorted((r["nfe_1"], r["gen_bpc"]) for r in results if r.get("series") == name)
        ax.plot(*zip(*points), "-", label=name)
    if series:
        ax.legend()
    ax.set_xscale("log")
    ax.set_xlabel("network calls per sample at batch 1 (NFE)")
    ax.set_ylabel("gen-BPC under the AR judge (lower: more plausible)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the labels of the rightmost points included
    print(f"wrote {path}", file=sys.stderr)


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m benchmarks.sampling", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
