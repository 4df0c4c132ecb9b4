"""experiments.budget.fit: a preset's run compressed or stretched to a budget keeps the fractions of its
horizons (warmup, EMA), and its steps are what fits."""

import dataclasses

import pytest

from experiments.budget import fit
from experiments.presets import PRESETS


@pytest.mark.parametrize("budget, steps", [(30.0, 300), (600.0, 6000), (0.01, 1)])
def test_fit_keeps_the_fractions_of_warmup_and_ema_horizon(budget, steps):
    demo = PRESETS["demo"].cfg
    train = dataclasses.replace(demo.train, max_iters=1200, warmup_iters=100, ema_decay=0.99)  # EMA horizon 100
    cfg = dataclasses.replace(demo, train=train)
    t = fit(cfg, budget, 0.1).train
    assert (t.max_iters, t.eval_interval, t.log_interval) == (steps, steps, max(1, steps // 10))
    assert t.warmup_iters == round(100 * steps / 1200)
    horizon = 100 * steps / 1200
    assert t.ema_decay == (pytest.approx(1 - 1 / horizon) if horizon > 1 else 0.0)  # under one step: off
    unchanged = dict(eval_interval=train.eval_interval, log_interval=train.log_interval)
    assert dataclasses.replace(t, max_iters=1200, warmup_iters=100, ema_decay=0.99, **unchanged) == train


def test_fit_leaves_a_run_without_ema_without_it():
    cfg = PRESETS["demo"].cfg
    assert cfg.train.ema_decay == 0.0 and fit(cfg, 100.0, 0.1).train.ema_decay == 0.0
