"""The optimizers the shell trains with: AdamW, or Muon on the blocks' matrices and AdamW on the rest.

``build_optimizer(model, tc)`` returns one ``torch.optim.Optimizer``-like object either way: its
``param_groups`` take the schedule's lr, and its ``state_dict`` numbers every parameter's state, so
checkpoints and resumes do not care which optimizer ran.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nanodd.config import TrainConfig

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""(a, b, c) of the quintic Newton-Schulz step X <- a X + (b A + c A^2) X, A = X X^T (Jordan et al. 2024)."""


def orthogonalize(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """≈ U V^T for G = U S V^T: ``steps`` quintic Newton-Schulz iterations on G / ||G||_F, in G's dtype.

    The iteration is an odd polynomial in G, so it keeps G's singular vectors and maps each singular
    value x = σ / ||G||_F through x <- a x + b x^3 + c x^5: every x ≥ 2e-3 ends in [0.68, 1.21] (not at
    1: the coefficients trade convergence for speed).  torch.optim.Muon runs this in bf16, which made a
    batch-16 step of the recipe race's network 10x slower on an AMD Zen 3 CPU (no native bf16); here it
    runs in G's dtype, fp32 in training: 1.1x AdamW's step there (docs/recipes.md)."""
    a, b, c = NS_COEFFICIENTS
    wide = G.size(0) <= G.size(1)
    X = G if wide else G.T  # (m, n), m <= n: the Gram matrix A is the small one
    X = X / X.norm().clamp(min=eps)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X if wide else X.T


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024) with the update scaled to AdamW's RMS (Liu et al. 2025), for 2-D weights:

        B_t = mu B_{t-1} + g_t,   N_t = g_t + mu B_t   (Nesterov momentum)
        W_t = (1 - lr wd) W_{t-1} - lr * 0.2 sqrt(max(m, n)) * orthogonalize(N_t)

    An orthogonalised update has RMS 1/sqrt(max(m, n)); the factor 0.2 sqrt(max(m, n)) gives it the
    ~0.2 RMS of an AdamW step, so AdamW's learning rate and weight decay carry over unchanged."""

    def __init__(self, params, lr: float, weight_decay: float, momentum: float = 0.95, ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            for W in group["params"]:
                if W.grad is None:
                    continue
                B = self.state[W].setdefault("momentum_buffer", torch.zeros_like(W))
                B.mul_(mu).add_(W.grad)
                update = orthogonalize(W.grad + mu * B, group["ns_steps"])
                W.mul_(1 - lr * wd).add_(update, alpha=-lr * 0.2 * math.sqrt(max(W.shape)))


class Chained:
    """Several optimizers over disjoint parameters, stepped together and saved as one: parameter i of
    the state dict is the i-th over all of them in order (the numbering one optimizer would give)."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers
        self.defaults = optimizers[0].defaults

    @property
    def param_groups(self) -> list[dict]:
        """The live groups (``load_state_dict`` replaces each optimizer's group dicts with new ones)."""
        return [g for opt in self.optimizers for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def _offsets(self) -> list[int]:
        sizes = [sum(len(g["params"]) for g in opt.param_groups) for opt in self.optimizers]
        return [sum(sizes[:i]) for i in range(len(sizes) + 1)]

    def state_dict(self) -> dict:
        parts, offsets = [opt.state_dict() for opt in self.optimizers], self._offsets()
        return {
            "state": {i + o: s for part, o in zip(parts, offsets) for i, s in part["state"].items()},
            "param_groups": [g for part in parts for g in part["param_groups"]],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        offsets, groups = self._offsets(), iter(state_dict["param_groups"])
        for opt, lo, hi in zip(self.optimizers, offsets, offsets[1:]):
            opt.load_state_dict(
                {
                    "state": {i - lo: s for i, s in state_dict["state"].items() if lo <= i < hi},
                    "param_groups": [next(groups) for _ in opt.param_groups],
                }
            )


def adamw(params: list[nn.Parameter], tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D parameters only (matrices, embeddings); torch's fused kernel (CPU and CUDA)."""
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2), fused=True)


def build_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.AdamW | Chained:
    """``tc.optimizer``: AdamW on every parameter, or Muon on the blocks' weight matrices (attention,
    MLP, adaLN) and AdamW on the rest (embedding, conditioning MLP, final layer, biases, norms).  A group's
    ``lr_scale`` (Muon's: ``tc.muon_lr_scale``) multiplies the schedule's lr the trainer sets."""
    if tc.optimizer == "adamw":
        return adamw(list(model.parameters()), tc)
    named = list(model.named_parameters())
    hidden = {n for n, p in named if n.startswith("blocks.") and p.dim() == 2}
    return Chained(
        adamw([p for n, p in named if n not in hidden], tc),
        Muon(
            [{"params": [p for n, p in named if n in hidden], "lr_scale": tc.muon_lr_scale}],
            lr=tc.lr * tc.muon_lr_scale,
            weight_decay=tc.weight_decay,
        ),
    )
