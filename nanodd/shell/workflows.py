"""What research code reuses: load any checkpoint, generate text, evaluate a bound, convert nanoDD's.

    from nanodd.shell.workflows import load_checkpoint, generate, evaluate_checkpoint
    run = load_checkpoint("runs/mdlm-demo")        # ours (any method), or nanoDD's ckpt.pt
    out = generate(run, batch_size=4, steps=256)   # out.texts, out.tokens, out.nfe, out.seconds
    report = evaluate_checkpoint(run, split="val", estimator="stratified", n_t=4)

``experiments/commands.py`` only parses arguments, calls these and prints what they return.
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
from nanodd.config import Config, DataConfig, from_dict, network_config, to_dict
from nanodd.data import (
    DataError,
    canonical_chunks,
    default_cache_dir,
    eval_chunks,
    load_split,
    load_tokenizer,
    tokenizers,
)
from nanodd.data.prepare import data_identity, dataset_name
from nanodd.data.text import VOCAB
from nanodd.functional import Apply, Params, make_apply, params_of
from nanodd.methods import method_of
from nanodd.model import DiT
from nanodd.protocols import Diffusion, OnStep
from nanodd.samplers import SAMPLERS
from nanodd.shell import dist, lock, upstream
from nanodd.shell.lock import run_lock
from nanodd.shell.checkpoint import CheckpointError, Checkpoints

Estimator = Literal["stratified", "exact", "continuous", "elbo-vs-t"]


@dataclass(frozen=True)
class LoadedModel:
    """A trained network ready to use: the model (eval mode), its params, its config, its tokenizer."""

    model: DiT
    params: Params
    cfg: Config
    path: Path
    tokenizer: tokenizers.TableTokenizer
    data: dict | None = None
    """The prepared data it was trained on (``nanodd.data.prepare.data_identity``); None for older runs."""

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
    The model holds the EMA weights unless ``ema=False`` or the run kept no EMA (``ema_decay`` 0: its saved
    EMA is its initial weights, never updated), then its trained weights; a run directory gives its newest
    good step."""
    path = Path(path)
    if path.is_file():
        model, params, cfg, _ = upstream.load(path, ema=ema, device=device)
        return LoadedModel(model, params, cfg, path, tokenizers.text8())
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
    if ema and cfg.train.ema_decay > 0:
        model.load_state_dict(arrays["ema"], strict=False)  # EMA covers the parameters, not the buffers
    tokenizer = run_tokenizer(directory.parent, meta)
    return LoadedModel(model, params_of(model), cfg, path, tokenizer, meta.get("data"))


def run_tokenizer(run_dir: Path, meta: dict) -> tokenizers.TableTokenizer:
    """The tokenizer a run was trained with: text8 (runs before tokenizers were recorded too), else the copy
    in the run's ``tokenizer/`` directory, which must be the one its checkpoint records."""
    recorded = meta.get("tokenizer") or tokenizers.text8().identity()
    if recorded["name"] == "text8":
        return tokenizers.text8()
    try:
        tok = tokenizers.load(run_dir / "tokenizer")
    except DataError as e:
        raise CheckpointError(f"the run's tokenizer is missing or unreadable: {e}") from None
    if tok.identity() != recorded:
        raise CheckpointError(f"{run_dir / 'tokenizer'} is not the tokenizer its checkpoints were trained with")
    return tok


@dataclass(frozen=True)
class Generated:
    texts: list[str]
    tokens: torch.Tensor
    """[B, L] token ids."""
    nfe: int
    """Network evaluations the sampler made."""
    seconds: float


def check_pattern(prefix: str = "", infill: str = "") -> None:
    """A prefix or an infill pattern, not both (what the tokenizer can encode is checked by ``condition_of``)."""
    if prefix and infill:
        raise checks.FieldError(
            "give ",
            checks.Field("prefix"),
            " or ",
            checks.Field("infill"),
            ", not both (an infill pattern can start with the prefix)",
        )


def condition_of(
    tokenizer: tokenizers.TableTokenizer, seq_len: int, prefix: str = "", infill: str = ""
) -> torch.Tensor | None:
    """The sampler's ``condition`` [L] (-1: generate) from a prefix, or an infill pattern in which each '_'
    marks one token to generate (text8: one character) and the text between gaps is encoded as it is
    written (positions past the pattern's end are generated too); None for neither."""
    check_pattern(prefix, infill)
    pattern = prefix or infill
    if tokenizer.name == "text8" and (bad := sorted(set(pattern) - set(VOCAB) - ({"_"} if infill else set()))):
        raise checks.FieldError(
            checks.Field("prefix" if prefix else "infill"),
            f" may hold only a-z and space{' (and _ to generate)' if infill else ''}, got {bad[:5]}",
        )
    if not pattern:
        return None
    pieces = pattern.split("_") if infill else [pattern]
    ids: list[int] = []
    for i, text in enumerate(pieces):
        ids += [-1] * (i > 0) + tokenizer.encode(text).tolist()
    if len(ids) > seq_len:
        raise ValueError(
            f"the {'prefix' if prefix else 'infill pattern'} is {len(ids)} tokens long; the model writes {seq_len}"
        )
    return torch.cat([torch.as_tensor(ids, dtype=torch.long), torch.full((seq_len - len(ids),), -1)])


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
    direct = lambda params, zt, t, **kw: ckpt.model(zt, t, **kw)  # noqa: E731  (kw: mask, cache)
    if getattr(options, "stop_id", -1) is None and ckpt.tokenizer.eod_id is not None:
        options = dataclasses.replace(options, stop_id=ckpt.tokenizer.eod_id)  # stop at the end of document
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
    return Generated([ckpt.tokenizer.decode(row) for row in x.cpu()], x, nfe, time.perf_counter() - start)


def load_judge(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """An autoregressive judge checkpoint (EMA weights); refuses any other kind with one line."""
    judge = load_checkpoint(path, device=device)
    if not judge.model.cfg.causal:
        raise ValueError(f"{path} is not an autoregressive judge: train one with `train ar-demo` or `train ar-text8`")
    return judge


def check_judge(judge: LoadedModel, tokenizer: tokenizers.TableTokenizer) -> None:
    """A judge scores samples only in the ids it was trained on."""
    if judge.tokenizer.identity() != tokenizer.identity():
        raise ValueError(
            f"the judge {judge.path} reads the {judge.tokenizer.name} tokenizer, the samples another "
            f"({tokenizer.name}): train the judge on the same prepared data"
        )


@torch.no_grad()
def judge_bpb(judge: LoadedModel, tokens: torch.Tensor, tokenizer: tokenizers.TableTokenizer) -> torch.Tensor:
    """gen-BPB: an autoregressive judge's (``load_judge``) exact bits per UTF-8 byte of each sample [B, L],
    float64 [B] (text8: bits per character, gen-BPC).  The judge must read the samples' tokenizer.  Lower
    is more plausible text to the judge; read it next to the samples' unigram entropy, since a degenerate
    sampler (one repeated character) also scores low.  Samples longer than the judge's length L are scored
    in windows of L moved on by L / 2 (``nanodd.methods.ar.windowed_nll``: each token after the first L
    read with at least L / 2 before it), not in one call past the length the judge was trained on."""
    check_judge(judge, tokenizer)
    if tokens.shape[1] > (L := judge.cfg.data.seq_len):
        nats = judge.method.windowed_nll(judge.apply, judge.params, tokens.to(judge.device), judge.cfg.method, L)
    else:
        integrand = judge.method.bound(judge.cfg.method)
        nats = integrand(judge.apply, judge.params, tokens.to(judge.device), None, {})
    n_bytes = torch.tensor([max(tokenizer.n_bytes(row), 1) for row in tokens.cpu()], dtype=torch.float64)
    return nats.cpu().double() / (n_bytes * math.log(2))


def prepared_dir(data: DataConfig, source: str | None = None, data_dir: str | None = None) -> Path:
    """Where ``prepare`` puts ``data``'s corpus (or ``source``) with its tokenizer (load_split says how to
    prepare it if it is not there)."""
    root = Path(data_dir or data.data_dir or default_cache_dir())
    return root / dataset_name(source or data.source, data.tokenizer, data.vocab_size)


def trained_dir(ckpt: LoadedModel, data_dir: str | None = None) -> Path:
    """The prepared directory ``ckpt`` was trained on (by the name its checkpoint records, else its config's
    source), refused in one line when it now holds other data (re-prepared from another corpus or file)."""
    if ckpt.data is None:
        return prepared_dir(ckpt.cfg.data, data_dir=data_dir)
    directory = Path(data_dir or ckpt.cfg.data.data_dir or default_cache_dir()) / ckpt.data["name"]
    if (now := data_identity(directory))["sha256"] != ckpt.data["sha256"]:
        raise DataError(
            f"{directory} now holds other data ({now['source']}, sha256 {now['sha256'][:12]}) than {ckpt.path} was "
            f"trained on ({ckpt.data['source']}, {ckpt.data['sha256'][:12]}); prepare that again, or name the data "
            "to use explicitly (data_source)"
        )
    return directory


def sample_metrics(ckpt: LoadedModel, texts: list[str], n_tokens: int = 10_000_000) -> dict[str, float]:
    """``nanodd.evaluate.sample_metrics`` against the first ``n_tokens`` of the checkpoint's training split."""
    train_text = ckpt.tokenizer.decode(load_split(trained_dir(ckpt), "train")[:n_tokens])
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
    """The checkpoint's own bound (``method.bound``) on canonical chunks, in bits per token (``bpc``: per
    character for text8) and per UTF-8 byte (``bpb``), with the per-token perplexity bound (``ppl``).

    estimator: ``stratified`` (n_t stratified times per chunk), ``exact`` (every step of a discrete
    bound), ``continuous`` (the same integrand with T = None: L_inf), ``elbo-vs-t`` (L_T on
    ``evaluate.ELBO_TS`` with common random numbers).  The data must be prepared with the checkpoint's
    tokenizer; by default it is the data the checkpoint was trained on (``trained_dir``), ``data_source``
    names other data.  Returns a JSON-ready report.
    """
    source = data_source or ckpt.cfg.data.source
    directory = prepared_dir(ckpt.cfg.data, source, data_dir) if data_source else trained_dir(ckpt, data_dir)
    data = load_split(directory, split, ckpt.cfg.data.rows, ckpt.cfg.data.seq_len)
    if load_tokenizer(directory).identity() != ckpt.tokenizer.identity():
        raise DataError(f"{directory} was prepared with another tokenizer than {ckpt.path}'s ({ckpt.tokenizer.name})")
    chunks = canonical_chunks(data, ckpt.cfg.data.seq_len, max_chunks)
    per_byte = lambda report: ev.per_byte(report, chunks.numel(), ckpt.tokenizer.n_bytes(chunks))
    _, remainder = eval_chunks(data, ckpt.cfg.data.seq_len)
    integrand = ckpt.method.bound(ckpt.cfg.method)
    kw = dict(generator=torch.Generator(ckpt.device).manual_seed(seed), batch_size=batch_size, on_batch=on_batch)
    args = (ckpt.apply, ckpt.params, chunks.to(ckpt.device))
    if estimator == "elbo-vs-t":
        curve = ev.elbo_vs_T(integrand, *args, n_t=n_t, **kw)
        results = {("inf" if T is None else str(T)): per_byte(e.report()) for T, e in curve.items()}
    elif estimator == "exact":
        results = per_byte(ev.exact_in_t(integrand, *args, **kw).report())
    else:
        if estimator == "continuous":
            integrand = dataclasses.replace(integrand, T=None)
        results = per_byte(ev.stratified(integrand, *args, n_t=n_t, **kw).report())
    return {
        "checkpoint": str(ckpt.path),
        "split": split,
        "source": source,
        "tokenizer": ckpt.tokenizer.identity(),
        "estimator": estimator,
        "T": integrand.T,
        "seq_len": ckpt.cfg.data.seq_len,
        "remainder_chars": remainder,
        "seed": seed,
        "batch_size": batch_size,
        "results": results,
    }


def convert_nanodd(path: str | Path, out_dir: str | Path) -> Path:
    """Write a nanoDD ckpt.pt as one of our checkpoints (raw and EMA weights) into a new (or empty) run
    directory, holding its run lock; returns its step directory.  A directory that holds anything is
    refused: a run resumed from converted weights would continue with a reset optimizer."""
    model, _, cfg, ckpt = upstream.load(Path(path), ema=False)
    ema = upstream.dit_state(ckpt, ema=True, cfg=network_config(cfg))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=str(out_dir)))
    check_empty_run_dir(out_dir)
    with run_lock(Path(out_dir)):
        check_empty_run_dir(out_dir)  # again, now that no other writer can fill it
        ckpts = Checkpoints(Path(out_dir) / "checkpoints")
        step = int(ckpt.get("iter_num", 0))
        ckpts.save(
            step,
            {"params": dict(model.state_dict()), "ema": {k: ema[k] for k, _ in model.named_parameters()}},
            {"config": to_dict(cfg), "source": str(Path(path).absolute())},
        )
        ckpts.wait()
    return ckpts.directory / str(step)


def check_empty_run_dir(out_dir: str | Path, option: str = "out_dir") -> None:
    """``out_dir`` holds nothing yet (its lock file aside); a ``ValueError`` naming ``option`` and what the
    directory holds otherwise."""
    if held := lock.entries(Path(out_dir)):
        names = ", ".join(p.name + "/" * p.is_dir() for p in held[:4]) + (", ..." if len(held) > 4 else "")
        raise ValueError(
            f"{option} {out_dir}: already holds {names}; convert writes only into a new or empty run directory"
        )
