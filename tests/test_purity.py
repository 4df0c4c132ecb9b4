"""The layers: the core is pure, the shell names no method, and imports form a tree of floors
(core <- config <- data / shell <- experiments) with no cycles."""

import ast
from pathlib import Path

import nanodd

FORBIDDEN = (
    "torch.distributed",
    "os",
    "sys",
    "io",
    "pathlib",
    "shutil",
    "subprocess",
    "logging",
    "json",
    "pickle",
    "orbax",
    "tyro",
    "nanodd.shell",
    "nanodd.data",
    "nanodd.config",
    "experiments",
)
ROOT = Path(nanodd.__file__).parent
CORE = sorted(
    p
    for p in [*ROOT.glob("*.py"), *ROOT.glob("methods/*.py"), *ROOT.glob("processes/*.py"), *ROOT.glob("samplers/*.py")]
    if p.name != "config.py"
)


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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_core_imports_nothing_impure():
    assert len(CORE) >= 12
    offences = {p.name: sorted(filter(is_forbidden, imported_modules(p))) for p in CORE}
    assert not {k: v for k, v in offences.items() if v}


def test_the_checker_catches_an_impure_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os.path\nfrom torch.distributed import all_reduce\nfrom torch import nn\n")
    assert sorted(filter(is_forbidden, imported_modules(bad))) == [
        "os.path",
        "torch.distributed",
        "torch.distributed.all_reduce",
    ]


def test_the_shell_and_the_cli_name_no_method():
    """Methods reach the shell and the config only through the registry (``nanodd.methods``); the
    presets in experiments/ may name a method's config."""
    methods = {f"nanodd.methods.{p.stem}" for p in (ROOT / "methods").glob("*.py") if p.stem != "__init__"}
    assert {"nanodd.methods.d3pm", "nanodd.methods.mdlm"} <= methods
    shell = [*(ROOT / "shell").glob("*.py"), ROOT / "config.py"]
    named = {p.name: sorted(m for m in imported_modules(p) if m.startswith(tuple(methods))) for p in shell}
    assert not {k: v for k, v in named.items() if v}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path a -> ... -> a in a directed graph, or None (depth-first search)."""
    state: dict[str, str] = {}

    def visit(node, trail):
        if state.get(node) == "open":
            return trail[trail.index(node) :] + [node]
        if state.get(node) == "done":
            return None
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if cycle := visit(dep, trail + [node]):
                return cycle
        state[node] = "done"
        return None

    return next((c for name in sorted(graph) if (c := visit(name, []))), None)


def test_imports_form_no_cycle():
    """Every nanodd module's imports of other nanodd modules form a directed acyclic graph."""
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}

    def resolve(m):  # "a.b.c" is module a.b.c, or the name c imported from module a.b
        return m if m in paths else m.rsplit(".", 1)[0] if m.rsplit(".", 1)[0] in paths else None

    graph = {name: {resolve(m) for m in imported_modules(p)} - {None, name} for name, p in paths.items()}
    assert "nanodd.shell.checkpoint" in graph["nanodd.shell.upstream"]  # the graph is really read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
