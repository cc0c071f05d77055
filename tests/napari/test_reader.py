"""Manifest validity and the reader on each input form (RxRx folder, LoadData CSV, TIFF, tables)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_gandl import _layers as L
from napari_gandl._reader import classify, get_reader

pytestmark = pytest.mark.napari


def test_manifest_validates() -> None:
    npe2 = Path(sys.executable).with_name("npe2")
    res = subprocess.run([str(npe2), "validate", "napari-gandl"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in res.stdout


def test_manifest_lists_every_widget() -> None:
    from npe2 import PluginManifest

    mf = PluginManifest.from_distribution("napari-gandl")
    names = {w.display_name for w in mf.contributions.widgets}
    assert names == {"Plate browser", "Train GAN", "Embed wells", "Projection and activity"}
    assert all(c.id.startswith("napari-gandl.") for c in mf.contributions.commands)
    assert mf.contributions.sample_data[0].key == "synthetic_screen"


def test_not_ours_returns_none(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "plain.csv", index=False)
    (tmp_path / "empty").mkdir()
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "plain.csv")) is None
    assert get_reader(str(tmp_path / "empty")) is None
    assert get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) is None


def test_rxrx_folder_first_site_and_plate_map(make_napari_viewer, tiny_rxrx: Path) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open(str(tiny_rxrx), plugin="napari-gandl")
    names = [ly.name for ly in layers]
    assert names[:5] == ["site DNA", "site ER", "site Actin", "site RNA", "site Golgi"]
    cmaps = [viewer.layers[n].colormap.name for n in names[:5]]
    assert cmaps == ["blue", "green", "red", "cyan", "magenta"]
    assert all(viewer.layers[n].blending == "additive" for n in names[:5])
    dna = viewer.layers["site DNA"]
    lo, hi = dna.contrast_limits
    assert np.percentile(dna.data, 0.5) == pytest.approx(lo) and np.percentile(dna.data, 99.8) == pytest.approx(hi)
    pm = L.find_plate_map(viewer)
    assert pm is not None and pm.symbol[0].value == "square"
    assert len(pm.data) == 8 and set(pm.features["Metadata_Well"]) >= {"B02", "C05"}
    assert (pm.features["n_sites"] == 2).all()
    assert pm.features["Metadata_Role"].tolist().count("positive") == 2
    # geometry: B02 is row 1 col 1; C05 row 2 col 4; spacing = image height / 4 rows (24-well plate)
    session = pm.metadata[L.SESSION_KEY]
    assert session.plates == ["EXP-1_Plate1", "EXP-1_Plate2"]
    s = session.spacing
    assert s == pytest.approx(32 / 4)
    b02 = pm.data[pm.features["Metadata_Well"] == "B02"][0]
    c05 = pm.data[pm.features["Metadata_Well"] == "C05"][0]
    assert c05 - b02 == pytest.approx(np.array([s, 3 * s]))
    assert b02[1] > 32  # right of the 32-px site image


def test_loaddata_csv(make_napari_viewer, test_data: Path) -> None:
    csv = test_data / "bbbc022_crop" / "load_data.csv"
    assert classify(csv) == "plate"
    viewer = make_napari_viewer()
    viewer.open(str(csv), plugin="napari-gandl")
    chans = [ly.name for ly in viewer.layers if ly.metadata.get(L.KIND_KEY) == "site"]
    assert chans == ["site DNA", "site ER", "site RNA", "site AGP", "site Mito"]
    assert [viewer.layers[c].colormap.name for c in chans] == ["blue", "green", "cyan", "red", "magenta"]
    assert viewer.layers["site DNA"].data.dtype == np.float32


@pytest.mark.parametrize("last", [False, True])
def test_multichannel_tiff(make_napari_viewer, tmp_path: Path, last: bool) -> None:
    import tifffile

    arr = np.stack([np.full((20, 24), 100 * (k + 1), np.uint16) for k in range(3)])
    arr[:, 5, 5] = 5000
    if last:
        arr = np.moveaxis(arr, 0, -1)
    tifffile.imwrite(tmp_path / "field.tif", arr, photometric="minisblack")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "field.tif"), plugin="napari-gandl")
    assert [ly.name for ly in viewer.layers] == ["site Ch1", "site Ch2", "site Ch3"]
    assert viewer.layers["site Ch2"].data.shape == (20, 24)
    assert float(np.median(viewer.layers["site Ch3"].data)) == 300


def test_profile_parquet_plate_map(make_napari_viewer, tmp_path: Path) -> None:
    from gandl_core.tables import write_table

    rng = np.random.default_rng(0)
    sites = pd.DataFrame({"Metadata_Plate": "P1", "Metadata_Well": np.repeat(["A01", "A02", "H12"], 3),
                          "Metadata_Site": np.tile([1, 2, 3], 3), "GAN_000": rng.normal(size=9)})
    write_table(sites, tmp_path / "emb.parquet")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "emb.parquet"), plugin="napari-gandl")
    pm = L.find_plate_map(viewer)
    assert len(pm.data) == 3  # aggregated per well
    med = sites.groupby("Metadata_Well")["GAN_000"].median()
    got = pm.features.set_index("Metadata_Well")["GAN_000"]
    assert got["H12"] == pytest.approx(med["H12"])
    assert L.plate_shape(["A01", "H12"]) == (8, 12)


def test_table_without_well_is_a_message(make_napari_viewer, tmp_path: Path, monkeypatch) -> None:
    from gandl_core.tables import write_table

    write_table(pd.DataFrame({"Metadata_Plate": ["P"], "GAN_000": [1.0]}), tmp_path / "bad.parquet")
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    reader = get_reader(str(tmp_path / "bad.parquet"))
    assert reader(str(tmp_path / "bad.parquet")) == [(None,)]
    assert "bad.parquet" in shown[0] and "Metadata_Well" in shown[0]


def test_stain_colormaps() -> None:
    assert L.colormap_for("Hoechst", 0) == "blue"
    assert L.colormap_for("ER", 1) == "green"
    assert L.colormap_for("Golgi-marker", 4) == "magenta"
    assert L.colormap_for("RNA", 3, used=["cyan"]) == "yellow"
    assert L.colormap_for("w7", 6, used=["cyan"]) != "cyan"
    assert L.parse_well("AB12") == (27, 11) and L.row_letter(27) == "AB"
    with pytest.raises(ValueError, match="'12B'"):
        L.parse_well("12B")


def test_tiff_of_a_zstack_is_a_message(tmp_path: Path, monkeypatch) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 4, 16, 16), np.uint16), photometric="minisblack")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    assert get_reader(str(tmp_path / "stack.tif"))(str(tmp_path / "stack.tif")) == [(None,)]
    assert "stack.tif" in shown[0] and "4-D" in shown[0]
    assert get_reader(str(tmp_path / "broken.tif"))(str(tmp_path / "broken.tif")) == [(None,)]
    assert "broken.tif" in shown[1]


def test_plate_with_a_missing_image_opens_without_it(tmp_path: Path, monkeypatch) -> None:
    from conftest import write_rxrx

    root = write_rxrx(tmp_path / "s", plates=1)
    (root / "images" / "EXP-1" / "Plate1" / "C05_s2_w3.png").unlink()
    with pytest.warns(UserWarning, match="C05"):
        layers = get_reader(str(root))(str(root))
    session = layers[-1][1]["metadata"][L.SESSION_KEY]
    assert len(session.index) == 15  # the site with the missing channel is left out, named in a warning
    assert session.wells.set_index("Metadata_Well").loc["C05", "n_sites"] == 1


def test_plugin_modules_do_not_import_torch() -> None:
    code = ("import sys\n"
            "import napari_gandl._reader, napari_gandl._sample_data, napari_gandl._plate_widget\n"
            "import napari_gandl._train_widget, napari_gandl._embed_widget, napari_gandl._analysis_widget\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False", "a widget module imported torch at start-up: keep it inside worker functions"
