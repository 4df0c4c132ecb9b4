"""Resumable, verified, atomic HTTP downloads into the cache directory."""

import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from nanodd.checks import Field, Message
from nanodd.data.errors import DataError

OFFLINE_HINT = Message(
    "offline? use ", Field("data.source", "builtin"), ", or ", Field("data.source", "/path/to/a/local/file")
)
CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$NANODD_CACHE``, else ``$XDG_CACHE_HOME/nanodd``, else ``~/.cache/nanodd``."""
    if os.environ.get("NANODD_CACHE"):
        return Path(os.environ["NANODD_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "nanodd"
    return Path.home() / ".cache" / "nanodd"


class _Progress:
    """Bytes, percent and MB/s on one stderr line, redrawn at most every ``every`` seconds."""

    def __init__(self, name: str, total: int | None, done: int, enabled: bool, every: float = 0.25):
        self.name, self.total, self.done, self.enabled, self.every = name, total, done, enabled, every
        self.start_done, self.t0, self.last = done, time.monotonic(), -every

    def update(self, n: int, final: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not self.enabled or (now - self.last < self.every and not final):
            return
        self.last = now
        rate = (self.done - self.start_done) / max(now - self.t0, 1e-9) / 1e6
        size = f"{self.done / 1e6:.1f}"
        if self.total:
            size += f"/{self.total / 1e6:.1f} MB ({100 * self.done / self.total:.0f}%)"
        end = "\n" if final else ""
        print(f"\r{self.name}: {size} {rate:.1f} MB/s", end=end, file=sys.stderr, flush=True)


def download(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    text: bool = False,
    force: bool = False,
) -> Path:
    """Fetch ``url`` to ``dest`` and return ``dest``; an existing complete ``dest`` is reused (``force``
    fetches it again).

    Bytes stream into ``dest.part``. A leftover ``.part`` is resumed with an HTTP Range request
    (and restarted when the server ignores Range); an interrupted transfer keeps it for the next
    call. A file whose announced size differs from ``expected_size`` is refused before any byte
    is written, and only a transfer that delivered every announced byte is renamed to ``dest``,
    so ``dest`` is always complete. Progress (bytes, %, MB/s) goes to stderr, 4 times a second.
    An empty file, or for a ``text`` source an HTML page (``Content-Type: text/html``, or a body that starts
    like one: a login or error page served with status 200), is refused and removed, fresh or cached.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if force:
        dest.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    if dest.exists():
        _refuse_unusable(dest, url, text)
        if expected_size in (None, dest.stat().st_size):
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    if expected_size is None or have < expected_size:
        _fetch(url, part, have, expected_size, progress, timeout, text)
    _refuse_unusable(part, url, text)
    os.replace(part, dest)
    return dest


def _refuse_unusable(path: Path, url: str, text: bool) -> None:
    """Remove ``path`` and refuse it in one line if it is empty, or (``text``) an HTML page."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    why = "is empty" if not head else "is an HTML page, not a text file" if text and _is_html(head) else None
    if why:
        path.unlink()
        raise DataError(f"the download of {url} ({path}) {why}; removed it (check the URL, then run again)")


def _is_html(head: bytes) -> bool:
    return head.startswith((b"<!doctype html", b"<html"))


def _fetch(url: str, part: Path, have: int, expected: int | None, progress: bool, timeout: float, text: bool) -> None:
    """Append the bytes after ``have`` to ``part``, or rewrite it when the server ignores Range."""
    try:
        with _open(url, part, have, timeout) as response:
            if text and response.headers.get_content_type() == "text/html":
                part.unlink(missing_ok=True)
                raise DataError(f"{url} sent an HTML page (Content-Type text/html), not a text file; refusing it")
            have = have if response.status == 206 else 0
            length = response.headers.get("Content-Length", "")
            total = have + int(length) if length.isdigit() else expected
            if expected is not None and total != expected:
                part.unlink(missing_ok=True)
                raise DataError(f"{url} is {total:,} bytes, not the expected {expected:,}; refusing it")
            bar = _Progress(f"downloading {url}", total, have, progress)
            with open(part, "ab" if have else "wb") as f:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            bar.update(0, final=True)
    except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
        name = type(e).__name__
        raise DataError(f"download of {url} was interrupted ({name}); run again to resume it") from None
    except OSError as e:
        raise DataError(f"could not save {url} to {part}: {e.strerror or e}") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DataError(f"download of {url} stopped at {size:,} of {total:,} bytes; run again to resume it")


def _open(url: str, part: Path, have: int, timeout: float):
    """The HTTP response for ``url`` from byte ``have`` on; a stale ``part`` (HTTP 416) restarts."""
    try:
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            part.unlink()
            return _open(url, part, 0, timeout)
        raise DataError(Message(f"could not download {url}: HTTP {e.code} {e.reason}; ", OFFLINE_HINT)) from None
    except urllib.error.URLError as e:
        raise DataError(Message(f"could not download {url}: {e.reason}; ", OFFLINE_HINT)) from None
    except (http.client.HTTPException, OSError, ValueError) as e:  # malformed URL, socket trouble
        raise DataError(Message(f"could not download {url}: {e}; ", OFFLINE_HINT)) from None
