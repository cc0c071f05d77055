"""The explain module: real sites along the On axis, the readout, and placing one image on the axis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from gandl_core.analysis import explain
from gandl_core.analysis.explain_generator import FeatureAxis, ProfileAxis, feature_axis, profile_axis
from gandl_core.errors import ConfigError, DataError


# -- the readout --------------------------------------------------------------------------------


def test_spot_fraction_rises_with_the_synthetic_infection_and_ignores_gain_and_offset() -> None:
    from gandl_core.synth import render_site

    rng = np.random.default_rng(0)
    means = []
    for q in (0.0, 0.3, 0.6, 1.0):
        reads = [explain.spot_fraction(render_site(np.random.default_rng([s, 7]), size=64, cell_type="HRCE",
                                                   infected_fraction=q, infected_well=q > 0)[3] * 6000 + 600
                                       + rng.normal(0, 30, (64, 64))) for s in range(5)]
        means.append(np.nanmean(reads))
    assert np.all(np.diff(means) > 0), means  # more infected cells -> more RNA puncta
    assert means[-1] > 2 * means[0]
    img = render_site(np.random.default_rng(1), size=48, cell_type="HRCE", infected_fraction=0.5)[3]
    assert explain.spot_fraction(img * 7.0 + 3.0) == pytest.approx(explain.spot_fraction(img), rel=1e-6)
    # a field without cells has nothing to divide: NaN, not a ratio of camera noise
    assert np.isnan(explain.spot_fraction(600 + rng.normal(0, 30, (48, 48))))
    assert np.isnan(explain.spot_fraction(np.zeros((8, 8))))
    with pytest.raises(DataError, match="one channel"):
        explain.spot_fraction(np.zeros((2, 8, 8)))


# -- the montage ----------------------------------------------------------------------------------


def _truth_scores(screen) -> pd.DataFrame:
    """Well scores that follow the screen's true infected fraction (C- = -1 .. C+ = +1), with noise."""
    wells = pd.read_csv(screen / "wells.csv")
    rng = np.random.default_rng(3)
    on = 1.0 - 2.0 * wells["true_infected_fraction"] / 0.9 + rng.normal(0, 0.05, len(wells))
    return pd.DataFrame({"Metadata_Plate": wells["experiment"] + "_Plate" + wells["plate"].astype(str),
                         "Metadata_Well": wells["well"], "Metadata_CellType": wells["cell_type"],
                         "Metadata_Role": wells["role"], "OnScore": on})


def test_montage_walks_the_quantiles_and_shows_the_phenotype_falling_towards_c_plus(synth_screen) -> None:
    from gandl_core.plates import build_index, read_site

    index = build_index(synth_screen)
    scores = _truth_scores(synth_screen)
    hrce = scores[scores["Metadata_CellType"] == "HRCE"]  # VERO's baseline RNA differs: one population at a time
    m = explain.axis_montage(hrce, index, n=7, per_quantile=2, crop=32, seed=0)
    assert m.images.shape == (7, 2, 5, 32, 32) and m.channels == ["DNA", "ER", "Actin", "RNA", "Golgi"]
    t = m.table
    assert list(t["column"]) == [k for k in range(7) for _ in range(2)]
    assert not t.duplicated(["Metadata_Plate", "Metadata_Well"]).any()  # no well twice
    assert (t.groupby("column")["OnScore"].mean().diff().dropna() > 0).all()  # C- end first
    assert np.allclose(t["target"].unique(), np.quantile(hrce["OnScore"], np.linspace(0.02, 0.98, 7)))
    # each image is the centre crop of the site the table names
    row = t.iloc[5]
    site = index[(index["Metadata_Plate"] == row["Metadata_Plate"]) & (index["Metadata_Well"] == row["Metadata_Well"])
                 & (index["Metadata_Site"] == row["Metadata_Site"])].iloc[0]
    assert np.array_equal(m.images[2, 1], read_site(site)[:, 8:40, 8:40])
    # The phenotype: RNA puncta fall from the infected C- end to the mock C+ end. 14 images; rho <= -0.7
    # has p < 0.005 for independent images, and the truth-ordered wells give about -0.9.
    reads, rho = explain.readout(m, channel="RNA")
    assert rho < -0.7, reads
    assert explain.axis_montage(hrce, index, n=7, per_quantile=2, crop=32, seed=0).table.equals(t)  # deterministic


def test_montage_refuses_bad_requests(synth_screen) -> None:
    from gandl_core.plates import build_index

    index = build_index(synth_screen)
    scores = _truth_scores(synth_screen)
    with pytest.raises(ConfigError, match="--per-quantile"):
        explain.axis_montage(scores.head(5), index, n=3, per_quantile=2)
    with pytest.raises(ConfigError, match="n >= 2"):
        explain.axis_montage(scores, index, n=1)
    with pytest.raises(DataError, match="OnScore"):
        explain.axis_montage(scores.drop(columns="OnScore"), index)
    other = scores.assign(Metadata_Plate="elsewhere")
    with pytest.raises(DataError, match="plate/well names differ"):
        explain.axis_montage(other, index)
    # the old column name still works
    m = explain.axis_montage(scores.rename(columns={"OnScore": "On"}), index, n=3)
    assert m.score_col == "OnScore" and len(m.table) == 3


def test_display_helpers_keep_one_contrast_per_channel() -> None:
    imgs = np.zeros((2, 1, 2, 4, 4), np.float32)
    imgs[0, 0, 0, :2] = 10.0
    imgs[1, 0, 0, :2] = 5.0  # half as bright: must stay half as bright on screen
    ranges = explain.display_ranges(imgs, low=0, high=100)
    a = explain.to_rgb(imgs[0, 0], ranges, channel=0)
    b = explain.to_rgb(imgs[1, 0], ranges, channel=0)
    assert a.shape == (4, 4, 3) and a.max() == pytest.approx(1.0) and b.max() == pytest.approx(0.5)
    assert explain.channel_colours(["DNA", "RNA"])[0][2] == 1.0  # DNA is blue
    assert explain.channel_colours(["GFP"]) == [(0.0, 1.0, 0.0)]


# -- one image on the axis ------------------------------------------------------------------------


def _site_table(seed: int = 0, sites: int = 3) -> pd.DataFrame:
    """Site features of two plates (different gains/offsets per plate), C+ shifted along feature 0."""
    rng = np.random.default_rng(seed)
    rows = []
    for p, (gain, off) in enumerate([(1.0, 0.0), (2.5, 4.0)]):
        for w in range(30):
            role = "positive" if w < 8 else "negative" if w < 16 else "treated"
            shift = {"positive": 2.0, "negative": 0.0, "treated": rng.uniform(0, 2)}[role]
            base = rng.normal(0, 1, 6)
            for s in range(sites):
                x = base + rng.normal(0, 0.3, 6)
                x[0] += shift
                rows.append({"Metadata_Plate": f"P{p}", "Metadata_Well": f"A{w:02d}", "Metadata_Site": s + 1,
                             "Metadata_Role": role, **{f"GAN_{j:03d}": gain * x[j] + off for j in range(6)}})
    return pd.DataFrame(rows)


def _project(emb: pd.DataFrame, method: str = "standardize"):
    from gandl_core.analysis.profiles import aggregate, normalize_plates
    from gandl_core.analysis.projection import project_table

    prof = normalize_plates(aggregate(emb), controls="Metadata_Role in ['positive', 'negative']", method=method)
    proj, scores, _ = project_table(prof, positive="Metadata_Role == 'positive'",
                                    negative="Metadata_Role == 'negative'",
                                    cv=None)
    return prof, proj, scores


@pytest.mark.parametrize("method", ["standardize", "mad", "none"])
def test_feature_axis_reproduces_every_well_score_from_raw_features(method: str) -> None:
    from gandl_core.analysis.profiles import aggregate

    emb = _site_table()
    prof, proj, scores = _project(emb, method)
    # axes.csv lists features by decreasing |weight|, not in the network's output order
    axes = pd.DataFrame({"feature": proj.feature_names_in_, "on": proj.coef_}).sort_values("on", key=abs)
    assert list(axes["feature"]) != sorted(axes["feature"])
    pax = profile_axis(scores, prof, axes)
    ref = ProfileAxis.from_projection(proj)
    assert pax.center == pytest.approx(ref.center) and pax.halfwidth == pytest.approx(ref.halfwidth)
    fax = feature_axis(pax, prof, emb)
    assert fax.features == [f"GAN_{j:03d}" for j in range(6)]  # the order of the network's outputs
    wells = aggregate(emb)
    for plate in ("P0", "P1"):
        rows = wells[wells["Metadata_Plate"] == plate]
        want = scores.loc[scores["Metadata_Plate"] == plate, "OnScore"].to_numpy()
        assert np.allclose(fax.score(rows, plate=plate), want, atol=1e-8)
        # an array of features in output order (what D.features returns) scores the same
        assert np.allclose(fax.score(rows.filter(like="GAN_").to_numpy(), plate=plate), want, atol=1e-8)
    # the plates differ (gain 2.5, offset 4), so one image scores differently per plate; a fake
    # gets the mean of the plates' scores
    x = wells[emb.filter(like="GAN_").columns].to_numpy()[:3]
    per = np.stack([fax.score(x, plate=p) for p in ("P0", "P1")])
    assert np.allclose(per[0], per[1]) == (method == "none")  # without normalization plates are alike
    assert np.allclose(fax.score(x), per.mean(axis=0))


def test_feature_axis_refuses_tables_that_do_not_belong_together() -> None:
    from gandl_core.analysis.profiles import sphere

    emb = _site_table()
    prof, proj, scores = _project(emb)
    axes = pd.DataFrame({"feature": proj.feature_names_in_, "on": proj.coef_})
    other = scores.assign(OnScore=scores["OnScore"].sample(frac=1.0, random_state=0).to_numpy())
    with pytest.raises(DataError, match="not the projection of these profiles"):
        profile_axis(other, prof, axes)
    pax = profile_axis(scores, prof, axes)
    sph = sphere(prof, controls="Metadata_Role in ['positive', 'negative']", epsilon=0.1)
    with pytest.raises(DataError, match="affine"):
        feature_axis(pax, sph, emb)
    with pytest.raises(DataError, match="lack"):
        feature_axis(pax, prof, emb.drop(columns="GAN_002"))
    with pytest.raises(DataError, match="not one of the axis's plates"):
        FeatureAxis(["a"], ["P0"], np.ones((1, 1)), np.zeros(1)).score(np.ones((1, 1)), plate="P9")
