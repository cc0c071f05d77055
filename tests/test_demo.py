"""The README's main job, end to end at smoke-test size: every stage runs and is scored."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gandl_core.cli import main
from gandl_core.errors import ConfigError
from gandl_core.progress import run_to_end


def test_demo_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    rc = main(["demo", str(out), "--preset", "cpu-tiny", "--minutes", "0.05", "--image-size", "48"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed and "Z' of the On-perturbation score" in printed
    numbers = json.loads((out / "numbers.json").read_text())
    for key in ("controls_accuracy", "controls_accuracy_random_d", "z_prime", "z_prime_random_d", "ec50_spearman",
                "active_auc", "active_precision", "active_recall"):
        assert key in numbers
    assert 0.0 <= numbers["controls_accuracy"] <= 1.0 and numbers["train_kimg"] > 0
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # figures embedded: the page stands alone
    fits = pd.read_csv(out / "dose_response_fits.csv")
    truth = pd.read_csv(out / "screen" / "ground_truth.csv")
    assert set(fits["Metadata_Compound"]) == set(truth["treatment"])
    scores = pd.read_parquet(out / "scores.parquet")
    ctrl = scores.groupby("Metadata_Role")["OnScore"].mean()
    assert ctrl["positive"] > ctrl["negative"]  # the axis points from C- to C+
    assert main(["demo", str(out), "--preset", "cpu-tiny"]) == 1  # refuses to clobber a result


def test_demo_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    from gandl_core.demo import run_demo

    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ConfigError, match="not empty"):
        run_to_end(run_demo(tmp_path))
    assert (tmp_path / "keep.txt").read_text() == "user data"
