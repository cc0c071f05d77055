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
        rows += [{"Metadata_Treatment": name, "Metadata_Concentration": ci, "Metadata_Well": f"W{i}", "OnScore": yi}
                 for i, (ci, yi) in enumerate(zip(c, y))]
    rows += [{"Metadata_Treatment": "", "Metadata_Concentration": 0.0, "Metadata_Well": "C1", "OnScore": 1.0}]
    return pd.DataFrame(rows)


def test_dose_response_table() -> None:
    t = dr.dose_response(_table())
    assert set(t["Metadata_Compound"]) == {"strong", "weak", "dead", "far"}  # untreated row left out
    assert len(t) == 4 * len(DOSES) and (t["n"] == 3).all()
    row = t[(t["Metadata_Compound"] == "strong") & (t["dose"] == 30.0)].iloc[0]
    assert row["mean"] == pytest.approx(0.95, abs=0.2)
    assert row["sem"] == pytest.approx(row["sd"] / np.sqrt(3))


def test_fit_all_and_hit_list_rule() -> None:
    fits = dr.fit_all(_table())
    assert list(fits["Metadata_Compound"]) == ["dead", "far", "strong", "weak"]
    st = fits.set_index("Metadata_Compound")["Metadata_Status"]
    assert st["dead"] == "flat" and st["strong"] == "ok"
    hits = dr.hit_list(fits)
    assert hits.iloc[0]["Metadata_Compound"] == "strong" and bool(hits.iloc[0]["Metadata_Hit"])
    assert list(hits["rank"]) == [1, 2, 3, 4]
    flagged = set(hits.loc[hits["Metadata_Hit"], "Metadata_Compound"])
    assert flagged == {"strong"}  # weak: efficacy 0.2 < 0.5; far: EC50 above the tested range
    assert "efficacy >= 0.5" in hits.attrs["rule"] and (hits["Metadata_Rule"] == hits.attrs["rule"]).all()
    loose = dr.hit_list(fits, min_efficacy=0.1, ec50_in_range=False)
    assert {"strong", "weak"} <= set(loose.loc[loose["Metadata_Hit"], "Metadata_Compound"])


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
        dr.hit_list(pd.DataFrame({"Metadata_Compound": ["a"]}))


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
    fits = dr.fit_all(treated, compound="Metadata_broad_sample", dose="Metadata_mmoles_per_liter")
    # the noise band is the DMSO wells scored out of fold (carried by the scores table)
    assert fits.attrs["noise"]["sd"] == pytest.approx(stats["on_sd_negative_oof"])
    fits = fits.set_index("Metadata_Compound")
    best = fits.loc["BRD-K93880783-001-26-6"]
    assert best["Metadata_Status"] == "ok" and best["n_doses"] == 6
    assert 0.3 < best["ec50"] < 5.0 and best["efficacy"] > 0.5 and best["r2"] > 0.9
    assert best["ec50_ci_low"] < best["ec50"] < best["ec50_ci_high"]
    # the two proteasome inhibitors are only at 20 uM: reported, not fitted
    st = fits["Metadata_Status"]
    assert set(st[st == "single-dose"].index) == {"BRD-K50691590-001-02-2", "BRD-K60230970-001-10-0"}
    # measured: 44 inactive (within 3 SD of DMSO at every dose), 4 flat, 6 ok, 2 extrapolated, 2 single-dose
    assert (st == "inactive").mean() > 0.7 and (st.isin(["inactive", "flat"])).mean() > 0.8
    assert 4 <= (st == "ok").sum() <= 8 and (st == "extrapolated").sum() >= 1
    hits = dr.hit_list(fits.reset_index())
    assert "BRD-K93880783-001-26-6" in set(hits.loc[hits["Metadata_Hit"], "Metadata_Compound"])


# --- statuses that say what the data know -------------------------------------------------------------


def test_ec50_below_the_tested_doses_is_extrapolated_not_ok() -> None:
    # The rise is over before the lowest dose (EC50 0.002 < 0.01): a real, significant trend, but its EC50
    # is an extrapolation. Before: status "ok", so it could be read as a measured potency.
    c, y = _wells(-1.0, 0.8, 0.002, 0.8, noise=0.08, seed=6)
    fit = dr.fit_hill(c, y)
    assert fit.status == "extrapolated" and fit.active, fit.message
    assert fit.ec50 < DOSES.min() and "below the lowest tested dose" in fit.message
    table = pd.DataFrame({"Metadata_Treatment": "early", "Metadata_Concentration": c, "OnScore": y})
    fits = dr.fit_all(table)
    assert not dr.hit_list(fits)["Metadata_Hit"].any()  # default rule: EC50 must be measured
    assert dr.hit_list(fits, ec50_in_range=False)["Metadata_Hit"].all()


def test_a_trend_inside_the_control_noise_is_inactive() -> None:
    # A small but (with 32 tight wells) significant drift: +0.15 On at the top doses, where the negative
    # controls scatter with SD 0.2, so a mean of 4 wells has SE 0.1: no dose mean reaches 3 SE. Before:
    # "ok" with an EC50; now "inactive".
    c, y = _wells(-1.0, -0.85, 0.5, 1.5, noise=0.03, seed=7)
    assert dr.fit_hill(c, y).status == "ok"  # no control noise given: only the F test speaks
    fit = dr.fit_hill(c, y, noise=(-1.0, 0.2))
    assert fit.status == "inactive" and not fit.active and np.isnan(fit.ec50)
    means = dr.dose_response(pd.DataFrame({"Metadata_Treatment": "x", "Metadata_Concentration": c, "OnScore": y}))
    assert fit.max_dev_se == pytest.approx(np.abs(means["mean"] + 1.0).max() / (0.2 / np.sqrt(4)))
    assert "within 3 standard errors" in fit.message
    assert dr.fit_hill(c, y, noise=(-1.0, 0.05)).status == "ok"  # tighter controls: the drift is real
    # one well per dose: the rule is the classic 3 SD of the control wells
    one = dr.fit_hill(c[::4], y[::4], noise=(-1.0, 0.2, 1000))
    assert one.max_dev_se == pytest.approx(np.abs(y[::4] + 1.0).max() / (0.2 * np.sqrt(1 + 1 / 1000)))
    # fit_all takes the noise from the table's negative-control rows (12 wells: SE = SD sqrt(1/4 + 1/12))
    table = pd.DataFrame({"Metadata_Treatment": "drift", "Metadata_Concentration": c, "OnScore": y,
                          "Metadata_Control": ""})
    ctrl = pd.DataFrame({"Metadata_Treatment": "", "Metadata_Concentration": 0.0, "Metadata_Control": "negative",
                         "OnScore": -1.0 + 0.2 * np.random.default_rng(0).standard_normal(12)})
    fits = dr.fit_all(pd.concat([table, ctrl], ignore_index=True))
    assert fits["Metadata_Status"].tolist() == ["inactive"]
    assert fits.attrs["noise"]["n"] == 12 and fits.attrs["noise"]["k"] == 3.0
    assert dr.fit_all(table)["Metadata_Status"].tolist() == ["ok"]  # no controls in the table: no noise known


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_confidence_intervals_stay_inside_the_fit_bounds(seed: int) -> None:
    # Shallow and noisy, one well per dose: a symmetric Wald interval of the slope ran below 0 (below the
    # fit's own bound 0.1) before. Profile intervals never leave the bounds and contain the estimate.
    c, y = _wells(-1.0, 0.2, 0.3, 0.6, noise=0.12, reps=1, seed=40 + seed)
    fit = dr.fit_hill(c, y)
    if not fit.fitted:
        pytest.skip(f"status {fit.status}")
    lo, hi = fit.ci["hill"]
    assert 0.1 <= lo <= fit.hill <= hi <= 10.0
    lo, hi = fit.ci["ec50"]
    assert 10 ** (np.log10(DOSES.min()) - 2) * 0.999 <= lo <= fit.ec50 <= hi <= 10 ** (np.log10(DOSES.max()) + 2) * 1.001


def test_steep_curve_has_an_ec50_interval_between_its_doses() -> None:
    # A switch between 0.3 and 1 uM (slope 8): the EC50 is pinned to that gap. The covariance (Wald)
    # interval exploded to the bounds (about 1e-4 to 3e3 uM) because the Jacobian vanishes there.
    c, y = _wells(-1.0, 1.0, 0.55, 8.0, noise=0.08, seed=9)
    fit = dr.fit_hill(c, y)
    assert fit.status == "ok"
    lo, hi = fit.ci["ec50"]
    assert 0.25 < lo < 0.55 < hi < 1.2
    assert fit.ci["hill"][0] > 2.0  # the data say "steep"


def test_ec50_intervals_cover_the_truth() -> None:
    # 40 random compounds (EC50 inside the doses, 2 wells per dose, noise 0.25): the 95% intervals should
    # hold the true EC50 about 95% of the time; measured 38/40 (0.95) with this seed.
    rng = np.random.default_rng(11)
    covered = n = 0
    for _ in range(40):
        ec50, slope = 10 ** rng.uniform(-1.5, 1.0), rng.uniform(0.8, 2.5)
        c, y = _wells(-1.0, rng.uniform(0.0, 1.0), ec50, slope, noise=0.25, reps=2, seed=int(rng.integers(1 << 30)))
        fit = dr.fit_hill(c, y)
        if fit.status == "ok":
            n += 1
            covered += fit.ci["ec50"][0] <= ec50 <= fit.ci["ec50"][1]
    assert n >= 25 and covered / n >= 0.85


def test_tables_follow_the_profile_contract_and_old_files_still_read() -> None:
    fits = dr.fit_all(_table())
    text = [c for c in fits.columns if not pd.api.types.is_numeric_dtype(fits[c])]
    assert text == ["Metadata_Compound", "Metadata_Status", "Metadata_Message"]
    for name in dr.CI_PARAMS:
        assert {f"{name}_ci_low", f"{name}_ci_high"} <= set(fits.columns)
    hits = dr.hit_list(fits)
    meta = [c for c in hits.columns if c.startswith("Metadata_")]
    assert all(pd.api.types.is_numeric_dtype(hits[c]) for c in hits.columns if c not in meta)
    assert {"Metadata_Hit", "Metadata_Rule"} <= set(meta)
    # a scores table of an older version (On/Off) and a fits file of an older version (compound/status)
    old_scores = _table().rename(columns={"OnScore": "On"})
    pd.testing.assert_frame_equal(dr.fit_all(old_scores), fits)
    old_fits = fits.rename(columns={"Metadata_Compound": "compound", "Metadata_Status": "status",
                                    "Metadata_Message": "message"})
    assert dr.hit_list(old_fits)["Metadata_Compound"].tolist() == hits["Metadata_Compound"].tolist()
    view = dr.ci_table(hits)
    strong = view.set_index("compound").loc["strong"]
    assert strong["status"] == "ok" and bool(strong["hit"]) and strong["EC50 [95% CI]"].count("[") == 1


def _site_stats(screen) -> pd.DataFrame:
    """Well profiles of the synthetic screen from plain per-channel image statistics (a few ms per site)."""
    from PIL import Image

    wells = pd.read_csv(screen / "wells.csv")
    rows = []
    for _, r in wells.iterrows():
        feats = {}
        for k in range(1, 6):
            a = np.asarray(Image.open(screen / "images" / r["experiment"] / f"Plate{r['plate']}" /
                                      f"{r['well']}_s1_w{k}.png"), np.float64)
            med = np.median(a)
            p90, p99 = np.percentile(a, [90, 99])
            feats.update({f"S{k}_mean": a.mean() / med, f"S{k}_sd": a.std() / med, f"S{k}_p90": p90 / med,
                          f"S{k}_p99": p99 / med, f"S{k}_bright": (a > 3 * med).mean()})
        rows.append({"Metadata_Plate": f"{r['experiment']}_{r['plate']}", "Metadata_Well": r["well"],
                     "Metadata_Role": r["role"], "Metadata_Treatment": r["treatment"] if isinstance(r["treatment"], str)
                     else "", "Metadata_Concentration": r["treatment_conc"], **feats})
    return pd.DataFrame(rows)


def test_active_calls_against_the_synthetic_truth(synth_screen) -> None:
    """The session's synthetic screen (2 cell types x 2 plates, 8 compounds x 6 doses x 2 wells per plate):
    plain image statistics, plate-normalized to C-, one On axis; then fit every compound and score the
    calls against ground_truth.csv. Measured: precision 1.0, recall 1.0 (the 5 true actives all ok; of
    the 3 compounds without a rescue the 2 non-toxic ones are inactive, the cytotoxic one non-monotone);
    EC50 rank correlation 1.0. (Screens of seeds 1-3: precision 1.0/0.83/1.0, recall 1.0/1.0/0.8.)"""
    from scipy.stats import spearmanr

    from gandl_core.analysis.profiles import normalize_plates
    from gandl_core.analysis.projection import project_table

    prof = normalize_plates(_site_stats(synth_screen), controls="Metadata_Role == 'negative'")
    _, scores, _ = project_table(prof, positive="Metadata_Role == 'positive'", negative="Metadata_Role == 'negative'")
    fits = dr.fit_all(scores).set_index("Metadata_Compound")  # noise band: C- wells scored out of fold
    truth = pd.read_csv(synth_screen / "ground_truth.csv").set_index("treatment")
    called = fits["Metadata_Status"].isin(dr.ACTIVE_STATUSES)
    true = truth.loc[fits.index, "active"].astype(bool)
    precision = (called & true).sum() / called.sum()
    recall = (called & true).sum() / true.sum()
    assert precision >= 0.99 and recall >= 0.8, (precision, recall, fits["Metadata_Status"].to_dict())
    # what the old statuses could not say: the compounds without a rescue or toxicity are "inactive"
    quiet = ~true & ~truth.loc[fits.index, "toxic"].astype(bool)
    assert quiet.sum() == 2 and (fits.loc[quiet, "Metadata_Status"] == "inactive").all()
    ok = fits[fits["Metadata_Status"] == "ok"]
    rho = spearmanr(ok["ec50"], truth.loc[ok.index, "ec50_uM"]).statistic
    assert len(ok) >= 4 and rho > 0.7
