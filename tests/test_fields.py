"""The core speaks fields, the CLI speaks flags: a library check names the dataclass field as Python
spells it (``nanodd.checks``), and ``experiments/cli.py`` names the flag the user typed, whichever
prefix the dataclass sits under (``--method.schedule.eps`` in text8, ``--extra.schedule.eps`` in
compose, ``--d-model`` for a benchmark's root options, ``CHECKPOINTS`` for a positional)."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

from experiments import cli, compose, sweep, text8, timesteps
from nanodd import checks
from nanodd.checks import Field, FieldError, Message
from nanodd.config import TrainConfig
from nanodd.data import DataError
from nanodd.methods.mdlm import MDLMConfig
from nanodd.model import DiTConfig
from nanodd.schedules import Geometric, LogLinear
from nanodd.shell import dist
from nanodd.shell.trainer import StopTraining

ROOT = Path(__file__).resolve().parents[1]


def run(main, argv: list[str]) -> tuple[int, str]:
    """A CLI entry point in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code or 0
    return code, err.getvalue()


def test_the_same_schedule_under_compose_extra_names_the_flag_typed_there():
    assert run(compose.cli, ["mdlm-demo", "extra:mdlm", "--extra.schedule.eps", "2"]) == (
        2,
        "error: --extra.schedule.eps must be in (0, 1) (alpha_1 = eps), got 2.0\n",
    )
    assert run(compose.cli, ["mdlm-demo", "--method.schedule.eps", "2"]) == (
        2,
        "error: --method.schedule.eps must be in (0, 1) (alpha_1 = eps), got 2.0\n",
    )
    assert run(compose.cli, ["mdlm-demo", "--compose.eval-chunks", "1"]) == (
        2,
        "error: --compose.eval-chunks must be >= 2, got 1\n",  # the field compose_, renamed compose for tyro
    )


def test_a_library_call_names_the_field_and_no_flag():
    with pytest.raises(ValueError) as refused:
        MDLMConfig(schedule=LogLinear(eps=2))
    assert str(refused.value) == "eps must be in (0, 1) (alpha_1 = eps), got 2" and "--" not in str(refused.value)
    assert isinstance(refused.value, FieldError) and refused.value.field == "eps"
    with pytest.raises(FieldError, match=r"^d_model must split into n_heads 4 heads of even width \(rotary\), got 30$"):
        DiTConfig(d_model=30, n_heads=4)
    with pytest.raises(FieldError, match=r"^sigma_max must be > sigma_min 2.0, got 1.0$"):
        Geometric(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(FieldError, match=r"^min_lr must be in \[0, 0.001\], got 1.0$"):
        TrainConfig(lr=1e-3, min_lr=1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_message_naming_a_setting_reads_as_python_in_the_library_and_as_flags_in_the_cli(tmp_path):
    with pytest.raises(FieldError, match=r"^device cuda was requested .* \(try device='cpu'\)$"):
        dist.setup("cuda")
    argv = ["train", "demo", "--train.device", "cuda", "--train.out-dir", str(tmp_path / "run")]
    assert run(lambda a: text8.main(a), argv) == (
        2,
        "error: --train.device cuda was requested but no CUDA GPU is visible (try --train.device cpu)\n",
    )


def test_fields_values_and_paths_are_spelled_as_tyro_spells_flags(capsys):
    message = Message("pass ", Field("train.compile", False), ", ", Field("train.resume", True), " or ")
    message = Message(message, Field("train.device", "cpu"), " (", Field("model.d_model"), ")")
    assert message == "pass train.compile=False, train.resume=True or train.device='cpu' (model.d_model)"
    for error in (FieldError(message), StopTraining(message), DataError(message)):  # raised after parsing
        with pytest.raises(SystemExit), cli.one_line_errors():
            raise error
        assert capsys.readouterr().err == (
            "error: pass --no-train.compile, --train.resume or --train.device cpu (--model.d-model)\n"
        )


def test_within_moves_a_message_one_dataclass_up():
    with pytest.raises(FieldError) as refused, checks.within("method"), checks.within("schedule"):
        LogLinear(eps=0)
    assert refused.value.field == "method.schedule.eps" and str(refused.value).startswith("method.schedule.eps must")
    assert refused.value.message.parts[0] == Field("method.schedule.eps")


def test_a_positional_and_root_level_options_are_named_as_typed():
    assert run(timesteps.cli, []) == (2, "error: CHECKPOINTS must name at least one run or checkpoint, got ()\n")
    assert run(timesteps.cli, ["x", "--chunk-size", "0"]) == (2, "error: --chunk-size must be >= 1, got 0\n")
    from benchmarks import gpu_check

    assert run(gpu_check.cli, ["--d-model", "30", "--n-heads", "4"]) == (
        2,
        "error: --d-model must split into --n-heads 4 heads of even width (rotary), got 30\n",
    )


def test_a_swept_row_names_the_flag_of_the_field_it_set(tmp_path):
    base = ["demo", "--sweep.dir", str(tmp_path / "sweep")]
    assert run(sweep.cli, [*base, "--sweep.field", "model.n-heads", "--sweep.values", "3"]) == (
        2,
        "error: row model.n_heads=3: --model.d-model must split into --model.n-heads 3 heads of even width "
        "(rotary), got 128\n",
    )
    assert not (tmp_path / "sweep").exists()


def strings(tree: ast.AST):
    """Every string constant in a module: literals, docstrings and the literal pieces of f-strings."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_module_of_the_library_holds_a_string_starting_with_a_flag():
    """The library names fields (``eps``, ``train.lr``); flags (``--method.schedule.eps``) are the CLI's."""
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text[:60]!r}"
        for path in sorted((ROOT / "nanodd").rglob("*.py"))
        for line, text in strings(ast.parse(path.read_text()))
        if text.lstrip().startswith("--") or re.search(r"^\s*--\w", text, re.MULTILINE)
    ]
    assert not found, "\n".join(found)
