r"""The seam: three axes behind typed protocols, and the small records they hand each other.

A discrete diffusion model is three independent choices, each a small package:

- a **process** (``nanodd.processes``): how data is corrupted, q(z_t | x0) = Cat(alpha_t onehot(x0) +
  (1 - alpha_t) pi), its posterior q(z_s | z_t, x0), and the *output parameterisation* that turns the
  network's logits into log p(x0 | z_t) for that process.  The network itself knows no process.
- a **method** (``nanodd.methods``): an objective.  ``noise(gen, x0, cfg, slot)`` draws every random
  number one loss evaluation needs; ``loss(apply, params, x0, noise, *, cfg) -> (scalar, aux)`` is a
  pure function of them (same inputs, same output), so it can be differentiated with
  ``torch.func.grad``, vmapped over t and compiled.  ``aux`` always carries ``bpt``, the
  single-sample estimate of the method's bound in bits per token.  ``diffusion(cfg)`` says which
  process, schedule and time grid the trained network belongs to (what samplers need), and
  ``bound(cfg)`` is the integrand of the method's own likelihood bound (what evaluation needs).
- a **sampler** (``nanodd.samplers``): a pure step plus the one loop that draws its noise from an
  explicit ``torch.Generator`` and returns the samples with the number of network calls it really made.

Methods and samplers call the network through the **denoiser** ``apply(params, zt, t) -> logits``
(``nanodd.functional.Apply``), which knows no process and no method: a method that needs structured
attention (block diffusion) states its mask and passes it with each call, ``apply(params, z, t,
mask=mask, positions=pos, past=past, return_kv=True) -> (logits, kv)`` (``nanodd.model``).

Text reaches them as ids through a **tokenizer** (``nanodd.data.tokenizers``, the data axis): the
process's data symbols are the tokenizer's ids, and bits per byte compares models across tokenizers.

``Diffusion`` ties a trained network to its forward process; ``Integrand`` is a bound written as
E_{t ~ U(0, 1]} f(t), which every estimator in ``nanodd.evaluate`` accepts.  A test checks every
registered process, method and sampler against these protocols.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple, Protocol, TypedDict

import torch
from torch import Tensor

from nanodd.functional import Apply, Params
from nanodd.schedules import Schedule

Noise = dict[str, Tensor]
TimeInput = Callable[[Tensor], Tensor]
"""Continuous t in [0, 1] -> what the network is fed as time (D3PM: the step t T)."""

OnStep = Callable[[float, Tensor], None]
"""on_step(s, z_s): every intermediate state of a sampler (live views, trajectories)."""


def identity_time(t: Tensor) -> Tensor:
    """The time input of a continuous-time network: t itself."""
    return t


class Aux(TypedDict):
    """What every loss returns beside its scalar; methods extend it with their own terms."""

    bpt: Tensor
    """The single-sample estimate of the method's bound, bits per token (a 0-d tensor)."""


@dataclass(frozen=True)
class Slot:
    """Where a micro-batch sits in one optimizer step's global batch: ``index`` of ``count``
    (rank * grad_accum + micro, of world_size * grad_accum).  Stratified times use it, so the strata
    of every rank and accumulation step tile (0, 1] exactly once per optimizer step."""

    index: int = 0
    count: int = 1


class Process(Protocol):
    """A forward process over ``n_symbols`` data symbols; the network sees ``K`` ids.

    Each process mixes tokens towards a prior pi, q(z_t | x0) = alpha_t onehot(x0) + (1 - alpha_t) pi;
    its general formulas are ``nanodd.processes.mixing``.  Every random draw arrives as uniforms
    ``u ~ U[0, 1)`` of the tokens' shape, or Gumbels of the logits' shape; ``alpha_t`` and ``alpha_s``
    (s < t, so alpha_s >= alpha_t) broadcast against the tokens.
    """

    n_symbols: int

    @property
    def K(self) -> int: ...

    def prior(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
        """pi, the distribution every token is mixed towards, [K]."""

    def prior_sample(self, u: Tensor) -> Tensor:
        """z_1 from the prior, [B, L] long."""

    def corrupt(self, x0: Tensor, alpha_t: Tensor, u: Tensor) -> Tensor:
        """z_t ~ q(z_t | x0)."""

    def log_p_x0(self, logits: Tensor, zt: Tensor) -> Tensor:
        """The output parameterisation: network logits [B, L, K] -> log p(x0 | z_t), [B, L, K] fp32."""

    def step_kl(self, zt: Tensor, x0: Tensor, log_p: Tensor, alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
        """KL(q(z_s | z_t, x0) || p(z_s | z_t)) per token, [B, L], for the x0-parameterised reverse step."""

    def prior_kl(self, x0: Tensor, alpha_1: Tensor) -> Tensor:
        """The prior term KL(q(z_1 | x0) || pi) of every bound, per token [B, L] float64."""

    def reverse_sample(
        self, zt: Tensor, log_p: Tensor, alpha_t: Tensor, alpha_s: Tensor, u: Tensor, gumbel: Tensor
    ) -> Tensor:
        """z_s from the model's reverse step given log p(x0 | z_t) [B, L, K]."""

    def moves(self, zt: Tensor, alpha_t: Tensor, alpha_s: Tensor, u: Tensor) -> Tensor:
        """Which tokens the step t -> s with uniforms u may change, whatever the network says: bool
        [B, L].  A sampler skips the network call of a step in which none may."""


@dataclass(frozen=True)
class Diffusion:
    """What a trained network needs beside its weights: its process, schedule and time grid, and what
    its logits are (``nanodd.processes.readout`` reads them)."""

    process: Process
    schedule: Schedule
    T: int | None
    """Number of discrete steps the network was trained on (D3PM), or None for continuous time."""
    time_input: TimeInput
    output: Literal["x0", "ratios", "scaled-ratios"] = "x0"
    """"x0": logits of p(x0 | z_t), read by ``process.log_p_x0``; "ratios": log s_y = log q_t(z_t^i = y,
    z_t^{-i}) / q_t(z_t) for every position i and symbol y (SEDD); "scaled-ratios": the same less SEDD's
    scale log(alpha_t / (1 - alpha_t)) - log N."""
    block_size: int | None = None
    """Block diffusion (BD3-LM): the network reads a noisy block of this many tokens against the clean
    blocks before it (``nanodd.samplers.block`` caches their keys and values); None: the whole sequence."""


class Integrand(Protocol):
    """A likelihood bound written as  L(x0) = E_{t ~ U(0, 1]} E_noise f(x0, t, noise)  (nats per
    sequence).  ``T`` is its discrete grid (None: continuous time); estimators that need another
    grid make one with ``dataclasses.replace(integrand, T=...)``."""

    T: int | None

    def noise(self, gen: torch.Generator, x0: Tensor) -> Noise:
        """The random draws of one evaluation of f per sequence of x0."""

    def __call__(self, apply: Apply, params: Params, x0: Tensor, t: Tensor, noise: Noise) -> Tensor:
        """f per sequence, nats [B], for x0 [B, L] and t [B] in (0, 1] float64."""


class Method(Protocol):
    """A method module (``nanodd/methods/<name>.py``): its config class and four functions."""

    Config: type

    def diffusion(self, cfg: Any) -> Diffusion: ...

    def noise(self, gen: torch.Generator, x0: Tensor, cfg: Any, slot: Slot = Slot()) -> Noise: ...

    def loss(self, apply: Apply, params: Params, x0: Tensor, noise: Noise, *, cfg: Any) -> tuple[Tensor, Aux]: ...

    def bound(self, cfg: Any) -> Integrand: ...


class Samples(NamedTuple):
    x: Tensor
    """The samples, [B, L] long."""
    nfe: int
    """Network function evaluations actually made."""


class Sampler(Protocol):
    """A sampler (``nanodd/samplers/<name>.py``), registered with ``nanodd.samplers.register``.

    ``sample`` has one signature for every sampler; ``nanodd.samplers.loop.sampler`` writes it once, around
    the sampler's pure step, with the grid, conditioning, the explicit generator and the NFE count.
    """

    Options: type
    """Its own settings, a frozen dataclass (empty when it has none): the CLI's ``sample.<name>`` options."""
    SUMMARY: str
    """What it is and which models it serves, in a few words (the CLI's help)."""

    def sample(
        self,
        apply: Apply,
        params: Params,
        diffusion: Diffusion,
        *,
        batch_size: int,
        seq_len: int,
        generator: torch.Generator,
        steps: int | None = None,
        transform: Callable[[Tensor], Tensor] = ...,
        on_step: OnStep | None = None,
        condition: Tensor | None = None,
        options: Any = None,
    ) -> Samples:
        """Samples [B, L] from the prior z_1 and the NFE.  ``condition`` [L] or [B, L]: a fixed token id
        where given, -1 where the sampler generates; ``options``: an ``Options`` (None: its defaults)."""


class Tokenizer(Protocol):
    """Text <-> token ids (``nanodd.tokenizers``): the data axis.  Ids run over 0 .. vocab_size - 1, the
    end-of-document id included; an id >= vocab_size (the absorbing process's mask) decodes to ``MASKED``.
    Every id stands for a fixed string of bytes (empty for the end of document), so what a run of ids
    decodes to is the concatenation of its tokens' bytes and ``n_bytes`` is exact: bits per byte =
    total nats / ln 2 / n_bytes, the one axis on which models with different tokenizers compare."""

    name: str
    vocab_size: int
    eod_id: int | None
    """The end-of-document id that separates documents in prepared data (None: text8, one document)."""

    def normalize(self, text: str) -> str:
        """What the tokenizer reads of raw text (text8: wikifil's lowercase a-z and spaces; others: all of it)."""

    def encode(self, text: str) -> Any:
        """int64 ids [n] of normalised text; never an end-of-document id (documents are joined by the caller)."""

    def decode(self, ids: Any) -> str:
        """Text of ids (a list, numpy array or tensor, flattened); invalid UTF-8 shows as U+FFFD."""

    def n_bytes(self, ids: Any) -> int:
        """UTF-8 bytes of what ``ids`` decode to (masks and end of document: none)."""

    def identity(self) -> dict:
        """``{"name", "vocab_size", "eod_id", "sha256"}``: the hash covers every token's bytes and (BPE) merges."""


def mismatches(obj: Any, protocol: type) -> list[str]:
    """What ``obj`` lacks to satisfy ``protocol``: each missing attribute, and each function whose
    parameters (names, kinds, order) differ from the protocol's.  Empty when it conforms."""
    declared = vars(protocol)
    names = dict.fromkeys([*getattr(protocol, "__annotations__", {}), *declared])
    problems = []
    for name in (n for n in names if not n.startswith("_") or n == "__call__"):
        if not hasattr(obj, name):
            problems.append(f"no {name!r}")
        elif inspect.isfunction(declared.get(name)):
            want = [(p.name, p.kind) for p in inspect.signature(declared[name]).parameters.values()][1:]  # no self
            have = [(p.name, p.kind) for p in inspect.signature(getattr(obj, name)).parameters.values()]
            if have != want:
                problems.append(f"{name}{tuple(n for n, _ in have)} should take {tuple(n for n, _ in want)}")
    return problems
