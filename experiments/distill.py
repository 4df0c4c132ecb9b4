"""Self-distillation through time (SDTT) in rounds: a trained D3PM/MDLM run becomes a few-step sampler.

    python -m experiments.distill runs/mdlm-text8 --distill.rounds 7 --distill.iters-per-round 10000 \\
        --distill.start-steps 1024

Round r trains a student that samples on start_steps / m^r steps (m = --distill.teacher-steps, 2) to take
in one step what round r - 1's model (the run itself for r = 1) takes in m (``nanodd.distill.sdtt``).
Each round is an ordinary run through the unmodified trainer, handed the SDTT loss by its loss hook:
``RUN/distill/round-r`` starts from the teacher's EMA weights (``train.init_from``), keeps the run's
network, data and optimiser settings, checkpoints and resumes as any run does (bitwise on CPU), and
validates the student's own bound.  ``round-r/distill.json`` records the step count it was distilled
for; a round that has it is done and skipped, a round without it resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from experiments.cli import exit_if_stopped, run
from experiments.paths import check_checkpoint

from nanodd import checks
from nanodd.config import Config
from nanodd.data.files import atomic_write
from nanodd.distill import sdtt
from nanodd.functional import Params
from nanodd.methods import method_of
from nanodd.shell.trainer import train
from nanodd.shell.workflows import check_judge, generate, judge_bpb, load_checkpoint, load_judge

RECORD = "distill.json"
"""The file in a round's run directory that says what it was distilled for (``record``)."""


@dataclass(frozen=True)
class DistillOptions:
    rounds: int = 7
    """Distillation rounds; each divides the sampling steps by teacher_steps."""
    iters_per_round: int = 10_000
    """Optimizer steps per round (the paper: ~10k)."""
    start_steps: int = 1024
    """The run's own sampling steps, which round 1 distils from (it must divide by teacher_steps^rounds)."""
    teacher_steps: int = 2
    """m: teacher steps per student step."""
    divergence: Literal["kl", "mse", "tvd"] = "kl"
    """D(target || student) on the masked tokens."""
    unrevealed: Literal["last", "end"] = "last"
    """A token the teacher leaves masked: its distribution in the teacher's last step, or one more call."""
    out: str | None = None
    """Where the rounds go (None: RUN/distill)."""
    judge: str | None = None
    """An AR judge run (train ar-demo on the same data): after each round, the gen-BPC of judge_samples
    samples at the round's step count is printed and recorded (None: not measured)."""
    judge_samples: int = 16
    """Samples (one batch, seed 0) for the gen-BPC of each round."""

    def __post_init__(self):
        checks.at_least("rounds", self.rounds, 1)
        checks.at_least("iters_per_round", self.iters_per_round, 1)
        checks.at_least("teacher_steps", self.teacher_steps, 2)
        checks.at_least("start_steps", self.start_steps, 1)
        checks.at_least("judge_samples", self.judge_samples, 2)
        factor = self.teacher_steps**self.rounds
        checks.require(
            "start_steps",
            self.start_steps % factor == 0,
            f"be a multiple of teacher_steps^rounds = {factor}",
            self.start_steps,
        )


@dataclass(frozen=True)
class Options:
    run: Annotated[tyro.conf.Positional[str | None], tyro.conf.arg(metavar="RUN")] = None
    """A trained D3PM or MDLM run directory (its newest good checkpoint is the first teacher); required."""
    distill: DistillOptions = DistillOptions()


def round_config(teacher: Config, opt: DistillOptions, teacher_dir: str, out: Path) -> Config:
    """The teacher's run config for a student round: its own out_dir, iters_per_round steps from the teacher's
    EMA weights (its learning rate and the rest of its settings kept), resuming when the round has
    checkpoints already."""
    tc = teacher.train
    train_cfg = dataclasses.replace(
        tc,
        out_dir=str(out),
        max_iters=opt.iters_per_round,
        warmup_iters=min(tc.warmup_iters, opt.iters_per_round // 10),
        eval_interval=min(tc.eval_interval, opt.iters_per_round),
        init_from=teacher_dir,
        init_from_ema=True,
        resume=(out / "checkpoints").is_dir(),
    )
    return dataclasses.replace(teacher, train=train_cfg)


def teacher_loss(teacher: Params, cfg: sdtt.SDTTConfig):
    """``sdtt.make_loss`` with the teacher's dict moved, once, to the device the trainer's batches are on."""
    on: dict = {}

    def loss(apply, params, x0, noise):
        if x0.device not in on:
            on[x0.device] = sdtt.make_loss({k: v.to(x0.device) for k, v in teacher.items()}, cfg)
        return on[x0.device](apply, params, x0, noise)

    return loss


def record(out: Path) -> dict | None:
    """A finished round's record: {"round", "steps" (its sampling steps), "teacher", "teacher_steps", "val_bpc",
    and with a judge "gen_bpc", "gen_bpc_se"}."""
    path = out / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def distilled_steps(path: Path) -> int | None:
    """The sampling steps the run at ``path`` (or the run of the checkpoint at ``path``) was distilled for, from
    its record; None for a run that is not a distillation round."""
    for directory in (path, *path.parents[:2]):  # RUN, RUN/checkpoints, RUN/checkpoints/<step>
        if (found := record(directory)) is not None:
            return found["steps"]
    return None


def gen_bpc(out: Path, judge, steps: int, samples: int) -> tuple[float, float]:
    """(mean, standard error) of the judge's bits per character on ``samples`` ancestral samples of the round
    at ``out``, on ``steps`` steps."""
    student = load_checkpoint(out)
    tokens = generate(student, batch_size=samples, steps=steps, seed=0).tokens
    bpc = judge_bpb(judge, tokens, student.tokenizer)
    return float(bpc.mean()), float(bpc.std() / math.sqrt(samples))


def distill_round(r: int, teacher_dir: str, steps: int, opt: DistillOptions, out: Path, judge=None) -> dict:
    """Train round r's student (sampling on steps / m) from the model at ``teacher_dir`` (sampling on steps)."""
    teacher = load_checkpoint(teacher_dir, ema=True)
    method = method_of(teacher.cfg.method)
    cfg = sdtt.SDTTConfig(
        method.diffusion(teacher.cfg.method),
        steps // opt.teacher_steps,
        opt.teacher_steps,
        opt.divergence,
        opt.unrevealed,
    )
    params = {k: v.detach() for k, v in teacher.params.items()}
    last = exit_if_stopped(
        train(
            round_config(teacher.cfg, opt, teacher_dir, out),
            loss=teacher_loss(params, cfg),
            noise=lambda gen, x0, slot: sdtt.noise(gen, x0, cfg, slot),
        )
    )
    done = {"round": r, "steps": cfg.student_steps, "teacher": teacher_dir, "teacher_steps": steps}
    done["val_bpc"] = last.get("val_bpc")
    if judge is not None:
        done["gen_bpc"], done["gen_bpc_se"] = gen_bpc(out, judge, cfg.student_steps, opt.judge_samples)
    atomic_write(out / RECORD, (json.dumps(done, indent=1) + "\n").encode())  # never a partial record
    return done


def main(opt: Annotated[Options, tyro.conf.arg(name="")]) -> None:
    if opt.run is None:
        raise ValueError("RUN: name the trained D3PM or MDLM run to distil (python -m experiments.distill RUN ...)")
    check_checkpoint("RUN", opt.run)
    d = opt.distill
    check_checkpoint("--distill.judge", d.judge)
    judge = load_judge(d.judge) if d.judge is not None else None
    if judge is not None:  # before any round trains
        check_judge(judge, load_checkpoint(opt.run).tokenizer)
    base = Path(d.out) if d.out is not None else Path(opt.run) / "distill"
    teacher_dir, steps = opt.run, d.start_steps
    for r in range(1, d.rounds + 1):
        out = base / f"round-{r}"
        done = record(out) or distill_round(r, teacher_dir, steps, d, out, judge)
        bound = "n/a" if done["val_bpc"] is None else f"{done['val_bpc']:.4f}"
        scored = f", gen-BPC {done['gen_bpc']:.3f} ± {done['gen_bpc_se']:.3f}" if "gen_bpc" in done else ""
        print(
            f"round {r}: {done['teacher_steps']} -> {done['steps']} steps, student bound {bound}{scored} ({out})",
            file=sys.stderr,
            flush=True,
        )
        teacher_dir, steps = str(out), done["steps"]


def cli(args: list[str] | None = None) -> None:
    run(main, args, prog="python -m experiments.distill", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
