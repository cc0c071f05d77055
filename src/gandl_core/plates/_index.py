"""build_index: any supported plate layout -> one validated table, one row per site.

Columns: the ``Metadata_*`` names of docs/architecture.md first (Plate, Well, Site, then the rest),
then ``Path_<Channel>`` per channel in channel order (absolute POSIX paths; ``"<file>::<k>"`` for
frame k of a multichannel TIFF). Rows are sorted by plate, well, site, so the same plate stored in
any layout gives the same index.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..progress import Progress, ProgressGenerator, run_to_end
from ._images import PATH_PREFIX, plane_shape, read_site, split_stack_path
from ._images import exists as file_exists
from ._sources import (detect, read_loaddata, read_parquet_index, read_rxrx, read_tiff_folder,
                       sequence_of)

KEY = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
_FIRST = KEY + ["Metadata_Experiment", "Metadata_CellType", "Metadata_Condition", "Metadata_Treatment",
                "Metadata_Concentration", "Metadata_Role", "Metadata_SiteId", "Metadata_WellId"]
_STR_COLS = ["Metadata_Plate", "Metadata_Well", "Metadata_Experiment", "Metadata_CellType",
             "Metadata_Condition", "Metadata_Treatment", "Metadata_Role", "Metadata_SiteId", "Metadata_WellId"]
# disease_condition values that make an untreated well a healthy-like control (GAN-DL's C+):
# mock-infected and UV-inactivated virus. Active virus, untreated, is the C- (infected) control.
POSITIVE_CONDITIONS = {"mock", "uv inactivated sars-cov-2"}
NEGATIVE_CONDITIONS = {"active sars-cov-2"}
DECODE_SAMPLE = 8  # sites fully decoded during validation (headers are checked for every site)
PROGRESS_EVERY = 256  # sites between progress reports


def channel_columns(index: pd.DataFrame) -> list[str]:
    """The ``Path_<Channel>`` columns of an index, in channel order."""
    return [c for c in index.columns if str(c).startswith(PATH_PREFIX)]


def channel_names(index: pd.DataFrame) -> list[str]:
    """Channel names of an index (``Path_DNA`` -> ``DNA``), in channel order."""
    return [c[len(PATH_PREFIX):] for c in channel_columns(index)]


def select_channels(index: pd.DataFrame, names: Sequence[str] | Mapping[str, str] | str) -> pd.DataFrame:
    """Keep, reorder or rename channels by name.

    Parameters
    ----------
    index
        A site index.
    names
        Channel names to keep, in the wanted order (a list, or ``"DNA,ER"``); or a mapping
        ``{existing: new}`` that keeps and renames those channels in the mapping's order. Matching
        is exact, then case-insensitive.

    Returns
    -------
    pandas.DataFrame
        A new index with the Metadata columns unchanged and the chosen ``Path_`` columns.

    Raises
    ------
    DataError
        If a name is not a channel of the index (the message lists the available names), or a
        name is given twice.
    """
    have = channel_names(index)
    if isinstance(names, Mapping):
        pairs = [(str(k), str(v)) for k, v in names.items()]
    else:
        pairs = [(n, None) for n in sequence_of(names) or []]
    if not pairs:
        raise DataError(f"no channels selected; available channels: {have}.")
    lower = {h.lower(): h for h in have}
    out = index[[c for c in index.columns if not str(c).startswith(PATH_PREFIX)]].copy()
    for want, new in pairs:
        src = want if want in have else lower.get(want.lower())
        if src is None:
            raise DataError(f"channel {want!r} is not in this plate; available channels: {have}. "
                            "Pick names from that list (CLI: --channels A,B,...), or first rename the "
                            "source's channels with names= (CLI: --names A,B,...).")
        col = PATH_PREFIX + (new or src)
        if col in out.columns:
            raise DataError(f"channel {new or src!r} is selected twice; give each channel once.")
        out[col] = index[PATH_PREFIX + src].values
    return out


def _rename(paths: pd.DataFrame, names: Sequence[str] | str | None, where: str) -> pd.DataFrame:
    names = sequence_of(names)
    if names is None:
        return paths
    if len(names) != paths.shape[1] or len(set(names)) != len(names):
        from ..errors import ConfigError

        raise ConfigError(f"names={names} must give {paths.shape[1]} distinct names, one per channel of "
                        f"{where} (found channels {[c[len(PATH_PREFIX):] for c in paths.columns]}).")
    return paths.set_axis([PATH_PREFIX + n for n in names], axis=1)


def standardize_metadata(meta: pd.DataFrame, origin: Sequence[str] | None = None) -> pd.DataFrame:
    """Types and derived columns: strings for ids, int site, float concentration, empty-string
    treatment and concentration 0.0 for untreated, numbers for other columns that hold only numbers
    (a dose index read from a CSV as text), and ``Metadata_Role`` from condition/treatment when absent.

    Raises
    ------
    DataError
        A concentration that is text but not a number ("1,5", "ten uM"), naming the rows
        (``origin``: where each row came from) and the values.
    """
    meta = meta.copy()
    for c in _STR_COLS:
        if c in meta.columns:
            meta[c] = meta[c].fillna("").astype(str).str.strip()
    meta["Metadata_Site"] = meta["Metadata_Site"].astype("int64")
    if "Metadata_Concentration" in meta.columns:
        meta["Metadata_Concentration"] = _concentration(meta["Metadata_Concentration"], origin)
    for c in meta.columns:
        if c not in _STR_COLS and c not in ("Metadata_Site", "Metadata_Concentration"):
            meta[c] = _numeric_if_all(meta[c])
    if "Metadata_Treatment" in meta.columns:
        meta["Metadata_Treatment"] = meta["Metadata_Treatment"].replace({"nan": "", "None": ""})
        if "Metadata_Concentration" in meta.columns:
            # Untreated wells get dose 0, not NaN: copairs refuses null metadata it groups by and
            # pandas drops NaN keys from groups. A treated well with an unknown dose stays NaN.
            untreated = (meta["Metadata_Treatment"] == "").to_numpy() & meta["Metadata_Concentration"].isna().to_numpy()
            meta.loc[untreated, "Metadata_Concentration"] = 0.0
    if "Metadata_Role" not in meta.columns and ("Metadata_Condition" in meta.columns
                                                or "Metadata_Treatment" in meta.columns):
        cond = meta.get("Metadata_Condition", pd.Series([""] * len(meta))).str.lower().to_numpy()
        treat = meta.get("Metadata_Treatment", pd.Series([""] * len(meta))).to_numpy()
        role = np.where(treat != "", "treated",
                        np.where(np.isin(cond, list(POSITIVE_CONDITIONS)), "positive",
                                 np.where(np.isin(cond, list(NEGATIVE_CONDITIONS)), "negative", "other")))
        meta["Metadata_Role"] = role.astype(object)
    order = [c for c in _FIRST if c in meta.columns] + sorted(c for c in meta.columns if c not in _FIRST)
    return meta[order]


_MISSING_TEXT = {"", "nan", "na", "n/a", "none", "null"}


def _concentration(col: pd.Series, origin: Sequence[str] | None) -> pd.Series:
    """Concentrations as float64; empty / NA text is NaN (untreated); other text is an error."""
    if pd.api.types.is_numeric_dtype(col):
        return col.astype("float64")
    text = col.astype(object).where(col.notna(), "").astype(str).str.strip()
    values = pd.to_numeric(text.where(~text.str.lower().isin(_MISSING_TEXT), np.nan), errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy() & ~text.str.lower().isin(_MISSING_TEXT).to_numpy())
    if len(bad):
        where = [f"{origin[i] if origin is not None else f'row {i}'}: {text.iloc[i]!r}" for i in bad[:5]]
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DataError(f"Metadata_Concentration is not a number in {len(bad)} row(s): {'; '.join(where)}{more}. "
                        "Write doses as plain numbers in uM with a decimal point (1.5, not '1,5' or 'ten uM'); "
                        "leave the cell empty for untreated wells.")
    return values.astype("float64")


def _numeric_if_all(col: pd.Series) -> pd.Series:
    """A text column whose every non-empty value is a number, as numbers (int64 when all whole and
    none missing, else float64); other columns unchanged. Codes with leading zeros ('007') stay text."""
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col) or not len(col):
        return col
    if not (pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col)):
        return col
    if not all(isinstance(v, str) or v is None or (isinstance(v, float) and np.isnan(v)) for v in col):
        return col
    text = col.astype(object).where(col.notna(), "").astype(str).str.strip()
    present = text != ""
    if not present.any() or text[present].str.match(r"^[+-]?0\d").any():
        return col
    values = pd.to_numeric(text.where(present, np.nan), errors="coerce")
    if values[present].isna().any():
        return col
    if present.all() and np.all(np.mod(values, 1) == 0) and text.str.fullmatch(r"[+-]?\d+").all():
        return values.astype("int64")
    return values.astype("float64")


def build_index(source: str | os.PathLike | pd.DataFrame, *, channels: Sequence[str] | str | None = None,
                skip_missing: bool = False, validate: bool = True, pattern: str | None = None,
                names: Sequence[str] | str | None = None, level: int = 0) -> pd.DataFrame:
    """Index a plate: :func:`build_index_iter` run to its end (same parameters, returns, raises)."""
    return run_to_end(build_index_iter(source, channels=channels, skip_missing=skip_missing,
                                       validate=validate, pattern=pattern, names=names, level=level))


def build_index_iter(source: str | os.PathLike | pd.DataFrame, *, channels: Sequence[str] | str | None = None,
                     skip_missing: bool = False, validate: bool = True, pattern: str | None = None,
                     names: Sequence[str] | str | None = None, level: int = 0) -> ProgressGenerator[pd.DataFrame]:
    """Index a plate: one row per site with ``Metadata_*`` and ``Path_<Channel>`` columns.

    Parameters
    ----------
    source
        One of:

        * an RxRx-layout folder: ``metadata.csv`` (site_id, well_id, cell_type, experiment, plate,
          well, site, disease_condition, treatment, treatment_conc; other columns pass through as
          ``Metadata_<CamelCase>``) and ``images/<experiment>/Plate<plate>/<well>_s<site>_w<k>.png``.
          5 channels are named DNA, ER, Actin, RNA, Golgi (RxRx19a), 6 channels DNA, ER, Actin, RNA,
          Mito, Golgi (RxRx1), other counts w1..wN. Metadata_Plate is ``<experiment>_Plate<plate>``
          (plate numbers repeat across experiments); the number is kept in Metadata_PlateNumber.
          Metadata_Role: untreated Mock / UV Inactivated SARS-CoV-2 = ``positive`` (C+), untreated
          Active SARS-CoV-2 = ``negative`` (C-), any treatment = ``treated``, else ``other``.
        * a CellProfiler LoadData CSV (``FileName_<Ch>``/``PathName_<Ch>``; PathName absolute or
          relative to the CSV's folder; ``Metadata_*`` columns pass through), or a folder holding
          one named ``load_data.csv``.
        * a folder of TIFFs: one multichannel stack per site named ``<plate>_<well>_s<site>.tif``
          or ``<well>_s<site>.tif`` (plate = folder name), channel axis first or last; or one file
          per channel (``<plate>_<well>_s<site>_w<k>.tif``, ``..._site<s>_Ch<k>.tif``,
          ``Channel <k>-<n>-<row>-<col>-<field>.tif``); or any naming via ``pattern``. An optional
          ``metadata.csv`` beside the images is joined on plate/well/site.
        * an OME-Zarr HCS plate (NGFF 0.4 or 0.5; ``plate.ome.zarr``), or a folder of such plates:
          wells -> fields as sites (site = field + 1), channel names from ``omero``, the channel
          axis from ``multiscales.axes`` (see :mod:`._omezarr`).
        * with the ``formats`` extra (bioio): an ``.nd2``/``.czi`` file or a folder of them, or an
          ImageXpress acquisition folder; each scene is a site (see :mod:`._bioio`).
        * an index ``.parquet`` written earlier, or an index DataFrame (validated again unless
          ``validate=False``).
    channels
        Channel names to keep, in this order (e.g. 5 of the 6 RxRx1 stains); see
        :func:`select_channels`.
    skip_missing
        Leave out sites with a missing, unreadable or odd-sized image instead of raising. The
        skipped sites are listed in a warning and in ``df.attrs["skipped"]`` (list of dicts with
        plate, well, site, file and reason): nothing is dropped silently.
    validate
        Check every file's header (exists, complete, same channel count and size everywhere) and
        fully decode a few sites. ``False`` skips all file checks (fast, for trusted indexes).
    pattern
        TIFF folders only: a regular expression matched against file names, with named groups
        ``well`` (or ``row`` and ``column``), optional ``site``, ``plate`` and ``channel``.
    names
        New channel names, one per channel in source order (e.g. ``["NFkB", "DNA"]`` for BBBC014's
        w1, w2), applied before ``channels``.
    level
        OME-Zarr only: the pyramid level whose arrays the index points at (0 = full resolution,
        1 = the first downsampled level, ...).

    Yields
    ------
    Progress
        ``stage="index"``, ``unit="sites"``: sites checked so far (every 256 sites).

    Returns
    -------
    pandas.DataFrame
        The index, sorted by plate, well and site (the generator's return value).

    Raises
    ------
    DataError
        Missing or unreadable files, metadata rows without images, duplicate sites, differing
        channel counts or image sizes, empty folders; the message names the file or CSV line.
    ConfigError
        An invalid ``pattern``, or ``names`` of the wrong length.
    """
    src, meta, paths, origin, orphans = _read_source(source, pattern, level)
    index = _assemble(meta, _rename(paths, names, str(src)), origin)
    if channels is not None:
        index = select_channels(index, channels)
    skipped: list[dict] = []
    if validate:
        index, skipped = yield from _validate(index, skip_missing)
    if orphans:
        warnings.warn(f"{src}: {len(orphans)} image site(s) have no metadata.csv row and are not indexed, "
                      f"e.g. {orphans[:3]}. Add rows for them if they belong to the plate.", stacklevel=2)
    index = index.drop(columns=[c for c in ("_origin", "_extra") if c in index.columns])
    if index.empty:
        raise DataError(f"{src}: no usable sites left (skipped {len(skipped)}: "
                        f"{[s['reason'] for s in skipped[:3]]}).")
    index.attrs["skipped"] = skipped
    if skipped:
        listing = "; ".join(f"{s['plate']}/{s['well']}/s{s['site']}: {s['reason']}" for s in skipped[:20])
        more = f" (and {len(skipped) - 20} more)" if len(skipped) > 20 else ""
        warnings.warn(f"{src}: skipped {len(skipped)} of {len(index) + len(skipped)} sites: {listing}{more}",
                      stacklevel=2)
    return index


def _read_source(source: str | os.PathLike | pd.DataFrame, pattern: str | None,
                 level: int) -> tuple[Path, pd.DataFrame, pd.DataFrame, list, list[dict]]:
    """Read any supported source: ``(src, meta, paths, origin, orphans)``; ``orphans`` are image
    sites without a metadata row (RxRx folders only)."""
    if isinstance(source, pd.DataFrame):  # an index in memory: check it like a .parquet
        from ._sources import split_index_frame

        src, kind = Path("<index DataFrame>"), "frame"
        meta, paths, origin = split_index_frame(source, str(src), None)
    else:
        src = Path(source).expanduser()
        kind = detect(src)
    orphans: list[dict] = []
    if pattern and kind != "tiff":
        from ..errors import ConfigError

        raise ConfigError(f"pattern= applies to folders of TIFFs only; {src} is a {kind} source.")
    if level and kind != "omezarr":
        from ..errors import ConfigError

        raise ConfigError(f"level={level} applies to OME-Zarr plates only; {src} is a {kind} source.")
    if kind == "loaddata" and src.is_dir():
        src = src / "load_data.csv"
    if kind == "rxrx":
        meta, paths, origin, orphans = read_rxrx(src)
    elif kind == "loaddata":
        meta, paths, origin = read_loaddata(src)
    elif kind == "parquet":
        meta, paths, origin = read_parquet_index(src)
    elif kind == "frame":
        pass
    elif kind == "omezarr":
        from ._omezarr import read_omezarr

        meta, paths, origin = read_omezarr(src, level)
    elif kind == "bioio":
        from ._bioio import read_bioio

        meta, paths, origin = read_bioio(src)
    else:
        meta, paths, origin = read_tiff_folder(src, pattern)
    return src, meta, paths, origin, orphans


def _assemble(meta: pd.DataFrame, paths: pd.DataFrame, origin: list) -> pd.DataFrame:
    """Standard metadata beside the path columns, one row per site (duplicates raise), sorted by
    plate, well and site; ``_origin`` (and ``_extra``, stray channel files) kept for validation."""
    extra = meta.pop("_extra").tolist() if "_extra" in meta.columns else None  # stray channel files per site

    meta = standardize_metadata(meta, origin)
    dup = meta.duplicated(KEY, keep=False).to_numpy()
    if dup.any():
        i, *rest = np.flatnonzero(dup)
        j = next(k for k in rest if (meta.loc[k, KEY] == meta.loc[i, KEY]).all())
        p, w, s = meta.loc[i, KEY]
        raise DataError(f"duplicate site plate={p} well={w} site={s}: {origin[i]} and {origin[j]}. "
                        "Keep one row per site (or give the sites different site numbers).")
    index = pd.concat([meta.reset_index(drop=True), paths.reset_index(drop=True)], axis=1)
    index["_origin"] = origin
    if extra is not None:
        index["_extra"] = extra
    return index.sort_values(KEY, kind="stable").reset_index(drop=True)


def _validate(index: pd.DataFrame, skip: bool) -> ProgressGenerator[tuple[pd.DataFrame, list[dict]]]:
    """Header-check every plane, decode a sample; yield progress; return (kept rows, skipped sites)."""
    cols = channel_columns(index)
    bad: dict[int, tuple[str, str]] = {}  # row -> (file, reason)
    shapes: dict[int, tuple[int, int]] = {}
    depth: dict[int, tuple[int, ...]] = {}  # channels held by each file of a site
    header_cache: dict[str, tuple] = {}  # path (maybe "file::k") -> plane shape
    file_headers: dict[str, tuple] = {}  # file -> header, shared by the frames of a stack

    def fail(i: int, file: str, reason: str) -> None:
        reason = reason.rstrip(". ")
        if not skip:
            raise DataError(f"{index.at[i, '_origin']}: {reason}. Fix or remove the file, or pass "
                            "skip_missing=True (CLI --skip-missing) to leave this site out.")
        bad.setdefault(i, (file, reason))

    extras = [e if isinstance(e, str) else "" for e in index["_extra"]] if "_extra" in index.columns else [""] * len(index)

    n_sites = len(index)
    all_paths = index[cols].astype(str).values.tolist()  # plain lists: pandas .at per cell is slow
    yield Progress(0, n_sites, unit="sites", stage="index", message="checking image headers")
    for i in range(n_sites):
        if i and i % PROGRESS_EVERY == 0:
            yield Progress(i, n_sites, unit="sites", stage="index", metrics={"bad": len(bad)})
        files = all_paths[i]
        if extras[i]:
            fail(i, extras[i].split("|")[0], f"extra channel file(s) {extras[i].replace('|', ', ')}: the plate's "
                 f"other sites have only channels {[c[len(PATH_PREFIX):] for c in cols]}. Remove or move the "
                 "stray file(s) (channels are never renamed to fit them)")
            continue
        exists = [file_exists(f) for f in files]
        if not any(exists):
            fail(i, files[0], f"no image files for this site (metadata row without images; first "
                              f"expected file: {split_stack_path(files[0])[0]})")
            continue
        site_shape = None
        for f, ok, col in zip(files, exists, cols):
            if not ok:
                fail(i, f, f"missing file for channel {col[len(PATH_PREFIX):]}: {split_stack_path(f)[0]}")
                break
            try:
                if f not in header_cache:
                    header_cache[f] = plane_shape(f, file_headers)
                hw = header_cache[f][0]
            except DataError as exc:
                fail(i, f, str(exc))
                break
            if site_shape is None:
                site_shape = hw
            elif hw != site_shape:
                fail(i, f, f"{f} is {hw[0]}x{hw[1]} but the site's other channels are "
                           f"{site_shape[0]}x{site_shape[1]}")
                break
        else:
            shapes[i] = site_shape
            depth[i] = tuple(header_cache[f][2] for f in files)
    # Same number of channels in every file (a 6-channel stack among 5-channel ones is an error,
    # even though its first 5 frames could be read).
    if depth:
        common_depth, _ = Counter(depth.values()).most_common(1)[0]
        for i, d in depth.items():
            if d != common_depth:
                k = next(k for k in range(len(d)) if d[k] != common_depth[k])
                f = split_stack_path(str(index.at[i, cols[k]]))[0]
                fail(i, f, f"{f} holds {d[k]} channel(s) but the plate's other files hold {common_depth[k]}")
                shapes.pop(i, None)
    # One pixel type per channel: an 8-bit file among 16-bit ones would be scaled as if dim.
    dtypes = _check_dtypes(index, cols, shapes, header_cache, all_paths, fail)
    # One image size for the whole plate: the most common one; others are errors.
    if shapes:
        common, _ = Counter(shapes.values()).most_common(1)[0]
        for i, hw in shapes.items():
            if hw != common:
                fail(i, str(index.at[i, cols[0]]), f"image size {hw[0]}x{hw[1]} differs from the plate's "
                                                   f"{common[0]}x{common[1]} ({index.at[i, cols[0]]})")
    # Decode a spread-out sample fully (catches corrupt data that headers cannot show), and every
    # floating-point site (only decoding shows NaN or inf values).
    good = [i for i in range(len(index)) if i not in bad]
    if good:
        picks = {good[int(k)] for k in np.linspace(0, len(good) - 1, min(DECODE_SAMPLE, len(good)))}
        if any(str(d).startswith("float") for d in dtypes.values()):
            picks |= {i for i in good if i in shapes and any(
                str(header_cache[f][1]).startswith("float") for f in all_paths[i])}
        for i in sorted(picks):
            try:
                img = read_site(index.iloc[i])
                if img.shape[1:] != shapes[i]:
                    raise DataError(f"decoded size {img.shape[1:]} differs from its header {shapes[i]}")
            except DataError as exc:
                fail(i, str(index.at[i, cols[0]]), str(exc))
    skipped = [{"plate": index.at[i, "Metadata_Plate"], "well": index.at[i, "Metadata_Well"],
                "site": int(index.at[i, "Metadata_Site"]), "file": f, "reason": r, "origin": index.at[i, "_origin"]}
               for i, (f, r) in sorted(bad.items())]
    keep = index.drop(index=list(bad)).reset_index(drop=True)
    keep.attrs["dtypes"] = dtypes
    yield Progress(n_sites, n_sites, unit="sites", stage="index", metrics={"bad": len(bad)})
    return keep, skipped


def _check_dtypes(index: pd.DataFrame, cols: list[str], shapes: dict, header_cache: dict, all_paths: list,
                  fail) -> dict[str, str]:
    """The pixel type of each channel (the most common); sites whose file differs are failed, named.

    Returns ``{channel: dtype}`` as the headers say (e.g. ``{"DNA": "uint16"}``).
    """
    dtypes: dict[str, str] = {}
    for k, col in enumerate(cols):
        seen = Counter(str(header_cache[all_paths[i][k]][1]) for i in shapes)
        if not seen:
            continue
        common = seen.most_common(1)[0][0]
        dtypes[col[len(PATH_PREFIX):]] = common
        if len(seen) == 1:
            continue
        for i in list(shapes):
            f = all_paths[i][k]
            d = str(header_cache[f][1])
            if d != common:
                fail(i, split_stack_path(f)[0], f"{split_stack_path(f)[0]} stores {d} pixels but the plate's other "
                     f"{col[len(PATH_PREFIX):]} images are {common} (mixed bit depths or pixel types would "
                     f"be scaled alike and look near-black or saturated); convert it to {common}")
                shapes.pop(i, None)
    return dtypes
