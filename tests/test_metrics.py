"""Z', SSMD and replicate-retrieval mAP against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gandl_core.analysis.metrics import mean_ap, ssmd, z_prime
from gandl_core.errors import DataError


def test_z_prime_matches_hand_computation() -> None:
    pos, neg = np.array([1.0, 1.2, 0.8, 1.0]), np.array([-1.0, -0.9, -1.1, -1.0])
    sd_p, sd_n = np.std(pos, ddof=1), np.std(neg, ddof=1)  # 0.16330, 0.08165
    expected = 1 - 3 * (sd_p + sd_n) / 2.0
    assert z_prime(pos, neg) == pytest.approx(expected)
    assert z_prime(pos, neg) == pytest.approx(0.632577, abs=1e-5)
    assert z_prime(neg, pos) == pytest.approx(expected)  # symmetric in the sign of the gap


def test_ssmd_is_signed_and_matches_hand_computation() -> None:
    pos, neg = np.array([2.0, 4.0]), np.array([0.0, 0.0, 0.0, 1.0])
    expected = (3.0 - 0.25) / np.sqrt(2.0 + 0.25)
    assert ssmd(pos, neg) == pytest.approx(expected)
    assert ssmd(neg, pos) == pytest.approx(-expected)


def test_nan_dropped_and_too_few_values_named() -> None:
    assert z_prime([1, 1.1, np.nan], [0, 0.1]) == pytest.approx(1 - 3 * (2 * np.std([0, 0.1], ddof=1)) / 1.0)
    with pytest.raises(DataError, match="negative controls: 1 finite"):
        ssmd([1, 2, 3], [np.nan, 4.0])


def test_overlapping_controls_have_negative_z_prime() -> None:
    rng = np.random.default_rng(0)
    assert z_prime(rng.normal(0, 1, 50), rng.normal(0.2, 1, 50)) < 0


def _replicates(noise: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, 20))
    rows = [dict(Metadata_Treatment=f"c{k}", Metadata_Well=f"W{k}{r}", **{f"f{i}": v for i, v in
            enumerate(centers[k] + noise * rng.normal(size=20))}) for k in range(6) for r in range(4)]
    return pd.DataFrame(rows)


def test_mean_ap_high_for_tight_replicates_and_low_for_noise() -> None:
    good, per = mean_ap(_replicates(0.1), sameby=["Metadata_Treatment"], null_size=200)
    assert good == pytest.approx(1.0)
    assert len(per) == 6 and set(per["Metadata_Treatment"]) == {f"c{k}" for k in range(6)}
    # Pure noise: expected AP of 3 replicates among 23 others is about 3/23 + small-sample bias.
    df = _replicates(0.0)
    feats = [c for c in df.columns if c.startswith("f")]
    df[feats] = np.random.default_rng(1).normal(size=(len(df), len(feats)))
    bad, _ = mean_ap(df, sameby=["Metadata_Treatment"], null_size=200)
    assert bad < 0.4


def test_mean_ap_names_missing_column() -> None:
    with pytest.raises(DataError, match="Metadata_Compound"):
        mean_ap(_replicates(0.1), sameby=["Metadata_Compound"])


def test_mean_ap_query_and_singletons() -> None:
    from gandl_core.errors import ConfigError

    df = _replicates(0.1)
    m, per = mean_ap(df, sameby=["Metadata_Treatment"], query="Metadata_Treatment != 'c0'", null_size=100)
    assert m == pytest.approx(1.0) and "c0" not in set(per["Metadata_Treatment"])
    with pytest.raises(ConfigError, match="Metadata_Dose"):
        mean_ap(df, query="Metadata_Dose > 1")
    with pytest.raises(DataError, match="two or more rows"):
        mean_ap(df, sameby=["Metadata_Well"])  # every well is its own group: nothing to retrieve
