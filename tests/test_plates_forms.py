"""Test helper: write the same small plate as an RxRx folder, a LoadData CSV and a TIFF-stack folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CH5 = ["DNA", "ER", "Actin", "RNA", "Golgi"]
EXPERIMENT = "HRCE-1"
# (plate number, well, site, condition, treatment, conc)
SITES = [
    (1, "B02", 1, "Mock", "", ""),
    (1, "B02", 2, "Mock", "", ""),
    (1, "B03", 1, "Active SARS-CoV-2", "", ""),
    (1, "C02", 1, "Active SARS-CoV-2", "Remdesivir", "0.3"),
    (1, "C03", 1, "UV Inactivated SARS-CoV-2", "", ""),
    (2, "B02", 1, "Active SARS-CoV-2", "Aspirin", "10"),
]
RXRX_HEADER = ["site_id", "well_id", "cell_type", "experiment", "plate", "well", "site",
               "disease_condition", "treatment", "treatment_conc", "SMILES"]


def site_arrays(seed: int = 0, h: int = 24, w: int = 20, c: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 65535, size=(c, h, w), dtype=np.uint16) for _ in SITES]


def _rxrx_rows():
    for (p, w, s, cond, tr, conc) in SITES:
        yield [f"{EXPERIMENT}_{p}_{w}_{s}", f"{EXPERIMENT}_{p}_{w}", "HRCE", EXPERIMENT, str(p), w, str(s),
               cond, tr, conc, "CCO" if tr else ""]


def write_rxrx(root: Path, arrays: list[np.ndarray]) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(RXRX_HEADER)
        wr.writerows(_rxrx_rows())
    for (p, w, s, *_), arr in zip(SITES, arrays):
        d = root / "images" / EXPERIMENT / f"Plate{p}"
        d.mkdir(parents=True, exist_ok=True)
        for k in range(arr.shape[0]):
            Image.fromarray(arr[k]).save(d / f"{w}_s{s}_w{k + 1}.png")
    return root


def _meta_columns():
    return ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_SiteId", "Metadata_WellId",
            "Metadata_CellType", "Metadata_Experiment", "Metadata_PlateNumber", "Metadata_Condition",
            "Metadata_Treatment", "Metadata_Concentration", "Metadata_SMILES"]


def _meta_values():
    for row, (p, w, s, *_) in zip(_rxrx_rows(), SITES):
        site_id, well_id, ct, exp, pn, _, _, cond, tr, conc, smi = row
        yield [f"{exp}_Plate{p}", w, s, site_id, well_id, ct, exp, pn, cond, tr, conc, smi]


def write_loaddata(root: Path, arrays: list[np.ndarray], names=CH5) -> Path:
    """Per-channel 16-bit TIFFs in root/img, CSV in root with relative PathName 'img'."""
    import tifffile

    (root / "img").mkdir(parents=True, exist_ok=True)
    with open(root / "load_data.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(_meta_columns() + sum([[f"FileName_{n}", f"PathName_{n}"] for n in names], []))
        # written in reverse order on purpose: build_index sorts by plate/well/site
        for vals, arr in reversed(list(zip(_meta_values(), arrays))):
            files = []
            for k, n in enumerate(names):
                f = f"{vals[0]}_{vals[1]}_s{vals[2]}_{n}.tif"
                tifffile.imwrite(root / "img" / f, arr[k])
                files += [f, "img"]
            wr.writerow(vals + files)
    return root / "load_data.csv"


def write_stacks(root: Path, arrays: list[np.ndarray], channels_last: bool = False) -> Path:
    """One [C,H,W] (or [H,W,C]) TIFF per site named <plate>_<well>_s<site>.tif + metadata.csv."""
    import tifffile

    root.mkdir(parents=True, exist_ok=True)
    for vals, arr in zip(_meta_values(), arrays):
        data = np.moveaxis(arr, 0, -1) if channels_last else arr
        tifffile.imwrite(root / f"{vals[0]}_{vals[1]}_s{vals[2]}.tif", np.ascontiguousarray(data),
                         photometric="minisblack", planarconfig="contig" if channels_last else None)
    with open(root / "metadata.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(_meta_columns())
        wr.writerows(_meta_values())
    return root


# --------------------------------------------------------------------------------------------
# The same plate in three layouts gives the same index
# --------------------------------------------------------------------------------------------

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from gandl_core.plates import build_index, channel_names, read_site  # noqa: E402


@pytest.fixture(scope="module")
def three_forms(tmp_path_factory):
    root = tmp_path_factory.mktemp("forms")
    arrays = site_arrays()
    rx = build_index(write_rxrx(root / "rxrx", arrays))
    ld = build_index(write_loaddata(root / "loaddata", arrays))
    st = build_index(write_stacks(root / "stacks", arrays), names=CH5)
    return arrays, rx, ld, st


def test_three_forms_same_index(three_forms) -> None:
    arrays, rx, ld, st = three_forms
    meta = [c for c in rx.columns if c.startswith("Metadata_")]
    assert channel_names(rx) == channel_names(ld) == channel_names(st) == CH5
    assert len(rx) == len(SITES)
    for other in (ld, st):
        assert [c for c in other.columns if c.startswith("Metadata_")] == meta
        pd.testing.assert_frame_equal(rx[meta], other[meta])
    # sorted by plate, well, site; contract types
    assert list(rx["Metadata_Plate"]) == ["HRCE-1_Plate1"] * 5 + ["HRCE-1_Plate2"]
    assert list(rx["Metadata_Well"]) == ["B02", "B02", "B03", "C02", "C03", "B02"]
    assert rx["Metadata_Site"].dtype == "int64" and rx["Metadata_Concentration"].dtype == "float64"
    assert list(rx["Metadata_Role"]) == ["positive", "positive", "negative", "treated", "positive", "treated"]
    assert list(rx["Metadata_Treatment"]) == ["", "", "", "Remdesivir", "", "Aspirin"]
    assert rx["Metadata_Concentration"].iloc[3] == 0.3 and rx["Metadata_Concentration"].iloc[0] == 0.0
    assert not rx[meta].isna().any().any()  # untreated = dose 0: clients (copairs) refuse null metadata
    assert list(rx["Metadata_SMILES"]) == ["", "", "", "CCO", "", "CCO"]
    assert all(p.endswith("::0") for p in st["Path_DNA"]) and all(p.endswith("::4") for p in st["Path_Golgi"])


def test_three_forms_same_pixels(three_forms) -> None:
    arrays, rx, ld, st = three_forms
    order = [SITES.index(s) for s in sorted(SITES, key=lambda s: (s[0], s[1], s[2]))]
    for i, j in enumerate(order):
        want = arrays[j].astype("float32")
        for ix in (rx, ld, st):
            got = read_site(ix.iloc[i])
            assert got.dtype == "float32" and got.shape == (5, 24, 20)
            assert (got == want).all()


def test_parquet_round_trip(three_forms, tmp_path) -> None:
    from gandl_core.tables import write_table

    _, rx, _, _ = three_forms
    write_table(rx, tmp_path / "index.parquet")
    back = build_index(tmp_path / "index.parquet")
    pd.testing.assert_frame_equal(rx, back)


def test_channels_last_stacks(tmp_path) -> None:
    arrays = site_arrays(seed=3, c=3)
    st = build_index(write_stacks(tmp_path / "s", arrays, channels_last=True))
    assert channel_names(st) == ["w1", "w2", "w3"]
    first = read_site(st.iloc[0])
    assert first.shape == (3, 24, 20) and (first == arrays[0]).all()


def test_synthetic_screen_indexes_with_its_roles(tmp_path) -> None:
    synth = pytest.importorskip("gandl_core.synth")
    root = synth.make_screen(tmp_path / "screen", seed=0, image_size=32, compounds=3, controls=2, replicates=1)
    ix = build_index(root)
    assert channel_names(ix) == CH5
    assert ix["Metadata_Plate"].str.match(r"^(HRCE|VERO)-1_Plate\d+$").all()
    wells = pd.read_csv(root / "wells.csv", dtype=str, keep_default_na=False)
    wells["Metadata_Plate"] = wells["experiment"] + "_Plate" + wells["plate"]
    merged = ix.merge(wells.rename(columns={"well": "Metadata_Well"}), on=["Metadata_Plate", "Metadata_Well"])
    assert len(merged) == len(ix)
    assert (merged["Metadata_Role"] == merged["role"]).all()
    img = read_site(ix.iloc[0])
    assert img.shape == (5, 32, 32) and img.max() > 255  # 16-bit PNG values kept
