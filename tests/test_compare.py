"""compare: a table with signal beats a table of noise on every metric; CLI writes CSV/Markdown/HTML."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gandl_core.analysis.compare import compare_embeddings, parse_task, to_markdown, well_profiles
from gandl_core.cli import main
from gandl_core.errors import ConfigError
from gandl_core.tables import write_table

EC50 = {"c1": 0.03, "c2": 0.3, "c3": 3.0, "c4": 30.0}
DOSES = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]


def _screen(signal: bool, seed: int = 0, n_feat: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=n_feat)
    direction /= np.linalg.norm(direction)
    own = {c: rng.normal(size=n_feat) for c in EC50}  # each compound also has its own phenotype
    rows = []
    for plate in ("P1", "P2"):
        wells = [("positive", "", np.nan, 1.0)] * 8 + [("negative", "", np.nan, 0.0)] * 8
        wells += [("treated", c, d, 1 / (1 + (e / d) ** 1.5)) for c, e in EC50.items() for d in DOSES]
        for k, (role, cmpd, dose, s) in enumerate(wells):
            for site in (1, 2):
                x = rng.normal(scale=0.3, size=n_feat) + (s * (4.0 * direction + own.get(cmpd, 0.0)) if signal else 0.0)
                rows.append({"Metadata_Plate": plate, "Metadata_Well": f"W{k:03d}", "Metadata_Site": site,
                             "Metadata_CellType": "A" if k % 2 else "B", "Metadata_Role": role,
                             "Metadata_Treatment": cmpd, "Metadata_Concentration": dose,
                             **{f"F_{j:03d}": v for j, v in enumerate(x)}})
    return pd.DataFrame(rows)


def _gt() -> pd.DataFrame:
    return pd.DataFrame({"treatment": list(EC50), "ec50_uM": list(EC50.values()), "active": True})


def test_signal_beats_noise():
    res = compare_embeddings({"signal": _screen(True), "noise": _screen(False, seed=1)},
                             tasks=["controls", "percelltype"], ground_truth=_gt())
    s, n = res["signal"], res["noise"]
    assert s[("controls", "accuracy")] == 1.0 and n[("controls", "accuracy")] < 0.9
    assert s[("controls", "z_prime")] > 0.3 and n[("controls", "z_prime")] < 0
    assert s[("controls", "n_dose_fits")] == 4 and n[("controls", "n_dose_fits")] <= 1
    assert s[("controls", "ec50_spearman")] == pytest.approx(1.0)
    # every compound of the truth is active: the signal table calls all 4, the noise table at most 1
    assert s[("controls", "active_recall")] == 1.0 and n[("controls", "active_recall")] <= 0.25
    assert s[("replicate", "replicate_map")] > n[("replicate", "replicate_map")] + 0.2
    assert ("controls [A]", "accuracy") in res.index and ("controls [B]", "z_prime") in res.index
    md = to_markdown(res)
    assert "| controls | accuracy | **1.000** |" in md and "replicate_map" in md


def test_well_profiles_and_tasks():
    prof = well_profiles(_screen(True))
    assert len(prof) == 2 * (16 + 24) and "Metadata_Site" not in prof.columns
    neg = prof[prof["Metadata_Role"] == "negative"]
    assert np.allclose(neg.groupby("Metadata_Plate")["F_000"].mean(), 0, atol=1e-5)  # standardized to C-
    assert parse_task("a == 1;b == 2") == {"name": "a == 1;b == 2", "kind": "query",
                                           "positive": "a == 1", "negative": "b == 2"}
    with pytest.raises(ConfigError, match="--task 'pos only'"):
        parse_task("pos only")
    # a custom task with explicit queries gives the same accuracy as the default controls here
    res = compare_embeddings({"s": _screen(True)}, replicate_map=False,
                             tasks=["controls", "Metadata_Role == 'positive';Metadata_Role == 'negative'"])
    q = "Metadata_Role == 'positive';Metadata_Role == 'negative'"
    assert res.loc[(q, "accuracy"), "s"] == res.loc[("controls", "accuracy"), "s"]
    assert res.loc[(q, "z_prime"), "s"] == pytest.approx(res.loc[("controls", "z_prime"), "s"])


def test_cli(tmp_path, capsys):
    write_table(_screen(True), tmp_path / "a.parquet")
    write_table(_screen(False, seed=3), tmp_path / "b.parquet")
    _gt().to_csv(tmp_path / "gt.csv", index=False)
    rc = main(["compare", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), "--name", "sig", "--name",
               "noise", "--task", "controls", "--ground-truth", str(tmp_path / "gt.csv"), "-o", str(tmp_path / "cmp")])
    assert rc == 0
    csv = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert list(csv.columns) == ["task", "metric", "sig", "noise"]
    assert csv.set_index(["task", "metric"]).loc[("controls", "accuracy"), "sig"] == 1.0
    assert "| task | metric | sig | noise |" in (tmp_path / "cmp" / "compare.md").read_text()
    assert (tmp_path / "cmp" / "compare.html").is_file() and (tmp_path / "cmp" / "compare.json").is_file()
    printed = capsys.readouterr().out
    assert "compare.html" in printed.splitlines()[-1] and "compare.json" in printed.splitlines()[-1]
    assert main(["compare", str(tmp_path / "a.parquet"), "--task", "bogus", "-o", str(tmp_path / "c2")]) == 1
    assert "--task 'bogus'" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a.parquet"), "--ground-truth", str(tmp_path / "no.csv"),
                 "-o", str(tmp_path / "c3")]) == 1
    assert "--ground-truth" in capsys.readouterr().err


def test_celltype_task():
    df = _screen(False, seed=2)
    shifted = df.copy()
    shifted.loc[shifted["Metadata_CellType"] == "A", "F_001"] += 3.0  # cell type A differs in one feature
    res = compare_embeddings({"typed": shifted, "plain": df}, tasks=["celltype"], replicate_map=False)
    assert res.loc[("celltype", "accuracy"), "typed"] == 1.0
    assert res.loc[("celltype", "accuracy"), "plain"] < 0.8
