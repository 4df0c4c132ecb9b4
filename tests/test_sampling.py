import math

import pytest
import torch

from nanodd import sampling


def test_gumbel_max_draws_follow_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0, -math.inf])
    n = 200_000
    draws = sampling.categorical(logits.expand(n, 5), sampling.gumbels(g, (n, 5)))
    freq = torch.bincount(draws, minlength=5).double() / n
    torch.testing.assert_close(freq, logits.double().softmax(-1), atol=4e-3, rtol=0)


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15], [0.97, 0.01, 0.01, 0.01]])
    out = sampling.top_p(0.8)(probs.log())
    kept = torch.isfinite(out)
    assert kept.tolist() == [[True, False, True, False], [True, False, False, False]]
    torch.testing.assert_close(out[kept], probs.log()[kept])
    assert torch.isfinite(sampling.top_p(1.0)(probs.log())).all()


def test_temperature_and_compose():
    logits = torch.tensor([1.0, 2.0, 4.0])
    torch.testing.assert_close(sampling.temperature(0.5)(logits), 2 * logits)
    both = sampling.compose(sampling.temperature(0.5), sampling.top_p(0.5))
    assert torch.isfinite(both(logits)).tolist() == [False, False, True]


@pytest.mark.parametrize("bad", [lambda: sampling.temperature(0.0), lambda: sampling.top_p(0.0),
                                 lambda: sampling.top_p(1.5)])
def test_bad_transform_arguments_are_refused(bad):
    with pytest.raises(ValueError, match="must be"):
        bad()
