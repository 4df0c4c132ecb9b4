"""Long text: seconds per sample and quality at 256, 1,024 and 4,096 characters for BD3-LM (with and without its
key/value cache), MDLM in fixed windows, semi-AR MDLM and the AR judge writing itself.

    python -m benchmarks.block_sampling                        # from the repository root; trains what is missing
    python -m benchmarks.block_sampling --max-iters 300        # shorter training of the missing demo runs
    python -m benchmarks.block_sampling --bd3lm runs/bd3lm-demo --mdlm runs/mdlm-demo --judge runs/ar-demo

Rows, for each length n (text8 ids: one character is one token):

* **BD3-LM, cache**: the block sampler (``--sample.sampler block``) on a BD3-LM checkpoint, ``block_steps``
  ancestral steps per block, each finished block run once into the key/value cache (its window: the
  model's length L less one block); the text runs past L with a sliding window.
* **BD3-LM, no cache**: the same draws with every call recomputing the clean prefix (``cache=False``).
* **MDLM, fixed windows**: ceil(n / L) independent windows of the model's L, each by the ancestral
  sampler at ``mdlm_steps`` steps (a step that reveals nothing is skipped), written one after another
  and concatenated: nothing carries across a window's edge.
* **semi-AR MDLM, fixed windows**: the block sampler on the same MDLM checkpoint (LLaDA's decoding:
  reveals confined to one block of ``semi_ar_block`` at a time, ``block_steps`` steps per block),
  windows concatenated as above (semi-AR stays inside L).
* **AR judge, cache / no cache**: ``nanodd.methods.ar.generate``, one token per call, BOS first, the cache
  sliding over the judge's L - 1 positions (no cache: the last L tokens through the network every call).

For each row: the network calls (NFE) and seconds per sample at batch 1 (median of ``single`` seeds) and
at batch ``batch`` (a batch's NFE: calls for the whole batch), and on the batch's samples the AR judge's bits per character (gen-BPC
with its standard error over samples; ``judge_bpb`` scores text longer than its L in windows of L moved
on by L / 2) and their unigram entropy (a degenerate sampler scores a low gen-BPC; read the two together).
Under the table: the judge on real validation text of each length.  Every draw in float64, fp32 network,
top-p 1, one torch thread (``--threads``); batch-1 timings run round-robin over the rows, so a shared
machine's drift hits them alike.  Checkpoints not given are trained into ``runs_dir`` when missing
(``python -m experiments.text8 train PRESET``).  The AR judge writes for comparison, and it is also the one
that scores (it favours its own text).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Callable

import torch
import tyro

import nanodd.checks as checks
from benchmarks.train_throughput import machine
from experiments.cli import run
from experiments.paths import check_checkpoint, check_directory
from experiments.presets import PRESETS as ALL_PRESETS
from nanodd import evaluate as ev
from nanodd.data import load_split
from nanodd.methods import ar
from nanodd.samplers import block
from nanodd.shell.workflows import (
    LoadedModel,
    check_judge,
    generate,
    judge_bpb,
    load_checkpoint,
    load_judge,
    trained_dir,
)

PRESETS = {"bd3lm": "bd3lm-demo", "mdlm": "mdlm-demo", "judge": "ar-demo"}
PRESETS_CFG = {name: preset.cfg for name, preset in ALL_PRESETS.items()}
ROWS = (
    "BD3-LM, cache",
    "BD3-LM, no cache",
    "MDLM, fixed windows",
    "semi-AR MDLM",
    "AR judge, cache",
    "AR judge, no cache",
)


@dataclasses.dataclass(frozen=True)
class Options:
    bd3lm: str | None = None
    """A BD3-LM run or checkpoint (default: RUNS_DIR/bd3lm-demo, trained if missing)."""
    mdlm: str | None = None
    """An MDLM (or D3PM) run or checkpoint (default: RUNS_DIR/mdlm-demo, trained if missing)."""
    judge: str | None = None
    """The AR judge that writes and scores (default: RUNS_DIR/ar-demo, trained if missing)."""
    runs_dir: str = "runs"
    """Where the default checkpoints are found, or trained when missing."""
    max_iters: int | None = None
    """Training steps of a missing default run (default: the preset's 1,200; each takes minutes on 2 cores)."""
    lengths: tuple[int, ...] = (256, 1024, 4096)
    """Characters per sample (multiples of the BD3-LM block size)."""
    block_steps: int = 16
    """Ancestral steps per block (BD3-LM and semi-AR): 16 per block of 16 is one token per step on average."""
    mdlm_steps: int = 256
    """Ancestral steps per window of MDLM."""
    semi_ar_block: int = 16
    """Block size of semi-AR decoding of the MDLM checkpoint (it must divide the model's length)."""
    batch: int = 8
    """Samples per row for gen-BPC and entropy, drawn as one batch (its seconds per sample reported too)."""
    single: int = 1
    """Seeds timed at batch 1 (the median is reported)."""
    uncached_max: int = 4096
    """Run the uncached rows (BD3-LM and AR) only up to this length."""
    only: tuple[str, ...] = ()
    """Measure only the rows whose label starts with one of these (default: every row)."""
    threads: int = 1
    """torch threads (1: a demo model's ops at batch 1 are too small to split, and on a shared 2-core machine a
    second thread mostly waits)."""

    def __post_init__(self):
        for name in ("block_steps", "mdlm_steps", "semi_ar_block", "batch", "single", "uncached_max", "threads"):
            checks.at_least(name, getattr(self, name), 1)
        if self.max_iters is not None:
            checks.at_least("max_iters", self.max_iters, 1)
        checks.require("lengths", len(self.lengths) > 0, "name at least one length", self.lengths)
        for n in self.lengths:
            checks.at_least("lengths", n, 1)
        unknown = [o for o in self.only if not any(r.startswith(o) for r in ROWS)]
        checks.require("only", not unknown, f"start row labels ({'; '.join(ROWS)})", " ".join(self.only))
        for name in ("bd3lm", "mdlm", "judge", "runs_dir"):
            checks.named(name, getattr(self, name))


def checkpoint(opt: Options, role: str) -> str:
    """The checkpoint of ``role``: the one given, else RUNS_DIR/PRESET, trained now when it has none."""
    given = getattr(opt, role)
    if given is not None:
        return given
    out = Path(opt.runs_dir) / PRESETS[role]
    if not (out / "checkpoints").is_dir() or not any(p.name.isdigit() for p in (out / "checkpoints").iterdir()):
        cmd = [sys.executable, "-m", "experiments.text8", "train", PRESETS[role], "--train.out-dir", str(out)]
        if opt.max_iters is not None:  # the warmup scaled with it, as the race does
            warmup = round(
                PRESETS_CFG[PRESETS[role]].train.warmup_iters
                * opt.max_iters
                / PRESETS_CFG[PRESETS[role]].train.max_iters
            )
            cmd += ["--train.max-iters", str(opt.max_iters), "--train.warmup-iters", str(warmup)]
        print(f"training {PRESETS[role]}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
    return str(out)


Writer = Callable[[int, int], tuple[torch.Tensor, int, float]]
"""write(batch_size, seed) -> (tokens [B, n], NFE per sample, seconds)."""


def in_windows(ckpt: LoadedModel, n: int, **kw) -> Writer:
    """ceil(n / L) independent windows of the checkpoint's L, one after another, concatenated and cut to n."""
    k = math.ceil(n / ckpt.cfg.data.seq_len)

    def write(batch_size: int, seed: int):
        outs = [generate(ckpt, batch_size=batch_size, seed=seed * k + i, dtype="fp32", **kw) for i in range(k)]
        return torch.cat([o.tokens for o in outs], 1)[:, :n], sum(o.nfe for o in outs), sum(o.seconds for o in outs)

    return write


def bd3lm_writer(ckpt: LoadedModel, n: int, steps: int, cache: bool) -> Writer:
    def write(batch_size: int, seed: int):
        options = block.Options(length=n, cache=cache)
        out = generate(
            ckpt, sampler="block", batch_size=batch_size, steps=steps, seed=seed, options=options, dtype="fp32"
        )
        return out.tokens, out.nfe, out.seconds

    return write


def ar_writer(judge: LoadedModel, n: int, cache: bool) -> Writer:
    direct = lambda params, zt, t, **kw: judge.model(zt, t, **kw)  # noqa: E731  (the params are the model's own)
    window = judge.cfg.data.seq_len - 1  # BOS and L - 1 tokens: every call within the judge's length

    def write(batch_size: int, seed: int):
        start = time.perf_counter()
        with torch.inference_mode():
            x, nfe = ar.generate(
                direct,
                judge.params,
                judge.cfg.method,
                batch_size=batch_size,
                length=n,
                generator=torch.Generator().manual_seed(seed),
                window=window,
                cache=cache,
            )
        return x, nfe, time.perf_counter() - start

    return write


def rows(
    opt: Options, bd3: LoadedModel, mdlm: LoadedModel, judge: LoadedModel, n: int
) -> list[tuple[str, str, Writer]]:
    """(label, steps, writer) of every row at length n."""
    Lb, Lj = bd3.diffusion.block_size, judge.cfg.data.seq_len
    semi = block.Options(block_size=opt.semi_ar_block)
    out = [
        ("BD3-LM, cache", f"{opt.block_steps} / block of {Lb}", bd3lm_writer(bd3, n, opt.block_steps, True)),
        ("BD3-LM, no cache", f"{opt.block_steps} / block of {Lb}", bd3lm_writer(bd3, n, opt.block_steps, False)),
        (
            "MDLM, fixed windows",
            f"{opt.mdlm_steps} / window of {mdlm.cfg.data.seq_len}",
            in_windows(mdlm, n, sampler="ancestral", steps=opt.mdlm_steps),
        ),
        (
            "semi-AR MDLM",
            f"{opt.block_steps} / block of {opt.semi_ar_block}",
            in_windows(mdlm, n, sampler="block", steps=opt.block_steps, options=semi),
        ),
        ("AR judge, cache", f"1 / token, window {Lj}", ar_writer(judge, n, True)),
        ("AR judge, no cache", f"1 / token, window {Lj}", ar_writer(judge, n, False)),
    ]
    keep = lambda label: (
        (not opt.only or label.startswith(opt.only)) and ("no cache" not in label or n <= opt.uncached_max)
    )  # noqa: E731
    return [r for r in out if keep(r[0])]


def measure(grid: list[tuple[str, str, Writer]], judge: LoadedModel, opt: Options, n: int) -> list[dict]:
    """Every row of ``grid`` side by side: batch 1 round-robin over the seeds (a shared machine's drift hits
    every row alike), then each row's batch of ``batch`` samples, scored."""
    single: dict[str, list] = {label: [] for label, _, _ in grid}
    for seed in range(opt.single):
        for label, _, write in grid:
            print(f"timing {label} at {n}, batch 1, seed {seed} ...", file=sys.stderr, flush=True)
            single[label].append(write(1, seed)[1:])
    out = []
    for label, steps, write in grid:
        print(f"sampling {label} at {n}, batch {opt.batch} ...", file=sys.stderr, flush=True)
        x, nfe, seconds = write(opt.batch, 100)
        out.append({"label": label, "steps": steps, "nfe_b": nfe, **scores(single[label], x, seconds, judge, opt)})
    return out


def scores(single: list, x: torch.Tensor, seconds: float, judge: LoadedModel, opt: Options) -> dict:
    bpc = judge_bpb(judge, x, judge.tokenizer)
    return {
        "nfe": statistics.median(s[0] for s in single),
        "s_1": statistics.median(s[1] for s in single),
        "s_b": seconds / opt.batch,
        "gen_bpc": float(bpc.mean()),
        "se": float(bpc.std() / math.sqrt(len(bpc))) if len(bpc) > 1 else float("nan"),
        "entropy": ev.char_entropy([judge.tokenizer.decode(row) for row in x.cpu()]),
    }


def data_bpc(judge: LoadedModel, n: int, count: int) -> str:
    """The judge on up to ``count`` chunks of n characters of its validation split."""
    val = load_split(trained_dir(judge), "val")
    k = min(count, len(val) // n)
    if k == 0:
        return f"validation split shorter than {n}"
    chunks = torch.as_tensor(val[: k * n].astype("int64")).view(k, n)
    return f"{float(judge_bpb(judge, chunks, judge.tokenizer).mean()):.3f} bits/char on {k} validation chunk(s)"


def main(opt: Annotated[Options, tyro.conf.arg(name="")]) -> None:
    torch.set_num_threads(opt.threads)
    for role in PRESETS:
        check_checkpoint(f"--{role}", getattr(opt, role))
    check_directory("--runs-dir", opt.runs_dir, must_exist=False)
    bd3 = load_checkpoint(checkpoint(opt, "bd3lm"))
    mdlm = load_checkpoint(checkpoint(opt, "mdlm"))
    judge = load_judge(checkpoint(opt, "judge"))
    if bd3.diffusion.block_size is None:
        raise ValueError(f"--bd3lm {bd3.path}: not a BD3-LM checkpoint (train bd3lm-demo)")
    if mdlm.diffusion.block_size is not None or not hasattr(mdlm.diffusion.process, "mask_id"):
        raise ValueError(f"--mdlm {mdlm.path}: not an MDLM or D3PM checkpoint (train mdlm-demo)")
    check_judge(judge, bd3.tokenizer)
    check_judge(judge, mdlm.tokenizer)
    bad = [n for n in opt.lengths if n % bd3.diffusion.block_size]
    checks.require("lengths", not bad, f"be multiples of the BD3-LM block size {bd3.diffusion.block_size}", bad)
    print(
        f"| characters | sampler | steps | NFE (batch 1) | s / sample (batch 1) | NFE (batch {opt.batch}) "
        f"| s / sample (batch {opt.batch}) | gen-BPC | unigram entropy |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    notes = []
    for n in opt.lengths:
        for r in measure(rows(opt, bd3, mdlm, judge, n), judge, opt, n):
            print(
                f"| {n:,} | {r['label']} | {r['steps']} | {r['nfe']:.0f} | {r['s_1']:.2f} | {r['nfe_b']} | {r['s_b']:.2f} | "
                f"{r['gen_bpc']:.3f} ± {r['se']:.3f} | {r['entropy']:.3f} |",
                flush=True,
            )
        notes.append(f"{n:,}: {data_bpc(judge, n, opt.batch)}")
    print(f"\nJudge on real text: {'; '.join(notes)}.")
    print(
        f"Checkpoints: BD3-LM {bd3.path} (L {bd3.cfg.data.seq_len}, blocks of {bd3.diffusion.block_size}), MDLM "
        f"{mdlm.path} (L {mdlm.cfg.data.seq_len}), judge {judge.path} (L {judge.cfg.data.seq_len}).  Seconds per "
        f"sample at batch 1: median of {opt.single} seed(s); gen-BPC ± s.e. over {opt.batch} samples."
    )
    print(
        f"Machine: {machine(torch.device('cpu'))}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}."
    )


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m benchmarks.block_sampling", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
