"""Muon and the chained optimizer: Newton-Schulz against the SVD, the update against its equations and
torch.optim.Muon, and a Muon run resumed from a checkpoint against an uninterrupted one."""

import dataclasses
import math
import shutil

import pytest
import torch

from nanodd.config import TrainConfig
from nanodd.methods import mdlm
from nanodd.model import DiT, DiTConfig
from nanodd.shell import dist
from nanodd.shell.checkpoint import CheckpointError, Checkpoints
from nanodd.shell.log import Log
from nanodd.shell.optim import NS_COEFFICIENTS, Chained, Muon, build_optimizer, orthogonalize
from nanodd.shell.trainer import Trainer, lr_at, train
from test_seam import tiny


@pytest.mark.parametrize("shape", [(12, 20), (20, 12)])
def test_orthogonalize_keeps_the_singular_vectors_and_maps_each_singular_value_by_the_quintic(shape):
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=g, dtype=torch.float64))
    k = min(shape)
    S = torch.logspace(-0.5, 1, k, dtype=torch.float64)  # a spread of singular values, the largest 30x the least
    G = U[:, :k] @ torch.diag(S) @ V[:, :k].T
    X = orthogonalize(G)
    D = U[:, :k].T @ X @ V[:, :k]  # diagonal iff X = U f(S) V^T
    assert (D - torch.diag(torch.diagonal(D))).abs().max() < 1e-12
    assert torch.allclose(X, U[:, :k] @ D @ V[:, :k].T, atol=1e-12)  # nothing outside G's row and column spaces
    a, b, c = NS_COEFFICIENTS
    x = S / G.norm()
    for _ in range(5):
        x = a * x + b * x**3 + c * x**5
    assert torch.allclose(torch.diagonal(D), x, rtol=1e-10, atol=0)
    assert x.min() > 0.68 and x.max() < 1.21  # what the docstring promises for σ / ||G||_F ≥ 2e-3


def test_two_muon_steps_follow_the_equations_and_agree_with_torch_muon():
    g = torch.Generator().manual_seed(1)
    W0, grads = torch.randn(16, 24, generator=g), [torch.randn(16, 24, generator=g) for _ in range(2)]
    lr, wd, mu = 0.01, 0.1, 0.95

    def run(optimizer_of):
        W = torch.nn.Parameter(W0.clone())
        opt = optimizer_of([W])
        for grad in grads:
            W.grad = grad.clone()
            opt.step()
        return W.detach()

    ours = run(lambda ps: Muon(ps, lr=lr, weight_decay=wd, momentum=mu))
    W, B, scale = W0.clone(), torch.zeros_like(W0), 0.2 * math.sqrt(24)
    for grad in grads:
        B = mu * B + grad
        W = (1 - lr * wd) * W - lr * scale * orthogonalize(grad + mu * B)
    torch.testing.assert_close(ours, W, rtol=0, atol=1e-6)
    theirs = run(lambda ps: torch.optim.Muon(ps, lr=lr, weight_decay=wd, momentum=mu, adjust_lr_fn="match_rms_adamw"))
    step = (ours - W0).norm()
    assert (ours - theirs).norm() < 0.02 * step  # torch's Newton-Schulz runs in bf16
    assert step > 0.5 * lr * scale  # the update is not empty


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest_and_the_state_numbers_every_parameter():
    model = DiT(DiTConfig(vocab_size=28, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0))
    opt = build_optimizer(model, TrainConfig(optimizer="muon"))
    assert isinstance(opt, Chained) and isinstance(opt.optimizers[1], Muon)
    name = {p: n for n, p in model.named_parameters()}
    muon = {name[p] for g in opt.optimizers[1].param_groups for p in g["params"]}
    matrices = ("attn_qkv.weight", "attn_out.weight", "mlp.0.weight", "mlp.2.weight", "adaLN_modulation.weight")
    assert muon == {f"blocks.{i}.{m}" for i in range(2) for m in matrices}
    adamw = {name[p] for g in opt.optimizers[0].param_groups for p in g["params"]}
    assert adamw == set(name.values()) - muon and "vocab_embed.weight" in adamw
    model(torch.zeros(2, 8, dtype=torch.long), torch.full((2,), 0.5)).sum().backward()
    opt.step()
    state = opt.state_dict()
    assert sorted(state["state"]) == list(range(len(name)))  # one number per parameter, as one optimizer gives
    twin = build_optimizer(model, TrainConfig(optimizer="muon"))
    twin.load_state_dict(state)
    assert all(
        torch.equal(twin.state_dict()["state"][i][k], v)
        for i, s in state["state"].items()
        for k, v in s.items()
        if isinstance(v, torch.Tensor)
    )


def test_a_muon_run_resumed_from_a_checkpoint_is_bitwise_the_uninterrupted_one(corpus, tmp_path):
    cfg = tiny(corpus, tmp_path / "whole", mdlm.MDLMConfig(), max_iters=6, eval_interval=3, optimizer="muon")
    train(cfg)
    shutil.copytree(tmp_path / "whole", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "6")
    assert Checkpoints(tmp_path / "cut" / "checkpoints", is_main=False).steps() == [3]
    resumed = tiny(corpus, tmp_path / "cut", mdlm.MDLMConfig(), max_iters=6, eval_interval=3, optimizer="muon")
    train(dataclasses.replace(resumed, train=dataclasses.replace(resumed.train, resume=True)))
    a = Checkpoints(tmp_path / "whole" / "checkpoints", is_main=False).restore(6)[0]
    b = Checkpoints(tmp_path / "cut" / "checkpoints", is_main=False).restore(6)[0]
    for part in ("params", "ema", "opt"):
        assert a[part].keys() == b[part].keys() and all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert any(k.endswith(".momentum_buffer") for k in a["opt"]) and any(k.endswith(".exp_avg_sq") for k in a["opt"])
    adamw = dataclasses.replace(resumed.train, resume=True, optimizer="adamw", max_iters=9)
    with pytest.raises(CheckpointError, match="was trained with --train.optimizer muon, but this run asks for adamw"):
        train(dataclasses.replace(resumed, train=adamw))


def test_the_trainer_sets_muons_lr_to_its_scale_times_the_schedule_and_adamws_to_the_schedule(corpus, tmp_path):
    cfg = tiny(corpus, tmp_path / "run", mdlm.MDLMConfig(), optimizer="muon", muon_lr_scale=2.5)
    trainer = Trainer(cfg, dist.setup("cpu"), Log(None, True))
    for _ in range(3):
        trainer.train_step()
    adamw, muon = trainer.state.optimizer.optimizers
    expected = lr_at(2, cfg.train)
    assert [g["lr"] for g in adamw.param_groups] == [expected, expected]
    assert muon.param_groups[0]["lr"] == 2.5 * expected
