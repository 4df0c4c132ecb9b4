"""Large vocabularies: training tokens/s, bytes/s and peak memory for one DiT at V = 27, 4,096 and 50,257.

    python benchmarks/vocab_memory.py                           # width 128, 4 blocks, batch 8 x 256, CPU
    python benchmarks/vocab_memory.py --vocab 27 50257 --gpt2-ranks ../shared/data/gpt2.tiktoken

MDLM's masked bound at each vocabulary size (the network's vocabulary V + 1 with the mask), trained
for ``steps`` AdamW steps in its own worker process, two ways:

    at-x0   the library's loss: log p(x0 | z_t) read at the data only (``Absorbing.log_p_of_x0``)
    table   the full [B, L, V + 1] table of log p(x0 | z_t) (``Absorbing.log_p_x0``), then gathered

Peak memory is the worker's peak resident set while training minus its resident set once the model is
built (the steps' own memory, AdamW's state included; CPU).  Bytes/s multiplies tokens/s by the bytes per
token of a tokenizer with that vocabulary on the built-in corpus's raw text: text8 characters (27),
a BPE trained on it (4,096), GPT-2 (50,257; needs ``--gpt2-ranks`` or $NANODD_GPT2_RANKS, else
left out).  Prints a table; asserts nothing.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

if __package__ in (None, ""):  # run as a file: make benchmarks/ and experiments/ importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import tyro

import nanodd.checks as checks
from benchmarks.train_throughput import machine
from experiments.cli import run
from nanodd.data import DataError, tokenizers
from nanodd.data.corpus import builtin_documents
from nanodd.functional import make_apply, params_of
from nanodd.methods import mdlm
from nanodd.model import DiT, DiTConfig
from nanodd.processes.absorbing import Absorbing

Loss = Literal["at-x0", "table"]


@dataclasses.dataclass(frozen=True)
class Args:
    vocab: tuple[int, ...] = (27, 4096, 50257)
    """Data vocabulary sizes V (the network sees V + 1 ids)."""
    losses: tuple[Loss, ...] = ("at-x0", "table")
    """How the loss reads log p(x0 | z_t)."""
    d_model: int = 128
    n_blocks: int = 4
    n_heads: int = 4
    batch_size: int = 8
    seq_len: int = 256
    steps: int = 4
    """Timed steps per configuration (after one warm-up step)."""
    gpt2_ranks: str | None = None
    """GPT-2's gpt2.tiktoken for the bytes per token at 50,257 (default: $NANODD_GPT2_RANKS)."""

    def __post_init__(self):
        DiTConfig(d_model=self.d_model, n_heads=self.n_heads, n_blocks=self.n_blocks)
        for name in ("batch_size", "seq_len", "steps"):
            checks.at_least(name, getattr(self, name), 1)
        for v in self.vocab:
            checks.at_least("vocab", v, 2)


def table_bound(bound: mdlm.MaskedBound):
    """The masked bound through the full table of log p(x0 | z_t): what the library computed before."""

    def call(apply, params, x0, t, noise):
        t_k, alpha_t, w = mdlm.masked_weight(bound.schedule, bound.T, t)
        zt = bound.process.corrupt(x0, alpha_t[:, None].to(noise["u"].dtype), noise["u"])
        log_p = bound.process.log_p_x0(apply(params, zt, t_k.float()), zt)
        return w * -log_p.gather(-1, x0[..., None]).squeeze(-1).sum(-1)

    return call


def rss() -> int:
    """Resident set now, bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(args: Args, V: int, loss: Loss, pipe) -> None:
    torch.manual_seed(0)
    cfg = mdlm.MDLMConfig(process=Absorbing(V), at_least_one_mask=False)
    model = DiT(DiTConfig(vocab_size=V + 1, d_model=args.d_model, n_heads=args.n_heads, n_blocks=args.n_blocks))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bound = mdlm.bound(cfg) if loss == "at-x0" else table_bound(mdlm.bound(cfg))
    apply, params = make_apply(model), params_of(model)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (args.batch_size, args.seq_len), generator=gen)

    def step():
        noise = {"t": torch.rand(args.batch_size, generator=gen, dtype=torch.float64)}
        noise |= {"u": torch.rand(x0.shape, generator=gen, dtype=torch.float64)}
        value = bound(apply, params, x0, noise["t"], noise).mean() / args.seq_len
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    base = rss()
    step()  # warm-up: the optimizer's state
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pipe.send((args.steps * x0.numel() / seconds, max(peak - base, 0)))


def bytes_per_token(args: Args) -> dict[int, float]:
    """Bytes per token of a tokenizer with each vocabulary size, on the built-in corpus's raw text
    (text8: one byte per character it keeps)."""
    text = "".join(raw.decode() for _, raw in builtin_documents())
    n, ratios = len(text.encode()), {27: 1.0}
    for V in args.vocab:
        if V == 50257:
            try:
                ratios[V] = n / len(tokenizers.gpt2(args.gpt2_ranks).encode(text))
            except DataError as e:
                print(f"bytes/s at 50,257 left out: {e}")
        elif V not in ratios and V >= tokenizers.BPE_MIN_VOCAB:
            ratios[V] = n / len(tokenizers.train_bpe([text], V).encode(text))
    return ratios


def main(args: Annotated[Args, tyro.conf.arg(name="")]) -> None:
    print(f"device {machine(torch.device('cpu'))}, {torch.get_num_threads()} threads")
    print(
        f"model: width {args.d_model}, {args.n_blocks} blocks; batch {args.batch_size} x {args.seq_len}; "
        f"MDLM, fp32 eager, {args.steps} timed steps per row",
        flush=True,
    )
    ratios = bytes_per_token(args)
    ctx = mp.get_context("spawn")
    print("\n| V | loss | tokens/s | bytes/token | bytes/s | step memory |")
    print("|---|---|---|---|---|---|")
    for V in args.vocab:
        for loss in args.losses:
            here, there = ctx.Pipe()
            process = ctx.Process(target=worker, args=(args, V, loss, there), daemon=True)
            process.start()
            tps, memory = here.recv()
            process.join()
            ratio = ratios.get(V)
            per_byte = f"{ratio:.2f} | {tps * ratio:,.0f}" if ratio else "- | -"
            print(f"| {V:,} | {loss} | {tps:,.0f} | {per_byte} | {memory / 2**20:,.0f} MiB |", flush=True)


def cli(argv: list[str] | None = None) -> None:
    run(main, argv, prog="python benchmarks/vocab_memory.py", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    cli()
