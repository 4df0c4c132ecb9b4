"""Tokenizers: lossless round trips, exact byte counts, stable identities, GPT-2 offline, BPE determinism."""

import base64
import hashlib
import json
import random

import numpy as np
import pytest
import torch

from nanodd.data import DataError, tokenizers
from nanodd.data.text import VOCAB, encode as text8_encode
from nanodd.protocols import Tokenizer, mismatches

CORPUS = "\n\n".join(
    f"The {w} of the {v} is {n}. Emoji 🙂, 世界 and café (e\u0301) in document {n}.\n  indented\tline"
    for n, (w, v) in enumerate([("king", "castle"), ("queen", "tower"), ("fox", "dog"), ("cat", "mat")] * 30)
)


def random_text(rng: random.Random, n: int) -> str:
    """Mixed scripts, emoji, combining marks, NUL, control characters and long whitespace runs."""
    pools = [
        "abcdefghijklmnopqrstuvwxyz ABCXYZ.,;!?'\"-",
        "世界你好日本語한국어",
        "🙂🚀👩‍💻🏳️‍🌈",
        "\u0301\u0308\u20dd",
        "\x00\x01\x7f",
        " " * 9 + "\t\n\r",
        "".join(chr(c) for c in range(0xA0, 0x17F)),
    ]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def toy_ranks() -> bytes:
    """A tiktoken ranks file: the 256 bytes, then three merges (GPT-2's format, made up vocabulary)."""
    tokens = [bytes([b]) for b in range(256)] + [b"th", b"he", b"the", b" the"]
    return b"".join(base64.b64encode(t) + b" %d\n" % i for i, t in enumerate(tokens))


@pytest.fixture(scope="module")
def bpe():
    return tokenizers.train_bpe([CORPUS], 300)


@pytest.fixture(scope="module")
def toy_gpt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("ranks") / "toy.tiktoken"
    path.write_bytes(toy_ranks())
    return tokenizers.gpt2(str(path), sha256=hashlib.sha256(toy_ranks()).hexdigest())


def lossless(bpe, toy_gpt2):
    return [tokenizers.byte_level(), bpe, toy_gpt2]


def test_every_tokenizer_satisfies_the_protocol(bpe, toy_gpt2):
    for tok in [tokenizers.text8(), *lossless(bpe, toy_gpt2)]:
        assert mismatches(tok, Tokenizer) == [], tok.name


def test_lossless_tokenizers_round_trip_random_unicode_and_count_its_bytes(bpe, toy_gpt2):
    rng = random.Random(0)
    texts = [random_text(rng, n) for n in (0, 1, 7, 200, 2000)] + ["<|endoftext|>", " " * 300, "\x00" * 5]
    for tok in lossless(bpe, toy_gpt2):
        for text in texts:
            ids = tok.encode(text)
            assert ids.dtype == np.int64 and (ids >= 0).all() and (ids < tok.vocab_size).all()
            assert tok.eod_id not in ids, "encode never writes the end of document, even from its literal"
            assert tok.decode(ids) == text and tok.decode(torch.as_tensor(ids)) == text
            assert tok.n_bytes(ids) == len(text.encode()), (tok.name, text[:20])


def test_decoding_marks_masks_and_documents_and_counts_no_bytes_for_them(bpe):
    for tok in (tokenizers.byte_level(), bpe):
        a, b = tok.encode("ab"), tok.encode("cd")
        ids = np.concatenate([a, [tok.vocab_size], b, [tok.eod_id]])
        assert tok.decode(ids) == "ab_cd<|endoftext|>"
        assert tok.n_bytes(ids) == 4
    text8 = tokenizers.text8()
    assert text8.decode([8, 9, 27, 0]) == "hi_ " and text8.n_bytes([8, 9, 27, 0]) == 3


def test_text8_keeps_nanodds_ids_and_normaliser():
    tok = tokenizers.text8()
    assert tok.vocab_size == 27 and tok.eod_id is None and tok.table == tuple(c.encode() for c in VOCAB)
    text = tok.normalize("Hello, World 42!")
    assert text == "hello world four two"
    assert tok.encode(text).tolist() == text8_encode(text).tolist() == [VOCAB.index(c) for c in text]
    assert tok.decode(tok.encode(text)) == text and tok.n_bytes(tok.encode(text)) == len(text)
    with pytest.raises(DataError, match="only ' ' and a-z"):
        tok.encode("Hello")


def test_the_byte_tokenizer_is_the_byte_values_then_the_end_of_document():
    tok = tokenizers.byte_level()
    assert tok.vocab_size == 257 and tok.eod_id == 256
    assert tok.encode("é\x00").tolist() == [0xC3, 0xA9, 0]


def test_bpe_training_is_deterministic_and_a_saved_tokenizer_encodes_identically(bpe, tmp_path):
    again = tokenizers.train_bpe([CORPUS], 300)
    assert again.identity() == bpe.identity() and bpe.vocab_size == 300 and bpe.eod_id == 299
    assert tokenizers.train_bpe([CORPUS], 301).identity()["sha256"] != bpe.identity()["sha256"]
    tokenizers.save(bpe, tmp_path / "tok")
    loaded = tokenizers.load(tmp_path / "tok")
    assert loaded.identity() == bpe.identity()
    sample = random_text(random.Random(1), 3000) + CORPUS
    assert loaded.encode(sample).tolist() == bpe.encode(sample).tolist()
    assert len(bpe.encode(CORPUS)) < len(CORPUS.encode()) / 2, "the merges compress the text they learned from"


def test_a_tampered_saved_tokenizer_is_refused(bpe, tmp_path):
    tokenizers.save(bpe, tmp_path / "tok")
    model = json.loads((tmp_path / "tok" / "bpe.json").read_text())
    merges = model["model"]["merges"]
    merges[0], merges[1] = merges[1], merges[0]  # the same vocabulary, merged in another order
    (tmp_path / "tok" / "bpe.json").write_text(json.dumps(model))
    with pytest.raises(DataError, match="do not match its recorded identity"):
        tokenizers.load(tmp_path / "tok")
    with pytest.raises(DataError, match="no readable tokenizer"):
        tokenizers.load(tmp_path / "missing")


def test_bpe_needs_room_for_the_bytes():
    with pytest.raises(DataError, match="at least 258 ids"):
        tokenizers.train_bpe([CORPUS], 257)


def test_gpt2_offline_from_a_ranks_file_encodes_with_its_merges(toy_gpt2, tmp_path):
    assert toy_gpt2.vocab_size == 261 and toy_gpt2.eod_id == 260
    assert toy_gpt2.encode("the").tolist() == [258] and toy_gpt2.encode(" the").tolist() == [259]
    tokenizers.save(toy_gpt2, tmp_path / "tok")
    assert tokenizers.load(tmp_path / "tok").encode("other then").tolist() == toy_gpt2.encode("other then").tolist()


def test_gpt2_refuses_a_file_with_the_wrong_hash_or_none_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "gpt2.tiktoken"
    path.write_bytes(toy_ranks())
    with pytest.raises(DataError) as wrong:
        tokenizers.gpt2(str(path))
    assert "is not GPT-2's ranks file" in str(wrong.value) and "\n" not in str(wrong.value)
    with pytest.raises(DataError) as missing:
        tokenizers.gpt2(str(tmp_path / "nowhere.tiktoken"))
    assert "cannot read" in str(missing.value) and "\n" not in str(missing.value)
    monkeypatch.setenv(tokenizers.GPT2_RANKS_ENV, str(path))
    with pytest.raises(DataError, match="is not GPT-2's ranks file"):
        tokenizers.gpt2()  # the environment variable is read too
    monkeypatch.delenv(tokenizers.GPT2_RANKS_ENV)

    def offline(name):
        raise ConnectionError("no network")

    import tiktoken

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(DataError) as neither:
        tokenizers.gpt2()
    message = str(neither.value)
    assert "data.tokenizer_file" in message and tokenizers.GPT2_RANKS_ENV in message and "\n" not in message


def test_identities_differ_across_tokenizers_and_are_stable(bpe, toy_gpt2):
    ids = [tok.identity()["sha256"] for tok in [tokenizers.text8(), *lossless(bpe, toy_gpt2)]]
    assert len(set(ids)) == 4
    assert tokenizers.byte_level().identity() == tokenizers.byte_level().identity()


WORDPIECE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "king", "cast", "##le", "##s", ",", ".", "'"]
WORDPIECE_VOCAB += ["a", "b", "c", "cafe", "s", "t", "don", "!", "世"]


@pytest.fixture(scope="module")
def wordpiece():
    return tokenizers.wordpiece(("\n".join(WORDPIECE_VOCAB) + "\n").encode())


def test_wordpiece_cuts_words_into_the_longest_pieces_after_bert_normalisation(wordpiece):
    ids = wordpiece.encode("The KING'S castles, Café!  xyz")
    tokens = [WORDPIECE_VOCAB[i] for i in ids]
    assert tokens == ["the", "king", "'", "s", "cast", "##le", "##s", ",", "cafe", "!", "[UNK]"]
    assert wordpiece.vocab_size == len(WORDPIECE_VOCAB) + 1 and wordpiece.eod_id == len(WORDPIECE_VOCAB)
    assert mismatches(wordpiece, Tokenizer) == []
    text = wordpiece.decode(ids)  # a space before each word start, none before a ## continuation
    assert text == " the king ' s castles , cafe ! [UNK]"
    assert wordpiece.n_bytes(ids) == len(text.encode()) and wordpiece.n_bytes([wordpiece.eod_id]) == 0
    # decoding gives the normalised text: encoding it again gives the same ids ([UNK] aside)
    assert wordpiece.encode(wordpiece.decode(ids[:-1])).tolist() == ids[:-1].tolist()
    assert wordpiece.encode("世").tolist() == [WORDPIECE_VOCAB.index("世")]  # CJK characters are words
    assert wordpiece.normalize("Café") == "cafe"


def test_wordpiece_saves_reloads_and_refuses_what_is_not_a_vocabulary(wordpiece, tmp_path):
    tokenizers.save(wordpiece, tmp_path / "wp")
    again = tokenizers.load(tmp_path / "wp")
    assert again.identity() == wordpiece.identity() and again.encode("the castles").tolist() == [5, 7, 8, 9]
    for bad in (b"the\nking\n", b"[UNK]\nthe\nthe\n", b"\xff\xfe"):
        with pytest.raises(DataError, match="not a WordPiece vocab.txt") as e:
            tokenizers.wordpiece(bad)
        assert "\n" not in str(e.value) and "data.tokenizer_file" in str(e.value)
    with pytest.raises(DataError, match="data.tokenizer_file"):
        tokenizers.build("wordpiece")  # no file given
    with pytest.raises(DataError, match="cannot read"):
        tokenizers.build("wordpiece", tokenizer_file=str(tmp_path / "missing.txt"))
