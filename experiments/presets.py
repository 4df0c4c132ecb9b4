"""The presets: named configs, each with the one text that describes it (text8's, then any corpus's).

A ``Preset`` is ``(about, cfg)``.  ``about`` is both its documentation and its ``--help`` (beside its name
in ``train --help``, and atop ``train <preset> --help``); its first sentence says what it is, the rest
where its numbers come from.  ``choice`` turns a table of presets into the type a CLI takes, so that
every field of the chosen config can be overridden on the command line.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import tyro

from nanodd.config import Config, DataConfig, TrainConfig
from nanodd.methods.ar import ARConfig
from nanodd.methods.bd3lm import BD3LMConfig
from nanodd.methods.d3pm import D3PMConfig
from nanodd.methods.mdlm import MDLMConfig
from nanodd.methods.sedd import SEDDConfig
from nanodd.methods.udlm import UDLMConfig
from nanodd.model import DiTConfig
from nanodd.processes.absorbing import Absorbing
from nanodd.processes.uniform import Uniform
from nanodd.schedules import Geometric, LogLinear


class Preset(NamedTuple):
    about: str
    """What it is (the first sentence), then where its numbers come from; its ``--help``."""
    cfg: Config
    """The config the name stands for; the command line overrides any field of it."""


def choice(presets: dict[str, Preset]) -> type:
    """The type of a CLI argument choosing one of ``presets`` by name (a subcommand each, ``about`` its
    help), every field of the chosen config overridable (``--train.lr 3e-4``)."""
    return tyro.extras.subcommand_type_from_defaults(
        {name: p.cfg for name, p in presets.items()}, {name: p.about for name, p in presets.items()}
    )


def variant(cfg: Config, out_dir: str, *, method=None, **train) -> Config:
    """``cfg`` writing to its own ``out_dir``, with another ``method`` if given and ``train``'s fields replaced."""
    train_cfg = dataclasses.replace(cfg.train, out_dir=out_dir, **train)
    return dataclasses.replace(cfg, method=cfg.method if method is None else method, train=train_cfg)


D3PM_TEXT8 = Config(
    model=DiTConfig(),
    method=D3PMConfig(T=1000, hybrid_coeff=0.05),
    data=DataConfig(source="text8", seq_len=256),
    train=TrainConfig(compile=True, out_dir="runs/d3pm-text8"),
)
TRAIN_1M = TrainConfig(
    batch_size=256,
    grad_accum=2,
    max_iters=1_000_000,
    lr=3e-4,
    min_lr=3e-4,
    warmup_iters=2_000,
    weight_decay=0.0,
    beta2=0.999,
    grad_clip=1.0,
    ema_decay=0.9999,
    compile=True,
)
"""What MD4's, SEDD's and UDLM's text8 recipes share: batch 512 as 256 x 2, 1M steps, AdamW at 3e-4 (constant
after warmup), clipping at 1, EMA 0.9999; each preset says where its numbers come from."""
MDLM_TEXT8 = Config(
    model=DiTConfig(dropout=0.05),
    method=MDLMConfig(schedule=LogLinear(eps=1e-4)),
    data=DataConfig(source="text8", seq_len=256),
    train=dataclasses.replace(TRAIN_1M, min_lr=0.0, weight_decay=0.03, out_dir="runs/mdlm-text8"),
)
SEDD_ABSORB_TEXT8 = Config(
    model=DiTConfig(),
    method=SEDDConfig(process=Absorbing(), schedule=LogLinear(eps=1e-3), scale_by_sigma=True),
    data=DataConfig(source="text8", seq_len=256),
    train=dataclasses.replace(TRAIN_1M, out_dir="runs/sedd-absorb-text8"),
)
SEDD_UNIFORM_TEXT8 = Config(
    model=DiTConfig(),
    method=SEDDConfig(process=Uniform(), schedule=Geometric(sigma_min=1e-5, sigma_max=20.0), scale_by_sigma=False),
    data=DataConfig(source="text8", seq_len=256),
    train=dataclasses.replace(TRAIN_1M, out_dir="runs/sedd-uniform-text8"),
)
UDLM_TEXT8 = Config(
    model=DiTConfig(),
    method=UDLMConfig(schedule=LogLinear(eps=1e-3), process=Uniform()),
    data=DataConfig(source="text8", seq_len=256),
    train=dataclasses.replace(TRAIN_1M, warmup_iters=2_500, out_dir="runs/udlm-text8"),
)
AR_TEXT8 = variant(D3PM_TEXT8, "runs/ar-text8", method=ARConfig())
BD3LM_TEXT8 = variant(MDLM_TEXT8, "runs/bd3lm-text8", method=BD3LMConfig(block_size=16))
DEMO = Config(
    model=DiTConfig(d_model=128, n_heads=4, n_blocks=4, cond_dim=64, dropout=0.0),
    method=D3PM_TEXT8.method,
    data=DataConfig(source="builtin", seq_len=128),
    train=dataclasses.replace(
        D3PM_TEXT8.train,
        batch_size=8,
        grad_accum=1,
        max_iters=2700,
        warmup_iters=900,
        ema_decay=0.0,
        compile=False,
        eval_interval=900,
        eval_batches=20,
        log_interval=100,
        out_dir="runs/demo",
    ),
)
"""nanoDD's text8 recipe (D3PM, lambda = 0.05, its AdamW) changed as our sweeps found (docs/recipes.md): a
quarter of the tokens per step, so about three times the steps in the same time, a third of them warming up,
no EMA."""


RACE_MODEL = DiTConfig(d_model=256, n_heads=4, n_blocks=4, cond_dim=128, dropout=0.0)
"""The recipe race's network (``benchmarks.recipes``): nanoDD's DiT at width 256, 4 blocks, no dropout."""


NANODD_RACE = Config(
    model=RACE_MODEL,
    method=D3PM_TEXT8.method,
    data=DataConfig(source="builtin", seq_len=256),
    train=dataclasses.replace(
        D3PM_TEXT8.train,
        batch_size=16,
        grad_accum=1,
        max_iters=300,
        warmup_iters=100,
        ema_decay=0.0,
        compile=False,
        eval_interval=300,
        eval_batches=5,
        log_interval=30,
        out_dir="runs/nanodd-race",
    ),
)
"""nanoDD's recipe on 300 steps as the measurement behind the race's goal ran it: 100 steps of warmup, no EMA."""


DEMO_RACE = dataclasses.replace(
    DEMO,
    model=RACE_MODEL,
    data=NANODD_RACE.data,
    train=dataclasses.replace(
        DEMO.train,
        batch_size=DEMO.train.batch_size * DEMO.data.seq_len // NANODD_RACE.data.seq_len,
        max_iters=900,
        warmup_iters=300,
        eval_interval=900,
        eval_batches=5,
        log_interval=90,
        out_dir="runs/demo-race",
    ),
)
"""demo's recipe on the race's network and length: its tokens per step (4 x 256 characters), so 900 steps where
nanodd-race takes 300, a third of them warming up."""


def demo_of(name: str, method, what: str) -> Preset:
    """demo with another method: the same model, data and budget, its own run directory."""
    return Preset(f"demo's model, data and budget trained with {what}.", variant(DEMO, f"runs/{name}", method=method))


DEMOS = {
    "demo": Preset(
        "A small D3PM that learns visibly on 2 CPU cores in a few minutes, on the built-in corpus.  Its recipe "
        "is nanoDD's (d3pm-text8's loss and AdamW, no EMA) at 8 x 128 characters per step for 2,700 steps, a "
        "third of them warming up: what our sweeps found fastest per second (docs/recipes.md).",
        DEMO,
    ),
    "mdlm-demo": demo_of(
        "mdlm-demo", MDLMConfig(schedule=LogLinear(eps=1e-3)), "MDLM's continuous-time NELBO (log-linear, antithetic t)"
    ),
    "sedd-absorb-demo": demo_of(
        "sedd-absorb-demo",
        SEDDConfig(process=Absorbing(), schedule=LogLinear(eps=1e-3)),
        "SEDD's score entropy on the absorbing graph (log-linear noise, ratios scaled by sigma)",
    ),
    "sedd-uniform-demo": demo_of(
        "sedd-uniform-demo",
        SEDDConfig(process=Uniform(), schedule=Geometric(), scale_by_sigma=False),
        "SEDD's score entropy on the uniform graph (geometric noise 1e-5 -> 20)",
    ),
    "udlm-demo": demo_of(
        "udlm-demo", UDLMConfig(schedule=LogLinear(eps=1e-3)), "UDLM's continuous-time uniform-state NELBO (log-linear)"
    ),
    "bd3lm-demo": Preset(
        "demo's model, data and budget trained with BD3-LM's block NELBO: "
        "blocks of 16 characters, autoregressive over blocks, masked diffusion inside them (linear schedule, "
        "unclipped).  Each step runs the network over 2L = 256 positions (the noisy and the clean copy), so it "
        "takes about twice mdlm-demo's time; its default sampler is block (the KV cache), and "
        "--sample.block.length 512 writes past the training length.",
        variant(DEMO, "runs/bd3lm-demo", method=BD3LMConfig(block_size=16)),
    ),
}
"""The presets ``demo`` trains (the first by default): each learns on 2 CPU cores in a few minutes."""
PRESETS = {
    "d3pm-text8": Preset(
        "nanoDD's single-GPU recipe: DiT 768 wide, 12 heads, 12 blocks; T = 1000, lambda = 0.05; batch 256 "
        "per device x 4 accumulation steps; AdamW 1e-3 -> 1e-5 cosine, 500k steps.",
        D3PM_TEXT8,
    ),
    "d3pm-text8-8gpu": Preset(
        "d3pm-text8 for 8 GPUs under torchrun: grad_accum 1, so the global batch stays 8 x 256 = 2048. "
        "batch_size is per device.",
        variant(D3PM_TEXT8, "runs/d3pm-text8-8gpu", grad_accum=1),
    ),
    "mdlm-text8": Preset(
        "Continuous-time masked diffusion (MDLM / MD4) on text8 with MD4's recipe (Shi et al. 2024, App. J.1; "
        "<= 1.37 bits/char in its Table 2).  The MDLM paper (Sahoo et al. 2024) has no text8 experiment; MD4's "
        "is the published one for this objective.  From MD4 App. J.1: a 12-layer, 12-head, 768-wide "
        "transformer (ours: d3pm-text8's DiT), sequence length 256, batch 512, 1M steps, AdamW at 3e-4 with "
        "weight decay 0.03, 2,000 warmup steps then cosine decay, dropout 0.05, EMA 0.9999, the linear "
        "schedule alpha_t = 1 - (1 - eps) t with eps = 1e-4 (our LogLinear(eps=1e-4): MDLM's 'log-linear' "
        "noise is this linear alpha_t), antithetic t, a time-conditioned network.  Not stated there, so ours: "
        "beta2 = 0.999 (optax's AdamW default), gradient clipping at 1.0, decay to 0; the batch is 256 x 2 "
        "accumulation steps on one GPU.",
        MDLM_TEXT8,
    ),
    "sedd-absorb-text8": Preset(
        "SEDD with the absorbing graph on text8 (Lou et al. 2024, §5.2; <= 1.39 bits/char in its Table 2).  "
        "The paper follows D3PM's text8 setup, so the network is d3pm-text8's DiT (768 wide, 12 heads, 12 "
        "blocks) on 256 characters; batch 512 (256 x 2 accumulation steps), AdamW at 3e-4 with 2,000 warmup "
        "steps, gradient clipping at 1, EMA 0.9999; log-linear noise with scale_by_sigma, as its code's README "
        "pairs with the absorbing graph.  Not stated in what we checked, so ours: a constant rate after "
        "warmup, no weight decay, beta2 = 0.999, 1M steps (MD4's and UDLM's count).",
        SEDD_ABSORB_TEXT8,
    ),
    "sedd-uniform-text8": Preset(
        "SEDD with the uniform graph on text8 (Lou et al. 2024; <= 1.47 bits/char in its Table 2).  "
        "sedd-absorb-text8's recipe with the geometric noise sigma_t = 1e-5^(1-t) 20^t (§5.1) and unscaled "
        "ratios (no scale_by_sigma), as its code's README pairs with the uniform graph; 27 ids: the uniform "
        "process has no mask.",
        SEDD_UNIFORM_TEXT8,
    ),
    "udlm-text8": Preset(
        "UDLM, uniform-state diffusion, on text8 (Schiff et al. 2024; its text8 training script).  A "
        "12-block, 768-wide, 12-head DiT on 256 characters, batch 512 (256 x 2 accumulation steps), AdamW at "
        "3e-4 with a constant rate after warmup, 1M steps, the log-linear schedule, a time-conditioned "
        "network, EMA 0.9999, gradient clipping at 1.  Ours where not stated in what we checked: 2,500 "
        "warmup steps, no weight decay, beta2 = 0.999, eps = 1e-3.  Published text8 results for UDLM are "
        "around 1.44 bits/char (quoted by later papers; not confirmed here).",
        UDLM_TEXT8,
    ),
    "bd3lm-text8": Preset(
        "Block diffusion (BD3-LM, Arriola et al. 2025) on text8: autoregressive over blocks of 16 characters, "
        "masked diffusion inside them (--method.block-size 4 | 8 | 16, the paper's sizes; it must divide 256).  "
        "No text8 result is published for it; the paper reports LM1B and OWT.  The network and optimiser are "
        "mdlm-text8's (DiT 768 wide, 12 heads, 12 blocks, dropout 0.05; batch 512 as 256 x 2, AdamW 3e-4, "
        "weight decay 0.03, clipping at 1, EMA 0.9999, 1M steps), so that an mdlm-text8 run can be fine-tuned "
        "as the paper does: --train.init-from runs/mdlm-text8 (its EMA weights, a fresh optimizer, step 0; "
        "set --train.max-iters to the fine-tuning budget).  From the paper's code (kuleshov-group/bd3lms, "
        "checked: README and configs): BD3-LMs are fine-tuned from an MDLM trained 850K steps (OWT, 1M steps in "
        "all; the LM1B script likewise starts from an 850K MDLM checkpoint), batch 512, AdamW 3e-4 after "
        "warmup, no weight decay, beta2 0.999, clipping at 1, EMA 0.9999, a time-agnostic network "
        "(--model.no-time-conditioning) without dropout, the linear schedule, and the clip of the mask rate "
        "U[beta, omega] searched on validation for least variance over widths omega - beta in 0.5..0.9 in "
        "steps of 0.05 (here: python -m experiments.clip RUN, then --method.beta / --method.omega).  Ours: "
        "the unclipped default (beta 0, omega 1) until the search is run, mdlm-text8's time-conditioned "
        "network, weight decay and dropout (so its checkpoints fit), 256 characters.  Each step runs the "
        "network over 2L = 512 positions, about twice mdlm-text8's cost.",
        BD3LM_TEXT8,
    ),
    "nanodd-race": Preset(
        "nanoDD's text8 recipe (d3pm-text8) on the recipe race's network, for benchmarks.recipes: DiT 256 wide, "
        "4 heads, 4 blocks, cond width 128, no dropout, 256 characters, batch 16; D3PM with T = 1000 and "
        "lambda = 0.05, iid steps; AdamW lr 1e-3 with cosine decay to 1e-5, betas (0.9, 0.98), weight decay "
        "0.1, clipping at 0.1.  Its 500k steps become 300 (what 300 s gives on 2 CPU cores) with 100 of "
        "warmup and no EMA, as the measurement that set the race's goal ran nanoDD: its own 0.5% of warmup "
        "(2 steps here) and its EMA horizon would handicap it (docs/recipes.md).  A budget (benchmarks.recipes, "
        "--sweep.budget) rescales the steps, the warmup keeping its third.",
        NANODD_RACE,
    ),
    "demo-race": Preset(
        "demo's recipe on the recipe race's network, for benchmarks.recipes: nanodd-race at a quarter of its "
        "tokens per step, 4 x 256 characters, so 900 steps (what 300 s gives on 2 CPU cores; a third of them "
        "warming up) instead of 300.  The fastest per second our sweeps found at 300 s (docs/recipes.md): "
        "learning rate, warmup fraction, clipping, EMA, antithetic steps, time conditioning, MDLM's loss and "
        "compile were searched and left as nanoDD has them.",
        DEMO_RACE,
    ),
    "ar-text8": Preset(
        "The autoregressive judge on text8: d3pm-text8's DiT and recipe with a causal mask, trained on "
        "next-character prediction; it scores samples (gen-BPC).  The recipe is our choice: a judge, not a "
        "published baseline.",
        AR_TEXT8,
    ),
    "ar-demo": Preset(
        "The autoregressive judge for the demos: demo's model, data and budget, causal, next-character NLL.",
        variant(DEMO, "runs/ar-demo", method=ARConfig()),
    ),
    **DEMOS,
}
"""Every preset ``train`` takes."""


# ---- any corpus, any tokenizer (python -m experiments.corpus) -------------------------------------------

BPE_DEMO = Config(
    model=DEMO.model,
    method=MDLMConfig(schedule=LogLinear(eps=1e-3)),
    data=DataConfig(source="builtin", seq_len=128, tokenizer="bpe", vocab_size=2048),
    train=dataclasses.replace(DEMO.train, out_dir="runs/bpe-demo"),
)
BYTES_DEMO = dataclasses.replace(
    BPE_DEMO,
    data=DataConfig(source="builtin", seq_len=256, tokenizer="bytes"),
    train=dataclasses.replace(DEMO.train, batch_size=DEMO.train.batch_size // 2, out_dir="runs/bytes-demo"),
)
OWT_DATA = DataConfig(source="hf:openwebtext", seq_len=1024, tokenizer="gpt2")
OWT_TRAIN = dataclasses.replace(
    TRAIN_1M, batch_size=64, grad_accum=1, warmup_iters=2_500, eval_interval=10_000, eval_batches=4
)
MDLM_OWT = Config(
    model=DiTConfig(dropout=0.1),
    method=MDLMConfig(schedule=LogLinear(eps=1e-3)),
    data=OWT_DATA,
    train=dataclasses.replace(OWT_TRAIN, out_dir="runs/mdlm-owt"),
)
MDLM_LM1B = Config(
    model=DiTConfig(dropout=0.1),
    method=MDLMConfig(schedule=LogLinear(eps=1e-3)),
    data=DataConfig(source="hf:lm1b", seq_len=128, tokenizer="wordpiece", rows="pad"),
    train=dataclasses.replace(OWT_TRAIN, out_dir="runs/mdlm-lm1b"),
)
CORPUS_DEMOS = {
    "bpe-demo": Preset(
        "MDLM with a byte-level BPE of 2,048 ids trained on the built-in corpus (CPython's documentation, raw: "
        "code, punctuation and line breaks kept): demo's model and budget on 128 tokens (~500 bytes), on 2 CPU "
        "cores in a few minutes.  --data.source takes your own text (a file, a directory or glob of files, a "
        "URL), on which the tokenizer is trained.",
        BPE_DEMO,
    ),
    "bytes-demo": Preset(
        "bpe-demo on raw UTF-8 bytes (257 ids: the 256 byte values and the end of document), 256 bytes per "
        "sequence, batch 4 (demo's tokens per step): lossless on any text, no tokenizer to train.",
        BYTES_DEMO,
    ),
}
"""The presets ``demo`` trains in ``experiments.corpus`` (the first by default)."""
CORPUS_PRESETS = {
    "mdlm-owt": Preset(
        "MDLM on OpenWebText with GPT-2's tokenizer (Sahoo et al. 2024, §4.1; its reported bound after 1M "
        "steps is about 23 perplexity, not re-checked here).  From the paper: sequences of 1,024 GPT-2 tokens (documents joined by "
        "<|endoftext|> and wrapped), a DiT of 12 blocks, 768 wide, 12 heads (ours: d3pm-text8's, dropout 0.1), "
        "the log-linear schedule, batch 512, AdamW at 3e-4 after 2,500 linear warmup steps, then constant, "
        "EMA 0.9999, 1M steps; the last 100k documents are its validation set.  Ours: batch_size is per "
        "device, so 64 on each of 8 GPUs under torchrun gives 512 (or raise grad_accum); the split is our "
        "90/5/5 by bytes; beta2 0.999, no weight decay, clipping at 1 (not stated in what we checked).  "
        "Needs the datasets extra and the network to prepare (pip install -e '.[hf]').",
        MDLM_OWT,
    ),
    "sedd-owt": Preset(
        "SEDD (absorbing graph, small) on OpenWebText with GPT-2's tokenizer (Lou et al. 2024, §5.1).  "
        "mdlm-owt's data, model and optimiser (1,024 tokens, DiT 12 x 768, batch 512, AdamW 3e-4, 2,500 "
        "warmup steps, EMA 0.9999, clipping at 1), trained with score entropy and log-linear noise scaled by "
        "sigma, as its code pairs with the absorbing graph.  Ours where not checked: dropout 0.1, 1M steps.",
        variant(MDLM_OWT, "runs/sedd-owt", method=SEDDConfig(process=Absorbing(), schedule=LogLinear(eps=1e-3))),
    ),
    "bd3lm-owt": Preset(
        "BD3-LM on OpenWebText with GPT-2's tokenizer (Arriola et al. 2025; OWT bounds and gen-PPL in its "
        "tables, not re-checked here): mdlm-owt's data and model (1,024 tokens, DiT 12 x 768, dropout 0.1) "
        "and optimiser (batch 512, AdamW 3e-4, 2,500 warmup steps then constant, EMA 0.9999, clipping at 1), "
        "blocks of 16 tokens (--method.block-size 4 | 8 | 16).  The paper fine-tunes from an MDLM trained "
        "850K steps (--train.init-from runs/mdlm-owt, then --train.max-iters 150000 for its 1M in all) and "
        "clips the mask rate to the (beta, omega) of least variance (python -m experiments.clip RUN).  Ours: "
        "unclipped until the search is run; mdlm-owt's time-conditioned network with dropout, so its "
        "checkpoints fit.",
        variant(MDLM_OWT, "runs/bd3lm-owt", method=BD3LMConfig(block_size=16)),
    ),
    "ar-owt": Preset(
        "The autoregressive judge on OpenWebText (gen-PPL's judge is GPT-2 in the papers; this one is trained "
        "here): mdlm-owt's DiT and recipe with a causal mask, next-token NLL.",
        variant(MDLM_OWT, "runs/ar-owt", method=ARConfig()),
    ),
    "mdlm-lm1b": Preset(
        "MDLM on the One Billion Word benchmark (LM1B) with bert-base-uncased's WordPiece (Sahoo et al. 2024, "
        "§4.1; BD3-LM's table gives it <= 31.78 perplexity, not re-checked here).  From the paper: sentences "
        "padded and cut to 128 tokens, one per row (--data.rows wrap packs them instead), a DiT of 12 blocks, "
        "768 wide, 12 heads, the log-linear schedule, batch 512, AdamW at 3e-4 after 2,500 warmup steps, 1M "
        "steps.  Ours: mdlm-owt's optimiser and dropout, batch_size per device (64 on each of 8 GPUs); the "
        "padding (end-of-document ids) counts as tokens of the bound, so the per-token perplexity is not the "
        "paper's, which leaves padding out; bits per byte counts the sentences' bytes only.  Needs BERT's "
        "vocab.txt (--data.tokenizer-file PATH/vocab.txt), the datasets extra and the network to prepare.",
        MDLM_LM1B,
    ),
    "ar-bpe-demo": Preset(
        "The autoregressive judge for bpe-demo: its model, data and budget, causal, next-token NLL (it scores "
        "samples in bits per byte).",
        variant(BPE_DEMO, "runs/ar-bpe-demo", method=ARConfig()),
    ),
    "ar-bytes-demo": Preset(
        "The autoregressive judge for bytes-demo: its model, data and budget, causal, next-byte NLL.",
        variant(BYTES_DEMO, "runs/ar-bytes-demo", method=ARConfig()),
    ),
    **CORPUS_DEMOS,
}
