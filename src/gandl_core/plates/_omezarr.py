"""OME-Zarr HCS plates (NGFF 0.4 and 0.5) as a plate source: plate -> wells -> fields as sites.

The plate's metadata is plain JSON (``.zattrs`` for NGFF 0.4 / zarr v2, ``zarr.json`` ->
``attributes.ome`` for NGFF 0.5 / zarr v3), read here without zarr; only pixel reads open the
arrays with ``zarr`` (imported lazily).

Mapping onto the index (docs/architecture.md):

* ``Metadata_Plate`` = the plate's ``name`` (else the folder name without ``.ome.zarr``/``.zarr``);
* ``Metadata_Well`` = row name + column number, e.g. row ``B`` / column ``2`` -> ``B02``;
* ``Metadata_Site`` = the field's position in the well's ``images`` list + 1 (field ``0`` -> site 1);
  ``Metadata_Acquisition`` when the well's images name acquisitions;
* channels named from ``omero.channels[].label`` (else ``c1..cN``); colours are kept for napari
  (:func:`plate_channels`); the channel axis is the ``multiscales.axes`` entry of type ``channel``;
* ``Path_<Channel>`` = ``"<plate>/<row>/<col>/<field>/<dataset>::<k>"``: the array of the chosen
  pyramid level (``level=0`` = full resolution) and channel ``k``. :func:`read_plane` reads just that
  channel's plane (zarr reads only the chunks it needs); singleton t/z axes are dropped, a field with
  several z planes or time points is refused (GAN-DL embeds 2-D fields: project first).

Scores are NOT written back into the plate. Tables stay Parquet beside it, keyed by
(Metadata_Plate, Metadata_Well, Metadata_Site) which map one-to-one onto the plate's
row/column/field. Why: a plate is the raw data set (often read-only, shared, or on object storage);
NGFF 0.4/0.5 defines no table or per-well value layout that napari-ome-zarr or other viewers show,
so a ``tables/`` group would be a private convention written into someone else's data. The napari
plugin colours its own plate map with the scores instead.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError

STACK_SEP = "::"
_SUFFIXES = (".ome.zarr", ".zarr")


# --------------------------------------------------------------------------------------------
# JSON attributes of a zarr group or array (v2 and v3), without importing zarr
# --------------------------------------------------------------------------------------------


def _node_json(path: Path) -> tuple[dict, str] | None:
    """(attributes, kind) of a zarr node folder, kind 'group' or 'array'; None if not a zarr node.

    NGFF 0.5 keeps the OME metadata under ``attributes["ome"]``; this returns that inner dict
    (with its ``version``) so callers see the same keys for 0.4 and 0.5.
    """
    v3 = path / "zarr.json"
    if v3.is_file():
        doc = _load_json(v3)
        attrs = doc.get("attributes") or {}
        ome = attrs.get("ome")
        return (ome if isinstance(ome, dict) else attrs), str(doc.get("node_type", "group"))
    kind = "array" if (path / ".zarray").is_file() else "group" if (path / ".zgroup").is_file() else None
    if kind is None:
        return None
    zattrs = path / ".zattrs"
    return (_load_json(zattrs) if zattrs.is_file() else {}), kind


def _load_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read this zarr metadata file ({exc}). Is the plate complete?") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path}: zarr metadata is not a JSON object.")
    return doc


def _attrs(path: Path) -> dict:
    node = _node_json(path)
    return node[0] if node else {}


def is_omezarr_plate(path: str | os.PathLike) -> bool:
    """True if ``path`` is the root folder of an OME-Zarr HCS plate (NGFF 0.4 or 0.5).

    Cheap (reads one small JSON file), never raises: meant for napari's reader hook.
    """
    try:
        p = Path(path)
        if not p.is_dir():
            return False
        return isinstance(_attrs(p).get("plate"), dict)
    except (DataError, OSError):
        return False


def find_plates(path: Path) -> list[Path]:
    """The plate itself, or the OME-Zarr plates directly inside a folder (sorted); [] if none."""
    if is_omezarr_plate(path):
        return [path]
    if not path.is_dir():
        return []
    return sorted(c for c in path.iterdir() if c.is_dir() and is_omezarr_plate(c))


# --------------------------------------------------------------------------------------------
# Plate -> rows of the index
# --------------------------------------------------------------------------------------------


def plate_name(root: Path, plate: dict | None = None) -> str:
    plate = plate if plate is not None else _attrs(root).get("plate", {})
    name = plate.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    base = root.name
    for suf in _SUFFIXES:
        if base.lower().endswith(suf):
            return base[: -len(suf)]
    return base


def _well_name(row: str, col: str, where: str) -> str:
    m = re.fullmatch(r"\s*([A-Za-z]{1,2})\s*", str(row))
    if not m or not str(col).strip().isdigit():
        raise DataError(f"{where}: well row {row!r} / column {col!r} do not make a well name like 'B02' "
                        "(row letters + column number). Rename the plate's rows/columns.")
    return f"{m.group(1).upper()}{int(col):02d}"


def _multiscale(image: Path, where: str) -> dict:
    attrs = _attrs(image)
    ms = attrs.get("multiscales")
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict):
        raise DataError(f"{where}: field {image} has no 'multiscales' metadata, so it is not an OME-Zarr "
                        "image. Re-export the plate with an NGFF 0.4/0.5 writer.")
    return ms[0]


def field_layout(image: Path, level: int, where: str) -> dict:
    """Axes, channel names/colours and the array path of one field at pyramid ``level``."""
    ms = _multiscale(image, where)
    datasets = ms.get("datasets") or []
    if not 0 <= level < len(datasets):
        raise ConfigError(f"level={level}: {image} has {len(datasets)} pyramid level(s) (0..{len(datasets) - 1}); "
                          "choose one of those (0 = full resolution).")
    axes = _axes(ms, image)
    omero = (_attrs(image).get("omero") or {}).get("channels") or []
    return {"axes": axes, "array": image / str(datasets[level]["path"]), "omero": omero}


def _axes(ms: dict, image: Path) -> list[tuple[str, str]]:
    """[(name, type)] of a multiscale; NGFF 0.3-style string lists are accepted too."""
    raw = ms.get("axes")
    if raw is None:  # NGFF <= 0.2: always 5-D tczyx
        return [("t", "time"), ("c", "channel"), ("z", "space"), ("y", "space"), ("x", "space")]
    out = []
    for a in raw:
        if isinstance(a, str):
            out.append((a, {"t": "time", "c": "channel"}.get(a, "space")))
        elif isinstance(a, dict) and "name" in a:
            name = str(a["name"])
            out.append((name, str(a.get("type") or {"t": "time", "c": "channel"}.get(name, "space"))))
        else:
            raise DataError(f"{image}: multiscales axes entry {a!r} has no name.")
    return out


def channel_axis_of(axes: list[tuple[str, str]]) -> int | None:
    """Index of the channel axis (type 'channel', else the axis named 'c'); None if absent."""
    for i, (name, kind) in enumerate(axes):
        if kind == "channel":
            return i
    for i, (name, _) in enumerate(axes):
        if name.lower() == "c":
            return i
    return None


def _array_shape(array: Path) -> tuple[tuple[int, ...], str]:
    doc = _load_json(array / "zarr.json") if (array / "zarr.json").is_file() else _load_json(array / ".zarray")
    shape = tuple(int(s) for s in doc.get("shape", ()))
    dtype = doc.get("data_type") or doc.get("dtype") or "?"
    if isinstance(dtype, str) and dtype[:1] in "<>|=":
        dtype = np.dtype(dtype).name
    return shape, str(dtype)


def plate_channels(path: str | os.PathLike) -> list[dict]:
    """Channels of a plate from its first field: ``[{"name", "color", "window"}]``.

    ``color`` is the ``omero`` hex string (``"0000FF"``) or None; ``window`` the ``omero`` window dict
    (start/end/min/max) or None. For napari layers (names, colormaps, contrast limits).
    """
    root = Path(path)
    plates = find_plates(root)
    if not plates:
        raise DataError(f"{root}: not an OME-Zarr HCS plate (no 'plate' metadata).")
    rows = [r for r in _plate_rows(plates[0], 0) if r["channels"] is not None]
    if not rows:
        raise DataError(f"{root}: the plate lists no readable fields.")
    return rows[0]["channels"]


def _channel_list(layout: dict, n: int, where: str) -> list[dict]:
    omero = layout["omero"]
    names = [str(c.get("label") or "").strip() if isinstance(c, dict) else "" for c in omero]
    if len(omero) != n or not all(names) or len(set(names)) != n:
        names = [f"c{k}" for k in range(1, n + 1)]
        omero = [{}] * n
    return [{"name": nm, "color": (c.get("color") if isinstance(c, dict) else None),
             "window": (c.get("window") if isinstance(c, dict) else None)} for nm, c in zip(names, omero)]


def _plate_rows(root: Path, level: int) -> list[dict]:
    """One dict per field: plate, well, site, acquisition, array, n channels, channel list, origin."""
    plate = _attrs(root).get("plate")
    if not isinstance(plate, dict):
        raise DataError(f"{root}: not an OME-Zarr HCS plate (no 'plate' metadata).")
    name = plate_name(root, plate)
    rows_meta = [r.get("name") for r in plate.get("rows", [])]
    cols_meta = [c.get("name") for c in plate.get("columns", [])]
    out = []
    for w in plate.get("wells", []):
        wpath = str(w.get("path", ""))
        where = f"{root} well {wpath}"
        try:
            row, col = rows_meta[int(w["rowIndex"])], cols_meta[int(w["columnIndex"])]
        except (KeyError, IndexError, TypeError, ValueError):
            row, _, col = wpath.partition("/")
        well = _well_name(row, col, where)
        wdir = root / wpath
        images = (_attrs(wdir).get("well") or {}).get("images")
        if not isinstance(images, list):
            raise DataError(f"{where}: {wdir} has no 'well' metadata listing its fields. Re-export the plate.")
        for k, img in enumerate(images):
            image = wdir / str(img.get("path", k))
            origin = f"{root.name}/{wpath}/{img.get('path', k)}"
            layout = field_layout(image, level, origin)
            if not is_zarr_array(layout["array"]):  # reported as a missing file by validation
                out.append({"plate": name, "well": well, "site": k + 1, "acquisition": img.get("acquisition"),
                            "array": layout["array"], "n": None, "channels": None, "origin": origin})
                continue
            shape, _ = _array_shape(layout["array"])
            if len(shape) != len(layout["axes"]):
                raise DataError(f"{origin}: array {layout['array']} has {len(shape)} dimensions but "
                                f"multiscales.axes names {len(layout['axes'])}.")
            c = channel_axis_of(layout["axes"])
            n = shape[c] if c is not None else 1
            out.append({"plate": name, "well": well, "site": k + 1, "acquisition": img.get("acquisition"),
                        "array": layout["array"], "n": n, "channels": _channel_list(layout, n, origin),
                        "origin": origin})
    return out


def read_omezarr(source: Path, level: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Index rows of one OME-Zarr plate, or of every plate directly inside a folder.

    Returns ``(meta, paths, origin)`` like the other readers of :mod:`._sources`.

    Raises
    ------
    DataError
        No plate, a field without multiscales metadata, fields that disagree on their channels.
    ConfigError
        ``level`` beyond a field's pyramid.
    """
    if not isinstance(level, (int, np.integer)) or level < 0:
        raise ConfigError(f"level={level!r}: give a pyramid level >= 0 (0 = full resolution).")
    plates = find_plates(source)
    if not plates:
        raise DataError(f"{source}: no OME-Zarr HCS plate here (no 'plate' metadata in .zattrs/zarr.json).")
    fields = [f for p in plates for f in _plate_rows(p, int(level))]
    if not fields:
        raise DataError(f"{source}: the plate's wells list no fields.")
    readable = [f for f in fields if f["channels"] is not None]
    if not readable:
        raise DataError(f"{source}: no field of the plate has its array (first: {fields[0]['array']}).")
    names = [c["name"] for c in readable[0]["channels"]]
    for f in readable[1:]:
        other = [c["name"] for c in f["channels"]]
        if other != names:
            raise DataError(f"{f['origin']}: channels {other} differ from {names} of {readable[0]['origin']}. "
                            "Every field of a plate must hold the same channels in the same order.")
    meta = pd.DataFrame({"Metadata_Plate": [f["plate"] for f in fields],
                         "Metadata_Well": [f["well"] for f in fields],
                         "Metadata_Site": [f["site"] for f in fields]})
    if any(f["acquisition"] is not None for f in fields):
        meta["Metadata_Acquisition"] = [-1 if f["acquisition"] is None else int(f["acquisition"]) for f in fields]
    rows = [[f"{Path(os.path.abspath(f['array'])).as_posix()}{STACK_SEP}{k}" for k in range(len(names))]
            for f in fields]
    paths = pd.DataFrame(rows, columns=["Path_" + n for n in names])
    return meta, paths, [f["origin"] for f in fields]


# --------------------------------------------------------------------------------------------
# Pixels: one channel plane of one field
# --------------------------------------------------------------------------------------------


def is_zarr_array(path: str | os.PathLike) -> bool:
    """True if ``path`` is a zarr array folder (v2 ``.zarray`` or v3 ``zarr.json`` of an array)."""
    p = Path(path)
    if (p / ".zarray").is_file():
        return True
    v3 = p / "zarr.json"
    if not v3.is_file():
        return False
    try:
        return _load_json(v3).get("node_type") == "array"
    except DataError:
        return False


def _stamp(array: Path) -> int:
    meta = array / "zarr.json" if (array / "zarr.json").is_file() else array / ".zarray"
    try:
        return meta.stat().st_mtime_ns
    except OSError:
        return 0


@lru_cache(maxsize=256)
def _array_axes(array: str, stamp: int) -> tuple[tuple[tuple[str, str], ...], tuple[int, ...], str]:
    """(axes, shape, dtype) of a field's array, the axes from the multiscales group above it."""
    arr = Path(array)
    shape, dtype = _array_shape(arr)
    for parent in list(arr.parents)[:3]:
        ms = _attrs(parent).get("multiscales")
        if isinstance(ms, list) and ms:
            for m in ms:
                paths = [str((parent / str(d.get("path", ""))).resolve()) for d in m.get("datasets", [])]
                if str(arr.resolve()) in paths:
                    return tuple(_axes(m, parent)), shape, dtype
    raise DataError(f"{array}: no OME-Zarr multiscales group above this array lists it, so its axes are "
                    "unknown. Index the plate again ('gandl-core index PLATE.ome.zarr').")


def _plane_index(axes, shape, k: int | None, where: str) -> tuple[tuple, tuple[int, int]]:
    """The zarr selection of channel ``k``'s 2-D plane, and that plane's (H, W)."""
    spatial = [i for i, (_, kind) in enumerate(axes) if kind == "space"]
    if len(spatial) < 2:
        raise DataError(f"{where}: axes {[a for a, _ in axes]} have fewer than 2 spatial axes.")
    y, x = spatial[-2], spatial[-1]
    c = channel_axis_of(list(axes))
    n = shape[c] if c is not None else 1
    kk = 0 if k is None else k
    if not 0 <= kk < n:
        raise DataError(f"{where}: asks for channel {kk} but the field has {n} channel(s) (0..{n - 1}).")
    sel: list = []
    for i, (name, _) in enumerate(axes):
        if i in (y, x):
            sel.append(slice(None))
        elif i == c:
            sel.append(kk)
        elif shape[i] == 1:
            sel.append(0)
        else:
            raise DataError(f"{where}: axis '{name}' has {shape[i]} planes; GAN-DL embeds 2-D fields. Make a "
                            f"maximum projection over '{name}' (or pick one plane) and save that plate.")
    return tuple(sel), (shape[y], shape[x])


def plane_shape(array: str, k: int | None) -> tuple[tuple[int, int], str, int]:
    """((H, W), dtype, channels) of channel ``k`` of a field's array, from metadata only."""
    axes, shape, dtype = _array_axes(str(array), _stamp(Path(array)))
    _, hw = _plane_index(axes, shape, k, f"{array}{STACK_SEP}{k}")
    c = channel_axis_of(list(axes))
    return hw, dtype, (shape[c] if c is not None else 1)


def read_plane(array: str, k: int | None) -> np.ndarray:
    """Channel ``k`` of a field's array as a 2-D numpy array of stored values (lazy: its chunks only)."""
    where = f"{array}{STACK_SEP}{k}"
    axes, shape, _ = _array_axes(str(array), _stamp(Path(array)))
    sel, _ = _plane_index(axes, shape, k, where)
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - zarr is a dependency
        raise DataError(f"{where}: reading OME-Zarr needs the 'zarr' package (pip install 'zarr>=3').") from exc
    try:
        arr = zarr.open_array(store=str(array), mode="r")
        return np.asarray(arr[sel])
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any store/codec error becomes a named DataError
        raise DataError(f"{where}: cannot read this OME-Zarr field ({exc}). Check the plate is complete, or "
                        "build the index with skip_missing=True to leave this site out.") from exc
