"""Forward processes: the corruption q(z_t | x0), its posterior, and the output parameterisation
that turns network logits into log p(x0 | z_t).  Each satisfies ``nanodd.protocols.Process``."""

from nanodd.processes.absorbing import Absorbing

PROCESSES = (Absorbing,)
"""Every process class; method configs choose among them."""
