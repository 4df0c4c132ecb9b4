"""Structured attention and the key/value cache of the DiT (nanodd/model.py): masks change nothing they
should not, leak nothing, and one pass over x_t (+) x_0 equals the cached two-pass computation."""

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from nanodd import checks
from nanodd.functional import make_apply, params_of
from nanodd.model import (
    DiT,
    DiTConfig,
    attention,
    block_causal_mask,
    block_diffusion_mask,
    extend_cache,
    flex_block_mask,
    modulate,
    rotate,
)
from test_model import TINY, randomized

B, L, BLOCK = 2, 12, 4  # three blocks of four


def reference_forward(model: DiT, zt, t):
    """The forward as written before masks and caches: positions 0..L-1, SDPA, causal from the config."""
    c = F.silu(model.c_embed(t))[:, None]
    x = model.vocab_embed(zt)
    cos, sin = model.rotary_emb(zt.shape[1])
    for blk in model.blocks:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = blk.adaLN_modulation(c).chunk(6, -1)
        qkv = blk.attn_qkv(modulate(blk.norm1(x), shift_msa, scale_msa))
        q, k, v = rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=blk.n_heads)
        a = F.scaled_dot_product_attention(rotate(q, cos, sin), rotate(k, cos, sin), v, is_causal=model.cfg.causal)
        x = x + gate_msa * blk.attn_out(rearrange(a, "b h l d -> b l (h d)"))
        x = x + gate_mlp * blk.mlp(modulate(blk.norm2(x), shift_mlp, scale_mlp))
    shift, scale = model.adaLN_modulation(c).chunk(2, -1)
    return modulate(model.norm_final(x), shift, scale) @ model.vocab_embed.weight.T


def inputs(n=L, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 8, (B, n), generator=g), torch.tensor([3.0, 40.0])


@pytest.mark.parametrize("causal", [False, True])
def test_no_mask_is_the_old_forward_bit_for_bit(causal):
    model = randomized(dataclasses.replace(TINY, causal=causal))
    zt, t = inputs()
    torch.testing.assert_close(model(zt, t), reference_forward(model, zt, t), rtol=0, atol=0)


def test_a_full_mask_is_bidirectional_and_a_lower_triangle_is_causal():
    model, zt, t = randomized(), *inputs()
    causal = DiT(dataclasses.replace(TINY, causal=True)).eval()
    causal.load_state_dict(model.state_dict())
    ones = torch.ones(L, L, dtype=torch.bool)
    torch.testing.assert_close(model(zt, t, mask=ones), model(zt, t), rtol=0, atol=1e-6)
    torch.testing.assert_close(model(zt, t, mask=ones.tril()), causal(zt, t), rtol=0, atol=1e-6)
    assert not torch.allclose(model(zt, t), causal(zt, t), atol=1e-3)


def test_block_masks_are_the_pictures():
    assert block_causal_mask(6, 2).int().tolist() == [[1] * 2 + [0] * 4] * 2 + [[1] * 4 + [0] * 2] * 2 + [[1] * 6] * 2
    assert torch.equal(block_causal_mask(2, 2, past=4), block_causal_mask(6, 2)[4:])
    picture = ["##......", "##......", "..####..", "..####..", "....##..", "....##..", "....####", "....####"]
    assert ["".join("#" if a else "." for a in row) for row in block_diffusion_mask(4, 2).tolist()] == picture


def test_a_noisy_block_sees_only_itself_and_the_clean_blocks_before_it():
    model = randomized()
    x0, t = inputs()
    xt = torch.where(torch.rand(B, L, generator=torch.Generator().manual_seed(2)) < 0.5, 7, x0)
    embeddings = {}
    model.vocab_embed.register_forward_hook(lambda m, i, out: embeddings.setdefault("x", out))
    positions = torch.arange(L).repeat(2)
    logits = model(torch.cat([xt, x0], 1), t, mask=block_diffusion_mask(L, BLOCK), positions=positions)
    for b in range(L // BLOCK):
        (grad,) = torch.autograd.grad(logits[:, b * BLOCK : (b + 1) * BLOCK].sum(), embeddings["x"], retain_graph=True)
        per_block = grad.abs().sum((0, 2)).view(2, L // BLOCK, BLOCK).sum(-1)  # [stream (x_t, x_0), block]
        assert (per_block[0, b + 1 :] == 0).all() and (per_block[1, b:] == 0).all()  # later blocks, own clean copy
        assert (per_block[1, :b] > 0).all() and per_block[0, b] > 0  # the clean blocks before it, itself


@pytest.mark.parametrize("per_token_t", [False, True])
def test_one_pass_over_xt_and_x0_equals_the_clean_prefix_cache_then_the_noisy_block(per_token_t):
    model = randomized()
    x0, t = inputs()
    xt = torch.where(torch.rand(B, L, generator=torch.Generator().manual_seed(2)) < 0.5, 7, x0)
    tt = torch.rand(B, 2 * L, generator=torch.Generator().manual_seed(3)) * 100 if per_token_t else t
    one_pass = model(
        torch.cat([xt, x0], 1), tt, mask=block_diffusion_mask(L, BLOCK), positions=torch.arange(L).repeat(2)
    )
    for b in range(L // BLOCK):
        lo, hi = b * BLOCK, (b + 1) * BLOCK
        past = None
        if b > 0:
            t_clean = tt[:, L : L + lo] if per_token_t else t
            _, past = model(x0[:, :lo], t_clean, mask=block_causal_mask(lo, BLOCK), return_kv=True)
        t_noisy = tt[:, lo:hi] if per_token_t else t
        two_pass = model(xt[:, lo:hi], t_noisy, positions=torch.arange(lo, hi), past=past)
        torch.testing.assert_close(two_pass, one_pass[:, lo:hi], rtol=0, atol=1e-5)


def test_a_cache_grown_block_by_block_equals_one_block_causal_call():
    model, (x0, t) = randomized(), inputs()
    whole, kv_whole = model(x0, t, mask=block_causal_mask(L, BLOCK), return_kv=True)
    past, logits = None, []
    for lo in range(0, L, BLOCK):  # default positions: M .. M + N - 1 after a cache of length M
        out, kv = model(x0[:, lo : lo + BLOCK], t, past=past, return_kv=True)
        past, logits = extend_cache(past, kv), logits + [out]
    torch.testing.assert_close(torch.cat(logits, 1), whole, rtol=0, atol=1e-5)
    assert len(past) == TINY.n_blocks
    for (k, v), (k_whole, v_whole) in zip(past, kv_whole):
        assert k.shape == (B, TINY.n_heads, L, TINY.d_model // TINY.n_heads)
        torch.testing.assert_close(k, k_whole, rtol=0, atol=1e-5)
        torch.testing.assert_close(v, v_whole, rtol=0, atol=1e-5)


def test_a_causal_network_with_a_cache_is_causal_across_it():
    model = randomized(dataclasses.replace(TINY, causal=True))
    x0, t = inputs()
    _, past = model(x0[:, :5], t, return_kv=True)
    torch.testing.assert_close(model(x0[:, 5:], t, past=past), model(x0, t)[:, 5:], rtol=0, atol=1e-5)


def test_the_sliding_window_keeps_the_last_w_positions():
    kv = lambda lo, hi: ((torch.arange(lo, hi).float().view(1, 1, -1, 1).expand(1, 2, -1, 3),) * 2,)  # noqa: E731
    cache = extend_cache(extend_cache(None, kv(0, 5)), kv(5, 9), window=6)
    assert cache[0][0].shape == (1, 2, 6, 3) and cache[0][0][0, 0, :, 0].tolist() == [3, 4, 5, 6, 7, 8]
    assert extend_cache(None, kv(0, 5), window=2)[0][1][0, 1, :, 0].tolist() == [3, 4]


def test_make_apply_passes_the_keywords_through_a_wrapper_and_grad_flows():
    class Wrapper(torch.nn.Module):  # stands in for DDP / torch.compile: renames every parameter
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    model = randomized()
    x0, t = inputs()
    kw = dict(mask=block_causal_mask(L, BLOCK), positions=torch.arange(3, 3 + L))
    direct, kv_direct = model(x0, t, **kw, return_kv=True)
    for apply in (make_apply(model), make_apply(model, Wrapper(model))):
        logits, kv = apply(params_of(model), x0, t, **kw, return_kv=True)
        torch.testing.assert_close(logits, direct, rtol=0, atol=0)
        torch.testing.assert_close(kv, kv_direct, rtol=0, atol=0)
    apply = make_apply(model, Wrapper(model))
    params = {k: v.detach() for k, v in params_of(model).items()}
    loss = lambda p: apply(p, x0, t, **kw).logsumexp(-1).mean()  # noqa: E731
    grads = torch.func.grad(loss)(params)
    loss(params_of(model)).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6)
    assert grads["blocks.0.attn_qkv.weight"].abs().sum() > 0


def test_bf16_cpu_attention_as_written_takes_the_mask_and_an_empty_row_is_zero():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 8, generator=g) for n in (5, 7, 7))
    mask = torch.rand(5, 7, generator=g) < 0.5
    mask[:, 2], mask[3] = True, False
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), False, mask)
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=0.05)
    assert (got[:, :, 3] == 0).all() and (expected[:, :, 3] == 0).all()


def test_flex_mask_mod_reads_the_mask_as_sdpa_does():
    flex_attention = pytest.importorskip("torch.nn.attention.flex_attention").flex_attention
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 16, generator=g) for n in (8, 12, 12))
    mask = block_causal_mask(8, 4, past=4)
    with warnings.catch_warnings():  # eager FlexAttention on the CPU warns that it is unfused
        warnings.simplefilter("ignore")
        got = flex_attention(q, k, v, block_mask=flex_block_mask(mask, 8, 12, q.device))
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=0, atol=1e-5)


def test_flex_on_the_cpu_is_one_line_naming_the_field():
    model = DiT(dataclasses.replace(TINY, attention="flex"))
    with pytest.raises(checks.FieldError) as refused:
        model(*inputs())
    assert refused.value.field == "attention" and "\n" not in str(refused.value) and "CUDA" in str(refused.value)
    with pytest.raises(ValueError, match="attention"):
        DiTConfig(attention="xformers")


def test_a_mask_of_the_wrong_shape_is_refused():
    model, (x0, t) = randomized(), inputs()
    with pytest.raises(ValueError, match=r"\[12, 12\]"):
        model(x0, t, mask=torch.ones(L, L + 1, dtype=torch.bool))
    assert math.isfinite(model(x0, t, mask=torch.eye(L, dtype=torch.bool)).sum().item())
