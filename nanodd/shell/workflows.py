"""What research code reuses: load any checkpoint, generate text, evaluate a bound, convert nanoDD's.

    from nanodd.shell.workflows import load_checkpoint, generate, evaluate_checkpoint
    run = load_checkpoint("runs/mdlm-demo")        # ours (any method), or nanoDD's ckpt.pt
    out = generate(run, batch_size=4, steps=256)   # out.texts, out.tokens, out.nfe, out.seconds
    report = evaluate_checkpoint(run, split="val", estimator="stratified", n_t=4)

``experiments/text8.py`` only parses arguments, calls these and prints what they return.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import torch

import nanodd.checks as checks
from nanodd import draws, evaluate as ev
from nanodd.config import Config, from_dict, network_config, to_dict
from nanodd.data import VOCAB, canonical_chunks, decode, default_cache_dir, encode, eval_chunks, load_split
from nanodd.data.prepare import dataset_name
from nanodd.functional import Apply, Params, make_apply, params_of
from nanodd.methods import method_of
from nanodd.model import DiT
from nanodd.protocols import Diffusion, OnStep
from nanodd.samplers import SAMPLERS
from nanodd.shell import dist, upstream
from nanodd.shell.checkpoint import CheckpointError, Checkpoints

Estimator = Literal["stratified", "exact", "continuous", "elbo-vs-t"]


@dataclass(frozen=True)
class LoadedModel:
    """A trained network ready to use: the model (eval mode), its params, its config."""

    model: DiT
    params: Params
    cfg: Config
    path: Path

    @property
    def apply(self) -> Apply:
        return make_apply(self.model)

    @property
    def method(self) -> ModuleType:
        return method_of(self.cfg.method)

    @property
    def diffusion(self) -> Diffusion:
        return self.method.diffusion(self.cfg.method)

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device


def load_checkpoint(path: str | Path, *, ema: bool = True, device: torch.device | str = "cpu") -> LoadedModel:
    """A run directory, its ``checkpoints/`` directory, one step directory, or a nanoDD ``ckpt.pt``.
    The model holds the EMA weights unless ``ema=False``; a run directory gives its newest good step."""
    path = Path(path)
    if path.is_file():
        model, params, cfg, _ = upstream.load(path, ema=ema, device=device)
        return LoadedModel(model, params, cfg, path)
    step = None
    directory = path
    if path.name.isdigit() and path.parent.is_dir():
        directory, step = path.parent, int(path.name)
    directory = directory / "checkpoints" if (directory / "checkpoints").is_dir() else directory
    if not directory.is_dir():
        raise CheckpointError(
            f"{path}: not found (expected a run directory, its checkpoints/ directory, "
            "a step directory, or a nanoDD ckpt.pt)"
        )
    ckpts = Checkpoints(directory, is_main=False)
    if step is not None:
        restored = ckpts.restore(step)
    elif (restored := ckpts.restore_latest_good()) is None:
        raise CheckpointError(f"{directory}: no complete checkpoint found")
    arrays, meta = restored
    cfg = from_dict(meta["config"])
    model = DiT(network_config(cfg)).to(device).eval()
    model.load_state_dict(arrays["params"])  # the saved config built this DiT, so the shapes agree
    if ema:
        model.load_state_dict(arrays["ema"], strict=False)  # EMA covers the parameters, not the buffers
    return LoadedModel(model, params_of(model), cfg, path)


@dataclass(frozen=True)
class Generated:
    texts: list[str]
    tokens: torch.Tensor
    """[B, L] token ids."""
    nfe: int
    """Network evaluations the sampler made."""
    seconds: float


def check_pattern(prefix: str = "", infill: str = "") -> None:
    """A prefix or an infill pattern (not both) of text8 characters, '_' marking where the infill writes."""
    if prefix and infill:
        raise checks.FieldError(
            "give ",
            checks.Field("prefix"),
            " or ",
            checks.Field("infill"),
            ", not both (an infill pattern can start with the prefix)",
        )
    allowed = set(VOCAB) | ({"_"} if infill else set())
    if bad := sorted(set(prefix or infill) - allowed):
        raise checks.FieldError(
            checks.Field("prefix" if prefix else "infill"),
            f" may hold only a-z and space{' (and _ to generate)' if infill else ''}, got {bad[:5]}",
        )


def condition_of(seq_len: int, prefix: str = "", infill: str = "") -> torch.Tensor | None:
    """The sampler's ``condition`` [L] (-1: generate) from a prefix, or an infill pattern in which '_'
    marks a character to generate (positions past its end are generated too); None for neither."""
    check_pattern(prefix, infill)
    pattern = prefix or infill
    if len(pattern) > seq_len:
        raise ValueError(
            f"the {'prefix' if prefix else 'infill pattern'} has {len(pattern)} characters; the model writes {seq_len}"
        )
    if not pattern:
        return None
    condition = torch.full((seq_len,), -1, dtype=torch.long)
    fixed = [i for i, c in enumerate(pattern) if c != "_"]
    condition[fixed] = torch.as_tensor(encode("".join(pattern[i] for i in fixed)), dtype=torch.long)
    return condition


def generate(
    ckpt: LoadedModel,
    *,
    sampler: str = "ancestral",
    batch_size: int = 1,
    steps: int | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    on_step: OnStep | None = None,
    condition: torch.Tensor | None = None,
    options=None,
    dtype: Literal["auto", "fp32", "bf16"] = "fp32",
) -> Generated:
    """Sample ``batch_size`` sequences of the checkpoint's length with a registered sampler, given
    ``condition`` (``condition_of``) and the sampler's ``options``; the network runs under bf16
    autocast for ``dtype`` "bf16", or "auto" where bf16 is fast (CUDA, CPUs with native bf16)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    checks.at_least("batch_size", batch_size, 1)
    transform = draws.compose(draws.temperature(temperature), draws.top_p(top_p), draws.top_k(top_k))
    # The checkpoint's params are the model's own tensors, so the sampler's apply can call the module
    # directly: the same function of (params, z_t, t), without functional_call's per-call swap.
    direct = lambda params, zt, t: ckpt.model(zt, t)  # noqa: E731
    start = time.perf_counter()
    with torch.inference_mode(), dist.autocast(ckpt.device, dist.autocast_dtype(dtype, ckpt.device)):
        x, nfe = SAMPLERS[sampler].sample(
            direct,
            ckpt.params,
            ckpt.diffusion,
            batch_size=batch_size,
            seq_len=ckpt.cfg.data.seq_len,
            generator=torch.Generator(ckpt.device).manual_seed(seed),
            steps=steps,
            transform=transform,
            on_step=on_step,
            condition=None if condition is None else condition.to(ckpt.device),
            options=options,
        )
    return Generated([decode(row) for row in x.cpu()], x, nfe, time.perf_counter() - start)


def load_judge(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """An autoregressive judge checkpoint (EMA weights); refuses any other kind with one line."""
    judge = load_checkpoint(path, device=device)
    if not judge.model.cfg.causal:
        raise ValueError(f"{path} is not an autoregressive judge: train one with `train ar-demo` or `train ar-text8`")
    return judge


@torch.no_grad()
def judge_bpc(judge: LoadedModel, tokens: torch.Tensor) -> torch.Tensor:
    """gen-BPC: an autoregressive judge's (``load_judge``) exact bits per character on each sample,
    [B] float64.  Lower is more plausible text to the judge; read it next to the samples' unigram
    entropy, since a degenerate sampler (one repeated character) also scores low."""
    integrand = judge.method.bound(judge.cfg.method)
    nats = integrand(judge.apply, judge.params, tokens.to(judge.device), None, {})
    return nats.cpu() / (tokens.shape[1] * math.log(2))


def prepared_dir(source: str, data_dir: str | None) -> Path:
    """Where ``prepare`` puts ``source`` (load_split names the prepare command if it is not there)."""
    return Path(data_dir or default_cache_dir()) / dataset_name(source)


def sample_metrics(ckpt: LoadedModel, texts: list[str], n_chars: int = 10_000_000) -> dict[str, float]:
    """``nanodd.evaluate.sample_metrics`` against the first ``n_chars`` of the checkpoint's training split."""
    train_text = decode(load_split(prepared_dir(ckpt.cfg.data.source, ckpt.cfg.data.data_dir), "train")[:n_chars])
    return ev.sample_metrics(texts, train_text, set(ev.words(train_text)))


def evaluate_checkpoint(
    ckpt: LoadedModel,
    *,
    split: Literal["val", "test"] = "val",
    estimator: Estimator = "stratified",
    n_t: int = 1,
    max_chunks: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    data_source: str | None = None,
    data_dir: str | None = None,
    on_batch: ev.OnBatch | None = None,
) -> dict:
    """The checkpoint's own bound (``method.bound``) in bits per character on canonical chunks.

    estimator: ``stratified`` (n_t stratified times per chunk), ``exact`` (every step of a discrete
    bound), ``continuous`` (the same integrand with T = None: L_inf), ``elbo-vs-t`` (L_T on
    ``evaluate.ELBO_TS`` with common random numbers).  Returns a JSON-ready report.
    """
    source = data_source or ckpt.cfg.data.source
    data = load_split(prepared_dir(source, data_dir or ckpt.cfg.data.data_dir), split)
    chunks = canonical_chunks(data, ckpt.cfg.data.seq_len, max_chunks)
    _, remainder = eval_chunks(data, ckpt.cfg.data.seq_len)
    integrand = ckpt.method.bound(ckpt.cfg.method)
    kw = dict(generator=torch.Generator(ckpt.device).manual_seed(seed), batch_size=batch_size, on_batch=on_batch)
    args = (ckpt.apply, ckpt.params, chunks.to(ckpt.device))
    if estimator == "elbo-vs-t":
        curve = ev.elbo_vs_T(integrand, *args, n_t=n_t, **kw)
        results = {("inf" if T is None else str(T)): e.report() for T, e in curve.items()}
    elif estimator == "exact":
        results = ev.exact_in_t(integrand, *args, **kw).report()
    else:
        if estimator == "continuous":
            integrand = dataclasses.replace(integrand, T=None)
        results = ev.stratified(integrand, *args, n_t=n_t, **kw).report()
    return {
        "checkpoint": str(ckpt.path),
        "split": split,
        "source": source,
        "estimator": estimator,
        "T": integrand.T,
        "seq_len": ckpt.cfg.data.seq_len,
        "remainder_chars": remainder,
        "seed": seed,
        "batch_size": batch_size,
        "results": results,
    }


def convert_nanodd(path: str | Path, out_dir: str | Path) -> Path:
    """Write a nanoDD ckpt.pt as one of our checkpoints (raw and EMA weights); returns its step directory."""
    model, _, cfg, ckpt = upstream.load(Path(path), ema=False)
    ema = upstream.dit_state(ckpt, ema=True, cfg=network_config(cfg))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=str(out_dir)))
    ckpts = Checkpoints(Path(out_dir) / "checkpoints")
    step = int(ckpt.get("iter_num", 0))
    ckpts.save(
        step,
        {"params": dict(model.state_dict()), "ema": {k: ema[k] for k, _ in model.named_parameters()}},
        {"config": to_dict(cfg), "source": str(Path(path).absolute())},
    )
    ckpts.wait()
    return ckpts.directory / str(step)
