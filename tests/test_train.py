"""The training shell: DDP equivalence on 2 gloo processes, a run that learns, the CLI and its errors."""

import dataclasses
import json
import os
import re
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

from benchmarks import sampling as sampling_benchmark
from experiments import text8
from nanodd.config import Config, DataConfig, TrainConfig, from_dict, network_config, to_dict
from nanodd.functional import params_of
from nanodd.methods.d3pm import D3PMConfig
from nanodd.model import DiTConfig
from nanodd.shell import dist
from nanodd.shell.log import Log
from nanodd.shell.trainer import Trainer, lr_at, train
from nanodd.shell.workflows import evaluate_checkpoint, load_checkpoint


def tiny(corpus, out_dir, **train):
    defaults = dict(
        batch_size=8,
        grad_accum=1,
        max_iters=4,
        lr=3e-3,
        warmup_iters=2,
        eval_interval=1000,
        eval_batches=2,
        log_interval=2,
        ema_decay=0.9,
        dtype="fp32",
        device="cpu",
        out_dir=str(out_dir),
    )
    return Config(
        model=DiTConfig(d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0),
        method=D3PMConfig(T=100),
        data=DataConfig(source=str(corpus), data_dir=str(out_dir.parent / "data"), seq_len=32),
        train=TrainConfig(**(defaults | train)),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank, world, port, cfg_dict, steps, out):
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    runtime = dist.setup("cpu")
    trainer = Trainer(from_dict(cfg_dict), runtime, Log(None, rank == 0))
    for _ in range(steps):
        trainer.train_step()
    x0, _ = trainer.micro_batch(0)
    torch.save(
        {"params": {k: v.detach() for k, v in params_of(trainer.state.model).items()}, "x0": x0}, f"{out}/rank{rank}.pt"
    )
    del trainer  # its DDP wrapper holds the process group: destroy it now, not at interpreter exit
    dist.teardown()


class GlobalBatch(Trainer):
    """One process that sees, at every micro-step, the union of what every rank would see."""

    world = 2

    def micro_batch(self, micro, rank=None):
        parts = [Trainer.micro_batch(self, micro, r) for r in range(self.world)]
        noise = {k: torch.cat([n[k] for _, n in parts]) for k in parts[0][1]}
        return torch.cat([x for x, _ in parts]), noise


@pytest.mark.parametrize("dtype, tolerance", [("fp32", 1e-6), ("bf16", 2e-3)])
def test_ddp_two_gloo_ranks_stay_identical_and_match_one_process_on_the_global_batch(
    corpus, tmp_path, dtype, tolerance
):
    """Bit-identical ranks in fp32 and on the bf16 fast path; against one process on the global batch the
    bf16 matmuls round differently (other batch shapes), hence the looser match there."""
    cfg = tiny(corpus, tmp_path / "run", grad_accum=2, dtype=dtype)
    steps = 3
    mp.spawn(ddp_worker, args=(2, free_port(), to_dict(cfg), steps, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert not torch.equal(r0["x0"], r1["x0"])  # each rank trained on different crops
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), f"{k} differs across ranks"

    single = GlobalBatch(cfg, dist.setup("cpu"), Log(None, True))
    initial = {k: v.detach().clone() for k, v in params_of(single.state.model).items()}
    for _ in range(steps):
        single.train_step()
    moved = 0
    for k, v in params_of(single.state.model).items():
        torch.testing.assert_close(r0["params"][k], v.detach(), rtol=10 * tolerance, atol=tolerance, msg=k)
        moved += not torch.equal(v.detach(), initial[k])
    assert moved > 0.8 * len(initial)


@pytest.mark.parametrize(
    "preset, steps",
    [("demo", 300), ("sedd-absorb-demo", 300), ("sedd-uniform-demo", 1000), ("udlm-demo", 800), ("ar-demo", 300)],
)
def test_a_short_run_learns(corpus, tmp_path, preset, steps):
    """Each demo preset's method (MDLM's is in test_mdlm) and the AR judge learn on a tiny model;
    uniform noise hides more of the text at every t, so its methods get more steps."""
    cfg = tiny(
        corpus,
        tmp_path / "run",
        max_iters=steps,
        log_interval=20,
        lr=3e-3,
        warmup_iters=20,
        batch_size=16,
        eval_interval=steps,
    )
    cfg = dataclasses.replace(cfg, method=text8.PRESETS[preset][1].method)
    last = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    bound = [r["bpt"] for r in records if "bpt" in r]
    assert bound[-1] < bound[0] - 0.7, bound  # bits per char, averaged over 20 steps each
    assert last["val_bpc"] < 4.0  # below the ~4.1 bits of a unigram model of English
    assert (tmp_path / "run" / "checkpoints" / str(steps)).is_dir()


def test_a_run_without_ema_is_loaded_and_evaluated_with_its_trained_weights(corpus, tmp_path):
    """ema_decay 0 keeps no EMA (its saved EMA is the initial weights): load_checkpoint gives the trained
    weights, so the evaluator scores the run that trained (it once scored the untrained network)."""
    last = train(tiny(corpus, tmp_path / "run", ema_decay=0.0, max_iters=40, eval_interval=40, lr=1e-2))
    loaded, raw = load_checkpoint(tmp_path / "run"), load_checkpoint(tmp_path / "run", ema=False)
    assert all(torch.equal(v, raw.params[k]) for k, v in loaded.params.items())
    bound = evaluate_checkpoint(loaded, max_chunks=8)["results"]["bpc"]
    assert bound < 4.2 and abs(bound - last["val_bpc"]) < 0.3, (bound, last["val_bpc"])  # untrained: ~4.8


def test_lr_schedule_warms_up_then_decays_to_min():
    tc = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    lrs = [lr_at(s, tc) for s in range(111)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert lrs[10] == pytest.approx(1.0) and lrs[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


# ---- the CLI ----------------------------------------------------------------------------------


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["text8", *args])
    try:
        text8.main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["prepare"],
        ["train"],
        ["train", "d3pm-text8"],
        ["train", "d3pm-text8-8gpu"],
        ["train", "demo"],
        ["train", "sedd-uniform-text8"],
        ["sample"],
        ["demo"],
        ["demo", "udlm-demo"],
    ],
)
def test_help_of_every_subcommand(monkeypatch, capsys, args):
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--help")
    assert code == 0 and "usage" in out


def test_presets_follow_the_nanodd_recipe():
    cfg = text8.PRESETS["d3pm-text8"][1]
    m, t = cfg.model, cfg.train
    assert (m.d_model, m.n_heads, m.n_blocks, m.cond_dim, m.dropout) == (768, 12, 12, 128, 0.025)
    assert (cfg.method.T, cfg.method.hybrid_coeff, cfg.data.seq_len) == (1000, 0.05, 256)
    assert (t.batch_size, t.grad_accum, t.lr, t.min_lr, t.warmup_iters, t.max_iters) == (
        256,
        4,
        1e-3,
        1e-5,
        2500,
        500_000,
    )
    assert (t.weight_decay, t.beta1, t.beta2, t.grad_clip) == (0.1, 0.9, 0.98, 0.1) and t.ema_decay > 0
    assert text8.PRESETS["d3pm-text8-8gpu"][1] == dataclasses.replace(
        cfg, train=dataclasses.replace(t, grad_accum=1, out_dir="runs/d3pm-text8-8gpu")
    )


@pytest.mark.parametrize("name, vocab", [("sedd-absorb-text8", 28), ("sedd-uniform-text8", 27), ("udlm-text8", 27)])
def test_sedd_and_udlm_presets_follow_their_papers(name, vocab):
    """Batch 512 of 256 characters, AdamW 3e-4, clipping at 1, EMA 0.9999, the DiT of d3pm-text8; the
    network's vocabulary follows the process (no mask id under uniform noise)."""
    cfg = text8.PRESETS[name][1]
    t = cfg.train
    assert (t.batch_size * t.grad_accum, cfg.data.seq_len, t.lr, t.grad_clip, t.ema_decay) == (
        512,
        256,
        3e-4,
        1.0,
        0.9999,
    )
    assert cfg.model == text8.PRESETS["d3pm-text8"][1].model and network_config(cfg).vocab_size == vocab


TINY_ARGS = [
    "--model.d-model",
    "32",
    "--model.n-heads",
    "2",
    "--model.n-blocks",
    "1",
    "--model.cond-dim",
    "16",
    "--data.seq-len",
    "32",
    "--train.batch-size",
    "4",
    "--train.max-iters",
    "3",
    "--train.warmup-iters",
    "1",
    "--train.eval-batches",
    "1",
    "--train.device",
    "cpu",
]


def test_demo_then_sample_end_to_end(monkeypatch, capsys, corpus, tmp_path):
    out = tmp_path / "run"
    common = ["--data.source", str(corpus), "--data.data-dir", str(tmp_path / "data"), "--train.out-dir", str(out)]
    code, stdout, err = run_cli(
        monkeypatch, capsys, "demo", *TINY_ARGS, *common, "--sample.batch-size", "2", "--sample.steps", "50"
    )
    assert code == 0, err
    assert "validation bound" in err and "masked]" in err  # progress and the (non-terminal) unmasking view
    assert len(stdout.split("\n\n")) == 2
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        "sample",
        str(out),
        "--sample.batch-size",
        "3",
        "--sample.out",
        str(tmp_path / "s.txt"),
        "--sample.top-p",
        "0.9",
        "--sample.metrics",
    )
    assert code == 0, err
    assert '"word_in_vocab"' in err and '"bigram_entropy_data"' in err
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert len(lines) == 3 and all(len(s) == 32 and set(s) <= set(" abcdefghijklmnopqrstuvwxyz") for s in lines)


def test_mdlm_demo_then_sample_and_evaluate_its_own_bound(monkeypatch, capsys, corpus, tmp_path):
    out = tmp_path / "run"
    common = ["--data.source", str(corpus), "--data.data-dir", str(tmp_path / "data"), "--train.out-dir", str(out)]
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        "demo",
        "mdlm-demo",
        *TINY_ARGS,
        *common,
        "--method.T",
        "50",
        "--sample.steps",
        "20",
        "--sample.no-live",
    )
    assert code == 0, err
    assert "validation bound" in err and len(stdout.split("\n\n")) == 2
    evaluate = ["evaluate", str(out), "--eval.max-chunks", "6", "--eval.device", "cpu"]
    code, stdout, err = run_cli(monkeypatch, capsys, *evaluate)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["T"] == 50 and report["estimator"] == "stratified" and report["results"]["n_chunks"] == 6
    code, stdout, err = run_cli(monkeypatch, capsys, *evaluate, "--eval.estimator", "continuous")
    assert code == 0 and json.loads(stdout)["T"] is None, err
    code, stdout, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "mdlm-demo",
        *TINY_ARGS,
        *common,
        "--train.resume",
        "--train.max-iters",
        "5",
        "method.schedule:cosine",
        "--method.T",
        "50",
    )
    assert code == 2 and "was trained with method" in err  # another schedule is another model


@pytest.mark.parametrize("preset", ["sedd-absorb-demo", "sedd-uniform-demo", "udlm-demo"])
def test_new_method_demos_train_sample_with_every_sampler_and_evaluate_their_bound(
    monkeypatch, capsys, corpus, tmp_path, preset
):
    out = tmp_path / "run"
    common = ["--data.source", str(corpus), "--data.data-dir", str(tmp_path / "data"), "--train.out-dir", str(out)]
    code, stdout, err = run_cli(
        monkeypatch, capsys, "demo", preset, *TINY_ARGS, *common, "--sample.steps", "20", "--sample.no-live"
    )
    assert code == 0, err
    assert "validation bound" in err and len(stdout.split("\n\n")) == 2  # the default sampler fits the network
    ratio_network = preset.startswith("sedd")
    for sampler in ("ancestral", "analytic", "euler"):
        code, stdout, err = run_cli(
            monkeypatch,
            capsys,
            "sample",
            str(out),
            "--sample.sampler",
            sampler,
            "--sample.steps",
            "16",
            "--sample.batch-size",
            "2",
            "--sample.no-live",
        )
        if sampler == "ancestral" and ratio_network:
            assert code == 2 and err.strip().splitlines() == [err.strip()] and "analytic or euler" in err
            continue
        assert code == 0, err
        texts = stdout.strip().split("\n\n")
        assert len(texts) == 2 and all(len(t) == 32 and set(t) <= set(" abcdefghijklmnopqrstuvwxyz") for t in texts)
        nfe = int(re.search(r"(\d+) network evaluations", err).group(1))
        assert 1 <= nfe <= 16 if preset == "sedd-absorb-demo" else nfe == 16  # uniform: every step may move
    evaluate = ["evaluate", str(out), "--eval.max-chunks", "6", "--eval.device", "cpu"]
    code, stdout, err = run_cli(monkeypatch, capsys, *evaluate, "--eval.n-t", "2")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["T"] is None and report["results"]["n_chunks"] == 6 and report["results"]["stderr"] > 0
    for estimator in ("exact", "elbo-vs-t"):
        code, _, err = run_cli(monkeypatch, capsys, *evaluate, "--eval.estimator", estimator)
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err


def test_every_masked_sampler_with_conditioning_and_the_judge_through_the_cli(monkeypatch, capsys, corpus, tmp_path):
    common = ["--data.source", str(corpus), "--data.data-dir", str(tmp_path / "data")]
    for preset, out in (("demo", "run"), ("ar-demo", "judge")):
        code, _, err = run_cli(
            monkeypatch, capsys, "train", preset, *TINY_ARGS, *common, "--train.out-dir", str(tmp_path / out)
        )
        assert code == 0, err
    run, judge = str(tmp_path / "run"), str(tmp_path / "judge")
    for sampler, steps in (("ancestral", "40"), ("first-hitting", None), ("confidence", "8"), ("remdm", "40")):
        args = [
            "sample",
            run,
            "--sample.sampler",
            sampler,
            "--sample.batch-size",
            "2",
            "--sample.no-live",
            "--sample.judge",
            judge,
            "--sample.infill",
            "the q___k brown f__",
            *(["--sample.steps", steps] if steps else []),
        ]
        code, stdout, err = run_cli(monkeypatch, capsys, *args)
        assert code == 0, err
        texts = stdout.strip().split("\n\n")
        assert len(texts) == 2 and all(t[:5] == "the q" and t[8:17] == "k brown f" for t in texts)
        scores = json.loads(err.strip().splitlines()[-1])
        assert scores["gen_bpc"] > 0 and len(scores["gen_bpc_per_sample"]) == 2 and "unigram_entropy" in scores
    code, stdout, err = run_cli(
        monkeypatch, capsys, "sample", run, "--sample.prefix", "the king", "--sample.no-live", "--sample.steps", "20"
    )
    assert code == 0 and stdout.startswith("the king"), err
    sampling_benchmark.main(sampling_benchmark.Options(run, judge=judge, batch=2, batches=1, single=1))
    table = capsys.readouterr().out.splitlines()
    rows = [line for line in table if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(sampling_benchmark.rows(1000)) and all(len(r.split("|")) == 11 for r in rows)
    assert rows[0].split("|")[2].strip() == "1000" and "1.0x" in rows[0]  # nanoDD's sampler calls at every step
    assert rows[0].split("|")[7:] == rows[1].split("|")[7:]  # the cache changes the cost, never the samples
    assert any(line.startswith(("Fastest at the reference's quality", "No row matches")) for line in table)
    for args, message in [
        (["sample", judge], "autoregressive judge"),
        (["sample", run, "--sample.judge", run], "not an autoregressive judge"),
        (["sample", run, "--sample.prefix", "The King"], "a-z and space"),
        (["sample", run, "--sample.prefix", "a", "--sample.infill", "b"], "not both"),
        (["sample", run, "--sample.sampler", "first-hitting", "--sample.steps", "10"], "no step count"),
        (["sample", run, "--sample.sampler", "remdm", "--sample.remdm.eta", "2"], "--sample.remdm.eta"),
    ]:
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)


def test_sampling_benchmark_verdict_picks_the_fastest_row_at_the_reference_quality():
    row = lambda label, s, bpc, words: dict(label=label, s_per_sample=s, gen_bpc=bpc, words=words)  # noqa: E731
    ref = row("reference", 10.0, 2.00, 0.50)
    close, faster_but_worse, fewer_words = (
        row("close", 2.0, 2.04, 0.505),
        row("worse", 0.5, 2.06, 0.5),
        row("w", 1.0, 2.0, 0.48),
    )
    assert "close, 5.0x less time" in sampling_benchmark.verdict([ref, close, faster_but_worse, fewer_words])
    assert sampling_benchmark.verdict([ref, faster_but_worse]).startswith("No row matches")


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "no-such-preset"], "no-such-preset"),
        (["train", "demo", "--train.no-such-field", "1"], "no-such-field"),
        (["train", "demo", *TINY_ARGS, "--train.batch-size", "0"], "--train.batch-size must be >= 1, got 0"),
        (["train", "demo", *TINY_ARGS, "--train.max-iters", "-5"], "--train.max-iters must be >= 1, got -5"),
        (["train", "demo", *TINY_ARGS, "--data.seq-len", "10000000"], "seq"),
        (["train", "demo", *TINY_ARGS, "--train.device", "cuda"], "no CUDA GPU"),
        (["train", "demo", *TINY_ARGS, "--model.vocab-size", "30"], "vocab-size must be 28"),
        (["train", "demo", *TINY_ARGS, "--method.process.n-symbols", "5"], "the data has 27 symbols"),
        (["train", "demo", *TINY_ARGS, "--method.T", "0"], "--method.T must be >= 1, got 0"),
        (["train", "mdlm-demo", *TINY_ARGS, "method.schedule:log-linear", "--method.schedule.eps", "2"], "eps"),
        (["train", "demo", *TINY_ARGS, "--data.source", "/no/such/file.txt"], "/no/such/file.txt"),
        (["sample", "/no/such/run"], "not found"),
        (["train", "demo", *TINY_ARGS, "--train.out-dir", "/dev/null/run"], "/dev/null/run"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(monkeypatch, capsys, tmp_path, args, message):
    if args[0] == "train":  # the case's own arguments come last and override these
        args = [
            *args[:2],
            "--data.source",
            "builtin",
            "--data.data-dir",
            str(tmp_path),
            "--train.out-dir",
            str(tmp_path / "run"),
            *args[2:],
        ]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_compile_without_a_compiler_is_refused(monkeypatch, capsys, corpus, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "demo",
        *TINY_ARGS,
        "--train.compile",
        "--data.source",
        str(corpus),
        "--data.data-dir",
        str(tmp_path),
        "--train.out-dir",
        str(tmp_path / "run"),
    )
    assert code == 2 and "C/C++ compiler" in err


def test_existing_checkpoints_are_not_overwritten_without_resume(monkeypatch, capsys, corpus, tmp_path):
    args = [
        "train",
        "demo",
        *TINY_ARGS,
        "--data.source",
        str(corpus),
        "--data.data-dir",
        str(tmp_path),
        "--train.out-dir",
        str(tmp_path / "run"),
    ]
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "--train.resume" in err


def test_metrics_log_drops_a_partial_last_record_before_appending(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo')  # killed mid-record
    log = Log(tmp_path, is_main=True)
    log.metrics({"step": 2})
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 1},
        {"step": 2},
    ]
