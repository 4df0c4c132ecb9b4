"""prepare/load_split for builtin and local files: layout, meta, reuse, and every refusal."""

import json
from pathlib import Path

import numpy as np
import pytest

from nanodd.data import DataError, builtin_text, decode, default_cache_dir, load_split, prepare
from nanodd.data.prepare import dataset_name

PROSE = "It was the best of times, it was the worst of times; 1859. " * 50


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def test_prepare_builtin_splits_90_5_5(tmp_path):
    out = prepare("builtin", tmp_path, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    n = len(builtin_text())
    n_train, n_val = n * 90 // 100, n * 5 // 100
    assert out == tmp_path / "builtin" and meta["n_chars"] == n
    assert meta["sizes"] == {"train": n_train, "val": n_val, "test": n - n_train - n_val}
    splits = [load_split(out, s) for s in ("train", "val", "test")]
    assert all(isinstance(s, np.memmap) and s.dtype == np.uint8 and not s.flags.writeable for s in splits)
    assert decode(np.concatenate(splits)) == builtin_text()


def test_prepare_local_file_and_reuse(tmp_path):
    src = write(tmp_path, "A Tale.txt", "\ufeff" + PROSE)
    out = prepare(str(src), tmp_path / "data", seq_len=64, progress=False)
    assert out == tmp_path / "data" / dataset_name(str(src)) and out.name.startswith("file-a-tale-")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"] == str(src.resolve()) and meta["n_chars"] == len(
        " ".join("it was the best of times it was the worst of times one eight five nine".split() * 50)
    )
    stamp = (out / "train.bin").stat().st_mtime_ns
    assert prepare(str(src), tmp_path / "data", seq_len=64, progress=False) == out
    assert (out / "train.bin").stat().st_mtime_ns == stamp


def test_missing_split_file_is_rebuilt(tmp_path):
    out = prepare("builtin", tmp_path, progress=False)
    (out / "val.bin").unlink()
    with pytest.raises(DataError, match="data.source='builtin'"):
        load_split(out, "val")
    prepare("builtin", tmp_path, progress=False)
    assert len(load_split(out, "val")) > 0


def test_changed_file_is_detected_by_meta(tmp_path):
    src = write(tmp_path, "book.txt", PROSE)
    prepare(str(src), tmp_path, seq_len=64, progress=False)
    src.write_text(PROSE + " and an epilogue " * 20)
    with pytest.raises(DataError, match="prepared from another source, tokenizer or format .*data.force"):
        prepare(str(src), tmp_path, seq_len=64, progress=False)
    out = prepare(str(src), tmp_path, seq_len=64, force=True, progress=False)
    assert "epilogue" in decode(load_split(out, "test"))


def test_older_format_is_detected_by_meta(tmp_path):
    out = prepare("builtin", tmp_path, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "format": 0}))
    with pytest.raises(DataError, match=r"\('builtin', format 0\)"):
        prepare("builtin", tmp_path, progress=False)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable meta.json"):
        prepare("builtin", tmp_path, progress=False)
    assert prepare("builtin", tmp_path, force=True, progress=False) == out


def test_file_with_no_usable_characters(tmp_path):
    for name, text in [("empty.txt", ""), ("punct.txt", "!?.,;: —–… \n\t")]:
        with pytest.raises(DataError, match="has no usable characters"):
            prepare(str(write(tmp_path, name, text)), tmp_path, progress=False)


def test_file_smaller_than_one_sequence(tmp_path):
    src = write(tmp_path, "short.txt", "a few words of text " * 20)
    message = r"smaller than one sequence: .* 359/19/21 tokens, .* seq_len\+1 = 257"
    with pytest.raises(DataError, match=message):
        prepare(str(src), tmp_path, seq_len=256, progress=False)
    assert not (tmp_path / dataset_name(str(src))).exists() and not list(tmp_path.glob("*.tmp"))


def test_undecodable_bytes(tmp_path):
    src = write(tmp_path, "latin1.txt", PROSE.encode() + "café".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt is not UTF-8 text \(byte 0xe9 at offset 2953\)"):
        prepare(str(src), tmp_path, seq_len=16, progress=False)


def test_missing_file_and_unknown_split(tmp_path):
    with pytest.raises(DataError, match="no such file: .*nope.txt .*builtin, text8"):
        prepare(str(tmp_path / "nope.txt"), tmp_path, progress=False)
    with pytest.raises(DataError, match="prepare it first: data.source='text8'"):
        load_split(tmp_path / "text8", "train")
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_split(tmp_path, "dev")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("NANODD_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "nanodd"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "nanodd"
    monkeypatch.setenv("NANODD_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert prepare("builtin", progress=False) == tmp_path / "mine" / "builtin"


def test_two_runs_preparing_one_directory_at_once_take_turns(tmp_path):
    """The second process waits for the first (their temporary files have the same names), then reuses its data."""
    import subprocess
    import sys
    import time

    src, data = write(tmp_path, "prose.txt", PROSE), tmp_path / "data"
    halfway, go_on = tmp_path / "halfway", tmp_path / "go-on"
    paused = f"""
import importlib, pathlib, time
module = importlib.import_module("nanodd.data.prepare")
module.TEXT8_BLOCK, normalized = 256, module._normalized_ids
def slow(path, source):  # stops after its first block until told to go on
    for i, ids in enumerate(normalized(path, source)):
        yield ids
        if i == 0:
            pathlib.Path({str(halfway)!r}).touch()
            while not pathlib.Path({str(go_on)!r}).exists():
                time.sleep(0.01)
module._normalized_ids = slow
module.prepare({str(src)!r}, {str(data)!r}, seq_len=16, progress=False)
"""
    plain = f"from nanodd.data import prepare; prepare({str(src)!r}, {str(data)!r}, seq_len=16, progress=False)"
    root = Path(__file__).resolve().parents[1]
    first = subprocess.Popen([sys.executable, "-c", paused], cwd=root)
    deadline = time.monotonic() + 60
    while not halfway.exists():
        assert first.poll() is None and time.monotonic() < deadline, "the first preparation did not start"
        time.sleep(0.01)
    with open(tmp_path / "second.err", "w") as err:
        second = subprocess.Popen([sys.executable, "-c", plain], cwd=root, stderr=err)
        while "waiting for another process preparing" not in (tmp_path / "second.err").read_text():
            assert second.poll() is None and time.monotonic() < deadline, "the second preparation did not wait"
            time.sleep(0.01)
        go_on.touch()
        assert first.wait(60) == 0 and second.wait(60) == 0
    out = data / dataset_name(str(src))
    text = " ".join("it was the best of times it was the worst of times one eight five nine".split() * 50)
    assert decode(np.concatenate([load_split(out, s) for s in ("train", "val", "test")])) == text


def test_a_symbolic_link_where_the_lock_belongs_is_not_followed(tmp_path):
    src, data = write(tmp_path, "prose.txt", PROSE), tmp_path / "data"
    data.mkdir()
    (data / f".{dataset_name(str(src))}.lock").symlink_to(tmp_path / "elsewhere")
    out = prepare(str(src), data, seq_len=16, progress=False)
    assert (out / "meta.json").is_file() and not (tmp_path / "elsewhere").exists()
