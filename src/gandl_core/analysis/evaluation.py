"""Can a linear classifier on the features tell two control groups (or cell types) apart?

The GAN-DL paper's first check: a soft-margin linear SVM on the embedding separates C+ from C-
wells. Here:

* :func:`separability` — binary C+ vs C- (selections on the metadata, :mod:`gandl_core.selection`, pick each group);
* :func:`classify` — the multi-class version on a label column (e.g. ``Metadata_CellType``);
* :func:`zero_shot` — fit on one table, predict another (e.g. other plates or experiments).

Splits are *by well*: every image (site) of one well lands on the same side, so accuracy is not
inflated by near-duplicate fields. The split is stratified at the well level (a well's class is
the class of its rows). The classifier is ``StandardScaler`` + ``LinearSVC(class_weight="balanced")``;
``scaler="wells"`` standardizes with every well of the table instead (label-free) before the split.

**Validation** (``cv``): ``"auto"`` (default) holds out 25% of each class's wells when the wells are
many, and switches to K-fold grouped cross-validation (StratifiedGroupKFold, out-of-fold over every
well) on small plates, where a 25% split would test only a handful of wells and move the accuracy
in steps of 1/6: fewer than :data:`AUTO_CV_WELLS` wells in all -> K = min(5, wells of the smaller
class). ``cv=K`` forces K folds, ``cv=None`` the single split. ``params["validation"]`` says which
was used and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..tables import check_features, metadata_columns

#: With ``cv="auto"``, fewer wells than this (all classes together) use grouped K-fold CV instead of
#: one 75/25 split (which would test fewer than 20 wells).
AUTO_CV_WELLS = 80
#: Most folds ``cv="auto"`` uses.
AUTO_CV_FOLDS = 5


def default_controls(df: pd.DataFrame) -> tuple[str, str]:
    """Default (positive, negative) queries for a table.

    ``Metadata_Role`` when present (``positive``/``negative``); otherwise RxRx19a's convention
    (C+ = Mock and untreated, C- = Active SARS-CoV-2 and untreated).

    Raises
    ------
    ConfigError
        If the table has neither convention's columns.
    """
    if "Metadata_Role" in df.columns:
        return "Metadata_Role == 'positive'", "Metadata_Role == 'negative'"
    if {"Metadata_Condition", "Metadata_Treatment"} <= set(df.columns):
        return ("Metadata_Condition == 'Mock' and Metadata_Treatment == ''",
                "Metadata_Condition == 'Active SARS-CoV-2' and Metadata_Treatment == ''")
    raise ConfigError("no Metadata_Role or Metadata_Condition/Metadata_Treatment column: give --positive "
                      "and --negative queries, e.g. \"Metadata_pert_type == 'control'\".")


def select(df: pd.DataFrame, query: str, name: str) -> pd.Series:
    """Boolean mask of the rows matching a selection (:func:`gandl_core.selection.select`: parsed
    safely, never run as code), with the option ``name`` (e.g. ``--positive``) named in errors.

    Raises
    ------
    ConfigError
        If the query is not in the selection language or names an unknown column.
    """
    from ..selection import select as safe_select

    return safe_select(df, query, option=name if name.startswith("-") else f"--{name}")


def group_keys(df: pd.DataFrame, group: str | Sequence[str] | None = "Metadata_Well") -> pd.Series:
    """One key per row identifying its well (plate + well when a plate column exists).

    Wells are only unique within a plate, so ``Metadata_Plate`` is prefixed automatically.
    ``group=None`` makes every row its own group.
    """
    if group is None:
        return pd.Series(np.arange(len(df)).astype(str), index=df.index)
    cols = [group] if isinstance(group, str) else list(group)
    if "Metadata_Plate" in df.columns and "Metadata_Plate" not in cols:
        cols = ["Metadata_Plate"] + cols
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(f"group column(s) {missing} not in the table; pass group=None to split by row "
                          f"or one of {metadata_columns(df)[:12]}.")
    return df[cols].astype(str).agg("/".join, axis=1)


@dataclass
class EvalResult:
    """Outcome of a classification check.

    Attributes
    ----------
    accuracy, balanced_accuracy
        On held-out wells (or out-of-fold over all wells with ``cv``).
    n_train, n_test
        Number of wells (groups) used to fit and to test. With ``cv``: ``n_train`` is the mean per
        fold and ``n_test`` the total (every well is tested once). ``zero_shot``: rows, not wells.
    classes
        Class names, in confusion-matrix order.
    confusion
        DataFrame, rows = true class, columns = predicted class, counts of test rows.
    per_group
        One row per ``by`` value (or one row "all"): n, accuracy, balanced_accuracy.
    predictions
        Test rows' metadata plus ``true``, ``predicted`` and ``decision`` (signed distance for binary).
    params
        The options used (for reports).
    """

    accuracy: float
    balanced_accuracy: float
    n_train: int
    n_test: int
    classes: list[str]
    confusion: pd.DataFrame
    per_group: pd.DataFrame
    predictions: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable headline numbers."""
        return {"accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy,
                "n_train_wells": self.n_train, "n_test_wells": self.n_test, "classes": self.classes,
                "confusion": self.confusion.to_numpy().tolist(), **{k: v for k, v in self.params.items()}}


def _model(C: float, seed: int, scale: bool = True):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=C, class_weight="balanced", dual="auto", random_state=seed, max_iter=20000)
    return make_pipeline(StandardScaler(), svm) if scale else svm


SCALERS = ("wells", "controls")


def _table_scaler(df: pd.DataFrame, features: list[str], scaler: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, sd) of every row of the table (label-free), or None for the per-fold scaler of the controls."""
    if scaler not in SCALERS:
        raise ConfigError(f"scaler={scaler!r}: use 'wells' (all wells of the table, label-free) or 'controls' "
                          "(the training rows of each fold).")
    if scaler == "controls":
        return None
    X = df[features].to_numpy(np.float64)
    X = X[np.isfinite(X).all(axis=1)]
    sd = X.std(axis=0)
    return X.mean(axis=0), np.where(sd > 0, sd, 1.0)


def _well_split(y: np.ndarray, groups: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (by class) split of the wells; returns row masks (train, test)."""
    rng = np.random.default_rng(seed)
    wells = pd.DataFrame({"g": groups, "y": y}).groupby("g")["y"].agg(lambda s: s.mode().iloc[0])
    test_wells: list[str] = []
    for cls, members in wells.groupby(wells):
        names = members.index.to_numpy()
        if len(names) < 2:
            raise DataError(f"class {cls!r} has {len(names)} well(s); a train/test split needs at least 2 "
                            "per class. Add wells or use a smaller query.")
        k = int(round(test_size * len(names)))
        k = min(max(k, 1), len(names) - 1)
        test_wells.extend(rng.choice(names, size=k, replace=False))
    test = np.isin(groups, test_wells)
    return ~test, test


def _confusion(true: np.ndarray, pred: np.ndarray, classes: list[str]) -> pd.DataFrame:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(true, pred, labels=classes)
    return pd.DataFrame(cm, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted"))


def _per_group(pred: pd.DataFrame, by: str | None) -> pd.DataFrame:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    parts = [("all", pred)] if by is None else list(pred.groupby(by, dropna=False))
    rows = []
    for key, part in parts:
        rows.append({by or "group": key, "n": len(part),
                     "accuracy": accuracy_score(part["true"], part["predicted"]),
                     "balanced_accuracy": balanced_accuracy_score(part["true"], part["predicted"])
                     if part["true"].nunique() > 1 else float("nan")})
    return pd.DataFrame(rows)


def _folds(y: np.ndarray, groups: np.ndarray, *, cv, test_size: float, seed: int) -> tuple[list, int | None, str]:
    """Train/test row indices per fold, the folds used (None: one split) and a sentence saying why."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_wells = pd.Series(groups).nunique()
    per_class = pd.DataFrame({"g": groups, "y": y}).drop_duplicates("g")["y"].value_counts()
    if per_class.min() < 2:
        raise DataError(f"class {per_class.idxmin()!r} has {per_class.min()} well(s); a train/test split needs at "
                        "least 2 per class. Add wells or use a smaller query.")
    if isinstance(cv, str):
        if cv != "auto":
            raise ConfigError(f"cv={cv!r}: use 'auto', an integer K >= 2, or None for one 75/25 split.")
        if n_wells >= AUTO_CV_WELLS:
            cv, why = None, f"{n_wells} wells >= {AUTO_CV_WELLS}: one split by well"
        else:
            cv = max(2, min(AUTO_CV_FOLDS, int(per_class.min())))
            why = (f"{n_wells} wells < {AUTO_CV_WELLS}: {cv}-fold cross-validation grouped by well, every well "
                   f"tested once (a 25% split would test about {max(2, round(test_size * n_wells))})")
    else:
        why = "one split by well (cv=None)" if cv is None else f"{int(cv)}-fold cross-validation grouped by well"
    if cv is None:
        if not 0 < test_size < 1:
            raise ConfigError(f"test_size={test_size} must be between 0 and 1 (e.g. 0.25).")
        tr, te = _well_split(y, groups, test_size, seed)
        return [(np.flatnonzero(tr), np.flatnonzero(te))], None, why + f", {test_size:.0%} of each class's wells held out"
    if int(cv) < 2 or int(cv) > n_wells:
        raise ConfigError(f"cv={cv} must be between 2 and the number of wells ({n_wells}).")
    splitter = StratifiedGroupKFold(n_splits=int(cv), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups)), int(cv), why


def _run(df: pd.DataFrame, y: np.ndarray, *, features, group, test_size, cv, C, seed, by, params,
         scale: tuple[np.ndarray, np.ndarray] | None = None) -> EvalResult:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    features = check_features(df, features)
    if by is not None and by not in df.columns:
        raise ConfigError(f"by={by!r} is not a column; choose one of {metadata_columns(df)[:12]}.")
    X = df[features].to_numpy(np.float64)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.all():
        raise DataError("every selected row has a NaN/inf feature; impute or drop those features first.")
    df, X, y = df[~bad], X[~bad], y[~bad]
    if scale is not None:  # one label-free standardization of every well, fitted before any split
        X = (X - scale[0]) / scale[1]
    params = {**params, "n_rows_dropped_nan": int(bad.sum())}  # reported, not silently lost
    groups = group_keys(df, group).to_numpy()
    classes = sorted(pd.unique(y).tolist(), key=str)
    if len(classes) < 2:
        raise DataError(f"only one class ({classes}) among the selected rows; need two or more.")
    folds, k, validation = _folds(y, groups, cv=cv, test_size=test_size, seed=seed)
    decision = np.full(len(y), np.nan)
    pred = np.empty(len(y), dtype=object)
    tested = np.zeros(len(y), bool)
    n_train, n_test = [], []
    for tr, te in folds:
        if len(set(y[tr])) < 2:
            raise DataError("a training split holds only one class; use fewer folds or more wells.")
        model = _model(C, seed, scale=scale is None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X[tr], y[tr])
        pred[te] = model.predict(X[te])
        if len(model.classes_) == 2:
            decision[te] = model.decision_function(X[te])
        tested[te] = True
        n_train.append(len(set(groups[tr])))
        n_test.append(len(set(groups[te])))
    out = df.loc[tested, metadata_columns(df)].copy()
    out["true"], out["predicted"] = y[tested], pred[tested]
    out["decision"] = decision[tested]
    true_, pred_ = out["true"].to_numpy(), out["predicted"].to_numpy()
    params = {**params, "C": C, "seed": seed, "cv": k, "test_size": None if k else test_size, "validation": validation,
              "n_features": len(features), "group": group, "by": by}
    return EvalResult(
        accuracy=float(accuracy_score(true_, pred_)),
        balanced_accuracy=float(balanced_accuracy_score(true_, pred_)),
        n_train=int(round(np.mean(n_train))), n_test=int(round(np.mean(n_test))) if k is None else int(np.sum(n_test)),
        classes=[str(c) for c in classes], confusion=_confusion(true_, pred_, classes),
        per_group=_per_group(out, by), predictions=out, params=params)


def separability(
    df: pd.DataFrame,
    *,
    positive: str | None = None,
    negative: str | None = None,
    features: list[str] | None = None,
    group: str | Sequence[str] | None = "Metadata_Well",
    test_size: float = 0.25,
    cv: int | str | None = "auto",
    C: float = 1.0,
    seed: int = 0,
    by: str | None = None,
    scaler: str = "controls",
) -> EvalResult:
    """Accuracy of a linear SVM separating positive from negative control wells.

    Parameters
    ----------
    df
        Profile table (site- or well-level).
    positive, negative
        selections (:mod:`gandl_core.selection`) on the metadata picking C+ and C- rows (default: :func:`default_controls`).
    features
        Feature columns (default: every non-metadata column).
    group
        Column(s) naming a well; ``Metadata_Plate`` is prepended when present. Rows sharing a key
        are never split across train and test. ``None``: split rows independently.
    test_size
        Fraction of each class's wells held out (single split; ignored with ``cv``).
    cv
        ``"auto"``: one split by well on large tables, K-fold grouped CV below :data:`AUTO_CV_WELLS`
        wells (module docstring); K: K-fold StratifiedGroupKFold, out-of-fold numbers over all
        wells; ``None``: one split.
    C
        SVM soft-margin penalty.
    seed
        Random seed of the split and the SVM.
    by
        Optional metadata column for a per-value breakdown (e.g. ``Metadata_CellType``).
    scaler
        ``"controls"`` (default): a StandardScaler fitted on each fold's training rows. ``"wells"``:
        every feature standardized with the mean and SD of **all** rows of ``df`` (treated wells
        too; no label is used), once before the split. Neither wins everywhere (docs/analysis.md has
        the measurements): try both on a small plate.

    Returns
    -------
    EvalResult
        Classes are ``"negative"``/``"positive"``.

    Raises
    ------
    ConfigError
        Bad query, options, or a row matching both queries.
    DataError
        A group with too few wells, no features.
    """
    if positive is None or negative is None:
        dp, dn = default_controls(df)
        positive, negative = positive or dp, negative or dn
    pos, neg = select(df, positive, "--positive"), select(df, negative, "--negative")
    both = pos & neg
    if both.any():
        raise ConfigError(f"{int(both.sum())} row(s) match both the positive query {positive!r} and the "
                          f"negative query {negative!r}; make the queries exclusive.")
    for name, mask, q in (("positive", pos, positive), ("negative", neg, negative)):
        if mask.sum() == 0:
            raise DataError(f"the {name} query {q!r} matches no row; check the values, e.g. "
                            f"{_value_hint(df, q)}.")
    sub = df[pos | neg]
    y = np.where(pos[pos | neg].to_numpy(), "positive", "negative")
    features = check_features(df, features)
    return _run(sub, y, features=features, group=group, test_size=test_size, cv=cv, C=C, seed=seed, by=by,
                params={"positive": positive, "negative": negative, "scaler": scaler},
                scale=_table_scaler(df, features, scaler))


def _value_hint(df: pd.DataFrame, query: str) -> str:
    for col in metadata_columns(df):
        if col in query:
            return f"{col} has {sorted(map(str, df[col].dropna().unique()))[:8]}"
    return f"columns {metadata_columns(df)[:10]}"


def classify(
    df: pd.DataFrame,
    *,
    label: str,
    features: list[str] | None = None,
    group: str | Sequence[str] | None = "Metadata_Well",
    test_size: float = 0.25,
    cv: int | str | None = "auto",
    C: float = 1.0,
    seed: int = 0,
    by: str | None = None,
    query: str | None = None,
    scaler: str = "controls",
) -> EvalResult:
    """Multi-class linear SVM (one-vs-rest) predicting ``label`` from the features; see :func:`separability`.

    Parameters
    ----------
    label
        Metadata column with the class of each row (e.g. ``Metadata_CellType``).
    query
        Optional selection (:mod:`gandl_core.selection`) restricting the rows first.

    Raises
    ------
    ConfigError
        ``label`` is not a column.
    DataError
        Fewer than two classes, or a class with fewer than two wells.
    """
    if label not in df.columns:
        raise ConfigError(f"label column {label!r} is not in the table; choose one of {metadata_columns(df)[:12]}.")
    if query:
        df = df[select(df, query, "--query")]
    df = df[df[label].notna()]
    y = df[label].astype(str).to_numpy()
    features = check_features(df, features)
    return _run(df, y, features=features, group=group, test_size=test_size, cv=cv, C=C, seed=seed, by=by,
                params={"label": label, "query": query, "scaler": scaler}, scale=_table_scaler(df, features, scaler))


def zero_shot(
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    *,
    label: str,
    features: list[str] | None = None,
    C: float = 1.0,
    seed: int = 0,
) -> EvalResult:
    """Fit a linear SVM on one table and predict ``label`` on another (e.g. unseen plates).

    Features are aligned by column name: the test table must contain every training feature
    (extra test columns are ignored). Classes absent from training count as errors.

    Raises
    ------
    ConfigError
        ``label`` missing from either table.
    DataError
        Test table lacks some training features; training table has one class only.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    for name, t in (("training", train_df), ("test", test_df)):
        if label not in t.columns:
            raise ConfigError(f"label column {label!r} is not in the {name} table; choose one of "
                              f"{metadata_columns(t)[:12]}.")
    features = check_features(train_df, features, name="training table")
    missing = [f for f in features if f not in test_df.columns]
    if missing:
        raise DataError(f"the test table lacks {len(missing)} training feature column(s), e.g. {missing[:5]}; "
                        "embed/featurize both tables with the same model (or pass features= shared by both).")
    check_features(test_df, features, name="test table")
    tr = train_df.dropna(subset=features + [label])
    te = test_df.dropna(subset=features + [label])
    ytr, yte = tr[label].astype(str).to_numpy(), te[label].astype(str).to_numpy()
    if len(set(ytr)) < 2:
        raise DataError(f"training table has one {label} value only ({set(ytr)}); need two or more.")
    model = _model(C, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(tr[features].to_numpy(np.float64), ytr)
    pred = model.predict(te[features].to_numpy(np.float64))
    classes = sorted(set(ytr) | set(yte))
    out = te[metadata_columns(te)].copy()
    out["true"], out["predicted"], out["decision"] = yte, pred, np.nan
    return EvalResult(
        accuracy=float(accuracy_score(yte, pred)), balanced_accuracy=float(balanced_accuracy_score(yte, pred)),
        n_train=int(len(tr)), n_test=int(len(te)), classes=classes, confusion=_confusion(yte, pred, classes),
        per_group=_per_group(out, None), predictions=out,
        params={"label": label, "C": C, "seed": seed, "n_features": len(features), "mode": "zero_shot",
                # test classes the model never saw are always wrong: say so instead of hiding it
                "unseen_classes": sorted(set(yte) - set(ytr))})
