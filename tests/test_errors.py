"""Every bad input is one line: a walk over every option of every subcommand and preset of
``python -m experiments.text8``, enumerated from the dataclasses themselves, through bad values; the
cases that once slipped through, each with its exact message; one-line warnings; kill -9 during
``prepare`` and ``sample --sample.out``."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import importlib
import inspect
import io
import os
import pickle
import signal
import subprocess
import sys
import time
import types
import typing
import warnings
from pathlib import Path

import pytest
import torch
import tyro._strings

from experiments import commands, text8
from nanodd.config import Config, DataConfig, to_dict
from nanodd.data import DataError, load_split, prepare
from nanodd.shell.checkpoint import Checkpoints, CheckpointError
from nanodd.shell.workflows import load_checkpoint
from test_checkpoint import biggest_file, flip_byte, nanodd_file, random_dit

ROOT = Path(__file__).resolve().parents[1]

WALKED = {
    int: ("0", "-1", "nan", "inf", "1e12"),
    float: ("0", "-1", "nan", "inf", "1e12"),
    str: ("empty", "missing", "dir"),
    "choice": ("no-such-choice",),
}
"""The values each kind of option is fed ('missing': a path that does not exist, in a directory that
does; 'dir': an existing directory)."""

LEGAL = {
    "--model.dropout": "0",
    "--model.max-period": "1e12",
    "--train.warmup-iters": "0",
    "--train.seed": "0",
    "--train.weight-decay": "0 1e12",
    "--train.grad-clip": "0 1e12",
    "--train.beta1": "0",
    "--train.beta2": "0",
    "--train.ema-decay": "0",
    "--train.min-lr": "0",
    "--train.lr": "1e12",
    "--train.muon-lr-scale": "1e12",
    "--train.out-dir": "missing dir",
    "--data.data-dir": "missing dir",
    "--method.hybrid-coeff": "0 1e12",
    "--method.beta": "0",  # bd3lm's clip: t ~ U[beta, omega], beta in [0, omega)
    "--train.init-from": "dir",  # a checkpoint that exists: what it holds is checked when training loads it
    "--method.schedule.w": "1e12",
    "--method.schedule.sigma-max": "1e12",
    "--sample.seed": "0",
    "--sample.top-k": "0",
    "--sample.temperature": "1e12",
    "--sample.remdm.eta": "0",
    "--sample.block.stop-id": "0",  # an id: text8's space, any tokenizer's first id
    "--sample.prefix": "empty missing dir",  # any text: what the tokenizer encodes is checked once it loads
    "--sample.infill": "empty missing dir",
    "--sample.out": "missing",
    "--sample.gif": "missing",
    "--sample.judge": "dir",
    "--eval.seed": "0",
    "--eval.data-source": "missing dir",  # a prepared corpus's name; a directory is one for bytes, bpe, gpt2
    "--eval.data-dir": "dir",
    "--eval.out": "missing",
    "CHECKPOINT": "dir",
    "convert CHECKPOINT": "",
    "OUT_DIR": "missing dir",
}
"""The walked values an option accepts ('<subcommand> <option>' where one subcommand differs); every
other walked value must be refused.  An option missing here accepts none of them, so a new option is
walked the moment it is declared, and its legal values are stated here."""


@dataclasses.dataclass(frozen=True)
class Option:
    flag: str
    """As typed: --train.lr, or a positional's metavar (CHECKPOINT)."""
    kind: object
    """int, float, str or "choice"."""
    select: tuple[str, ...] = ()
    """Subcommand tokens that reach it (method:mdlm method.schedule:cosine)."""
    owner: type | None = None
    """The dataclass that declares it."""


def union_members(hint) -> list[tuple[str, type]]:
    """(subcommand name, dataclass) for each dataclass a field's type allows."""
    if typing.get_origin(hint) is typing.Annotated:
        cls, *meta = typing.get_args(hint)
        names = [m.name for m in meta if isinstance(getattr(m, "name", None), str)]
        return (
            [(names[0] if names else tyro._strings.subparser_name_from_type("", cls), cls)]
            if dataclasses.is_dataclass(cls)
            else []
        )
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(hint) for m in union_members(arg)]
    return [(tyro._strings.subparser_name_from_type("", hint), hint)] if dataclasses.is_dataclass(hint) else []


def scalar_kind(hint):
    """int, float, str or "choice" for a scalar field (None dropped from unions); None for flags (bool)."""
    args = (
        [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else [hint]
    )
    if typing.get_origin(args[0]) is typing.Literal:
        return "choice"
    return args[0] if args[0] in (int, float, str) else None


def walk(cls: type, prefix: str, select: tuple[str, ...] = ()):
    """Every option under dataclass ``cls``, every member of every union of dataclasses included."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for field in dataclasses.fields(cls):
        flag = prefix + field.name.replace("_", "-")
        if members := union_members(hints[field.name]):
            for name, member in members:
                yield from walk(member, flag + ".", select + ((f"{flag[2:]}:{name}",) if len(members) > 1 else ()))
        elif (kind := scalar_kind(hints[field.name])) is not None:
            yield Option(flag, kind, select, cls)


def command_options(fn) -> tuple[list[tuple[str, ...]], list[Option], list[Option]]:
    """A subcommand's presets (as argv prefixes; [()] for none), positionals and options."""
    presets, positionals, options = [()], [], []
    for name, hint in typing.get_type_hints(fn, include_extras=True).items():
        if name == "return":
            continue
        if "Positional" in str(hint):
            positionals.append(Option(name.upper(), str))
            continue
        members = union_members(hint) if dataclasses.is_dataclass(hint) else union_members(typing.get_args(hint)[0])
        if len(members) > 1:  # presets: their fields are the top-level options (--train.lr)
            presets = [(preset,) for preset, _ in members]
        for cls in dict.fromkeys(cls for _, cls in members):
            options += list(walk(cls, "--" if len(members) > 1 else f"--{name}."))
    return presets, positionals, options


def run_cli(argv: list[str], check_only: bool = True) -> tuple[int, str]:
    """text8.main in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            text8.main(argv, check_only=check_only)
            code = 0
        except SystemExit as e:
            code = e.code or 0
    return code, err.getvalue()


def test_every_option_of_every_subcommand_and_preset_takes_a_legal_value_or_refuses_it_in_one_line(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("NANODD_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir").mkdir()
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"never read: only checked")
    paths = {"empty": "", "missing": str(tmp_path / "missing"), "dir": str(tmp_path / "dir")}
    failures, walked, n_cases = [], set(), 0
    for command, fn in text8.subcommands().items():
        presets, positionals, options = command_options(fn)
        base = {p.flag: str(checkpoint) if p.flag == "CHECKPOINT" else str(tmp_path / "converted") for p in positionals}
        seen = set()
        for preset in presets:
            code, err = run_cli([command, *preset, *base.values()])
            if code != 0:
                failures.append(f"{command} {' '.join(preset)} with defaults: exit {code}: {err.strip()}")
            for option in positionals + options:
                if (option.flag, option.owner) in seen:
                    continue  # presets share their dataclasses: one walk per declared field
                seen.add((option.flag, option.owner))
                walked |= {option.flag, f"{command} {option.flag}"}
                legal = LEGAL.get(f"{command} {option.flag}", LEGAL.get(option.flag, "")).split()
                for value in WALKED[option.kind]:
                    typed = paths.get(value, value) if option.kind is str else value
                    args = {**base, option.flag: typed} if option in positionals else {**base}
                    flag = [] if option in positionals else [option.flag, typed]
                    argv = [command, *preset, *args.values(), *option.select, *flag]
                    code, err = run_cli(argv)
                    n_cases += 1
                    lines = err.strip().splitlines()
                    ok = (
                        code == 0 and not any(line.startswith("error:") for line in lines)
                        if value in legal
                        else (
                            code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and option.flag in lines[0]
                        )
                    )
                    if not ok or "Traceback" in err:
                        failures.append(
                            f"{' '.join(map(repr, argv))}: exit {code} (expected {0 if value in legal else 2}): "
                            f"{err.strip()!r}"
                        )
    assert not failures, f"{len(failures)} of {n_cases} cases:\n" + "\n".join(failures)
    assert n_cases > 500 and not set(LEGAL) - walked, set(LEGAL) - walked  # the table names only real options
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "dir"] and not any((tmp_path / "dir").iterdir())


def refused_in_one_line(code: int, err: str, *named: str) -> bool:
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and all(n in lines[0] for n in named)


def run_main(cli, argv: list[str]) -> tuple[int, str]:
    """A CLI's ``cli(argv)`` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli(argv)
            code = 0
        except SystemExit as e:
            code = e.code or 0
    return code, err.getvalue()


def test_the_method_options_under_compose_extra_are_walked_and_refusals_name_the_extra_flag(tmp_path, monkeypatch):
    """The method configs of ``python -m experiments.text8 train`` sit under ``--extra.`` in
    ``experiments.compose``: the same checks, and every refusal names the flag as typed there."""
    from experiments import compose
    from nanodd.config import MethodConfig
    from nanodd.data.prepare import prepare_data

    monkeypatch.setenv("NANODD_CACHE", str(tmp_path / "cache"))
    prepare_data(DataConfig())  # compose reads the corpus before its checks: its progress line is no error's
    monkeypatch.setattr(compose, "check", lambda *_: sys.exit(0))  # parsed and built: stop before training
    options = [o for name, cls in union_members(MethodConfig) for o in walk(cls, "--extra.", (f"extra:{name}",))]
    options += list(walk(compose.Options, "--compose."))
    failures, seen = [], set()
    for option in options:
        if (option.flag, option.owner) in seen:
            continue
        seen.add((option.flag, option.owner))
        legal = (LEGAL | {"--compose.lam": "0 1e12"}).get(option.flag.replace("--extra.", "--method.", 1), "").split()
        for value in WALKED[option.kind]:
            typed = {"empty": "", "missing": "/nonexistent/x", "dir": "/"}.get(value, value)
            code, err = run_main(compose.cli, ["mdlm-demo", *option.select, option.flag, typed])
            ok = code == 0 and not err if value in legal else refused_in_one_line(code, err, option.flag)
            if not ok or "--method." in err:
                failures.append(f"{option.select} {option.flag} {typed!r}: exit {code}: {err.strip()!r}")
    assert not failures, "\n".join(failures)
    assert {"--extra.schedule.eps", "--extra.T", "--extra.process.n-symbols", "--compose.lam"} <= {
        o.flag for o in options
    }


def instance_options(obj, prefix: str = "--"):
    """Every scalar option of the dataclass instance ``obj`` as it stands (its own method, schedule...)."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for field in dataclasses.fields(obj):
        flag, value = prefix + field.name.replace("_", "-"), getattr(obj, field.name)
        if dataclasses.is_dataclass(value):
            yield from instance_options(value, flag + ".")
        elif (kind := scalar_kind(hints[field.name])) in (int, float):
            yield Option(flag, kind, owner=type(obj))


def test_every_number_of_every_preset_swept_is_legal_or_refused_naming_its_flag(monkeypatch, tmp_path):
    """``experiments.sweep`` reaches the config's fields through ``--sweep.field PATH --sweep.values V``
    (``dataclasses.replace``, not tyro): a row's refusal still names the flag (``row method.T=0: --method.T
    must be >= 1``), and every value is legal or refused exactly as ``experiments.text8 train`` says."""
    from experiments import sweep

    monkeypatch.setattr(sweep, "claim", lambda *_: sys.exit(0))  # every row built and checked: stop there
    failures, seen = [], set()
    for preset, (_, cfg) in text8.PRESETS.items():
        for option in instance_options(cfg):
            if (option.flag, option.owner) in seen:
                continue
            seen.add((option.flag, option.owner))
            legal = LEGAL.get(option.flag, "").split()
            path = option.flag[2:]
            for value in WALKED[option.kind]:
                if option.kind is int and value in ("nan", "inf", "1e12"):
                    continue  # not an int: refused as a value of the path, before any row exists
                argv = [preset, "--sweep.field", path, "--sweep.values", value, "--sweep.dir", str(tmp_path / "s")]
                code, err = run_main(sweep.cli, argv)
                ok = code == 0 and not err if value in legal else refused_in_one_line(code, err, "row ", option.flag)
                if not ok:
                    failures.append(f"{preset} {path} {value}: exit {code}: {err.strip()!r}")
    assert not failures, "\n".join(failures)
    assert len(seen) > 30 and not (tmp_path / "s").exists()


# ---- the cases that slipped through, each with its exact message -----------------------------------


def test_sample_batch_size_zero_is_one_line_from_the_cli_and_the_library(tmp_path):
    assert run_cli(["sample", str(tmp_path), "--sample.batch-size", "0"]) == (
        2,
        "error: --sample.batch-size must be >= 1, got 0\n",
    )
    with pytest.raises(ValueError, match=r"^batch_size must be >= 1, got 0$"):  # the library names the field
        commands.sample_options()(batch_size=0)


def test_prepare_refuses_a_sequence_length_of_zero():
    assert run_cli(["prepare", "--data.seq-len", "0"]) == (2, "error: --data.seq-len must be >= 1, got 0\n")
    with pytest.raises(ValueError, match=r"^seq_len must be >= 1, got 0$"):
        DataConfig(seq_len=0)


def test_a_source_of_another_url_scheme_is_named_not_mangled():
    message = "source: the URL scheme 'ftp' is not supported (only http and https), got 'ftp://host/x.txt'"
    assert run_cli(["prepare", "--data.source", "ftp://host/x.txt"]) == (2, f"error: --data.{message}\n")
    with pytest.raises(ValueError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        DataConfig(source="ftp://host/x.txt")


def test_an_out_dir_that_cannot_be_created_names_the_option(tmp_path):
    code, err = run_cli(
        ["train", "demo", "--data.data-dir", str(tmp_path), "--train.out-dir", "/proc/nope", "--train.device", "cpu"],
        check_only=False,
    )
    assert (code, err) == (2, "error: --train.out-dir /proc/nope: cannot create it (No such file or directory)\n")


def test_garbage_bytes_are_not_a_checkpoint_and_a_pickle_needing_code_is_refused(tmp_path):
    garbage = tmp_path / "random.pt"
    garbage.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes()
    )
    assert run_cli(["sample", str(garbage)], check_only=False) == (
        2,
        f"error: {garbage}: not a checkpoint (neither a torch checkpoint nor a pickle of tensors)\n",
    )
    code, err = run_cli(["sample", str(tmp_path / "missing.pt")], check_only=False)
    assert (code, err) == (
        2,
        f"error: CHECKPOINT {tmp_path / 'missing.pt'}: not found (expected a run directory, "
        "its checkpoints/ directory, a step directory, or a nanoDD ckpt.pt)\n",
    )
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model_args": Config()}))  # loading it would import and build a class
    assert run_cli(["sample", str(evil)], check_only=False) == (
        2,
        f"error: {evil}: refused: a pickle that needs code to load (it builds Python objects, which could run "
        "arbitrary code; only tensors and plain containers are read, weights_only=True)\n",
    )


def damaged_run(tmp_path: Path, steps: tuple[int, ...], damaged: tuple[int, ...]) -> tuple[Path, dict[int, str]]:
    """A run directory with checkpoints of a small DiT at ``steps``, the ``damaged`` ones with a flipped byte;
    returns it and, per damaged step, the array whose digest now fails."""
    model = random_dit(0)
    cfg = dataclasses.replace(text8.DEMO, model=dataclasses.replace(model.cfg, vocab_size=None))
    directory = tmp_path / "run" / "checkpoints"
    ckpts = Checkpoints(directory)
    params = model.state_dict()  # what the trainer saves: parameters and buffers; EMA: the parameters
    for step in steps:
        ckpts.save(step, {"params": params, "ema": dict(model.named_parameters())}, {"config": to_dict(cfg)})
    ckpts.wait()
    names = {}
    for step in damaged:
        flip_byte(biggest_file(directory / str(step) / "state"))
        with pytest.raises(CheckpointError) as failure:
            ckpts.restore(step)
        names[step] = str(failure.value).split("array '")[1].split("'")[0]
        assert names[step].split("/", 1)[1] in params  # a digest failure, not an unreadable directory
    return tmp_path / "run", names


def test_a_damaged_newest_checkpoint_warns_in_one_line_naming_the_array_and_the_one_used_instead(tmp_path):
    run, names = damaged_run(tmp_path, steps=(1, 2), damaged=(2,))
    directory = run.absolute() / "checkpoints"
    code, err = run_cli(
        ["sample", str(run), "--sample.steps", "4", "--sample.no-live", "--sample.device", "cpu"], check_only=False
    )
    assert code == 0 and err.splitlines()[0] == (
        f"warning: checkpoint {directory / '2'}: array '{names[2]}' does not match its saved digest (the file was "
        f"modified or corrupted); using the older checkpoint {directory / '1'} instead"
    ), err
    assert not any("Warning" in line or line.startswith(" ") for line in err.splitlines())


@pytest.mark.parametrize("steps, older", [((1,), ""), ((1, 2), " (the 1 older ones fail too)")])
def test_a_run_whose_only_checkpoints_fail_their_digests_says_which_array_and_that_none_is_left(tmp_path, steps, older):
    run, names = damaged_run(tmp_path, steps=steps, damaged=steps)
    newest = run.absolute() / "checkpoints" / str(steps[-1])
    code, err = run_cli(["sample", str(run)], check_only=False)
    assert (code, err) == (
        2,
        f"error: checkpoint {newest}: array '{names[steps[-1]]}' does not match its saved "
        f"digest (the file was modified or corrupted); no older good checkpoint exists{older}\n",
    )
    with pytest.raises(CheckpointError, match="no older good checkpoint exists"):
        load_checkpoint(run)


def test_warnings_are_one_line_on_rank_0_only(monkeypatch, capsys):
    from experiments import cli

    with cli.one_line_errors():
        warnings.warn("the data is small")
    assert capsys.readouterr().err == "warning: the data is small\n"
    monkeypatch.setenv("RANK", "1")
    with cli.one_line_errors():
        warnings.warn("said by rank 1")
    assert capsys.readouterr().err == ""


def test_no_traceback_path_in_real_processes(tmp_path):
    """The in-process walk above, spot-checked in fresh interpreters: exit code 2, one line, no traceback."""
    for args, message in [
        (["sample", str(tmp_path), "--sample.batch-size", "0"], "--sample.batch-size must be >= 1"),
        (["train", "demo", "--train.max-iters", "nan"], "--train.max-iters: invalid literal"),
        (["prepare", "--data.source", "ftp://host/x.txt"], "the URL scheme 'ftp' is not supported"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "experiments.text8", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=os.environ | {"OMP_NUM_THREADS": "1"},
        )
        assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1 and not done.stdout


# ---- kill -9 loses nothing ---------------------------------------------------------------------------


def test_kill_9_during_prepare_leaves_the_old_data_or_nothing_trusted(tmp_path):
    corpus, data = tmp_path / "big.txt", tmp_path / "data"
    sentence = "the quick brown fox jumps over the lazy dog while seven wizards quietly hex a jovial sphinx "
    corpus.write_text(sentence * 200_000)  # 18 MB: its splits take a while to write
    old = bytes(load_split(prepare(str(corpus), data, progress=False), "train"))
    corpus.write_text(sentence[::-1] * 200_000)  # another text: a rebuild (--data.force) replaces every split
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.text8",
            "prepare",
            "--data.source",
            str(corpus),
            "--data.data-dir",
            str(data),
            "--data.force",
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    from nanodd.data.prepare import dataset_name

    out = data / dataset_name(str(corpus))  # file-big-<hash of its path>
    while proc.poll() is None and not any(p.suffix == ".tmp" for p in out.iterdir()):
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed while a split was being written
    try:
        assert bytes(load_split(out, "train")) == old  # the previous complete data, still whole
    except DataError:
        pass  # or nothing that prepare (or training) trusts
    fresh = bytes(load_split(prepare(str(corpus), tmp_path / "fresh", progress=False), "train"))
    assert bytes(load_split(prepare(str(corpus), data, progress=False), "train")) == fresh != old


def test_kill_9_during_sample_out_leaves_the_whole_file_or_none(tmp_path):
    ckpt = nanodd_file(tmp_path, random_dit(0), random_dit(1))
    out = tmp_path / "samples.txt"
    args = [
        sys.executable,
        "-m",
        "experiments.text8",
        "sample",
        str(ckpt),
        "--sample.batch-size",
        "64",
        "--sample.steps",
        "10",
        "--sample.no-live",
        "--sample.device",
        "cpu",
        "--sample.out",
        str(out),
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        if "sample(s)" in line:  # printed just before the file is written
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    if out.exists():
        assert [len(row) for row in out.read_text().splitlines()] == [256] * 64
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, env=env)
    assert [len(row) for row in out.read_text().splitlines()] == [256] * 64


# ---- every other main: the same walk, each main's options checked where they are built ----------

MAINS = sorted(
    f"{p.parent.name}.{p.stem}"
    for folder in ("experiments", "benchmarks")
    for p in (ROOT / folder).glob("*.py")
    if "__main__" in p.read_text()
    and any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in ast.parse(p.read_text()).body)
)
"""Every module of experiments/ and benchmarks/ with a ``main`` that runs as a program."""

THROUGH_COMMANDS = ("experiments.text8", "experiments.corpus")
"""Mains built by ``experiments.commands`` (walked above, through text8's subcommands)."""

BASE_ARGS = {
    "experiments.sweep": ["demo", "--sweep.field", "train.lr", "--sweep.values", "1e-3"],
    "experiments.timesteps": ["CKPT"],
    "experiments.clip": ["CKPT"],
    "benchmarks.sampling": ["CKPT", "--judge", "CKPT"],
    "benchmarks.distillation": ["CKPT", "--judge", "CKPT"],
}
"""What a main needs on its command line before an option is walked (CKPT: any existing path)."""

LEGAL_MAINS = {
    "--compose.lam": "0 1e12",
    "--budget": "1e12",
    "--sweep.budget": "1e12",
    "--goal": "1e12",
    "--ddp-procs": "0",
    "--mb": "1e12",
    "--prepare-mb": "1e12",
    "--bpe-train-mb": "1e12",
    "--file-mb": "1e12",
    "--chunk-mb": "1e12",
    "--tolerance": "1e12",
    "--seed": "0",
}
"""Walked values the options of the other mains accept (as in ``LEGAL``); every other one is refused."""


def main_options(module) -> tuple[list[str], list[Option]]:
    """The argv prefix that picks a main's first preset (where it has no default) and its own options."""
    signature = inspect.signature(module.main)
    prefix, options = [], []
    for name, hint in typing.get_type_hints(module.main, include_extras=True).items():
        if name == "return":
            continue
        members = union_members(hint)
        if len(members) > 1:  # presets or a method union: walked by the tests above
            if signature.parameters[name].default is inspect.Parameter.empty:
                prefix.append(members[0][0])
            continue
        spelled = next((m.name for m in typing.get_args(hint)[1:] if isinstance(getattr(m, "name", None), str)), name)
        for _, cls in members:
            options += [o for o in walk(cls, "--" if spelled == "" else f"--{spelled}.") if o.kind is not str]
    return prefix, options


def test_every_main_in_experiments_and_benchmarks_prints_one_line_for_a_bad_option():
    """Each main ends through ``experiments/cli.py``: an unknown option is one ``error:`` line and exit 2
    (tyro's box and tracebacks before, for benchmarks.sampling, checkpoint_save and demos)."""
    assert len(MAINS) >= 14
    failures = []
    for name in MAINS:
        module = importlib.import_module(name)
        entry = module.main if name in THROUGH_COMMANDS else getattr(module, "cli", None)
        if entry is None:
            failures.append(f"{name}: no cli(args) through experiments.cli.run")
            continue
        code, err = run_main(entry, ["--no-such-option"])
        if not refused_in_one_line(code, err):
            failures.append(f"{name}: exit {code}: {err.strip()[:300]!r}")
        main_block = ast.unparse(ast.parse((ROOT / name.replace(".", "/")).with_suffix(".py").read_text()).body[-1])
        if main_block not in ("if __name__ == '__main__':\n    cli()", "if __name__ == '__main__':\n    main()"):
            failures.append(f"{name}: its __main__ block is not cli() / main(): {main_block!r}")
    assert not failures, "\n".join(failures)
    flags = {o.flag for m in MAINS if m not in THROUGH_COMMANDS for o in main_options(importlib.import_module(m))[1]}
    assert set(LEGAL_MAINS) <= flags, set(LEGAL_MAINS) - flags  # the table names only real options


@pytest.mark.parametrize("name", [m for m in MAINS if m not in THROUGH_COMMANDS])
def test_every_number_and_choice_of_every_other_main_is_legal_or_refused_in_one_line(name, tmp_path, monkeypatch):
    """The walk above, for compose, sweep, timesteps and every benchmark: each option of its options
    dataclass, fed 0, -1, nan, inf, 1e12 (numbers) or no such choice, is accepted as ``LEGAL_MAINS`` says or
    refused in one line naming it when the options are built (``main`` replaced, so nothing runs)."""
    module = importlib.import_module(name)
    ran = []
    monkeypatch.setattr(module, "main", functools.wraps(module.main)(lambda *a, **k: ran.append(1)))
    monkeypatch.chdir(tmp_path)
    prefix, options = main_options(module)
    base = [str(tmp_path) if a == "CKPT" else a for a in BASE_ARGS.get(name, [])]
    code, err = run_main(module.cli, prefix + base)
    assert code == 0 and ran, f"defaults: exit {code}: {err.strip()!r}"
    failures, seen = [], set()
    for option in options:
        if option.flag in seen:
            continue
        seen.add(option.flag)
        legal = LEGAL_MAINS.get(option.flag, "").split()
        for value in WALKED[option.kind]:
            code, err = run_main(module.cli, [*prefix, *base, *option.select, option.flag, value])
            ok = code == 0 and "error:" not in err if value in legal else refused_in_one_line(code, err, option.flag)
            if not ok or "Traceback" in err:
                failures.append(f"{option.flag} {value}: exit {code} (legal: {value in legal}): {err.strip()!r}")
    assert not failures, f"{name}:\n" + "\n".join(failures)
    assert not list(tmp_path.iterdir())
