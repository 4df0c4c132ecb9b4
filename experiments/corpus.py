"""Any corpus, any tokenizer: prepare, train, sample and evaluate on your own text, bytes or BPE, or GPT-2's.

    python -m experiments.corpus demo                                  # no download: BPE on the built-in corpus
    python -m experiments.corpus demo bytes-demo                       # the same on raw UTF-8 bytes
    python -m experiments.corpus train bpe-demo --data.source my.txt   # your text (a BPE is trained on it)
    python -m experiments.corpus train bpe-demo --data.source 'notes/**/*.md' --data.vocab-size 8192
    python -m experiments.corpus prepare --data.source corpus/ --data.tokenizer gpt2 \
        --data.tokenizer-file gpt2.tiktoken                            # GPT-2's ids, offline
    torchrun --standalone --nproc_per_node=8 -m experiments.corpus train mdlm-owt
    python -m experiments.corpus sample runs/bpe-demo --sample.infill "The ___ statement"   # 3 tokens there
    python -m experiments.corpus evaluate runs/bpe-demo                # bits per token, per byte, perplexity

The same subcommands as ``experiments.text8`` (``experiments/commands.py``) over the presets of
``experiments/presets.py`` for tokenized corpora; ``prepare`` defaults to a BPE of 4,096 ids.  A run
directory holds its tokenizer, so sampling and evaluation need no path back to the corpus.  Every mistake
is one ``error: ...`` line with exit code 2 (NANODD_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

from typing import Callable, Sequence

from experiments import commands
from experiments.presets import CORPUS_DEMOS, CORPUS_PRESETS
from nanodd.config import DataConfig

PROG = "python -m experiments.corpus"


def subcommands() -> dict[str, Callable[..., commands.Work]]:
    """The corpus subcommands over its presets, with the samplers registered now."""
    return commands.subcommands(CORPUS_PRESETS, CORPUS_DEMOS, prog=PROG, data=DataConfig(tokenizer="bpe"))


def main(argv: Sequence[str] | None = None, *, check_only: bool = False) -> None:
    """Parse ``argv`` (default: sys.argv), check, and run the subcommand's work (``check_only``: the checks only)."""
    commands.main(subcommands(), argv, prog=PROG, description=__doc__.split("\n")[0], check_only=check_only)


if __name__ == "__main__":
    main()
