"""npe2 reader: plate folders, LoadData CSVs, index/profile tables and OME-Zarr HCS plates.

The manifest asks only for what this reader reads (``*.csv``, ``*.tsv``, ``*.parquet``,
``*.zarr``, ``*.nd2``, ``*.czi`` and folders); a PNG or TIFF file is left to napari's own reader. ``get_reader(path)``
looks inside before claiming anything and returns ``None`` otherwise, so napari falls through:

* a **plate** -- an RxRx folder (``metadata.csv`` + ``images/``) or that ``metadata.csv`` itself,
  a folder of TIFFs, a folder holding ``load_data.csv``, a CellProfiler LoadData CSV
  (``FileName_<Ch>``/``URL_<Ch>`` columns), an index ``.parquet`` (``Path_<Ch>`` columns) or an
  OME-Zarr HCS plate (``*.zarr`` with plate metadata), and with the ``formats`` extra (bioio) an
  ``.nd2``/``.czi`` file, a folder of them or an ImageXpress acquisition folder: indexed with
  :func:`gandl_core.plates.build_index` (the core's channel-axis rule), first site + plate map;
* a **profile or embedding table** (``.parquet``/``.csv``/``.tsv`` with ``Metadata_Well``): a plate
  map whose ``features`` hold the table (site rows aggregated per well).

In napari the reading happens in a worker (:meth:`._hub.SessionHub.open_source`, progress in the
activity dock) and the reader returns at once; without a viewer (scripts) it returns LayerData.
Errors a user can fix (a header-only CSV, a well named "XYZ", a missing column) are one
notification; sites left out of the index are named in a warning and listed in the Plate browser.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pandas as pd

LayerData = tuple
ReaderFunction = Callable[[Any], list[LayerData]]

TABLE_SUFFIXES = {".parquet", ".csv", ".tsv"}
TIFF_SUFFIXES = {".tif", ".tiff"}
VENDOR_SUFFIXES = {".nd2", ".czi"}  # read through bioio (gandl_core.plates._bioio; the ``formats`` extra)
SCAN_LIMIT = 2000  # folder entries looked at when deciding whether a folder is a TIFF plate


def _csv_header(path: Path) -> list[str]:
    try:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return [str(c).strip() for c in pd.read_csv(path, nrows=0, sep=sep, encoding="utf-8-sig").columns]
    except Exception:  # noqa: BLE001 - not a table we understand: leave it to other readers
        return []


def _parquet_columns(path: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except Exception:  # noqa: BLE001
        return []


def is_hcs_zarr(path: Path) -> bool:
    """An OME-Zarr HCS plate (NGFF 0.4 ``.zattrs`` or 0.5 ``zarr.json`` with ``plate``): the core's check."""
    from gandl_core.plates import is_omezarr_plate

    return is_omezarr_plate(path)


def _has_vendor_files(folder: Path) -> bool:
    """ND2/CZI files directly in the folder (the core indexes them through bioio), bounded scan."""
    for seen, entry in enumerate(os.scandir(folder)):
        if seen >= SCAN_LIMIT:
            return False
        if entry.is_file() and Path(entry.name).suffix.lower() in VENDOR_SUFFIXES:
            return True
    return False


def _has_tiffs(folder: Path) -> bool:
    """TIFFs in the folder or one level down (plate folders), looking at a bounded number of entries."""
    seen = 0
    for entry in os.scandir(folder):
        seen += 1
        if seen > SCAN_LIMIT:
            return False
        if entry.is_file() and Path(entry.name).suffix.lower() in TIFF_SUFFIXES:
            return True
        if entry.is_dir() and not entry.name.startswith("."):
            for sub in os.scandir(entry.path):
                seen += 1
                if seen > SCAN_LIMIT:
                    return False
                if sub.is_file() and Path(sub.name).suffix.lower() in TIFF_SUFFIXES:
                    return True
    return False


def classify(path: str | os.PathLike) -> tuple[str, Path] | None:
    """What ``path`` is to this plugin: ``("plate", source)``, ``("table", path)`` or None (not ours).

    ``source`` is what :func:`gandl_core.plates.build_index` gets (an RxRx ``metadata.csv`` opens
    its folder).
    """
    p = Path(path)
    if p.is_dir():
        if p.suffix.lower() == ".zarr":
            return ("plate", p) if is_hcs_zarr(p) else None
        if (p / "metadata.csv").is_file() and (p / "images").is_dir():
            return "plate", p
        if (p / "load_data.csv").is_file() or _has_tiffs(p) or _has_vendor_files(p):
            return "plate", p  # TIFFs (an ImageXpress acquisition too: TIFFs one level down), ND2/CZI
        children = [c for _, c in zip(range(64), p.iterdir()) if c.is_dir()]
        if any(is_hcs_zarr(c) for c in children):  # a folder of OME-Zarr plates
            return "plate", p
        return None
    suffix = p.suffix.lower()
    if suffix in VENDOR_SUFFIXES:
        return ("plate", p) if p.is_file() else None
    if suffix in {".csv", ".tsv"}:
        if p.name.lower() == "metadata.csv" and (p.parent / "images").is_dir():
            return "plate", p.parent
        cols = _csv_header(p)
        if any(c.startswith(("FileName_", "URL_")) for c in cols):
            return "plate", p
        if any(c.startswith("Metadata_") for c in cols):
            return "table", p
        return None
    if suffix == ".parquet":
        cols = _parquet_columns(p)
        if any(str(c).startswith("Path_") for c in cols):
            return "plate", p
        if "Metadata_Well" in cols or any(str(c).startswith("Metadata_") for c in cols):
            return "table", p
        return None
    return None


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """npe2 reader hook: a reader function for paths this plugin understands, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    found = classify(path)
    if found is None:
        return None
    kind, source = found
    return _reader(kind, source)


def _target_viewer() -> Any | None:
    """The viewer being opened into (napari's current viewer), or None outside a napari GUI."""
    try:
        import napari

        return napari.current_viewer()
    except Exception:  # noqa: BLE001
        return None


def _reader(kind: str, source: Path) -> ReaderFunction:
    def reader(path: Any) -> list[LayerData]:
        viewer = _target_viewer()
        if viewer is not None:
            from ._hub import hub_of

            hub_of(viewer).open_source(source, kind=kind)
            return [(None,)]
        return read_now(source, kind)
    reader.__name__ = f"read_{kind}"
    return reader


def read_now(source: Path, kind: str) -> list[LayerData]:
    """Read synchronously and return LayerData (no viewer: scripts); user errors are one notification."""
    from gandl_core.errors import GandlError

    try:
        if kind == "table":
            opened = read_table_session(source)
        else:
            from gandl_core.plates import build_index

            from ._hub import session_from_index

            opened = session_from_index(build_index(source, skip_missing=True), str(source))
    except GandlError as exc:
        from ._workers import notify_error

        notify_error(exc)
        return [(None,)]
    from . import _layers as L

    s = opened.session
    title = opened.first.label() if opened.first else ""
    return [*L.site_layer_data(opened.planes, s.channels, session_id=s.id, title=title),
            L.grid_label_data(s), L.plate_map_data(s)]


def check_wells(wells: pd.DataFrame, source: str) -> None:
    """Every ``Metadata_Well`` must be a well name (the core's parser); else a DataError naming the row."""
    from gandl_core.errors import DataError

    from ._layers import parse_well

    for i, w in enumerate(wells["Metadata_Well"].astype(str)):
        try:
            parse_well(w)
        except (ValueError, DataError) as exc:
            raise DataError(f"{source}: row {i + 1}, column Metadata_Well: {w!r} is not a well name like 'B02' "
                            "(row letter(s), then the column number). Fix that column to draw a plate map.") from exc


def read_table_session(path: Path):
    """A profile/embedding table -> an :class:`._hub.OpenedPlate` without images (runs in a worker)."""
    from gandl_core.errors import DataError
    from gandl_core.tables import feature_columns, read_table

    from ._hub import OpenedPlate
    from ._session import PlateSession

    df = read_table(path)
    if "Metadata_Well" not in df.columns:
        raise DataError(f"{path}: no Metadata_Well column, so the table cannot be drawn as a plate map. "
                        f"Columns are {list(df.columns)[:8]}...; name the well column Metadata_Well (e.g. B02).")
    if df.empty:
        raise DataError(f"{path}: has a header but no rows. Add one row per well (or per site).")
    if "Metadata_Plate" not in df.columns:  # one plate without a name
        df = df.assign(Metadata_Plate=path.stem)
    df["Metadata_Plate"] = df["Metadata_Plate"].astype(str)
    df["Metadata_Well"] = df["Metadata_Well"].astype(str)
    check_wells(df, str(path))
    if df.duplicated(["Metadata_Plate", "Metadata_Well"]).any():
        from gandl_core.analysis.profiles import aggregate

        feats = [c for c in feature_columns(df) if pd.api.types.is_numeric_dtype(df[c])]
        df = aggregate(df, features=feats)
    session = PlateSession(index=None, wells=df.reset_index(drop=True), plate=str(df["Metadata_Plate"].iloc[0]),
                           source=str(path))
    return OpenedPlate(session, [], None)
