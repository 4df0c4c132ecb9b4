"""Exact toy distributions for likelihood tests: p over all K^L sequences and its exact denoiser."""

import itertools

import torch


def toy_distribution(n_symbols: int = 3, L: int = 3, seed: int = 0, sharpness: float = 2.0):
    """A fixed, correlated, non-uniform p over all n_symbols^L sequences: (seqs [N, L], p [N] float64)."""
    seqs = torch.tensor(list(itertools.product(range(n_symbols), repeat=L)))
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(sharpness * torch.randn(len(seqs), generator=g, dtype=torch.float64), 0)
    return seqs, p


def exact_apply(seqs: torch.Tensor, p: torch.Tensor, mask_id: int):
    """The exact denoiser: logits = log p(x0^i = v | z_t), by enumeration of every sequence
    consistent with the clean tokens of z_t.  It ignores t (absorbing posteriors do not depend on it)
    and ``params``, and puts -inf on the mask id."""
    K = mask_id + 1

    def apply(params, zt, t):
        consistent = ((zt[:, None, :] == mask_id) | (zt[:, None, :] == seqs[None])).all(-1)  # [B, N]
        w = consistent * p  # [B, N]
        onehot = torch.nn.functional.one_hot(seqs, K).double()  # [N, L, K]
        post = torch.einsum("bn,nlk->blk", w, onehot) / w.sum(-1)[:, None, None]
        return torch.log(post)

    return apply


def entropy(p: torch.Tensor) -> float:
    return float(-(p * p.log()).sum())
