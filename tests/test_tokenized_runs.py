"""Every method and sampler, evaluate, timesteps, sweeps and compose on tiny bytes and BPE models
(``python -m experiments.corpus``, in process); prefix and infill keep their fixed text exactly; a run
directory alone is enough to sample."""

import json
import shutil
import sys

import pytest

from experiments import compose, corpus as corpus_cli, sweep, timesteps
from nanodd.data import tokenizers
from nanodd.samplers import SAMPLERS
from nanodd.shell.workflows import load_checkpoint
from conftest import run_main as run, words_text
from test_data_batches import brute_force_rows

TINY = [
    *("--model.d-model", "32", "--model.n-heads", "2", "--model.n-blocks", "1", "--model.cond-dim", "16"),
    *("--data.seq-len", "32", "--train.batch-size", "8", "--train.max-iters", "3", "--train.warmup-iters", "1"),
    *("--train.eval-interval", "3", "--train.eval-batches", "1", "--train.log-interval", "3"),
    *("--train.dtype", "fp32", "--train.device", "cpu"),
]
METHODS = {  # demo-sized presets' methods, by the command-line choice that picks each
    "mdlm": ["method:mdlm"],
    "d3pm": ["method:d3pm", "--method.T", "20"],
    "sedd": ["method:sedd"],
    "udlm": ["method:udlm"],
}
TOKENIZERS = {"bytes": ["--data.tokenizer", "bytes"], "bpe": ["--data.tokenizer", "bpe", "--data.vocab-size", "300"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A directory of three documents: English-like words, accents, CJK and an emoji."""
    root = tmp_path_factory.mktemp("docs")
    for i in range(3):
        (root / f"doc{i}.txt").write_text(words_text(2500, seed=i) + f"\ncafé {i} 世界 🙂\n")
    return root


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """{(tokenizer, method): run directory}, each trained 3 steps, and the data directory."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    found = {}
    for tok, tok_args in TOKENIZERS.items():
        for method, method_args in {**METHODS, "ar": ["method:ar"]}.items():
            out = root / f"{tok}-{method}"
            data = ["--data.source", str(corpus), "--data.data-dir", str(root / "data"), *tok_args]
            mp.setattr(
                sys, "argv", ["corpus", "train", "bpe-demo", *method_args, *TINY, *data, "--train.out-dir", str(out)]
            )
            corpus_cli.main()
            found[tok, method] = out
    mp.undo()
    return found, root / "data"


@pytest.mark.parametrize("tok", TOKENIZERS)
def test_every_method_trains_on_the_tokenizers_ids_and_keeps_the_tokenizer_in_the_run(runs, tok):
    found, _ = runs
    for method in [*METHODS, "ar"]:
        ckpt = load_checkpoint(found[tok, method])
        V = 257 if tok == "bytes" else 300
        assert ckpt.tokenizer.name == tok and ckpt.tokenizer.vocab_size == V
        assert ckpt.cfg.method.process.n_symbols == V
        assert ckpt.model.cfg.vocab_size == V + (method != "udlm")  # absorbing processes add the mask
        assert (found[tok, method] / "tokenizer" / "tokenizer.json").is_file()


@pytest.mark.parametrize("tok", TOKENIZERS)
def test_every_sampler_writes_text_that_decodes_on_some_method(monkeypatch, capsys, runs, tok):
    found, _ = runs
    worked = {name: [] for name in SAMPLERS}
    for method in METHODS:
        for name in SAMPLERS:
            code, out, err = run(
                monkeypatch,
                capsys,
                corpus_cli.main,
                "sample",
                str(found[tok, method]),
                *("--sample.sampler", name, "--sample.no-live", "--sample.device", "cpu"),
                *([] if name == "first-hitting" else ["--sample.steps", "8"]),  # one step per token, by design
            )
            if code == 0:
                worked[name].append(method)
                assert out.strip() and "network evaluations" in err
            else:  # a sampler that does not fit this network says so in one line
                assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert all(worked.values()), worked
    assert {m for ms in worked.values() for m in ms} == set(METHODS)


@pytest.mark.parametrize("tok", TOKENIZERS)
def test_prefix_and_infill_keep_their_fixed_text(monkeypatch, capsys, runs, tok):
    found, _ = runs
    run_dir = found[tok, "mdlm"]
    tokenizer = load_checkpoint(run_dir).tokenizer
    sample = ["sample", str(run_dir), "--sample.steps", "8", "--sample.no-live", "--sample.batch-size", "1"]
    code, out, err = run(monkeypatch, capsys, corpus_cli.main, *sample, "--sample.prefix", "café the")
    assert code == 0, err
    assert out.startswith("café the")
    code, out, err = run(monkeypatch, capsys, corpus_cli.main, *sample, "--sample.infill", "the ___ 世界 of")
    assert code == 0, err
    text = out.rstrip("\n")
    head, tail = tokenizer.encode("the "), tokenizer.encode(" 世界 of")
    assert text.startswith("the ") and " 世界 of" in text
    ids = tokenizer.encode(text)  # what was written between and after the fixed pieces decodes as text
    assert tokenizer.decode(ids) == text and len(head) + 3 + len(tail) <= 32


@pytest.mark.parametrize("tok", TOKENIZERS)
def test_evaluate_reports_bits_per_token_per_byte_and_perplexity(monkeypatch, capsys, runs, tok):
    found, _ = runs
    code, out, err = run(
        monkeypatch, capsys, corpus_cli.main, "evaluate", str(found[tok, "mdlm"]), "--eval.max-chunks", "4"
    )
    assert code == 0, err
    report = json.loads(out)
    r = report["results"]
    assert r["tokens"] == 4 * 32 and r["bytes"] >= r["tokens"] and report["tokenizer"]["name"] == tok
    assert r["bpb"] == pytest.approx(r["bpc"] * r["tokens"] / r["bytes"], rel=1e-12)
    assert r["ppl"] == pytest.approx(2 ** r["bpc"]) and "bits/token over" in err


def test_the_judge_scores_samples_in_bits_per_byte_and_refuses_another_tokenizer(monkeypatch, capsys, runs):
    found, _ = runs
    sample = ["sample", str(found["bpe", "mdlm"]), "--sample.steps", "8", "--sample.no-live"]
    code, _, err = run(monkeypatch, capsys, corpus_cli.main, *sample, "--sample.judge", str(found["bpe", "ar"]))
    assert code == 0, err
    scores = json.loads(err.strip().splitlines()[-1])
    assert scores["gen_bpb"] > 0 and "gen_bpc" not in scores
    code, _, err = run(monkeypatch, capsys, corpus_cli.main, *sample, "--sample.judge", str(found["bytes", "ar"]))
    assert code == 2 and "reads the bytes tokenizer" in err and err.count("\n") == 1


def test_a_run_directory_alone_is_enough_to_sample(monkeypatch, capsys, runs, tmp_path):
    found, data = runs
    moved = tmp_path / "elsewhere"
    shutil.copytree(found["bpe", "mdlm"], moved)
    hidden = data.with_name("hidden-data")
    data.rename(hidden)  # no prepared data and no tokenizer left where the run was trained
    try:
        code, out, err = run(monkeypatch, capsys, corpus_cli.main, "sample", str(moved), "--sample.no-live")
    finally:
        hidden.rename(data)
    assert code == 0 and out.strip(), err


def test_a_tampered_run_tokenizer_is_refused(monkeypatch, capsys, runs, tmp_path):
    found, _ = runs
    moved = tmp_path / "run"
    shutil.copytree(found["bytes", "mdlm"], moved)
    tokenizers.save(tokenizers.train_bpe(["some other text"], 300), moved / "tokenizer")
    code, _, err = run(monkeypatch, capsys, corpus_cli.main, "sample", str(moved), "--sample.no-live")
    assert code == 2 and "not the tokenizer its checkpoints were trained with" in err


def test_timesteps_sweep_and_compose_run_on_a_bpe_model(monkeypatch, capsys, runs, corpus, tmp_path):
    found, data = runs
    table = tmp_path / "t.csv"
    timesteps.main(timesteps.Options((str(found["bpe", "mdlm"]),), n_t=4, batch=2, chunk_size=4, csv=str(table)))
    assert len(table.read_text().splitlines()) == 5
    common = [*TINY, "--data.source", str(corpus), "--data.data-dir", str(data), *TOKENIZERS["bpe"]]
    sweep.cli(
        ["mdlm-demo", *common, "--sweep.dir", str(tmp_path / "sweep"), "--sweep.eval-chunks", "2"]
        + ["--sweep.field", "train.lr", "--sweep.values", "1e-3"]
    )
    assert "train.lr=0.001" in (tmp_path / "sweep" / "results.csv").read_text()
    compose.cli(["mdlm-demo", *common, "--train.out-dir", str(tmp_path / "composed")])
    assert load_checkpoint(tmp_path / "composed").tokenizer.name == "bpe"


def test_the_bpe_demo_learns_and_its_samples_decode(monkeypatch, capsys, corpus, tmp_path):
    """demo's path on experiments.corpus: its tokenizer is trained on the corpus, the bound falls, the
    samples are text."""
    out = tmp_path / "run"
    args = [*TINY, "--train.max-iters", "40", "--train.log-interval", "5", "--train.eval-interval", "40"]
    data = ["--data.source", str(corpus), "--data.data-dir", str(tmp_path / "data"), "--train.out-dir", str(out)]
    code, stdout, err = run(
        monkeypatch, capsys, corpus_cli.main, "demo", *args, *data, "--train.lr", "1e-2", "--sample.no-live"
    )
    assert code == 0, err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    bounds = [r["bpt"] for r in records if "bpt" in r]
    assert bounds[-1] < bounds[0] - 1, bounds  # bits per token, from log2(V) ~ 11 for an untrained network
    assert "bits/byte" in err and "validation bound" in err
    texts = stdout.strip().split("\n\n")
    assert len(texts) >= 2 and all(t.strip() for t in texts)
    tokenizer = load_checkpoint(out).tokenizer
    assert tokenizer.name == "bpe" and 258 < tokenizer.vocab_size <= 2048  # fewer when the corpus runs out of pairs


def test_lm1b_style_wordpiece_sentences_one_per_padded_row_train_and_evaluate(monkeypatch, capsys, tmp_path):
    """BERT's WordPiece from a vocab.txt the test writes, documents of one sentence, ``--data.rows pad``:
    every row is one sentence and its end of document, padded; the padding counts no bytes."""
    import numpy as np

    from conftest import WORDS
    from nanodd.data import load_split, prepare

    root = tmp_path / "sentences"
    root.mkdir()
    g = np.random.default_rng(0)
    for i in range(400):
        words = g.choice(WORDS, size=int(g.integers(3, 12)))
        (root / f"{i:04d}.txt").write_text(" ".join(words).capitalize() + ".")
    chars = sorted({c for w in WORDS for c in w})
    vocab = tmp_path / "vocab.txt"
    words = sorted({w for w in WORDS if len(w) > 1})
    vocab.write_text("\n".join(["[PAD]", "[UNK]", ".", *chars, *(f"##{c}" for c in chars), *words]) + "\n")
    data = ["--data.source", str(root), "--data.data-dir", str(tmp_path / "data"), "--data.rows", "pad"]
    data += ["--data.tokenizer", "wordpiece", "--data.tokenizer-file", str(vocab)]
    out = tmp_path / "run"
    train = ["train", "bpe-demo", "method:mdlm", *TINY, *data, "--train.out-dir", str(out)]
    code, _, err = run(monkeypatch, capsys, corpus_cli.main, *train)
    assert code == 0, err
    code, report, err = run(monkeypatch, capsys, corpus_cli.main, "evaluate", str(out), "--eval.max-chunks", "4")
    assert code == 0, err
    r = json.loads(report)["results"]
    tok = load_checkpoint(out).tokenizer
    directory = prepare(str(root), tmp_path / "data", tokenizer="wordpiece", tokenizer_file=str(vocab), seq_len=32)
    val = np.asarray(load_split(directory, "val")).tolist()
    rows = brute_force_rows(val, tok.eod_id, 32)[:4]
    assert np.asarray(load_split(directory, "val", "pad", 32))[: 4 * 32].tolist() == sum(rows, [])
    assert rows[0][-1] == tok.eod_id and tok.decode(rows[1]).startswith(" ")  # padded; a sentence each
    assert r["tokens"] == 4 * 32 and r["bytes"] == sum(tok.n_bytes(row) for row in rows) < 4 * 32 * 4
    from experiments import text8 as text8_cli

    text8_data = ["--data.rows", "pad", "--data.data-dir", str(tmp_path / "data")]
    code, _, err = run(monkeypatch, capsys, text8_cli.main, "train", "demo", *TINY, *text8_data)
    assert code == 2 and err.startswith("error: --data.rows pad needs documents") and err.count("\n") == 1
