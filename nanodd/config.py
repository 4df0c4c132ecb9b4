"""Experiment configuration: frozen dataclasses, one per concern, composed into ``Config``.

Every field's docstring is its ``--help`` text.  Presets (``experiments/text8.py``) are ordinary
``Config`` instances, and any field can be overridden on the command line
(``python -m experiments.text8 train d3pm-text8 --train.lr 3e-4``).  The method is a union type:
its config holds only the fields that method reads, and the trainer looks its functions up by type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal, get_args

from nanodd.methods.d3pm import D3PMConfig
from nanodd.model import DiTConfig

Method = D3PMConfig


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


@dataclass(frozen=True)
class Config:
    model: DiTConfig = field(default_factory=DiTConfig)
    method: Method = field(default_factory=D3PMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def validate(cfg: Config) -> None:
    """Raise ValueError with one readable line for any inconsistent or out-of-range setting."""
    t, m = cfg.train, cfg.model
    positive = {"train.batch_size": t.batch_size, "train.grad_accum": t.grad_accum, "train.max_iters": t.max_iters,
                "train.eval_interval": t.eval_interval, "train.eval_batches": t.eval_batches,
                "train.log_interval": t.log_interval, "data.seq_len": cfg.data.seq_len, "model.d_model": m.d_model,
                "model.n_heads": m.n_heads, "model.n_blocks": m.n_blocks, "model.cond_dim": m.cond_dim,
                "method.T": cfg.method.T}
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if t.lr <= 0 or t.min_lr < 0 or t.min_lr > t.lr:
        raise ValueError(f"need 0 <= --train.min-lr <= --train.lr and lr > 0, got lr={t.lr}, min_lr={t.min_lr}")
    if not 0 <= t.ema_decay < 1 or not 0 <= m.dropout < 1 or t.warmup_iters < 0 or t.seed < 0:
        raise ValueError("need 0 <= ema_decay < 1, 0 <= dropout < 1, warmup_iters >= 0 and seed >= 0")
    if cfg.method.mask_id != m.vocab_size - 1:
        raise ValueError(f"--method.mask-id must be --model.vocab-size - 1 = {m.vocab_size - 1}, "
                         f"got {cfg.method.mask_id}")


METHODS: dict[str, type] = {cls.__name__: cls for cls in get_args(Method) or (Method,)}


def to_dict(cfg: Config) -> dict:
    """A JSON-ready dict of the config; the method's class name is stored beside its fields."""
    return asdict(cfg) | {"method_type": type(cfg.method).__name__}


def from_dict(d: dict) -> Config:
    """Inverse of ``to_dict``; unknown keys (from a newer version) are an error, missing ones default."""
    sections = {"model": DiTConfig, "method": METHODS[d.get("method_type", "D3PMConfig")],
                "data": DataConfig, "train": TrainConfig}
    kwargs = {}
    for name, cls in sections.items():
        known = {f.name for f in fields(cls)}
        values = d.get(name, {})
        if unknown := set(values) - known:
            raise ValueError(f"config section '{name}' has unknown fields {sorted(unknown)}")
        kwargs[name] = cls(**values)
    return Config(**kwargs)
