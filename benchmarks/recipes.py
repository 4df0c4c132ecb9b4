"""The recipe race: nanodd's demo recipe against nanoDD's text8 recipe, at equal model and wall-clock
budget, on several corpora and seeds, scored by the evaluator.

    python -m benchmarks.recipes                                     # 300 s per run; ~50 min on 2 cores
    python -m benchmarks.recipes --budget 1200 --seeds 0             # the longer budget
    python -m benchmarks.recipes --corpora my.txt --seeds 0 1 2      # your own text
    python -m benchmarks.recipes --dtype fp32                        # fp32 on a bf16 host too

**Racers** are two presets on one network (``experiments.presets.RACE_MODEL``: nanoDD's DiT at width
256, 4 blocks, cond width 128, no dropout, 256 characters): ``nanodd-race``, nanoDD's recipe (its
``configs.py``, our ``d3pm-text8``: D3PM with lambda = 0.05 and iid steps, AdamW 1e-3 -> 1e-5 cosine,
betas (0.9, 0.98), weight decay 0.1, clipping at 0.1, batch 16) with its 500k-step schedule compressed
to the run, and ``demo-race``, the ``demo`` preset's recipe at the same size and tokens per step.
``--recipes`` races any presets.

**Equal time.**  Each run is fitted to ``--budget`` seconds of optimizer steps as the race fits them
(``experiments.budget``: a probe, then the steps that fit, the warmup and EMA horizon keeping their
fractions of the run, the cosine ending on time), so a recipe is scaled to the budget as its authors'
schedule would be.  Every probe trains the same tokens (``--probe-steps`` steps of the recipe with the
most tokens per step, proportionally more of a smaller step), so each is timed for about as long: a
probe of a few short steps misjudges a run by 10-25%.  Run nothing else at the same time: the budget is
wall-clock.  The table gives the tokens each run trained: they, more than the seconds, say where on
its learning curve a run ended, and a faster machine ends later (docs/recipes.md: the lead of a
quarter batch shrinks as the tokens grow).

**Scores.**  Each run's own bound (``evaluate``: ``--n-t`` stratified times on every validation chunk,
the EMA weights when the run keeps an EMA, the same draws for every run), mean and standard error.
The gain is the first recipe's bound minus the second's (positive: the second is better), averaged
over seeds; its standard error is the larger of the evaluations' (combined in quadrature) and, with two
or more seeds, the spread of the per-seed gains.  The verdict asks for a gain of at least
``--goal`` bits and at least 3 standard errors.

**Resuming.**  ``results.jsonl`` in ``--out-dir`` gets one line per finished run; rerunning the same
command skips them and redoes an unfinished run from scratch.  Ctrl-C stops the run in progress
(exit 130); the directories a race made carry its mark (``.race``), and no other is touched.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from benchmarks.race import SHAKESPEARE, check_ours, fresh, probe_dir, race_in
from experiments.budget import probe_steps, tokens_per_step
from experiments.cli import run
from experiments.paths import check_corpus, check_directory
from experiments.presets import PRESETS
from nanodd import checks
from nanodd.config import DataConfig
from nanodd.data.prepare import atomic_write, prepare_data
from nanodd.shell.dist import autocast_dtype
from nanodd.shell.lock import run_lock
from nanodd.shell.workflows import evaluate_checkpoint, load_checkpoint


@dataclasses.dataclass(frozen=True)
class Options:
    budget: float = 300.0
    """Seconds of optimizer steps per run."""
    corpora: tuple[str, ...] = (*([str(SHAKESPEARE)] if SHAKESPEARE.is_file() else []), "builtin")
    """Corpora to race on (each prepared with the text8 tokenizer): names, files or URLs (default:
    tinyshakespeare from ../shared/data when present, and the built-in corpus)."""
    seeds: tuple[int, ...] = (0, 1)
    """Training seeds (weights, data order, noise); every recipe runs each."""
    recipes: tuple[str, str] = ("nanodd-race", "demo-race")
    """The baseline preset, then the challenger; the gain is the baseline's bound minus the challenger's."""
    n_t: int = 4
    """Stratified times per validation chunk in each evaluation."""
    probe_steps: int = 10
    """Optimizer steps of the timing probe of the recipe with the most tokens per step (the second half
    is timed); every other recipe's probe trains as many tokens, in proportionally more steps."""
    goal: float = 0.15
    """Bits per character the challenger must gain (and at least 3 standard errors) for the verdict."""
    dtype: Literal["auto", "fp32", "bf16"] | None = None
    """Precision of every run (None: each preset's own; nanodd-race's and demo-race's is 'auto', bf16 on
    CUDA and on CPUs with native bf16, else fp32). Race fp32 and bf16 on one host to see what each adds."""
    out_dir: str = "runs/recipes"
    """One run directory per corpus, recipe, seed and precision, and results.jsonl."""

    def __post_init__(self):
        unknown = [r for r in self.recipes if r not in PRESETS]
        checks.require("recipes", not unknown, "name two presets of experiments.text8 train", " ".join(unknown))
        checks.require("corpora", len(self.corpora) > 0, "name at least one corpus", "")
        checks.require("seeds", len(set(self.seeds)) == len(self.seeds) > 0, "name distinct seeds", self.seeds)
        checks.at_least("budget", self.budget, 1)
        checks.at_least("n_t", self.n_t, 1)
        checks.at_least("probe_steps", self.probe_steps, 4)
        checks.positive("goal", self.goal)
        checks.named("out_dir", self.out_dir)
        for seed in self.seeds:
            checks.seed("seeds", seed)


def slug(corpus: str) -> str:
    """A directory name for a corpus: its file name without suffix, or its name."""
    return re.sub(r"[^\w.-]", "_", Path(corpus).stem or corpus)


def key(corpus: str, recipe: str, seed: int, budget: float, precision: str) -> str:
    return f"{slug(corpus)}/{recipe}/seed={seed}/budget={budget:g}/{precision}"


def config(opt: Options, recipe: str):
    """``recipe``'s preset at ``--dtype``, and the precision it will train in on this machine ('fp32', 'bf16')."""
    cfg = PRESETS[recipe].cfg
    if opt.dtype is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, dtype=opt.dtype))
    device = torch.device("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    return cfg, "bf16" if autocast_dtype(cfg.train.dtype, device) else "fp32"


def run_key(opt: Options, corpus: str, recipe: str, seed: int) -> str:
    return key(corpus, recipe, seed, opt.budget, config(opt, recipe)[1])


def run_once(opt: Options, corpus: str, recipe: str, seed: int, out: Path) -> dict:
    """Train ``recipe`` on ``corpus`` with ``seed`` for the budget in ``out``, then evaluate it."""
    cfg, _ = config(opt, recipe)
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, source=corpus),
        train=dataclasses.replace(cfg.train, out_dir=str(out), seed=seed),
    )
    with fresh(out):
        trained = race_in(cfg, opt.budget, probe_steps(opt.probe_steps, cfg, [config(opt, r)[0] for r in opt.recipes]))
    report = evaluate_checkpoint(load_checkpoint(out), n_t=opt.n_t)["results"]
    return trained | {"bpc": report["bpc"], "stderr": report["stderr"], "n_chunks": report["n_chunks"]}


def gain(base: list[dict], challenger: list[dict]) -> tuple[float, float]:
    """Mean over seeds of base - challenger, and its standard error (``Options``' rule)."""
    gains = [b["bpc"] - c["bpc"] for b, c in zip(base, challenger)]
    mean, n = sum(gains) / len(gains), len(gains)
    se_eval = math.sqrt(sum(b["stderr"] ** 2 + c["stderr"] ** 2 for b, c in zip(base, challenger))) / n
    se_seeds = math.sqrt(sum((g - mean) ** 2 for g in gains) / (n - 1) / n) if n > 1 else 0.0
    return mean, max(se_eval, se_seeds)


def table(opt: Options, done: dict[str, dict]) -> str:
    """Every run, then the gain per corpus and the verdict."""
    base, challenger = opt.recipes
    lines = [
        f"{opt.budget:g} s of optimizer steps per run; bound: the run's own, bits/char, {opt.n_t} stratified "
        "times on every validation chunk (mean ± s.e.).",
        "",
        "| corpus | recipe | precision | seed | steps | tokens trained | tokens/s | train wall time | val bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for corpus in opt.corpora:
        for recipe in opt.recipes:
            for seed in opt.seeds:
                r, (cfg, precision) = done[run_key(opt, corpus, recipe, seed)], config(opt, recipe)
                lines.append(
                    f"| {slug(corpus)} | `{recipe}` | {precision} | {seed} | {r['steps']} | "
                    f"{r['steps'] * tokens_per_step(cfg) / 1e6:.2f}M | {r['tokens_per_s'] / 1e3:.1f}k | "
                    f"{r['wall_s']:.0f} s | {r['bpc']:.3f} ± {r['stderr']:.3f} |"
                )
    lines += ["", f"| corpus | `{base}` | `{challenger}` | gain | verdict |", "|---|---|---|---|---|"]
    for corpus in opt.corpora:
        rows = [[done[run_key(opt, corpus, r, s)] for s in opt.seeds] for r in opt.recipes]
        mean = [sum(r["bpc"] for r in runs) / len(runs) for runs in rows]
        g, se = gain(*rows)
        verdict, z = ("met" if g >= opt.goal and g >= 3 * se else "not met"), g / se if se else math.inf
        lines.append(
            f"| {slug(corpus)} | {mean[0]:.3f} | {mean[1]:.3f} | {g:+.3f} ± {se:.3f} ({z:.1f} s.e.) | "
            f"{verdict} (goal: ≥ {opt.goal:g} bits and ≥ 3 s.e.) |"
        )
    return "\n".join(lines) + "\n"


def read_done(path: Path) -> dict[str, dict]:
    """Finished runs by key; a partial last line (a kill mid-write) is dropped."""
    done = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[record["key"]] = record
    return done


def main(opt: Annotated[Options, tyro.conf.arg(name="")]) -> None:
    root = Path(opt.out_dir)
    check_directory("--out-dir", opt.out_dir, must_exist=False)
    for corpus in opt.corpora:
        check_corpus("--corpora", corpus, None, must_exist=True)
    runs = [(c, r, s) for c in opt.corpora for r in opt.recipes for s in opt.seeds]
    for corpus, recipe, seed in runs:
        check_ours(root / run_key(opt, corpus, recipe, seed))
        check_ours(probe_dir(root / run_key(opt, corpus, recipe, seed)))
    for corpus in opt.corpora:
        prepare_data(DataConfig(source=corpus))  # a missing file or a failed download stops it here
    with run_lock(root):  # one recipe race per directory at a time
        path = root / "results.jsonl"
        done = read_done(path)
        for i, (corpus, recipe, seed) in enumerate(runs, 1):
            k = run_key(opt, corpus, recipe, seed)
            if k in done:
                print(f"recipes: run {i}/{len(runs)} {k}: finished earlier, skipped", file=sys.stderr)
                continue
            print(f"recipes: run {i}/{len(runs)} {k} ...", file=sys.stderr, flush=True)
            done[k] = {"key": k, **run_once(opt, corpus, recipe, seed, root / k)}
            atomic_write(path, "".join(json.dumps(r) + "\n" for r in done.values()).encode())
    text = table(opt, done)
    atomic_write(root / f"results-{opt.budget:g}s.md", text.encode())
    print(text)


def cli(args: list[str] | None = None) -> None:
    run(
        main,
        args,
        prog="python -m benchmarks.recipes",
        description=__doc__.split("\n\n")[0],
        interrupted="interrupted: finished runs are in results.jsonl; rerun the same command to run the rest",
    )


if __name__ == "__main__":
    cli()
