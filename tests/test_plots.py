"""Figures: each function writes a real PNG (right size, no temp files left) and names bad columns/wells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gandl_core.analysis import dose_response as dr
from gandl_core.analysis import plots
from gandl_core.errors import DataError


def _scores(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in ("P1", "P2"):
        for i in range(40):
            role = "positive" if i < 6 else "negative" if i < 12 else "treated"
            conc = 0.0 if role != "treated" else [0.01, 0.1, 1.0, 10.0, 100.0][i % 5]
            on = {"positive": 1.0, "negative": -1.0}.get(role, float(dr.hill(conc, -1, 1, 1.0, 1.2)))
            rows.append({"Metadata_Plate": p, "Metadata_Well": f"{'ABCDEFGH'[i // 12]}{i % 12 + 1:02d}",
                         "Metadata_Role": role, "Metadata_CellType": "HRCE" if i % 2 else "VERO",
                         "Metadata_Treatment": "" if role != "treated" else f"c{i % 2}",
                         "Metadata_Concentration": conc, "OnScore": on + rng.normal(0, 0.15),
                         "OffScore": rng.normal()})
    return pd.DataFrame(rows)


def _png(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temp file left behind"
    with Image.open(path) as im:
        return im.size


def test_scatters_write_pngs(tmp_path: Path) -> None:
    df = _scores()
    w, h = _png(plots.e2_scatter(df, tmp_path / "e2.png"))
    assert w > 500 and h > 400
    assert _png(plots.c2_scatter(df, tmp_path / "c2.png", classes=("HRCE", "VERO")))[0] > 500
    # defaults absent from the table are skipped, explicit missing columns are named
    _png(plots.e2_scatter(df[["OnScore", "OffScore"]], tmp_path / "bare.png"))
    # a scores table of an older version (On/Off columns) still plots
    _png(plots.e2_scatter(df.rename(columns={"OnScore": "On", "OffScore": "Off"}), tmp_path / "old.png"))
    with pytest.raises(DataError, match="Metadata_Donor"):
        plots.e2_scatter(df, tmp_path / "x.png", color="Metadata_Donor")
    with pytest.raises(DataError, match="finite"):
        plots.e2_scatter(df.assign(OnScore=np.nan), tmp_path / "x.png")


def test_dose_scatter_with_and_without_fits(tmp_path: Path) -> None:
    df = _scores()
    fits = dr.fit_all(df)
    _png(plots.dose_scatter(df, fits, "c1", tmp_path / "d1.png"))
    _png(plots.dose_scatter(df, None, "c0", tmp_path / "d0.png", controls={}))
    with pytest.raises(DataError, match="'nope'"):
        plots.dose_scatter(df, fits, "nope", tmp_path / "x.png")
    with pytest.raises(DataError, match="Metadata_Dose"):
        plots.dose_scatter(df, fits, "c1", tmp_path / "x.png", dose_col="Metadata_Dose")
    old_fits = fits.rename(columns={"Metadata_Compound": "compound", "Metadata_Status": "status"})
    _png(plots.dose_scatter(df.rename(columns={"OnScore": "On"}), old_fits, "c1", tmp_path / "old.png", score="On"))


def test_dose_plot_shows_the_95_percent_intervals() -> None:
    plt = plots._plt()
    df = _scores()
    row = dr.fit_all(df).set_index("Metadata_Compound").loc["c1"]
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    title = plots._draw_fit(ax, row, np.array([0.01, 100.0]), "uM")
    band = [p for p in ax.patches if p.get_label() == "EC50 95% CI"]
    plt.close(fig)
    assert len(band) == 1
    lo, hi = row["ec50_ci_low"], row["ec50_ci_high"]
    assert f"[{lo:.3g}, {hi:.3g}]" in title and f"hill = {row['hill']:.2g} [" in title and "efficacy" in title


def test_plate_grids_place_and_average_wells() -> None:
    df = pd.DataFrame({"Metadata_Plate": ["1", "1", "1", "2"], "Metadata_Well": ["B02", "B02", "H12", "A1"],
                       "v": [1.0, 3.0, 5.0, 7.0]})
    layout, grids = plots.plate_grids(df, "v")
    assert layout == 96 and list(grids) == ["1", "2"]
    g = grids["1"]
    assert g.shape == (8, 12) and g[1, 1] == 2.0 and g[7, 11] == 5.0
    assert np.isnan(g).sum() == 96 - 2 and grids["2"][0, 0] == 7.0
    assert plots.plate_grids(df.assign(Metadata_Well=["P24", "A01", "A02", "A03"]), "v")[0] == 384
    assert plots.plate_grids(df.assign(Metadata_Well=["AF48", "A01", "A02", "A03"]), "v")[0] == 1536
    with pytest.raises(DataError, match="'X\\+7'"):
        plots.plate_grids(df.assign(Metadata_Well=["X+7", "A01", "A02", "A03"]), "v")
    with pytest.raises(DataError, match="96-well"):
        plots.plate_grids(df.assign(Metadata_Well=["P24", "A01", "A02", "A03"]), "v", layout=96)


def test_plate_heatmap_and_confusion(tmp_path: Path) -> None:
    df = _scores()
    _png(plots.plate_heatmap(df, "OnScore", tmp_path / "heat.png"))
    _png(plots.plate_heatmap(df, "Metadata_Concentration", tmp_path / "conc.png", max_plates=1))
    with pytest.raises(DataError, match="not numeric"):
        plots.plate_heatmap(df, "Metadata_Role", tmp_path / "x.png")
    cm = pd.DataFrame([[5, 1], [0, 6]], index=["C+", "C-"], columns=["C+", "C-"])
    w, h = _png(plots.confusion_matrix(cm, tmp_path / "cm.png"))
    assert w > 300 and h > 300
    _png(plots.confusion_matrix(np.eye(3) * 4, tmp_path / "cm3.png", classes=["a", "b", "c"]))
    with pytest.raises(DataError, match="square"):
        plots.confusion_matrix(np.ones((2, 3)), tmp_path / "x.png")
