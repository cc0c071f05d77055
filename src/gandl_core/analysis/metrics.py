"""Assay-quality and retrieval metrics on per-well scores and profiles.

* :func:`z_prime` — Zhang et al. (1999) Z' factor of two control groups on a 1-d score:
  ``1 - 3 (sd_pos + sd_neg) / |mean_pos - mean_neg|``. Above 0.5 is an excellent assay window,
  0..0.5 usable, below 0 the control distributions overlap.
* :func:`ssmd` — strictly standardized mean difference (Zhang 2007):
  ``(mean_pos - mean_neg) / sqrt(var_pos + var_neg)``. Signed; |SSMD| >= 3 is a strong effect.
* :func:`mean_ap` — replicate retrieval mean average precision with copairs: for each profile,
  how well do its replicates (same ``sameby`` values) rank above the other profiles by cosine
  similarity. 1 = replicates always nearest; about (k-1)/n for random profiles.

Sample standard deviations (ddof=1) are used throughout, as in the assay literature.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..tables import check_features, metadata_columns


def _clean(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size < 2:
        raise DataError(f"{name} controls: {arr.size} finite value(s); need at least 2 to estimate a spread.")
    return arr


def z_prime(pos: Sequence[float] | np.ndarray, neg: Sequence[float] | np.ndarray) -> float:
    """Z' factor of two control groups.

    Parameters
    ----------
    pos, neg
        1-d scores of the positive and negative control wells (NaNs are dropped).

    Returns
    -------
    float
        ``1 - 3 (sd_pos + sd_neg) / |mean_pos - mean_neg|``; ``-inf`` when the means coincide.

    Raises
    ------
    DataError
        If a group has fewer than two finite values.
    """
    p, n = _clean(pos, "positive"), _clean(neg, "negative")
    gap = abs(p.mean() - n.mean())
    spread = 3.0 * (p.std(ddof=1) + n.std(ddof=1))
    if gap == 0:
        return float("-inf")
    return float(1.0 - spread / gap)


def ssmd(pos: Sequence[float] | np.ndarray, neg: Sequence[float] | np.ndarray) -> float:
    """Strictly standardized mean difference ``(mu_p - mu_n) / sqrt(var_p + var_n)``.

    Parameters
    ----------
    pos, neg
        1-d scores of the positive and negative control wells (NaNs are dropped).

    Returns
    -------
    float
        Signed SSMD (positive when ``pos`` scores higher); ``±inf`` when both variances are zero.

    Raises
    ------
    DataError
        If a group has fewer than two finite values.
    """
    p, n = _clean(pos, "positive"), _clean(neg, "negative")
    diff = p.mean() - n.mean()
    den = np.sqrt(p.var(ddof=1) + n.var(ddof=1))
    if den == 0:
        return float(np.sign(diff) * np.inf) if diff else 0.0
    return float(diff / den)


def mean_ap(
    df: pd.DataFrame,
    *,
    sameby: Sequence[str] = ("Metadata_Treatment",),
    diffby: Sequence[str] = (),
    features: list[str] | None = None,
    query: str | None = None,
    null_size: int = 1000,
    threshold: float = 0.05,
    seed: int = 0,
) -> tuple[float, pd.DataFrame]:
    """Replicate retrieval mean average precision (copairs, cosine similarity).

    Parameters
    ----------
    df
        Profile table (one row per well).
    sameby
        Metadata columns whose equal values make two rows replicates (positives).
    diffby
        Metadata columns that must differ for a pair to count as a negative pair (e.g. the
        treatment column, so that replicates of one compound are ranked against other compounds).
        Empty: every non-replicate pair is a negative.
    features
        Feature columns (default: all non-metadata columns).
    query
        Optional selection (:mod:`gandl_core.selection`) of the rows to score (e.g. drop DMSO).
    null_size, threshold, seed
        copairs' permutation test: p-values per group and the ``below_p`` flag.

    Returns
    -------
    (float, DataFrame)
        Mean of the per-group mAP, and one row per group (``sameby`` columns, ``mean_average_precision``,
        ``p_value``, ``below_p``...).

    Raises
    ------
    DataError
        A ``sameby``/``diffby`` column is missing, or no group has two or more replicates.
    ConfigError
        ``query`` does not parse.
    """
    from copairs.map import average_precision, mean_average_precision

    sameby, diffby = list(sameby), list(diffby)
    for col in sameby + diffby:
        if col not in df.columns:
            raise DataError(f"mean_ap: column {col!r} is not in the table; choose from {metadata_columns(df)[:12]}.")
    if query:
        from .evaluation import select

        df = df[select(df, query, "--map-query")]
    features = check_features(df, features)
    df = df.dropna(subset=features).reset_index(drop=True)
    meta = df[metadata_columns(df)].copy()
    for col in sameby + diffby:
        meta[col] = meta[col].astype(str)
    counts = meta.groupby(sameby).size()
    if (counts >= 2).sum() == 0:
        raise DataError(f"mean_ap: no group of {sameby} has two or more rows; nothing to retrieve.")
    # copairs needs a negative definition: without diffby every pair of different groups is negative.
    neg_diffby = diffby or sameby
    ap = average_precision(meta, df[features].to_numpy(np.float64), pos_sameby=sameby, pos_diffby=[],
                           neg_sameby=[], neg_diffby=neg_diffby, progress_bar=False)
    ap = ap.dropna(subset=["average_precision"])
    per = mean_average_precision(ap, sameby, null_size=null_size, threshold=threshold, seed=seed,
                                 progress_bar=False)
    return float(per["mean_average_precision"].mean()), per
