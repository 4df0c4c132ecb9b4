"""The seam between a method and the rest: every piece satisfies its protocol, a method written
outside nanodd trains through the unmodified shell, losses compose, and a loss sees the model's own
parameter names in every mode (eager, compiled, DDP, DDP + compiled)."""

import functools
import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import toy_method
import toy_sampler
from experiments import text8
from nanodd.config import Config, DataConfig, TrainConfig, from_dict, to_dict
from nanodd.functional import make_apply, params_of
from nanodd.methods import METHODS, d3pm, mdlm, register
from nanodd.model import DiT, DiTConfig
from nanodd.processes import PROCESSES
from nanodd.protocols import Integrand, Method, Process, Sampler, Slot, mismatches
from nanodd.samplers import SAMPLERS, register as register_sampler
from nanodd.shell import dist
from nanodd.shell.workflows import generate, load_checkpoint
from nanodd.shell.log import Log
from nanodd.shell.trainer import Trainer, train
from test_train import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_method_process_and_sampler_satisfies_its_protocol():
    assert {"d3pm", "mdlm"} <= set(METHODS)
    for name, method in METHODS.items():
        assert mismatches(method, Method) == [], name
        cfg = method.Config()
        assert mismatches(method.bound(cfg), Integrand) == [], name
        assert mismatches(method.diffusion(cfg).process, Process) == [], name
    assert PROCESSES and all(mismatches(cls(), Process) == [] for cls in PROCESSES)
    assert SAMPLERS and all(mismatches(s, Sampler) == [] for s in SAMPLERS.values())


def test_registering_a_method_that_breaks_the_protocol_names_the_problem():
    class Broken:
        __name__ = "broken"
        Config = toy_method.ToyConfig
        diffusion, noise = toy_method.diffusion, toy_method.noise

        @staticmethod
        def loss(apply, params, x0):
            return x0

    with pytest.raises(TypeError, match=r"loss\('apply', 'params', 'x0'\) should take .*; no 'bound'"):
        register("broken", Broken)
    assert "broken" not in METHODS


def test_registering_a_sampler_that_breaks_the_protocol_names_the_problem():
    class Broken:
        Options, SUMMARY = toy_sampler.Options, toy_sampler.SUMMARY
        step = toy_sampler.step

    with pytest.raises(TypeError, match=r"sampler 'broken' \(Broken\) does not satisfy .*: no 'sample'"):
        register_sampler("broken", Broken)
    assert "broken" not in SAMPLERS


def tiny(corpus, out_dir, method, **train):
    defaults = dict(
        batch_size=8,
        grad_accum=1,
        max_iters=20,
        lr=3e-3,
        warmup_iters=2,
        eval_interval=1000,
        eval_batches=1,
        log_interval=5,
        ema_decay=0.9,
        dtype="fp32",
        device="cpu",
        out_dir=str(out_dir),
    )
    return Config(
        model=DiTConfig(d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0),
        method=method,
        data=DataConfig(source=str(corpus), data_dir=str(out_dir.parent / "data"), seq_len=32),
        train=TrainConfig(**(defaults | train)),
    )


def test_a_method_from_outside_nanodd_trains_through_the_unmodified_shell(corpus, tmp_path):
    assert len(Path(toy_method.__file__).read_text().splitlines()) <= 30
    register("toy", toy_method)
    try:
        cfg = tiny(corpus, tmp_path / "run", toy_method.ToyConfig(rate=0.3))
        last = train(cfg)
        assert last["step"] == 20 and last["val_bpc"] > 0
        ckpt = load_checkpoint(tmp_path / "run")  # its config names a method registered at run time
        assert ckpt.cfg.method == toy_method.ToyConfig(rate=0.3) and from_dict(to_dict(cfg)) == cfg
        assert len(generate(ckpt, steps=32).texts[0]) == 32
    finally:
        METHODS.pop("toy")
    library = [*ROOT.glob("nanodd/**/*.py"), *ROOT.glob("experiments/*.py")]
    assert not [p for p in library if "toy_method" in p.read_text() or "ToyConfig" in p.read_text()]


def tiny_dit():
    torch.manual_seed(0)
    model = DiT(DiTConfig(vocab_size=28, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_a_sampler_from_outside_nanodd_is_picked_on_the_command_line_after_one_register_call(corpus, tmp_path, capsys):
    assert len(Path(toy_sampler.__file__).read_text().splitlines()) <= 30
    train(tiny(corpus, tmp_path / "run", mdlm.MDLMConfig()))
    capsys.readouterr()
    register_sampler("left-to-right", toy_sampler)
    try:
        with pytest.raises(SystemExit):
            text8.main(["sample", "--help"])
        help_text = " ".join(capsys.readouterr().out.replace("│", " ").split())  # wherever the lines wrap
        assert "left-to-right (left to right" in help_text
        text8.main(
            [
                "sample",
                str(tmp_path / "run"),
                "--sample.sampler",
                "left-to-right",
                "--sample.left-to-right.per-step",
                "4",
                "--sample.steps",
                "8",
                "--sample.out",
                str(tmp_path / "sample.txt"),
            ]
        )
    finally:
        SAMPLERS.pop("left-to-right")
    assert "1 sample(s), 8 network evaluations" in capsys.readouterr().err  # 4 of the 32 tokens per call
    text = (tmp_path / "sample.txt").read_text()
    assert len(text) == 33 and "_" not in text
    library = [*ROOT.glob("nanodd/**/*.py"), *ROOT.glob("experiments/*.py")]
    assert not [p for p in library if "toy_sampler" in p.read_text()]


D3PM, MDLM = d3pm.D3PMConfig(T=100), mdlm.MDLMConfig()


def mixed_noise(gen, x0, slot):
    return {"d3pm": d3pm.noise(gen, x0, D3PM, slot), "mdlm": mdlm.noise(gen, x0, MDLM, slot)}


def mixed_loss(apply, params, x0, noise):
    """MDLM's NELBO + 0.1 D3PM's hybrid loss + an L2 penalty on the embedding, addressed by name."""
    a, aux_a = mdlm.loss(apply, params, x0, noise["mdlm"], cfg=MDLM)
    b, aux_b = d3pm.loss(apply, params, x0, noise["d3pm"], cfg=D3PM)
    penalty = params["vocab_embed.weight"].square().sum()
    return a + 0.1 * b + 1e-3 * penalty, {"bpt": aux_a["bpt"], "d3pm_bpt": aux_b["bpt"], "penalty": penalty}


def test_a_composed_loss_differentiates_as_the_sum_of_its_parts():
    model = tiny_dit()
    apply, params = make_apply(model), {k: v.detach() for k, v in params_of(model).items()}
    x0 = torch.randint(0, 27, (4, 16), generator=torch.Generator().manual_seed(0))
    noise = mixed_noise(torch.Generator().manual_seed(1), x0, Slot())
    grad = torch.func.grad(lambda ps: mixed_loss(apply, ps, x0, noise)[0])(params)
    parts = [
        torch.func.grad(lambda ps: mdlm.loss(apply, ps, x0, noise["mdlm"], cfg=MDLM)[0])(params),
        torch.func.grad(lambda ps: d3pm.loss(apply, ps, x0, noise["d3pm"], cfg=D3PM)[0])(params),
        torch.func.grad(lambda ps: ps["vocab_embed.weight"].square().sum())(params),
    ]
    for k in params:
        torch.testing.assert_close(grad[k], parts[0][k] + 0.1 * parts[1][k] + 1e-3 * parts[2][k], msg=k)
    assert grad["vocab_embed.weight"].abs().sum() > 0 and parts[1]["blocks.1.mlp.0.weight"].abs().sum() > 0


def test_a_composed_loss_trains_through_the_shell_and_its_parts_are_logged(corpus, tmp_path):
    train(tiny(corpus, tmp_path / "run", MDLM, max_iters=10), loss=mixed_loss, noise=mixed_noise)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "d3pm_bpt" in r]
    assert [r["step"] for r in logged] == [5, 10] and all(r["penalty"] > 0 for r in logged)


def recording(names: list):
    """MDLM's loss, noting the parameter names it is handed."""

    def loss(apply, params, x0, noise):
        names.append(sorted(params))
        return mdlm.loss(apply, params, x0, noise, cfg=MDLM)

    return loss


def fast_compile(monkeypatch=None):
    """torch.compile with dynamo's graph capture but no code generation: the same wrapper
    (``_orig_mod.`` names) at a fraction of inductor's start-up cost on CPU."""
    compiled = functools.partial(torch.compile, backend="eager")
    if monkeypatch is None:
        torch.compile = compiled
    else:
        monkeypatch.setattr(torch, "compile", compiled)


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_the_loss_sees_the_models_own_names_in_one_process(corpus, tmp_path, monkeypatch, compile):
    fast_compile(monkeypatch)
    names = []
    trainer = Trainer(
        tiny(corpus, tmp_path / "run", MDLM, compile=compile), dist.setup("cpu"), Log(None, True), loss=recording(names)
    )
    before = {k: v.detach().clone() for k, v in params_of(trainer.state.model).items()}
    trainer.train_step()
    assert type(trainer.net).__name__ == ("OptimizedModule" if compile else "DiT")
    assert names == [sorted(before)] and not any(k.startswith(("module.", "_orig_mod.")) for k in names[0])
    assert not torch.equal(before["adaLN_modulation.weight"], trainer.state.model.adaLN_modulation.weight)


def ddp_worker(rank, world, port, cfg_dict, compile, real_compile, out):
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    if compile and not real_compile:
        fast_compile()
    names = []
    cfg = from_dict(cfg_dict)
    trainer = Trainer(cfg, dist.setup("cpu"), Log(None, rank == 0), loss=recording(names))
    times = [trainer.micro_batch(m)[1]["t"] for m in range(cfg.train.grad_accum)]
    for _ in range(2):
        trainer.train_step()
    torch.save(
        {
            "names": names,
            "times": times,
            "wrapper": type(trainer.net.module).__name__,
            "params": {k: v.detach() for k, v in params_of(trainer.state.model).items()},
        },
        f"{out}/rank{rank}.pt",
    )
    del trainer  # its DDP wrapper holds the process group: destroy it now, not at interpreter exit
    dist.teardown()


def ddp_run(corpus, tmp_path, compile, real_compile=False):
    cfg = tiny(corpus, tmp_path / "run", MDLM, grad_accum=2, compile=compile)
    mp.spawn(ddp_worker, args=(2, free_port(), to_dict(cfg), compile, real_compile, str(tmp_path)), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("compile", [False, True], ids=["ddp", "ddp-compiled"])
def test_under_ddp_the_loss_sees_the_models_own_names_ranks_agree_and_times_tile(corpus, tmp_path, compile):
    r0, r1 = ddp_run(corpus, tmp_path, compile)
    assert r0["wrapper"] == ("OptimizedModule" if compile else "DiT")
    own = sorted(params_of(tiny_dit()))
    assert r0["names"] == r1["names"] == [own] * 4  # 2 steps x 2 micro-steps, no 'module.' or '_orig_mod.'
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), f"{k} differs across ranks"
    times = torch.cat(r0["times"] + r1["times"])  # 2 ranks x 2 micro-steps x 8 sequences
    assert sorted(torch.ceil(times * 32).long().tolist()) == list(range(1, 33))


@pytest.mark.slow
def test_under_ddp_with_inductor_the_loss_sees_the_models_own_names(corpus, tmp_path):
    r0, r1 = ddp_run(corpus, tmp_path, compile=True, real_compile=True)
    assert r0["names"] == r1["names"] == [sorted(params_of(tiny_dit()))] * 4
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
