"""SDTT's students against their teacher: network calls, time and quality at each step count.

    python -m experiments.distill runs/bench-d3pm --distill.rounds 4 --distill.start-steps 128   # first
    python -m benchmarks.distillation runs/bench-d3pm --judge runs/bench-ar --plot docs/distillation.png

The rows: the teacher (RUN) with nanoDD's sampler (ancestral at 1000 steps, the network called at every
step, fp32: the reference of the speed-up column), then its ancestral sampler with the cache at
128, 64, 32, 16 and 8 steps, then each finished round of ``RUN/distill`` (``experiments.distill``) on
the step count it was distilled for.  The columns are ``benchmarks.sampling``'s: NFE and seconds per
sample at batch 1 (medians over ``--single`` seeds), NFE and samples/s at batch ``--batch``, and on
``--batches`` x ``--batch`` samples the AR judge's bits per character (gen-BPC ± its standard error over
samples), the share of words in the training split's vocabulary and the unigram entropy (a degenerate
sampler scores a low gen-BPC; the data's own entropy is printed under the table).  The last line names
the fastest row within 0.05 bits and 1 point of words of the reference.  ``--plot`` (matplotlib) draws
gen-BPC against NFE, the teacher's rows and the students' joined by a line each.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

import nanodd.checks as checks
from benchmarks.sampling import Row, table
from experiments.cli import run
from experiments.distill import record
from experiments.paths import check_checkpoint, check_writable
from nanodd.samplers import ancestral
from nanodd.shell.workflows import load_checkpoint, load_judge

TEACHER_STEPS = (1000, 128, 64, 32, 16, 8)
"""The teacher's step counts; at 1000 it runs nanoDD's sampler (the cache would draw the same samples)."""


@dataclasses.dataclass(frozen=True)
class Options:
    run: tyro.conf.Positional[str]
    """The teacher: the D3PM or MDLM run that was distilled."""
    judge: str
    """The autoregressive judge (train ar-demo on the same data)."""
    distilled: str | None = None
    """The rounds' directory (None: RUN/distill, where experiments.distill writes them)."""
    batch: int = 16
    """Batch size of the throughput and quality runs."""
    batches: int = 4
    """Quality runs (seeds) of ``batch`` samples each."""
    single: int = 3
    """Seeds timed at batch 1 (the median is reported)."""
    plot: str | None = None
    """Write gen-BPC against NFE to this PNG (needs matplotlib: pip install 'nanodd[plot]')."""

    def __post_init__(self):
        for name in ("batch", "batches", "single"):
            checks.at_least(name, getattr(self, name), 1)
        checks.named("plot", self.plot)


def rounds(directory: Path) -> list[tuple[Path, dict]]:
    """(round directory, its record) of every finished round under ``directory``, in round order."""
    found = [(out, record(out)) for out in directory.glob("round-*") if out.is_dir()]
    return sorted(((out, r) for out, r in found if r is not None), key=lambda item: item[1]["round"])


def main(opt: Annotated[Options, tyro.conf.arg(name="")]) -> None:
    check_checkpoint("RUN", opt.run)
    check_checkpoint("--judge", opt.judge)
    check_writable("--plot", opt.plot)
    distilled = Path(opt.distilled) if opt.distilled is not None else Path(opt.run) / "distill"
    students = rounds(distilled)
    if not students:
        raise ValueError(
            f"--distilled {distilled} holds no finished round; distil first: python -m experiments.distill {opt.run}"
        )
    teacher, judge = load_checkpoint(opt.run), load_judge(opt.judge)
    full = min(teacher.diffusion.T or 1000, 1000)
    label = f"teacher, ancestral {full}, no cache, fp32 (nanoDD's)"
    reference = Row(label, "ancestral", full, ancestral.Options(cache=False), "fp32", series="teacher")
    grid = [(teacher, reference)]
    grid += [(teacher, Row(f"teacher, ancestral {n}", "ancestral", n, series="teacher")) for n in TEACHER_STEPS[1:]]
    for out, done in students:
        row = Row(f"round {done['round']}, ancestral {done['steps']}", "ancestral", done["steps"], series="students")
        grid.append((load_checkpoint(out), row))
    table(judge, grid, opt)


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m benchmarks.distillation", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
