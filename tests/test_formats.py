"""Vendor formats through bioio (the optional ``formats`` extra): an ImageXpress acquisition folder and
a CZI file, both written here (CZI with pylibCZIrw, which bioio-czi ships with). Skipped cleanly when
the extra is not installed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("bioio")
pytestmark = pytest.mark.filterwarnings("ignore:Failed to convert value")  # xsdata on pylibCZIrw's OME-XML

from bioio_files import value as _value, write_czi as _write_czi, write_imagexpress  # noqa: E402

from gandl_core.errors import DataError  # noqa: E402
from gandl_core.plates import build_index, read_site  # noqa: E402


def test_imagexpress_folder_indexes_and_embeds(tmp_path):
    pytest.importorskip("bioio_imagexpress")
    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.random_d import random_d_featurizer
    from gandl_core.progress import run_to_end

    root = write_imagexpress(tmp_path / "Plate7")
    idx = build_index(root)
    assert idx.columns.tolist() == ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Path_DAPI", "Path_FITC"]
    assert idx[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]].values.tolist() == [
        ["Plate7", "B02", 1], ["Plate7", "B02", 2], ["Plate7", "C03", 1], ["Plate7", "C03", 2]]
    assert idx.at[3, "Path_FITC"].endswith("Plate7::scene=3::1")
    for i, (w, s) in enumerate([(0, 1), (0, 2), (1, 1), (1, 2)]):
        img = read_site(idx.iloc[i])
        assert img.shape == (2, 40, 44)
        assert img[0].min() == img[0].max() == _value(0, w, s) and img[1].max() == _value(1, w, s)
    f = random_d_featurizer(["DAPI", "FITC"], preset="cpu-tiny", resolution=16, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant fields: the engine warns about constant features
        emb = run_to_end(embed_iter(idx, f, batch_size=4))
    assert emb.shape == (4, 3 + f.n_features) and np.isfinite(emb.filter(like="RandD_").to_numpy()).all()


def test_czi_named_after_its_well_indexes_and_embeds(tmp_path):
    pytest.importorskip("bioio_czi")
    pytest.importorskip("pylibCZIrw")
    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.random_d import random_d_featurizer
    from gandl_core.progress import run_to_end

    folder = tmp_path / "ScreenC"
    folder.mkdir()
    _write_czi(folder / "ScreenC_B02.czi")
    _write_czi(folder / "ScreenC_D11.czi", well=1)
    idx = build_index(folder)
    assert idx.columns.tolist()[3:] == ["Path_DNA", "Path_ER"]
    assert idx[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]].values.tolist() == [
        ["ScreenC", "B02", 1], ["ScreenC", "D11", 1]]
    img = read_site(idx.iloc[1])
    assert img.shape == (2, 30, 26) and img[1, 0, 0] == _value(1, 1, 1)  # D11's file, ER plane
    f = random_d_featurizer(["DNA", "ER"], preset="cpu-tiny", resolution=16, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant fields: the engine warns about constant features
        emb = run_to_end(embed_iter(idx, f, batch_size=2))
    feats = emb.filter(like="RandD_").to_numpy()
    assert emb["Metadata_Well"].tolist() == ["B02", "D11"] and np.isfinite(feats).all()
    assert np.abs(feats[0] - feats[1]).max() > 0  # the two wells' planes differ, so do their vectors
    one = build_index(folder / "ScreenC_B02.czi")  # one file: plate = its stem
    assert one["Metadata_Plate"].tolist() == ["ScreenC_B02"]


def test_scene_without_a_well_is_named(tmp_path):
    pytest.importorskip("bioio_czi")
    pytest.importorskip("pylibCZIrw")
    _write_czi(tmp_path / "sample.czi")
    with pytest.raises(DataError, match=r"sample.czi: scene 0 .* names no well.*B02.nd2"):
        build_index(tmp_path / "sample.czi")
