"""Fit a training run to a wall-clock budget: time a short probe, then set the run's length to what fits.

A probe of ``probe_steps`` optimizer steps measures a config's seconds per step after warm-up (the
second half of the probe is timed, so start-up, the first step's allocations and any compilation are
left out); ``fit`` then sets ``max_iters = budget / (seconds per step)`` and scales the run's other
horizons with it: the warmup and the EMA's horizon 1 / (1 - decay) keep their fractions of the run, and
the cosine decay ends on time.  The run validates once, at its end.  (So a swept warmup or EMA decay
is read at the preset's max_iters.)  The budget
covers the optimizer steps: start-up and the final validation come on top (the race's and the sweep's
tables report the wall time each training really took).  Run nothing else at the same time.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from experiments.cli import exit_if_stopped
from nanodd.config import Config
from nanodd.shell.trainer import train


def seconds_per_step(cfg: Config, probe_steps: int, out: Path) -> float:
    """Train ``probe_steps`` steps of ``cfg`` in ``out`` (an empty directory the caller holds; the probe's
    run is left there) and return the seconds per optimizer step of the probe's second half."""
    probe = dataclasses.replace(
        cfg.train, out_dir=str(out), max_iters=probe_steps, log_interval=probe_steps // 2, eval_batches=1
    )
    exit_if_stopped(train(dataclasses.replace(cfg, train=probe)))  # Ctrl-C in the probe: exit 130
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = [json.loads(line) for line in lines if "tokens_per_s" in line][-1]
    return tokens_per_step(cfg) / last["tokens_per_s"]


def probe_steps(steps: int, cfg: Config, racers: list[Config]) -> int:
    """Steps of ``cfg``'s probe: as many tokens as ``steps`` steps of the racer with the most tokens per
    step, so every probe is timed for about as long (a few short steps misjudge a run by 10-25%)."""
    largest = max(tokens_per_step(c) for c in racers)
    return math.ceil(steps * largest / tokens_per_step(cfg))


def tokens_per_step(cfg: Config) -> int:
    """Tokens one optimizer step trains on, on one device."""
    return cfg.train.batch_size * cfg.train.grad_accum * cfg.data.seq_len


def fit(cfg: Config, budget: float, seconds_per_step: float) -> Config:
    """``cfg`` with as many steps as fit ``budget`` seconds, its warmup and EMA horizon scaled by the same
    factor (their fractions of the run kept; an EMA horizon under one step turns EMA off), one validation
    at the end and ten progress lines."""
    steps = max(1, int(budget / seconds_per_step))
    scale = steps / cfg.train.max_iters
    horizon = scale / (1 - cfg.train.ema_decay)  # steps the EMA averages over, 1 / (1 - decay), scaled
    train_cfg = dataclasses.replace(
        cfg.train,
        max_iters=steps,
        warmup_iters=round(cfg.train.warmup_iters * scale),
        ema_decay=1 - 1 / horizon if cfg.train.ema_decay > 0 and horizon > 1 else 0.0,
        eval_interval=steps,
        log_interval=max(1, steps // 10),
    )
    return dataclasses.replace(cfg, train=train_cfg)
