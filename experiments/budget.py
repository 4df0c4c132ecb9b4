"""Fit a training run to a wall-clock budget: time a short probe, then set the run's length to what fits.

A probe of ``probe_steps`` optimizer steps measures a config's seconds per step after warm-up (the
second half of the probe is timed, so start-up, the first step's allocations and any compilation are
left out); ``fit`` then sets ``max_iters = budget / (seconds per step)`` and scales the warmup with it,
so that the warmup and the cosine decay end on time, and the run validates once, at its end.  The budget
covers the optimizer steps: start-up and the final validation come on top (the race's and the sweep's
tables report the wall time each training really took).  Run nothing else at the same time.
"""

from __future__ import annotations

import dataclasses
import json
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


def tokens_per_step(cfg: Config) -> int:
    """Tokens one optimizer step trains on, on one device."""
    return cfg.train.batch_size * cfg.train.grad_accum * cfg.data.seq_len


def fit(cfg: Config, budget: float, seconds_per_step: float) -> Config:
    """``cfg`` with as many steps as fit ``budget`` seconds, its warmup scaled by the same factor (the
    preset's warmup fraction kept), one validation at the end and ten progress lines."""
    steps = max(1, int(budget / seconds_per_step))
    warmup = round(cfg.train.warmup_iters * steps / cfg.train.max_iters)
    train_cfg = dataclasses.replace(
        cfg.train, max_iters=steps, warmup_iters=warmup, eval_interval=steps, log_interval=max(1, steps // 10)
    )
    return dataclasses.replace(cfg, train=train_cfg)
