"""Hill fits, per-dose summaries and the hit list (tiny synthetic compounds, known parameters)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gandl_core.analysis import dose_response as dr
from gandl_core.errors import ConfigError, DataError

DOSES = np.array([0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0])


def _wells(bottom, top, ec50, slope, noise, reps=4, seed=0, doses=DOSES):
    rng = np.random.default_rng(seed)
    c = np.repeat(doses, reps)
    return c, dr.hill(c, bottom, top, ec50, slope) + rng.normal(0, noise, c.size)


def test_hill_curve_values() -> None:
    y = dr.hill(np.array([0.0, 1.0, 1e6]), -1.0, 1.0, 1.0, 1.5)
    np.testing.assert_allclose(y, [-1.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_known_parameters(seed: int) -> None:
    c, y = _wells(-1.0, 0.8, 0.5, 1.3, noise=0.15, seed=seed)
    fit = dr.fit_hill(c, y)
    assert fit.status == "ok", fit.message
    assert abs(np.log10(fit.ec50) - np.log10(0.5)) < 0.2  # within ~20% in log space (0.2 decades)
    assert abs(fit.bottom + 1.0) < 0.2 and abs(fit.top - 0.8) < 0.2
    assert 0.7 < fit.hill < 2.5
    assert fit.efficacy == pytest.approx((fit.top - fit.bottom) / 2)
    assert fit.r2 > 0.8 and fit.p_flat < 1e-6
    lo, hi = fit.ci["ec50"]
    assert lo < fit.ec50 < hi and lo < 0.5 * 1.6 and hi > 0.5 / 1.6
    np.testing.assert_allclose(fit.predict(np.array([fit.ec50])), [(fit.top + fit.bottom) / 2], atol=1e-6)


def test_decreasing_curve_has_top_below_bottom() -> None:
    c, y = _wells(1.0, -0.5, 2.0, 1.0, noise=0.1, seed=3)
    fit = dr.fit_hill(c, y)
    assert fit.status == "ok" and fit.top < fit.bottom and fit.hill > 0
    assert fit.efficacy == pytest.approx(-0.75, abs=0.15)
    assert abs(np.log10(fit.ec50) - np.log10(2.0)) < 0.25


def test_flat_compound_is_flagged_not_fitted() -> None:
    rng = np.random.default_rng(4)
    c = np.repeat(DOSES, 4)
    fit = dr.fit_hill(c, -1 + rng.normal(0, 0.2, c.size))
    assert fit.status == "flat" and fit.p_flat >= 0.05
    assert np.isnan(fit.ec50) and not fit.fitted
    assert np.isnan(fit.predict([1.0])).all()


def test_non_monotone_compound_is_flagged() -> None:
    # Rescue up to 1 uM, then toxicity drags the score back down.
    c = np.repeat(DOSES, 4)
    rng = np.random.default_rng(5)
    y = -1 + 1.6 * np.exp(-((np.log10(c) - 0.0) ** 2) / 0.5) + rng.normal(0, 0.1, c.size)
    fit = dr.fit_hill(c, y)
    assert fit.status == "non-monotone", (fit.status, fit.monotone_r2)
    assert fit.monotone_r2 < 0.7


def test_single_and_two_doses_and_garbage_never_crash() -> None:
    assert dr.fit_hill([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]).status == "single-dose"
    assert dr.fit_hill([1.0, 10.0, 10.0], [0.1, 0.2, 0.3]).status == "too-few-doses"
    assert dr.fit_hill([], []).status == "single-dose"
    # zeros (untreated) and NaNs are dropped, not fitted
    fit = dr.fit_hill([0, np.nan, 1, 2, 3], [5, 1, np.nan, 0.2, 0.3])
    assert fit.n == 2 and fit.status == "too-few-doses"
    assert dr.fit_hill([1, 2, 3, 4], [0.1, 0.5, 0.9, 1.0]).status == "too-few-doses"  # 4 wells: exact fit
    const = dr.fit_hill(np.repeat(DOSES, 2), np.full(16, 0.3))
    assert const.status == "flat" and const.p_flat == 1.0
    with pytest.raises(DataError, match="3 concentrations but 2 responses"):
        dr.fit_hill([1, 2, 3], [1, 2])


def _table() -> pd.DataFrame:
    rows = []
    specs = {"strong": (-1, 1.0, 0.3, 1.5), "weak": (-1, -0.6, 1.0, 1.0), "dead": (-1, -1, 1.0, 1.0),
             "far": (-1, 1.0, 300.0, 1.0)}
    for k, (name, (b, t, e, h)) in enumerate(specs.items()):
        c, y = _wells(b, t, e, h, noise=0.1, reps=3, seed=10 + k)
        rows += [{"Metadata_Treatment": name, "Metadata_Concentration": ci, "Metadata_Well": f"W{i}", "On": yi}
                 for i, (ci, yi) in enumerate(zip(c, y))]
    rows += [{"Metadata_Treatment": "", "Metadata_Concentration": 0.0, "Metadata_Well": "C1", "On": 1.0}]
    return pd.DataFrame(rows)


def test_dose_response_table() -> None:
    t = dr.dose_response(_table())
    assert set(t["compound"]) == {"strong", "weak", "dead", "far"}  # untreated row left out
    assert len(t) == 4 * len(DOSES) and (t["n"] == 3).all()
    row = t[(t["compound"] == "strong") & (t["dose"] == 30.0)].iloc[0]
    assert row["mean"] == pytest.approx(0.95, abs=0.2)
    assert row["sem"] == pytest.approx(row["sd"] / np.sqrt(3))


def test_fit_all_and_hit_list_rule() -> None:
    fits = dr.fit_all(_table())
    assert list(fits["compound"]) == ["dead", "far", "strong", "weak"]
    st = fits.set_index("compound")["status"]
    assert st["dead"] == "flat" and st["strong"] == "ok"
    hits = dr.hit_list(fits)
    assert hits.iloc[0]["compound"] == "strong" and bool(hits.iloc[0]["hit"])
    assert list(hits["rank"]) == [1, 2, 3, 4]
    flagged = set(hits.loc[hits["hit"], "compound"])
    assert flagged == {"strong"}  # weak: efficacy 0.2 < 0.5; far: EC50 above the tested range
    assert "efficacy >= 0.5" in hits.attrs["rule"] and (hits["rule"] == hits.attrs["rule"]).all()
    loose = dr.hit_list(fits, min_efficacy=0.1, ec50_in_range=False)
    assert {"strong", "weak"} <= set(loose.loc[loose["hit"], "compound"])


def test_bad_input_names_the_culprit() -> None:
    with pytest.raises(DataError, match="'Score'"):
        dr.fit_all(_table(), score="Score")
    with pytest.raises(DataError, match="Metadata_Drug"):
        dr.dose_response(_table(), compound="Metadata_Drug")
    with pytest.raises(DataError, match="no row has a compound"):
        dr.fit_all(_table().assign(Metadata_Treatment=""))
    with pytest.raises(DataError, match="'Metadata_Concentration'.*'10 uM'"):
        dr.fit_all(_table().assign(Metadata_Concentration="10 uM"))
    with pytest.raises(ConfigError, match="direction"):
        dr.hit_list(dr.fit_all(_table()), direction="up")
    with pytest.raises(DataError, match="fit_all"):
        dr.hit_list(pd.DataFrame({"compound": ["a"]}))


def test_lincs_dose_trend_along_the_proteasome_axis(test_data) -> None:
    """Real data: On axis = 24 proteasome-inhibitor wells (20 uM, C+) vs 24 DMSO wells (C-) of LINCS plate
    SQ00015054; the 6-dose compounds are then fitted along it. A DNA-polymerase inhibitor (BRD-K93880783)
    moves from DMSO towards the proteasome phenotype with dose; most compounds show no trend."""
    from gandl_core.analysis.projection import project_table

    d = pd.read_csv(test_data / "lincs" / "SQ00015054_normalized_feature_select.csv.gz")
    proteasome = d["Metadata_moa"].astype(str).str.contains("proteasome") & (d["Metadata_mmoles_per_liter"] > 19)
    role = np.where(d["Metadata_broad_sample"] == "DMSO", "negative", np.where(proteasome, "positive", "treated"))
    d = pd.concat([pd.Series(role, name="Metadata_Role", index=d.index), d], axis=1)
    _, scores, stats = project_table(d, positive="Metadata_Role == 'positive'", negative="Metadata_Role == 'negative'")
    assert stats["n_positive"] == 24 and stats["n_negative"] == 24
    treated = scores[scores["Metadata_Role"] != "negative"]
    fits = dr.fit_all(treated, compound="Metadata_broad_sample", dose="Metadata_mmoles_per_liter").set_index("compound")
    best = fits.loc["BRD-K93880783-001-26-6"]
    assert best["status"] == "ok" and best["n_doses"] == 6
    assert 0.3 < best["ec50"] < 5.0 and best["efficacy"] > 0.5 and best["r2"] > 0.9
    # the two proteasome inhibitors are only at 20 uM: reported, not fitted
    assert set(fits.loc[fits["status"] == "single-dose"].index) == {"BRD-K50691590-001-02-2", "BRD-K60230970-001-10-0"}
    assert (fits["status"] == "flat").mean() > 0.7
    hits = dr.hit_list(fits.reset_index())
    assert "BRD-K93880783-001-26-6" in set(hits.loc[hits["hit"], "compound"])
