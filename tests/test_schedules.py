import pytest
import torch

import toy
from nanodd import schedules

CONTINUOUS = [
    schedules.Linear(),
    schedules.Cosine(),
    schedules.LogLinear(eps=1e-3),
    schedules.Polynomial(w=3.0),
    schedules.Geometric(sigma_min=1e-3, sigma_max=20.0),
]


@pytest.mark.parametrize("schedule", CONTINUOUS, ids=lambda s: type(s).__name__)
def test_derivative_matches_autograd(schedule):
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64, requires_grad=True)
    alpha, dalpha = schedule(t)
    (autograd,) = torch.autograd.grad(alpha.sum(), t)
    torch.testing.assert_close(dalpha, autograd)


@pytest.mark.parametrize("schedule", CONTINUOUS, ids=lambda s: type(s).__name__)
def test_endpoints_and_monotone(schedule):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha, dalpha = schedule(t)
    assert alpha[0] == pytest.approx(1.0, abs=1e-3)
    assert alpha[-1] == pytest.approx(getattr(schedule, "eps", 0.0), abs=1e-8)
    assert (alpha.diff() < 0).all() and (dalpha[1:-1] < 0).all()


def test_d3pm_absorbing_betas_give_linear_alpha_bar():
    T = 10
    betas = toy.d3pm_absorbing_betas(T)
    assert betas[0] == 0 and betas[-1] == 1  # the last step masks everything left
    alpha_bar = toy.alpha_bars_from_betas(betas)
    torch.testing.assert_close(alpha_bar, 1 - torch.arange(T + 1, dtype=torch.float64) / T)
    torch.testing.assert_close(alpha_bar, schedules.discretize(schedules.Linear(), T))
