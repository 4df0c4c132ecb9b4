"""Per-timestep analysis (nanodd.analysis): the vmapped statistics equal a plain loop over t and over
sequences with autograd, chunking changes nothing, and the variance is zero when every sequence is the same."""

import math

import pytest
import torch

from nanodd import analysis
from nanodd.functional import make_apply, params_of
from nanodd.methods import d3pm, mdlm, sedd
from nanodd.model import DiT, DiTConfig
from nanodd.processes.absorbing import Absorbing

PROCESS = Absorbing(7)
METHODS = {
    "d3pm": (d3pm, d3pm.D3PMConfig(T=50, process=PROCESS)),
    "d3pm-hybrid-loss": (d3pm, d3pm.D3PMConfig(T=50, process=PROCESS)),
    "mdlm": (mdlm, mdlm.MDLMConfig(process=PROCESS)),
    "sedd": (sedd, sedd.SEDDConfig(process=PROCESS)),
}


def setup(name):
    torch.manual_seed(0)
    model = DiT(DiTConfig(d_model=32, n_heads=2, n_blocks=1, cond_dim=16, dropout=0.0, vocab_size=PROCESS.K)).eval()
    method, cfg = METHODS[name]
    integrand = d3pm.hybrid_loss(cfg) if name == "d3pm-hybrid-loss" else method.bound(cfg)
    diffusion = method.diffusion(cfg)
    x0 = torch.randint(0, 7, (3, 12), generator=torch.Generator().manual_seed(1))
    noise = integrand.noise(torch.Generator().manual_seed(2), x0)
    process = diffusion.process if diffusion.output == "x0" else None
    return integrand, make_apply(model), params_of(model), x0, noise, process


def by_loop(integrand, apply, params, x0, noise, ts, process):
    """The same statistics with a Python loop over t and over sequences, and autograd."""
    rows = []
    for t in ts:
        fs, grads, corrupted, correct = [], [], 0, 0
        for b in range(len(x0)):
            seen = {}

            def recording(p, zt, t_in):
                seen["zt"], seen["logits"] = zt, apply(p, zt, t_in)
                return seen["logits"]

            f = (
                integrand(recording, params, x0[b : b + 1], t[None], {k: v[b : b + 1] for k, v in noise.items()})[0]
                / x0.shape[1]
            )
            grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(f, list(params.values()))]).double())
            fs.append(f.detach().double())
            if process is not None:
                wrong = seen["zt"][0] != x0[b]
                corrupted += int(wrong.sum())
                correct += int((wrong & (process.log_p_x0(seen["logits"], seen["zt"])[0].argmax(-1) == x0[b])).sum())
        g, f = torch.stack(grads), torch.stack(fs)
        rows.append(
            {
                "f": f.mean(),
                "f_se": f.std() / len(f) ** 0.5,
                "accuracy": torch.tensor(correct / corrupted if process else float("nan"), dtype=torch.float64),
                "grad_norm": g.mean(0).norm(),
                "grad_var": (g - g.mean(0)).pow(2).sum() / (len(g) - 1),
                "grad_sq": g.pow(2).sum(1).mean(),
            }
        )
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


@pytest.mark.parametrize("name", list(METHODS))
def test_vmapped_statistics_equal_a_loop_and_chunking_changes_nothing(name):
    integrand, apply, params, x0, noise, process = setup(name)
    ts = analysis.midpoints(4)
    out = analysis.per_timestep(integrand, apply, params, x0, noise, ts, process=process)
    ref = by_loop(integrand, apply, params, x0, noise, ts, process)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=2e-4, atol=1e-7, equal_nan=True, msg=k)
    assert (out["grad_var"] > 0).all() and (out["f"] > 0).all()
    chunked = analysis.per_timestep(integrand, apply, params, x0, noise, ts, process=process, chunk_size=3)
    for k in out:
        torch.testing.assert_close(chunked[k], out[k], rtol=1e-6, atol=1e-9, equal_nan=True, msg=k)


def test_identical_sequences_have_no_gradient_variance_and_bad_inputs_are_refused():
    integrand, apply, params, x0, noise, process = setup("mdlm")
    same_x0, same_noise = x0[:1].expand(3, -1), {k: v[:1].expand(3, *v.shape[1:]) for k, v in noise.items()}
    out = analysis.per_timestep(integrand, apply, params, same_x0, same_noise, analysis.midpoints(2), process=process)
    assert (out["grad_var"] < 1e-6 * out["grad_norm"] ** 2).all() and (out["f_se"] == 0).all()
    with pytest.raises(ValueError, match="at least 2 sequences"):
        analysis.per_timestep(integrand, apply, params, x0[:1], noise, analysis.midpoints(2))
    with pytest.raises(ValueError, match="at least one point"):
        analysis.midpoints(0)


def test_importance_sampling_of_t_in_closed_form():
    # m(t) = t^2 on n midpoints: the best density is t / mean(t) = 2t, keeping mean(t)^2 / mean(t^2) of
    # uniform t's second moment, with mean(t) = 1/2 and mean(t^2) = 1/3 - 1/(12 n^2) on the grid.
    n = 8
    t = analysis.midpoints(n)
    density, ratio = analysis.importance(t**2)
    torch.testing.assert_close(density, 2 * t)
    assert math.isclose(ratio, 0.25 / (1 / 3 - 1 / (12 * n**2)), rel_tol=1e-12) and ratio < 1
    # t drawn from that density, the gradient weighted by 1 / p: E_p[m / p^2] = E_U[p m / p^2] is the
    # ratio times uniform t's E_U[m]
    assert math.isclose(float((density * t**2 / density**2).mean()), ratio * float((t**2).mean()), rel_tol=1e-12)
    density_flat, ratio_flat = analysis.importance(torch.full((n,), 3.0))  # nothing to gain
    assert torch.equal(density_flat, torch.ones(n, dtype=torch.float64)) and math.isclose(ratio_flat, 1.0)
