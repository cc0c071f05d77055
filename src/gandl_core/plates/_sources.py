"""Readers that turn each plate layout on disk into raw index rows (metadata + one path per channel).

Each reader returns ``(meta, paths, origin)``: ``meta`` a DataFrame of ``Metadata_*`` columns,
``paths`` a DataFrame of ``Path_<Channel>`` columns (same rows), and ``origin`` a list with, per
row, where the row came from (``"metadata.csv line 7"``) so errors can name it. Validation of the
files happens later, in one place (:mod:`._validate`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ._images import PATH_PREFIX, STACK_SEP, channel_axis, image_info
from .wells import normalize_well as _normalize_well

# RxRx channel maps: w1..wN -> stain name.
# RxRx19a (5 stains; rxrx-datasets rxrx19a/README and Heiser et al. 2020): Hoechst, ConA,
# Phalloidin, SYTO14, WGA. RxRx1 (6 stains; rxrx1-utils channel descriptions, Sypetkowski et al.
# 2023): Hoechst, ConA, Phalloidin, SYTO14, MitoTracker, WGA.
RXRX_CHANNELS: dict[int, list[str]] = {
    5: ["DNA", "ER", "Actin", "RNA", "Golgi"],
    6: ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"],
}

# RxRx metadata.csv column -> Metadata name (contract table in docs/architecture.md).
RXRX_COLUMNS = {
    "site_id": "Metadata_SiteId",
    "well_id": "Metadata_WellId",
    "cell_type": "Metadata_CellType",
    "experiment": "Metadata_Experiment",
    "plate": "Metadata_PlateNumber",
    "well": "Metadata_Well",
    "site": "Metadata_Site",
    "disease_condition": "Metadata_Condition",
    "treatment": "Metadata_Treatment",
    "treatment_conc": "Metadata_Concentration",
}

_RXRX_FILE = re.compile(r"^(?P<well>[A-Za-z]{1,2}\d{1,3})_s(?P<site>\d+)_w(?P<channel>\d+)\.png$", re.I)

# File-name patterns tried, in order, on a folder of TIFFs when no pattern= is given.
# A pattern without a 'channel' group means one multichannel stack per site.
DEFAULT_PATTERNS = [
    # <plate>_<well>_s<site>.tif  or  <well>_s<site>.tif : one stack per site
    r"^(?:(?P<plate>.+)_)?(?P<well>[A-Za-z]{1,2}\d{1,3})_s(?:ite)?(?P<site>\d+)(?:\.ome)?\.tiff?$",
    # <plate>_<well>_s<site>_w<k>.tif / ..._site<site>_Ch<k>.tif : one file per channel
    r"^(?:(?P<plate>.+)_)?(?P<well>[A-Za-z]{1,2}\d{1,3})_s(?:ite)?(?P<site>\d+)_(?:w|ch|c)(?P<channel>\d+)(?:\.ome)?\.tiff?$",
    # CellProfiler example style "Channel 1-01-A-01-00.tif" (BBBC014): channel, image, row, column and
    # an optional 0-based field ("Channel1-01-A-01.tif": one field per well)
    r"^Channel[ _-]?(?P<channel>\d+)-\d+-(?P<row>[A-Za-z]{1,2})-(?P<column>\d{1,3})(?:-(?P<site0>\d+))?\.tiff?$",
]


def majority_channels(per_site) -> list:
    """The channel labels most sites have (ties: the larger set), sorted. ``per_site`` yields one
    mapping (or set) of channel labels per site."""
    from collections import Counter

    counts = Counter(frozenset(chans) for chans in per_site)
    if not counts:
        return []
    best = max(counts.items(), key=lambda kv: (kv[1], len(kv[0])))[0]
    return sorted(best, key=_channel_order)


def _channel_order(c):
    text = str(c)
    return (not text.isdigit(), int(text) if text.isdigit() else 0, text)


def read_csv_text(csv: Path) -> pd.DataFrame:
    """Read a CSV/TSV as text: BOM of Excel exports dropped, column names stripped, cells stripped.

    Raises DataError naming the file when it cannot be parsed.
    """
    try:
        raw = pd.read_csv(csv, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                          sep="\t" if csv.suffix.lower() == ".tsv" else ",")
    except Exception as exc:  # noqa: BLE001 - any parser error becomes a named DataError
        raise DataError(f"{csv}: cannot parse this CSV ({exc}). Save it as comma-separated UTF-8 text.") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw.apply(lambda col: col.str.strip())


def camel(name: str) -> str:
    """``treatment_conc`` -> ``TreatmentConc``; ``SMILES`` stays ``SMILES``."""
    parts = [p for p in re.split(r"[_\s\-]+", str(name)) if p]
    return "".join(p[0].upper() + p[1:] for p in parts)


def normalize_well(value: object, where: str) -> str:
    """``b2``, ``B2``, ``B-02`` -> ``B02`` (row letters + at least 2-digit column; see :mod:`.wells`)."""
    return _normalize_well(value, where=where)


def line_of(i: int, csv: Path) -> str:
    """Human name of data row ``i`` (0-based) of a CSV: 'file line N' with the header = line 1."""
    return f"{csv} line {i + 2} (header = line 1)"


# --------------------------------------------------------------------------------------------
# RxRx folder
# --------------------------------------------------------------------------------------------


def read_rxrx(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[dict]]:
    """RxRx layout: ``metadata.csv`` + ``images/<experiment>/Plate<plate>/<well>_s<site>_w<k>.png``.

    Returns meta, paths, origin and ``orphans`` (image sites with no metadata row, reported later).
    """
    # Absolute but not symlink-resolved: paths stay under the folder the user gave (datasets are
    # often symlinked into place).
    root = Path(_abspath(root))
    csv = root / "metadata.csv"
    raw = read_csv_text(csv)
    need = ["experiment", "plate", "well", "site"]
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {missing}; an RxRx metadata.csv needs {need} "
                        f"(found {list(raw.columns)[:12]}).")
    if raw.empty:
        raise DataError(f"{csv}: has a header but no rows. Add one row per site.")
    origin = [line_of(i, csv) for i in range(len(raw))]

    # Images on disk, grouped by (experiment, plate, well, site) -> {k: path}.
    found: dict[tuple[str, str, str, int], dict[int, str]] = {}
    images = root / "images"
    for exp_dir in sorted(p for p in images.iterdir() if p.is_dir()) if images.is_dir() else []:
        for plate_dir in sorted(p for p in exp_dir.iterdir() if p.is_dir()):
            pm = re.match(r"^Plate(.+)$", plate_dir.name, re.I)
            if not pm:
                continue
            for f in plate_dir.iterdir():
                m = _RXRX_FILE.match(f.name)
                if m:
                    key = (exp_dir.name, pm.group(1), normalize_well(m["well"], str(f)), int(m["site"]))
                    found.setdefault(key, {})[int(m["channel"])] = f.as_posix()
    # The plate's channels are those most sites have: one stray extra file (B03_s1_w6.png) must not
    # add a channel to every site (and rename the others, 5 -> 6 stains), it is reported for its site.
    n_channels = max(majority_channels(found.values()), default=0)
    if n_channels == 0:
        raise DataError(f"{images}: no images named <well>_s<site>_w<k>.png under "
                        "images/<experiment>/Plate<plate>/. Check the folder layout.")
    names = RXRX_CHANNELS.get(n_channels, [f"w{k}" for k in range(1, n_channels + 1)])

    meta = pd.DataFrame(index=range(len(raw)))
    for col in raw.columns:
        meta[RXRX_COLUMNS.get(col, col if col.startswith("Metadata_") else "Metadata_" + camel(col))] = raw[col].values
    meta["Metadata_Well"] = [normalize_well(w, o) for w, o in zip(raw["well"], origin)]
    sites = []
    for s, o in zip(raw["site"], origin):
        if not str(s).strip().isdigit():
            raise DataError(f"{o}: site {s!r} is not a whole number. Fix the 'site' column.")
        sites.append(int(s))
    meta["Metadata_Site"] = sites
    # Plate numbers repeat across experiments, so the plate id carries the experiment (unique).
    meta["Metadata_Plate"] = [f"{e}_Plate{p}" if e else f"Plate{p}" for e, p in zip(raw["experiment"], raw["plate"])]

    rows = []
    keys = set()
    extra = []
    for e, p, w, s in zip(raw["experiment"], raw["plate"], meta["Metadata_Well"], sites):
        key = (e, str(p), w, s)
        keys.add(key)
        got = found.get(key, {})
        base = images / e / f"Plate{p}"
        rows.append([got.get(k, (base / f"{w}_s{s}_w{k}.png").as_posix()) for k in range(1, n_channels + 1)])
        extra.append("|".join(got[k] for k in sorted(got) if not 1 <= k <= n_channels))
    paths = pd.DataFrame(rows, columns=[PATH_PREFIX + n for n in names])
    meta["_extra"] = extra
    orphans = [dict(zip(("experiment", "plate", "well", "site"), k)) for k in sorted(found) if k not in keys]
    # RxRx metadata.csv lists every experiment of the release; people download a few plates. Rows
    # of plates with no image folder at all are left out with a warning (a missing file inside a
    # plate folder that exists is an error, raised by validation).
    on_disk = np.array([(images / e / f"Plate{p}").is_dir() for e, p in zip(raw["experiment"], raw["plate"])])
    if not on_disk.all():
        absent = sorted({f"{e}/Plate{p}" for e, p, ok in zip(raw["experiment"], raw["plate"], on_disk) if not ok})
        import warnings

        warnings.warn(f"{csv}: {int((~on_disk).sum())} rows belong to {len(absent)} plate(s) with no image "
                      f"folder under {images} ({', '.join(absent[:5])}{', ...' if len(absent) > 5 else ''}); "
                      "they are not indexed. Download those plates to include them.", stacklevel=3)
        keep = np.flatnonzero(on_disk)
        meta = meta.iloc[keep].reset_index(drop=True)
        paths = paths.iloc[keep].reset_index(drop=True)
        origin = [origin[i] for i in keep]
    return meta, paths, origin, orphans


# --------------------------------------------------------------------------------------------
# CellProfiler LoadData CSV
# --------------------------------------------------------------------------------------------

_PLATE_ALIASES = ["Metadata_Plate", "Metadata_Barcode", "Metadata_PlateID", "Metadata_Plate_ID"]
_SITE_ALIASES = ["Metadata_Site", "Metadata_Field", "Metadata_FieldID", "Metadata_Fields"]


def read_loaddata(csv: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """A CellProfiler LoadData CSV: ``FileName_<Ch>`` + ``PathName_<Ch>`` per channel + ``Metadata_*``.

    ``PathName`` may be absolute or relative to the CSV's folder (``"."`` = that folder).
    Plate: ``Metadata_Plate`` (or ``Metadata_Barcode``); well: ``Metadata_Well`` (or
    ``Metadata_Row`` + ``Metadata_Col``/``Metadata_Column``); site: ``Metadata_Site`` (or
    ``Metadata_Field``), or 1 when every well has a single row.
    """
    raw = read_csv_text(csv)
    if raw.empty:
        raise DataError(f"{csv}: has a header but no rows. Add one row per site.")
    names = [c[len("FileName_"):] for c in raw.columns if c.startswith("FileName_")]
    # CellProfiler 4 may write URL_<Ch> (file:// URLs) instead of FileName_/PathName_.
    url_names = [c[len("URL_"):] for c in raw.columns if c.startswith("URL_") and c[4:] not in names]
    names += url_names
    if not names:
        raise DataError(f"{csv}: no FileName_<Channel> columns, so this is not a LoadData CSV "
                        f"(columns: {list(raw.columns)[:12]}). Add FileName_<Channel> and PathName_<Channel>.")
    origin = [line_of(i, csv) for i in range(len(raw))]
    meta = raw[[c for c in raw.columns if c.startswith("Metadata_")]].copy()

    plate = next((c for c in _PLATE_ALIASES if c in raw.columns), None)
    if plate is None:
        raise DataError(f"{csv}: no Metadata_Plate column (nor Metadata_Barcode). Add a Metadata_Plate "
                        "column naming each row's plate.")
    meta["Metadata_Plate"] = raw[plate]
    if "Metadata_Well" in raw.columns:
        meta["Metadata_Well"] = [normalize_well(w, f"{o}, column Metadata_Well") for w, o in zip(raw["Metadata_Well"], origin)]
    else:
        col = next((c for c in ("Metadata_Col", "Metadata_Column") if c in raw.columns), None)
        if "Metadata_Row" not in raw.columns or col is None:
            raise DataError(f"{csv}: no Metadata_Well column (nor Metadata_Row + Metadata_Col). Add "
                            "Metadata_Well with names like 'B02'.")
        meta["Metadata_Well"] = [normalize_well(f"{r}{c}", o) for r, c, o in zip(raw["Metadata_Row"], raw[col], origin)]
    site = next((c for c in _SITE_ALIASES if c in raw.columns), None)
    if site is not None:
        vals = []
        for s, o in zip(raw[site], origin):
            if not str(s).strip().isdigit():
                raise DataError(f"{o}, column {site}: {s!r} is not a whole number.")
            vals.append(int(s))
        meta["Metadata_Site"] = vals
    else:
        dup = meta.duplicated(["Metadata_Plate", "Metadata_Well"], keep=False)
        if dup.any():
            i, j = (int(k) for k in np.flatnonzero(dup.to_numpy())[:2])
            raise DataError(f"{csv}: no Metadata_Site column, and {origin[i]} and line {j + 2} share plate "
                            f"{meta.at[i, 'Metadata_Plate']} well {meta.at[i, 'Metadata_Well']}. Add a "
                            "Metadata_Site column (1, 2, ...) numbering the fields of a well.")
        meta["Metadata_Site"] = 1

    rows = []
    for i in range(len(raw)):
        row = []
        for n in names:
            if n in url_names:
                row.append(Path(_abspath(_url_path(raw.at[i, f"URL_{n}"], f"{origin[i]}, column URL_{n}", csv))).as_posix())
                continue
            fname = raw.at[i, f"FileName_{n}"]
            if not fname:
                raise DataError(f"{origin[i]}: column FileName_{n} is empty. Give the image file name.")
            folder = raw.at[i, f"PathName_{n}"] if f"PathName_{n}" in raw.columns else ""
            p = Path(folder or ".") / fname
            if not p.is_absolute():
                p = csv.parent / p
            row.append(Path(_abspath(p)).as_posix())
        rows.append(row)
    paths = pd.DataFrame(rows, columns=[PATH_PREFIX + n for n in names])
    return meta.reset_index(drop=True), paths, origin


def _url_path(url: str, where: str, csv: Path) -> Path:
    from urllib.parse import unquote, urlparse

    u = urlparse(url)
    if u.scheme not in ("", "file"):
        raise DataError(f"{where}: {url!r} is not a local file URL; download the images and give file:// "
                        "URLs or FileName_/PathName_ columns.")
    p = Path(unquote(u.path))
    return p if p.is_absolute() else csv.parent / p


def _abspath(p: Path) -> str:
    import os

    return os.path.abspath(p)


# --------------------------------------------------------------------------------------------
# Folder of TIFFs (stacks, or one file per channel)
# --------------------------------------------------------------------------------------------


def read_tiff_folder(root: Path, pattern: str | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """A folder of TIFFs, matched on file names (see :data:`DEFAULT_PATTERNS`, or ``pattern``).

    Named groups: ``well`` (or ``row`` + ``column``), optional ``site`` (default 1; or ``site0``
    for a 0-based field number, stored +1), optional
    ``plate`` (default: the folder name), optional ``channel``. Without ``channel`` each file is a
    multichannel stack of one site and the index stores ``"<file>::<k>"``; with it, each file is one
    channel. Channels are named ``w1..wN`` after the channel number (or the group's text when it is
    not a number); stacks whose metadata names their channels (OME-TIFF ``Channel Name``, ImageJ
    ``Labels``) keep those names, and their channel axis is the one the metadata names. An optional ``metadata.csv`` beside the images (RxRx column names or
    ``Metadata_*``) is joined on plate/well/site.
    """
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".tif", ".tiff"))
    if not files:
        if (root / "metadata.csv").is_file():
            raise DataError(f"{root}: has metadata.csv but no images/ folder (RxRx layout: images/<experiment>/"
                            "Plate<plate>/<well>_s<site>_w<k>.png) and no TIFFs. Put the images beside it.")
        raise DataError(f"{root}: no .tif/.tiff files, no metadata.csv + images/ (RxRx layout). Point "
                        "DATA at a plate folder, a LoadData CSV or an index .parquet.")
    candidates = [pattern] if pattern else DEFAULT_PATTERNS
    regex = None
    for pat in candidates:
        try:
            rx = re.compile(pat, re.I)
        except re.error as exc:
            from ..errors import ConfigError

            raise ConfigError(f"pattern={pat!r} is not a valid regular expression ({exc}).") from exc
        if all(rx.match(f.name) for f in files):
            regex = rx
            break
    if regex is None:
        rx = re.compile(candidates[0], re.I) if pattern else None
        bad = next((f for f in files if not (rx or re.compile(DEFAULT_PATTERNS[0], re.I)).match(f.name)), files[0])
        raise DataError(
            f"{bad}: file name does not match {'pattern ' + repr(pattern) if pattern else 'any known pattern'}. "
            "Name stacks '<plate>_<well>_s<site>.tif' (e.g. P1_B02_s1.tif), or pass pattern= (CLI --pattern) "
            "a regular expression with named groups well (or row+column), site, plate and channel "
            r"(e.g. '(?P<well>[A-P]\d+)_f(?P<site>\d+)_c(?P<channel>\d+)\.tif').")
    groups = regex.groupindex
    if "well" not in groups and not ("row" in groups and "column" in groups):
        from ..errors import ConfigError

        raise ConfigError(f"pattern={regex.pattern!r} needs a named group 'well' or both 'row' and 'column'.")
    per_channel = "channel" in groups

    sites: dict[tuple[str, str, int], dict[str, str]] = {}
    first_file: dict[tuple[str, str, int], Path] = {}
    for f in files:
        m = regex.match(f.name)
        gd = m.groupdict()
        well = gd.get("well") or f"{gd.get('row')}{gd.get('column')}"
        # 'site0' = a 0-based field number (BBBC014's "-00"); sites are numbered from 1 in the index.
        site = int(gd["site0"]) + 1 if gd.get("site0") is not None else int(gd.get("site") or 1)
        key = (gd.get("plate") or f.parent.name, normalize_well(well, str(f)), site)
        first_file.setdefault(key, f)
        ch = gd.get("channel") if per_channel else ""
        chans = sites.setdefault(key, {})
        if ch in chans:
            raise DataError(f"{f}: same plate/well/site{'/channel' if per_channel else ''} as {chans[ch]}. "
                            "Remove one, or make pattern= tell them apart.")
        chans[ch] = Path(_abspath(f)).as_posix()

    keys = sorted(sites)
    strays = [""] * len(keys)
    if per_channel:
        # The channels most sites have; a stray extra file is reported for its own site (validation),
        # never turned into a channel every other site lacks.
        labels = majority_channels(sites.values())
        names = [f"w{int(c)}" if c.isdigit() else c for c in labels]
        rows = [[sites[k].get(c, _missing_name(first_file[k], c)) for c in labels] for k in keys]
        strays = ["|".join(sites[k][c] for c in sorted(sites[k], key=_channel_order) if c not in labels) for k in keys]
    else:
        n, named = _stack_channels([first_file[k] for k in keys])
        names = named or [f"w{k}" for k in range(1, n + 1)]
        rows = [[f"{sites[k]['']}{STACK_SEP}{c}" for c in range(n)] for k in keys]
    meta = pd.DataFrame({"Metadata_Plate": [k[0] for k in keys], "Metadata_Well": [k[1] for k in keys],
                         "Metadata_Site": [k[2] for k in keys], "_extra": strays})
    origin = [str(first_file[k]) for k in keys]
    extra = root / "metadata.csv"
    if extra.is_file():
        meta, lonely = _join_metadata(meta, extra)
        # Metadata rows with no image become index rows whose files are missing, so validation
        # reports them (or skip_missing leaves them out) like any other site without images.
        for line, row in lonely:
            meta = pd.concat([meta, row.to_frame().T], ignore_index=True)
            p, w, s_ = row["Metadata_Plate"], row["Metadata_Well"], row["Metadata_Site"]
            stem = Path(_abspath(root / f"{p}_{w}_s{s_}.tif")).as_posix()
            rows.append([f"{stem}{STACK_SEP}{c}" if not per_channel else
                         (root / f"<no file for plate {p} well {w} site {s_} channel {c}>").as_posix()
                         for c in (range(len(names)) if not per_channel else labels)])
            origin.append(line)
        meta["Metadata_Site"] = meta["Metadata_Site"].astype("int64")
        meta["_extra"] = meta["_extra"].fillna("")
    paths = pd.DataFrame(rows, columns=[PATH_PREFIX + n for n in names])
    return meta, paths, origin


def _stack_channels(files: list[Path]) -> tuple[int, list[str] | None]:
    """Channel count of the stacks (the most common among the first few readable headers), and
    their channel names when those headers' metadata (OME-XML ``Channel Name``, ImageJ ``Labels``)
    all give the same names."""
    from collections import Counter

    counts: Counter = Counter()
    named: set = set()
    error: DataError | None = None
    for f in files[:16]:
        try:
            shape, _, axes, names = image_info(f)
            counts[channel_axis(shape, str(f), axes)[1]] += 1
            named.add(tuple(names) if names else None)
        except DataError as exc:  # an unreadable file is reported by validation; look at others
            error = error or exc
    if not counts:
        raise error or DataError(f"{files[0]}: cannot read any stack header.")
    n = counts.most_common(1)[0][0]
    names = next(iter(named)) if len(named) == 1 else None
    return n, (list(names) if names and len(names) == n else None)


def _missing_name(example: Path, channel: str) -> str:
    # Where the missing channel file would be; validation reports it as missing.
    return (example.parent / f"<missing channel {channel} for {example.name}>").as_posix()


def _join_metadata(meta: pd.DataFrame, csv: Path) -> tuple[pd.DataFrame, list[tuple[str, pd.Series]]]:
    """Left-join metadata.csv rows to the image sites; return (joined, csv rows that match no image)."""
    import warnings

    raw = read_csv_text(csv)
    ren = {c: (c if c.startswith("Metadata_") else RXRX_COLUMNS.get(c, "Metadata_" + camel(c))) for c in raw.columns}
    ren.update({c: "Metadata_Plate" for c in raw.columns if c == "plate"})
    extra = raw.rename(columns=ren)
    on = [c for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site") if c in extra.columns]
    if "Metadata_Well" not in on:
        raise DataError(f"{csv}: needs a 'well' (or Metadata_Well) column to join to the images.")
    extra["Metadata_Well"] = [normalize_well(w, line_of(i, csv)) for i, w in enumerate(extra["Metadata_Well"])]
    if "Metadata_Site" in on:
        bad = [i for i, v in enumerate(extra["Metadata_Site"]) if not str(v).strip().isdigit()]
        if bad:
            raise DataError(f"{line_of(bad[0], csv)}: site {extra['Metadata_Site'][bad[0]]!r} is not a whole number.")
        extra["Metadata_Site"] = extra["Metadata_Site"].astype("int64")
    dup = extra.duplicated(on, keep=False)
    if dup.any():
        i, j = (int(k) for k in np.flatnonzero(dup.to_numpy())[:2])
        raise DataError(f"{line_of(i, csv)} and line {j + 2}: same {', '.join(on)}. Keep one row per site.")
    out = meta.merge(extra.assign(_line=range(len(extra))), on=on, how="left", validate="many_to_one")
    no_meta = out["_line"].isna().to_numpy()
    if no_meta.any():
        ex = out.loc[no_meta, ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]].head(3).values.tolist()
        warnings.warn(f"{csv}: {int(no_meta.sum())} image site(s) have no row here (e.g. {ex}); their "
                      "metadata columns are empty. Add rows for them.", stacklevel=4)
    used = set(out["_line"].dropna().astype(int))
    lonely = []
    for i in range(len(extra)):
        if i in used:
            continue
        if on != ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]:
            raise DataError(f"{line_of(i, csv)}: matches no image file (joined on {on}). Remove the row or add the image.")
        lonely.append((line_of(i, csv), extra.iloc[i]))
    return out.drop(columns="_line"), lonely


def read_parquet_index(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """An index written by ``build_index``/``gandl-core index``."""
    from ..tables import read_table

    # Relative paths (a hand-made or moved index) are taken relative to the index file's folder.
    return split_index_frame(read_table(path), str(path), Path(_abspath(path)).parent)


def split_index_frame(df: pd.DataFrame, where: str, base: Path | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(meta, paths, origin) of an index table; relative paths joined to ``base`` when given."""
    cols = [c for c in df.columns if str(c).startswith(PATH_PREFIX)]
    if not cols:
        raise DataError(f"{where}: has no Path_<Channel> columns, so it is not a site index. Build one "
                        "with 'gandl-core index DATA -o index.parquet'.")
    for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site"):
        if c not in df.columns:
            raise DataError(f"{where}: lacks column {c}. Rebuild the index with 'gandl-core index'.")
    meta = df[[c for c in df.columns if str(c).startswith("Metadata_")]].reset_index(drop=True)
    origin = [f"{where} row {i} (0-based)" for i in range(len(df))]
    paths = df[cols].astype(str).reset_index(drop=True)
    if base is not None:
        paths = paths.apply(lambda col: [v if Path(v).is_absolute() else (base / v).as_posix() for v in col])
    return meta, paths, origin


def detect(source: Path) -> str:
    """Which layout ``source`` is: 'rxrx', 'loaddata', 'parquet', 'omezarr', 'bioio' or 'tiff'."""
    if not source.exists():
        raise DataError(f"{source}: no such file or folder. Give a plate folder, a LoadData CSV or an "
                        "index .parquet.")
    from . import _bioio

    if source.is_file():
        suf = source.suffix.lower()
        if suf == ".parquet":
            return "parquet"
        if suf in _bioio.VENDOR_SUFFIXES:
            return "bioio"
        if suf in (".csv", ".tsv"):
            return "loaddata"
        raise DataError(f"{source}: unsupported file type '{suf}'. Give a LoadData .csv, an index "
                        ".parquet, an .nd2/.czi file, or a folder.")
    if (source / "metadata.csv").is_file() and (source / "images").is_dir():
        return "rxrx"
    if (source / "load_data.csv").is_file():  # a folder shipped with its LoadData CSV: use its names
        return "loaddata"
    from ._omezarr import find_plates

    if find_plates(source):  # an OME-Zarr HCS plate, or a folder of them
        return "omezarr"
    if _bioio.is_imagexpress(source) or (_bioio.sources(source) and not any(
            p.suffix.lower() in (".tif", ".tiff") for p in source.iterdir())):
        return "bioio"  # an ImageXpress acquisition, or a folder of ND2/CZI files
    return "tiff"


def sequence_of(names: Sequence[str] | str | None) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        return [n.strip() for n in names.split(",") if n.strip()]
    return [str(n) for n in names]
