"""Forward processes: the corruption q(z_t | x0), its posterior, and the output parameterisation
that turns network logits into log p(x0 | z_t).  Each satisfies ``nanodd.protocols.Process``; the
math they share (every one mixes towards a prior pi) is ``mixing``."""

from nanodd.processes.absorbing import Absorbing
from nanodd.processes.uniform import Uniform

PROCESSES = (Absorbing, Uniform)
"""Every process class; method configs choose among them."""
