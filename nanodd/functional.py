"""The bridge from stateful ``nn.Module`` to pure functions of an explicit parameter dict.

    params = params_of(model)              # dict[str, Tensor], the model's own parameters
    apply = make_apply(model)              # apply(params, zt, t) -> logits
    logits = apply(params, zt, t)          # == model(zt, t), but params are an argument

Everything downstream (losses, samplers, evaluation) sees only ``apply`` and ``params``, so it can
be differentiated with ``torch.func.grad``, vmapped with ``torch.func.vmap`` and compiled.  Buffers
(e.g. rotary frequencies) stay inside the module.  Wrap a DDP model itself, not ``ddp.module``:
calling ``functional_call`` on the inner module silently skips DDP's gradient all-reduce.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
Apply = Callable[[Params, Tensor, Tensor], Tensor]


def params_of(model: nn.Module) -> Params:
    """The model's parameters by name (the live tensors, so ``.backward()`` fills their ``.grad``)."""
    return dict(model.named_parameters())


def make_apply(model: nn.Module) -> Apply:
    """apply(params, zt, t) = model(zt, t) evaluated with ``params`` in place of its own."""

    def apply(params: Params, zt: Tensor, t: Tensor) -> Tensor:
        return functional_call(model, params, (zt, t))

    return apply
