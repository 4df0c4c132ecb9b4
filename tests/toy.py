"""Exact toy distributions for likelihood tests: p over all K^L sequences and its exact denoiser."""

import itertools
import math

import torch

from nanodd.methods import d3pm
from nanodd.processes import mixing
from nanodd.processes.absorbing import Absorbing
from torch import Tensor


def d3pm_absorbing_betas(T: int) -> Tensor:
    """beta_t = 1/(T - t + 1) for t = 1..T, with beta_0 = 0 prepended: shape [T + 1], float64."""
    t = torch.arange(T + 1, dtype=torch.float64)
    return torch.where(t == 0, torch.zeros_like(t), 1 / (T - t + 1))


def alpha_bars_from_betas(betas: Tensor) -> Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s): shape [T + 1], alpha_bar_0 = 1."""
    return torch.cumprod(1 - betas, dim=0)


def toy_distribution(n_symbols: int = 3, L: int = 3, seed: int = 0, sharpness: float = 2.0):
    """A fixed, correlated, non-uniform p over all n_symbols^L sequences: (seqs [N, L], p [N] float64)."""
    seqs = torch.tensor(list(itertools.product(range(n_symbols), repeat=L)))
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(sharpness * torch.randn(len(seqs), generator=g, dtype=torch.float64), 0)
    return seqs, p


def exact_apply(seqs: torch.Tensor, p: torch.Tensor, mask_id: int):
    """The exact denoiser: logits = log p(x0^i = v | z_t), by enumeration of every sequence
    consistent with the clean tokens of z_t, tabulated once for all K^L states z_t.  It ignores t
    (absorbing posteriors do not depend on it) and ``params``, and puts -inf on the mask id."""
    K, L = mask_id + 1, seqs.shape[1]
    states = torch.tensor(list(itertools.product(range(K), repeat=L)))  # [K^L, L], lexicographic
    consistent = ((states[:, None, :] == mask_id) | (states[:, None, :] == seqs[None])).all(-1)  # [K^L, N]
    w = consistent * p
    onehot = torch.nn.functional.one_hot(seqs, K).double()  # [N, L, K]
    table = torch.log(torch.einsum("zn,nlk->zlk", w, onehot) / w.sum(-1)[:, None, None])  # [K^L, L, K]
    place = K ** torch.arange(L - 1, -1, -1)

    def apply(params, zt, t):
        return table[(zt * place).sum(-1)]

    return apply


def entropy(p: torch.Tensor) -> float:
    return float(-(p * p.log()).sum())


def exact_bound(T, seqs, p, apply, mask_id=3):
    """E_{x0~p} L_vb(x0) in nats with every expectation exact: x0 weighted by p, every t, and every
    mask pattern of z_t weighted by its probability (u = +1 masks a token, u = -1 keeps it)."""
    N, L = seqs.shape
    cfg = d3pm.D3PMConfig(T=T, process=Absorbing(n_symbols=mask_id))
    patterns = torch.tensor([[(m >> i) & 1 for i in range(L)] for m in range(2**L)])  # [P, L]
    alpha_bar = alpha_bars_from_betas(d3pm_absorbing_betas(T))
    total = 0.0
    for t in range(1, T + 1):
        n_masked = patterns.sum(-1)
        p_pattern = (1 - alpha_bar[t]) ** n_masked * alpha_bar[t] ** (L - n_masked)  # [P]
        x0 = seqs.repeat_interleave(len(patterns), 0)
        u = (2 * patterns - 1).float().repeat(N, 1)
        vb, _ = d3pm.step_bound(cfg).terms(apply, None, x0, torch.full((len(x0),), t), u)
        total += float((vb.double().view(N, -1) * p_pattern * p[:, None]).sum())
    return total


def leave_one_out(seqs, p, process, zt, alpha):
    """For every x0 in seqs and position i: p(x0) prod_{j != i} q_t(z_t^j | x0^j), [B, N, L], and the
    per-token marginals q_t(. | x0^i) [B, N, L, K], by enumeration (alpha: [B] float64)."""
    K, L = process.K, seqs.shape[1]
    onehot = torch.nn.functional.one_hot(seqs, K).double()  # [N, L, K]
    per_token = mixing.transition(process.prior(), onehot[None], alpha[:, None, None, None])  # [B, N, L, K]
    lik = per_token.gather(-1, zt[:, None, :, None].expand(-1, len(seqs), L, 1)).squeeze(-1)  # [B, N, L]
    others = torch.stack([lik[..., [j for j in range(L) if j != i]].prod(-1) for i in range(L)], -1)
    return p[None, :, None] * others, per_token


def exact_uniform_apply(seqs, p, process, alpha_of_input, sees_own_token=False):
    """The exact x0 network of uniform diffusion: logits = log p(x0^i | z_t^{-i}), the posterior of each
    token given the others (the token's own noisy value enters through the reverse step itself).
    ``alpha_of_input`` maps the network's time input to alpha_t.  ``sees_own_token``: the posterior
    given all of z_t instead, p(x0^i | z_t), which is the wrong input to the reverse step."""

    def apply(params, zt, t):
        weights, per_token = leave_one_out(seqs, p, process, zt, alpha_of_input(t.double()))
        if sees_own_token:
            weights = weights * per_token.gather(-1, zt[:, None, :, None].expand(-1, len(seqs), -1, 1)).squeeze(-1)
        post = torch.einsum("bnl,nlk->blk", weights, torch.nn.functional.one_hot(seqs, process.K).double())
        return torch.log(post / post.sum(-1, keepdim=True))

    return apply


def exact_log_ratios(seqs, p, process, zt, alpha):
    """log q_t(z^{i <- y}) / q_t(z) for every position i and symbol y, [B, L, K], by enumeration."""
    weights, per_token = leave_one_out(seqs, p, process, zt, alpha)
    neighbours = torch.einsum("bnl,bnlk->blk", weights, per_token)  # q_t(z^{i <- y})
    return neighbours.log() - neighbours.gather(-1, zt[..., None]).log()


def exact_ratio_apply(seqs, p, cfg):
    """A "network" whose log ratios, as ``readout.log_ratios`` reads them, are the exact ones: it is
    fed sigma_t and returns the exact log ratios minus the reader's scale."""
    n = cfg.process.n_symbols

    def apply(params, zt, sigma):
        alpha = torch.exp(-sigma.double())
        logits = exact_log_ratios(seqs, p, cfg.process, zt, alpha)
        if cfg.scale_by_sigma:
            logits = logits - (torch.log(alpha / (1 - alpha)) - math.log(n))[:, None, None]
        return logits

    return apply


def loss_of_each_sequence(method, apply, seqs, cfg, n_batches=40, batch=500):
    """A method's training loss on batches of one repeated x0 (its own noise, t stratified over each
    batch where it does so): per x0, the mean over batches in nats per sequence and its standard error
    (batches are independent)."""
    g = torch.Generator().manual_seed(0)
    L = seqs.shape[1]
    values = torch.empty(len(seqs), n_batches, dtype=torch.float64)
    for i, x in enumerate(seqs):
        x0 = x.expand(batch, L)
        for b in range(n_batches):
            values[i, b] = L * method.loss(apply, None, x0, method.noise(g, x0, cfg), cfg=cfg)[0]
    return values.mean(1), values.std(1) / math.sqrt(n_batches)
