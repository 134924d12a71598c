"""Figures: confusion matrices (matplotlib, Agg) and contact sheets (PIL)."""
from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..atomic import atomic_path, save_figure

ImageSource = Union[str, os.PathLike, Image.Image]
MAX_NAME = 28
BACKGROUND = (255, 255, 255)
FAILED_TILE = (170, 170, 170)


def shorten(name: str, limit: int = MAX_NAME) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


# ---------------------------------------------------------------- confusion matrix


def _sizes(n: int) -> tuple[float, float, float]:
    """(figure side in inches, tick font size, cell font size) for n classes."""
    if n <= 8:
        return 3.5 + 0.4 * n, 10, 10
    if n <= 25:
        return 4 + 0.42 * n, 8.5, 8
    return 4 + 0.27 * n, 7, 6


def _annotate(ax, counts: np.ndarray, frac: np.ndarray, size: float) -> None:
    for i, j in zip(*np.nonzero(counts)):
        colour = "white" if frac[i, j] > 0.55 else "black"
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=size, color=colour)


def plot_confusion(counts: np.ndarray, names: Sequence[str], title: str, path: str | os.PathLike) -> None:
    """Row-normalised confusion matrix (colour = fraction of the true class), cells
    annotated with counts (zeros left blank)."""
    counts = np.asarray(counts, dtype=int)
    n = len(names)
    support = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, support, out=np.zeros(counts.shape, dtype=float), where=support > 0)
    side, tick_size, cell_size = _sizes(n)
    fig = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    _annotate(ax, counts, frac, cell_size)
    labels = [shorten(str(s)) for s in names]
    # Short names of a few classes read best upright; many or long ones need 90 degrees.
    upright = n <= 8 and max(map(len, labels), default=0) <= 8
    ax.set_xticks(range(n), labels, rotation=0 if upright else 90, fontsize=tick_size)
    ax.set_yticks(range(n), labels, fontsize=tick_size)
    ax.set_xlabel("predicted", fontsize=tick_size + 2)
    ax.set_ylabel("true", fontsize=tick_size + 2)
    ax.set_title(title, fontsize=max(tick_size + 2, 10), wrap=True)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cbar.set_label("fraction of the true class", fontsize=tick_size + 1)
    cbar.ax.tick_params(labelsize=tick_size)
    fig.tight_layout()
    save_figure(path, fig)


# ---------------------------------------------------------------- contact sheet


def _font(size: int) -> ImageFont.ImageFont:
    import matplotlib

    # DejaVu (shipped with matplotlib) covers accents and the ellipsis.
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(ttf), size)
    except OSError:
        return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _failed_tile(reason: str, thumb: int, font: ImageFont.ImageFont) -> Image.Image:
    tile = Image.new("RGB", (thumb, thumb), FAILED_TILE)
    draw = ImageDraw.Draw(tile)
    chars = max(8, int(thumb / (font.size * 0.55)))
    lines = textwrap.wrap(reason, chars)[: max(1, thumb // (font.size + 3) - 1)]
    y = 6
    for line in ["cannot show image:"] + lines:
        draw.text((6, y), _fit(draw, line, font, thumb - 12), fill="black", font=font)
        y += font.size + 3
    return tile


def _thumbnail(source: ImageSource, thumb: int, font: ImageFont.ImageFont) -> Image.Image:
    try:
        if isinstance(source, Image.Image):
            image = source.copy()
        else:
            with Image.open(source) as im:
                im.load()
                image = ImageOps.exif_transpose(im)
        image = image.convert("RGB")
        image.thumbnail((thumb, thumb))
        return image
    except FileNotFoundError:
        return _failed_tile("file not found", thumb, font)
    except Exception as e:  # any unreadable file becomes a labelled grey tile
        return _failed_tile(f"{type(e).__name__}: {e}", thumb, font)


def contact_sheet(
    items: Sequence[tuple[ImageSource, Sequence[str]]],
    path: str | os.PathLike,
    *,
    cols: int = 6,
    thumb: int = 200,
) -> None:
    """Grid of thumbnails (thumb x thumb box each) with caption lines under each."""
    font = _font(max(10, thumb // 16))
    pad, line_h = 10, font.size + 4
    n_lines = max([len(c) for _, c in items] + [1])
    cols = max(1, min(cols, len(items) or 1))
    rows = max(1, math.ceil(len(items) / cols))
    cell_w, cell_h = thumb + pad, thumb + pad // 2 + n_lines * line_h + pad
    sheet = Image.new("RGB", (cols * cell_w + pad, rows * cell_h + pad), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if not items:
        draw.text((pad, pad), "nothing to show", fill="black", font=font)
    for k, (source, caption) in enumerate(items):
        x, y = pad + (k % cols) * cell_w, pad + (k // cols) * cell_h
        tile = _thumbnail(source, thumb, font)
        sheet.paste(tile, (x + (thumb - tile.width) // 2, y + (thumb - tile.height) // 2))
        for m, line in enumerate(caption):
            draw.text((x, y + thumb + pad // 2 + m * line_h), _fit(draw, str(line), font, thumb), fill="black", font=font)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
