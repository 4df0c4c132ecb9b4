import pytest
import torch

from nanodd.functional import make_apply, params_of
from nanodd.model import DiT, DiTConfig, rotate

TINY = DiTConfig(vocab_size=8, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0)


def randomized(cfg=TINY, seed=0):
    """A DiT with every parameter random (adaLN-Zero would make each block the identity at init)."""
    torch.manual_seed(seed)
    model = DiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def test_state_dict_names_and_shapes_follow_nanodd():
    d, c, K = TINY.d_model, TINY.cond_dim, TINY.vocab_size
    expected = {
        "vocab_embed.weight": (K, d),
        "c_embed.mlp.0.weight": (c, 256),
        "c_embed.mlp.0.bias": (c,),
        "c_embed.mlp.2.weight": (c, c),
        "c_embed.mlp.2.bias": (c,),
        "rotary_emb.inv_freq": (d // 4,),
        "norm_final.weight": (d,),
        "adaLN_modulation.weight": (2 * d, c),
        "adaLN_modulation.bias": (2 * d,),
    }
    for i in range(TINY.n_blocks):
        expected |= {
            f"blocks.{i}.norm1.weight": (d,),
            f"blocks.{i}.attn_qkv.weight": (3 * d, d),
            f"blocks.{i}.attn_out.weight": (d, d),
            f"blocks.{i}.norm2.weight": (d,),
            f"blocks.{i}.mlp.0.weight": (4 * d, d),
            f"blocks.{i}.mlp.0.bias": (4 * d,),
            f"blocks.{i}.mlp.2.weight": (d, 4 * d),
            f"blocks.{i}.mlp.2.bias": (d,),
            f"blocks.{i}.adaLN_modulation.weight": (6 * d, c),
            f"blocks.{i}.adaLN_modulation.bias": (6 * d,),
        }
    assert {k: tuple(v.shape) for k, v in DiT(TINY).state_dict().items()} == expected


def test_functional_call_equals_forward():
    model = randomized()
    zt, t = torch.randint(0, 8, (3, 12)), torch.tensor([1.0, 50.0, 999.0])
    torch.testing.assert_close(make_apply(model)(params_of(model), zt, t), model(zt, t), rtol=0, atol=0)
    other = {k: v + 0.1 for k, v in params_of(model).items()}
    assert not torch.allclose(make_apply(model)(other, zt, t), model(zt, t))


def test_attention_is_bidirectional():
    model = randomized()
    embeddings = {}
    model.vocab_embed.register_forward_hook(lambda m, i, out: embeddings.setdefault("x", out))
    logits = model(torch.randint(0, 7, (1, 10)), torch.tensor([3.0]))
    (grad,) = torch.autograd.grad(logits[0, 0, :-1].sum(), embeddings["x"])
    assert grad[0, -1].abs().sum() > 0  # output 0 depends on input L-1


def test_the_network_knows_no_process_finite_logits_for_every_id():
    logits = randomized()(torch.randint(0, 8, (2, 6)), torch.tensor([1.0, 2.0]))
    assert logits.shape == (2, 6, 8) and torch.isfinite(logits).all()


def test_adaln_zero_blocks_start_as_identity():
    model = DiT(TINY).eval()
    zt, t = torch.randint(0, 7, (2, 5)), torch.tensor([4.0, 9.0])
    x = model.vocab_embed(zt)
    expected = torch.nn.functional.layer_norm(x, (TINY.d_model,)) @ model.vocab_embed.weight.T
    torch.testing.assert_close(model(zt, t), expected)


def test_time_conditioning_per_sequence_per_token_and_off():
    model = randomized()
    zt = torch.randint(0, 8, (2, 6))
    t = torch.tensor([5.0, 70.0])
    per_token = model(zt, t[:, None].expand(2, 6))
    torch.testing.assert_close(per_token, model(zt, t))
    assert not torch.allclose(model(zt, t), model(zt, t + 10))
    blind = randomized(TINY.__class__(**{**TINY.__dict__, "time_conditioning": False}))
    torch.testing.assert_close(blind(zt, t), blind(zt, t + 10), rtol=0, atol=0)


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = randomized().rotary_emb(12)
    g = torch.Generator().manual_seed(0)
    q1, k1 = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    q, k = rotate(q1.expand(1, 1, 12, 16), cos, sin), rotate(k1.expand(1, 1, 12, 16), cos, sin)
    scores = (q @ k.transpose(-1, -2))[0, 0]  # [12, 12]
    for offset in range(-3, 4):
        diag = torch.diagonal(scores, offset)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 3)[0])


def test_bad_head_split_or_missing_vocabulary_is_refused():
    with pytest.raises(ValueError, match="heads"):
        DiT(DiTConfig(vocab_size=28, d_model=30, n_heads=4))
    with pytest.raises(ValueError, match="network_config"):
        DiT(DiTConfig())
