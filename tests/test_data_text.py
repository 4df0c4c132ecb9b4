"""The text8 alphabet: normaliser, encode/decode, the built-in corpus."""

import numpy as np
import pytest
import torch

from nanodd.data import VOCAB, DataError, builtin_text, decode, encode, normalize_text8


@pytest.mark.parametrize(
    "raw, want",
    [
        ("Hello, World!", "hello world"),
        ("In 1984 there were 2 cats.", "in one nine eight four there were two cats"),
        ("x0y", "x zero y"),
        ("café naïve Straße 東京", "caf na ve stra e"),
        ("  tabs\tand\nnew\r\nlines   ", "tabs and new lines"),
        ("don't — e-mail: a@b.org", "don t e mail a b org"),
        ("ÀB", "b"),
        ("", ""),
        ("!!! ... ---", ""),
    ],
)
def test_normalize_examples(raw, want):
    assert normalize_text8(raw) == want


def test_normalize_is_idempotent_and_in_alphabet():
    text = "The 3 Musketeers (1844) — Dumas; ÉTÉ 42°C\t\n" * 3
    once = normalize_text8(text)
    assert normalize_text8(once) == once
    assert set(once) <= set(VOCAB)
    assert "  " not in once and once == once.strip()


def test_encode_decode_roundtrip_and_ids():
    ids = encode("ab z")
    assert ids.dtype == np.uint8 and ids.tolist() == [1, 2, 0, 26]
    assert decode(ids) == "ab z"
    assert decode([1, 27, 2, 255, -1]) == "a_b__"
    assert decode(torch.tensor([[8, 9], [27, 0]])) == "hi_ "


def test_encode_refuses_text_outside_the_alphabet():
    with pytest.raises(DataError, match="normalize_text8"):
        encode("Hello")


def test_builtin_corpus_is_normalised_prose():
    text = builtin_text()
    assert len(text) > 300_000
    assert normalize_text8(text) == text
    words = text.split()
    assert words.count("the") > 1000
