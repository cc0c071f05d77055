"""The synthetic screen: layout, determinism, and that its ground truth is visible in the pixels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from gandl_core.errors import ConfigError, DataError
from gandl_core.synth import CHANNEL_NAMES, default_doses, make_screen, make_screen_iter


def _site(root: Path, row: pd.Series, site: int = 1) -> np.ndarray:
    folder = root / "images" / row.experiment / f"Plate{row.plate}"
    return np.stack([np.asarray(Image.open(folder / f"{row.well}_s{site}_w{k}.png"), dtype=np.float64)
                     for k in range(1, 6)])


def _puncta(img: np.ndarray, thr_puncta: float, thr_cell: float) -> float:
    """A hand-made readout: bright RNA pixels (viral puncta) per RNA-positive (cell) pixel."""
    return (img[3] > thr_puncta).sum() / max((img[3] > thr_cell).sum(), 1)


def _nuclei_area(img: np.ndarray, thr: float) -> float:
    return float((img[0] > thr).sum())


@pytest.fixture(scope="module")
def screen(tmp_path_factory) -> Path:
    return make_screen(tmp_path_factory.mktemp("s") / "screen", seed=3, image_size=96, sites=2, compounds=6,
                       replicates=2, controls=8, cell_types=("HRCE",))


def test_layout_counts_and_metadata(screen: Path) -> None:
    meta = pd.read_csv(screen / "metadata.csv", keep_default_na=False)
    assert list(meta.columns) == ["site_id", "well_id", "cell_type", "experiment", "plate", "well", "site",
                                  "disease_condition", "treatment", "treatment_conc"]
    n_wells = 8 + 8 + 6 * len(default_doses()) * 2
    assert len(meta) == 2 * n_wells and meta.site_id.is_unique and meta.well_id.nunique() == n_wells
    assert (meta.disease_condition == "Mock").sum() == 2 * 8
    assert ((meta.disease_condition == "Active SARS-CoV-2") & (meta.treatment == "")).sum() == 2 * 8
    assert meta.site_id.iloc[0] == f"{meta.well_id.iloc[0]}_1"
    img = _site(screen, pd.read_csv(screen / "wells.csv").iloc[0])
    assert img.shape == (len(CHANNEL_NAMES), 96, 96) and img.max() < 65536 and img.max() > 1000
    gt = pd.read_csv(screen / "ground_truth.csv")
    assert len(gt) == 6 and gt.active.any() and (~gt.active).any() and gt.toxic.any()
    assert set(meta.treatment[meta.treatment != ""]) == set(gt.treatment)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    kw = dict(seed=5, image_size=32, compounds=3, replicates=1, controls=2, cell_types=("VERO",))
    digests = []
    for name in ("a", "b"):
        root = make_screen(tmp_path / name, **kw)
        h = hashlib.sha256()
        for f in sorted(root.rglob("*")):
            if f.is_file():
                h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
        digests.append(h.hexdigest())
    assert digests[0] == digests[1]
    other = make_screen(tmp_path / "c", **{**kw, "seed": 6})
    assert (other / "ground_truth.csv").read_bytes() != (tmp_path / "a" / "ground_truth.csv").read_bytes()


def test_ground_truth_is_recoverable_by_a_hand_readout(screen: Path) -> None:
    wells = pd.read_csv(screen / "wells.csv", keep_default_na=False)
    gt = pd.read_csv(screen / "ground_truth.csv").set_index("treatment")
    imgs = [np.concatenate([_site(screen, r, 1), _site(screen, r, 2)], axis=2) for r in wells.itertuples()]
    mock = np.concatenate([im[3].ravel() for im, role in zip(imgs, wells.role) if role == "positive"])
    mock_dna = np.concatenate([im[0].ravel() for im, role in zip(imgs, wells.role) if role == "positive"])
    t_p, t_c, t_n = np.percentile(mock, 99.5), np.percentile(mock, 60), np.percentile(mock_dna, 90)
    wells["puncta"] = [_puncta(im, t_p, t_c) for im in imgs]
    wells["nuclei"] = [_nuclei_area(im, t_n) for im in imgs]
    ctrl = wells[wells.role.isin(["positive", "negative"])]
    auc = roc_auc_score(ctrl.role == "negative", ctrl.puncta)
    assert auc > 0.95, auc
    active = wells[(wells.role == "treated") & wells.treatment.map(lambda t: bool(gt.active.get(t, False)))]
    # Replicate wells averaged per compound and dose, as a screener would read it.
    per_dose = active.groupby(["treatment", "treatment_conc"])[["true_rescue", "puncta"]].mean()
    rho = spearmanr(per_dose.true_rescue.astype(float), -per_dose.puncta).statistic
    assert rho > 0.8, rho  # measured 0.93 for seed 3
    toxic = [t for t in gt.index if gt.toxic[t]]
    tw = wells[wells.treatment.isin(toxic)].copy()
    tw["dose"] = tw.treatment_conc.astype(float)
    low, high = tw[tw.dose <= tw.dose.min()].nuclei.mean(), tw[tw.dose >= tw.dose.max()].nuclei.mean()
    assert high < 0.6 * low, (low, high)


def test_progress_and_bad_options(tmp_path: Path) -> None:
    gen = make_screen_iter(tmp_path / "p", image_size=32, compounds=3, replicates=1, controls=1, cell_types=("HRCE",))
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            path = stop.value
            break
    assert path == tmp_path / "p" and reports[-1].done == reports[-1].total == 1 + 1 + 3 * 6
    with pytest.raises(DataError, match="not empty"):
        make_screen(tmp_path / "p", image_size=32)
    with pytest.raises(ConfigError, match="image_size"):
        make_screen(tmp_path / "q", image_size=16)
    with pytest.raises(ConfigError, match="cell_types"):
        make_screen(tmp_path / "q", cell_types=("HeLa",))
    assert not (tmp_path / "q").exists()  # nothing half-written
