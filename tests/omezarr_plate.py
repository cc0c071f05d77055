"""Write small OME-Zarr HCS plates with ome-zarr-py (the reference writer) for the tests.

``write_plate(path, version="0.4"|"0.5")`` writes wells B02 and C03 (row/column folders B/2 and C/3),
two fields each, three named channels (DNA blue, ER green, Actin red), 1 z plane, a 2-level pyramid.
Pixel values encode where they come from so tests can check that every read lands on the right plane:
``value = 1000*channel + 100*well_number + 10*field + noise`` (noise 0..9), with well_number 1 for B02
and 2 for C03.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHANNELS = [("DNA", "0000FF"), ("ER", "00FF00"), ("Actin", "FF0000")]
WELLS = [("B", "2"), ("C", "3")]


def expected_value(channel: int, well: int, field: int) -> int:
    return 1000 * channel + 100 * (well + 1) + 10 * field


def field_data(channel_count: int, well: int, field: int, shape=(48, 40), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed + 10 * well + field)
    out = np.empty((channel_count, *shape), dtype=np.uint16)
    for c in range(channel_count):
        out[c] = expected_value(c, well, field) + rng.integers(0, 10, size=shape)
    return out


def write_plate(path: Path, version: str = "0.4", *, name: str | None = "Screen1", axes: str = "czyx",
                fields: int = 2, shape=(48, 40), z: int = 1) -> Path:
    """Write the plate; returns its path. ``axes`` is 'czyx', 'tczyx' or 'cyx' (z planes: ``z``)."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    fmt = FormatV04() if version == "0.4" else FormatV05()
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    rows = sorted({r for r, _ in WELLS})
    cols = sorted({c for _, c in WELLS}, key=int)
    write_plate_metadata(root, rows, cols, [f"{r}/{c}" for r, c in WELLS], fmt=fmt, name=name,
                         field_count=fields)
    omero = {"channels": [{"label": n, "color": col, "window": {"start": 0, "end": 4000, "min": 0,
                                                                 "max": 65535}} for n, col in CHANNELS]}
    for w, (r, c) in enumerate(WELLS):
        well = root.require_group(r).require_group(c)
        write_well_metadata(well, [str(f) for f in range(fields)], fmt=fmt)
        for f in range(fields):
            data = field_data(len(CHANNELS), w, f, shape)
            if "z" in axes:
                data = np.repeat(data[:, None], z, axis=1)  # c z y x
            if axes.startswith("t"):
                data = data[None]
            write_image(data, well.require_group(str(f)), axes=axes, fmt=fmt, scale_factors=[2],
                        omero=omero)
    return Path(path)
