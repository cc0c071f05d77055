"""Projection: On axis = SVM normal scaled to the controls, Off axis orthogonal; sklearn contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from gandl_core.analysis.projection import Projection, project_table, ssmd, z_prime
from gandl_core.errors import ConfigError, DataError


def _controls(n: int = 40, d: int = 6, seed: int = 0, shift: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """C+ shifted along feature 0 only; feature 2 has a large variance (the Off direction)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(2 * n, d))
    X[:, 2] *= 5.0
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    X[y == 1, 0] += shift
    return X, y


@parametrize_with_checks([Projection()])
def test_sklearn_compatible(estimator, check) -> None:
    # Projection is binary-only; its __sklearn_tags__ tell the checks to use binary y, so every check applies.
    check(estimator)


def test_controls_map_to_plus_minus_one_and_axis_is_the_shift() -> None:
    X, y = _controls()
    p = Projection().fit(X, y)
    E = p.transform(X)
    assert E.shape == (len(X), 2)
    assert E[y == 1, 0].mean() == pytest.approx(1.0)
    assert E[y == 0, 0].mean() == pytest.approx(-1.0)
    assert np.linalg.norm(p.coef_) == pytest.approx(1.0)
    assert abs(p.coef_[0]) > 0.9  # the normal points along the shifted feature
    assert p.coef_[0] > 0  # oriented towards C+


def test_off_axis_is_orthogonal_centred_and_scaled_like_on() -> None:
    X, y = _controls()
    p = Projection().fit(X, y)
    E = p.transform(X)
    Z = (X - p.mean_) / p.scale_
    u = p.svm_.coef_[0] / np.linalg.norm(p.svm_.coef_[0])
    off_dir = p.off_coef_ * p.scale_  # the Off direction in standardized space
    assert abs(off_dir @ u) < 1e-8 * np.linalg.norm(off_dir)
    assert E[:, 1].mean() == pytest.approx(0.0, abs=1e-9)
    assert E[:, 1].std() == pytest.approx(E[:, 0].std())
    unit = Projection(off_scale="unit").fit(X, y).transform(X)
    assert unit[:, 1].std() == pytest.approx(1.0)
    # Off = first principal direction of the standardized data with the On component removed.
    Zp = Z - np.outer(Z @ u, u)
    pc1 = np.linalg.svd(Zp - Zp.mean(0), full_matrices=False)[2][0]
    assert abs(off_dir @ pc1) / np.linalg.norm(off_dir) == pytest.approx(1.0, abs=1e-8)
    # Without standardization the high-variance feature 2 dominates Off.
    raw = Projection(standardize=False).fit(X, y)
    assert abs(raw.off_coef_[2]) / np.linalg.norm(raw.off_coef_) > 0.95


def test_labels_minus_one_and_named_classes_c2() -> None:
    X, y = _controls()
    a = Projection().fit(X, y).transform(X)
    b = Projection().fit(X, np.where(y == 1, 1, -1)).transform(X)
    np.testing.assert_allclose(a, b)
    cells = np.where(y == 1, "VERO", "HRCE")
    c = Projection(pos_label="VERO").fit(X, cells).transform(X)
    np.testing.assert_allclose(a, c)
    with pytest.raises(ValueError, match="binary-only"):
        Projection().fit(X, np.arange(len(X)) % 3)


def test_not_fitted_and_wrong_width() -> None:
    X, y = _controls()
    with pytest.raises(NotFittedError):
        Projection().transform(X)
    with pytest.raises(ValueError):
        Projection().fit(X, y).transform(X[:, :3])


def _table() -> pd.DataFrame:
    X, y = _controls(n=20, shift=20.0)  # 20 sd apart: Z' about 0.7
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    df.insert(0, "Metadata_Role", np.where(y == 1, "positive", "negative"))
    df.insert(0, "Metadata_Well", [f"A{i:02d}" for i in range(len(df))])
    extra = df.iloc[:3].copy()
    extra["Metadata_Role"] = "treated"
    return pd.concat([df, extra], ignore_index=True)


def test_project_table_scores_every_row_with_z_prime() -> None:
    df = _table()
    proj, scores, stats = project_table(df)  # defaults to Metadata_Role
    assert list(scores.columns[-3:]) == ["OnScore", "OffScore", "Metadata_Control"]
    assert list(proj.get_feature_names_out()) == ["OnScore", "OffScore"]
    assert len(scores) == len(df) and "f0" not in scores
    pos, neg = df["Metadata_Role"] == "positive", df["Metadata_Role"] == "negative"
    on = scores.OnScore
    assert stats["z_prime_in_sample"] == pytest.approx(z_prime(on[pos], on[neg]))
    assert stats["ssmd_in_sample"] == pytest.approx(ssmd(on[pos], on[neg]))
    assert 0.5 < stats["z_prime_in_sample"] < 0.9 and stats["on_mean_positive"] == pytest.approx(1.0)
    # the headline Z' is the out-of-fold one, and says so
    assert stats["z_prime"] < stats["z_prime_in_sample"] and stats["z_prime"] > 0.3
    assert stats["z_prime_method"].startswith("out of fold") and stats["cv"] == 4
    assert scores.attrs["gandl"]["projection"] is stats  # carried into scores.parquet for dose-response
    assert list(proj.feature_names_in_) == [f"f{i}" for i in range(6)]


def test_table_errors_name_the_culprit() -> None:
    df = _table()
    with pytest.raises(ConfigError, match="Metadata_Rol "):
        Projection().fit_table(df, positive="Metadata_Rol == 'x'", negative="Metadata_Role == 'negative'")
    with pytest.raises(DataError, match="'nope'"):
        Projection().fit_table(df, positive="Metadata_Role == 'nope'", negative="Metadata_Role == 'negative'")
    with pytest.raises(ConfigError, match="both"):
        Projection().fit_table(df, positive="Metadata_Role != ''", negative="Metadata_Role == 'negative'")
    p = Projection().fit_table(df)
    with pytest.raises(DataError, match="f5"):
        p.transform_table(df.drop(columns="f5"))


def test_c2_cell_type_projection_from_a_table() -> None:
    """C2: the same estimator with two cell types as the classes (pandas queries on the cell-type column)."""
    rng = np.random.default_rng(2)
    n = 30
    X = rng.normal(size=(2 * n, 4))
    X[n:, 3] += 8.0  # VERO differs along feature 3
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    df.insert(0, "Metadata_CellType", ["HRCE"] * n + ["VERO"] * n)
    _, scores, stats = project_table(df, positive="Metadata_CellType == 'VERO'", negative="Metadata_CellType == 'HRCE'")
    means = scores.groupby("Metadata_CellType")["OnScore"].mean()
    assert means["VERO"] == pytest.approx(1.0) and means["HRCE"] == pytest.approx(-1.0)
    assert 0.1 < stats["z_prime_in_sample"] < 0.35  # 8 sd apart: ideal Z' = 1 - 6/8 = 0.25
    assert 0.0 < stats["z_prime"] < 0.35


def test_rows_with_nan_features_get_nan_scores() -> None:
    df = _table()
    df.loc[len(df) - 1, "f1"] = np.nan  # a treated row
    _, scores, _ = project_table(df)
    assert np.isnan(scores["OnScore"].iloc[-1]) and np.isfinite(scores["OnScore"].iloc[:-1]).all()


def test_off_axis_matches_svd_for_wide_tables() -> None:
    """More features than rows (e.g. 48 control wells x 512 GAN features): same PC1 as a full SVD."""
    X, y = _controls(n=10, d=40, seed=4)
    p = Projection().fit(X, y)
    Z = (X - p.mean_) / p.scale_
    u = p.svm_.coef_[0] / np.linalg.norm(p.svm_.coef_[0])
    Zp = Z - np.outer(Z @ u, u)
    pc1 = np.linalg.svd(Zp - Zp.mean(0), full_matrices=False)[2][0]
    off_dir = p.off_coef_ * p.scale_
    assert abs(off_dir @ pc1) / np.linalg.norm(off_dir) == pytest.approx(1.0, abs=1e-6)


def test_out_of_fold_z_prime_exposes_overfitting_on_noise() -> None:
    """200 noise features, 12 wells per class: the SVM separates the controls perfectly in-sample
    (large SSMD) but out-of-fold scores show there is no signal."""
    rng = np.random.default_rng(7)
    df = pd.DataFrame(rng.normal(size=(24, 200)), columns=[f"f{i}" for i in range(200)])
    df.insert(0, "Metadata_Role", ["positive", "negative"] * 12)
    df.insert(0, "Metadata_Well", [f"A{i:02d}" for i in range(24)])
    _, _, stats = project_table(df, cv=4)
    assert stats["ssmd_in_sample"] > 5  # in-sample: looks like a strong assay
    assert abs(stats["ssmd"]) < 1.5 and stats["z_prime"] < 0  # headline, out of fold: controls overlap
    _, _, none = project_table(df, cv=None)  # no cross-validation asked: in sample, and labelled so
    assert none["z_prime"] == none["z_prime_in_sample"] and none["z_prime_method"].startswith("in sample")


def test_lincs_like_signal_survives_cross_validation() -> None:
    df = _table()
    _, _, stats = project_table(df, cv=4)
    assert stats["z_prime"] > 0.3 and stats["ssmd"] > 3


def test_few_control_wells_still_get_an_out_of_fold_z_prime() -> None:
    """BBBC016-sized: 3 C- and 4 C+ wells. cv=4 cannot put a C- well in every fold; the folds shrink to
    the smaller class (3) instead of falling back to the optimistic in-sample figure."""
    df = _table()
    small = pd.concat([df[df.Metadata_Role == "negative"].iloc[:3], df[df.Metadata_Role == "positive"].iloc[:4]])
    _, _, stats = project_table(small, cv=4)
    assert stats["cv"] == 3 and stats["z_prime_method"].startswith("out of fold")
    assert stats["z_prime"] != stats["z_prime_in_sample"]


def test_score_tables_of_older_versions_still_read() -> None:
    from gandl_core.analysis.projection import with_score_names

    old = pd.DataFrame({"Metadata_Well": ["A01"], "On": [0.5], "Off": [0.1]})
    assert list(with_score_names(old).columns) == ["Metadata_Well", "OnScore", "OffScore"]
    new = old.rename(columns={"On": "OnScore", "Off": "OffScore"})
    assert with_score_names(new) is new
