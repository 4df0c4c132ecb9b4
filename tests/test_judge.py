"""The autoregressive judge: its NLL is exact by the chain rule, its attention is causal, it learns,
and the CLI scores samples with it (gen-BPC)."""

import torch

from nanodd.config import Config, network_config
from nanodd.methods import ar
from nanodd.model import DiT, DiTConfig
from nanodd.processes.absorbing import Absorbing
from toy import toy_distribution

CFG = ar.ARConfig(process=Absorbing(n_symbols=3))


def exact_conditionals_apply(seqs, p):
    """logits at position i = log p(x_i | x_<i) by enumeration, reading the inputs [BOS, x_1, ...]."""
    L = seqs.shape[1]

    def apply(params, inputs, t):
        out = torch.full((*inputs.shape, 4), -torch.inf, dtype=torch.float64)
        for b, row in enumerate(inputs):
            for i in range(L):
                prefix = row[1 : i + 1]  # x_<i (position 0 holds BOS)
                consistent = (seqs[:, :i] == prefix).all(-1)
                mass = torch.zeros(3, dtype=torch.float64).index_add_(0, seqs[consistent, i], p[consistent])
                out[b, i, :3] = (mass / mass.sum()).log() if mass.sum() > 0 else -torch.tensor(3.0).log()
        return out

    return apply


def test_the_judges_nll_is_the_exact_nll_by_the_chain_rule():
    seqs, p = toy_distribution(n_symbols=3, L=3)
    nll = ar.nll(exact_conditionals_apply(seqs, p), None, seqs, CFG)
    torch.testing.assert_close(nll, -p.log())
    shifted = ar.nll(
        lambda params, x, t: exact_conditionals_apply(seqs, p)(params, torch.roll(x, -1, 1), t), None, seqs, CFG
    )
    assert (shifted - (-p.log())).abs().max() > 0.1  # reading the inputs one position off is caught


def test_a_causal_dit_looks_only_backwards():
    model = DiT(DiTConfig(vocab_size=4, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0, causal=True))
    with torch.no_grad():  # adaLN-Zero starts every block as the identity: give them weights
        for name, w in model.named_parameters():
            if "adaLN" in name:
                w.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    kept = {}

    def leaf(module, inputs, out):
        kept["x"] = out.detach().requires_grad_()
        return kept["x"]

    model.vocab_embed.register_forward_hook(leaf)
    ids = torch.randint(0, 4, (1, 8), generator=torch.Generator().manual_seed(0))
    for i in range(8):
        model(ids, torch.zeros(1))[0, i].sum().backward()
        grad = kept["x"].grad[0].abs().sum(-1)
        assert (grad[i + 1 :] == 0).all() and (grad[: i + 1] > 0).all(), (i, grad)


def test_the_ar_method_makes_its_network_causal_and_refuses_a_causal_denoiser():
    cfg = Config(method=ar.ARConfig())
    assert network_config(cfg).causal and network_config(cfg).vocab_size == 28
    try:
        network_config(Config(model=DiTConfig(causal=True)))
    except ValueError as e:
        assert "whole sequence" in str(e)
    else:
        raise AssertionError("a causal diffusion denoiser was accepted")
