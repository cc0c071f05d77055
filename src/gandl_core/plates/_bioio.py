"""Vendor formats through bioio (optional extra ``napari-gandl[formats]``): ND2, CZI, ImageXpress.

A *source* is one vendor file (``.nd2``, ``.czi``), a folder of such files, or an ImageXpress
acquisition folder (a ``.jdce`` descriptor beside ``timepoint<N>`` folders). Each scene (position)
of a source is one site:

* well and site from the scene's own metadata where bioio gives it (``standard_metadata.row`` /
  ``column``), else from a scene name such as ``B02``, ``B2``, ``B02-s1`` (ImageXpress), ``B2#3``,
  ``C03_f2``; else the well is the file's name (``B02.nd2``, ``plate1_B02.czi``) and the scenes
  are its sites in order. A scene that names no well in a file that names none is an error: rename
  the file after its well, or export the plate as OME-Zarr/OME-TIFF.
* channels named from the file's metadata (``channel_names``); the channel axis is bioio's ``C``.
* ``Metadata_Plate`` = the folder's name for a folder, the file's stem for one file.

``Path_<Channel>`` holds ``"<source>::scene=<i>::<k>"``; :func:`read_plane` opens the source with
bioio, picks scene ``i`` and reads channel ``k`` at T=0, Z=0 (a scene with several z planes or time
points is refused: GAN-DL embeds 2-D fields).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError

VENDOR_SUFFIXES = (".nd2", ".czi")
_SCENE = re.compile(r"^(?P<head>.*)::scene=(?P<scene>\d+)$")
_SCENE_WELL = re.compile(r"^\s*(?P<row>[A-Za-z]{1,2})[-_ ]?0*(?P<col>\d{1,3})"
                         r"(?:\s*(?:[-_#. ]\s*)(?:s|f|site|field|pos)?\s*(?P<site>\d+))?\s*$", re.I)
_FILE_WELL = re.compile(r"(?:^|[_\-. ])(?P<row>[A-Pa-p]{1,2})0*(?P<col>\d{1,2})(?:$|[_\-. ])")
_INSTALL = "pip install 'napari-gandl[formats]' (bioio with its ND2, CZI, OME-TIFF and ImageXpress readers)"


def is_imagexpress(path: Path) -> bool:
    """An ImageXpress acquisition folder: a ``.jdce`` descriptor and ``timepoint<N>`` folders."""
    if not path.is_dir():
        return False
    names = [p.name.lower() for p in path.iterdir()]
    return any(n.endswith(".jdce") for n in names) and any(n.startswith("timepoint") for n in names)


def sources(path: Path) -> list[Path]:
    """The bioio sources ``path`` holds: itself (vendor file / ImageXpress folder) or the vendor
    files directly inside a folder (sorted); [] if none."""
    if path.is_file():
        return [path] if path.suffix.lower() in VENDOR_SUFFIXES else []
    if is_imagexpress(path):
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VENDOR_SUFFIXES)
    return []


def split_scene(head: str) -> tuple[str, int] | None:
    """``"<source>::scene=<i>"`` -> (source, i); None for any other path."""
    m = _SCENE.match(str(head))
    return (m["head"], int(m["scene"])) if m else None


def _bioimage(source: str):
    try:
        from bioio import BioImage
    except ImportError as exc:
        raise DataError(f"{source}: reading this format needs bioio: {_INSTALL}.") from exc
    try:
        if Path(source).is_dir():
            import bioio_imagexpress

            return BioImage(source, reader=bioio_imagexpress.Reader)
        return BioImage(source)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing plugin, corrupt file: one named error
        raise DataError(f"{source}: bioio cannot open this file ({type(exc).__name__}: {exc}). If a reader "
                        f"plugin is missing: {_INSTALL}.") from exc


# One open reader per process (scenes of one file are read in a row); dropped in a new process so
# DataLoader workers never share a parent's file handle.
_OPEN: dict = {}


def _open(source: str):
    key = (source, os.getpid())
    if _OPEN.get("key") != key:
        old = _OPEN.pop("img", None)
        _OPEN.clear()
        if old is not None and hasattr(old, "close"):
            try:
                old.close()
            except Exception:  # noqa: BLE001
                pass
        _OPEN.update(key=key, img=_bioimage(source))
    return _OPEN["img"]


def _well(row: str, col: str) -> str:
    return f"{row.upper()}{int(col):02d}"


def _scene_wells(img, source: Path) -> list[tuple[str, int]]:
    """(well, site) per scene of ``img`` (see the module docstring for the rules)."""
    out: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    fm = _FILE_WELL.search(source.stem) if source.is_file() else None
    for i, scene in enumerate(img.scenes):
        well = site = None
        try:
            img.set_scene(i)
            sm = img.standard_metadata
            if sm.row and sm.column and str(sm.column).strip().isdigit():
                well = _well(str(sm.row).strip(), str(sm.column))
        except Exception:  # noqa: BLE001 - a reader without standard metadata
            pass
        m = _SCENE_WELL.match(str(scene))
        if m:
            well = well or _well(m["row"], m["col"])
            site = int(m["site"]) if m["site"] else None
        if well is None and fm:
            well = _well(fm["row"], fm["col"])
        if well is None:
            raise DataError(f"{source}: scene {i} ({scene!r}) names no well and neither does the file name. "
                            "Name the file after its well (e.g. B02.nd2, plate1_B02.czi), or export the plate "
                            "as OME-Zarr / OME-TIFF stacks named <plate>_<well>_s<site>.ome.tif.")
        seen[well] = seen.get(well, 0) + 1
        out.append((well, site if site is not None else seen[well]))
    return out


def read_bioio(source: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Index rows (meta, paths, origin) of the bioio sources in ``source`` (file or folder)."""
    found = sources(source)
    if not found:
        raise DataError(f"{source}: no ND2/CZI file or ImageXpress acquisition here.")
    plate = source.name if source.is_dir() else source.stem
    rows, meta, origin = [], [], []
    names: list[str] | None = None
    for src in found:
        img = _bioimage(str(src))
        for i, (well, site) in enumerate(_scene_wells(img, src)):
            img.set_scene(i)
            chans = [str(c) for c in (img.channel_names or [])]
            n = int(img.dims.C) if "C" in img.dims.order else 1
            if len(chans) != n or len(set(chans)) != n or not all(chans):
                chans = [f"c{k}" for k in range(1, n + 1)]
            if names is None:
                names, first = chans, f"{src} scene {i}"
            elif chans != names:
                raise DataError(f"{src} scene {i}: channels {chans} differ from {names} of {first}. Every "
                                "site must hold the same channels in the same order.")
            base = Path(os.path.abspath(src)).as_posix()
            rows.append([f"{base}::scene={i}::{k}" for k in range(n)])
            meta.append((plate, well, site))
            origin.append(f"{src} scene {i} ({img.scenes[i]})")
    metadf = pd.DataFrame(meta, columns=["Metadata_Plate", "Metadata_Well", "Metadata_Site"])
    return metadf, pd.DataFrame(rows, columns=["Path_" + c for c in names or []]), origin


def _select(img, k: int | None, where: str) -> dict:
    dims = img.dims
    sizes = dict(zip(dims.order, dims.shape))
    for ax, what in (("Z", "z planes"), ("T", "time points")):
        if sizes.get(ax, 1) > 1:
            raise DataError(f"{where}: the scene holds {sizes[ax]} {what}; GAN-DL embeds 2-D fields. Export a "
                            "maximum projection (or one plane) per site.")
    if sizes.get("S", 1) > 1:
        raise DataError(f"{where}: RGB samples; save one grey plane per channel.")
    n = sizes.get("C", 1)
    kk = 0 if k is None else k
    if not 0 <= kk < n:
        raise DataError(f"{where}: asks for channel {kk} but the scene has {n} channel(s) (0..{n - 1}).")
    return {"n": n, "hw": (sizes["Y"], sizes["X"]), "sel": {a: 0 for a in ("T", "Z") if a in sizes} | (
        {"C": kk} if "C" in sizes else {})}


def plane_shape(head: str, k: int | None) -> tuple[tuple[int, int], str, int]:
    """((H, W), dtype, channels) of channel ``k`` of ``"<source>::scene=<i>"``."""
    source, scene = split_scene(head)  # type: ignore[misc]
    img = _open(source)
    try:
        img.set_scene(scene)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{head}: no scene {scene} in {source} ({exc}). Index the file again.") from exc
    s = _select(img, k, f"{head}::{k}")
    return s["hw"], str(np.dtype(img.dtype)), s["n"]


def read_plane(head: str, k: int | None) -> np.ndarray:
    """Channel ``k`` of scene ``i`` of ``"<source>::scene=<i>"`` as a 2-D array of stored values."""
    source, scene = split_scene(head)  # type: ignore[misc]
    where = f"{head}::{k}"
    img = _open(source)
    try:
        img.set_scene(scene)
        s = _select(img, k, where)
        return np.asarray(img.get_image_data("YX", **s["sel"]))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{where}: cannot read this plane ({type(exc).__name__}: {exc}). Check the file, or build "
                        "the index with skip_missing=True to leave this site out.") from exc


def exists(head: str) -> bool:
    parts = split_scene(head)
    return bool(parts) and os.path.exists(parts[0])
