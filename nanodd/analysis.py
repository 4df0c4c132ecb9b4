r"""Per-timestep analysis: what each t contributes to a bound, how well the network denoises there, and
how noisy its gradient is.

Every bound is an integral over time, L(x0) = E_{t ~ U(0, 1]} f(x0, t) (``protocols.Integrand``; for
masked diffusion f = w(t) * masked cross-entropy).  For one batch x0 [B, L], one draw of the
integrand's noise (shared by every t, so differences between times are not noise), and a grid of
times t_1..t_n, ``per_timestep`` returns, at each t (nats per token, divided by L):

    f:          the mean over sequences of f(x0_b, t) / L, and ``f_se``, its standard error;
    accuracy:   of the corrupted tokens (z_t^i != x0^i; absorbing: the masked ones), the share whose
                argmax p(x0 | z_t) is x0^i  (x0 networks only; NaN for a ratio network);
    grad_norm:  || g(t) ||,  g(t) = (1/B) sum_b g_b(t),  g_b(t) = grad_theta f(x0_b, t) / L;
    grad_var:   (1/(B - 1)) sum_b || g_b(t) - g(t) ||^2, the trace of the covariance of one sequence's
                gradient at t: how much noise a training step drawing this t gets;
    grad_sq:    m(t) = (1/B) sum_b || g_b(t) ||^2, the second moment, which ``importance`` reads.

The mean of f over a midpoint grid (``midpoints``) is a quadrature of the bound itself.  It is
computed as the papers' equations read: ``torch.func.grad`` of one sequence's f, ``torch.func.vmap``
over the batch, and ``vmap`` over t in chunks of ``chunk_size`` times.  Memory: the per-sequence
gradients take chunk_size x B x (number of parameters) floats, 5.9 GB per time at B = 16 on the
92M-parameter text8 model, so choose chunk_size (and B) for the machine.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from nanodd.functional import Apply, Params
from nanodd.protocols import Integrand, Noise, Process


def midpoints(n: int) -> Tensor:
    """t_i = (i - 1/2) / n, i = 1..n, float64: the midpoint rule's grid on (0, 1]."""
    if n < 1:
        raise ValueError(f"the time grid needs at least one point, got {n}")
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n


def one_sequence(integrand: Integrand, apply: Apply, process: Process | None):
    """(params, x0 [L], t 0-d, noise of one sequence) -> (f / L, (corrupted tokens, correctly denoised ones))."""

    def f(params: Params, x0: Tensor, t: Tensor, noise: Noise) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        seen = {}

        def recording(p: Params, zt: Tensor, t_in: Tensor, **kw) -> Tensor:  # kw: a method's mask, positions
            logits = apply(p, zt, t_in, **kw)
            L = x0.shape[-1]  # the noisy positions come first (BD3-LM reads z_t then the clean x0: 2L)
            seen["zt"], seen["logits"] = zt[..., :L], logits[..., :L, :]
            return logits

        value = (
            integrand(recording, params, x0[None], t[None], {k: v[None] for k, v in noise.items()})[0] / x0.shape[-1]
        )
        if process is None:
            return value, (torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64))
        corrupted = seen["zt"][0] != x0
        correct = corrupted & (process.log_p_x0(seen["logits"], seen["zt"])[0].argmax(-1) == x0)
        return value, (corrupted.sum().double(), correct.sum().double())

    return f


def per_timestep(
    integrand: Integrand,
    apply: Apply,
    params: Params,
    x0: Tensor,
    noise: Noise,
    ts: Tensor,
    *,
    process: Process | None = None,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """The statistics above at each of ``ts`` [n] (float64 in (0, 1]) for x0 [B, L] (B >= 2) and the
    integrand's ``noise`` for x0; ``process`` (that of an x0 network) enables the accuracy.  Returns a
    dict of [n] float64 tensors: t, f, f_se, accuracy, grad_norm, grad_var, grad_sq."""
    B = x0.shape[0]
    if B < 2:
        raise ValueError(f"per-timestep statistics need at least 2 sequences (a standard error), got {B}")
    per_sequence = vmap(
        grad_and_value(one_sequence(integrand, apply, process), has_aux=True), in_dims=(None, 0, None, 0)
    )

    def at(t: Tensor) -> dict[str, Tensor]:
        g, (f, (corrupted, correct)) = per_sequence(params, x0, t, noise)  # g: name -> [B, *shape]
        f = f.double()
        stats = {
            "f": f.mean(),
            "f_se": f.std() / B**0.5,
            "accuracy": correct.sum() / corrupted.sum(),
            "grad_norm": sum(v.mean(0).double().pow(2).sum() for v in g.values()).sqrt(),
            "grad_var": sum((v - v.mean(0)).double().pow(2).sum() for v in g.values()) / (B - 1),
            "grad_sq": sum(v.double().pow(2).sum() for v in g.values()) / B,
        }
        # detached per chunk: a chunk's results would otherwise keep its autograd graph (params that
        # require grad) alive until every chunk is done, so memory grew with len(ts), not chunk_size
        return {k: v.detach() for k, v in stats.items()}

    with warnings.catch_warnings():
        # functorch loops over the batch where an op (CPU attention's backward) has no batching rule; the
        # result is the same, only slower, so its performance warning says nothing to act on here.
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        out = vmap(at, chunk_size=chunk_size)(ts)
    return {"t": ts, **out}


def importance(grad_sq: Tensor) -> tuple[Tensor, float]:
    """Importance sampling of t for the training gradient, from m(t) = E_b ||g_b(t)||^2 on a midpoint grid.

    A step that draws t ~ p and weights its gradient by 1/p(t) stays unbiased, and its second moment is
    E_{t ~ U} m(t) / p(t), least at p(t) = sqrt m(t) / E_U sqrt m (Cauchy-Schwarz), where it is
    (E_U sqrt m)^2.  Returns that density at the grid's times [n] (mean 1) and the ratio
    (E_U sqrt m)^2 / E_U m in (0, 1]: the share of uniform t's second moment the best sampler of t keeps
    (1: nothing to gain).  The variance is the second moment less ||E g||^2, the same for every p, so
    its share falls further still.
    """
    root = grad_sq.double().sqrt()
    return root / root.mean(), float(root.mean() ** 2 / grad_sq.double().mean())
