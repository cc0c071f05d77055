"""Pictures of a run for people: false-colour composites, fakes/reals grids and their PNG files.

Colours: a single channel is drawn grey (whatever its name). Channels named after common stains
take their fluorescence colours (DNA blue, ER green, Actin red, ...). Every other channel takes
the next colour of a palette chosen for the number of channels (2: green + magenta, 3: red, green,
blue, ...) that no other channel of the image uses, so two channels never share a colour (up to the
palette's six) and a GFP channel beside DNA does not turn blue.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["STAIN_COLOURS", "channel_colours", "composite_rgb", "fakes_grid", "png_scale", "save_png"]

BLUE, GREEN, RED = (0.2, 0.4, 1.0), (0.1, 1.0, 0.2), (1.0, 0.2, 0.1)
YELLOW, MAGENTA, CYAN, GREY = (1.0, 0.85, 0.1), (1.0, 0.1, 0.9), (0.1, 0.9, 1.0), (1.0, 1.0, 1.0)

# False-colour composite per stain name (fluorescence convention).
STAIN_COLOURS = {
    "DNA": BLUE, "DAPI": BLUE, "Hoechst": BLUE, "ER": GREEN, "GFP": GREEN, "FITC": GREEN,
    "Actin": RED, "AGP": RED, "RFP": RED, "mCherry": RED, "TRITC": RED,
    "RNA": YELLOW, "Golgi": MAGENTA, "Mito": MAGENTA, "Cy5": MAGENTA,
}
# Colours for channels without a stain colour, by the image's channel count: the first n of the
# list (2: green + magenta, the usual colour-blind-safe pair; 3: RGB), then the rest.
_PALETTES = {2: [GREEN, MAGENTA], 3: [RED, GREEN, BLUE]}
_ALL = [GREEN, MAGENTA, BLUE, RED, YELLOW, CYAN]


def channel_colours(channel_names: Sequence[str], channels: int | None = None) -> list[tuple[float, float, float]]:
    """RGB colour in [0, 1] of each channel of a false-colour composite (see the module docstring)."""
    n = len(channel_names) if channels is None else int(channels)
    names = [str(channel_names[k]) if k < len(channel_names) else "" for k in range(n)]
    if n == 1:
        return [GREY]
    known = {name.lower(): colour for name, colour in STAIN_COLOURS.items()}
    out: list[tuple[float, float, float] | None] = [None] * n
    used: set[tuple[float, float, float]] = set()
    for k, name in enumerate(names):  # named stains first, each colour once
        colour = known.get(name.lower())
        if colour is not None and colour not in used:
            out[k] = colour
            used.add(colour)
    palette = _PALETTES.get(n, []) + [c for c in _ALL if c not in _PALETTES.get(n, [])]
    free = [c for c in palette if c not in used]
    for k in range(n):
        if out[k] is None:  # more channels than colours: cycle the palette again
            out[k] = free.pop(0) if free else palette[k % len(palette)]
    return [c for c in out if c is not None]


def composite_rgb(img: np.ndarray, channel_names: Sequence[str]) -> np.ndarray:
    """False-colour RGB [H,W,3] in [0,1] of one image [C,H,W] in about [-1,1], channels additively blended."""
    x = np.clip((np.asarray(img, np.float32) + 1.0) / 2.0, 0.0, 1.0)
    rgb = np.zeros(x.shape[1:] + (3,), np.float32)
    for k, colour in enumerate(channel_colours(channel_names, x.shape[0])):
        rgb += x[k][..., None] * np.asarray(colour, np.float32)[None, None]
    return np.clip(rgb, 0.0, 1.0)


def fakes_grid(images: np.ndarray, channel_names, *, cols: int = 8, scale: int = 1) -> np.ndarray:
    """One uint8 RGB picture: a row block per channel (grey) and a false-colour composite row block.

    ``images`` [N,C,H,W] in about [-1,1]. Channels are drawn in their order, top to bottom; the
    composite uses :func:`channel_colours`. ``scale`` enlarges every pixel to scale x scale (nearest
    neighbour), so 32-px crops are big enough to look at; the run's PNGs use ``png_scale(resolution)``.
    """
    if scale > 1:
        images = np.repeat(np.repeat(np.asarray(images), scale, axis=2), scale, axis=3)
    n, c, h, w = images.shape
    cols = min(cols, n)
    rows = int(math.ceil(n / cols))
    pad = 2
    blocks = []
    for k in list(range(c)) + ["rgb"]:
        canvas = np.zeros((rows * (h + pad), cols * (w + pad), 3), np.float32)
        for i in range(n):
            r, q = divmod(i, cols)
            tile = composite_rgb(images[i], channel_names) if k == "rgb" else \
                np.repeat(np.clip((images[i, k] + 1) / 2, 0, 1)[..., None], 3, axis=2)
            canvas[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = tile
        blocks.append(canvas)
    sep = np.full((4, blocks[0].shape[1], 3), 0.35, np.float32)
    out = np.concatenate([x for b in blocks for x in (b, sep)][:-1], axis=0)
    return (out * 255).astype(np.uint8)


def png_scale(resolution: int) -> int:
    """Pixel enlargement of the fakes/reals PNGs: tiles of at least 64 screen pixels."""
    return max(1, 64 // int(resolution))


def save_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 picture atomically."""
    from PIL import Image

    from ..tables import atomic_write

    with atomic_write(path, suffix=".png") as tmp:
        Image.fromarray(rgb).save(tmp)
