"""Per-well profiles: aggregate site features, normalize each plate to its controls, sphere.

pycytominer-compatible functions on tables (``Metadata_*`` columns + numeric features); they
return new frames and do no file I/O:

* :func:`aggregate` -- one row per well (median or mean of its sites), keeping the metadata that
  is constant within the well and adding ``Metadata_Sites`` (number of sites aggregated);
* :func:`normalize_plates` -- each plate against its own control wells: ``"standardize"``
  (controls end at mean 0, sd 1 on every plate), ``"mad"`` (median 0, 1.4826 x MAD = 1, robust to
  outlier wells) or ``"none"``;
* :func:`sphere` -- whitening (ZCA or PCA) fitted on the control wells, the "typical variation
  normalization" of Ando et al. 2017: directions in which controls vary by chance are damped.

The usual chain is ``sphere(normalize_plates(aggregate(sites), controls=Q), controls=Q)``, which
``gandl-core profile`` runs. Controls are a selection on the metadata (:mod:`gandl_core.selection`), e.g.
``"Metadata_Role == 'negative'"`` (RxRx19a infected, untreated) or
``"Metadata_pert_type == 'control'"`` (DMSO wells of a LINCS Cell Painting plate).
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..selection import check_expr, select
from ..tables import check_features, metadata_columns

#: 1.4826 x MAD estimates the standard deviation of normally distributed data.
MAD_SCALE = 1.4826


def _strata(df: pd.DataFrame, strata: Sequence[str], option: str = "strata") -> list[str]:
    strata = [strata] if isinstance(strata, str) else list(strata)
    missing = [s for s in strata if s not in df.columns]
    if missing:
        raise DataError(f"{option}: column(s) {missing} are not in the table; it has metadata "
                        f"{metadata_columns(df)}.")
    return strata


def aggregate(
    df: pd.DataFrame,
    *,
    strata: Sequence[str] = ("Metadata_Plate", "Metadata_Well"),
    features: Sequence[str] | None = None,
    method: str = "median",
) -> pd.DataFrame:
    """One row per stratum (well): the median or mean of its rows' features.

    Parameters
    ----------
    df
        Site-level table.
    strata
        Columns defining a group (default plate and well).
    features
        Feature columns (default every non-metadata column).
    method
        ``"median"`` (robust to a bad site) or ``"mean"``.

    Returns
    -------
    pd.DataFrame
        Strata columns, then every other metadata column that is constant within each group
        (NaN counts as a value), then ``Metadata_Sites`` (rows aggregated), then the features.
        Groups appear in order of first occurrence.

    Raises
    ------
    ConfigError
        Unknown ``method``.
    DataError
        Missing strata columns, no or non-numeric features.
    """
    if method not in ("median", "mean"):
        raise ConfigError(f"--aggregate {method!r}: choose 'median' or 'mean'.")
    strata = _strata(df, strata)
    features = check_features(df, features)
    grouped = df.groupby(strata, sort=False, dropna=False)
    agg = getattr(grouped[features], method)()
    # A metadata column survives only if it has one value in every group (e.g. treatment, dose).
    others = [c for c in metadata_columns(df) if c not in strata and c != "Metadata_Sites"]
    keep = [c for c in others if (grouped[c].nunique(dropna=False) <= 1).all()]
    meta = grouped[keep].first() if keep else pd.DataFrame(index=agg.index)
    sites = grouped.size().rename("Metadata_Sites")
    # Keep float32 features float32 (cast once: per-column assignment fragments wide frames).
    f32 = [c for c in features if df[c].dtype == np.float32]
    if f32:  # one block cast (a per-column dict cast leaves one block per column)
        agg = pd.concat([agg.drop(columns=f32), agg[f32].astype(np.float32)], axis=1)[features]
    out = pd.concat([meta, sites, agg], axis=1).reset_index()
    out.attrs = {}
    return out


def _query_columns(query: str, df: pd.DataFrame) -> list[str]:
    flat = set(check_expr(query, option="--controls"))
    return [c for c in df.columns if c in flat]


def _control_mask(df: pd.DataFrame, controls: str | None) -> np.ndarray:
    if controls is None:
        return np.ones(len(df), dtype=bool)
    return select(df, controls, option="--controls").to_numpy()  # parsed safely, never run as code


def _describe_values(df: pd.DataFrame, controls: str) -> str:
    cols = _query_columns(controls, df)
    bits = []
    for c in cols:
        vals = pd.unique(df[c].astype(str))
        shown = ", ".join(repr(v) for v in vals[:8]) + (" ..." if len(vals) > 8 else "")
        bits.append(f"{c} has {shown}")
    return "; ".join(bits) if bits else f"metadata columns are {metadata_columns(df)}"


def normalize_plates(
    df: pd.DataFrame,
    *,
    controls: str | None,
    method: str = "standardize",
    strata: Sequence[str] = ("Metadata_Plate",),
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Normalize every plate's features against that plate's control rows.

    Parameters
    ----------
    df
        Well- (or site-) level table.
    controls
        selection (:mod:`gandl_core.selection`) of the control rows (e.g. ``"Metadata_Role == 'negative'"``);
        ``None`` uses all rows of the plate.
    method
        ``"standardize"``: ``(x - mean_c) / sd_c`` (sd with ddof=0, as sklearn's StandardScaler);
        ``"mad"``: ``(x - median_c) / (1.4826 * MAD_c)``; ``"none"``: unchanged copy.
    strata
        Columns defining a plate (a normalization batch).
    features
        Feature columns (default every non-metadata column).

    Returns
    -------
    pd.DataFrame
        Same rows, columns and order; features normalized (float32 stays float32).
        A feature whose spread over a plate's controls is 0 is set to 0 on that plate
        (a warning lists it) instead of becoming inf/NaN. For ``"mad"`` a zero MAD with a non-zero
        sd falls back to the sd (features with many tied values).

    Raises
    ------
    DataError
        A plate without control rows (names the plate, the query and the values present),
        an invalid query, missing columns or non-numeric features.
    ConfigError
        Unknown ``method``.
    """
    if method not in ("standardize", "mad", "none"):
        raise ConfigError(f"--method {method!r}: choose 'standardize', 'mad' or 'none'.")
    strata = _strata(df, strata)
    features = check_features(df, features)
    out = df.copy()
    out.attrs = {}
    if method == "none":
        return out
    mask = _control_mask(df, controls)
    x = df[features].to_numpy(np.float64)
    y = np.empty_like(x)
    constant: dict[str, list[str]] = {}
    for key, rows in df.groupby(strata, sort=False, dropna=False).indices.items():
        ctrl = rows[mask[rows]]
        label = key if not isinstance(key, tuple) or len(key) > 1 else key[0]
        if len(ctrl) == 0:
            raise DataError(f"plate {label!r} ({', '.join(strata)}) has no control rows matching "
                            f"--controls {controls!r}: on that plate {_describe_values(df.iloc[rows], controls)}. "
                            "Fix the query, or normalize without controls (controls=None).")
        c = x[ctrl]
        if method == "standardize":
            center = np.nanmean(c, axis=0)
            scale = np.nanstd(c, axis=0)
        else:
            center = np.nanmedian(c, axis=0)
            scale = MAD_SCALE * np.nanmedian(np.abs(c - center), axis=0)
            scale = np.where(scale > 0, scale, np.nanstd(c, axis=0))
        zero = ~(scale > 0)
        if zero.any():
            constant[str(label)] = [features[i] for i in np.flatnonzero(zero)]
        z = (x[rows] - center) / np.where(zero, 1.0, scale)
        z[:, zero] = 0.0
        y[rows] = z
    if constant:
        listing = "; ".join(f"plate {p}: {len(v)} ({', '.join(v[:5])}{' ...' if len(v) > 5 else ''})"
                            for p, v in list(constant.items())[:5])
        warnings.warn(f"features constant over the control rows were set to 0: {listing}.", stacklevel=2)
    for j, f in enumerate(features):
        out[f] = y[:, j].astype(df[f].dtype if df[f].dtype == np.float32 else np.float64)
    return out


def sphere(
    df: pd.DataFrame,
    *,
    controls: str | None,
    features: Sequence[str] | None = None,
    epsilon: float = 1e-6,
    method: str = "zca",
) -> pd.DataFrame:
    """Whiten features with a transform fitted on the control rows (typical variation normalization).

    With mean ``m`` and covariance ``C = V diag(lam) V^T`` of the controls, ``"zca"`` maps
    ``x -> (x - m) V diag(1/sqrt(lam + epsilon)) V^T`` (stays in feature space, keeps feature
    names meaningful) and ``"pca"`` maps ``x -> (x - m) V diag(1/sqrt(lam + epsilon))``
    (components sorted by decreasing control variance; columns keep the input names).
    Controls end with covariance ~identity where they span the space. Directions in which the
    controls do not vary at all (fewer controls than features) are scaled by ``1/sqrt(epsilon)``:
    raise ``epsilon`` to damp them.

    Parameters
    ----------
    df
        Profile table (usually after :func:`normalize_plates`).
    controls
        selection (:mod:`gandl_core.selection`) of the rows to fit on; ``None`` = all rows.
    features
        Feature columns (default every non-metadata column).
    epsilon
        Added to the eigenvalues (> 0).
    method
        ``"zca"`` or ``"pca"``.

    Returns
    -------
    pd.DataFrame
        Same rows and metadata, whitened features (float64).

    Raises
    ------
    DataError
        Fewer than 2 control rows, invalid query, non-finite features.
    ConfigError
        Bad ``epsilon`` or ``method``.
    """
    if method not in ("zca", "pca"):
        raise ConfigError(f"sphere method {method!r}: choose 'zca' or 'pca'.")
    if not epsilon > 0:
        raise ConfigError(f"sphere epsilon {epsilon}: must be > 0.")
    features = check_features(df, features)
    mask = _control_mask(df, controls)
    if mask.sum() < 2:
        raise DataError(f"--controls {controls!r} selects {int(mask.sum())} row(s); sphering needs at "
                        f"least 2 (better: more than the {len(features)} features). "
                        f"{_describe_values(df, controls) if controls else ''}")
    x = df[features].to_numpy(np.float64)
    if not np.isfinite(x).all():
        raise DataError("sphere: the table has NaN/inf features; normalize or drop them first.")
    c = x[mask]
    m = c.mean(axis=0)
    cov = np.cov(c - m, rowvar=False, ddof=1).reshape(len(features), len(features))
    lam, v = np.linalg.eigh(cov)
    lam = np.clip(lam, 0.0, None)[::-1]
    v = v[:, ::-1]
    w = v / np.sqrt(lam + epsilon)
    if method == "zca":
        w = w @ v.T
    out = df[metadata_columns(df)].copy()
    z = pd.DataFrame((x - m) @ w, columns=features, index=df.index)
    out = pd.concat([out, z], axis=1)
    out.attrs = {}
    return out


# --------------------------------------------------------------------------------------------
# Interoperability: JUMP-style perturbation types, human-readable feature labels
# --------------------------------------------------------------------------------------------

#: ``Metadata_Role`` -> JUMP/pycytominer ``Metadata_pert_type``. The baseline every well is compared
#: with (C-, infected untreated; a DMSO well) is the negative control, the phenotype a hit should reach
#: (C+, healthy/mock) the positive control.
ROLE_TO_PERT_TYPE = {"negative": "negcon", "positive": "poscon", "treated": "trt", "other": "other"}
#: ``Metadata_pert_type`` -> ``Metadata_Role`` (LINCS Cell Painting tables say ``control`` for DMSO).
PERT_TYPE_TO_ROLE = {"negcon": "negative", "control": "negative", "poscon": "positive", "trt": "treated"}


def add_pert_type(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with ``Metadata_pert_type`` (negcon/poscon/trt/other) from ``Metadata_Role``.

    Then pycytominer's and copairs' JUMP recipes run as written, e.g.
    ``normalize(..., samples="Metadata_pert_type == 'negcon'")``.

    Raises
    ------
    DataError
        No ``Metadata_Role`` column.
    """
    if "Metadata_Role" not in df.columns:
        raise DataError(f"add_pert_type: the table has no Metadata_Role column (metadata: {metadata_columns(df)}).")
    pert = df["Metadata_Role"].astype(str).map(ROLE_TO_PERT_TYPE).fillna("other").to_numpy()
    return _set_after(df, "Metadata_Role", "Metadata_pert_type", pert)


def add_role(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with ``Metadata_Role`` from a JUMP/LINCS ``Metadata_pert_type`` column.

    negcon / control -> ``negative``, poscon -> ``positive``, trt -> ``treated``, anything else ->
    ``other``. An existing ``Metadata_Role`` is replaced.

    Raises
    ------
    DataError
        No ``Metadata_pert_type`` column.
    """
    if "Metadata_pert_type" not in df.columns:
        raise DataError(f"add_role: the table has no Metadata_pert_type column (metadata: {metadata_columns(df)}).")
    role = df["Metadata_pert_type"].astype(str).str.lower().map(PERT_TYPE_TO_ROLE).fillna("other").to_numpy()
    return _set_after(df, "Metadata_pert_type", "Metadata_Role", role)


def _set_after(df: pd.DataFrame, source: str, name: str, values) -> pd.DataFrame:
    """Copy of ``df`` with column ``name`` = ``values``: replaced where it exists, else inserted
    right after ``source`` (the column it was derived from)."""
    out = df.copy()
    if name in out.columns:
        out[name] = values
    else:
        out.insert(out.columns.get_loc(source) + 1, name, values)
    return out


def _labels_in(meta: object) -> tuple[str, list[str]] | None:
    """(prefix, labels) from a table's ``gandl`` metadata, searching nested source metadata."""
    if not isinstance(meta, dict):
        return None
    fz = meta.get("featurizer")
    if isinstance(fz, dict) and isinstance(fz.get("feature_labels"), list) and fz.get("prefix"):
        return str(fz["prefix"]), [str(x) for x in fz["feature_labels"]]
    for v in meta.values():
        found = _labels_in(v) if isinstance(v, dict) else None
        if found:
            return found
    return None


def feature_labels(table: pd.DataFrame | str | os.PathLike) -> dict[str, str]:
    """Column -> human-readable name for the features of a table that has them.

    The handcrafted featurizer stores CellProfiler-like names (``Intensity_mean_DNA``, ...) in the
    table's Parquet metadata; this returns ``{"HC_000": "Intensity_mean_DNA", ...}`` for the feature
    columns present (also for profile tables, which keep their source's metadata). Learned
    embeddings (GAN_, RandD_, CAE_, DN*) have no names: the result is then empty.
    ``df.rename(columns=feature_labels(df))`` gives named columns.

    Parameters
    ----------
    table
        A table read with :func:`gandl_core.tables.read_table` (metadata in ``attrs["gandl"]``) or
        the path of a Parquet table.
    """
    from ..tables import read_table_metadata

    if isinstance(table, pd.DataFrame):
        meta, columns = table.attrs.get("gandl", {}), list(table.columns)
    else:
        import pyarrow.parquet as pq

        meta, columns = read_table_metadata(table), list(pq.read_schema(table).names)
    found = _labels_in(meta)
    if not found:
        return {}
    from ..featurizers.base import feature_names

    prefix, labels = found
    names = dict(zip(feature_names(prefix, len(labels)), labels))
    return {c: names[c] for c in columns if c in names}
