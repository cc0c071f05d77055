"""Turn gandl_core objects (index tables, site images, well tables) into napari layer data.

Nothing here imports napari or Qt at module level: the reader and the sample-data command return
plain ``(data, kwargs, layer_type)`` tuples, and widgets use the helpers to update layers in place.

The shared state of one opened plate is a :class:`PlateSession` kept in the plate-map Points
layer's ``metadata["gandl_session"]``: the site index (from :func:`gandl_core.plates.build_index`),
the per-well table (metadata + any features merged in later: embeddings, On score), and the
plate shown. Every widget finds it through :func:`find_plate_map`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

PLATE_MAP_NAME = "plate map"
SESSION_KEY = "gandl_session"
KIND_KEY = "gandl_kind"
SITE_PREFIX = "site"
OVERLAY_NAME = "well score overlay"

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
PLATE_SHAPES = [(2, 3), (4, 6), (8, 12), (16, 24), (32, 48)]  # 6..1536 wells
_WELL_RE = re.compile(r"^\s*([A-Za-z]{1,2})0*(\d{1,3})\s*$")


def colormap_for(channel: str, i: int, used: Sequence[str] = ()) -> str:
    """Colormap name for a channel: by stain name, else the ``i``-th of a fallback cycle.

    Parameters
    ----------
    channel
        Channel name (``"DNA"``, ``"ER"``, ``"Ch3"`` ...), matched case-insensitively.
    i
        Channel position, used for names no stain rule knows.
    used
        Colormaps already given to earlier channels; RNA turns yellow when cyan is taken.

    Returns
    -------
    str
        A napari colormap name.
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


def robust_limits(plane: np.ndarray, low: float = 0.5, high: float = 99.8) -> tuple[float, float]:
    """Contrast limits from robust percentiles of one plane (never a zero-width range)."""
    finite = np.asarray(plane, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-3, 1.0)
    return float(lo), float(hi)


def site_layer_data(img: np.ndarray, channels: Sequence[str], *, title: str = "",
                    translate: Sequence[float] = (0.0, 0.0)) -> list[tuple]:
    """One Image layer per channel of a site, stain-coloured, additive, robust contrast.

    Parameters
    ----------
    img
        float array [C,H,W] (raw intensities from :func:`gandl_core.plates.read_site`).
    channels
        Channel names, one per plane.
    title
        Shown in the layer names (``"site DNA"`` plus ``metadata['title']``).

    Returns
    -------
    list of LayerData tuples ``(plane, kwargs, "image")``.
    """
    if img.ndim != 3 or img.shape[0] != len(channels):
        raise ValueError(f"site image has shape {img.shape}; expected [C,H,W] with C={len(channels)}")
    out, used = [], []
    for i, name in enumerate(channels):
        cmap = colormap_for(name, i, used)
        used.append(cmap)
        out.append((img[i], {
            "name": f"{SITE_PREFIX} {name}", "colormap": cmap, "blending": "additive",
            "contrast_limits": robust_limits(img[i]), "translate": tuple(translate),
            "metadata": {KIND_KEY: "site", "channel": name, "title": title},
        }, "image"))
    return out


def parse_well(well: str) -> tuple[int, int]:
    """``"B02"`` -> (1, 1): 0-based row and column. Raises ValueError for other strings."""
    m = _WELL_RE.match(str(well))
    if not m:
        raise ValueError(f"not a well name: {well!r} (expected a row letter and a column number, like B02)")
    letters, col = m.group(1).upper(), int(m.group(2))
    row = 0
    for ch in letters:  # "AA" follows "Z" on 1536-well plates
        row = row * 26 + (ord(ch) - 64)
    return row - 1, col - 1


def row_letter(r: int) -> str:
    """0-based row -> letters (0 -> A, 26 -> AA)."""
    s, r = "", r + 1
    while r:
        r, rem = divmod(r - 1, 26)
        s = string.ascii_uppercase[rem] + s
    return s


def plate_shape(wells: Sequence[str]) -> tuple[int, int]:
    """Smallest standard plate (6..1536 wells) holding every well; else the wells' own extent."""
    rc = np.array([parse_well(w) for w in wells]) if len(wells) else np.zeros((1, 2), int)
    need = rc.max(axis=0) + 1
    for shape in PLATE_SHAPES:
        if need[0] <= shape[0] and need[1] <= shape[1]:
            return shape
    return int(need[0]), int(need[1])


def well_table(index: pd.DataFrame) -> pd.DataFrame:
    """One row per (plate, well): the metadata constant within the well, plus ``n_sites``.

    Metadata that varies between a well's sites (site number, site ids) is left out; features
    (embeddings, scores) are merged in later on ``Metadata_Plate`` + ``Metadata_Well``.
    """
    key = ["Metadata_Plate", "Metadata_Well"]
    meta = [c for c in index.columns if str(c).startswith("Metadata_")]
    grouped = index.groupby(key, sort=True, dropna=False)
    constant = [c for c in meta if c not in key and (grouped[c].nunique(dropna=False) <= 1).all()]
    wells = grouped[constant].first().reset_index() if constant else grouped.size().reset_index()[key]
    wells["n_sites"] = grouped.size().to_numpy()
    return wells


def plate_layout(wells: pd.DataFrame, *, spacing: float, origin: Sequence[float]) -> np.ndarray:
    """Point coordinates (row, column in world units) of each well row of ``wells``."""
    rc = np.array([parse_well(w) for w in wells["Metadata_Well"]], dtype=float).reshape(-1, 2)
    return rc * spacing + np.asarray(origin, dtype=float)


@dataclass
class PlateSession:
    """Everything the widgets share about one opened plate (kept on the plate-map layer).

    Attributes
    ----------
    index
        Site index (one row per site, ``Metadata_*`` + ``Path_<Channel>``); may be None for a
        profile table opened without images.
    wells
        Per-well table of every plate (metadata + merged features).
    plate
        Plate shown in the plate map.
    source
        Where the data came from (path string) for messages.
    embeddings
        Site-level embedding table from the last embedding run (or None).
    """

    index: pd.DataFrame | None
    wells: pd.DataFrame
    plate: str
    source: str = ""
    site_shape: tuple[int, int] = (0, 0)
    embeddings: pd.DataFrame | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def plates(self) -> list[str]:
        return sorted(self.wells["Metadata_Plate"].astype(str).unique().tolist())

    @property
    def spacing(self) -> float:
        """World units between wells: the plate map is as tall as the site image (or 1)."""
        n_rows, _ = plate_shape(self.wells["Metadata_Well"].tolist())
        h = self.site_shape[0]
        return float(h) / n_rows if h else 1.0

    @property
    def origin(self) -> tuple[float, float]:
        """Top-left of the plate map: right of the site image with a small gap."""
        w = self.site_shape[1]
        return (self.spacing / 2, w + 2 * self.spacing) if w else (0.0, 0.0)

    def plate_wells(self, plate: str | None = None) -> pd.DataFrame:
        plate = self.plate if plate is None else plate
        sub = self.wells[self.wells["Metadata_Plate"].astype(str) == str(plate)]
        return sub.reset_index(drop=True)

    def sites_of(self, plate: str, well: str) -> pd.DataFrame:
        if self.index is None:
            return pd.DataFrame()
        ix = self.index
        return ix[(ix["Metadata_Plate"].astype(str) == str(plate)) & (ix["Metadata_Well"] == well)]

    def merge_wells(self, table: pd.DataFrame) -> None:
        """Merge per-well features into :attr:`wells` on plate/well (new values replace old)."""
        key = ["Metadata_Plate", "Metadata_Well"]
        add = [c for c in table.columns if c not in key and not str(c).startswith("Metadata_")]
        base = self.wells.drop(columns=[c for c in add if c in self.wells.columns])
        right = table[key + add].copy()
        right["Metadata_Plate"] = right["Metadata_Plate"].astype(str)
        base = base.assign(Metadata_Plate=base["Metadata_Plate"].astype(str))
        self.wells = base.merge(right, on=key, how="left")


def plate_map_data(session: PlateSession, *, face: str = "#808080") -> tuple:
    """The plate map of ``session.plate`` as a Points LayerData tuple (square points, table in features)."""
    wells = session.plate_wells()
    coords = plate_layout(wells, spacing=session.spacing, origin=session.origin)
    text = {"string": "{Metadata_Well}", "size": 7, "color": "white", "visible": False}
    kwargs = {
        "name": PLATE_MAP_NAME, "features": wells, "symbol": "square", "size": session.spacing * 0.9,
        "face_color": face, "border_color": "#202020", "border_width": 0.05, "text": text,
        "metadata": {KIND_KEY: "plate_map", SESSION_KEY: session},
    }
    return coords, kwargs, "points"


def grid_label_data(session: PlateSession) -> tuple:
    """Row letters left of and column numbers above the plate map (text-only Points)."""
    n_rows, n_cols = plate_shape(session.wells["Metadata_Well"].tolist())
    s, (oy, ox) = session.spacing, session.origin
    coords, labels = [], []
    for r in range(n_rows):
        coords.append((oy + r * s, ox - s)); labels.append(row_letter(r))
    for c in range(n_cols):
        coords.append((oy - s, ox + c * s)); labels.append(str(c + 1))
    # Text only: the points themselves are invisible (transparent face and border).
    font = 8 if n_cols <= 12 else 6 if n_cols <= 24 else 5
    kwargs = {"name": "plate grid", "features": pd.DataFrame({"label": labels}), "size": s * 0.5,
              "face_color": "transparent", "border_color": "transparent", "border_width": 0.0,
              "text": {"string": "{label}", "size": font, "color": "#c0c0c0"},
              "metadata": {KIND_KEY: "plate_grid"}}
    return np.asarray(coords, float), kwargs, "points"


def find_layer(viewer: Any, kind: str) -> Any | None:
    """The topmost layer whose metadata marks it as ``kind`` (plate_map, plate_grid, site, overlay)."""
    for layer in reversed(list(viewer.layers)):
        if layer.metadata.get(KIND_KEY) == kind:
            return layer
    return None


def find_plate_map(viewer: Any) -> Any | None:
    """The plate-map Points layer (holding the :class:`PlateSession`), or None."""
    return find_layer(viewer, "plate_map")


def session_of(viewer: Any) -> PlateSession | None:
    layer = find_plate_map(viewer)
    return None if layer is None else layer.metadata.get(SESSION_KEY)


def selected_wells(viewer: Any) -> list[tuple[str, str]]:
    """(plate, well) of the points selected in the plate map, in table order."""
    layer = find_plate_map(viewer)
    if layer is None or not len(layer.selected_data):
        return []
    feats = layer.features
    rows = sorted(i for i in layer.selected_data if i < len(feats))
    return [(str(feats["Metadata_Plate"].iloc[i]), str(feats["Metadata_Well"].iloc[i])) for i in rows]


def show_site(viewer: Any, img: np.ndarray, channels: Sequence[str], title: str = "") -> list[Any]:
    """Show a site in the viewer, replacing the data of existing site layers in place.

    Existing ``site <channel>`` layers keep their colormap and user-set visibility; only data,
    contrast limits and title change, so the view does not jump when another well is clicked.
    """
    layers = []
    for data, kwargs, _ in site_layer_data(img, channels, title=title):
        name = kwargs["name"]
        if name in viewer.layers:
            layer = viewer.layers[name]
            layer.data = data
            layer.contrast_limits = kwargs["contrast_limits"]
            layer.metadata["title"] = title
        else:
            layer = viewer.add_image(data, **kwargs)
        layers.append(layer)
    return layers


def show_plate(layer: Any, plate: str) -> None:
    """Point the plate-map layer at another plate of its session (data + features in place)."""
    session: PlateSession = layer.metadata[SESSION_KEY]
    session.plate = str(plate)
    wells = session.plate_wells()
    layer.selected_data = set()
    layer.data = plate_layout(wells, spacing=session.spacing, origin=session.origin)
    layer.features = wells
    apply_colour(layer)


def refresh_features(layer: Any) -> None:
    """Copy the session's (updated) well table of the shown plate into ``layer.features``."""
    session: PlateSession = layer.metadata[SESSION_KEY]
    import warnings

    with warnings.catch_warnings():
        # The colour column may be gone (scores dropped after a new embedding): napari warns that
        # the colour property was dropped; apply_colour below sets the colours again anyway.
        warnings.filterwarnings("ignore", message="property used for face_color dropped")
        layer.features = session.plate_wells()
    apply_colour(layer)


def colour_limits(values: np.ndarray) -> tuple[float, float]:
    """Colour range shared by the plate map, the overlay and the colourbar (robust, non-empty)."""
    return robust_limits(values, 1.0, 99.0)


def apply_colour(layer: Any) -> None:
    """Colour plate-map points by ``session.extras['colour_by']`` (a numeric feature) or grey.

    The colour range comes from every plate of the session, so plates are comparable.
    """
    session: PlateSession = layer.metadata[SESSION_KEY]
    column = session.extras.get("colour_by")
    if not column or column not in layer.features.columns:
        layer.face_color = "#808080"
        return
    cmap = session.extras.get("colormap", "viridis")
    values = pd.to_numeric(session.wells[column], errors="coerce").to_numpy(float)
    limits = colour_limits(values)
    layer.face_colormap = cmap
    layer.face_color = column
    layer.face_contrast_limits = limits
    session.extras["limits"] = limits
    # Wells without a value (not embedded yet) would map to transparent: keep them visible in grey.
    missing = ~np.isfinite(pd.to_numeric(layer.features[column], errors="coerce").to_numpy(float))
    if missing.any():
        colours = np.asarray(layer.face_color).copy()
        colours[missing] = (0.35, 0.35, 0.35, 1.0)
        layer.face_color = colours
    layer.refresh()


def well_value(session: PlateSession, plate: str, well: str, column: str) -> float:
    """The value of ``column`` for one well (NaN when absent)."""
    w = session.wells
    hit = w[(w["Metadata_Plate"].astype(str) == str(plate)) & (w["Metadata_Well"] == well)]
    if hit.empty or column not in hit.columns:
        return float("nan")
    return float(pd.to_numeric(hit[column], errors="coerce").iloc[0])


def update_overlay(viewer: Any) -> Any | None:
    """Semi-transparent layer over the site image whose value is the shown well's score.

    It uses the plate map's colormap and colour range, so the site visibly takes the colour of
    its well in the plate map. Removed when no colour column is set.
    """
    session = session_of(viewer)
    current = session.extras.get("current") if session else None
    column = session.extras.get("colour_by") if session else None
    existing = find_layer(viewer, "overlay")
    if session is None or not column or current is None or not session.site_shape[0]:
        if existing is not None:
            viewer.layers.remove(existing)
        return None
    value = well_value(session, current[0], current[1], column)
    data = np.full(tuple(session.site_shape), value, dtype=np.float32)
    limits = session.extras.get("limits") or (0.0, 1.0)
    cmap = session.extras.get("colormap", "viridis")
    if existing is None:
        existing = viewer.add_image(data, name=OVERLAY_NAME, colormap=cmap, opacity=0.3,
                                    contrast_limits=limits, blending="translucent",
                                    metadata={KIND_KEY: "overlay", "column": column})
        # Keep the plate map on top (it is what the user clicks).
        pm = find_plate_map(viewer)
        if pm is not None:
            viewer.layers.move(viewer.layers.index(pm), len(viewer.layers) - 1)
            viewer.layers.selection.active = pm
    else:
        existing.data = data
        existing.colormap = cmap
        existing.contrast_limits = limits
    existing.metadata["column"] = column
    existing.metadata["value"] = value
    return existing


def select_well(viewer: Any, plate: str, well: str) -> bool:
    """Select one well in the plate map (switching plates if needed). False when not found."""
    layer = find_plate_map(viewer)
    if layer is None:
        return False
    session: PlateSession = layer.metadata[SESSION_KEY]
    if str(plate) != session.plate:
        show_plate(layer, plate)
    hits = np.flatnonzero(layer.features["Metadata_Well"].to_numpy() == well)
    if not hits.size:
        return False
    layer.selected_data = {int(hits[0])}
    return True


def show_well_site(viewer: Any, plate: str, well: str, site: int | None = None) -> bool:
    """Read one site of a well from disk and show it (site layers updated in place + overlay).

    Parameters
    ----------
    site
        ``Metadata_Site`` number; the well's first site when None or absent.

    Returns
    -------
    bool
        False when the session has no images (a profile table) or the well has no sites.
    """
    from gandl_core.plates import channel_names, read_site

    session = session_of(viewer)
    if session is None or session.index is None:
        return False
    sites = session.sites_of(plate, well)
    if sites.empty:
        return False
    if site is not None and "Metadata_Site" in sites.columns and (sites["Metadata_Site"] == site).any():
        row = sites[sites["Metadata_Site"] == site].iloc[0]
    else:
        row = sites.iloc[0]
    img = read_site(row)
    s = int(row["Metadata_Site"]) if "Metadata_Site" in row.index else 1
    show_site(viewer, img, channel_names(session.index), title=f"{plate} {well} site {s}")
    session.extras["current"] = (str(plate), str(well), s)
    update_overlay(viewer)
    return True
