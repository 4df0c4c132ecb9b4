"""Checkpoints through orbax: asynchronous, atomic, integrity-checked.

A checkpoint is a step directory ``<dir>/<step>/`` holding

- ``state``: a pytree of numpy arrays (``params``, ``ema``, ``opt``), written by orbax's PyTree
  handler (async: training goes on while it is written; atomic: a temporary directory is renamed
  only when complete, so a kill leaves either the old or the new checkpoint, never half of one);
- ``meta``: JSON with the format version, step, config, best validation, the SHA-256 digest of
  every array, and ``meta_sha256``: the digest of everything else in the meta (``meta_digest``).
  orbax restores bit-flipped data without complaint, so every restore recomputes the digests and
  refuses a mismatch, naming the checkpoint and the array (or its metadata): an edited ``seq_len``,
  ``T`` or ``step`` makes the checkpoint corrupt like a flipped weight, and ``restore_latest_good``
  falls back to the previous one.  Checkpoints written before metadata digests still load.

torch <-> numpy is exact for every dtype used; bf16 travels as its uint16 bit pattern viewed as
``ml_dtypes.bfloat16``.  orbax (and the jax it pulls in, ~0.5 s to import) loads lazily, inside this
module's functions.  Only rank 0 writes; every rank restores.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import nanodd.shell.log as log

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the checkpoint and what is wrong."""


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.uint16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy().copy()


def to_torch(a: np.ndarray) -> torch.Tensor:
    a = np.asarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def digest(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.name}{a.shape}".encode())
    h.update(a.view(np.uint8).tobytes() if a.size else b"")
    return h.hexdigest()


def meta_digest(meta: dict) -> str:
    """SHA-256 of a checkpoint's metadata (JSON with sorted keys) without its own ``meta_sha256``."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """{'params': {'w': a}} -> {'params/w': a}."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= flatten(v, f"{prefix}{k}/")
        else:
            out[f"{prefix}{k}"] = v
    return out


class Checkpoints:
    """The checkpoints of one run: ``save`` (rank 0, async), ``restore``, ``restore_latest_good``."""

    def __init__(self, directory: Path, *, keep: int = 3, is_main: bool = True):
        import orbax.checkpoint as ocp
        from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

        # orbax logs every failure of its background threads with a traceback; failure_names says it in one line
        logging.getLogger("absl").setLevel(logging.CRITICAL)
        self.directory, self.is_main = Path(directory).absolute(), is_main
        self.pending: int | None = None  # the step whose asynchronous save may still be running
        self.writers: list[threading.Thread] = []  # the threads that save started (one per handler's commit)
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"{self.directory} is not a directory; move it away or choose another train.out_dir")
        policy = pp.AnyPreservationPolicy(
            [pp.LatestN(keep), pp.BestN(get_metric_fn=lambda m: m["val_bpc"], reverse=True, n=1)]
        )
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=is_main, read_only=not is_main)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """Steps of complete (committed) checkpoints, oldest first."""
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: dict, meta: dict, val_bpc: float | None = None) -> None:
        """Start writing ``state`` (nested dicts of tensors) and ``meta`` at ``step``; returns at once."""
        if not self.is_main:
            return
        import orbax.checkpoint as ocp

        arrays = {k: to_numpy(v) for k, v in flatten(state).items()}
        meta = meta | {
            "format_version": FORMAT_VERSION,
            "step": step,
            "digests": {k: digest(a) for k, a in arrays.items()},
        }
        meta = json.loads(json.dumps(meta))  # as it will be read back: tuples as lists
        meta["meta_sha256"] = meta_digest(meta)
        tree = unflatten(arrays)
        metrics = {"val_bpc": val_bpc} if val_bpc is not None else None
        args = ocp.args.Composite(state=ocp.args.PyTreeSave(tree), meta=ocp.args.JsonSave(meta))
        self.wait()  # an earlier asynchronous save's failure is named by its own step
        self.pending = step
        before = set(threading.enumerate())
        with self.failure_names(step):
            self.manager.save(step, args=args, metrics=metrics, force=True)
        self.writers = [t for t in threading.enumerate() if t not in before]

    @contextmanager
    def failure_names(self, step: int | None):
        """Turn any error of a save into one CheckpointError line naming ``step``, whose temporary directory
        is removed (the complete checkpoints stay as they are)."""
        try:
            yield
        except Exception as e:
            self.pending = None
            # orbax surfaces the first handler's error while the others may still write into the temporary
            # directory; it is removed once they have ended (for at most DRAIN_S seconds)
            deadline = time.monotonic() + _DrainingLoop.DRAIN_S
            for writer in self.writers:  # Thread.join itself: orbax's commit threads re-raise their error in join
                threading.Thread.join(writer, timeout=max(0.0, deadline - time.monotonic()))
            self.writers = []
            for tmp in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)
            good = [s for s in self.manager.all_steps() if s != step]
            raise CheckpointError(
                f"could not write checkpoint {step} under {self.directory} ({_reason(e)}); training stopped, "
                f"the last complete checkpoint is {max(good) if good else 'none'}"
            ) from None

    def restore(self, step: int) -> tuple[dict, dict]:
        """(state as nested dicts of tensors, meta) of one checkpoint, digests verified."""
        import orbax.checkpoint as ocp

        where = self.directory / str(step)
        try:
            with _draining_event_loops():
                r = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(), meta=ocp.args.JsonRestore())
                )
        except Exception as e:  # orbax raises many types for a damaged directory
            raise CheckpointError(f"checkpoint {where} cannot be read: {type(e).__name__}: {e}") from e
        meta, arrays = r.meta, flatten(r.state)
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {where} has format version {meta.get('format_version')}, "
                f"this nanodd reads {FORMAT_VERSION}"
            )
        if "meta_sha256" in meta and (meta_digest(meta) != meta["meta_sha256"] or meta.get("step") != step):
            raise CheckpointError(
                f"checkpoint {where}: its metadata (config, step) does not match its saved digest "
                "(the file was modified or corrupted)"
            )
        expected = meta["digests"]
        if set(expected) != set(arrays):
            raise CheckpointError(f"checkpoint {where} is missing arrays {sorted(set(expected) - set(arrays))}")
        for name, a in arrays.items():
            if digest(a) != expected[name]:
                raise CheckpointError(
                    f"checkpoint {where}: array '{name}' does not match its saved digest "
                    "(the file was modified or corrupted)"
                )
        return unflatten({k: to_torch(a) for k, a in arrays.items()}), meta

    def restore_latest_good(self, warn: Callable[[str], None] = log.warn) -> tuple[dict, dict] | None:
        """The newest checkpoint that verifies, with one ``warn`` per newer one that does not, naming the step
        used instead; None when there is no checkpoint; CheckpointError when none verifies."""
        failures = []
        for step in reversed(self.steps()):
            try:
                restored = self.restore(step)
            except CheckpointError as e:
                failures.append(str(e))
                continue
            for failure in failures:
                warn(f"{failure}; using the older checkpoint {self.directory / str(step)} instead")
            return restored
        if failures:
            older = f" (the {len(failures) - 1} older ones fail too)" if len(failures) > 1 else ""
            raise CheckpointError(f"{failures[0]}; no older good checkpoint exists{older}")
        return None

    def wait(self) -> None:
        """Block until pending saves are committed (raises if a save failed, e.g. disk full)."""
        with self.failure_names(self.pending):
            self.manager.wait_until_finished()
        self.pending = None

    def close(self) -> None:
        self.manager.close()


class _DrainingLoop(asyncio.SelectorEventLoop):
    """An event loop that lets its unfinished tasks end before it closes (for at most ``DRAIN_S`` seconds).

    orbax restores every array concurrently in a fresh loop and closes it as soon as one read fails; the
    other reads then finish in tensorstore's threads and call back into the closed loop, and each
    prints a 'RuntimeError: Event loop is closed' traceback after our one error line."""

    DRAIN_S = 10.0

    def close(self) -> None:
        pending = [] if self.is_running() or self.is_closed() else [t for t in asyncio.all_tasks(self) if not t.done()]
        if pending:
            _, late = self.run_until_complete(asyncio.wait(pending, timeout=self.DRAIN_S))
            for task in late:
                task.cancel()
        super().close()


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):
    _loop_factory = _DrainingLoop


@contextmanager
def _draining_event_loops():
    """Within the block, new event loops are ``_DrainingLoop``s."""
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DrainingPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


def _reason(e: Exception) -> str:
    """An error of orbax, tensorstore or the OS in a few words: a full disk says so, whatever raised it."""
    text = f"{type(e).__name__}: {e}"
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in text:
        return "No space left on device"
    return text.splitlines()[0] if text.strip() else type(e).__name__


def unflatten(flat: dict) -> dict:
    """{'params/w': a} -> {'params': {'w': a}}."""
    out: dict = {}
    for key, v in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out
