"""npe2 reader: plates, LoadData CSVs, multichannel TIFFs and profile/embedding tables.

``get_reader(path)`` returns a reader function for what it handles and ``None`` otherwise, so
napari falls through to other readers for ordinary files:

* an RxRx-layout folder (``metadata.csv`` + ``images/``) or a TIFF plate folder, a CellProfiler
  LoadData CSV (``FileName_<Ch>`` columns) or an index ``.parquet`` (``Path_<Ch>`` columns):
  indexed with :func:`gandl_core.plates.build_index`; the first site is opened (one layer per
  channel) with the plate map beside it. Every image is *not* loaded: the plate widget reads the
  site of the well you click.
* a multichannel ``.tif``/``.tiff``: one layer per channel.
* a profile or embedding ``.parquet``/``.csv`` (``Metadata_Well`` + numeric features): a plate
  map whose ``features`` hold the table (aggregated per well with
  :func:`gandl_core.analysis.profiles.aggregate` when it has one row per site).

Errors a user can fix (:class:`gandl_core.errors.GandlError`) are shown as a notification.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ._layers import PlateSession, grid_label_data, plate_map_data, site_layer_data, well_table

LayerData = tuple
ReaderFunction = Callable[[Any], list[LayerData]]

_TABLE_SUFFIXES = {".parquet", ".csv", ".tsv"}
_TIFF_SUFFIXES = {".tif", ".tiff"}


def _csv_header(path: Path) -> list[str]:
    try:
        return pd.read_csv(path, nrows=0, sep="\t" if path.suffix.lower() == ".tsv" else ",").columns.tolist()
    except Exception:  # noqa: BLE001 - not a table we understand: leave it to other readers
        return []


def _parquet_columns(path: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except Exception:  # noqa: BLE001
        return []


def classify(path: str | os.PathLike) -> str | None:
    """What ``path`` is to this plugin: 'plate', 'tiff', 'table' or None (not ours).

    A folder is a plate when it has ``metadata.csv`` + ``images/`` (RxRx) or holds TIFFs; a CSV is
    a plate (LoadData) when it has ``FileName_`` columns, a table when it has ``Metadata_Well``.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "metadata.csv").is_file() and (p / "images").is_dir():
            return "plate"
        if any(f.suffix.lower() in _TIFF_SUFFIXES for f in p.iterdir() if f.is_file()):
            return "plate"
        return None
    suffix = p.suffix.lower()
    if suffix in _TIFF_SUFFIXES:
        return "tiff"
    if suffix in {".csv", ".tsv"}:
        cols = _csv_header(p)
        if any(str(c).startswith("FileName_") for c in cols):
            return "plate"
        if any(str(c).startswith("Metadata_") for c in cols):
            return "table"
        return None
    if suffix == ".parquet":
        cols = _parquet_columns(p)
        if any(str(c).startswith("Path_") for c in cols):
            return "plate"
        return "table" if cols else None
    return None


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """npe2 reader hook: a reader function for paths this plugin understands, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    kind = classify(path)
    if kind is None:
        return None
    return {"plate": read_plate_layers, "tiff": read_tiff_layers, "table": read_table_layers}[kind]


def _notify_errors(fn: Callable[[Path], list[LayerData]]) -> ReaderFunction:
    """Show GandlError messages as a notification (no traceback dialog); add no layers then."""
    def reader(path: Any) -> list[LayerData]:
        from gandl_core.errors import GandlError

        p = Path(path[0] if isinstance(path, list) else path)
        try:
            return fn(p)
        except GandlError as exc:
            from napari.utils.notifications import show_error

            show_error(str(exc))
            return [(None,)]
    reader.__name__ = fn.__name__
    reader.__doc__ = fn.__doc__
    return reader


def plate_layers(index: pd.DataFrame, source: str, *, plate: str | None = None) -> list[LayerData]:
    """Layers of an indexed plate: the first site of ``plate`` (default: first plate) + plate map.

    Parameters
    ----------
    index
        Site index from :func:`gandl_core.plates.build_index`.
    source
        Shown in messages and kept in the session.

    Returns
    -------
    list of LayerData: one image per channel, the plate grid labels and the plate-map Points layer
    (last, so it is selected and on top).
    """
    from gandl_core.plates import channel_names, read_site

    wells = well_table(index)
    plate = str(plate if plate is not None else wells["Metadata_Plate"].iloc[0])
    first = index[index["Metadata_Plate"].astype(str) == plate].iloc[0]
    img = read_site(first)
    channels = channel_names(index)
    session = PlateSession(index=index, wells=wells, plate=plate, source=source, site_shape=img.shape[1:])
    title = f"{plate} {first['Metadata_Well']} site {first.get('Metadata_Site', 1)}"
    return [*site_layer_data(img, channels, title=title), grid_label_data(session), plate_map_data(session)]


def _read_plate(path: Path) -> list[LayerData]:
    """Index a plate (RxRx folder, TIFF folder, LoadData CSV, index parquet) and open its first site."""
    from gandl_core.plates import build_index

    index = build_index(path, skip_missing=True)
    return plate_layers(index, str(path))


def _read_tiff(path: Path) -> list[LayerData]:
    """A multichannel TIFF: one stain-coloured layer per channel (channel axis = the short one)."""
    import tifffile

    from gandl_core.errors import DataError

    try:
        with tifffile.TiffFile(path) as tif:
            arr = tif.asarray()
            labels = (tif.imagej_metadata or {}).get("Labels") if tif.is_imagej else None
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise DataError(f"{path}: cannot read this TIFF ({exc}). Is the file complete?") from exc
    arr = np.squeeze(arr)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        # Channels are the short axis (<= 16), first or last; (C,H,W) wins ties.
        if arr.shape[0] > 16 and arr.shape[-1] <= 16:
            arr = np.moveaxis(arr, -1, 0)
    else:
        raise DataError(f"{path}: {arr.ndim}-D TIFF of shape {arr.shape}; expected one field "
                        "[C,H,W] or [H,W,C]. Split z-stacks/time series into one file per field.")
    n = arr.shape[0]
    names = [str(x) for x in labels][:n] if labels and len(labels) >= n else [f"Ch{i + 1}" for i in range(n)]
    return site_layer_data(arr.astype(np.float32), names, title=path.name)


def _read_table(path: Path) -> list[LayerData]:
    """A profile/embedding table: plate map with the per-well table in ``features``."""
    from gandl_core.errors import DataError
    from gandl_core.tables import feature_columns, read_table

    df = read_table(path)
    missing = [c for c in ("Metadata_Plate", "Metadata_Well") if c not in df.columns]
    if "Metadata_Well" in missing:
        raise DataError(f"{path}: no Metadata_Well column, so the table cannot be drawn as a plate map. "
                        f"Columns are {list(df.columns)[:8]}...; name the well column Metadata_Well "
                        "(e.g. B02).")
    if missing:  # one plate without a name
        df = df.assign(Metadata_Plate=path.stem)
    df["Metadata_Plate"] = df["Metadata_Plate"].astype(str)
    if df.duplicated(["Metadata_Plate", "Metadata_Well"]).any():
        from gandl_core.analysis.profiles import aggregate

        feats = [c for c in feature_columns(df) if pd.api.types.is_numeric_dtype(df[c])]
        wells = aggregate(df, features=feats)
    else:
        wells = df
    session = PlateSession(index=None, wells=wells.reset_index(drop=True), plate=str(wells["Metadata_Plate"].iloc[0]),
                          source=str(path))
    return [grid_label_data(session), plate_map_data(session)]


read_plate_layers = _notify_errors(_read_plate)
read_tiff_layers = _notify_errors(_read_tiff)
read_table_layers = _notify_errors(_read_table)
