"""The paths a subcommand checks before it loads anything: each check names the option the path came from
and says in one line what is wrong (its ``ValueError`` becomes the CLI's ``error:`` line)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import nanodd.checks as checks
import nanodd.data.corpus as corpora
from nanodd.data.files import not_replaceable


def naming_the_option(check: Callable) -> Callable:
    """``check(option, path, ...)`` with an OSError of looking at the path (a name too long, a file where a
    directory is needed, no permission) raised as the one line that names the option and the path."""

    @functools.wraps(check)
    def checked(option: str, path, *args, **kwargs):
        try:
            return check(option, path, *args, **kwargs)
        except OSError as e:
            raise ValueError(f"{option} {path}: {e.strerror or e}") from e

    return checked


@naming_the_option
def check_corpus(option: str, source: str | None, tokenizer: str | None, *, must_exist: bool) -> None:
    """A corpus that names local files (builtin, text8, URLs and hf: datasets are checked when fetched):
    one file for the text8 tokenizer, a file, directory or glob for the others (None: any); with ``must_exist``
    (evaluate only needs the name of a prepared corpus) a file or directory that exists."""
    if source is None or corpora.kind(source) not in ("file", "dir", "glob"):
        return
    what = corpora.kind(source)
    if what != "file" and tokenizer == "text8":
        raise ValueError(
            f"{option} {source}: names many files ({'a directory' if what == 'dir' else 'a glob'}), which the "
            "text8 tokenizer does not read; use --data.tokenizer bytes, bpe or gpt2"
        )
    if must_exist and what == "file" and not Path(source).expanduser().is_file():
        raise ValueError(
            f"{option} {source}: no such file (it takes builtin, text8, a text file"
            f"{'' if tokenizer == 'text8' else ', a directory or glob of them, hf:NAME'} or an http(s) URL)"
        )


@naming_the_option
def check_file(option: str, path: str | None) -> None:
    """``path`` (None: none given) names a file that exists."""
    if path is not None and not Path(path).expanduser().is_file():
        raise ValueError(f"{option} {path}: {'is a directory' if Path(path).is_dir() else 'no such file'}")


@naming_the_option
def check_directory(option: str, path: str | None, *, must_exist: bool, hint: str = "") -> None:
    """``path`` (None: the default) is a directory, or (unless ``must_exist``) nothing yet; ``hint`` follows
    'not found' (how to make it)."""
    if path is None:
        return
    exists = Path(path).exists()
    if exists and not Path(path).is_dir() or must_exist and not exists:
        raise ValueError(f"{option} {path}: {'not a directory' if exists else 'not found' + hint}")


@naming_the_option
def check_checkpoint(option: str, path: str | None) -> None:
    """``path`` (None: none given) names a checkpoint that exists; what is in it is checked when it loads."""
    checks.named(option, path)
    if path is not None and not Path(path).exists():
        raise ValueError(
            f"{option} {path}: not found (expected a run directory, its checkpoints/ directory, "
            "a step directory, or a nanoDD ckpt.pt)"
        )


@naming_the_option
def check_writable(option: str, path: str | None, *, new_parent: bool = False) -> None:
    """``path`` can become a file: a regular file or nothing yet (never a link, FIFO, device or directory:
    ``nanodd.data.files.not_replaceable``), in a directory that exists (or, with ``new_parent``, that the
    command creates)."""
    if path is None:
        return
    if why := not_replaceable(Path(path).expanduser()):
        raise ValueError(f"{option} {path}: {why}")
    if not new_parent and not Path(path).expanduser().absolute().parent.is_dir():
        raise ValueError(f"{option} {path}: its directory does not exist")
