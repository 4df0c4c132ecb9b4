"""The bridge from stateful ``nn.Module`` to pure functions of an explicit parameter dict.

    params = params_of(model)              # dict[str, Tensor], the model's own parameters
    apply = make_apply(model)              # apply(params, zt, t, **kw) -> logits
    logits = apply(params, zt, t)          # == model(zt, t), but params are an argument
    logits, kv = apply(params, z, t, mask=mask, positions=pos, past=past, return_kv=True)

Everything downstream (losses, samplers, evaluation) sees only ``apply`` and ``params``, so it can
be differentiated with ``torch.func.grad``, vmapped with ``torch.func.vmap`` and compiled.  Buffers
(e.g. rotary frequencies) stay inside the module.  Keyword arguments (the attention mask, rotary
positions and key/value cache of ``nanodd.model``) pass through unchanged.

Wrappers rename parameters (DDP adds ``module.``, ``torch.compile`` adds ``_orig_mod.``).
``make_apply(model, wrapper)`` runs the wrapper but takes ``params`` under the model's own names, so
a loss that addresses a parameter by name behaves the same in every mode.  It must call the wrapper
itself: ``functional_call`` on ``ddp.module`` would silently skip DDP's gradient all-reduce.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
KVCache = tuple[tuple[Tensor, Tensor], ...]
"""One (k, v) [B, H, M, head_dim] per network block, keys rotated at their own positions."""


class Apply(Protocol):
    """The denoiser as a pure function: ``apply(params, zt [B, N] long, t [B] or [B, N]) -> logits
    [B, N, K]``.  Methods that need structured attention also pass ``mask`` (bool [N, M + N], True = may
    attend, columns [past M | own N]), ``positions`` (rotary positions [N], default M .. M + N - 1),
    ``past`` (a ``KVCache`` of length M) and ``return_kv`` (then it returns ``(logits, kv)``, kv this
    call's cache of length N).  A denoiser for methods that pass none of them may take (params, zt, t)."""

    def __call__(
        self,
        params: Params,
        zt: Tensor,
        t: Tensor,
        *,
        mask: Tensor | None = None,
        positions: Tensor | None = None,
        past: KVCache | None = None,
        return_kv: bool = False,
    ) -> Tensor | tuple[Tensor, KVCache]: ...


def params_of(model: nn.Module) -> Params:
    """The model's parameters by name (the live tensors, so ``.backward()`` fills their ``.grad``)."""
    return dict(model.named_parameters())


def make_apply(model: nn.Module, wrapper: nn.Module | None = None) -> Apply:
    """apply(params, zt, t, **kw) = model(zt, t, **kw) evaluated with ``params`` in place of its own.

    With ``wrapper`` (DDP and/or torch.compile around ``model``) the wrapper runs, and ``params``
    keep ``model``'s names: each is renamed to the wrapper's name for the same tensor.
    """
    if wrapper is None:
        return lambda params, zt, t, **kw: functional_call(model, params, (zt, t), kw)
    own = {id(p): name for name, p in model.named_parameters()}
    wrapped = {own[id(p)]: name for name, p in wrapper.named_parameters()}  # canonical -> wrapper name
    return lambda params, zt, t, **kw: functional_call(wrapper, {wrapped[k]: v for k, v in params.items()}, (zt, t), kw)
