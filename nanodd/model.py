"""Diffusion Transformer (DiT) denoiser: z_t, t -> logits.

A bidirectional transformer whose blocks are modulated by the diffusion time through adaLN-Zero
(Peebles & Xie 2023): each block computes shift/scale/gate vectors from the time embedding ``c``,

    h = x + gate_msa * Attn(LN(x) * (1 + scale_msa) + shift_msa)
    y = h + gate_mlp * MLP(LN(h) * (1 + scale_mlp) + shift_mlp),

with the modulation layers initialised to zero so every block starts as the identity.  Attention
uses rotary position embeddings (rotate-half form) on q and k; LayerNorm has no bias and runs in
fp32; the output projection is tied to the token embedding.  The network knows no diffusion process:
the process's output parameterisation (``nanodd.processes``) turns these logits into p(x0 | z_t),
e.g. with the mask logit at -inf for absorbing diffusion.

Parameter names and semantics follow nanoDD's DiT (docs/nanodd.md) so its checkpoints map 1:1:
``vocab_embed``, ``c_embed.mlp.{0,2}``, ``rotary_emb.inv_freq``, ``blocks.i.{norm1, attn_qkv,
attn_out, norm2, mlp.{0,2}, adaLN_modulation}``, ``norm_final``, ``adaLN_modulation``.
The time input is whatever the method feeds (D3PM: the raw step index 1..T); ``t`` may be [B]
(one time per sequence) or [B, N] (one per token).

Structured attention and a key/value cache, for methods that need them (block diffusion); the network
knows no method, a method states the mask it needs and passes it with each call::

    logits = dit(z, t)                                          # bidirectional (causal: DiTConfig.causal)
    logits = dit(z, t, mask=mask, positions=pos)                # mask [N, M + N] bool, True = may attend
    logits, kv = dit(z, t, mask=mask, positions=pos, past=past, return_kv=True)

``past`` holds one (k, v) [B, H, M, head_dim] per block, keys already rotated at their positions; z's N
queries attend to the columns [past M | own N].  ``positions`` [N] are the rotary positions of z's
tokens (default M .. M + N - 1), so the two streams x_t (+) x_0 of block diffusion both sit at 0..L-1.
``kv`` is this call's (k, v) [B, H, N, head_dim] per block; ``extend_cache`` appends it to ``past``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

import nanodd.checks as checks
from nanodd.functional import KVCache

Attend = Callable[[Tensor, Tensor, Tensor], Tensor]
"""attend(q [B, H, N, hd], k, v [B, H, M + N, hd]) -> [B, H, N, hd]: one forward's attention, mask bound."""


@dataclass(frozen=True)
class DiTConfig:
    """DiT denoiser shape.  Defaults are nanoDD's text8 model (~92M parameters)."""

    vocab_size: int | None = None
    """K, the ids the network reads and scores.  None (default): the method's process decides (text8:
    28 for absorbing diffusion, with the mask; 27 for uniform)."""
    d_model: int = 768
    """Residual stream width d."""
    n_heads: int = 12
    """Attention heads (d_model / n_heads must be even, for rotary)."""
    n_blocks: int = 12
    """Transformer blocks."""
    cond_dim: int = 128
    """Width of the time embedding c fed to every adaLN modulation."""
    dropout: float = 0.025
    """Residual dropout (train mode only; it draws from torch's global generator)."""
    time_conditioning: bool = True
    """False: the network ignores t (it embeds t = 0), as cached samplers need."""
    causal: bool = False
    """True: position i attends to positions <= i only (the autoregressive judge); False: bidirectional."""
    attention: Literal["sdpa", "flex"] = "sdpa"
    """The attention kernel: "sdpa", torch's scaled_dot_product_attention (a boolean ``mask`` as its
    attn_mask); "flex", FlexAttention with a mask_mod reading the mask (CUDA only; the same numbers)."""
    freq_dim: int = 256
    """Width of the sinusoidal time features."""
    max_period: float = 10000.0
    """Longest period of the sinusoidal time features."""

    def __post_init__(self):
        if self.vocab_size is not None:
            checks.at_least("vocab_size", self.vocab_size, 1)
        for name in ("d_model", "n_heads", "n_blocks", "cond_dim"):
            checks.at_least(name, getattr(self, name), 1)
        checks.require(
            "d_model",
            self.d_model % self.n_heads == 0 and self.d_model // self.n_heads % 2 == 0,
            ("split into ", checks.Field("n_heads"), f" {self.n_heads} heads of even width (rotary)"),
            self.d_model,
        )
        checks.between("dropout", self.dropout, 0, 1, open_high=True)
        checks.require(
            "freq_dim",
            self.freq_dim >= 2 and self.freq_dim % 2 == 0,
            "be even and >= 2 (cos and sin)",
            self.freq_dim,
        )
        checks.positive("max_period", self.max_period)
        checks.require("attention", self.attention in ("sdpa", "flex"), 'be "sdpa" or "flex"', self.attention)


def layer_norm(x: Tensor, weight: Tensor) -> Tensor:
    """Bias-free LayerNorm computed in fp32, returned in x's dtype."""
    return (F.layer_norm(x.float(), x.shape[-1:]) * weight.float()).type_as(x)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class LayerNorm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight)


class TimestepEmbedder(nn.Module):
    """t -> MLP(cos(t w_j), sin(t w_j)) with w_j = max_period^(-j / (freq_dim/2))."""

    def __init__(self, cond_dim: int, freq_dim: int, max_period: float):
        super().__init__()
        self.freq_dim, self.max_period = freq_dim, max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device) / half)
        args = t.float()[..., None] * freqs  # [..., half]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Rotary(nn.Module):
    """Rotary position embedding, rotate-half form: x * cos(p w) + rotate_half(x) * sin(p w).

    ``forward(L)`` gives the cos and sin tables of positions 0..L-1, ``at(positions)`` those of any
    positions, once per network call; every block applies them with ``rotate``."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, L: int) -> tuple[Tensor, Tensor]:
        return self.at(torch.arange(L, device=self.inv_freq.device))

    def at(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        freqs = torch.outer(positions.to(self.inv_freq.dtype), self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)  # [N, head_dim]
        return emb.cos(), emb.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [..., L, head_dim] rotated by the tables of ``Rotary`` (cast to x's dtype)."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool, mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(head_dim) + A) v for q [B, H, N, head_dim] and k, v [B, H, M + N, head_dim],
    A = -inf where a query may not attend, 0 elsewhere: where ``mask`` [N, M + N] is False, or without a
    mask and ``causal`` (M = 0) above the diagonal.  A query with no allowed key gets 0, as torch's kernel.
    bf16 on CPU runs it as written, as two matmuls and a softmax: torch's CPU flash kernel takes twice
    as long there at L = 256 (benchmarks/profile_step.py).  Everywhere else (CUDA, fp32) torch's fused
    ``scaled_dot_product_attention``."""
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(
        -1, -2
    )  # [B, H, N, M + N]; scaling q costs head_dim / L of scaling these
    if causal:
        L = q.shape[-2]
        future = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, -math.inf)
    if mask is None:
        return torch.softmax(scores, dim=-1) @ v
    # a finite fill and the product with the mask: an all-False row is 0, not nan (nor its gradient)
    return (torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1) * mask) @ v


def flex_block_mask(mask: Tensor | None, n_q: int, n_kv: int, device: torch.device):
    """The FlexAttention BlockMask whose mask_mod reads ``mask`` [n_q, n_kv] (None: attend to all)."""
    from torch.nn.attention.flex_attention import create_block_mask

    if mask is None:
        return None
    return create_block_mask(lambda b, h, q_idx, kv_idx: mask[q_idx, kv_idx], None, None, n_q, n_kv, device=device)


def flex_attend(mask: Tensor | None, n_q: int, n_kv: int, device: torch.device) -> Attend:
    """``attention`` through torch.nn.attention.flex_attention, the BlockMask built once per forward."""
    if device.type != "cuda":
        raise checks.FieldError(
            checks.Field("attention", "flex"),
            f" needs CUDA (torch's FlexAttention) and this network runs on {device.type}: use attention='sdpa'",
        )
    try:
        from torch.nn.attention.flex_attention import flex_attention  # torch >= 2.5
    except ImportError:
        raise checks.FieldError(
            checks.Field("attention", "flex"), f" needs torch >= 2.5 (FlexAttention), this is {torch.__version__}"
        ) from None
    return partial(flex_attention, block_mask=flex_block_mask(mask, n_q, n_kv, device))


class GELUTanh(nn.Module):
    """GELU, tanh approximation (nanoDD's):  x/2 (1 + tanh(u)) = x sigmoid(2u),  u = sqrt(2/pi) (x + 0.044715 x^3).

    Eager runs torch's kernel; compiled code the sigmoid form, which Inductor's CPU code runs in half the
    time of its tanh (forward and backward)."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return x * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x))
        return F.gelu(x, approximate="tanh")


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.norm1 = LayerNorm(d)
        self.attn_qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.norm2 = LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), GELUTanh(), nn.Linear(4 * d, d))
        self.adaLN_modulation = nn.Linear(cfg.cond_dim, 6 * d)

    def forward(
        self, x: Tensor, c: Tensor, cos: Tensor, sin: Tensor, attend: Attend, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        # x: [B, N, d]; c: [B, 1, cond] or [B, N, cond]; cos, sin: [N, head_dim]; past: (k, v) [B, H, M, hd]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, -1)
        qkv = self.attn_qkv(modulate(self.norm1(x), shift_msa, scale_msa))
        q, k, v = rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=self.n_heads)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # [B, H, N, hd]
        kv = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)  # [B, H, M + N, hd]
        attn = rearrange(attend(q, k, v), "b h l d -> b l (h d)")
        x = x + gate_msa * F.dropout(self.attn_out(attn), self.dropout, self.training)
        h = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x + gate_mlp * F.dropout(h, self.dropout, self.training), kv


class DiT(nn.Module):
    """The denoiser: ``forward(z [B, N] long, t [B] or [B, N]) -> logits [B, N, K]`` (logits only); with
    ``mask``, ``positions``, ``past`` and ``return_kv`` as in the module docstring."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError(
                "DiTConfig.vocab_size is None: set it, or build the network with "
                "nanodd.config.network_config(cfg), which takes it from the process"
            )
        self.cfg = cfg
        self.vocab_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.c_embed = TimestepEmbedder(cfg.cond_dim, cfg.freq_dim, cfg.max_period)
        self.rotary_emb = Rotary(cfg.d_model // cfg.n_heads)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.n_blocks))
        self.norm_final = LayerNorm(cfg.d_model)
        self.adaLN_modulation = nn.Linear(cfg.cond_dim, 2 * cfg.d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.vocab_embed.weight, std=0.02)
        for lin in [self.adaLN_modulation, *(b.adaLN_modulation for b in self.blocks)]:  # adaLN-Zero
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(
        self,
        zt: Tensor,
        t: Tensor,
        mask: Tensor | None = None,
        positions: Tensor | None = None,
        past: KVCache | None = None,
        return_kv: bool = False,
    ) -> Tensor | tuple[Tensor, KVCache]:
        if not self.cfg.time_conditioning:
            t = torch.zeros_like(t)
        c = F.silu(self.c_embed(t))  # [B, cond] or [B, N, cond]
        c = c[:, None] if c.dim() == 2 else c
        x = self.vocab_embed(zt)  # [B, N, d]
        N, M = zt.shape[1], 0 if past is None else past[0][0].shape[-2]
        if positions is None:
            positions = torch.arange(M, M + N, device=zt.device)
        cos, sin = self.rotary_emb.at(positions)  # [N, head_dim]
        attend = self.attend(mask, N, M, zt.device)
        kv = []
        for i, block in enumerate(self.blocks):
            x, kv_i = block(x, c, cos, sin, attend, None if past is None else past[i])
            kv.append(kv_i)
        shift, scale = self.adaLN_modulation(c).chunk(2, -1)
        x = modulate(self.norm_final(x), shift, scale)
        logits = x @ self.vocab_embed.weight.to(x.dtype).T  # tied output, [B, N, K]
        return (logits, tuple(kv)) if return_kv else logits

    def attend(self, mask: Tensor | None, N: int, M: int, device: torch.device) -> Attend:
        """This forward's attention: ``mask`` [N, M + N] when given, else bidirectional, or causal
        (DiTConfig.causal: query M + i sees keys 0..M + i) without a mask."""
        if mask is not None and (mask.dtype != torch.bool or mask.shape != (N, M + N)):
            raise ValueError(f"mask must be bool [N, M + N] = [{N}, {M + N}], got {mask.dtype} {list(mask.shape)}")
        if mask is None and self.cfg.causal and (M > 0 or self.cfg.attention == "flex"):
            mask = torch.ones(N, M + N, dtype=torch.bool, device=device).tril(M)
        if self.cfg.attention == "flex":
            return flex_attend(mask, N, M + N, device)
        return partial(attention, causal=self.cfg.causal and mask is None, mask=mask)


def extend_cache(past: KVCache | None, kv: KVCache, window: int | None = None) -> KVCache:
    """The cache after a call: each block's past (k, v) followed by the call's along positions,
    [B, H, M + N, hd], keeping only the last ``window`` positions when given (a sliding window; keys
    keep the rotation of the positions they were computed at, and rotary scores see only distances)."""
    if past is not None:
        kv = tuple((torch.cat([pk, k], dim=-2), torch.cat([pv, v], dim=-2)) for (pk, pv), (k, v) in zip(past, kv))
    if window is None:
        return kv
    return tuple((k[..., -window:, :], v[..., -window:, :]) for k, v in kv)


def block_causal_mask(n: int, block_size: int, past: int = 0, device: torch.device | str | None = None) -> Tensor:
    """Block-causal attention, bool [n, past + n]: the query at position past + i sees the keys of its
    own block and of every block before it (blocks of ``block_size`` positions from 0; ``past`` a multiple
    of it).  n = 6, block_size = 2, past = 0 (# = may attend)::

        ##....
        ##....
        ####..
        ####..
        ######
        ######
    """
    q_block = torch.arange(past, past + n, device=device) // block_size
    k_block = torch.arange(past + n, device=device) // block_size
    return k_block[None, :] <= q_block[:, None]


def block_diffusion_mask(L: int, block_size: int, device: torch.device | str | None = None) -> Tensor:
    """The mask of one pass over x_t (+) x_0 (BD3-LM, Arriola et al. 2025), bool [2L, 2L]: rows and
    columns 0..L-1 are the noisy stream x_t, L..2L-1 the clean stream x_0, both at positions 0..L-1.  A
    noisy token of block b sees the noisy tokens of block b (block-diagonal) and the clean tokens of
    blocks < b; a clean token of block b sees the clean tokens of blocks <= b (block-causal) and never a
    noisy one.  L = 4, block_size = 2 (# = may attend)::

                 x_t   x_0
                 0123  0123
        x_t  0   ##..  ....
             1   ##..  ....
             2   ..##  ##..
             3   ..##  ##..
        x_0  0   ....  ##..
             1   ....  ##..
             2   ....  ####
             3   ....  ####
    """
    block = torch.arange(L, device=device) // block_size
    q, k = block[:, None], block[None, :]
    noisy = torch.cat([q == k, k < q], dim=1)  # [L, 2L]
    clean = torch.cat([torch.zeros(L, L, dtype=torch.bool, device=device), k <= q], dim=1)  # [L, 2L]
    return torch.cat([noisy, clean], dim=0)
