r"""Composing losses: train a weighted sum of two methods' objectives through the unmodified shell.

    python -m experiments.compose                                   # mdlm-demo's NELBO + 0.1 x D3PM's hybrid loss
    python -m experiments.compose mdlm-demo --compose.lam 1 extra:mdlm extra.schedule:cosine   # one method, two schedules
    python -m experiments.compose demo --train.max-iters 300 --compose.lam 0.5 extra:mdlm     # D3PM + MDLM

Every method's loss is a pure function of its parameters and its noise, so a weighted sum of losses
is again one, and the trainer's loss hook (``train(cfg, loss=..., noise=...)``) trains it with
EMA, checkpoints, DDP and compile, unchanged:

    L(theta; x0, xi) = L_base(theta; x0, xi_base) + lambda * L_extra(theta; x0, xi_extra),
    xi = (xi_base, xi_extra),  xi_base ~ noise_base(x0),  xi_extra ~ noise_extra(x0),

    grad_theta L = grad_theta L_base + lambda * grad_theta L_extra       (linearity; tests/test_compose.py).

Each part draws its own noise (its keys prefixed with the part's name) and reports its own
single-sample bound: the aux dict, so metrics.jsonl, carries ``base_bpt`` and ``extra_bpt`` (and the
parts' other terms, e.g. ``extra_vb``, ``extra_ce``); ``bpt`` is the base's, the bound validation
reports.  At the end both bounds are evaluated on the same validation chunks (mean +- standard error).

On absorbing noise the parts agree on what to learn: the exact denoiser p(x0 | z_t) depends only
on the unmasked tokens, not on t or the schedule, so D3PM's and MDLM's objectives (under any
schedule) share their optimum and a mixture only reweights the times the network practises on.
The parts must share the network: the same ids K, and both bidirectional.
"""

from __future__ import annotations

import dataclasses
import sys
from functools import partial
from typing import Annotated

import tyro

from experiments.cli import run
from experiments.presets import DEMOS, Preset, choice, variant
from nanodd import checks
from nanodd.config import Config, MethodConfig, with_symbols
from nanodd.data import load_tokenizer
from nanodd.data.prepare import prepare_data
from nanodd.methods import method_of
from nanodd.methods.d3pm import D3PMConfig
from nanodd.protocols import Noise
from nanodd.shell.workflows import evaluate_checkpoint, load_checkpoint
from nanodd.shell.trainer import Loss, NoiseFn, train

Part = tuple[float, Loss, NoiseFn]
"""(weight, loss, noise) of one term of a composed objective."""


def method_part(cfg, weight: float = 1.0) -> Part:
    """A registered method's loss and noise, with its config bound, as one weighted part."""
    method = method_of(cfg)
    return weight, partial(method.loss, cfg=cfg), lambda gen, x0, slot: method.noise(gen, x0, cfg, slot)


def compose(parts: dict[str, Part]) -> tuple[Loss, NoiseFn]:
    """sum_i w_i L_i(theta; x0, xi_i) as one (loss, noise) pair for ``train(cfg, loss=..., noise=...)``.

    The noise holds every part's draws under ``<name>.<key>``; aux holds every part's aux under
    ``<name>_<key>``, and ``bpt`` is the first part's (the bound the trainer prints)."""

    def noise(gen, x0, slot) -> Noise:
        return {f"{name}.{k}": v for name, (_, _, draw) in parts.items() for k, v in draw(gen, x0, slot).items()}

    def loss(apply, params, x0, noise: Noise):
        total, aux = 0.0, {}
        for name, (weight, part, _) in parts.items():
            own = {k.removeprefix(f"{name}."): v for k, v in noise.items() if k.startswith(f"{name}.")}
            value, part_aux = part(apply, params, x0, own)
            total = total + weight * value
            aux |= {f"{name}_{k}": v for k, v in part_aux.items()}
        return total, {"bpt": aux[f"{next(iter(parts))}_bpt"], **aux}

    return loss, noise


COMPOSE_PRESETS = {
    name: Preset(f"{about} Written to runs/compose-{name}.", variant(cfg, f"runs/compose-{name}"))
    for name, (about, cfg) in DEMOS.items()
}
BasePreset = choice(COMPOSE_PRESETS)


@dataclasses.dataclass(frozen=True)
class Options:
    lam: float = 0.1
    """lambda: the extra objective's weight (>= 0)."""
    eval_chunks: int = 64
    """Validation chunks on which both parts' bounds are evaluated at the end."""

    def __post_init__(self):
        checks.at_least("lam", self.lam, 0)
        checks.at_least("eval_chunks", self.eval_chunks, 2)


def check(cfg: Config, extra, lam: float) -> None:
    """The extra part must fit the base's network: the same ids K and the same attention."""
    base_m, extra_m = method_of(cfg.method), method_of(extra)
    K, K_extra = (m.diffusion(c).process.K for m, c in ((base_m, cfg.method), (extra_m, extra)))
    if K != K_extra:
        raise ValueError(
            f"the extra method's process has {K_extra} ids but the base's network has {K}; both parts train one network"
        )
    if getattr(base_m, "CAUSAL", False) or getattr(extra_m, "CAUSAL", False):
        raise ValueError("compose diffusion objectives: the autoregressive judge (method:ar) needs a causal network")


def main(
    cfg: Annotated[BasePreset, tyro.conf.arg(name="")] = COMPOSE_PRESETS["mdlm-demo"].cfg,
    extra: MethodConfig = D3PMConfig(T=1000, hybrid_coeff=0.05),
    compose_: Annotated[Options, tyro.conf.arg(name="compose")] = Options(),
) -> None:
    """Train the base preset's objective plus lambda times the extra method's (default: D3PM's hybrid
    loss), then evaluate each part's bound on validation."""
    V = load_tokenizer(prepare_data(cfg.data)).vocab_size  # both parts' processes take the data's ids
    cfg, extra = with_symbols(cfg, V), with_symbols(dataclasses.replace(cfg, method=extra), V).method
    check(cfg, extra, compose_.lam)
    loss, noise = compose({"base": method_part(cfg.method), "extra": method_part(extra, compose_.lam)})
    last = train(cfg, loss=loss, noise=noise)
    print(
        f"training bounds over the last log interval: base {last['base_bpt']:.3f}, "
        f"extra {last['extra_bpt']:.3f} bits/token (single-sample estimates)",
        file=sys.stderr,
    )
    ckpt = load_checkpoint(cfg.train.out_dir)
    for name, method in (("base", cfg.method), ("extra", extra)):
        as_part = dataclasses.replace(ckpt, cfg=dataclasses.replace(ckpt.cfg, method=method))
        r = evaluate_checkpoint(as_part, max_chunks=compose_.eval_chunks)["results"]
        print(
            f"{name} ({type(method).__name__}) validation bound: {r['bpc']:.3f} +- {r['stderr']:.3f} bits/char "
            f"over {r['n_chunks']} chunks",
            file=sys.stderr,
        )


def cli(args: list[str] | None = None) -> None:
    """Parse ``args`` (default: sys.argv) and run; a user's mistake is one ``error:`` line and exit 2."""
    run(main, args, prog="python -m experiments.compose", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
