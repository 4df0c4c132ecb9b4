"""The fast training paths against the reference, fp32 eager: bf16 autocast (eager and compiled) and fp32
compiled give the same loss and gradients within stated tolerances, and two broken casts exceed them.

Tolerances (relative; gradients as one vector over every parameter), on a 2-block DiT with random
adaLN weights and the D3PM loss at T = 1000:
    fp32 compiled         loss 1e-6,  gradients 1e-5   (measured 0 and 5e-7: reassociation only)
    bf16, eager/compiled  loss 2e-4,  gradients 3e-2   (measured <= 4e-5 and <= 1.1%)
A broken cast exceeds them: log p(x0) left in bf16 moves the loss by ~2e-3, and the time t rounded to
bf16 (steps above 256 are not representable) moves the gradients by ~20%.
"""

import contextlib
import functools

import pytest
import torch
import torch.nn.functional as F

import nanodd.model as model_lib
from nanodd.functional import make_apply, params_of
from nanodd.methods import d3pm
from nanodd.processes.absorbing import Absorbing

CFG = d3pm.D3PMConfig(T=1000, process=Absorbing(27))
TOLERANCE = {"fp32": (1e-6, 1e-5), "bf16": (2e-4, 3e-2)}  # (loss, gradients)


@functools.cache
def setup():
    torch.manual_seed(0)
    model = model_lib.DiT(
        model_lib.DiTConfig(vocab_size=28, d_model=64, n_heads=4, n_blocks=2, cond_dim=32, dropout=0.0)
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN" in name:
                p.normal_(0, 0.3)  # adaLN-Zero would hide the time input and the gates
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 27, (8, 64), generator=g)
    return model, x0, d3pm.noise(g, x0, CFG)


def loss_and_grads(dtype: str = "fp32", compile: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, every parameter's gradient flattened into one vector), float64."""
    model, x0, noise = setup()
    apply = make_apply(model, torch.compile(model)) if compile else make_apply(model)
    params = {k: v.detach().requires_grad_() for k, v in params_of(model).items()}
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with amp:
        loss, _ = d3pm.loss(apply, params, x0, noise, cfg=CFG)
    grads = torch.autograd.grad(loss, list(params.values()))
    return loss.detach().double(), torch.cat([g.flatten() for g in grads]).double()


@functools.cache
def reference() -> tuple[torch.Tensor, torch.Tensor]:
    return loss_and_grads()


def errors(loss: torch.Tensor, grads: torch.Tensor) -> tuple[float, float]:
    ref_loss, ref_grads = reference()
    return float((loss - ref_loss).abs() / ref_loss.abs()), float((grads - ref_grads).norm() / ref_grads.norm())


@pytest.mark.parametrize(
    "dtype,compile",
    [("bf16", False), ("fp32", True), ("bf16", True)],
    ids=["bf16-eager", "fp32-compiled", "bf16-compiled"],
)
def test_fast_path_matches_fp32_eager(dtype, compile):
    loss_err, grad_err = errors(*loss_and_grads(dtype, compile))
    loss_tol, grad_tol = TOLERANCE[dtype]
    assert loss_err <= loss_tol and grad_err <= grad_tol, (loss_err, grad_err)


def test_broken_casts_exceed_the_bf16_tolerance(monkeypatch):
    loss_tol, grad_tol = TOLERANCE["bf16"]
    log_p_x0 = Absorbing.log_p_x0
    with monkeypatch.context() as m:
        m.setattr(Absorbing, "log_p_x0", lambda self, logits, zt: log_p_x0(self, logits, zt).bfloat16())
        loss_err, _ = errors(*loss_and_grads("bf16"))
    assert loss_err > 5 * loss_tol, loss_err
    embed = model_lib.TimestepEmbedder.forward
    with monkeypatch.context() as m:
        m.setattr(model_lib.TimestepEmbedder, "forward", lambda self, t: embed(self, t.bfloat16()))
        _, grad_err = errors(*loss_and_grads("bf16"))
    assert grad_err > 3 * grad_tol, grad_err


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_cpu_attention_as_written_matches_fused_attention(causal):
    """The bf16 CPU path (two matmuls and a softmax) against torch's fused kernel in fp32, and causality:
    no output depends on a later position."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 16, generator=g) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    v16 = v.bfloat16().requires_grad_()
    out = model_lib.attention(q.bfloat16(), k.bfloat16(), v16, causal)
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=3e-2)
    (grad,) = torch.autograd.grad(out[:, :, 4].float().sum(), v16)
    assert (grad[:, :, 5:].abs().sum() == 0) == causal


def test_compiled_gelu_is_the_tanh_approximation():
    """Compiled code runs GELU as x sigmoid(2u); eager, torch's tanh kernel: the same function."""
    x = torch.linspace(-8, 8, 2001, dtype=torch.float64)
    gelu = model_lib.GELUTanh()
    compiled = torch.compile(gelu, backend="aot_eager")(x)  # traced, so the compiled branch runs
    torch.testing.assert_close(compiled, F.gelu(x, approximate="tanh"), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gelu(x), F.gelu(x, approximate="tanh"), rtol=0, atol=0)
