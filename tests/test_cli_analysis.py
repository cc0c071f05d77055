"""gandl-core evaluate / project on a small table written to tmp_path: artifacts, numbers, named errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gandl_core.cli import main
from gandl_core.tables import read_table, write_table


@pytest.fixture
def profiles(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for w in range(24):
        role = ["positive", "negative", "treated"][w % 3]
        f = rng.normal(size=8)
        f[0] += {"positive": 10.0, "negative": 0.0, "treated": 5.0}[role]
        rows.append({"Metadata_Plate": "P1", "Metadata_Well": f"{'ABCD'[w // 6]}{w % 6 + 1:02d}",
                     "Metadata_Role": role, **{f"GAN_{i}": v for i, v in enumerate(f)}})
    path = tmp_path / "profiles.parquet"
    write_table(pd.DataFrame(rows), path)
    return path


def test_evaluate_writes_json_csv_png(profiles, tmp_path, capsys) -> None:
    out = tmp_path / "ev"
    assert main(["evaluate", str(profiles), "--cv", "4", "-o", str(out)]) == 0
    res = json.loads((out / "evaluation.json").read_text())
    assert res["accuracy"] == 1.0 and res["classes"] == ["negative", "positive"]
    assert np.array(res["confusion"]).sum() == 16  # 8 C+ and 8 C- wells, each predicted once out-of-fold
    assert (out / "confusion.png").stat().st_size > 5000
    assert len(pd.read_csv(out / "predictions.csv")) == 16
    assert '"accuracy": 1.0' in capsys.readouterr().out


def test_evaluate_small_plate_uses_grouped_cv_and_says_so(profiles, tmp_path, capsys) -> None:
    # 16 control wells: a 75/25 split would test 4 wells (accuracy in steps of 1/4); the default
    # switches to 5-fold CV grouped by well, every well tested once, and says so in the outputs.
    assert main(["evaluate", str(profiles), "-o", str(tmp_path / "auto")]) == 0
    res = json.loads((tmp_path / "auto" / "evaluation.json").read_text())
    assert res["cv"] == 5 and res["n_test_wells"] == 16 and "5-fold" in res["validation"]
    assert res["scaler"] == "controls"
    assert "validation: 16 wells < 80: 5-fold cross-validation grouped by well" in capsys.readouterr().out
    assert main(["evaluate", str(profiles), "--cv", "split", "--scaler", "wells", "-o", str(tmp_path / "s")]) == 0
    res = json.loads((tmp_path / "s" / "evaluation.json").read_text())
    assert res["cv"] is None and res["n_test_wells"] == 4 and res["scaler"] == "wells"
    with pytest.raises(SystemExit):
        main(["evaluate", str(profiles), "--cv", "many", "-o", str(tmp_path / "x")])
    assert "'many'" in capsys.readouterr().err


def test_evaluate_label_mode_and_errors(profiles, tmp_path, capsys) -> None:
    assert main(["evaluate", str(profiles), "--label", "Metadata_Role", "-o", str(tmp_path / "lab")]) == 0
    assert json.loads((tmp_path / "lab" / "evaluation.json").read_text())["classes"] == ["negative", "positive", "treated"]
    assert main(["evaluate", str(profiles), "--label", "Metadata_Role", "--positive", "x", "-o", str(tmp_path)]) == 1
    assert "--label" in capsys.readouterr().err
    assert main(["evaluate", str(profiles), "--positive", "Metadata_Rol == 'positive'", "--negative",
                 "Metadata_Role == 'negative'", "-o", str(tmp_path)]) == 1
    assert "Metadata_Rol" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.parquet"), "-o", str(tmp_path)]) == 1
    assert "missing.parquet" in capsys.readouterr().err


def test_project_writes_scores_and_stats(profiles, tmp_path) -> None:
    out = tmp_path / "pj"
    assert main(["project", str(profiles), "-o", str(out)]) == 0
    scores = read_table(out / "scores.parquet")
    assert list(scores.columns[-3:]) == ["OnScore", "OffScore", "Metadata_Control"] and len(scores) == 24
    assert not any(c.startswith("GAN_") for c in scores.columns)
    on = scores.groupby("Metadata_Role")["OnScore"].mean()
    assert on["positive"] == pytest.approx(1.0) and on["negative"] == pytest.approx(-1.0)
    assert -1.0 < on["treated"] < 1.0  # half-way shift lands between the controls
    stats = json.loads((out / "projection.json").read_text())
    # in sample the SVM finds the shifted feature (Z' 0.45); out of fold, 8 noise features on 16 wells cost it
    assert stats["n_positive"] == 8 and stats["z_prime_in_sample"] > 0 and stats["z_prime_method"].startswith("out of fold")
    assert stats["z_prime_in_sample"] > stats["z_prime"]
    axes = pd.read_csv(out / "axes.csv")
    assert axes["feature"].iloc[0] == "GAN_0"  # the shifted feature dominates the On axis
    for png in ("e2.png", "on_heatmap.png"):
        assert (out / png).stat().st_size > 5000
    assert scores.attrs["gandl"]["projection"]["n_negative"] == 8


def test_project_reads_gzipped_csv(tmp_path, test_data) -> None:
    out = tmp_path / "lincs"
    src = test_data / "lincs" / "SQ00015054_normalized_feature_select.csv.gz"
    assert main(["project", str(src), "--positive", "'proteasome' in Metadata_moa",
                 "--negative", "Metadata_broad_sample == 'DMSO'", "-o", str(out)]) == 0
    assert json.loads((out / "projection.json").read_text())["z_prime"] > 0.8


def test_evaluate_zero_shot_on_another_table(profiles, tmp_path, capsys) -> None:
    df = read_table(profiles)
    other = df.copy()
    feats = [c for c in df.columns if c.startswith("GAN_")]
    other[feats] = other[feats] + np.random.default_rng(5).normal(scale=0.3, size=other[feats].shape)
    other = other.drop(columns=["GAN_7"]).assign(GAN_extra=1.0)  # missing feature -> named error
    write_table(other, tmp_path / "other.parquet")
    assert main(["evaluate", str(profiles), "--label", "Metadata_Role", "--test", str(tmp_path / "other.parquet"),
                 "-o", str(tmp_path / "zs")]) == 1
    assert "GAN_7" in capsys.readouterr().err
    other["GAN_7"] = df["GAN_7"]
    write_table(other, tmp_path / "other.parquet")
    assert main(["evaluate", str(profiles), "--label", "Metadata_Role", "--test", str(tmp_path / "other.parquet"),
                 "-o", str(tmp_path / "zs")]) == 0
    res = json.loads((tmp_path / "zs" / "evaluation.json").read_text())
    assert res["accuracy"] >= 0.9 and res["mode"] == "zero_shot" and res["n_test_wells"] == 24
    assert main(["evaluate", str(profiles), "--test", str(tmp_path / "other.parquet"), "-o", str(tmp_path)]) == 1
    assert "--label" in capsys.readouterr().err


def test_prefix_selects_one_feature_set(profiles, tmp_path, capsys) -> None:
    df = read_table(profiles)
    noise = np.random.default_rng(9).normal(size=(len(df), 4))
    df[[f"CAE_{i}" for i in range(4)]] = noise  # a second, uninformative feature set
    write_table(df, tmp_path / "two.parquet")
    assert main(["project", str(tmp_path / "two.parquet"), "--prefix", "CAE_", "-o", str(tmp_path / "cae")]) == 0
    assert main(["project", str(tmp_path / "two.parquet"), "--prefix", "GAN_", "-o", str(tmp_path / "gan")]) == 0
    z_cae = json.loads((tmp_path / "cae" / "projection.json").read_text())
    z_gan = json.loads((tmp_path / "gan" / "projection.json").read_text())
    assert z_gan["n_features"] == 8 and z_gan["z_prime_in_sample"] > 0 > z_cae["z_prime_in_sample"]
    assert z_gan["z_prime"] > z_cae["z_prime"]
    assert main(["evaluate", str(tmp_path / "two.parquet"), "--prefix", "DN_", "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "--prefix 'DN_'" in err and "CAE_" in err and "GAN_" in err


def test_evaluate_map_of_replicates(profiles, tmp_path) -> None:
    out = tmp_path / "m"
    assert main(["evaluate", str(profiles), "--map", "Metadata_Role", "--map-query", "Metadata_Role != 'treated'",
                 "-o", str(out)]) == 0
    res = json.loads((out / "evaluation.json").read_text())
    per = pd.read_csv(out / "map.csv").set_index("Metadata_Role")["mean_average_precision"]
    # C+ share a strong direction (GAN_0 + 10): by cosine their replicates always rank first. C- are
    # pure noise vectors (cosine among them is random), so only the C+ wells below them help.
    assert per["positive"] > 0.99 and 0.5 < per["negative"] < per["positive"]
    assert res["map"] == pytest.approx(per.mean()) and res["map_groups"] == 2
