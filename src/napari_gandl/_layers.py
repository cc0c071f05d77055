"""Turn gandl_core objects (site images, well tables) into napari layer data, without napari or Qt.

Pure functions: channel colours, contrast limits that keep the image's dtype range, plate-map
geometry, well colours (numbers through a colormap, text through a categorical palette) and the
keyword arguments of each layer. :mod:`._hub` creates the layers from them and updates them in
place; the reader's synchronous path (scripts) returns them as LayerData tuples.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ._session import ChannelSpec, PlateSession, display_table, is_text

from gandl_core.plates.wells import parse_well as _core_parse_well
from gandl_core.plates.wells import row_letters as row_letter

PLATE_MAP_NAME = "plate map"
GRID_NAME = "plate grid"
OVERLAY_NAME = "well colour tint"
SITE_PREFIX = "site"
FAKES_PREFIX = "fakes"
KIND_KEY = "gandl_kind"
SESSION_KEY = "gandl_session"
GREY = (0.5, 0.5, 0.5, 1.0)
MISSING = (0.3, 0.3, 0.3, 1.0)
EMBEDDED_BORDER = (1.0, 1.0, 1.0, 1.0)
PLAIN_BORDER = (0.13, 0.13, 0.13, 1.0)

# Stain -> napari colormap. Cell Painting / RxRx conventions: nuclei blue, ER green,
# actin/AGP red, RNA/nucleoli cyan (yellow when cyan is taken), Golgi/mito/WGA magenta.
_STAINS: list[tuple[tuple[str, ...], str]] = [
    (("dna", "hoechst", "dapi", "nucle", "draq"), "blue"),
    (("er", "cona", "concanavalin", "calnexin"), "green"),
    (("actin", "agp", "phalloidin", "wga+phal", "f-actin"), "red"),
    (("rna", "syto"), "cyan"),
    (("golgi", "wga", "mito", "mitotracker", "membrane"), "magenta"),
    (("nfkb", "gfp", "fitc", "reporter"), "green"),
]
FALLBACK_COLORMAPS = ["cyan", "yellow", "magenta", "green", "red", "blue", "gray"]
CHANNEL_COLORMAPS = ["blue", "green", "red", "cyan", "magenta", "yellow", "gray", "bop orange", "bop purple"]
PLATE_SHAPES = [(2, 3), (4, 6), (8, 12), (16, 24), (32, 48)]  # 6..1536 wells
# Categorical palette (Okabe-Ito, readable on napari's dark canvas) for text columns.
CATEGORY_COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
                    "#FFFFFF", "#999999", "#8DD3C7", "#BEBADA", "#FB8072"]
ROLE_COLOURS = {"positive": "#4caf50", "negative": "#e53935", "treated": "#4fc3f7", "ignore": "#555555",
                "": "#808080", "other": "#808080"}


def parse_well(well: object) -> tuple[int, int]:
    """``"B02"`` -> (1, 1): 0-based row and column (the project's one parser, gandl_core.plates.wells).

    Raises a WellNameError (a DataError and a ValueError) for anything else.
    """
    return _core_parse_well(well)


def colormap_for(channel: str, i: int, used: Sequence[str] = ()) -> str:
    """Colormap name for a channel: by stain name, else the ``i``-th of a fallback cycle.

    ``used`` are the colormaps given to earlier channels; RNA turns yellow when cyan is taken.
    """
    low = channel.lower()
    for keys, cmap in _STAINS:
        # "er" must match the whole name (else "Golgi-marker" would be ER); longer keys match inside.
        if any((low == k) if len(k) <= 3 else (k in low) for k in keys):
            if cmap in used and cmap == "cyan":
                return "yellow"
            return cmap
    free = [c for c in FALLBACK_COLORMAPS if c not in used]
    return (free or FALLBACK_COLORMAPS)[i % len(free or FALLBACK_COLORMAPS)]


_HEX_COLORMAPS = {"0000ff": "blue", "00ff00": "green", "ff0000": "red", "00ffff": "cyan", "ff00ff": "magenta",
                  "ffff00": "yellow", "ffffff": "gray"}


def colormap_from_hex(hex_colour: str | None) -> str | None:
    """An OME ``omero`` channel colour (``"0000FF"``) -> the nearest of napari's pure-colour colormaps."""
    if not hex_colour:
        return None
    h = str(hex_colour).lstrip("#").lower()[:6]
    if h in _HEX_COLORMAPS:
        return _HEX_COLORMAPS[h]
    try:
        rgb = np.array([int(h[i:i + 2], 16) for i in (0, 2, 4)], float) / 255
    except ValueError:
        return None
    refs = {name: np.array([int(k[i:i + 2], 16) for i in (0, 2, 4)], float) / 255 for k, name in _HEX_COLORMAPS.items()}
    unit = rgb / (np.linalg.norm(rgb) or 1.0)
    return max(refs, key=lambda n: float(unit @ (refs[n] / np.linalg.norm(refs[n]))))


def robust_limits(plane: np.ndarray, low: float = 0.5, high: float = 99.8) -> tuple[float, float]:
    """Contrast limits from robust percentiles of one plane (never a zero-width range)."""
    finite = np.asarray(plane, dtype=np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-3, 1.0)
    return float(lo), float(hi)


def planes_and_limits(row: Any) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """A site's planes and each plane's robust contrast limits (worker side: the percentiles of a
    520x696 plane cost about 10 ms of CPU each: 50 ms per 5-channel well click on the GUI thread)."""
    planes = native_planes(row)
    return planes, [robust_limits(p) for p in planes]


def full_range(plane: np.ndarray) -> tuple[float, float]:
    """The contrast slider's range: the dtype's range for integers, the data's for floats."""
    dt = np.asarray(plane).dtype
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return float(info.min), float(info.max)
    finite = np.asarray(plane)[np.isfinite(plane)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def native_planes(row: Any) -> list[np.ndarray]:
    """Read one site (an index row) as planes in the files' own dtype (runs in a worker).

    :func:`gandl_core.plates.read_site` returns float32 raw values; integer files (8/16-bit) are
    cast back exactly to their stored dtype (float32 holds every integer below 2**24), so napari
    shows the real data type and its full contrast range.
    """
    from gandl_core.plates import read_site
    from gandl_core.plates._images import plane_shape  # header of any source: file, stack frame, zarr, bioio

    img = read_site(row)
    cols = [c for c in row.index if str(c).startswith("Path_")] if hasattr(row, "index") else []
    planes = []
    cache: dict = {}
    for k in range(img.shape[0]):
        plane = img[k]
        try:
            dtype = np.dtype(plane_shape(str(row[cols[k]]), cache)[1]) if cols else plane.dtype
        except Exception:  # noqa: BLE001 - header unreadable: keep float32 (read_site already read it)
            dtype = plane.dtype
        if np.issubdtype(dtype, np.integer) and np.iinfo(dtype).bits <= 16:
            plane = plane.astype(dtype)
        planes.append(plane)
    return planes


def site_layer_kwargs(spec: ChannelSpec, plane: np.ndarray, *, session_id: int, title: str = "",
                      limits: tuple[float, float] | None = None) -> dict:
    """Keyword arguments of one channel's Image layer (stain colour, additive, robust contrast).

    ``limits`` (from :func:`planes_and_limits`, computed in a worker) saves the percentiles here.
    """
    return {"name": f"{SITE_PREFIX} {spec.name}", "colormap": spec.colormap, "blending": "additive",
            "contrast_limits": tuple(limits) if limits is not None else robust_limits(plane),
            "metadata": {KIND_KEY: "site", "channel": spec.name, "title": title, "session_id": session_id}}


def site_layer_data(planes: Sequence[np.ndarray], channels: Sequence[ChannelSpec], *, session_id: int = 0,
                    title: str = "") -> list[tuple]:
    """One Image LayerData tuple per channel (the reader's synchronous path)."""
    if len(planes) != len(channels):
        raise ValueError(f"{len(planes)} planes for {len(channels)} channels")
    return [(p, site_layer_kwargs(c, p, session_id=session_id, title=title), "image") for p, c in zip(planes, channels)]


# ----------------------------------------------------------------------------------------------
# plate geometry
# ----------------------------------------------------------------------------------------------

def plate_shape(wells: Sequence[str]) -> tuple[int, int]:
    """Smallest standard plate (6..1536 wells) holding every well; else the wells' own extent."""
    rc = np.array([parse_well(w) for w in wells]) if len(wells) else np.zeros((1, 2), int)
    need = rc.max(axis=0) + 1
    for shape in PLATE_SHAPES:
        if need[0] <= shape[0] and need[1] <= shape[1]:
            return shape
    return int(need[0]), int(need[1])


def spacing_of(session: PlateSession) -> float:
    """World units between wells: the plate map is as tall as the site image (or 1)."""
    n_rows, _ = plate_shape(session.wells["Metadata_Well"].tolist())
    h = session.site_shape[0]
    return float(h) / n_rows if h else 1.0


def origin_of(session: PlateSession) -> tuple[float, float]:
    """Top-left well of the plate map: right of the site image with a gap of two wells."""
    s, w = spacing_of(session), session.site_shape[1]
    return (s / 2, w + 2 * s) if w else (0.0, 0.0)


def plate_layout(wells: pd.DataFrame, *, spacing: float, origin: Sequence[float]) -> np.ndarray:
    """Point coordinates (row, column in world units) of each well row of ``wells``."""
    rc = np.array([parse_well(w) for w in wells["Metadata_Well"]], dtype=float).reshape(-1, 2)
    return rc * spacing + np.asarray(origin, dtype=float)


def plate_map_kwargs(session: PlateSession) -> dict:
    """Keyword arguments of the plate map: every well of every plate, the shown plate visible."""
    s = spacing_of(session)
    return {"name": PLATE_MAP_NAME, "features": display_table(session), "symbol": "square", "size": s * 0.9,
            "face_color": "#808080", "border_color": border_colours(session), "border_width": 0.08,
            "border_width_is_relative": True, "shown": session.plate_mask(),
            "metadata": {KIND_KEY: "plate_map", SESSION_KEY: session, "session_id": session.id}}


def plate_map_data(session: PlateSession) -> tuple:
    coords = plate_layout(session.wells, spacing=spacing_of(session), origin=origin_of(session))
    return coords, plate_map_kwargs(session), "points"


def grid_label_data(session: PlateSession) -> tuple:
    """Row letters left of and column numbers above the plate map (text-only Points)."""
    n_rows, n_cols = plate_shape(session.wells["Metadata_Well"].tolist())
    s, (oy, ox) = spacing_of(session), origin_of(session)
    coords, labels = [], []
    for r in range(n_rows):
        coords.append((oy + r * s, ox - s))
        labels.append(row_letter(r))
    every = 1 if n_cols <= 12 else 2 if n_cols <= 24 else 4  # 384/1536 plates: 1, 3, 5... (no overlap)
    for c in range(0, n_cols, every):
        coords.append((oy - s, ox + c * s))
        labels.append(str(c + 1))
    font = 8 if n_cols <= 12 else 7
    kwargs = {"name": GRID_NAME, "features": pd.DataFrame({"label": labels}), "size": s * 0.5,
              "face_color": "transparent", "border_color": "transparent", "border_width": 0.0,
              "text": {"string": "{label}", "size": font, "color": "#c0c0c0"},
              "metadata": {KIND_KEY: "plate_grid", "session_id": session.id}}
    return np.asarray(coords, float), kwargs, "points"


# ----------------------------------------------------------------------------------------------
# colours
# ----------------------------------------------------------------------------------------------

def colour_limits(values: np.ndarray) -> tuple[float, float]:
    """Colour range shared by the plate map, the tint and the colourbar (robust, non-empty)."""
    return robust_limits(values, 1.0, 99.0)


def _rgba(hex_colour: str) -> tuple[float, float, float, float]:
    h = hex_colour.lstrip("#")
    return tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)) + (1.0,)


def category_colours(values: pd.Series) -> dict[str, tuple]:
    """Text value -> RGBA: roles in their fixed colours, other text from the categorical palette."""
    cats = sorted(values.astype(object).where(values.notna(), "").astype(str).unique().tolist())
    if set(cats) <= set(ROLE_COLOURS):
        return {c: _rgba(ROLE_COLOURS[c]) for c in cats}
    return {c: _rgba(CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)]) for i, c in enumerate(cats)}


def well_colours(wells: pd.DataFrame, column: str | None, colormap: str = "viridis") -> tuple[np.ndarray, dict]:
    """RGBA per well row for colouring by ``column`` and a legend description.

    Numbers go through ``colormap`` over robust limits of every plate (so plates compare); text
    through a categorical palette; wells without a value are dark grey. Returns ``(rgba [N,4],
    legend)`` with ``legend = {"kind": "none"|"numeric"|"categories", ...}``.
    """
    n = len(wells)
    if not column or column not in wells.columns:
        return np.tile(GREY, (n, 1)), {"kind": "none"}
    s = wells[column]
    if is_text(s):
        table = category_colours(s)
        keys = s.astype(object).where(s.notna(), "").astype(str)
        rgba = np.array([table[k] for k in keys], dtype=float).reshape(n, 4)
        return rgba, {"kind": "categories", "column": column, "items": table}
    from napari.utils.colormaps import ensure_colormap

    values = pd.to_numeric(s, errors="coerce").to_numpy(float)
    lo, hi = colour_limits(values)
    ok = np.isfinite(values)
    rgba = np.tile(MISSING, (n, 1))
    if ok.any():
        scaled = np.clip((values[ok] - lo) / (hi - lo), 0, 1)
        rgba[ok] = ensure_colormap(colormap).map(scaled)
    return rgba, {"kind": "numeric", "column": column, "limits": (lo, hi), "colormap": colormap}


def border_colours(session: PlateSession) -> np.ndarray:
    """White borders mark embedded wells (features present), dark ones the rest."""
    gan = [c for c in session.wells.columns if str(c).startswith("GAN_")]
    done = session.wells[gan[0]].notna().to_numpy() if gan else np.zeros(len(session.wells), bool)
    out = np.tile(PLAIN_BORDER, (len(done), 1))
    out[done] = EMBEDDED_BORDER
    return out

