"""Real numbers: LINCS Cell Painting plate SQ00015054 (tests/data/lincs) and Cell Health profiles.

Controls: the two proteasome inhibitors at 20 uM (12 wells each, C+) vs DMSO (24 wells, C-). These
numbers are quoted in docs/analysis.md; if a change moves them, update both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gandl_core.analysis.evaluation import classify, separability, zero_shot
from gandl_core.analysis.metrics import mean_ap
from gandl_core.analysis.projection import project_table

POS = "'proteasome' in Metadata_moa"
NEG = "Metadata_broad_sample == 'DMSO'"


@pytest.fixture(scope="module")
def lincs(test_data) -> pd.DataFrame:
    df = pd.read_csv(test_data / "lincs" / "SQ00015054_normalized_feature_select.csv.gz")
    assert df.shape == (384, 480)
    return df


@pytest.fixture(scope="module")
def projected(lincs):
    return project_table(lincs, positive=POS, negative=NEG)


def test_controls_are_separable_on_held_out_wells(lincs) -> None:
    r = separability(lincs, positive=POS, negative=NEG)  # 48 control wells (< 80): 5-fold grouped CV
    assert r.params["cv"] == 5 and r.n_test == 48 and r.accuracy >= 0.9
    r = separability(lincs, positive=POS, negative=NEG, cv=None)  # the single 75/25 split
    assert (r.n_train, r.n_test) == (36, 12)
    assert r.accuracy >= 0.9
    cv = separability(lincs, positive=POS, negative=NEG, cv=4)
    assert cv.accuracy >= 0.9 and cv.confusion.to_numpy().sum() == 48


def test_on_score_z_prime_and_ssmd(projected) -> None:
    proj, scores, stats = projected
    assert (stats["n_positive"], stats["n_negative"]) == (24, 24)
    assert stats["z_prime_in_sample"] > 0.8  # measured 0.906 in sample
    assert stats["ssmd"] > 10
    assert stats["z_prime"] > 0.7  # headline, out of fold: measured 0.829 (4 folds): still excellent
    # every treated well lies between (or near) the controls on the On axis
    assert scores["OnScore"].between(-1.5, 1.5).all()


def test_a_compound_has_a_real_dose_trend_along_on(projected) -> None:
    from gandl_core.analysis.dose_response import fit_all, fit_hill

    _, scores, _ = projected
    treated = scores[scores["Metadata_broad_sample"] != "DMSO"]
    fits = fit_all(treated, score="OnScore", compound="Metadata_broad_sample", dose="Metadata_mmoles_per_liter")
    st = fits["Metadata_Status"]
    assert (st == "ok").sum() >= 3 and st.isin(["inactive", "flat"]).sum() > len(fits) / 2  # most compounds inactive
    # BRD-K93880783 (a DNA polymerase inhibitor) moves wells from DMSO towards the proteasome inhibitors.
    one = treated[treated["Metadata_broad_sample"] == "BRD-K93880783-001-26-6"]
    fit = fit_hill(one["Metadata_mmoles_per_liter"], one["OnScore"])
    assert fit.status == "ok" and fit.r2 > 0.9
    assert 0.3 < fit.ec50 < 10  # measured 1.47 uM, inside the tested 0.04-10 uM
    assert fit.top - fit.bottom > 1.0  # > half of the C- -> C+ window (2 On units)
    assert fit.predict(10.0) > fit.predict(0.04)


def test_proteasome_replicates_retrieve_each_other(lincs) -> None:
    df = lincs.assign(Metadata_broad_sample=lincs["Metadata_broad_sample"].fillna("DMSO"))
    m, per = mean_ap(df, sameby=["Metadata_broad_sample"], diffby=["Metadata_broad_sample"],
                     query="Metadata_pert_type != 'control'", null_size=200)
    prot = per[per["Metadata_broad_sample"].isin(["BRD-K50691590-001-02-2", "BRD-K60230970-001-10-0"])]
    assert (prot["mean_average_precision"] > 0.9).all()


def test_cellhealth_cell_lines_after_per_plate_normalization(shared_data) -> None:
    """Each Cell Health plate holds one cell line and its features were normalized per plate, so the
    cell-line differences are normalized away: accuracy stays near chance (1/3). The check documents
    that per-plate normalization must not be used when plate and class are confounded."""
    df = pd.read_csv(shared_data / "cellhealth_three_lines" / "cellhealth.csv")
    assert df.groupby("Metadata_Plate")["Metadata_cell_line"].nunique().max() == 1
    r = classify(df, label="Metadata_cell_line", cv=5)
    assert 0.2 < r.accuracy < 0.6  # measured 0.46
    plates = sorted(df["Metadata_Plate"].unique())
    held = plates[2::3]  # one plate of each line
    z = zero_shot(df[~df.Metadata_Plate.isin(held)], df[df.Metadata_Plate.isin(held)], label="Metadata_cell_line")
    assert z.n_test == 66 and z.accuracy < 0.5  # measured 0.30
    assert np.trace(z.confusion.to_numpy()) == round(z.accuracy * 66)
