"""experiments/compose.py: the composed loss is the weighted sum of its parts (values, aux, gradients),
and the example trains through the unmodified shell, reporting each part's bound."""

import json
import math

import pytest
import torch

from experiments import compose
from nanodd.config import DataConfig
from nanodd.data.prepare import prepare_data
from nanodd.functional import make_apply, params_of
from nanodd.methods import method_of
from nanodd.methods.d3pm import D3PMConfig
from nanodd.methods.mdlm import MDLMConfig
from nanodd.model import DiT, DiTConfig
from nanodd.protocols import Slot
from nanodd.schedules import Cosine, LogLinear

TINY_ARGS = ["--model.d-model", "32", "--model.n-heads", "2", "--model.n-blocks", "1", "--model.cond-dim", "16"]


@pytest.mark.parametrize(
    "base, extra",
    [
        (MDLMConfig(schedule=LogLinear(eps=1e-3)), D3PMConfig(T=50, hybrid_coeff=0.05)),  # two methods
        (MDLMConfig(schedule=LogLinear(eps=1e-3)), MDLMConfig(schedule=Cosine())),  # one method, two schedules
    ],
)
def test_the_composed_gradient_is_the_weighted_sum_of_the_parts_gradients(base, extra):
    torch.manual_seed(0)
    model = DiT(DiTConfig(vocab_size=28, d_model=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # leave adaLN-Zero so every block gets a gradient
    apply, params, lam = make_apply(model), params_of(model), 0.3
    x0 = torch.randint(0, 27, (4, 24), generator=torch.Generator().manual_seed(1))
    loss, noise = compose.compose({"base": compose.method_part(base), "extra": compose.method_part(extra, lam)})
    xi = noise(torch.Generator().manual_seed(2), x0, Slot())

    gen = torch.Generator().manual_seed(2)  # the parts' own draws, in the composed noise's order
    xi_base, xi_extra = (method_of(c).noise(gen, x0, c, Slot()) for c in (base, extra))
    part = lambda cfg, xi: lambda ps: method_of(cfg).loss(apply, ps, x0, xi, cfg=cfg)  # noqa: E731
    g_base = torch.func.grad(part(base, xi_base), has_aux=True)(params)[0]
    g_extra = torch.func.grad(part(extra, xi_extra), has_aux=True)(params)[0]
    g, aux = torch.func.grad(lambda ps: loss(apply, ps, x0, xi), has_aux=True)(params)

    assert set(g) == set(params)
    for k in params:
        torch.testing.assert_close(g[k], g_base[k] + lam * g_extra[k], rtol=1e-4, atol=1e-7, msg=k)
    assert sum(g_extra[k].norm() for k in params) > 0.1  # lambda's term really moves the gradient
    (value_base, aux_base), (value_extra, aux_extra) = part(base, xi_base)(params), part(extra, xi_extra)(params)
    torch.testing.assert_close(loss(apply, params, x0, xi)[0], value_base + lam * value_extra)
    torch.testing.assert_close(aux["base_bpt"], aux_base["bpt"])
    torch.testing.assert_close(aux["extra_bpt"], aux_extra["bpt"])
    assert torch.equal(aux["bpt"], aux["base_bpt"])


def test_the_example_trains_20_steps_and_reports_each_parts_bound(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    compose.cli(
        [
            "mdlm-demo",
            *TINY_ARGS,
            "--data.source",
            str(corpus),
            "--data.data-dir",
            str(tmp_path / "data"),
            "--data.seq-len",
            "32",
            "--train.batch-size",
            "8",
            "--train.max-iters",
            "20",
            "--train.log-interval",
            "1",
            "--train.eval-interval",
            "20",
            "--train.eval-batches",
            "2",
            "--train.warmup-iters",
            "2",
            "--train.lr",
            "1e-2",
            "--train.dtype",
            "fp32",
            "--train.device",
            "cpu",
            "--train.out-dir",
            str(run),
            "--compose.lam",
            "0.5",
            "--compose.eval-chunks",
            "32",
            "extra:d3pm",
            "--extra.T",
            "100",
        ]
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 21))
    for r in steps:
        assert r["bpt"] == r["base_bpt"] and 0 < r["extra_bpt"] < 10 and {"extra_vb", "extra_ce"} <= set(r)
    assert records[-1] == {
        "step": 20,
        "val_bpc": pytest.approx(records[-1]["val_bpc"]),
        "val_bpb": records[-1]["val_bpc"],
    }
    err = capsys.readouterr().err
    for name in ("base (MDLMConfig)", "extra (D3PMConfig)"):
        line = next(line for line in err.splitlines() if line.startswith(name))
        assert "validation bound" in line and " over 32 chunks" in line
        bpc, se = map(float, line.split("bound: ")[1].split(" bits")[0].split(" +- "))
        assert bpc + 3 * se < math.log2(27)  # it learnt: an untrained network's bound is log2(27) bits/char


@pytest.mark.parametrize(
    "args, message",
    [
        (["--compose.lam", "-1"], "--compose.lam must be >= 0"),
        (
            ["extra:sedd", "extra.process:uniform"],
            "the extra method's process has 27 ids but the base's network has 28",
        ),
        (["extra:ar"], "causal"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(monkeypatch, tmp_path, capsys, args, message):
    monkeypatch.setenv("NANODD_CACHE", str(tmp_path / "cache"))
    prepare_data(DataConfig())  # the corpus is ready, as after any first run: its progress line is not the error's
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        compose.cli(["mdlm-demo", *TINY_ARGS, "--train.out-dir", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "run").exists()
