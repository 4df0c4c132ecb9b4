"""Prepared data and downloads are identified by what they are; prepare fails cleanly and in bounded memory."""

import importlib
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nanodd.data import DataError, decode, encode, load_split, normalize_text8, prepare
from nanodd.data.prepare import data_identity, dataset_name
from test_data_download import server  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[1]
prep = importlib.import_module("nanodd.data.prepare")  # the module: nanodd.data.prepare is also its function
PROSE = "It was the best of times, it was the worst of times; 1859. " * 50


def all_ids(out: Path) -> np.ndarray:
    return np.concatenate([load_split(out, s) for s in ("train", "val", "test")])


# ---- identity by content -------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["text8", "bytes"])
def test_two_corpora_with_one_file_name_get_two_prepared_directories(tmp_path, tokenizer):
    a, b = tmp_path / "a" / "good.txt", tmp_path / "b" / "good.txt"
    for path, text in [(a, PROSE), (b, PROSE.upper() + " and more " * 30)]:
        path.parent.mkdir()
        path.write_text(text)
    out_a = prepare(str(a), tmp_path / "d", seq_len=16, tokenizer=tokenizer, progress=False)
    out_b = prepare(str(b), tmp_path / "d", seq_len=16, tokenizer=tokenizer, progress=False)
    assert out_a != out_b and out_a.name.startswith("file-good-") and out_b.name.startswith("file-good-")
    assert data_identity(out_a)["sha256"] != data_identity(out_b)["sha256"]
    assert data_identity(out_a)["source"] == str(a.resolve())
    assert prepare(str(a), tmp_path / "d", seq_len=16, tokenizer=tokenizer, progress=False) == out_a
    assert dataset_name("builtin") == "builtin" and dataset_name("text8") == "text8"  # nanoDD's names stay


def test_an_empty_cached_download_is_refused_removed_and_fetched_again(server, tmp_path):  # noqa: F811
    server.files["/book.txt"] = PROSE.encode()
    url = server.base + "/book.txt"
    (tmp_path / "downloads").mkdir()
    cached = tmp_path / "downloads" / dataset_name(url)
    cached.write_bytes(b"")  # what a crashed or misconfigured fetch left
    with pytest.raises(DataError, match=r"download of .*book.txt .* is empty; removed it") as e:
        prepare(url, tmp_path, seq_len=16, progress=False)
    assert "\n" not in str(e.value) and not cached.exists()
    out = prepare(url, tmp_path, seq_len=16, progress=False)
    assert bytes(all_ids(out)) == bytes(encode(normalize_text8(PROSE)))


@pytest.mark.parametrize("header", [True, False])
def test_an_html_page_served_with_200_is_not_a_text_source(server, tmp_path, header):  # noqa: F811
    page = b"<!DOCTYPE html>\n<html><body>Please log in to continue. " + b"x " * 500 + b"</body></html>"
    server.files["/book.txt"] = page
    if header:
        server.content_type = "text/html; charset=utf-8"
    with pytest.raises(DataError, match=r"HTML page") as e:
        prepare(server.base + "/book.txt", tmp_path, seq_len=16, progress=False)
    assert "\n" not in str(e.value)
    kept = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert kept == [f".{dataset_name(server.base + '/book.txt')}.lock"]  # neither the page nor a .part: the lock only


def test_data_force_downloads_a_cached_url_again(server, tmp_path):  # noqa: F811
    url = server.base + "/book.txt"
    server.files["/book.txt"] = PROSE.encode()
    prepare(url, tmp_path, seq_len=16, progress=False)
    server.files["/book.txt"] = (PROSE + " an epilogue" * 40).encode()
    out = prepare(url, tmp_path, seq_len=16, progress=False, force=True)
    assert len(server.requests) == 2 and "epilogue" in decode(load_split(out, "test"))


# ---- the text8 path streams ----------------------------------------------------------------------------


def test_text8_normalisation_block_by_block_equals_the_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "TEXT8_BLOCK", 7)
    pieces = ["word", "Word", "1984", " ", "  ", ",", "café", "ünïcödé", "\n", "x", "2", "ABC", "—", "\t", "é9"]
    rng = random.Random(0)
    for i in range(30):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 400))) + " filler words" * 12
        src = tmp_path / f"t{i}.txt"
        src.write_bytes(("\ufeff" if i % 5 == 0 else "").encode() + text.encode())
        out = prepare(str(src), tmp_path / "d", seq_len=4, progress=False)
        assert bytes(all_ids(out)) == bytes(encode(normalize_text8(text))), text


def test_text8_undecodable_byte_after_the_first_block_names_its_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "TEXT8_BLOCK", 64)
    src = tmp_path / "latin1.txt"
    src.write_bytes(PROSE.encode() + "café".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt is not UTF-8 text \(byte 0xe9 at offset 2953\)"):
        prepare(str(src), tmp_path, seq_len=16, progress=False)
    assert not list(tmp_path.rglob("*.tmp"))


# ---- a full disk ---------------------------------------------------------------------------------------

FULL_DISK = """
import resource, signal, sys
from nanodd.data import DataError, prepare
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
try:
    prepare(sys.argv[1], sys.argv[2], seq_len=16, tokenizer={tokenizer!r}, workers=1, progress=False)
except DataError as e:
    print(f"error: {{e}}")
"""


@pytest.mark.parametrize("tokenizer", ["text8", "bytes"])
def test_prepare_on_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, tokenizer):
    src = tmp_path / "book.txt"
    src.write_text(PROSE * 20)  # 60 KB: more than the 40 KB a file may grow to
    script = FULL_DISK.format(limit=40_000, tokenizer=tokenizer)
    done = subprocess.run(
        [sys.executable, "-c", script, str(src), str(tmp_path / "d")], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    assert done.stdout.startswith("error: could not write the prepared data to ") and done.stdout.count("\n") == 1
    assert [p.name for p in (tmp_path / "d").rglob("*") if ".tmp" in p.name] == []
    assert not list((tmp_path / "d").rglob("meta.json"))  # nothing that claims to be complete


# ---- memory --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_text8_prepare_of_200_mb_runs_in_bounded_memory(tmp_path):
    """A 200 MB file under a 1 GB address-space limit (Python, numpy and torch take ~650 MB of it): the text8
    path holds a few TEXT8_BLOCKs, not the file (it took ~90 bytes per input byte before: 1.9 GB for 20 MB)."""
    src = tmp_path / "big.txt"
    with open(src, "w") as f:
        for _ in range(200):
            f.write("1" * 500_000 + " In 1859 it was the best of times. " * 14_286)
    assert src.stat().st_size >= 200_000_000
    cap = 1_000_000_000
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
        from nanodd.data import prepare, split_info
        out = prepare(sys.argv[1], sys.argv[2], progress=False)
        print(sum(i.tokens for i in split_info(out).values()))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script, str(src), str(tmp_path / "d")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 200_000_000


# ---- a run records its data ------------------------------------------------------------------------------


def test_a_run_records_its_data_and_evaluate_refuses_data_that_changed_under_its_name(tmp_path, capsys):
    from conftest import words_text
    from nanodd.shell.checkpoint import Checkpoints
    from nanodd.shell.trainer import train
    from nanodd.shell.workflows import evaluate_checkpoint, load_checkpoint, sample_metrics
    from test_train import tiny

    a, b = tmp_path / "a" / "good.txt", tmp_path / "b" / "good.txt"
    for path, seed in [(a, 0), (b, 1)]:
        path.parent.mkdir()
        path.write_text(words_text(3000, seed))
    cfg = tiny(a, tmp_path / "run", max_iters=2)
    train(cfg)
    meta = Checkpoints(tmp_path / "run" / "checkpoints", is_main=False).restore(2)[1]
    out_a = prepare(str(a), tmp_path / "data", seq_len=32, progress=False)
    assert meta["data"] == data_identity(out_a) and meta["data"]["source"] == str(a.resolve())
    ckpt = load_checkpoint(tmp_path / "run")
    kw = dict(max_chunks=2, batch_size=2)
    assert evaluate_checkpoint(ckpt, **kw)["source"] == str(a)
    prepare(str(b), tmp_path / "data", seq_len=32, progress=False)  # same file name: its own directory
    assert evaluate_checkpoint(ckpt, **kw)["results"] == evaluate_checkpoint(ckpt, **kw)["results"]
    assert evaluate_checkpoint(ckpt, data_source=str(b), **kw)["source"] == str(b)  # other data, named: fine
    a.write_text(words_text(3000, 2))
    prepare(str(a), tmp_path / "data", seq_len=32, progress=False, force=True)  # a changed under its name
    for use in (lambda: evaluate_checkpoint(ckpt, **kw), lambda: sample_metrics(ckpt, ["some text"])):
        with pytest.raises(DataError, match=r"now holds other data .* than .*run was trained on") as e:
            use()
        assert "\n" not in str(e.value)
