"""The text8 corpus: fetch the official zip, check it, and read its one member safely."""

import dataclasses
import zipfile
import zlib
from pathlib import Path

import numpy as np

from nanodd.data.download import download
from nanodd.data.errors import DataError
from nanodd.data.text import byte_ids


@dataclasses.dataclass(frozen=True)
class Text8Spec:
    """Where text8 lives and what it must look like; tests pass a small stand-in."""

    url: str = "http://mattmahoney.net/dc/text8.zip"
    zip_size: int = 31_344_016
    n_chars: int = 100_000_000
    splits: tuple[int, int, int] = (90_000_000, 5_000_000, 5_000_000)  # train, val, test


TEXT8 = Text8Spec()


def fetch_text8(spec: Text8Spec, cache_dir: Path, *, progress: bool = True) -> np.ndarray:
    """Token ids (uint8) of the whole text8 corpus from ``<cache_dir>/downloads/text8.zip``.

    The zip is downloaded unless already there (copy it there by hand to prepare offline). A zip
    that fails any check is deleted, so the next run fetches it afresh.
    """
    zip_path = download(
        spec.url, Path(cache_dir) / "downloads" / "text8.zip", expected_size=spec.zip_size, progress=progress
    )
    try:
        ids = byte_ids(read_member(zip_path, "text8", spec.n_chars))
        if (ids == 255).any():
            raise DataError(f"{zip_path}: member text8 holds characters other than ' ' and a-z")
    except DataError as e:
        zip_path.unlink()
        raise DataError(f"{e}; removed it, run again to download it afresh") from None
    return ids


def read_member(zip_path: Path, member: str, size: int) -> bytes:
    """The bytes of the zip's only member ``member``, which must hold exactly ``size`` bytes.

    Nothing is written to disk, so no member name can reach outside the cache directory; names
    that try to (``../x``, ``/x``) and any extra members are refused all the same.
    """
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            unsafe = [n for n in names if _escapes(n)]
            if unsafe:
                raise DataError(f"{zip_path}: refusing unsafe member paths {unsafe}")
            if names != [member]:
                raise DataError(f"{zip_path}: unexpected members {names}, expected only [{member!r}]")
            if (found := zf.getinfo(member).file_size) != size:
                raise DataError(f"{zip_path}: member {member} is {found:,} bytes, expected {size:,}")
            return zf.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise DataError(f"{zip_path} is corrupt or truncated ({e})") from None


def _escapes(name: str) -> bool:
    """Whether a member name is absolute or climbs out with '..' (either slash)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]
