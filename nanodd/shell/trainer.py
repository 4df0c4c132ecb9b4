"""The training shell: the one place with mutable state.

``train(cfg)`` reads like a table of contents: set up devices and the process group, prepare the
data, build the model / optimizer / EMA (or restore them), then repeat ``train_step`` with periodic
validation, logging and checkpoints until max_iters or a stop signal.

The shell is handed its objective and never branches on a method: by default the loss and noise of
the config's method (looked up in the registry), or any ``loss(apply, params, x0, noise) -> (scalar,
aux)`` research code passes to ``train(cfg, loss=..., noise=...)``.  The loss sees the model's own
parameter names in every mode (eager, compiled, DDP): ``make_apply(model, wrapper)`` renames them
for the DDP / compiled wrapper it runs, so DDP's gradient all-reduce still happens.

Every random draw of step ``k`` (crop offsets, diffusion times and masks, dropout) is keyed by
(seed, rank, k), so the run's future depends only on the step number and the saved arrays: a
resumed run is bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function

from nanodd import checks, config as config_lib
from nanodd.config import Config, TrainConfig
from nanodd import evaluate as ev
from nanodd.data import (
    DataError,
    canonical_chunks,
    eval_chunks,
    load_split,
    load_tokenizer,
    tokenizers,
    train_batch,
)
from nanodd.data.prepare import data_identity, prepare_data
from nanodd.functional import Apply, Params, make_apply, params_of
from nanodd.methods import method_of
from nanodd.model import DiT
from nanodd.protocols import Aux, Noise, Slot
from nanodd.shell import dist
from nanodd.shell.checkpoint import CheckpointError, Checkpoints
from nanodd.shell.lock import RunLocked, run_lock
from nanodd.shell.optim import Chained, build_optimizer
from nanodd.shell.workflows import load_checkpoint
from nanodd.shell.log import Log, duration, warn


Loss = Callable[[Apply, Params, torch.Tensor, Noise], tuple[torch.Tensor, Aux]]
"""loss(apply, params, x0, noise) -> (scalar, aux with 'bpt'): what the shell minimises."""
NoiseFn = Callable[[torch.Generator, torch.Tensor, Slot], Noise]
"""noise(gen, x0, slot) -> every random draw of one loss evaluation."""


class StopTraining(Exception):
    """A run that must stop with a message (non-finite loss); the last good checkpoint is kept."""


def key(*parts: int) -> int:
    """A 63-bit seed derived from integers, e.g. (seed, rank, step, micro)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warmup to lr over warmup_iters, then cosine decay to min_lr at max_iters."""
    if step < tc.warmup_iters:
        return tc.lr * (step + 1) / (tc.warmup_iters + 1)
    progress = min(1.0, (step - tc.warmup_iters) / max(1, tc.max_iters - tc.warmup_iters))
    return tc.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (tc.lr - tc.min_lr)


@dataclass
class State:
    """Everything that changes during training."""

    model: nn.Module  # the raw DiT; its parameters are the ones the optimizer updates in place
    optimizer: torch.optim.AdamW | Chained
    ema: dict[str, torch.Tensor]
    step: int = 0
    best_val_bpc: float = math.inf

    def arrays(self) -> dict:
        """The tensors a checkpoint holds (optimizer state flattened as '<param index>.<name>')."""
        opt = {f"{i}.{k}": v for i, s in self.optimizer.state_dict()["state"].items() for k, v in s.items()}
        return {"params": dict(self.model.state_dict()), "ema": self.ema, "opt": opt}

    def load(self, arrays: dict, meta: dict) -> None:
        self.model.load_state_dict(arrays["params"])
        for k, v in arrays["ema"].items():
            self.ema[k].copy_(v)
        opt_state: dict = {}
        for name, v in arrays.get("opt", {}).items():  # a converted nanoDD checkpoint has no optimizer state
            i, k = name.split(".", 1)
            opt_state.setdefault(int(i), {})[k] = v
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        self.step, self.best_val_bpc = meta["step"], meta.get("best_val_bpc", math.inf)


class Trainer:
    def __init__(
        self, cfg: Config, runtime: dist.Runtime, log: Log, loss: Loss | None = None, noise: NoiseFn | None = None
    ):
        """``cfg``'s method is given the data's tokenizer: its process's data symbols are the tokenizer's ids."""
        self.train_data, self.val_data, self.tokenizer = load_data(cfg, runtime)
        cfg = fit_to_tokenizer(cfg, self.tokenizer)
        self.cfg, self.runtime, self.log = cfg, runtime, log
        tc, method = cfg.train, method_of(cfg.method)
        self.loss = loss or partial(method.loss, cfg=cfg.method)
        self.bpt_name = "bound" if loss is None else "bpt"  # a loss of the caller's says what its bpt is
        self.noise = noise or (lambda gen, x0, slot: method.noise(gen, x0, cfg.method, slot))
        self.bound = method.bound(cfg.method)  # what validation reports, whatever the loss
        val = canonical_chunks(self.val_data, cfg.data.seq_len, tc.eval_batches * tc.batch_size)
        self.bytes_per_token = self.tokenizer.n_bytes(val) / val.numel()  # of what validation reads
        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        model = DiT(config_lib.network_config(cfg)).to(runtime.device)
        self.state = State(
            model, build_optimizer(model, tc), {k: v.detach().clone() for k, v in params_of(model).items()}
        )
        if tc.compile:
            dist.check_compile_possible(runtime.device)
        net = torch.compile(model) if tc.compile else model
        if runtime.distributed:
            net = DistributedDataParallel(
                net, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None
            )
        self.net, self.apply = net, make_apply(model, net)  # takes model's names, runs the wrapper
        self.amp = dist.autocast_dtype(tc.dtype, runtime.device)
        self.stop_requested = False

    # --- one optimizer step ------------------------------------------------------------------
    def micro_batch(self, micro: int, rank: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Micro-batch ``micro`` of this step for ``rank`` (default: this process): x0 and loss noise."""
        tc, dev = self.cfg.train, self.runtime.device
        rank = self.runtime.rank if rank is None else rank
        index = self.state.step * tc.grad_accum + micro
        x0 = train_batch(
            self.train_data,
            index,
            batch_size=tc.batch_size,
            seq_len=self.cfg.data.seq_len,
            seed=tc.seed,
            rank=rank,
            aligned=self.cfg.data.rows == "pad",
        ).to(dev, non_blocking=True)
        gen = torch.Generator(dev).manual_seed(key(tc.seed, rank, index))
        slot = Slot(rank * tc.grad_accum + micro, self.runtime.world_size * tc.grad_accum)
        return x0, self.noise(gen, x0, slot)

    def train_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Accumulate grad_accum micro-batches, clip, the optimizer step, EMA.  Returns the micro-batch mean of
        (loss, aux) as device tensors (no host sync).  Each phase is a ``record_function`` range, so
        ``benchmarks/profile_step.py`` can say what share of the step it takes."""
        tc, st = self.cfg.train, self.state
        torch.manual_seed(key(tc.seed, self.runtime.rank, st.step, 1))  # dropout masks of this step
        params = params_of(st.model)
        self.net.train()
        mean: dict[str, torch.Tensor] = {}
        for micro in range(tc.grad_accum):
            with record_function("data"):
                x0, noise = self.micro_batch(micro)
            last = micro == tc.grad_accum - 1
            sync = nullcontext() if (last or not self.runtime.distributed) else self.net.no_sync()
            with sync:
                with record_function("forward"), dist.autocast(self.runtime.device, self.amp):
                    loss, aux = self.loss(self.apply, params, x0, noise)
                if "bpt" not in aux:
                    raise TypeError(f"the loss's aux must carry 'bpt' (its bound in bits per token), got {sorted(aux)}")
                with record_function("backward"):
                    (loss / tc.grad_accum).backward()
            for k, v in {"loss": loss, **aux}.items():
                mean[k] = mean.get(k, 0) + v.detach() / tc.grad_accum
        with record_function("clip"):
            grad_norm = nn.utils.clip_grad_norm_(st.model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
        with record_function("optimizer"):
            for group in st.optimizer.param_groups:
                group["lr"] = lr_at(st.step, tc) * group.get("lr_scale", 1.0)
            st.optimizer.step()
            st.optimizer.zero_grad(set_to_none=True)
        if tc.ema_decay > 0:
            with record_function("ema"), torch.no_grad():
                for k, p in params.items():  # torch's foreach lerp is the same loop on CPU (no faster)
                    st.ema[k].lerp_(p, 1 - tc.ema_decay)
        st.step += 1
        return mean.pop("loss"), mean | {"grad_norm": grad_norm}

    # --- validation --------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> float:
        """The method's own bound in bits per character (``nanodd.evaluate``, stratified t) on the
        first eval_batches x batch_size canonical val chunks, EMA weights, a fixed seed so successive
        validations are comparable; chunks are split across ranks and the sums all-reduced."""
        tc, rt, st, L = self.cfg.train, self.runtime, self.state, self.cfg.data.seq_len
        chunks = canonical_chunks(self.val_data, L, tc.eval_batches * tc.batch_size)[rt.rank :: rt.world_size]
        st.model.eval()
        with dist.autocast(rt.device, self.amp):
            estimate = ev.stratified(
                self.bound,
                make_apply(st.model),
                st.ema if tc.ema_decay > 0 else params_of(st.model),
                chunks.to(rt.device),
                generator=torch.Generator(rt.device).manual_seed(key(tc.seed, rt.rank, 2**31)),
                batch_size=tc.batch_size,
            )
        total = torch.tensor([float(estimate.per_chunk.sum()), len(chunks)], device=rt.device, dtype=torch.float64)
        if rt.distributed:
            torch.distributed.all_reduce(total)
        return float(total[0] / total[1])

    # --- the loop ----------------------------------------------------------------------------
    def run(self, ckpts: Checkpoints | None) -> dict:
        """Train until max_iters or a stop request; validate and checkpoint every eval_interval."""
        tc, st = self.cfg.train, self.state
        recent: list[tuple[int, torch.Tensor, dict]] = []
        t0, last = time.time(), {}
        while st.step < tc.max_iters:
            loss, aux = self.train_step()
            recent.append((st.step, loss, aux))
            # ranks agree on stopping at log boundaries, so DDP runs pay no collective (host sync) per step
            agree = not self.runtime.distributed or st.step % tc.log_interval == 0
            stop = agree and dist.any_rank(self.stop_requested, self.runtime)
            done = st.step == tc.max_iters
            logged = st.step % tc.log_interval == 0 or done or stop
            if logged:
                last = self.report(recent, (time.time() - t0) / len(recent))  # speed over this interval
            if st.step % tc.eval_interval == 0 or done or stop:
                last["val_bpc"] = self.validate()
                last["val_bpb"] = last["val_bpc"] / self.bytes_per_token
                st.best_val_bpc = min(st.best_val_bpc, last["val_bpc"])
                self.log.metrics({"step": st.step, "val_bpc": last["val_bpc"], "val_bpb": last["val_bpb"]})
                per_byte = "" if self.tokenizer.name == "text8" else f", {last['val_bpb']:.3f} bits/byte"
                self.log.say(
                    f"step {st.step}: validation bound {last['val_bpc']:.3f} {self.unit()}{per_byte} "
                    f"(best {st.best_val_bpc:.3f})"
                )
                if ckpts is not None:
                    ckpts.save(st.step, st.arrays(), self.meta(), val_bpc=last["val_bpc"])
            if stop:
                break
            if logged:
                recent, t0 = [], time.time()
        return last

    def report(self, recent: list, seconds_per_step: float) -> dict:
        """Check the recent losses for non-finite values (no per-step sync), then log and print."""
        tc, st = self.cfg.train, self.state
        losses = torch.stack([loss for _, loss, _ in recent]).float().cpu()
        bad = (~torch.isfinite(losses)).nonzero()
        if dist.any_rank(len(bad) > 0, self.runtime):
            at = recent[int(bad[0])][0] if len(bad) else "a step on another rank"
            raise StopTraining(
                checks.Message(
                    f"non-finite loss at step {at}; stopping (the last checkpoint is kept). Try a lower ",
                    checks.Field("train.lr"),
                    " or ",
                    checks.Field("train.dtype", "fp32"),
                    ".",
                )
            )
        mean = {k: float(torch.stack([a[k] for _, _, a in recent]).float().mean()) for k in recent[-1][2]}
        tokens = tc.batch_size * tc.grad_accum * self.runtime.world_size * self.cfg.data.seq_len
        record = {
            "step": st.step,
            "loss": float(losses.mean()),
            **mean,
            "lr": lr_at(st.step - 1, tc),
            "tokens_per_s": tokens / seconds_per_step,
        }
        self.log.metrics(record | {"losses": losses.tolist()})
        self.log.say(
            f"step {st.step:>7}/{tc.max_iters} | loss {record['loss']:.4f} | {self.bpt_name} {mean['bpt']:.3f} "
            f"{self.unit()} | lr {record['lr']:.2e} | {record['tokens_per_s'] / 1e3:.1f}k tok/s | "
            f"ETA {duration((tc.max_iters - st.step) * seconds_per_step)}"
        )
        return record

    def unit(self) -> str:
        """What a bound per token is called here: bits/char for text8's characters."""
        return "bits/char" if self.tokenizer.name == "text8" else "bits/token"

    def meta(self) -> dict:
        return {
            "config": config_lib.to_dict(self.cfg),
            "tokenizer": self.tokenizer.identity(),
            "data": data_identity(Path(self.train_data.filename).parent),  # what evaluate checks the data against
            "best_val_bpc": self.state.best_val_bpc,
            "world_size": self.runtime.world_size,
        }


def fit_to_tokenizer(cfg: Config, tokenizer: tokenizers.TableTokenizer) -> Config:
    """``cfg`` with its process over the tokenizer's ids; a process set to another number than its class's
    default (text8's 27) is refused rather than overridden."""
    process, V = getattr(cfg.method, "process", None), tokenizer.vocab_size
    default = process is not None and type(process).__dataclass_fields__["n_symbols"].default
    if process is not None and process.n_symbols not in (default, V):
        raise checks.FieldError(
            f"the data has {V} symbols (the {tokenizer.name} tokenizer's ids) but the method's process expects "
            f"{process.n_symbols} (",
            checks.Field("method.process.n_symbols"),
            "; leave it unset and the tokenizer sets it)",
        )
    return config_lib.with_symbols(cfg, V)


def load_data(cfg: Config, runtime: dist.Runtime) -> tuple[np.ndarray, np.ndarray, tokenizers.TableTokenizer]:
    """Prepare the corpus once per node (local rank 0; the others wait), then memory-map train and val and
    load the tokenizer they were made with."""
    d, first = cfg.data, runtime.local_rank == 0
    if first:
        root = prepare_data(d)
    if runtime.distributed:
        torch.distributed.barrier()
    if not first:
        root = prepare_data(dataclasses.replace(d, force=False), progress=False)  # read what rank 0 wrote
    train_data, val_data = (load_split(root, split, d.rows, d.seq_len) for split in ("train", "val"))
    n_val, _ = eval_chunks(val_data, d.seq_len)
    if len(train_data) <= d.seq_len or n_val < runtime.world_size:
        raise DataError(
            checks.Message(
                checks.Field("data.seq_len"),
                f" {d.seq_len} is longer than the data allows "
                f"(train {len(train_data):,}, val {len(val_data):,} tokens, "
                f"{runtime.world_size} rank(s) each needing a val chunk)",
            )
        )
    return train_data, val_data, load_tokenizer(root)


def train(cfg: Config, loss: Loss | None = None, noise: NoiseFn | None = None) -> dict:
    """Run (or resume) training as configured; returns the last logged metrics, with ``stopped``: the
    number of the signal that ended it (SIGINT 2, SIGTERM 15), even on its last step, or False.

    ``loss`` (default: the config's method's) is any ``loss(apply, params, x0, noise) -> (scalar,
    aux)`` with ``aux["bpt"]``, e.g. a weighted sum of two methods' losses plus a regulariser; its
    ``noise(gen, x0, slot)`` defaults to the config's method's.  Validation always reports the
    config's method's bound.
    """
    config_lib.validate(cfg)
    with checks.within("train"):
        runtime = dist.setup(cfg.train.device)
    try:
        with locked_out_dir(Path(cfg.train.out_dir), runtime):
            return train_locked(cfg, runtime, loss, noise)
    finally:
        dist.teardown()


@contextmanager
def locked_out_dir(out: Path, runtime: dist.Runtime) -> Iterator[None]:
    """Hold ``out``'s run lock (``nanodd.shell.lock``) within the block: rank 0 takes it and every rank
    learns whether it was refused, so a refusal stops all of them at once."""
    with ExitStack() as held:
        refusal = None
        if runtime.is_main:
            try:
                held.enter_context(run_lock(out))
            except RunLocked as e:
                refusal = e
            except OSError as e:
                refusal = checks.FieldError(
                    checks.Field("train.out_dir"), f" {out}: cannot create it ({e.strerror or e})"
                )
        if dist.any_rank(refusal is not None, runtime):
            raise refusal or RunLocked(f"{out}: rank 0 could not lock it")
        yield


def train_locked(cfg: Config, runtime: dist.Runtime, loss: Loss | None, noise: NoiseFn | None) -> dict:
    """``train`` once its run directory is locked."""
    log = Log(Path(cfg.train.out_dir), runtime.is_main)
    trainer = Trainer(cfg, runtime, log, loss, noise)
    ckpts = Checkpoints(
        Path(cfg.train.out_dir) / "checkpoints", keep=cfg.train.keep_checkpoints, is_main=runtime.is_main
    )
    if resume(trainer, ckpts, log):
        if cfg.train.init_from is not None:
            log.say(
                checks.Message(
                    "note: ", checks.Field("train.init_from"), f" {cfg.train.init_from} ignored: the run resumed"
                )
            )
    elif cfg.train.init_from is not None:
        init_from(trainer, cfg.train.init_from, log)
    if runtime.is_main:  # the run carries its tokenizer: sampling needs no path back to the corpus
        tokenizers.save(trainer.tokenizer, Path(cfg.train.out_dir) / "tokenizer")
    with stop_on_signals(trainer):
        last = trainer.run(ckpts)
    ckpts.wait()
    if trainer.stop_requested:
        log.say(
            checks.Message(
                f"stopped at step {trainer.state.step}; checkpoint saved. Resume with the same settings plus ",
                checks.Field("train.resume", True),
            )
        )
    return last | {"stopped": trainer.stop_requested}


def resume(trainer: Trainer, ckpts: Checkpoints, log: Log) -> bool:
    """Load the latest good checkpoint when ``train.resume`` is set; refuse to overwrite one without it.
    Whether it resumed."""
    if not ckpts.steps():
        return False
    if not trainer.cfg.train.resume:
        raise checks.FieldError(
            f"{ckpts.directory} already holds checkpoints (steps {ckpts.steps()}); pass ",
            checks.Field("train.resume", True),
            " to continue, or choose another ",
            checks.Field("train.out_dir"),
        )
    arrays, meta = ckpts.restore_latest_good()  # steps exist: this restores one or raises
    saved = config_lib.from_dict(meta["config"])
    if (recorded := meta.get("tokenizer", tokenizers.text8().identity())) != trainer.tokenizer.identity():
        raise CheckpointError(
            f"checkpoint step {meta['step']} in {ckpts.directory} was trained on ids of the {recorded['name']} "
            f"tokenizer {recorded['sha256'][:12]}, but the data now reads {trainer.tokenizer.name} "
            f"{trainer.tokenizer.identity()['sha256'][:12]} (another corpus or tokenizer setting)"
        )
    for part in ("model", "method"):
        if getattr(saved, part) != getattr(trainer.cfg, part):
            raise CheckpointError(
                f"checkpoint step {meta['step']} in {ckpts.directory} was trained with {part} "
                f"{getattr(saved, part)}, but this run asks for {getattr(trainer.cfg, part)}"
            )
    if (was := saved.train.optimizer) != (now := trainer.cfg.train.optimizer):
        raise CheckpointError(
            f"checkpoint step {meta['step']} in {ckpts.directory} was trained with --train.optimizer {was}, but "
            f"this run asks for {now}: its optimizer state cannot carry over (resume with {was}, or start a new "
            f"run from its weights with --train.init-from)"
        )
    if (recorded := meta.get("data")) and recorded["sha256"] != (now := trainer.meta()["data"])["sha256"]:
        warn(
            f"checkpoint step {meta['step']} was trained on other data ({recorded['source']}, sha256 "
            f"{recorded['sha256'][:12]}) than {now['name']} holds now ({now['sha256'][:12]}); resuming on the new data"
        )
    trainer.state.load({k: {n: v.to(trainer.runtime.device) for n, v in d.items()} for k, d in arrays.items()}, meta)
    log.say(f"resumed from step {meta['step']} ({ckpts.directory / str(meta['step'])})")
    return True


SHAPE = ("vocab_size", "d_model", "n_blocks", "n_heads", "cond_dim", "freq_dim")
"""The DiT fields that decide its parameters' shapes: what ``init_from`` requires to agree."""


def init_from(trainer: Trainer, path: str, log: Log) -> None:
    """Start ``trainer``'s fresh run (step 0, a fresh optimizer) from the weights of the run or checkpoint at
    ``path`` (``workflows.load_checkpoint``): its EMA weights unless ``train.init_from_ema`` is off or it kept
    no EMA, as this run's parameters and EMA.  Refuses another network shape or another tokenizer."""
    loaded = load_checkpoint(path, ema=trainer.cfg.train.init_from_ema, device=trainer.runtime.device)
    use_ema = trainer.cfg.train.init_from_ema and loaded.cfg.train.ema_decay > 0  # as load_checkpoint decides
    flag = checks.Field("train.init_from")
    theirs, ours = loaded.model.cfg, trainer.state.model.cfg
    if any(getattr(theirs, f) != getattr(ours, f) for f in SHAPE):
        shape = lambda c: ", ".join(f"{f} {getattr(c, f)}" for f in SHAPE)  # noqa: E731
        raise CheckpointError(
            checks.Message(flag, f" {path}: its network ({shape(theirs)}) differs from this run's ({shape(ours)})")
        )
    if (recorded := loaded.tokenizer.identity()) != (now := trainer.tokenizer.identity()):
        raise CheckpointError(
            checks.Message(
                flag,
                f" {path}: trained on ids of the {recorded['name']} tokenizer {recorded['sha256'][:12]}, but this "
                f"run's data reads {now['name']} {now['sha256'][:12]} (another corpus or tokenizer setting)",
            )
        )
    st = trainer.state
    try:
        st.model.load_state_dict(loaded.model.state_dict())
    except RuntimeError as e:
        raise CheckpointError(
            checks.Message(
                flag, f" {path}: its weights do not fit this run's network: {' '.join(str(e).split())[:300]}"
            )
        ) from e
    with torch.no_grad():
        for k, p in params_of(st.model).items():
            st.ema[k].copy_(p)
    log.say(
        f"initialised from {loaded.path} ({'EMA' if use_ema else 'raw'} weights, "
        f"method {type(loaded.cfg.method).__name__.removesuffix('Config').lower()}); fresh optimizer, step 0"
    )


class stop_on_signals:
    """Within the block, SIGINT/SIGTERM ask the trainer to stop at the next step boundary."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame):
        self.trainer.log.say(f"received {signal.Signals(signum).name}: stopping after this step")
        self.trainer.stop_requested = signum  # truthy: what the CLI's exit code reports (128 + signum)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
