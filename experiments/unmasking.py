"""The unmasking of a sample, as it happens and as an animation: ``LiveView`` redraws it on the terminal,
``Frames`` and ``render`` turn the same states into an animated GIF.

    python -m experiments.text8 sample runs/demo --sample.gif unmasking.gif

Both are a sampler's ``on_step(s, z)`` hook (``tee`` runs both), so they see every sampler's intermediate
states (SEDD's analytic steps and first hitting's one-token steps too).  ``Frames`` keeps the first
sequence's text per step (decoded by the checkpoint's tokenizer: a masked token is one '_') and ``render`` draws, at the end, every k-th of them and the last: the text
wrapped at a fixed number of characters per line, as the terminal view wraps it; masked positions ('_' in
the text) as grey blocks, revealed characters in ink, and those revealed (or, for a uniform process,
changed) since the previous frame in blue; the finished sample all in ink.  A process without a mask
(uniform noise) shows what its state decodes to.  The font is Pillow's built-in bitmap font (6 x 11
pixels, every character the same width), drawn at 2x.  Pillow is optional: ``pip install -e '.[plot]'``.
"""

from __future__ import annotations

import io
import math
import shutil
import sys

from nanodd.data.tokenizers import MASKED as MASK, TableTokenizer

COLUMNS = 48
"""Characters per line."""
FRAMES = 48
"""Frames drawn when no ``every`` is given: a frame every ceil(steps / FRAMES) steps."""
HOLD_MS = 2000
"""How long the last frame (the finished sample) stays."""
SCALE, CELL_W, CELL_H, PAD = 2, 6, 13, 6
"""Pixel size of the drawing: each font pixel 2x2; a character cell 6 x 13 font pixels; a margin."""
PAPER, BLOCK, INK, NEW = (255, 255, 255), (208, 208, 214), (34, 34, 34), (37, 99, 235)
"""Background, masked position, revealed character, just revealed."""


def require_pillow() -> None:
    """Raise a one-line ValueError naming the extra to install when Pillow is missing."""
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        raise ValueError("--sample.gif needs Pillow: pip install -e '.[plot]' (or pip install pillow)") from None


def every_for(n: int, every: int | None) -> int:
    """The step stride: ``every`` as given, else about ``FRAMES`` frames over ``n`` steps."""
    return every if every is not None else max(1, math.ceil(n / FRAMES))


def pick(texts: list[str], every: int) -> list[str]:
    """Texts after steps every, 2 * every, ... and after the last step."""
    picked = texts[every - 1 :: every]
    if texts and (not picked or len(texts) % every):
        picked.append(texts[-1])
    return picked


def wrap(text: str, columns: int = COLUMNS) -> list[str]:
    """Lines of ``columns`` characters: a frame's, and the live view's at the terminal's width."""
    return [text[i : i + columns] for i in range(0, len(text), columns)] or [""]


def drawable(text: str) -> str:
    """``text`` in the bitmap font's Latin-1: line breaks and other control characters as spaces, any other
    character outside Latin-1 as '?', one cell each."""
    return "".join(" " if not c.isprintable() else c if ord(c) < 256 else "?" for c in text)


def draw(text: str, previous: str | None, columns: int = COLUMNS):
    """One frame (a palette ``PIL.Image``): ``text`` wrapped; characters differing from ``previous`` in
    blue (after its end: all of them), masked positions as grey blocks."""
    from PIL import Image, ImageDraw, ImageFont

    text, previous = drawable(text), None if previous is None else drawable(previous)
    font, lines = ImageFont.load_default_imagefont(), wrap(text, columns)
    width, height = 2 * PAD + columns * CELL_W, 2 * PAD + len(lines) * CELL_H
    image = Image.new("P", (width, height), 0)
    image.putpalette([*PAPER, *BLOCK, *INK, *NEW])
    pen = ImageDraw.Draw(image)
    for i, c in enumerate(text):
        x, y = PAD + (i % columns) * CELL_W, PAD + (i // columns) * CELL_H
        if c == MASK:
            pen.rectangle((x, y + 2, x + CELL_W - 3, y + CELL_H - 3), fill=1)
        elif c != " ":
            new = previous is not None and (i >= len(previous) or previous[i] != c)
            pen.text((x, y + 1), c, font=font, fill=3 if new else 2)
    return image.resize((width * SCALE, height * SCALE), Image.Resampling.NEAREST)


def render(texts: list[str], *, every: int | None = None, ms: int = 80, columns: int = COLUMNS) -> bytes:
    """The GIF (bytes) of the states ``texts`` (one per step): a frame every ``every`` steps (default:
    about ``FRAMES`` frames) and the last, ``ms`` each, the last held ``HOLD_MS``; looping."""
    picked = pick(texts, every_for(len(texts), every))
    if not picked:
        raise ValueError("--sample.gif: the sampler reported no steps to draw")
    kept, durations = [], []
    for text in picked:
        if kept and text == kept[-1]:  # an unchanged frame only waits longer
            durations[-1] += ms
        else:
            kept.append(text)
            durations.append(ms)
    durations[-1] = max(durations[-1], HOLD_MS)
    last = len(kept) - 1  # the finished sample is all ink
    frames = [draw(t, kept[i - 1] if 0 < i < last else None, columns) for i, t in enumerate(kept)]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=True
    )
    return buffer.getvalue()


class LiveView:
    """``on_step(s, z)``: redraws the first sequence in place as tokens are revealed ('_' = still masked).
    Off a terminal it prints a few snapshots instead, so logs still show the unmasking."""

    def __init__(self, enabled: bool, tokenizer: TableTokenizer):
        self.enabled, self.tty, self.tokenizer = enabled, sys.stderr.isatty(), tokenizer
        self.lines, self.shown = 0, set()

    def __call__(self, s: float, z) -> None:
        if not self.enabled:
            return
        text = self.tokenizer.decode(z[0].cpu())
        masked = float((z[0] >= self.tokenizer.vocab_size).double().mean())
        if self.tty:
            rows = [row for line in text.split("\n") for row in wrap(line, shutil.get_terminal_size().columns)]
            sys.stderr.write((f"\x1b[{self.lines}F" if self.lines else "") + "\x1b[J" + "\n".join(rows) + "\n")
            sys.stderr.flush()
            self.lines = len(rows)
        elif (quarter := int(4 * (1 - masked))) not in self.shown and quarter < 4:
            self.shown.add(quarter)
            print(f"[{100 * masked:3.0f}% masked] {text}", file=sys.stderr)

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


class Frames:
    """``on_step(s, z)``: keeps the text of the first sequence at every step, for ``render``."""

    def __init__(self, tokenizer: TableTokenizer):
        self.texts: list[str] = []
        self.tokenizer = tokenizer

    def __call__(self, s: float, z) -> None:
        self.texts.append(self.tokenizer.decode(z[0].cpu()))


def tee(*hooks):
    """One ``on_step`` that calls each of ``hooks`` in turn."""

    def on_step(s: float, z) -> None:
        for hook in hooks:
            hook(s, z)

    return on_step
