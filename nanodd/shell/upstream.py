"""Reading nanoDD's ``ckpt.pt`` (e.g. the published nanoDD-D3PM-text8 weights, ~700 MB).

nanoDD saves ``torch.save({"model", "ema", "optimizer", "model_cls", "model_args", "training_args",
"iter_num", "best_val_loss"})``.  ``model`` is the state dict of ``D3PMAbsorbing``: its DiT under
``net.`` plus the ``betas`` / ``alpha_bars`` buffers; ``ema`` holds the same keys prefixed
``ema_model.``.  ``model_args`` = {vocab_size (data symbols, 27 for text8: K = vocab_size + 1),
n_embed, n_heads, n_blocks, n_cond, dropout, T, lambda_ce}.  Our DiT uses the same parameter names,
so the mapping is a prefix strip.  Files are read with ``weights_only=True``: a pickle that needs
arbitrary code to load is refused.
"""

from __future__ import annotations

import pickletools
import warnings
from pathlib import Path

import torch

from nanodd.config import Config, DataConfig, network_config
from nanodd.methods import METHODS
from nanodd.model import DiT, DiTConfig
from nanodd.processes.absorbing import Absorbing
from nanodd.shell.checkpoint import CheckpointError

MODEL_ARGS = ("vocab_size", "n_embed", "n_heads", "n_blocks", "n_cond", "dropout", "T", "lambda_ce")


def read(path: Path) -> dict:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from e
    except Exception as e:  # torch raises KeyError, UnpicklingError, RuntimeError, ... for bytes it cannot load
        raise CheckpointError(why_unloadable(path, e)) from e
    if not isinstance(ckpt, dict) or "model_args" not in ckpt:
        raise CheckpointError(f"{path}: not a nanoDD checkpoint (no 'model_args')")
    if ckpt.get("model_cls") != "D3PMAbsorbing":
        raise CheckpointError(f"{path}: model_cls {ckpt.get('model_cls')!r} is not supported (only 'D3PMAbsorbing')")
    args = ckpt["model_args"]
    if not isinstance(args, dict):
        raise CheckpointError(f"{path}: model_args is a {type(args).__name__}, not a dict")
    if missing := [k for k in MODEL_ARGS if k not in args]:
        raise CheckpointError(f"{path}: model_args lacks {missing}")
    numbers = {k: (int,) if k not in ("dropout", "lambda_ce") else (int, float) for k in MODEL_ARGS}
    if wrong := [f"{k}={args[k]!r}" for k, types in numbers.items() if type(args[k]) not in types]:
        raise CheckpointError(f"{path}: model_args {', '.join(wrong)} (numbers expected)")
    return ckpt


CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}
"""Pickle opcodes that import or call Python code while loading."""


def why_unloadable(path: Path, error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``: a damaged torch zip, a pickle that needs
    code to load (read without running it, with pickletools), or bytes that are no checkpoint at all."""
    data = path.read_bytes()
    if data.startswith(b"PK"):
        return f"{path}: a damaged torch checkpoint (zip archive): {str(error).split('. ')[0]}"
    try:
        opcodes = {op.name for op, _, _ in pickletools.genops(data)}
    except Exception:  # pickletools raises ValueError, IndexError, ... on bytes that are no pickle
        opcodes = set()
    if opcodes & CODE_OPCODES:
        return (
            f"{path}: refused: a pickle that needs code to load (it builds Python objects, which could run "
            "arbitrary code; only tensors and plain containers are read, weights_only=True)"
        )
    return f"{path}: not a checkpoint (neither a torch checkpoint nor a pickle of tensors)"


def config_of(ckpt: dict) -> Config:
    """Our Config for a nanoDD checkpoint's model_args / training_args: nanoDD's D3PMAbsorbing is our
    registered method "d3pm" on the absorbing process over its vocab_size data symbols."""
    a, t = ckpt["model_args"], ckpt.get("training_args", {})
    t = t if isinstance(t, dict) else {}
    return Config(
        model=DiTConfig(
            d_model=a["n_embed"],
            n_heads=a["n_heads"],
            n_blocks=a["n_blocks"],
            cond_dim=a["n_cond"],
            dropout=a["dropout"],
        ),
        method=METHODS["d3pm"].Config(T=a["T"], hybrid_coeff=a["lambda_ce"], process=Absorbing(a["vocab_size"])),
        data=DataConfig(source="text8", seq_len=t.get("seq_len", 256)),
    )


def dit_state(ckpt: dict, *, ema: bool, cfg: DiTConfig) -> dict[str, torch.Tensor]:
    """The DiT's state dict, from the EMA weights (keys 'ema_model.net.*') or the raw ones ('net.*')."""
    entry = "ema" if ema else "model"
    state = ckpt.get(entry)
    if not isinstance(state, dict):
        other = "the raw weights (--sample.no-ema, ema=False)" if ema else "the EMA weights"
        raise CheckpointError(f"the checkpoint has no {entry!r} weights (a dict of tensors); try {other}")
    prefix = "ema_model.net." if ema else "net."
    net = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not net:
        raise CheckpointError(f"no '{prefix}*' weights in the checkpoint's {'ema' if ema else 'model'} entry")
    embed = net.get("vocab_embed.weight")
    if embed is not None and embed.shape == (cfg.d_model, cfg.vocab_size) != (cfg.vocab_size, cfg.d_model):
        net["vocab_embed.weight"] = embed.T.contiguous()  # some nanoDD versions embed with nn.Linear(K, d)
    return net


def check_shapes(net: dict[str, torch.Tensor], cfg: DiTConfig) -> None:
    """The sizes model_args state must be those of the weights, checked before a DiT of those sizes is
    built (model_args n_embed = 10**9 would otherwise allocate before any shape is compared)."""
    embed, cond = net.get("vocab_embed.weight"), net.get("c_embed.mlp.0.weight")
    blocks = {int(k.split(".")[1]) for k in net if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    found = {
        "vocab_size + 1, n_embed": tuple(embed.shape) if isinstance(embed, torch.Tensor) else None,
        "n_cond": cond.shape[0] if isinstance(cond, torch.Tensor) and cond.dim() == 2 else None,
        "n_blocks": len(blocks),
    }
    wanted = {
        "vocab_size + 1, n_embed": (cfg.vocab_size, cfg.d_model),
        "n_cond": cfg.cond_dim,
        "n_blocks": cfg.n_blocks,
    }
    flipped = (cfg.d_model, cfg.vocab_size)  # some nanoDD versions embed with nn.Linear(K, d)
    if bad := [k for k in wanted if found[k] != wanted[k] and not (k.startswith("vocab") and found[k] == flipped)]:
        raise CheckpointError(
            "the weights do not fit the DiT its model_args describe: "
            + "; ".join(f"{k}: model_args {wanted[k]}, weights {found[k]}" for k in bad)
        )


def load(path: Path, *, ema: bool = True, device: torch.device | str = "cpu") -> tuple[DiT, dict, Config, dict]:
    """(model in eval mode with the chosen weights, its params, Config, nanoDD's checkpoint dict)."""
    ckpt = read(path)
    try:
        cfg = config_of(ckpt)
    except (ValueError, TypeError) as e:  # a config refusing model_args (n_heads not dividing n_embed, ...)
        raise CheckpointError(f"{path}: model_args describe no valid model: {' '.join(str(e).split())}") from e
    net_cfg = network_config(cfg)
    try:
        net = dit_state(ckpt, ema=ema, cfg=net_cfg)
        check_shapes(net, net_cfg)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e
    model = DiT(net_cfg)
    try:
        model.load_state_dict(net)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise CheckpointError(f"{path}: weights do not fit the DiT its model_args describe: {detail[:400]}") from e
    model = model.to(device).eval()
    return model, dict(model.named_parameters()), cfg, ckpt
