"""Named-channel formats open in napari through the plugin's reader, channels named from the file's
metadata (issue 14: 'a bioio-read file ... opens in napari with the right names'): vendor files read
through bioio (the ``formats`` extra; skipped cleanly where bioio or the format's plugin is absent) and
OME-TIFF stacks (tifffile, always installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bioio_files import value, write_czi, write_imagexpress
from conftest import open_failing, open_plate
from napari_gandl import _layers as L
from napari_gandl._reader import classify, get_reader

pytestmark = [pytest.mark.napari, pytest.mark.filterwarnings("ignore:Failed to convert value")]


def _site_layers(viewer):
    return [ly for ly in viewer.layers if ly.metadata.get(L.KIND_KEY) == "site"]


def test_imagexpress_folder_opens_with_named_channels(make_napari_viewer, tmp_path: Path, qtbot) -> None:
    pytest.importorskip("bioio")
    pytest.importorskip("bioio_imagexpress")
    root = write_imagexpress(tmp_path / "Plate7")
    assert classify(root) == ("plate", root)
    viewer = make_napari_viewer()
    session = open_plate(viewer, root, qtbot)
    assert session.channel_names == ["DAPI", "FITC"]  # from the .jdce descriptor, not w1/w2
    assert sorted(session.wells["Metadata_Well"]) == ["B02", "C03"] and (session.wells["n_sites"] == 2).all()
    sites = _site_layers(viewer)
    assert [ly.name for ly in sites] == ["site DAPI", "site FITC"]
    fitc = viewer.layers["site FITC"]
    assert fitc.data.dtype == np.uint16 and fitc.data.shape == (40, 44)
    # the first site (B02 s1) is shown: FITC plane of well 0, site 1
    assert int(fitc.data.min()) == int(fitc.data.max()) == value(1, 0, 1)


def test_czi_files_open_with_named_channels(make_napari_viewer, tmp_path: Path, qtbot) -> None:
    """A CZI file and a folder of them (one file per well) are plates to the reader."""
    pytest.importorskip("bioio")
    pytest.importorskip("bioio_czi")
    pytest.importorskip("pylibCZIrw")
    folder = tmp_path / "ScreenC"
    folder.mkdir()
    write_czi(folder / "ScreenC_B02.czi", well=0)
    write_czi(folder / "ScreenC_D11.czi", well=1)
    assert classify(folder) == ("plate", folder)
    one = folder / "ScreenC_D11.czi"
    assert classify(one) == ("plate", one)
    viewer = make_napari_viewer()
    session = open_plate(viewer, folder, qtbot)
    assert session.channel_names == ["DNA", "ER"]
    assert session.wells["Metadata_Well"].tolist() == ["B02", "D11"]
    er = viewer.layers["site ER"]
    assert [ly.name for ly in _site_layers(viewer)] == ["site DNA", "site ER"]
    assert er.data.dtype == np.uint16 and er.data.shape == (30, 26) and int(er.data.max()) == value(1, 0, 1)
    # one file alone: its plate is the file's stem, its one scene the well in its name
    session = open_plate(viewer, one, qtbot)
    assert session.plates == ["ScreenC_D11"] and session.wells["Metadata_Well"].tolist() == ["D11"]
    assert int(viewer.layers["site DNA"].data.max()) == value(0, 1, 1)


def test_reader_patterns_offer_vendor_files(tmp_path: Path) -> None:
    """npe2 offers the plugin .czi and .nd2 files (bioio reads them), still no plain TIFF."""
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager()
    pm.register(PluginManifest.from_distribution("napari-gandl"))

    def ours(path: str) -> bool:
        return any(r.command.startswith("napari-gandl.") for r in pm.iter_compatible_readers([path]))

    assert ours(str(tmp_path / "B02.czi")) and ours(str(tmp_path / "plate_B02.ND2"))
    assert not ours(str(tmp_path / "field.tif"))
    assert get_reader(str(tmp_path / "missing.nd2")) is None  # not there: not ours


def test_vendor_file_without_bioio_is_one_message(make_napari_viewer, tmp_path: Path, qtbot, errors,
                                                  monkeypatch) -> None:
    """Without the extra, opening a .czi names the file and the install line; no traceback, no layers."""
    monkeypatch.setitem(__import__("sys").modules, "bioio", None)  # import bioio -> ImportError
    path = tmp_path / "plate1_B02.czi"
    path.write_bytes(b"CZI")
    hub = open_failing(make_napari_viewer(), path, qtbot)
    viewer = hub.viewer
    assert len(errors) == 1, errors
    assert path.name in errors[0] and "napari-gandl[formats]" in errors[0] and "Traceback" not in errors[0]
    assert hub.session is None and len(viewer.layers) == 0


def test_ome_tiff_stacks_open_with_their_channel_names(make_napari_viewer, tmp_path: Path, qtbot) -> None:
    """OME-TIFF stacks name their channels in the OME-XML; the layers carry those names, not w1..w3."""
    import tifffile

    folder = tmp_path / "P1"
    folder.mkdir()
    for w, well in enumerate(("B02", "C03")):
        data = np.stack([np.full((20, 24), value(c, w, 1), np.uint16) for c in range(3)])
        tifffile.imwrite(folder / f"P1_{well}_s1.ome.tif", data,
                         metadata={"axes": "CYX", "Channel": {"Name": ["Hoechst", "Phalloidin", "MitoTracker"]}})
    viewer = make_napari_viewer()
    session = open_plate(viewer, folder, qtbot)
    assert session.channel_names == ["Hoechst", "Phalloidin", "MitoTracker"]
    assert [ly.name for ly in _site_layers(viewer)] == ["site Hoechst", "site Phalloidin", "site MitoTracker"]
    assert viewer.layers["site Hoechst"].colormap.name == "blue"  # a nuclear stain by name
    assert int(viewer.layers["site MitoTracker"].data.max()) == value(2, 0, 1)
