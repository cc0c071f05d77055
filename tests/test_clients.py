"""Our tables in the clients analysts use: pycytominer (aggregate -> normalize -> feature_select ->
spherize) and copairs on a full profile table, run on real outputs (synthetic screen -> index ->
random-d embedding), plus JUMP pert_type <-> Role and human-readable feature labels.
The calls here are the ones README.md ("Use with") shows."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

pycytominer = pytest.importorskip("pycytominer")
copairs_map = pytest.importorskip("copairs.map")

from gandl_core.analysis import profiles  # noqa: E402
from gandl_core.tables import feature_columns, metadata_columns, read_table  # noqa: E402

NEG = "Metadata_Role == 'negative'"


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """Two HRCE plates, 48 px fields: 6 C+ and 6 C- wells and 3 compounds x 3 doses x 2 per plate."""
    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.random_d import random_d_featurizer
    from gandl_core.plates import build_index, channel_names
    from gandl_core.progress import run_to_end
    from gandl_core.synth import make_screen

    base = tmp_path_factory.mktemp("clients")
    root = make_screen(base / "screen", plates=2, seed=0, image_size=48, compounds=3, replicates=2, controls=6,
                       uv_controls=0, cell_types=("HRCE",), doses=(0.1, 1.0, 10.0))
    index = build_index(root)
    f = random_d_featurizer(channel_names(index), preset="cpu-tiny", resolution=16, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_to_end(embed_iter(index, f, out=base / "randd.parquet", batch_size=32, field_mode="resize"))
    return {"root": root, "index": index, "sites": read_table(base / "randd.parquet"), "base": base}


def test_metadata_has_no_nulls_untreated_dose_is_zero(screen):
    sites = screen["sites"]
    meta = metadata_columns(sites)
    assert not sites[meta].isna().any().any()
    untreated = sites["Metadata_Treatment"] == ""
    assert untreated.sum() == 24 and (sites.loc[untreated, "Metadata_Concentration"] == 0.0).all()
    assert (sites.loc[~untreated, "Metadata_Concentration"] > 0).all()


def _pycytominer_profiles(sites: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """The README's recipe: well medians, each plate standardized to its C- wells, features selected,
    each plate sphered on its C- wells."""
    from pycytominer import aggregate, feature_select, normalize

    feats = feature_columns(sites)
    # pycytominer's aggregate keeps only the strata: list every well-level metadata column there.
    strata = [c for c in metadata_columns(sites) if c not in ("Metadata_Site", "Metadata_SiteId")]
    wells = aggregate(sites, strata=strata, features=feats, operation="median")
    meta = metadata_columns(wells)
    norm = pd.concat([normalize(p, features=feats, meta_features=meta, samples=NEG, method="standardize")
                      for _, p in wells.groupby("Metadata_Plate", sort=False)], ignore_index=True)
    sel = feature_select(norm, features=feats,
                         operation=["variance_threshold", "correlation_threshold", "drop_na_columns"])
    kept = feature_columns(sel)
    # Per plate: plate-standardized controls pooled over plates lose one rank per plate, which
    # pycytominer's Spherize refuses when there are more features than control wells.
    sph = pd.concat([normalize(p, features=kept, meta_features=meta, samples=NEG, method="spherize",
                               spherize_method="ZCA")
                     for _, p in sel.groupby("Metadata_Plate", sort=False)], ignore_index=True)
    return wells, norm, sph, kept


def test_pycytominer_chain_matches_ours(screen):
    sites = screen["sites"]
    feats = feature_columns(sites)
    wells, norm, sph, kept = _pycytominer_profiles(sites)
    assert len(wells) == 60 and wells["Metadata_Role"].value_counts().to_dict() == {
        "treated": 36, "positive": 12, "negative": 12}
    # Same numbers as gandl_core's aggregate and plate normalization (both: ddof=0 standardization).
    ours = profiles.normalize_plates(profiles.aggregate(sites), controls=NEG)
    key = ["Metadata_Plate", "Metadata_Well"]
    a = wells.sort_values(key)[feats].to_numpy(np.float64)
    b = profiles.aggregate(sites).sort_values(key)[feats].to_numpy(np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    na, no = norm.sort_values(key), ours.sort_values(key)
    var = na[feats].std().to_numpy() > 1e-6
    np.testing.assert_allclose(na[feats].to_numpy()[:, var], no[feats].to_numpy()[:, var], rtol=1e-3, atol=1e-3)
    assert 0 < len(kept) < len(feats)
    x = sph[kept].to_numpy()
    assert np.isfinite(x).all()
    # Sphered C- wells of a plate: unit variance along every direction they span (5 = 6 wells - 1).
    ctrl = sph[(sph["Metadata_Plate"] == sph["Metadata_Plate"].iloc[0]) & (sph["Metadata_Role"] == "negative")]
    lam = np.linalg.eigvalsh(np.cov(ctrl[kept].to_numpy(), rowvar=False))[::-1]
    np.testing.assert_allclose(lam[:5], 1.0, rtol=0.05)
    assert lam[5] < 1e-6


def test_copairs_on_full_profile_table(screen):
    """copairs gets every metadata column as they are (it refuses nulls in the columns it groups by)."""
    from copairs.map import average_precision, mean_average_precision

    prof = profiles.add_pert_type(profiles.normalize_plates(profiles.aggregate(screen["sites"]), controls=NEG))
    meta, feats = prof[metadata_columns(prof)], feature_columns(prof)
    same = ["Metadata_Treatment", "Metadata_Concentration"]
    ap = average_precision(meta, prof[feats].to_numpy(), pos_sameby=same, pos_diffby=[], neg_sameby=[],
                           neg_diffby=same, progress_bar=False)
    assert len(ap) == 60 and ap["average_precision"].between(0, 1).all()
    per = mean_average_precision(ap, same, null_size=100, threshold=0.05, seed=0, progress_bar=False)
    assert len(per) == 3 * 3 + 1  # every dose of every compound, and the untreated wells (dose 0)
    # Tables made before untreated wells got dose 0 fail exactly here:
    old = meta.copy()
    old.loc[old["Metadata_Treatment"] == "", "Metadata_Concentration"] = np.nan
    with pytest.raises(ValueError, match="null"):
        average_precision(old, prof[feats].to_numpy(), pos_sameby=same, pos_diffby=[], neg_sameby=[],
                          neg_diffby=same, progress_bar=False)
    # JUMP-style selection of controls works on the same table.
    assert (prof.loc[prof["Metadata_Role"] == "negative", "Metadata_pert_type"] == "negcon").all()


def test_pert_type_and_role_round_trip():
    df = pd.DataFrame({"Metadata_Role": ["negative", "positive", "treated", "other"], "f": [1.0, 2, 3, 4]})
    jump = profiles.add_pert_type(df)
    assert jump.columns.tolist() == ["Metadata_Role", "Metadata_pert_type", "f"]
    assert jump["Metadata_pert_type"].tolist() == ["negcon", "poscon", "trt", "other"]
    back = profiles.add_role(jump.drop(columns="Metadata_Role"))
    assert back["Metadata_Role"].tolist() == df["Metadata_Role"].tolist()
    lincs = profiles.add_role(pd.DataFrame({"Metadata_pert_type": ["control", "trt"], "f": [0.0, 1]}))
    assert lincs["Metadata_Role"].tolist() == ["negative", "treated"]
    from gandl_core.errors import DataError

    with pytest.raises(DataError, match="no Metadata_Role"):
        profiles.add_pert_type(df.drop(columns="Metadata_Role"))


def test_feature_labels_of_handcrafted_tables_and_their_profiles(screen, tmp_path):
    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.registry import make_featurizer
    from gandl_core.plates import channel_names
    from gandl_core.progress import run_to_end

    index = screen["index"]
    hc = make_featurizer("handcrafted", channel_names(index))
    out = tmp_path / "hc.parquet"
    run_to_end(embed_iter(index, hc, out=out, wells=["B02", "B03"]))
    labels = profiles.feature_labels(out)
    assert labels["HC_000"] == "Intensity_mean_DNA" and len(labels) == hc.n_features
    assert profiles.feature_labels(read_table(out)) == labels
    named = read_table(out).rename(columns=labels)
    assert "Intensity_mean_DNA" in named.columns and not named.filter(like="HC_").shape[1]
    # A profile table written by the CLI keeps its source's labels.
    prof = tmp_path / "prof.parquet"
    r = subprocess.run([sys.executable, "-m", "gandl_core.cli", "profile", str(out), "-o", str(prof)],
                       capture_output=True, text=True, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    assert profiles.feature_labels(prof) == labels
    assert profiles.feature_labels(screen["sites"]) == {}  # learned features have no names
