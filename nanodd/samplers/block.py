r"""Block-by-block sampling: BD3-LM's sampler with its exact key/value cache, and semi-autoregressive decoding
of a whole-sequence masked model.

Text is written L' tokens at a time (``block_size``).  For block b the sampler starts from L' masks and
runs an inner masked sampler (``inner``: ancestral, first-hitting or confidence, with ``steps`` steps per
block) on the block alone, through a denoiser that reads the finished blocks x^{<b}:

    p(x^b | x^{<b})  ~  inner sampler on  z^b  with  p(x0^b | z^b, x^{<b})                       (BD3-LM §3)

and appends the block.  The model decides how x^{<b} is read:

* **Block diffusion** (``Diffusion.block_size`` set: a BD3-LM checkpoint).  The network was trained to
  read noisy block b against the clean blocks before it (``nanodd.methods.bd3lm``), so the finished
  blocks are run once each, as the clean stream (time 0, block-causal), and their keys and values are
  kept: block b's calls attend to that cache and to themselves (``cache``).  Without the cache every call
  recomputes the clean prefix with it, the same numbers at about (b + 1) times the work.  Blocks continue
  past the training length: the cache keeps the last ``window`` tokens (default L - L'), so no call
  reads more context than training did, and rotary positions keep counting.  Cached and recomputed
  calls agree exactly while the text fits the window; beyond it the cache keeps keys computed with the
  context they had, where recomputation sees only the window (a sliding window either way).
* **Semi-autoregressive** (a D3PM or MDLM checkpoint: LLaDA's decoding, Nie et al. 2025).  The
  bidirectional network reads the whole window of L: finished blocks clean, block b noisy, the blocks
  after it masked; reveals happen in block b only.  Nothing can be cached (every token sees the
  masks after it), and the length stays L.

``stop_id`` ends sampling after the block in which every sequence has written it (the CLI sets the
tokenizer's end of document); the tokens after it are still returned.  NFE counts every network call,
the cache's appends included.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from nanodd import draws
import nanodd.checks as checks
from nanodd.functional import Apply, Params
from nanodd.model import block_causal_mask, extend_cache
from nanodd.protocols import Diffusion, OnStep, Samples
import nanodd.samplers.ancestral as ancestral
import nanodd.samplers.confidence as confidence
import nanodd.samplers.first_hitting as first_hitting
import nanodd.samplers.loop as loop

SUMMARY = "block by block with an inner masked sampler; BD3-LM with its KV cache, or semi-AR on D3PM/MDLM"
INNER = {"ancestral": ancestral, "first-hitting": first_hitting, "confidence": confidence}


@dataclass(frozen=True)
class Options:
    block_size: int | None = None
    """Tokens per block L' (default: the block size a BD3-LM checkpoint was trained with; on a D3PM or MDLM
    checkpoint the whole length, one block: the inner sampler alone; semi-AR takes one that divides it)."""
    inner: Literal["ancestral", "first-hitting", "confidence"] = "ancestral"
    """The masked sampler that writes each block (``steps`` is per block)."""
    length: int | None = None
    """Tokens to write, a multiple of the block size (default: the model's length; BD3-LM may write more)."""
    cache: bool = True
    """BD3-LM: keep the finished blocks' keys and values (exact); False: recompute them in every call."""
    window: int | None = None
    """BD3-LM: the most finished tokens a call reads (default: the model's length less one block)."""
    stop_id: int | None = None
    """Stop after the block in which every sequence has written this id (None: write ``length`` tokens)."""

    def __post_init__(self):
        for name in ("block_size", "length", "window"):
            if getattr(self, name) is not None:
                checks.at_least(name, getattr(self, name), 1)
        if self.stop_id is not None:
            checks.at_least("stop_id", self.stop_id, 0)


def plan(diffusion: Diffusion, seq_len: int, opt: Options) -> tuple[int, int, int]:
    """(block size, length, window), checked against the model."""
    Lb = opt.block_size or diffusion.block_size or seq_len
    blocks = diffusion.block_size is not None
    length = opt.length or seq_len
    checks.require("length", length % Lb == 0, f"be a multiple of the block size {Lb}", length)
    if not blocks:
        checks.require("block_size", seq_len % Lb == 0, f"divide the model's length {seq_len}", Lb)
        checks.require("length", length == seq_len, f"be the model's length {seq_len} (semi-AR stays in it)", length)
    window = opt.window or max(seq_len - Lb, Lb)
    checks.require("window", window % Lb == 0, f"be a multiple of the block size {Lb}", window)
    return Lb, length, window


def clean_stream(apply: Apply, params: Params, x: Tensor, past, lo: int, window: int):
    """Run the finished block x [B, L'] at positions lo.. as the clean stream (time 0; it sees the cache and
    itself) and return the cache with its keys and values appended, the last ``window`` kept."""
    B, Lb = x.shape
    M = 0 if past is None else past[0][0].shape[2]
    mask = torch.ones(Lb, M + Lb, dtype=torch.bool, device=x.device)
    positions = torch.arange(lo, lo + Lb, device=x.device)
    _, kv = apply(params, x, torch.zeros(B, device=x.device), mask=mask, positions=positions, past=past, return_kv=True)
    return extend_cache(past, kv, window)


def cached_denoiser(apply: Apply, past, lo: int, Lb: int) -> Apply:
    """Noisy block z [B, L'] at positions lo.. against the cached clean tokens (all of them, and itself)."""

    def block_apply(params: Params, z: Tensor, t: Tensor) -> Tensor:
        M = 0 if past is None else past[0][0].shape[2]
        mask = torch.ones(Lb, M + Lb, dtype=torch.bool, device=z.device)
        positions = torch.arange(lo, lo + Lb, device=z.device)
        return apply(params, z, t, mask=mask, positions=positions, past=past)

    return block_apply


def recomputing_denoiser(apply: Apply, prefix: Tensor, lo: int, Lb: int) -> Apply:
    """The same numbers as ``cached_denoiser`` (while the text fits the window), with the clean prefix
    [B, M] at positions lo - M.. run in the call: block-causal, time 0; the noisy block sees all of it and
    itself."""
    B, M = prefix.shape

    def block_apply(params: Params, z: Tensor, t: Tensor) -> Tensor:
        mask = block_causal_mask(M + Lb, Lb, device=z.device)  # [M + L', M + L']; M is a multiple of L'
        t_tok = torch.cat([torch.zeros(B, M, device=z.device), t.float()[:, None].expand(B, Lb)], 1)
        positions = torch.arange(lo - M, lo + Lb, device=z.device)
        return apply(params, torch.cat([prefix, z], 1), t_tok, mask=mask, positions=positions)[:, M:]

    return block_apply


def semi_ar_denoiser(apply: Apply, x: Tensor, lo: int, Lb: int, L: int, mask_id: int) -> Apply:
    """Block z at lo.. inside the whole window of L: finished tokens x [B, lo] before it, masks after it."""

    def block_apply(params: Params, z: Tensor, t: Tensor) -> Tensor:
        after = torch.full((z.shape[0], L - lo - Lb), mask_id, dtype=z.dtype, device=z.device)
        return apply(params, torch.cat([x, z, after], 1), t)[:, lo : lo + Lb]

    return block_apply


class CountedKV(loop.Counted):
    """``apply`` that counts its calls and passes keyword arguments (mask, cache) on."""

    def __call__(self, params: Params, zt: Tensor, t: Tensor, **kw):
        self.calls += 1
        return self.apply(params, zt, t, **kw)


@torch.no_grad()
def sample(
    apply: Apply,
    params: Params,
    diffusion: Diffusion,
    *,
    batch_size: int,
    seq_len: int,
    generator: torch.Generator,
    steps: int | None = None,
    transform: draws.Transform = draws.identity,
    on_step: OnStep | None = None,
    condition: Tensor | None = None,
    options: Options | None = None,
) -> Samples:
    """Blocks of L' tokens, each from L' masks by the inner sampler given the blocks before it: [B, length]
    and the NFE.  ``condition`` [length] or [B, length] fixes tokens anywhere (a prefix: its blocks are
    written as given); ``on_step(s, z)`` sees the whole text so far, the block being written included."""
    opt = options or Options()
    loop.require_masked_x0_network(diffusion, "block")
    Lb, length, window = plan(diffusion, seq_len, opt)
    process, B, device = diffusion.process, batch_size, generator.device
    condition = loop.check_condition(condition, process, (B, length))
    counted, inner = CountedKV(apply), INNER[opt.inner]
    whole = replace(diffusion, block_size=None)  # what the inner sampler sees: one block, a whole sequence
    x, past = torch.empty(B, 0, dtype=torch.long, device=device), None
    for lo in range(0, length, Lb):
        if diffusion.block_size is None:
            block_apply = semi_ar_denoiser(counted, x, lo, Lb, seq_len, process.mask_id)
        elif opt.cache:
            block_apply = cached_denoiser(counted, past, lo, Lb)
        else:
            block_apply = recomputing_denoiser(counted, x[:, max(lo - window, 0) :], lo, Lb)
        show = None if on_step is None else (lambda s, z, x=x: on_step(s, torch.cat([x, z], 1)))
        z, _ = inner.sample(
            block_apply,
            params,
            whole,
            batch_size=B,
            seq_len=Lb,
            generator=generator,
            steps=steps,
            transform=transform,
            on_step=show,
            condition=None if condition is None else condition[:, lo : lo + Lb],
        )
        x = torch.cat([x, z], 1)
        if opt.stop_id is not None and (x == opt.stop_id).any(1).all():
            break
        if diffusion.block_size is not None and opt.cache and lo + Lb < length:
            past = clean_stream(counted, params, z, past, lo, window)
    return Samples(x, counted.calls)
