"""Sweeps: short trainings of one preset over the values of some config fields, one after another,
each in its own run directory, with one table of results.

    python -m experiments.sweep demo --train.max-iters 300 --sweep.field train.lr --sweep.values 1e-3 3e-3 1e-2
    python -m experiments.sweep mdlm-demo --train.max-iters 300 --sweep.field train.lr model.d-model \\
        --sweep.values 1e-3,3e-3 64,128                                        # a 2 x 2 grid
    python -m experiments.sweep demo --sweep.field train.lr train.warmup-iters --sweep.values 1e-3,3e-3 10,50 \\
        --sweep.mode zip                                                       # two rows: (1e-3, 10), (3e-3, 50)

**Syntax.**  ``--sweep.field`` names one or more config fields by their dotted path, as ``--help`` of
``python -m experiments.text8 train PRESET`` lists them (``train.lr``, ``model.d-model``, ``method.T``,
``method.schedule.eps``; dashes or underscores).  ``--sweep.values`` gives one comma-separated list
per field, in the same order; with a single field the values may be space-separated instead.  Values
are parsed as the field's type (int, float, bool, str, a choice, or ``none`` where None is allowed).
``--sweep.mode grid`` runs every combination, ``zip`` the i-th values of all fields together.  The
preset's other fields are overridable as usual (``--train.max-iters 300``).

**Rows.**  Each row is the preset plus its values, trained by the same trainer as
``experiments.text8 train`` in ``<dir>/<field=value,...>``, then scored by the evaluator
(``evaluate_checkpoint``: the method's own bound, stratified t, EMA weights, on the first
``eval_chunks`` validation chunks: mean +- standard error).  ``tokens/s`` is the trainer's rate over
its last log interval; ``wall time`` is the training's (data, model, steps, validations, checkpoints).

**Resuming.**  ``results.csv`` and ``results.md`` in ``<dir>`` are rewritten after every row, each
atomically (a temporary file, then a rename): a row is finished exactly when it is in results.csv.
Rerunning the command skips finished rows and runs the others; an unfinished row starts again from
scratch (its directory is cleared, so its wall time stays honest).  More values can be added later:
the directory remembers the preset and fields (``sweep.json``) and refuses another.  Ctrl-C stops the
current row at its next step and exits 130 (SIGTERM: 143); every finished row stays.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import re
import sys
import time
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import tyro

from experiments import budget
from experiments.cli import exit_if_stopped, run
from experiments.presets import PRESETS, choice
from nanodd import checks, config as config_lib
from nanodd.config import Config
from nanodd.data.prepare import atomic_write
from nanodd.shell.workflows import evaluate_checkpoint, load_checkpoint
from nanodd.shell import lock
from nanodd.shell.lock import run_lock
from nanodd.shell.log import duration
from nanodd.shell.trainer import train

PresetChoice = choice(PRESETS)
"""The preset a sweep starts from: one of ``experiments.text8 train``'s."""
OWNED = ("train.out_dir", "train.resume")
"""Fields the sweep sets itself."""
RESULTS = ("val_bpc", "val_se", "n_chunks", "steps", "tokens_per_s", "wall_s", "finished")


@dataclass(frozen=True)
class Sweep:
    field: tuple[str, ...]
    """Dotted config fields to vary, e.g. train.lr model.d-model method.T."""
    values: tuple[str, ...]
    """One comma-separated list of values per field, in --sweep.field's order, e.g. 1e-3,3e-3 64,128
    (a single field also takes space-separated values: 1e-3 3e-3)."""
    mode: Literal["grid", "zip"] = "grid"
    """grid: every combination of the fields' values; zip: the i-th values together (equal lengths)."""
    dir: str | None = None
    """Where the rows' run directories, results.csv and results.md go (default: the preset's
    --train.out-dir plus '-sweep')."""
    eval_chunks: int = 64
    """Validation chunks on which every row's bound (mean +- standard error) is evaluated."""
    n_t: int = 1
    """Stratified times per validation chunk in that evaluation (more: a smaller standard error)."""
    budget: float | None = None
    """Seconds of training per row: a probe of probe_steps steps times the row, then its max_iters is what
    fits (its warmup and EMA horizon scaled with it; experiments.budget).  None: the preset's max_iters."""
    probe_steps: int = 10
    """With a budget: optimizer steps of the timing probe of the row with the most tokens per step (the
    second half is timed); every other row's probe trains as many tokens, in proportionally more steps."""

    def __post_init__(self):
        checks.at_least("eval_chunks", self.eval_chunks, 2)  # a standard error needs two
        checks.at_least("n_t", self.n_t, 1)
        if self.budget is not None:
            checks.at_least("budget", self.budget, 1)
        checks.at_least("probe_steps", self.probe_steps, 4)
        checks.named("dir", self.dir)


@dataclass(frozen=True)
class Row:
    name: str
    """Its key in results.csv and the name of its run directory (``row_name``)."""
    values: dict[str, Any]
    """Dotted field -> its value in this row."""
    cfg: Config
    """The preset with these values, training in its own run directory."""


def row_name(values: dict[str, Any]) -> str:
    """A row's key in results.csv and the name of its run directory, e.g. 'train.lr=0.003,model.d_model=64'."""
    return re.sub(r"[^\w.,=+-]", "_", ",".join(f"{k}={v}" for k, v in values.items()))


def field_hint(cfg: Config, path: str):
    """The type of the dotted field ``path`` (dashes or underscores) of ``cfg``; one line if it has none."""
    obj, names = cfg, path.replace("-", "_").split(".")
    for i, name in enumerate(names):
        known = [f.name for f in fields(obj)] if is_dataclass(obj) else []
        if name not in known:
            where = ".".join(names[:i]) or "the config"
            has = f"; it has {', '.join(known)}" if known else " (it is a value, not a section)"
            raise ValueError(f"--sweep.field {path}: {where} ({type(obj).__name__}) has no field {name!r}{has}")
        hint, obj = typing.get_type_hints(type(obj))[name], getattr(obj, name)
    if is_dataclass(obj):
        raise ValueError(
            f"--sweep.field {path} is a section ({type(obj).__name__}); name one of its fields: "
            + ", ".join(f"{path}.{f.name}" for f in fields(obj))
        )
    return hint


def parse(text: str, hint, path: str):
    """``text`` as a value of ``hint``: int, float, bool, str, a Literal, or a union of these with None."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    if type(None) in options and text.lower() == "none":
        return None
    for option in options:
        if typing.get_origin(option) is Literal:
            if match := [a for a in typing.get_args(option) if str(a) == text]:
                return match[0]
        elif option is bool and text.lower() in ("true", "false"):
            return text.lower() == "true"
        elif option in (int, float, str):
            try:
                return option(text)
            except ValueError:
                pass
    name = " | ".join(getattr(o, "__name__", None) or str(o).replace("typing.", "") for o in options)
    raise ValueError(f"--sweep.values: {text!r} is not a value of {path} ({name})")


def replace_field(obj, names: list[str], value):
    """A copy of the dataclass ``obj`` with the field at ``names`` set (its checks run again; a refusal
    names the field by its path from ``obj``)."""
    head, *rest = names
    with checks.within(head):
        inner = replace_field(getattr(obj, head), rest, value) if rest else value
    return dataclasses.replace(obj, **{head: inner})


def rows_of(cfg: Config, sweep: Sweep, root: Path) -> list[Row]:
    """Every row of the sweep, each config checked (parse, dataclass checks, ``config.validate``)."""
    paths = [p.replace("-", "_") for p in sweep.field]
    if not paths or len(set(paths)) < len(paths) or set(paths) & set(OWNED):
        raise ValueError(f"--sweep.field: name each field once, and not {' or '.join(OWNED)} (the sweep sets them)")
    groups = [",".join(sweep.values)] if len(paths) == 1 else list(sweep.values)
    if len(groups) != len(paths):
        raise ValueError(
            f"--sweep.values: {len(paths)} fields need {len(paths)} comma-separated lists, got "
            f"{len(groups)}: {' '.join(sweep.values)}"
        )
    lists = [[parse(t, field_hint(cfg, p), p) for t in g.split(",") if t] for p, g in zip(paths, groups)]
    if not all(lists):
        raise ValueError(f"--sweep.values: every field needs at least one value, got {' '.join(sweep.values)}")
    if sweep.mode == "zip" and len({len(v) for v in lists}) > 1:
        raise ValueError(f"--sweep.mode zip needs as many values for every field, got {[len(v) for v in lists]}")
    rows = []
    for combo in itertools.product(*lists) if sweep.mode == "grid" else zip(*lists):
        values = dict(zip(paths, combo))
        name, row_cfg = row_name(values), cfg
        try:  # a field's own check (in __post_init__) or the config's
            for path, value in [*values.items(), ("train.out_dir", str(root / name))]:
                row_cfg = replace_field(row_cfg, path.split("."), value)
            config_lib.validate(row_cfg)
        except checks.FieldError as e:  # names a path in the config: the CLI names its flag
            raise checks.FieldError(f"row {name}: ", e.message) from None
        except ValueError as e:
            raise ValueError(f"row {name}: {e}") from None
        rows.append(Row(name, values, row_cfg))
    return rows


def claim(root: Path, cfg: Config, paths: list[str], budget: float | None = None) -> None:
    """Record what this directory sweeps (sweep.json: the preset, the fields and any budget); refuse a
    directory holding another sweep."""
    base = config_lib.to_dict(cfg)
    del base["train"]["out_dir"]  # the sweep sets it per row
    spec = {"base": base, "fields": paths} | ({} if budget is None else {"budget": budget})
    path = root / "sweep.json"
    if path.exists() and json.loads(path.read_text()) != spec:
        raise ValueError(
            f"{root} holds a sweep of another preset, overrides, fields or budget ({path}); choose another --sweep.dir"
        )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(spec, indent=1) + "\n").encode())


def run_row(row: Row, sweep: Sweep, rows: list[Row]) -> dict:
    """Train the row from scratch (with a budget: probe, as many tokens as every row's probe, then the
    steps that fit), then evaluate its bound; the row's results (not yet recorded)."""
    out, cfg = Path(row.cfg.train.out_dir), row.cfg
    with run_lock(out):  # the row's directory, made by this sweep: no other writer while it is cleared
        lock.clear(out)  # an unfinished earlier attempt
        if sweep.budget is not None:
            steps = budget.probe_steps(sweep.probe_steps, cfg, [r.cfg for r in rows])
            cfg = budget.fit(cfg, sweep.budget, budget.seconds_per_step(cfg, steps, out))
            lock.clear(out)
        start = time.perf_counter()
        last = train(cfg)
        wall = time.perf_counter() - start
    exit_if_stopped(last)  # SIGINT / SIGTERM, even on the row's last step: exit 130 / 143
    bound = evaluate_checkpoint(load_checkpoint(out), n_t=sweep.n_t, max_chunks=sweep.eval_chunks)["results"]
    return {
        "val_bpc": bound["bpc"],
        "val_se": bound["stderr"],
        "n_chunks": bound["n_chunks"],
        "steps": last["step"],
        "tokens_per_s": last["tokens_per_s"],
        "wall_s": wall,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_results(root: Path) -> dict[str, dict]:
    """Finished rows by name (results.csv is complete or absent: it is only ever renamed into place)."""
    path = root / "results.csv"
    return {r["row"]: r for r in csv.DictReader(path.open())} if path.exists() else {}


def write_results(root: Path, paths: list[str], done: dict[str, dict], total: int) -> None:
    """results.csv and results.md, each replaced atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, ["row", *paths, *RESULTS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(done.values())
    atomic_write(root / "results.csv", text.getvalue().encode())
    lines = [
        f"Sweep over {', '.join(paths)}: {len(done)} of {total} rows finished.  val bound: the method's own, "
        "bits/char, mean ± s.e. over validation chunks; tokens/s and wall time of the training.",
        "",
        "| " + " | ".join([*paths, "val bound", "tokens/s", "wall time"]) + " |",
        "|" + "---|" * (len(paths) + 3),
    ]
    for r in done.values():
        lines.append(
            "| "
            + " | ".join(
                [
                    *(str(r[p]) for p in paths),
                    f"{float(r['val_bpc']):.3f} ± {float(r['val_se']):.3f}",
                    f"{float(r['tokens_per_s']) / 1e3:.1f}k",
                    wall_time(float(r["wall_s"])),
                ]
            )
            + " |"
        )
    atomic_write(root / "results.md", ("\n".join(lines) + "\n").encode())


def wall_time(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else duration(seconds)


def main(cfg: Annotated[PresetChoice, tyro.conf.arg(name="")], sweep: Sweep) -> None:
    """Train PRESET once per row of the sweep (each field overridable as in experiments.text8 train)
    and write results.csv and results.md."""
    root = Path(sweep.dir or f"{cfg.train.out_dir}-sweep")
    rows = rows_of(cfg, sweep, root)
    paths = list(rows[0].values)
    claim(root, cfg, paths, sweep.budget)  # another sweep's directory is refused before anything is locked or created
    with run_lock(root):  # one sweep per directory at a time
        sweep_rows(root, paths, rows, sweep)
    print((root / "results.md").read_text())
    print(f"wrote {root / 'results.csv'} and {root / 'results.md'}", file=sys.stderr)


def sweep_rows(root: Path, paths: list[str], rows: list[Row], sweep: Sweep) -> None:
    """Train and record every row not finished yet."""
    done = read_results(root)
    for i, row in enumerate(rows, 1):
        if row.name in done:
            print(f"sweep: row {i}/{len(rows)} {row.name}: finished earlier, skipped", file=sys.stderr)
            continue
        print(
            f"sweep: row {i}/{len(rows)} {row.name}: training in {row.cfg.train.out_dir}", file=sys.stderr, flush=True
        )
        done[row.name] = {"row": row.name, **row.values, **run_row(row, sweep, rows)}
        write_results(root, paths, done, len(rows))
    write_results(root, paths, done, len(rows))


def cli(args: list[str] | None = None) -> None:
    """Parse ``args`` (default: sys.argv) and run; a user's mistake is one ``error:`` line and exit 2."""
    run(
        main,
        args,
        prog="python -m experiments.sweep",
        description=__doc__.split("**Rows.**")[0],
        interrupted="interrupted: finished rows are in results.csv; rerun the same command to run the rest",
    )


if __name__ == "__main__":
    cli()
