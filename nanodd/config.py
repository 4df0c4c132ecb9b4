"""Experiment configuration: frozen dataclasses, one per concern, composed into ``Config``.

Every field's docstring is its help text on the command line.  Presets (``experiments/presets.py``)
are ordinary ``Config`` instances, and the command line can override any field of one (``train.lr``
of ``d3pm-text8``); checks name fields as Python spells them (``nanodd.checks``).  The method is a
union built from the method registry (``nanodd.methods.METHODS``): each member holds only the fields
its method reads, and the command line picks one with ``method:<name>`` (e.g. ``method:mdlm``).

This module sits between the core and the shell: it names the CLI's choices (so it imports
``tyro.conf``), and it (de)serialises configs for checkpoints without knowing any method.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Annotated, Literal, Union

import tyro

import nanodd.checks as checks
from nanodd.methods import METHODS, method_of
from nanodd.model import DiTConfig

MethodConfig = Union[tuple(Annotated[m.Config, tyro.conf.subcommand(name)] for name, m in METHODS.items())]


@dataclass(frozen=True)
class DataConfig:
    source: str = "builtin"
    """Corpus: 'builtin' (offline, ships with Python), 'text8' (downloads 31 MB), a text file or a URL."""
    data_dir: str | None = None
    """Where prepared data lives (default: $NANODD_CACHE, else ~/.cache/nanodd)."""
    seq_len: int = 256
    """Sequence length L of every training crop and evaluation chunk."""
    force: bool = False
    """Re-prepare even if the directory holds data prepared from another source."""
    tokenizer: Literal["text8", "bytes", "bpe", "gpt2", "wordpiece"] = "text8"
    """How text becomes ids (nanodd.data.tokenizers): text8 (27 ids: a-z and space, after wikifil's
    normaliser; nanoDD's), bytes (the 256 byte values, lossless), bpe (byte-level BPE with vocab_size ids,
    trained on the training split), gpt2 (GPT-2's 50,257 ids through tiktoken), wordpiece (BERT's, from
    tokenizer_file's vocab.txt: lowercased, punctuation split off; LM1B's).  The process's data symbols,
    and so the network's vocabulary, are the tokenizer's ids."""
    vocab_size: int = 4096
    """bpe only: ids of the tokenizer trained on the corpus, its end of document included."""
    tokenizer_file: str | None = None
    """gpt2: a local gpt2.tiktoken ranks file (else $NANODD_GPT2_RANKS, else tiktoken downloads it);
    wordpiece: its vocab.txt (required; e.g. bert-base-uncased's)."""
    workers: int | None = None
    """Processes that tokenize in parallel while preparing (default: one per core)."""
    rows: Literal["wrap", "pad"] = "wrap"
    """How documents fill the rows of seq_len ids: wrap (the split is one stream; crops start anywhere and
    run across ends of document, as MDLM's OWT), or pad (one document per row, as LM1B's sentences: its
    ids, its end of document, then end-of-document ids up to seq_len; longer ones are cut).  The padding
    counts as tokens of the bound and adds no bytes.  Not for text8's ids (they have no documents)."""

    def __post_init__(self):
        check_source("source", self.source)
        checks.named("data_dir", self.data_dir)
        checks.at_least("seq_len", self.seq_len, 1)
        checks.at_least("vocab_size", self.vocab_size, 258)  # the 256 bytes, one merge, the end of document
        checks.named("tokenizer_file", self.tokenizer_file)
        if self.workers is not None:
            checks.at_least("workers", self.workers, 1)
        if self.rows == "pad" and self.tokenizer == "text8":
            raise checks.FieldError(
                checks.Field("rows", "pad"), " needs documents with an end-of-document id; text8's ids have none"
            )


def check_source(field: str, source: str) -> None:
    """A corpus name, a file or an http(s) URL: refuse the empty string and URLs of other schemes
    (which would otherwise be read as a local path, e.g. 'ftp://h/x' as 'ftp:/h/x')."""
    checks.named(field, source)
    scheme = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*)://", source)
    if scheme and scheme[1].lower() not in ("http", "https"):
        raise checks.FieldError(
            checks.Field(field),
            f": the URL scheme '{scheme[1]}' is not supported (only http and https), got {source!r}",
        )


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 256
    """Sequences per device per micro-step (the global batch is batch_size x grad_accum x world size)."""
    grad_accum: int = 4
    """Micro-steps whose gradients are summed before each optimizer step."""
    max_iters: int = 500_000
    """Optimizer steps in the whole run."""
    lr: float = 1e-3
    """Peak learning rate, reached after warmup_iters and decayed by a cosine to min_lr."""
    min_lr: float = 1e-5
    """Learning rate at the end of the cosine decay."""
    warmup_iters: int = 2_500
    """Linear warmup steps from 0 to lr."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay, applied to 2-D parameters (matrices, embeddings) only."""
    beta1: float = 0.9
    """AdamW beta1 (momentum)."""
    beta2: float = 0.98
    """AdamW beta2 (second-moment decay)."""
    optimizer: Literal["adamw", "muon"] = "adamw"
    """'adamw': AdamW on every parameter. 'muon': Muon (momentum orthogonalised by Newton-Schulz, its update
    scaled to AdamW's RMS, so lr and weight_decay carry over) on the blocks' weight matrices, AdamW on the rest."""
    muon_lr_scale: float = 1.0
    """With optimizer 'muon': Muon's learning rate as a multiple of lr, on lr's schedule (AdamW's stays lr)."""
    grad_clip: float = 0.1
    """Clip the global gradient norm to this value (0 disables)."""
    ema_decay: float = 0.9999
    """EMA of the parameters: ema <- decay * ema + (1 - decay) * params (0 disables; eval/sampling use EMA)."""
    eval_interval: int = 2_000
    """Steps between validations (and checkpoints)."""
    eval_batches: int = 20
    """Validation batches (of batch_size chunks) per validation."""
    log_interval: int = 50
    """Steps between progress lines."""
    seed: int = 0
    """Seeds the initial weights, the data order and every noise draw."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' picks CUDA when available (under torchrun: the local rank's GPU)."""
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    """Autocast precision. 'auto': bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32."""
    compile: bool = False
    """torch.compile the network (needs a C++ compiler on CPU; costs 15-60 s at start)."""
    out_dir: str = "runs/default"
    """Where metrics.jsonl and checkpoints go."""
    resume: bool = False
    """Continue from the latest good checkpoint in out_dir (without it, an out_dir holding checkpoints is refused)."""
    keep_checkpoints: int = 3
    """How many recent checkpoints to keep (the best by validation is kept as well)."""
    init_from: str | None = None
    """Start from another run's weights (a run directory, a step directory or a nanoDD ckpt.pt): its EMA
    weights become this run's parameters and EMA; the optimizer is fresh and the step 0 (e.g. an MDLM run
    fine-tuned as method:bd3lm).  Its network must have this run's shape (vocabulary, width, blocks,
    heads) and its tokenizer this data's.  With --train.resume and checkpoints in out_dir, the resume
    wins and this is ignored (a note says so)."""
    init_from_ema: bool = True
    """init_from takes the EMA weights (--train.no-init-from-ema: the raw trained weights; a run trained
    without EMA, ema_decay 0, gives its raw weights either way)."""

    def __post_init__(self):
        for name in (
            "batch_size",
            "grad_accum",
            "max_iters",
            "eval_interval",
            "eval_batches",
            "log_interval",
            "keep_checkpoints",
        ):
            checks.at_least(name, getattr(self, name), 1)
        for name in ("warmup_iters", "weight_decay", "grad_clip"):
            checks.at_least(name, getattr(self, name), 0)
        checks.seed("seed", self.seed)
        checks.positive("lr", self.lr)
        checks.positive("muon_lr_scale", self.muon_lr_scale)
        checks.between("min_lr", self.min_lr, 0, self.lr)
        for name in ("beta1", "beta2", "ema_decay"):
            checks.between(name, getattr(self, name), 0, 1, open_high=True)
        checks.named("out_dir", self.out_dir)
        checks.named("init_from", self.init_from)


@dataclass(frozen=True)
class Config:
    model: DiTConfig = field(default_factory=DiTConfig)
    method: MethodConfig = field(default_factory=next(iter(METHODS.values())).Config)
    """The objective (default: the first registered method, d3pm); pick another with method:<name>."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def network_config(cfg: Config) -> DiTConfig:
    """The DiT's config with its vocabulary taken from the method's process (K ids), and its attention
    causal exactly when the method says so (``CAUSAL = True``: the autoregressive judge)."""
    method = method_of(cfg.method)
    K, causal = method.diffusion(cfg.method).process.K, getattr(method, "CAUSAL", False)
    if cfg.model.vocab_size not in (None, K):
        raise checks.FieldError(
            checks.Field("model.vocab_size"),
            f" must be {K} for this method's process (or left unset), got {cfg.model.vocab_size}",
        )
    if cfg.model.causal and not causal:
        raise checks.FieldError(
            checks.Field("model.causal"),
            " is for the autoregressive judge (method:ar); a diffusion denoiser must see the whole sequence",
        )
    return dataclasses.replace(cfg.model, vocab_size=K, causal=causal)


def with_symbols(cfg: Config, n_symbols: int) -> Config:
    """``cfg`` with its method's process over ``n_symbols`` data symbols: a tokenizer's ids."""
    process = getattr(cfg.method, "process", None)
    if process is None:
        raise checks.FieldError(checks.Field("method"), " has no process to take the tokenizer's vocabulary")
    if process.n_symbols == n_symbols:
        return cfg
    return dataclasses.replace(
        cfg, method=dataclasses.replace(cfg.method, process=dataclasses.replace(process, n_symbols=n_symbols))
    )


def validate(cfg: Config) -> None:
    """Raise a FieldError with one readable line, naming fields by their path in ``cfg``
    (``model.vocab_size``), for settings that disagree across sections (the network against the
    method).  Every section checks its own fields when it is built (``__post_init__``)."""
    network_config(cfg)
    block = getattr(cfg.method, "block_size", None)  # block diffusion: its blocks tile the sequence
    if block is not None and cfg.data.seq_len % block:
        raise checks.FieldError(
            checks.Field("method.block_size"),
            f" {block} must divide ",
            checks.Field("data.seq_len"),
            f" {cfg.data.seq_len}",
        )


def to_dict(cfg) -> dict:
    """A JSON-ready dict of a config; every nested dataclass carries its class name under "type"."""
    if is_dataclass(cfg):
        return {"type": type(cfg).__name__} | {f.name: to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    return cfg


def from_dict(d: dict) -> Config:
    """Inverse of ``to_dict``; unknown fields (from a newer version) are an error, missing ones default."""
    if "method_type" in d:  # format of nanodd 0.1: the method's class beside the sections, its mask id a field
        d, method = dict(d), dict(d["method"])
        d["method"] = method | {"type": d.pop("method_type"), "process": {"n_symbols": method.pop("mask_id")}}
    return decode(Config, d, "config")


def decode(hint, value, where: str):
    """Build the dataclass that ``hint`` (a class or a union of classes) names, from a dict."""
    options = {c.__name__: c for c in dataclass_options(hint)}
    if not isinstance(value, dict) or not options:
        return value
    methods = {m.Config.__name__: m.Config for m in METHODS.values()}
    if set(options) & set(methods):
        options |= methods  # a method field also takes methods registered at run time
    name = value.get("type", next(iter(options)) if len(options) == 1 else None)
    if name not in options:
        raise ValueError(f"{where} has type {name!r}, expected one of {sorted(options)}")
    cls, values = options[name], {k: v for k, v in value.items() if k != "type"}
    known = {f.name for f in fields(cls)}
    if unknown := set(values) - known:
        raise ValueError(f"{where} ({name}) has unknown fields {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: decode(hints[k], v, f"{where}.{k}") for k, v in values.items()})


def dataclass_options(hint) -> list[type]:
    """The dataclasses a type hint allows: itself, or the members of a union (None dropped)."""
    if is_dataclass(hint):
        return [hint]
    if typing.get_origin(hint) in (Union, types.UnionType):
        return [c for arg in typing.get_args(hint) for c in dataclass_options(arg)]
    return []
