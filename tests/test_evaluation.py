"""Separability / classification / zero-shot: well-level splits, numbers, named errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gandl_core.analysis.evaluation import classify, default_controls, separability, zero_shot
from gandl_core.errors import ConfigError, DataError


def _sites(n_wells: int = 16, sites: int = 3, shift: float = 3.0, seed: int = 0, plates=("P1", "P2")) -> pd.DataFrame:
    """Site-level table: two plates, wells with the same names on both plates, half C+ half C-."""
    rng = np.random.default_rng(seed)
    rows = []
    for plate in plates:
        for w in range(n_wells):
            role = "positive" if w % 2 == 0 else "negative"
            cell = "HRCE" if w % 4 < 2 else "VERO"
            well_effect = rng.normal(scale=0.3, size=5)
            for s in range(1, sites + 1):
                f = rng.normal(size=5) + well_effect
                f[0] += shift if role == "positive" else 0.0
                f[1] += 3.0 if cell == "VERO" else 0.0
                rows.append({"Metadata_Plate": plate, "Metadata_Well": f"B{w + 1:02d}", "Metadata_Site": s,
                             "Metadata_Role": role, "Metadata_CellType": cell,
                             **{f"f{i}": v for i, v in enumerate(f)}})
    return pd.DataFrame(rows)


def test_separability_splits_by_plate_and_well() -> None:
    df = _sites()
    r = separability(df, positive="Metadata_Role == 'positive'", negative="Metadata_Role == 'negative'", cv=None)
    test_keys = set(r.predictions["Metadata_Plate"] + "/" + r.predictions["Metadata_Well"])
    all_keys = set(df["Metadata_Plate"] + "/" + df["Metadata_Well"])
    # 32 plate-wells (16 per class): 4 of each class held out; every site of a held-out well is in test.
    assert r.n_test == 8 and r.n_train == 24 and len(test_keys) == 8
    assert len(r.predictions) == 8 * 3
    assert (r.predictions.groupby("true").size() == 12).all()
    train_rows = df[~(df["Metadata_Plate"] + "/" + df["Metadata_Well"]).isin(test_keys)]
    assert len(train_rows) == 24 * 3 and test_keys < all_keys
    assert r.accuracy >= 0.9 and r.confusion.to_numpy().sum() == 24
    assert r.classes == ["negative", "positive"]


def test_small_plates_get_grouped_cross_validation() -> None:
    """32 plate-wells: a 25% split would test 8 wells (accuracy in steps of 1/8); "auto" (the default)
    runs 5-fold CV grouped by well instead, every well tested once, and says so. 80 wells or more keep
    the single split."""
    df = _sites()
    r = separability(df)
    assert r.params["cv"] == 5 and r.n_test == 32 and len(r.predictions) == len(df)
    assert "32 wells < 80: 5-fold cross-validation grouped by well" in r.params["validation"]
    keys = r.predictions["Metadata_Plate"] + "/" + r.predictions["Metadata_Well"]
    assert keys.nunique() == 32  # each well once, all its sites together
    big = separability(_sites(n_wells=40))  # 80 plate-wells
    assert big.params["cv"] is None and big.n_test == 20 and "one split" in big.params["validation"]
    tiny = separability(_sites(n_wells=7, plates=("P1",)))  # BBBC016-sized: 4 C+ and 3 C- wells
    assert tiny.params["cv"] == 3 and tiny.n_test == 7


def test_no_signal_is_near_chance_with_cv() -> None:
    df = _sites(shift=0.0, n_wells=24, seed=3)
    r = separability(df, positive="Metadata_Role == 'positive'", negative="Metadata_Role == 'negative'", cv=4)
    assert 0.25 <= r.accuracy <= 0.75
    assert r.confusion.to_numpy().sum() == len(df)  # out-of-fold: every row predicted once
    strong = separability(_sites(shift=4.0, n_wells=24), cv=4)  # default controls from Metadata_Role
    assert strong.accuracy > 0.95


def test_by_breakdown_and_default_queries() -> None:
    r = separability(_sites(), by="Metadata_CellType", cv=3)
    assert set(r.per_group["Metadata_CellType"]) == {"HRCE", "VERO"}
    assert r.per_group["n"].sum() == len(r.predictions)
    pos, neg = default_controls(pd.DataFrame({"Metadata_Condition": ["Mock"], "Metadata_Treatment": [""], "f": [1.0]}))
    assert "Mock" in pos and "Active SARS-CoV-2" in neg


def test_classify_cell_type_and_zero_shot_across_plates() -> None:
    df = _sites(shift=0.0)
    r = classify(df, label="Metadata_CellType", cv=4)
    assert r.accuracy > 0.85 and r.classes == ["HRCE", "VERO"]
    z = zero_shot(df[df.Metadata_Plate == "P1"], df[df.Metadata_Plate == "P2"], label="Metadata_CellType")
    assert z.accuracy > 0.85 and z.n_test == (df.Metadata_Plate == "P2").sum()
    assert z.confusion.loc["VERO"].sum() == (df[df.Metadata_Plate == "P2"].Metadata_CellType == "VERO").sum()


def test_errors_name_the_culprit() -> None:
    df = _sites()
    with pytest.raises(ConfigError, match="Metadata_Rolle"):
        separability(df, positive="Metadata_Rolle == 'positive'", negative="Metadata_Role == 'negative'")
    with pytest.raises(DataError, match="'healthy'.*Metadata_Role has"):
        separability(df, positive="Metadata_Role == 'healthy'", negative="Metadata_Role == 'negative'")
    with pytest.raises(ConfigError, match="both"):
        separability(df, positive="Metadata_Site > 0", negative="Metadata_Role == 'negative'")
    with pytest.raises(ConfigError, match="Metadata_Cell"):
        classify(df, label="Metadata_Cell")
    with pytest.raises(ConfigError, match="cv=99"):
        separability(df, cv=99)
    with pytest.raises(DataError, match="f4"):
        zero_shot(df, df.drop(columns="f4"), label="Metadata_CellType")
    with pytest.raises(DataError, match="at least 2"):
        separability(df[df.Metadata_Well.isin(["B01", "B02"]) & (df.Metadata_Plate == "P1")])


def test_rows_with_nan_features_are_dropped_and_counted() -> None:
    df = _sites()
    df.loc[[0, 5, 7], "f2"] = np.nan
    r = separability(df, cv=3)
    assert r.params["n_rows_dropped_nan"] == 3
    assert r.confusion.to_numpy().sum() == len(df) - 3
    df["f0"] = "x"
    with pytest.raises(DataError, match="f0"):
        separability(df)  # a text column that does not start with Metadata_ is named


def test_zero_shot_reports_classes_unseen_in_training() -> None:
    df = _sites(shift=0.0)
    train = df[(df.Metadata_Plate == "P1")]
    test = df[df.Metadata_Plate == "P2"].copy()
    test.loc[test.index[:6], "Metadata_CellType"] = "A549"
    z = zero_shot(train, test, label="Metadata_CellType")
    assert z.params["unseen_classes"] == ["A549"]
    assert z.confusion.loc["A549", "A549"] == 0 and z.confusion.loc["A549"].sum() == 6


def test_scaler_over_all_wells_is_label_free_and_uses_every_row() -> None:
    """scaler="wells": one standardization from every row of the table (treated rows too), before the
    split; the SVM then sees exactly those z-scores. Checked against a hand-made sklearn fit."""
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.svm import LinearSVC

    df = _sites(n_wells=12, plates=("P1",), sites=1)
    extra = df.iloc[:6].copy()
    extra["Metadata_Role"], extra["Metadata_Well"] = "treated", [f"T{i}" for i in range(6)]
    extra[["f0", "f1"]] += 25.0  # treated wells far off: they move the table's mean and SD
    df = pd.concat([df, extra], ignore_index=True)
    r = separability(df, cv=3, scaler="wells")
    assert r.params["scaler"] == "wells"
    feats = [f"f{i}" for i in range(5)]
    X = df[feats].to_numpy()
    Z = (X - X.mean(0)) / X.std(0)
    ctrl = (df["Metadata_Role"] != "treated").to_numpy()
    y = np.where(df["Metadata_Role"][ctrl] == "positive", "positive", "negative")
    dec = np.empty(ctrl.sum())
    folds = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0).split(Z[ctrl], y, df["Metadata_Well"][ctrl])
    for tr, te in folds:
        svm = LinearSVC(C=1.0, class_weight="balanced", dual="auto", random_state=0, max_iter=20000)
        dec[te] = svm.fit(Z[ctrl][tr], y[tr]).decision_function(Z[ctrl][te])
    np.testing.assert_allclose(np.sort(r.predictions["decision"].to_numpy()), np.sort(dec), rtol=1e-6)
    assert separability(df, cv=3).params["scaler"] == "controls"  # the default is unchanged
