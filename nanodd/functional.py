"""The bridge from stateful ``nn.Module`` to pure functions of an explicit parameter dict.

    params = params_of(model)              # dict[str, Tensor], the model's own parameters
    apply = make_apply(model)              # apply(params, zt, t) -> logits
    logits = apply(params, zt, t)          # == model(zt, t), but params are an argument

Everything downstream (losses, samplers, evaluation) sees only ``apply`` and ``params``, so it can
be differentiated with ``torch.func.grad``, vmapped with ``torch.func.vmap`` and compiled.  Buffers
(e.g. rotary frequencies) stay inside the module.

Wrappers rename parameters (DDP adds ``module.``, ``torch.compile`` adds ``_orig_mod.``).
``make_apply(model, wrapper)`` runs the wrapper but takes ``params`` under the model's own names, so
a loss that addresses a parameter by name behaves the same in every mode.  It must call the wrapper
itself: ``functional_call`` on ``ddp.module`` would silently skip DDP's gradient all-reduce.
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


def make_apply(model: nn.Module, wrapper: nn.Module | None = None) -> Apply:
    """apply(params, zt, t) = model(zt, t) evaluated with ``params`` in place of its own.

    With ``wrapper`` (DDP and/or torch.compile around ``model``) the wrapper runs, and ``params``
    keep ``model``'s names: each is renamed to the wrapper's name for the same tensor.
    """
    if wrapper is None:
        return lambda params, zt, t: functional_call(model, params, (zt, t))
    own = {id(p): name for name, p in model.named_parameters()}
    wrapped = {own[id(p)]: name for name, p in wrapper.named_parameters()}  # canonical -> wrapper name
    return lambda params, zt, t: functional_call(wrapper, {wrapped[k]: v for k, v in params.items()}, (zt, t))
