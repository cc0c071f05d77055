"""The On-/Off-perturbation projection (GAN-DL's E2 space) as a scikit-learn transformer.

:class:`Projection` fits a soft-margin linear SVM between two control groups:

* **On** axis: the SVM normal. ``coef_`` is that direction as a unit vector in *input* feature
  space (the standardization is folded in: ``on_raw = X @ coef_``). The On score is an affine
  rescaling of ``on_raw`` with the positive-control mean at **+1** and the negative-control mean
  at **-1**; the control window is therefore 2 On units wide and a dose-response "efficacy" of 1
  means half of the C- -> C+ distance.
* **Off** axis: the first principal direction of the standardized training data after removing
  its On component (so Off is orthogonal to On in standardized space). It is centred on the
  training rows (mean 0) and, with ``off_scale="on"`` (default), scaled so that its standard
  deviation over the training rows equals that of the On score (both axes share one visual
  scale in scatter plots); ``off_scale="unit"`` gives unit variance instead. The Off *direction* is
  orthogonal to On in standardized space; the Off *scores* can still correlate with On over the
  wells when features are correlated (a tilted cloud in the E2 plot), which is a property of the
  data, not of the fit.

``transform(X)`` returns ``[N, 2]`` = (On, Off); tables carry them as ``OnScore`` and ``OffScore``
(:data:`SCORE_COLUMNS`; :func:`with_score_names` reads tables of older versions that named them
``On``/``Off``). ``fit`` takes labels ``1`` (C+) and ``0``/``-1``
(C-), or any two labels with ``pos_label`` naming the positive one -- which is the "C2" variant of
the paper (two cell types as the two classes). :meth:`Projection.fit_table` /
:meth:`Projection.transform_table` work on profile tables with selections (:mod:`gandl_core.selection`).

Z' and SSMD of the controls on the On score come from :mod:`gandl_core.analysis.metrics`
(re-exported here).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import ConfigError, DataError
from ..tables import check_features, metadata_columns
from .metrics import ssmd, z_prime

__all__ = ["Projection", "z_prime", "ssmd", "project_table", "with_score_names", "resolve_score", "SCORE_COLUMNS"]

#: Column names of the On- and Off-perturbation scores in every table (CLI, napari, report).
SCORE_COLUMNS = ("OnScore", "OffScore")
_LEGACY_SCORE_COLUMNS = {"On": "OnScore", "Off": "OffScore"}  # gandl-core before the rename


def with_score_names(df: pd.DataFrame) -> pd.DataFrame:
    """The one read-side fallback for score tables written by older versions: ``On``/``Off`` columns
    are renamed ``OnScore``/``OffScore`` (a table that already has the new names is returned as is).

    Parameters
    ----------
    df
        A scores table.

    Returns
    -------
    pd.DataFrame
        ``df`` itself, or a renamed copy.
    """
    old = {k: v for k, v in _LEGACY_SCORE_COLUMNS.items() if k in df.columns and v not in df.columns}
    return df.rename(columns=old) if old else df


def resolve_score(df: pd.DataFrame, score: str) -> tuple[pd.DataFrame, str]:
    """:func:`with_score_names` for a table and a score column asked for by name: an old name
    (``On``/``Off``) asked of a renamed table maps to the new one."""
    df = with_score_names(df)
    if score not in df.columns and _LEGACY_SCORE_COLUMNS.get(score) in df.columns:
        score = _LEGACY_SCORE_COLUMNS[score]
    return df, score


class Projection(TransformerMixin, BaseEstimator):
    """Linear-SVM On-perturbation axis plus an orthogonal Off axis.

    Parameters
    ----------
    C
        Soft-margin penalty of the LinearSVC.
    class_weight
        Passed to LinearSVC (``"balanced"`` so unequal control counts do not tilt the normal).
    standardize
        Standardize features (training mean/sd) before the SVM and the Off PCA.
    pos_label
        Label of the positive class. ``None``: ``1`` when the labels are in {-1, 0, 1}, else the
        larger of the two sorted labels.
    off_scale
        ``"on"``: Off has the same training-set standard deviation as On. ``"unit"``: unit variance.
    max_iter, random_state
        LinearSVC settings.

    Attributes
    ----------
    coef_ : ndarray [n_features]
        Unit On direction in input space.
    off_coef_ : ndarray [n_features]
        Off direction in input space (already scaled: ``off = (X - mean_) @ off_coef_ - off_offset_``).
    on_center_, on_halfwidth_ : float
        ``on = (X @ coef_ - on_center_) / on_halfwidth_``.
    classes_ : ndarray
        The two labels; ``positive_label_`` is the positive one.
    mean_, scale_ : ndarray
        Standardization (zeros/ones when ``standardize=False``).
    feature_names_in_ : ndarray
        Set when fitted on a DataFrame (``fit_table`` always sets it).
    """

    def __init__(self, C: float = 1.0, class_weight: Any = "balanced", standardize: bool = True,
                 pos_label: Any = None, off_scale: str = "on", max_iter: int = 20000, random_state: int = 0):
        self.C = C
        self.class_weight = class_weight
        self.standardize = standardize
        self.pos_label = pos_label
        self.off_scale = off_scale
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> "Projection":
        """Fit the On axis (SVM normal) and the Off axis on control rows.

        Parameters
        ----------
        X
            [n_samples, n_features] features of the control rows.
        y
            Two distinct labels (1 = C+, 0/-1 = C-, or any two with ``pos_label``).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Not exactly two classes, a class with no rows, or a bad ``off_scale``.
        """
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.svm import LinearSVC
        from sklearn.utils.multiclass import type_of_target

        X, y = validate_data(self, X, y, dtype=np.float64)
        if self.off_scale not in ("on", "unit"):
            raise ValueError(f"off_scale={self.off_scale!r}: use 'on' or 'unit'.")
        target = type_of_target(y, input_name="y", raise_unknown=True)
        if target != "binary":
            raise ValueError(f"Projection is binary-only: y has {len(np.unique(y))} class(es) "
                             f"({target}); give exactly two labels (C+ and C-).")
        classes = np.unique(y)
        pos = self.pos_label
        if pos is None:
            pos = 1 if set(classes.tolist()) <= {-1, 0, 1} and 1 in classes else classes[-1]
        if pos not in classes:
            raise ValueError(f"pos_label={pos!r} is not one of the labels {classes.tolist()}.")
        self.classes_ = classes
        self.positive_label_ = pos
        is_pos = y == pos
        if self.standardize:
            self.mean_ = X.mean(axis=0)
            sd = X.std(axis=0)
            self.scale_ = np.where(sd > 0, sd, 1.0)  # constant features: leave unscaled (they carry no weight)
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        Z = (X - self.mean_) / self.scale_
        svm = LinearSVC(C=self.C, class_weight=self.class_weight, dual="auto", max_iter=self.max_iter,
                        random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm.fit(Z, is_pos.astype(int))
        w_z = svm.coef_[0].copy()
        if not np.any(w_z):
            w_z = Z[is_pos].mean(0) - Z[~is_pos].mean(0)  # degenerate SVM: fall back to the mean difference
        if not np.any(w_z):
            w_z = np.eye(X.shape[1])[0]
        self.svm_ = svm
        self.n_iter_ = int(np.max(svm.n_iter_))
        # The decision function is w_z . (x - mean)/scale = (w_z/scale) . x + const: the input-space normal.
        w_x = w_z / self.scale_
        self.coef_ = w_x / np.linalg.norm(w_x)
        raw = X @ self.coef_
        mp, mn = raw[is_pos].mean(), raw[~is_pos].mean()
        if mp == mn:
            mp, mn = mn + 1.0, mn  # controls coincide: keep a finite, documented scale
        if mp < mn:  # orient so that C+ scores higher
            self.coef_, raw, mp, mn = -self.coef_, -raw, -mp, -mn
        self.on_center_ = (mp + mn) / 2.0
        self.on_halfwidth_ = (mp - mn) / 2.0
        on = (raw - self.on_center_) / self.on_halfwidth_
        # Off: PCA of standardized data with the On direction (in Z space) removed.
        u = w_z / np.linalg.norm(w_z)
        Zp = Z - np.outer(Z @ u, u)
        Zp_c = Zp - Zp.mean(axis=0)
        if X.shape[1] > 1 and np.any(Zp_c):
            v = _top_direction(Zp_c)
            v = v - (v @ u) * u
            v /= np.linalg.norm(v)
        else:
            v = np.zeros(X.shape[1])
        # Deterministic sign: the largest |loading| is positive.
        if np.any(v) and v[np.argmax(np.abs(v))] < 0:
            v = -v
        off_raw = Z @ v
        self.off_offset_ = float(off_raw.mean())
        sd_off = off_raw.std()
        target = on.std() if self.off_scale == "on" else 1.0
        factor = target / sd_off if sd_off > 0 else 1.0
        self.off_coef_ = v / self.scale_ * factor
        self.off_offset_ *= factor
        self.n_features_out_ = 2
        return self

    def _check(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        return validate_data(self, X, reset=False, dtype=np.float64)

    def transform(self, X: Any) -> np.ndarray:
        """Project rows to (On, Off).

        Returns
        -------
        ndarray [n_samples, 2]
            Column 0 = On score (C+ mean +1, C- mean -1), column 1 = Off score.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        """
        X = self._check(X)
        on = (X @ self.coef_ - self.on_center_) / self.on_halfwidth_
        off = (X - self.mean_) @ self.off_coef_ - self.off_offset_
        return np.column_stack([on, off])

    def decision_function(self, X: Any) -> np.ndarray:
        """On score only (``transform(X)[:, 0]``)."""
        return self.transform(X)[:, 0]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output column names: ``["OnScore", "OffScore"]``."""
        return np.array(SCORE_COLUMNS, dtype=object)

    # -- table helpers -------------------------------------------------------------------------
    def fit_table(self, df: pd.DataFrame, *, positive: str | None = None, negative: str | None = None,
                  features: list[str] | None = None) -> "Projection":
        """Fit on the control rows of a profile table selected by safe selections (:mod:`gandl_core.selection`).

        Parameters
        ----------
        df
            Profile table.
        positive, negative
            Queries selecting C+ and C- rows (default: ``evaluation.default_controls``).
        features
            Feature columns (default: every non-metadata column).

        Raises
        ------
        ConfigError
            Bad query; rows in both groups.
        DataError
            A group has fewer than 2 rows with finite features.
        """
        from .evaluation import default_controls, select

        if positive is None or negative is None:
            dp, dn = default_controls(df)
            positive, negative = positive or dp, negative or dn
        features = check_features(df, features)
        pos, neg = select(df, positive, "--positive"), select(df, negative, "--negative")
        if (pos & neg).any():
            raise ConfigError(f"{int((pos & neg).sum())} row(s) match both --positive {positive!r} and "
                              f"--negative {negative!r}; make the queries exclusive.")
        finite = np.isfinite(df[features].to_numpy(np.float64)).all(axis=1)
        for name, mask, q in (("positive", pos, positive), ("negative", neg, negative)):
            if int((mask & finite).sum()) < 2:
                raise DataError(f"the {name} query {q!r} selects {int((mask & finite).sum())} row(s) with finite "
                                "features; need at least 2 control wells per group.")
        keep = (pos | neg) & finite
        self.fit(df.loc[keep, features], np.where(pos[keep], 1, 0))
        self.positive_query_, self.negative_query_ = positive, negative
        return self

    def transform_table(self, df: pd.DataFrame) -> pd.DataFrame:
        """Metadata of ``df`` plus ``OnScore`` and ``OffScore`` columns (rows with NaN features get NaN scores).

        Raises
        ------
        DataError
            ``df`` lacks some of the fitted feature columns.
        """
        check_is_fitted(self, "coef_")
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            raise DataError("this Projection was fitted on an array; fit it with fit_table or a DataFrame "
                            "so it knows the feature column names.")
        missing = [f for f in names if f not in df.columns]
        if missing:
            raise DataError(f"the table lacks {len(missing)} of the projection's feature columns, e.g. "
                            f"{list(missing[:5])}; use a table made with the same embedding.")
        out = df[metadata_columns(df)].copy()
        X = df[list(names)]
        finite = np.isfinite(X.to_numpy(np.float64)).all(axis=1)
        scores = np.full((len(df), 2), np.nan)
        if finite.any():
            scores[finite] = self.transform(X[finite])
        out[SCORE_COLUMNS[0]], out[SCORE_COLUMNS[1]] = scores[:, 0], scores[:, 1]
        return out

    def _more_tags(self) -> dict:  # pragma: no cover - sklearn < 1.6
        return {"binary_only": True}

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags

        tags = super().__sklearn_tags__()
        # Not a classifier, but its target is binary class labels: this tag makes sklearn's
        # estimator checks feed binary y (they otherwise use 3 classes, which we refuse).
        tags.classifier_tags = ClassifierTags(multi_class=False)
        tags.target_tags.required = True
        return tags


def _top_direction(A: np.ndarray) -> np.ndarray:
    """First right singular vector of centred ``A`` via the smaller Gram matrix (eigh), which is far
    faster than a full SVD for tall tables (20000 x 512: ~2 s instead of ~45 s on 2 cores)."""
    n, d = A.shape
    if n >= d:
        _, vecs = np.linalg.eigh(A.T @ A)
        return vecs[:, -1]
    _, vecs = np.linalg.eigh(A @ A.T)
    v = A.T @ vecs[:, -1]
    return v / np.linalg.norm(v)


def project_table(df: pd.DataFrame, *, positive: str | None = None, negative: str | None = None,
                  features: list[str] | None = None, C: float = 1.0,
                  cv: int | None = 4) -> tuple[Projection, pd.DataFrame, dict]:
    """Fit a :class:`Projection` on a table's controls and score every row.

    ``z_prime``/``ssmd`` are the honest, **out-of-fold** figures: each control well's On score
    comes from a Projection fitted without its well (``cv`` folds, fewer when a class has fewer
    wells -- down to leave-one-well-out, grouped by plate+well, stratified by class).
    ``z_prime_in_sample``/``ssmd_in_sample`` are computed on the controls the SVM was fitted on:
    optimistic when there are many features and few control wells (the SVM can always find a
    direction that separates them), kept for reference only. Treated wells are always scored by the
    projection fitted on all controls.

    Parameters
    ----------
    df
        Profile table.
    positive, negative
        Control queries (default: ``evaluation.default_controls``).
    features
        Feature columns (default: all non-metadata columns).
    C
        SVM soft-margin penalty.
    cv
        Folds for the out-of-fold Z' (at most; capped by the wells of the smaller class). ``None``
        or 0: no out-of-fold scoring, ``z_prime`` is then the in-sample figure and
        ``z_prime_method`` says so.

    Returns
    -------
    (Projection, scores, stats)
        ``scores`` = metadata + ``OnScore``/``OffScore`` + ``Metadata_Control`` ("positive"/"negative"/"");
        ``stats`` = JSON-ready dict with z_prime, ssmd (out of fold), z_prime_method, cv (folds used),
        z_prime_in_sample, ssmd_in_sample, control counts, in-sample and out-of-fold control means/SDs.

    Raises
    ------
    ConfigError, DataError
        See :meth:`Projection.fit_table`.
    """
    from .evaluation import default_controls, select

    if positive is None or negative is None:
        dp, dn = default_controls(df)
        positive, negative = positive or dp, negative or dn
    proj = Projection(C=C).fit_table(df, positive=positive, negative=negative, features=features)
    scores = proj.transform_table(df)
    pos, neg = select(df, positive, "--positive").to_numpy(), select(df, negative, "--negative").to_numpy()
    scores["Metadata_Control"] = np.where(pos, "positive", np.where(neg, "negative", ""))
    on = scores[SCORE_COLUMNS[0]].to_numpy()
    stats = {"positive": positive, "negative": negative, "n_positive": int(pos.sum()), "n_negative": int(neg.sum()),
             "n_features": len(proj.feature_names_in_), "C": C,
             "z_prime_in_sample": z_prime(on[pos], on[neg]), "ssmd_in_sample": ssmd(on[pos], on[neg]),
             "on_mean_positive": float(np.nanmean(on[pos])), "on_mean_negative": float(np.nanmean(on[neg])),
             "on_sd_positive": float(np.nanstd(on[pos], ddof=1)), "on_sd_negative": float(np.nanstd(on[neg], ddof=1))}
    oof = _out_of_fold(df, pos, neg, list(proj.feature_names_in_), C, cv)
    if oof is None:
        stats.update(z_prime=stats["z_prime_in_sample"], ssmd=stats["ssmd_in_sample"], cv=None,
                     z_prime_method="in sample (cv off): the controls scored by the SVM fitted on them; optimistic")
        scores.attrs["gandl"] = {"projection": stats}
        return proj, scores, stats
    on_pos, on_neg, k = oof
    stats.update(z_prime=z_prime(on_pos, on_neg), ssmd=ssmd(on_pos, on_neg), cv=k,
                 z_prime_method=f"out of fold: each control well scored by a projection fitted without it "
                 f"({k} folds grouped by well)",
                 on_mean_positive_oof=float(on_pos.mean()), on_mean_negative_oof=float(on_neg.mean()),
                 on_sd_positive_oof=float(on_pos.std(ddof=1)), on_sd_negative_oof=float(on_neg.std(ddof=1)))
    scores.attrs["gandl"] = {"projection": stats}  # what dose_response.control_noise reads; kept in the parquet
    return proj, scores, stats


def _out_of_fold(df: pd.DataFrame, pos: np.ndarray, neg: np.ndarray, features: list[str], C: float,
                 cv: int | None) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Out-of-fold On scores of the C+ and C- control rows and the folds used (None when cv is off)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from .evaluation import group_keys

    if not cv:
        return None
    X = df[features].to_numpy(np.float64)
    keep = (pos | neg) & np.isfinite(X).all(axis=1)
    X, y = X[keep], pos[keep].astype(int)
    groups = group_keys(df[keep], "Metadata_Well" if "Metadata_Well" in df.columns else None).to_numpy()
    n_wells = min(len(set(groups[y == k])) for k in (0, 1))
    k = min(int(cv), n_wells)  # few control wells: down to one well of the smaller class per fold
    if k < 2:
        return None
    on = np.empty(len(y))
    for tr, te in StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=0).split(X, y, groups):
        on[te] = Projection(C=C).fit(X[tr], y[tr]).transform(X[te])[:, 0]
    return on[y == 1], on[y == 0], k
