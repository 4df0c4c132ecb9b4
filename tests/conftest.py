"""Fixtures shared by the test files: a small English-like corpus written by the test itself."""

import pytest
import torch

WORDS = ("the quick brown fox jumps over the lazy dog while seven wizards quietly hex a jovial "
         "sphinx of black quartz and the dog sleeps near the river bank every day").split()


def words_text(n: int, seed: int = 0) -> str:
    """n words from WORDS in a fixed random order."""
    g = torch.Generator().manual_seed(seed)
    return " ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (n,), generator=g))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small English-like text file of 6,000 words."""
    path = tmp_path_factory.mktemp("corpus") / "words.txt"
    path.write_text(words_text(6000))
    return path
