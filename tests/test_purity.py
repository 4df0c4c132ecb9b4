"""The core (nanodd/*.py and nanodd/methods/) is pure: no distributed, OS, file, logging or CLI code."""

import ast
from pathlib import Path

import nanodd

FORBIDDEN = ("torch.distributed", "os", "sys", "io", "pathlib", "shutil", "subprocess", "logging",
             "json", "pickle", "orbax", "tyro", "nanodd.shell", "nanodd.data", "experiments")
ROOT = Path(nanodd.__file__).parent
CORE = sorted([*ROOT.glob("*.py"), *(ROOT / "methods").glob("*.py")])


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def is_forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


def test_core_imports_nothing_impure():
    assert len(CORE) >= 6
    offences = {p.name: sorted(filter(is_forbidden, imported_modules(p))) for p in CORE}
    assert not {k: v for k, v in offences.items() if v}


def test_the_checker_catches_an_impure_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os.path\nfrom torch.distributed import all_reduce\nfrom torch import nn\n")
    assert sorted(filter(is_forbidden, imported_modules(bad))) == [
        "os.path", "torch.distributed", "torch.distributed.all_reduce"]
