"""prepare for bytes / bpe / gpt2: sources, documents, splits at safe points, chunked == whole, workers,
reuse, kill -9 and a 1 GB corpus in bounded memory.  All data is generated here, offline."""

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import nanodd.data.tokenizers as tokenizers
from nanodd.data import DataError, load_split, load_tokenizer, prepare, split_info
from nanodd.data.corpus import SAFE, builtin_documents, file_corpus
from nanodd.data.prepare import dataset_name
from nanodd.data.shards import dtype_for, write_shards

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "naïve",
    "café",
    "中文字",
    "😀🎉",
    "it's",
    "don't",
    "1984",
    "3.14",
    "!!",
    "--",
    "x",
]
GAPS = [" ", " ", " ", " ", "\n", "  ", "\n\n", "\n  ", "\t", " \u00a0", "\u3000", ""]


def prose(seed: int, n_words: int) -> str:
    """Words, numbers, emoji and CJK between every kind of whitespace run: a hard case for cutting text."""
    rng = np.random.default_rng(seed)
    words, gaps = rng.integers(0, len(WORDS), n_words), rng.integers(0, len(GAPS), n_words)
    return "".join(WORDS[w] + GAPS[g] for w, g in zip(words, gaps))


def write_docs(directory: Path, n: int, n_words: int = 300, seed: int = 0) -> list[str]:
    """``n`` files in ``directory`` and a subdirectory (names sorting as written); their texts in that order."""
    texts = []
    for i in range(n):
        path = directory / ("sub" if i % 3 == 2 else "") / f"doc{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        texts.append(prose(seed + i, n_words + 37 * i))
        path.write_text(texts[-1], encoding="utf-8")
    return [t for _, t in sorted(zip([_rel(i) for i in range(n)], texts))]


def _rel(i: int) -> str:
    return f"{'sub/' if i % 3 == 2 else ''}doc{i:03d}.txt"


def whole(tok, texts) -> np.ndarray:
    """Each document tokenised in one go, each followed by the end of document."""
    return np.concatenate([np.append(tok.encode(t), tok.eod_id) for t in texts])


def all_ids(out: Path) -> np.ndarray:
    return np.concatenate([load_split(out, s) for s in SPLITS])


def toy_gpt2(tmp_path: Path):
    """A GPT-2-style tokenizer from a ranks file written here: the 256 bytes, then a few merges."""
    merges = [b"th", b"the", b" the", b"in", b"  ", b"\n\n", b"qu", b"ick", b" qu", b"\xe4\xb8"]
    tokens = [bytes([b]) for b in range(256)] + merges
    path = tmp_path / "toy.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in enumerate(tokens)))
    return path, tokenizers.gpt2(str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())


# ---- chunked == whole -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bytes", "bpe"])
def test_chunked_prepare_equals_whole_documents(tmp_path, name):
    texts = write_docs(tmp_path / "corpus", 7)
    kw = dict(seq_len=8, progress=False, tokenizer=name, vocab_size=400, workers=1)
    small = prepare(str(tmp_path / "corpus"), tmp_path / "a", chunk_bytes=64, **kw)
    big = prepare(str(tmp_path / "corpus"), tmp_path / "b", **kw)
    tok = load_tokenizer(small)
    assert tok.name == name and tok.identity() == load_tokenizer(big).identity()
    assert np.array_equal(all_ids(small), whole(tok, texts))
    assert np.array_equal(all_ids(big), whole(tok, texts))
    assert split_info(small) == split_info(big)  # the splits are a function of the text, not of the chunking


def test_gpt2_chunks_equal_whole_and_workers_agree(tmp_path):
    ranks, tok = toy_gpt2(tmp_path)
    texts = write_docs(tmp_path / "corpus", 5, n_words=2000)
    tokenizers.save(tok, tmp_path / "tok")
    files = sorted((tmp_path / "corpus").rglob("*.txt"), key=lambda p: p.relative_to(tmp_path / "corpus").as_posix())
    results = []
    for workers, chunk in [(1, 1 << 20), (1, 50), (2, 333)]:
        out = tmp_path / f"out-{workers}-{chunk}"
        out.mkdir()
        counts = write_shards(file_corpus(files, "toy"), tok, tmp_path / "tok", out, workers=workers, chunk_bytes=chunk)
        ids = np.concatenate([np.fromfile(out / f"{s}.bin", dtype=np.uint16) for s in SPLITS])
        results.append((ids, counts.bytes, counts.tokens))
    assert np.array_equal(results[0][0], whole(tok, texts)) and len(tok.encode("the quick")) < len("the quick")
    assert all(np.array_equal(r[0], results[0][0]) and r[1:] == results[0][1:] for r in results)


def test_gpt2_with_a_wrong_ranks_file_is_one_error_line(tmp_path):
    ranks, _ = toy_gpt2(tmp_path)
    (tmp_path / "a.txt").write_text(prose(0, 500))
    with pytest.raises(DataError, match="is not GPT-2's ranks file") as e:
        prepare(str(tmp_path / "a.txt"), tmp_path / "d", tokenizer="gpt2", tokenizer_file=str(ranks), progress=False)
    assert "\n" not in str(e.value)


def test_workers_1_and_2_write_identical_files(tmp_path):
    write_docs(tmp_path / "corpus", 9, n_words=1500)
    outs = [
        prepare(str(tmp_path / "corpus"), tmp_path / f"w{w}", seq_len=8, progress=False, tokenizer="bpe",
                vocab_size=300, workers=w, chunk_bytes=500)
        for w in (1, 2)
    ]  # fmt: skip
    for f in [*(f"{s}.bin" for s in SPLITS), "meta.json", "tokenizer/tokenizer.json", "tokenizer/bpe.json"]:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f


# ---- sources, documents, splits --------------------------------------------------------------------------


def test_directory_reads_visible_files_in_relative_path_order_with_eod_after_each(tmp_path):
    texts = write_docs(tmp_path / "corpus", 6)
    (tmp_path / "corpus" / ".hidden.txt").write_text("never read")
    (tmp_path / "corpus" / ".git").mkdir()
    (tmp_path / "corpus" / ".git" / "x.txt").write_text("never read either")
    out = prepare(str(tmp_path / "corpus"), tmp_path / "d", seq_len=8, progress=False, tokenizer="bytes")
    assert out.name == dataset_name(str(tmp_path / "corpus"), "bytes") and out.name.startswith("dir-corpus-")
    ids, tok = all_ids(out), load_tokenizer(out)
    docs = np.split(ids, np.flatnonzero(ids == tok.eod_id) + 1)[:-1]
    assert [tok.decode(d[:-1]) for d in docs] == texts and all(d[-1] == tok.eod_id for d in docs)
    assert len(ids) == sum(len(t.encode()) for t in texts) + len(texts)  # bytes: one id per byte, one per document


def test_glob_and_builtin_sources(tmp_path):
    texts = write_docs(tmp_path / "corpus", 6)
    out = prepare(str(tmp_path / "corpus" / "*.txt"), tmp_path / "d", seq_len=8, progress=False, tokenizer="bytes")
    top = [t for i, t in zip(sorted(range(6), key=_rel), texts) if i % 3 != 2]  # not the subdirectory's
    assert (
        out.name.startswith("glob-corpus-txt-")
        and out.name.endswith(".bytes")
        and np.array_equal(all_ids(out), whole(load_tokenizer(out), top))
    )
    out = prepare("builtin", tmp_path / "d", progress=False, tokenizer="bytes")
    docs = builtin_documents()
    info = split_info(out)
    assert out.name == "builtin.bytes" and sum(i.documents for i in info.values()) == len(docs)
    assert sum(i.bytes for i in info.values()) == sum(len(t) for _, t in docs)  # raw topics, not normalised
    assert bytes(np.asarray(load_split(out, "train")[:200], dtype=np.uint8)) == docs[0][1][:200]


def test_splits_are_90_5_5_by_bytes_cut_at_safe_points(tmp_path):
    (tmp_path / "one.txt").write_text("\ufeff" + prose(1, 20_000))  # the BOM is dropped and not counted
    out = prepare(str(tmp_path / "one.txt"), tmp_path / "d", seq_len=8, progress=False, tokenizer="bytes")
    meta = json.loads((out / "meta.json").read_text())
    raw = prose(1, 20_000).encode()
    n, info = len(raw), split_info(out)
    assert meta["dtype"] == "uint16" and load_split(out, "train").dtype == np.uint16 and meta["eod_id"] == 256
    assert "90%" in meta["split"] and "95%" in meta["split"] and "safe point" in meta["split"]
    assert meta["bytes"] == {s: info[s].bytes for s in SPLITS} and meta["sizes"] == {s: info[s].tokens for s in SPLITS}
    cut1, cut2 = info["train"].bytes, info["train"].bytes + info["val"].bytes
    for cut, target in [(cut1, n * 90 // 100), (cut2, n * 95 // 100)]:
        assert cut >= target and SAFE.match(raw, cut) and not any(SAFE.match(raw, p) for p in range(target, cut))
    assert info["test"].tokens == n - cut2 + 1  # the one end of document is the test split's
    assert dtype_for(50_257) == np.uint16 and dtype_for(65_536) == np.uint16 and dtype_for(65_537) == np.uint32


def test_bpe_learns_from_the_training_split_only(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(prose(2, 30_000))
    (corpus / "b.txt").write_text("zqzqzq vxvxvx " * 300)  # the last 3%: the test split only
    out = prepare(str(corpus), tmp_path / "d", seq_len=8, progress=False, tokenizer="bpe", vocab_size=600)
    tok = load_tokenizer(out)
    assert tok.vocab_size <= 600 and not any(b"zq" in t or b"vx" in t for t in tok.table)
    capped = prepare(str(corpus), tmp_path / "e", progress=False, tokenizer="bpe", vocab_size=600, bpe_train_bytes=500)
    assert load_tokenizer(capped).identity() != tok.identity()
    assert json.loads((capped / "meta.json").read_text())["identity"]["bpe_train_bytes"] == 500


# ---- reuse, refusals -------------------------------------------------------------------------------------


def test_matching_directory_is_reused_and_another_tokenizer_gets_its_own(tmp_path):
    write_docs(tmp_path / "corpus", 4)
    src, data = str(tmp_path / "corpus"), tmp_path / "d"
    out = prepare(src, data, seq_len=8, progress=False, tokenizer="bytes")
    stamp = (out / "train.bin").stat().st_mtime_ns
    assert prepare(src, data, seq_len=8, progress=False, tokenizer="bytes") == out
    assert (out / "train.bin").stat().st_mtime_ns == stamp
    bpe = prepare(src, data, seq_len=8, progress=False, tokenizer="bpe", vocab_size=300)
    assert (
        bpe.name.startswith("dir-corpus-")
        and bpe.name.endswith(".bpe300")
        and load_split(bpe, "train").dtype == np.uint16
    )
    doc = tmp_path / "corpus" / "doc000.txt"
    doc.write_text(doc.read_text() + " and more")
    with pytest.raises(DataError, match="prepared from another source, tokenizer or format .*data.force"):
        prepare(src, data, seq_len=8, progress=False, tokenizer="bytes")
    prepare(src, data, seq_len=8, progress=False, tokenizer="bytes", force=True)
    assert load_tokenizer(out).decode(load_split(out, "train")).startswith(doc.read_text())


def test_refusals_are_one_line(tmp_path):
    write_docs(tmp_path / "corpus", 2)
    (tmp_path / "latin1.txt").write_bytes(b"plain words here " * 10 + "café".encode("latin-1"))
    cases = [
        (dict(source=str(tmp_path / "corpus")), "names many documents .* data.tokenizer='bytes'"),
        (dict(source=str(tmp_path / "corpus" / "*.txt")), "which the text8 tokenizer does not read"),
        (dict(source="hf:text"), "which the text8 tokenizer does not read"),
        (dict(source=str(tmp_path / "nothing" / "*.txt"), tokenizer="bytes"), "no file matches"),
        (dict(source=str(tmp_path / "latin1.txt"), tokenizer="bytes"), r"latin1.txt is not UTF-8 text \(byte 0xe9 at offset 173\)"),
        (dict(source=str(tmp_path / "corpus"), tokenizer="bytes", seq_len=10_000), "smaller than one sequence"),
        (dict(source=str(tmp_path / "corpus"), tokenizer="words"), "data.tokenizer must be one of"),
    ]  # fmt: skip
    for kw, message in cases:
        with pytest.raises(DataError, match=message) as e:
            prepare(data_dir=tmp_path / "d", progress=False, **kw)
        assert "\n" not in str(e.value)


def test_text8_directories_keep_their_tokenizer_and_info(tmp_path):
    out = prepare("builtin", tmp_path, progress=False)
    info = split_info(out)
    assert load_tokenizer(out).name == "text8" and all(i.bytes == i.tokens for i in info.values())
    meta = json.loads((out / "meta.json").read_text())
    del meta["tokenizer"], meta["dtype"]  # a directory prepared before tokenizers existed
    (out / "meta.json").write_text(json.dumps(meta))
    assert load_tokenizer(out).name == "text8" and load_split(out, "val").dtype == np.uint8


def test_hf_text_with_local_files(tmp_path):
    pytest.importorskip("datasets")
    texts = write_docs(tmp_path / "corpus", 4)
    source = f"hf:text?data_files={tmp_path / 'corpus'}/**/*.txt"
    out = prepare(source, tmp_path / "d", seq_len=8, progress=False, tokenizer="bytes")
    assert out.name.startswith("hf-text") and np.array_equal(all_ids(out), whole(load_tokenizer(out), texts))


def test_hf_without_datasets_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    (tmp_path / "a.txt").write_text("some text")
    with pytest.raises(DataError, match="pip install datasets"):
        prepare(f"hf:text?data_files={tmp_path}/a.txt", tmp_path / "d", progress=False, tokenizer="bytes")


# ---- kill -9, and 1 GB in bounded memory -----------------------------------------------------------------

PREPARE = "from nanodd.data import prepare; import sys; prepare(sys.argv[1], sys.argv[2], {kw})"


def generate(directory: Path, n_files: int, file_bytes: int, seed: int = 0) -> int:
    """``n_files`` files of ``file_bytes`` each, tiled from generated prose; their total bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    base = prose(seed, 40_000) + "\n"
    for i in range(n_files):
        block = (base[i % 997 :] + base[: i % 997]).encode()
        data = (block * (file_bytes // len(block) + 1))[:file_bytes]
        (directory / f"part{i:05d}.txt").write_bytes(data[: len(data.decode("utf-8", "ignore").encode())])
    return sum(p.stat().st_size for p in directory.iterdir())


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")
def test_kill_9_mid_prepare_then_rerun_completes(tmp_path):
    generate(tmp_path / "corpus", 10, 3_000_000)  # 30 MB
    src, data, out = (
        str(tmp_path / "corpus"),
        tmp_path / "data",
        tmp_path / "data" / dataset_name(str(tmp_path / "corpus"), "bytes"),
    )
    kw = "tokenizer='bytes', workers=2, chunk_bytes=1 << 18, progress=False"
    proc = subprocess.Popen([sys.executable, "-c", PREPARE.format(kw=kw), src, str(data)], cwd=ROOT)
    while proc.poll() is None and not (
        out.is_dir() and any(p.suffix == ".tmp" and p.stat().st_size for p in out.iterdir())
    ):
        time.sleep(0.001)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed while the splits were being written
    deadline = time.monotonic() + 10
    while (left := [pid for pid in workers if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(workers) == 2 and not left, f"worker processes {left} outlived the killed preparation"
    assert not (out / "meta.json").exists()
    for split in SPLITS:
        with pytest.raises(DataError, match="no complete prepared"):
            load_split(out, split)
    again = prepare(src, data, tokenizer="bytes", chunk_bytes=1 << 18, progress=False)
    fresh = prepare(src, tmp_path / "fresh", tokenizer="bytes", progress=False, workers=1)
    for f in [*(f"{s}.bin" for s in SPLITS), "meta.json"]:
        assert (again / f).read_bytes() == (fresh / f).read_bytes()
    assert not any(p.suffix == ".tmp" for p in again.iterdir())


@pytest.mark.slow
def test_a_1_gb_corpus_over_many_files_under_a_memory_cap(tmp_path):
    n_bytes = generate(tmp_path / "corpus", 400, 2_700_000)  # 1.08 GB in 400 files
    assert n_bytes >= 1 << 30
    cap = 1_500_000_000  # address space per process, well under the 2.16 GB of uint16 ids prepare writes
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
        from nanodd.data import prepare, split_info
        out = prepare(sys.argv[1], sys.argv[2], tokenizer="bytes", workers=2, progress=False)
        print(sum(i.tokens for i in split_info(out).values()), sum(i.bytes for i in split_info(out).values()))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "corpus"), str(tmp_path / "d")],
        cwd=ROOT, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    tokens, counted = map(int, done.stdout.split())
    assert counted == n_bytes and tokens == n_bytes + 400  # bytes: one id per byte, one end of document per file
