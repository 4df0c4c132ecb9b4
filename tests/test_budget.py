"""experiments.budget.fit: a preset's run compressed or stretched to a budget keeps the fractions of its
horizons (warmup, EMA), and its steps are what fits."""

import dataclasses

import pytest

from experiments.budget import fit, probe_steps
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


def test_every_probe_trains_the_tokens_of_the_largest_steps_probe():
    """A racer with a quarter of the largest's tokens per step probes four times the steps; a third
    (not a divisor) is rounded up; the largest itself probes the steps asked for."""
    big = PRESETS["nanodd-race"].cfg
    small, odd = (dataclasses.replace(big, train=dataclasses.replace(big.train, batch_size=b)) for b in (4, 3))
    racers = [small, big]
    assert [probe_steps(10, c, racers) for c in (big, small, odd)] == [10, 40, 54]  # 10 x 16 / 3 = 53.3
