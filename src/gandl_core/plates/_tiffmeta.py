"""What a TIFF's own metadata says about its axes and channel names (OME-XML, ImageJ, tifffile's).

OME-TIFF (``Pixels DimensionOrder`` + ``Channel Name``), ImageJ hyperstacks (``channels``/``slices``/
``frames`` + ``Labels``) and tifffile-written ("shaped") files name their axes; tifffile turns all
three into a series axes string such as ``"CYX"``, ``"ZCYX"`` or ``"YXS"``. Where that string says
which axis holds the channels (``C``, or ``S`` for samples per pixel), the index uses it instead of
guessing from the shape. Axes tifffile cannot name (``Q``, ``I``: a plain multi-page file) leave the
guess in charge (:func:`gandl_core.plates._images.channel_axis`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError

_KNOWN = set("YXCSZT")


def header(p: Path) -> tuple[tuple[int, ...], str, str | None, list[str] | None]:
    """(shape, dtype, axes or None, channel names or None) of a TIFF, from its header only.

    Also checks that the first and last page's image data lie inside the file (truncation).
    """
    import tifffile

    size = p.stat().st_size
    with tifffile.TiffFile(p) as tif:
        pages = tif.pages
        n = len(pages)
        first = pages[0]
        axes = names = None
        if tif.is_ome or tif.is_imagej or tif.is_shaped:
            series = tif.series[0]
            shape, dtype, axes = tuple(int(s) for s in series.shape), str(series.dtype), str(series.axes)
            names = _names(tif, axes, shape)
        else:  # plain pages: parsing every IFD for a series is ~5x slower on stacks
            shape = tuple(int(s) for s in first.shape) if n == 1 else (n, *map(int, first.shape))
            dtype = str(first.dtype)
        for page in ([first] if n == 1 else [first, pages[n - 1]]):
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
            if ends and max(ends) > size:
                raise ValueError(f"image data ends at byte {max(ends)} but the file has {size} bytes (truncated)")
    return shape, dtype, axes, names


def _names(tif, axes: str, shape: Sequence[int]) -> list[str] | None:
    """Channel names from OME-XML (first image) or ImageJ ``Labels``; None if absent or not distinct."""
    n = dict(zip(axes, shape)).get("C")
    if not n:
        return None
    names: list[str] = []
    if tif.is_ome and tif.ome_metadata:
        image = re.search(r"<(?:\w+:)?Image\b.*?</(?:\w+:)?Image>", tif.ome_metadata, re.S)
        block = image.group(0) if image else tif.ome_metadata
        for tag in re.finditer(r"<(?:\w+:)?Channel\b([^>]*)>", block):
            m = re.search(r'\bName="([^"]*)"', tag.group(1))
            names.append(_unescape(m.group(1)).strip() if m else "")
    elif tif.is_imagej:
        labels = (tif.imagej_metadata or {}).get("Labels")
        if isinstance(labels, (list, tuple)):
            names = [str(x).strip() for x in labels]
    if len(names) != n or not all(names) or len(set(names)) != n:
        return None
    return names


def _unescape(s: str) -> str:
    return (s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&apos;", "'")
            .replace("&amp;", "&"))


def read(p: Path) -> tuple[np.ndarray, str | None]:
    """Decode a TIFF's first series: (stored values, its axes when the metadata names them)."""
    import tifffile

    with tifffile.TiffFile(p) as tif:
        named = tif.is_ome or tif.is_imagej or tif.is_shaped
        series = tif.series[0]
        return np.asarray(series.asarray()), (str(series.axes) if named else None)


def channel_axis(shape: Sequence[int], axes: str | None, where: str) -> tuple[int | None, int] | None:
    """(channel axis among the non-singleton axes or None, channel count), or None when ``axes`` is silent.

    Raises
    ------
    DataError
        The metadata names a z or time axis with more than one plane (GAN-DL embeds 2-D fields),
        or two channel-like axes.
    """
    if not axes or len(axes) != len(shape):
        return None
    kept = [(int(s), a) for s, a in zip(shape, axes.upper()) if int(s) != 1]
    letters = [a for _, a in kept]
    if set(letters) - _KNOWN or not {"Y", "X"} <= set(letters):
        return None  # generic axes (Q, I...): let the shape decide
    extra = [(i, s, a) for i, (s, a) in enumerate(kept) if a not in "YX"]
    stacks = [(s, a) for _, s, a in extra if a in "ZT"]
    if stacks:
        s, a = stacks[0]
        what = {"Z": "z planes", "T": "time points"}[a]
        raise DataError(f"{where}: its metadata (axes {axes}, shape {tuple(shape)}) says it holds {s} {what}; "
                        "GAN-DL embeds 2-D multichannel fields. Save a maximum projection (or one plane) per "
                        "site; if these planes are really channels, re-save them as channels (ImageJ: "
                        "Image > Hyperstacks > Re-order Hyperstack).")
    chans = [(i, s) for i, s, a in extra if a in "CS"]
    if len(chans) > 1:
        raise DataError(f"{where}: axes {axes} with shape {tuple(shape)} hold both channels and RGB samples; "
                        "save one grey plane per channel.")
    if not chans:
        return None, 1
    return chans[0]
