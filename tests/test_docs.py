"""The README is a front door and the docs hold together: the README stays small, its test command is the
one CI runs, every relative link in README.md and docs/*.md resolves (files and #anchors), every command
line of their code blocks names a module or script that exists, and every ``python -m experiments.text8``
command parses and passes its checks (``main(argv, check_only=True)``: nothing is loaded or trained)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from experiments import text8

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 15 * 1024
"""bytes: about nanoGPT's README; the rest belongs in docs/."""

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside code: fenced and indented blocks, inline code spans."""
    return re.sub(r"`[^`\n]*`|^ {4}.*$", "", FENCE.sub("", text), flags=re.M)


def blocks(text: str, languages=("bash", "sh")) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang in languages]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def command_lines(text: str) -> list[str]:
    """The shell commands of a page's bash blocks: continuations joined, comments dropped, ``a && b`` split,
    ``$VAR`` substituted from the block's ``VAR=value`` lines."""
    lines = []
    for body in blocks(text):
        env: dict[str, str] = {}
        for line in body.replace("\\\n", " ").splitlines():
            if m := re.fullmatch(r"(\w+)=(\S+)", line.strip()):
                env[m.group(1)] = m.group(2)
            elif words := shlex.split(
                re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), m.group(0)), line), comments=True
            ):
                while "&&" in words:
                    lines.append(shlex.join(words[: words.index("&&")]))
                    words = words[words.index("&&") + 1 :]
                lines.append(shlex.join(words))
    return lines


def text8_commands() -> list[tuple[str, str]]:
    """(page, command) for every ``-m experiments.text8`` line (torchrun's too) in README.md and docs/."""
    return [
        (page.name, line)
        for page in PAGES
        for line in command_lines(page.read_text())
        if "-m experiments.text8" in line
    ]


def test_readme_is_a_front_door():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; keep it under {README_LIMIT} and move the rest to docs/"
    for phrase in ("this round", "tried and not kept", "not run yet"):
        assert phrase not in README.read_text().lower(), phrase


def test_the_readme_test_command_is_what_ci_runs():
    commands = command_lines(README.read_text())
    runs = [command for command in commands if "pytest" in command]
    assert runs == ["python -m pytest"], runs
    assert commands[commands.index("python -m pytest") - 1] == "bash install.sh --dev"
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text().splitlines()
    assert (ROOT / "install.sh").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in LINK.findall(prose(README.read_text()))}
    assert {p.resolve() for p in PAGES[1:]} <= linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_names_a_module_or_script_that_exists(page):
    missing = []
    for line in command_lines(page.read_text()):
        for module in re.findall(r"-m\s+([\w.]+)", line):
            if module.split(".")[0] in ("experiments", "benchmarks"):
                path = ROOT / module.replace(".", "/")
                if not (path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()):
                    missing.append(module)
        missing += [s for s in re.findall(r"python\s+([\w/]+\.py)", line) if not (ROOT / s).is_file()]
    assert not missing, f"{page.name}: {missing}"


def stand_in(token: str, cwd: Path) -> None:
    """Create what a path argument of a documented command needs to pass the checks: a run directory, a
    checkpoint or corpus file, or the directory an output file goes into."""
    if "/" not in token or token.startswith("-") or re.match(r"[a-z]+://", token):
        return
    path = cwd / token
    if path.suffix in (".pt", ".txt"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    elif path.suffix:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path.mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize(("page", "command"), text8_commands())
def test_every_documented_text8_command_parses_and_passes_its_checks(page, command, tmp_path, monkeypatch):
    cwd = tmp_path / "repo"  # ../shared/... stays inside tmp_path
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("NANODD_CACHE", str(tmp_path / "cache"))
    argv = shlex.split(command.split("-m experiments.text8", 1)[1], comments=True)
    for token in argv:
        stand_in(token, cwd)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            text8.main(argv, check_only=True)
            code = 0
        except SystemExit as e:
            code = e.code or 0
    assert code == 0, f"{page}: {command}\n{err.getvalue()}"


@pytest.mark.slow
def test_the_readme_python_example_runs():
    for body in blocks(README.read_text(), languages=("python",)):
        exec(compile(body, "README.md", "exec"), {})
