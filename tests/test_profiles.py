"""Per-well profiles: aggregation, per-plate normalization to controls, sphering; real LINCS check."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from gandl_core.analysis.profiles import MAD_SCALE, aggregate, normalize_plates, sphere
from gandl_core.errors import ConfigError, DataError


def _sites(seed: int = 0, plates=("P1", "P2"), wells=("B02", "B03", "C02", "C03"), n_sites=3, n_feat=6):
    rng = np.random.default_rng(seed)
    rows = []
    for p_i, p in enumerate(plates):
        for w in wells:
            role = "negative" if w.startswith("B") else "treated"
            for s in range(1, n_sites + 1):
                rows.append({"Metadata_Plate": p, "Metadata_Well": w, "Metadata_Site": s,
                             "Metadata_Role": role, "Metadata_Concentration": np.nan if role == "negative" else 1.0,
                             "Metadata_SiteId": f"{p}_{w}_{s}"})
    meta = pd.DataFrame(rows)
    # Plate 2 has a batch effect: shifted and scaled features.
    x = rng.normal(size=(len(meta), n_feat))
    x[meta.Metadata_Plate == "P2"] = x[meta.Metadata_Plate == "P2"] * 3 + 10
    feats = pd.DataFrame(x.astype(np.float32), columns=[f"GAN_{i:03d}" for i in range(n_feat)])
    return pd.concat([meta, feats], axis=1)


def test_aggregate_median_and_metadata() -> None:
    df = _sites()
    agg = aggregate(df)
    assert len(agg) == 8
    # Strata first, then the constant metadata, then the count, then features.
    assert list(agg.columns[:5]) == ["Metadata_Plate", "Metadata_Well", "Metadata_Role",
                                     "Metadata_Concentration", "Metadata_Sites"]
    assert "Metadata_Site" not in agg.columns and "Metadata_SiteId" not in agg.columns
    assert (agg.Metadata_Sites == 3).all()
    one = df[(df.Metadata_Plate == "P2") & (df.Metadata_Well == "C03")]
    row = agg[(agg.Metadata_Plate == "P2") & (agg.Metadata_Well == "C03")].iloc[0]
    np.testing.assert_allclose(row["GAN_004"], np.median(one["GAN_004"]), rtol=1e-6)
    assert agg["GAN_000"].dtype == np.float32
    # NaN concentration is constant within the negative wells, so the column survives.
    assert agg[agg.Metadata_Role == "negative"].Metadata_Concentration.isna().all()
    mean = aggregate(df, method="mean")
    np.testing.assert_allclose(mean.loc[7, "GAN_004"], one["GAN_004"].mean(), rtol=1e-5)


def test_aggregate_errors() -> None:
    df = _sites()
    with pytest.raises(ConfigError, match="--aggregate"):
        aggregate(df, method="max")
    with pytest.raises(DataError, match="Metadata_Batch"):
        aggregate(df, strata=["Metadata_Batch"])


def test_standardize_controls_mean0_sd1_per_plate() -> None:
    wells = aggregate(_sites(n_sites=2, wells=("B02", "B03", "B04", "C02", "C03")))
    z = normalize_plates(wells, controls="Metadata_Role == 'negative'")
    feats = [c for c in z.columns if c.startswith("GAN_")]
    for plate in ("P1", "P2"):
        c = z[(z.Metadata_Plate == plate) & (z.Metadata_Role == "negative")][feats].to_numpy(np.float64)
        np.testing.assert_allclose(c.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(c.std(axis=0), 1, atol=1e-5)
    # Non-control wells are moved by the same transform (not standardized themselves).
    p1 = wells[wells.Metadata_Plate == "P1"]
    ctrl = p1[p1.Metadata_Role == "negative"]["GAN_002"].to_numpy(np.float64)
    x = p1[p1.Metadata_Well == "C02"]["GAN_002"].iloc[0]
    expect = (x - ctrl.mean()) / ctrl.std()
    got = z[(z.Metadata_Plate == "P1") & (z.Metadata_Well == "C02")]["GAN_002"].iloc[0]
    assert got == pytest.approx(expect, rel=1e-5)
    assert list(z.columns) == list(wells.columns) and len(z) == len(wells)


def test_mad_robust_to_an_outlier_control() -> None:
    wells = aggregate(_sites(n_sites=1, plates=("P1",), wells=("B02", "B03", "B04", "B05", "B06", "C02")))
    wells.loc[wells.Metadata_Well == "B06", "GAN_000"] = 1e6  # one broken control well
    z = normalize_plates(wells, controls="Metadata_Role == 'negative'", method="mad")
    ctrl = z[z.Metadata_Role == "negative"]
    for f in [c for c in z.columns if c.startswith("GAN_")]:
        assert np.median(ctrl[f]) == pytest.approx(0, abs=1e-5)
        mad = MAD_SCALE * np.median(np.abs(ctrl[f] - np.median(ctrl[f])))
        assert mad == pytest.approx(1, rel=1e-4)
    # The clean wells stay at a normal scale despite the 1e6 outlier.
    assert ctrl[ctrl.Metadata_Well != "B06"]["GAN_000"].abs().max() < 10


def test_controls_none_uses_all_rows_and_none_method() -> None:
    wells = aggregate(_sites())
    z = normalize_plates(wells, controls=None)
    p2 = z[z.Metadata_Plate == "P2"]["GAN_001"].to_numpy(np.float64)
    assert p2.mean() == pytest.approx(0, abs=1e-5) and p2.std() == pytest.approx(1, abs=1e-5)
    same = normalize_plates(wells, controls=None, method="none")
    pd.testing.assert_frame_equal(same, wells)


def test_constant_feature_left_at_zero_with_warning() -> None:
    wells = aggregate(_sites())
    wells["GAN_003"] = np.float32(7.0)
    with pytest.warns(UserWarning, match="GAN_003"):
        z = normalize_plates(wells, controls="Metadata_Role == 'negative'")
    assert (z["GAN_003"] == 0).all()
    assert np.isfinite(z[[c for c in z.columns if c.startswith("GAN_")]].to_numpy()).all()


def test_missing_controls_names_plate_query_and_values() -> None:
    wells = aggregate(_sites())
    wells.loc[wells.Metadata_Plate == "P2", "Metadata_Role"] = "other"
    with pytest.raises(DataError) as err:
        normalize_plates(wells, controls="Metadata_Role == 'negative'")
    msg = str(err.value)
    assert "'P2'" in msg and "Metadata_Role == 'negative'" in msg and "'other'" in msg
    with pytest.raises(ConfigError, match="Metadata_Nope"):
        normalize_plates(wells, controls="Metadata_Nope == 'x'")
    with pytest.raises(ConfigError, match="--method"):
        normalize_plates(wells, controls=None, method="zscore")


def test_sphere_whitens_controls() -> None:
    rng = np.random.default_rng(3)
    n, p = 400, 5
    a = rng.normal(size=(p, p))
    x = rng.normal(size=(n, p)) @ a + 5  # correlated features
    df = pd.DataFrame(x, columns=[f"GAN_{i:03d}" for i in range(p)])
    df.insert(0, "Metadata_Role", np.where(np.arange(n) % 2 == 0, "negative", "treated"))
    for method in ("zca", "pca"):
        s = sphere(df, controls="Metadata_Role == 'negative'", method=method)
        c = s[s.Metadata_Role == "negative"].iloc[:, 1:].to_numpy()
        np.testing.assert_allclose(np.cov(c, rowvar=False), np.eye(p), atol=1e-3)
        np.testing.assert_allclose(c.mean(axis=0), 0, atol=1e-8)
    # ZCA is the symmetric whitening: the closest whitened data to the input (per feature correlation high).
    s = sphere(df, controls=None)
    corr = [np.corrcoef(df.iloc[:, 1 + i], s.iloc[:, 1 + i])[0, 1] for i in range(p)]
    assert min(corr) > 0.3
    with pytest.raises(DataError, match="at least 2"):
        sphere(df.iloc[:2], controls="Metadata_Role == 'negative'")
    with pytest.raises(ConfigError, match="epsilon"):
        sphere(df, controls=None, epsilon=0)


def test_real_lincs_plate_normalized_to_dmso(shared_data) -> None:
    df = pd.read_csv(shared_data / "lincs_SQ00015054_profiles" / "SQ00015054_normalized_feature_select.csv.gz")
    assert len(df) == 384
    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    q_type = "Metadata_pert_type == 'control'"
    q_dmso = "Metadata_broad_sample == 'DMSO'"
    z = normalize_plates(df, controls=q_type)
    # Both ways of naming the controls select the same 24 wells, so they agree exactly.
    pd.testing.assert_frame_equal(z, normalize_plates(df, controls=q_dmso))
    dmso = z[z.Metadata_broad_sample == "DMSO"][feats].to_numpy(np.float64)
    assert dmso.shape == (24, len(feats))
    np.testing.assert_allclose(dmso.mean(axis=0), 0, atol=1e-8)
    np.testing.assert_allclose(dmso.std(axis=0), 1, atol=1e-8)
    # The two proteasome inhibitors (12 wells each) sit far from DMSO; most compounds do not.
    dist = np.sqrt((z[feats].to_numpy(np.float64) ** 2).mean(axis=1))
    counts = df.Metadata_broad_sample.value_counts()
    strong = counts[(counts == 12)].index
    assert len(strong) == 2
    strong_d = dist[df.Metadata_broad_sample.isin(strong).to_numpy()]
    dmso_d = dist[(df.Metadata_broad_sample == "DMSO").to_numpy()]
    assert np.median(strong_d) > 3 * np.median(dmso_d)
    # MAD normalization and sphering run on real numbers without NaN/inf.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = normalize_plates(df, controls=q_type, method="mad")
    assert np.isfinite(m[feats].to_numpy()).all()
    s = sphere(z, controls=q_type, epsilon=1e-2)
    assert np.isfinite(s[feats].to_numpy()).all()
    sd = s[s.Metadata_pert_type == "control"][feats].to_numpy()
    # 24 controls span at most 23 directions: their whitened covariance has ~23 unit eigenvalues.
    ev = np.linalg.eigvalsh(np.cov(sd, rowvar=False))
    assert np.sum(ev > 0.5) == 23


def test_profile_cli(tmp_path) -> None:
    from gandl_core.cli import main
    from gandl_core.tables import read_table, write_table

    sites = _sites(wells=("B02", "B03", "B04", "C02", "C03"))
    src = tmp_path / "emb.parquet"
    write_table(sites, src, metadata={"field_mode": "tiles", "rows": [[0, 30]]})
    out = tmp_path / "prof.parquet"
    rc = main(["profile", str(src), "-o", str(out), "--controls", "Metadata_Role == 'negative'"])
    assert rc == 0
    prof = read_table(out)
    assert len(prof) == 10 and (prof.Metadata_Sites == 3).all()
    ctrl = prof[(prof.Metadata_Plate == "P2") & (prof.Metadata_Role == "negative")]["GAN_000"]
    assert ctrl.mean() == pytest.approx(0, abs=1e-5) and ctrl.std(ddof=0) == pytest.approx(1, abs=1e-5)
    md = prof.attrs["gandl"]
    assert md["source_metadata"]["field_mode"] == "tiles" and md["controls"] == "Metadata_Role == 'negative'"
    # Existing output and a query matching nothing: exit code 2 with the culprit named.
    assert main(["profile", str(src), "-o", str(out)]) == 1
    assert main(["profile", str(src), "-o", str(tmp_path / "x.parquet"),
                 "--controls", "Metadata_Role == 'mock'"]) == 1
    rc = main(["profile", str(src), "-o", str(out), "--overwrite", "--controls", "Metadata_Role == 'negative'",
               "--method", "mad", "--aggregate", "mean", "--sphere", "--epsilon", "0.1"])
    assert rc == 0 and read_table(out).attrs["gandl"]["sphere"] is True
