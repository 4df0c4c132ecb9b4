"""Writing files so that a reader never sees a partial one."""

import os
from pathlib import Path


def atomic_write(path: Path, data) -> None:
    """Write bytes-like ``data`` to ``path`` via a temporary name, so ``path`` is never partial."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
