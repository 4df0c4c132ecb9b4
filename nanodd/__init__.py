"""nanodd: discrete diffusion language models as pure functions of explicit parameters.

The core (this package's top-level modules and ``nanodd.methods``) imports only torch and einops;
``nanodd.data`` and ``nanodd.shell`` hold every side effect (files, network, processes, state).
"""
