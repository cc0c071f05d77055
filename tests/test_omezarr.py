"""OME-Zarr HCS plates (NGFF 0.4 and 0.5, written by ome-zarr-py) as a plate source."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ome_zarr")

from omezarr_plate import expected_value, write_plate  # noqa: E402

from gandl_core.errors import ConfigError, DataError  # noqa: E402
from gandl_core.plates import build_index, is_omezarr_plate, plate_channels, read_site  # noqa: E402

VERSIONS = ["0.4", "0.5"]


@pytest.fixture(scope="module", params=VERSIONS)
def plate(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"ngff{request.param}") / "screen1.ome.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_plate(path, request.param)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def test_index_names_wells_sites_channels(plate):
    assert is_omezarr_plate(plate)
    idx = build_index(plate)
    assert list(idx.columns) == ["Metadata_Plate", "Metadata_Well", "Metadata_Site",
                                 "Path_DNA", "Path_ER", "Path_Actin"]
    assert idx["Metadata_Plate"].unique().tolist() == ["Screen1"]  # the plate's name, not the folder's
    assert list(zip(idx["Metadata_Well"], idx["Metadata_Site"])) == [("B02", 1), ("B02", 2), ("C03", 1), ("C03", 2)]
    # Path form read_site understands: the level-0 array of the field + channel number.
    assert idx.at[3, "Path_ER"] == f"{plate.as_posix()}/C/3/1/s0::1"
    chans = plate_channels(plate)
    assert [(c["name"], c["color"]) for c in chans] == [("DNA", "0000FF"), ("ER", "00FF00"), ("Actin", "FF0000")]
    assert chans[0]["window"]["end"] == 4000


def test_read_site_lands_on_the_right_planes(plate):
    idx = build_index(plate)
    for i, (well, field) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        img = read_site(idx.iloc[i])
        assert img.shape == (3, 48, 40) and img.dtype == np.float32
        for c in range(3):
            base = expected_value(c, well, field)
            assert base <= img[c].min() and img[c].max() <= base + 9, (i, c)
    # channels= picks and orders planes by name
    two = read_site(idx.iloc[2], channels=["Actin", "DNA"])
    assert two[0].min() >= expected_value(2, 1, 0) and two[1].max() <= expected_value(0, 1, 0) + 9


def test_level_and_channel_selection(plate):
    idx = build_index(plate, level=1, channels=["ER"])
    assert idx.columns.tolist()[-1] == "Path_ER" and idx.at[0, "Path_ER"].endswith("/B/2/0/s1::1")
    img = read_site(idx.iloc[0])
    assert img.shape == (1, 24, 20)
    assert expected_value(1, 0, 0) <= img.min() and img.max() <= expected_value(1, 0, 0) + 9
    with pytest.raises(ConfigError, match="level=5.*2 pyramid level"):
        build_index(plate, level=5)
    with pytest.raises(ConfigError, match="OME-Zarr plates only"):
        build_index(_tiff_folder(plate.parent), level=1)


def _tiff_folder(base: Path) -> Path:
    import tifffile

    folder = base / "tiffs"
    folder.mkdir(exist_ok=True)
    tifffile.imwrite(folder / "P1_B02_s1.tif", np.zeros((2, 16, 16), np.uint16))
    return folder


def test_embed_and_no_write_back(plate, tmp_path):
    """index -> embed (random-d, cpu-tiny) -> a table keyed by plate/well/site; the plate is untouched."""
    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.random_d import random_d_featurizer
    from gandl_core.progress import run_to_end

    before = _tree_digest(plate)
    idx = build_index(plate)
    f = random_d_featurizer(["DNA", "ER", "Actin"], preset="cpu-tiny", resolution=16, seed=0)
    table = run_to_end(embed_iter(idx, f, out=tmp_path / "emb.parquet", batch_size=4))
    assert table[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]].values.tolist() == [
        ["Screen1", "B02", 1], ["Screen1", "B02", 2], ["Screen1", "C03", 1], ["Screen1", "C03", 2]]
    feats = table.filter(like="RandD_").to_numpy()
    assert feats.shape == (4, f.n_features) and np.isfinite(feats).all()
    assert np.ptp(feats, axis=0).max() > 0  # the four fields differ, so do their vectors
    assert (tmp_path / "emb.parquet").is_file()
    # Decision (see plates/_omezarr.py): nothing is written into the plate.
    assert _tree_digest(plate) == before


def test_singleton_t_squeezed_and_z_stack_refused(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p5 = write_plate(tmp_path / "t.ome.zarr", "0.5", axes="tczyx", fields=1, name=None)
        z3 = write_plate(tmp_path / "z.ome.zarr", "0.4", axes="czyx", fields=1, z=3)
        yx = write_plate(tmp_path / "cyx.zarr", "0.4", axes="cyx", fields=1)
    idx = build_index(p5)
    assert idx["Metadata_Plate"].unique().tolist() == ["t"]  # no name: folder name minus .ome.zarr
    img = read_site(idx.iloc[1])
    assert img.shape == (3, 48, 40) and img[2].min() >= expected_value(2, 1, 0)
    assert read_site(build_index(yx).iloc[0]).shape == (3, 48, 40)
    with pytest.raises(DataError, match="axis 'z' has 3 planes.*projection"):
        build_index(z3)


def test_folder_of_plates_and_cli_index(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_plate(tmp_path / "plates" / "A.ome.zarr", "0.4", name="PlateA", fields=1)
        write_plate(tmp_path / "plates" / "B.ome.zarr", "0.5", name="PlateB", fields=1)
    idx = build_index(tmp_path / "plates")
    assert idx.groupby("Metadata_Plate").size().to_dict() == {"PlateA": 2, "PlateB": 2}
    assert not is_omezarr_plate(tmp_path / "plates") and not is_omezarr_plate(tmp_path / "missing")
    out = tmp_path / "index.parquet"
    r = subprocess.run([sys.executable, "-m", "gandl_core.cli", "index", str(tmp_path / "plates" / "B.ome.zarr"),
                        "-o", str(out)], capture_output=True, text=True, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    again = build_index(out)  # the parquet index re-reads the zarr paths
    assert again.columns.tolist()[3:] == ["Path_DNA", "Path_ER", "Path_Actin"]
    assert read_site(again.iloc[0]).shape == (3, 48, 40)


def test_bad_plates_name_the_problem(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = write_plate(tmp_path / "bad.ome.zarr", "0.4", fields=1)
    # A field's array deleted: validation names the site; skip_missing leaves it out.
    import shutil

    shutil.rmtree(p / "C" / "3" / "0" / "s0")
    with pytest.raises(DataError, match="bad.ome.zarr/C/3/0"):
        build_index(p)
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        idx = build_index(p, skip_missing=True)
    assert idx["Metadata_Well"].tolist() == ["B02"]


def test_training_dataset_with_worker_processes(plate):
    """The train path: normalizer fitted on the plate, random crops, DataLoader workers forked after the
    parent has already read zarr (zarr 3 runs an event-loop thread)."""
    import torch

    from gandl_core.plates import IntensityNormalizer, PlateDataset

    idx = build_index(plate)
    norm = IntensityNormalizer().fit(idx, n_sites=4)
    assert norm.channels_ == ["DNA", "ER", "Actin"]
    ds = PlateDataset(idx, norm, 16, mode="random_crop", seed=0)
    serial = torch.stack([ds[i] for i in range(len(ds))])
    assert serial.shape == (4, 3, 16, 16) and float(serial.std()) > 0
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    forked = torch.cat(list(loader))
    assert torch.equal(forked, serial)
