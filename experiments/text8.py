"""text8 experiments: prepare data, train, sample, evaluate, and a five-minute CPU demo.

    python -m experiments.text8 demo                              # no download: train + sample on CPU
    python -m experiments.text8 demo mdlm-demo                    # the same with MDLM (or sedd-absorb-demo,
                                                                  #   sedd-uniform-demo, udlm-demo)
    python -m experiments.text8 prepare --data.source text8       # download and split text8
    python -m experiments.text8 train d3pm-text8 --train.lr 3e-4  # nanoDD's recipe, any field overridable
    python -m experiments.text8 train mdlm-text8 method.schedule:cosine   # MDLM / MD4 with another schedule
    torchrun --standalone --nproc_per_node=8 -m experiments.text8 train d3pm-text8-8gpu
    python -m experiments.text8 sample runs/d3pm-text8 --sample.batch-size 4
    python -m experiments.text8 sample runs/sedd-absorb-demo --sample.sampler euler --sample.steps 256
    python -m experiments.text8 sample nanoDD-D3PM-text8/ckpt.pt     # nanoDD's published weights
    python -m experiments.text8 convert nanoDD-D3PM-text8/ckpt.pt runs/nanodd   # as our checkpoint
    python -m experiments.text8 evaluate runs/d3pm-text8 --eval.split test --eval.estimator exact

Every mistake in the arguments or the data is reported with exit code 2 and one line ``error: ...``
naming the option (``experiments/cli.py``; set NANODD_DEBUG=1 to see the traceback instead).  The
presets live in ``experiments/presets.py`` and the subcommands in ``experiments/commands.py``; this file
puts the one under the other.
"""

from __future__ import annotations

from typing import Callable, Sequence

from experiments import commands
from experiments.presets import DEMO, DEMOS, PRESETS

__all__ = ["DEMO", "DEMOS", "PRESETS", "PROG", "main", "subcommands"]

PROG = "python -m experiments.text8"


def subcommands() -> dict[str, Callable[..., commands.Work]]:
    """text8's subcommands over its presets, with the samplers registered now."""
    return commands.subcommands(PRESETS, DEMOS, prog=PROG)


def main(argv: Sequence[str] | None = None, *, check_only: bool = False) -> None:
    """Parse ``argv`` (default: sys.argv), check, and run the subcommand's work; ``check_only`` stops after
    the checks (what the option-walking test runs: nothing is loaded, trained or written).  The sampling
    options are those of the samplers registered when it runs."""
    commands.main(subcommands(), argv, prog=PROG, description=__doc__.split("\n")[0], check_only=check_only)


if __name__ == "__main__":
    main()
