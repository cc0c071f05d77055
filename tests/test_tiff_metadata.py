"""TIFF stacks whose metadata names the axes and channels (OME-XML, ImageJ, tifffile): the index takes the
channel axis and names from the metadata instead of guessing from the shape."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from gandl_core.errors import DataError
from gandl_core.plates import build_index, read_site

NAMES = [f"Stain{k:02d}" for k in range(20)]


def _stack(n: int, shape=(24, 28), site: int = 1) -> np.ndarray:
    return np.stack([np.full(shape, 100 * k + site, np.uint16) for k in range(n)])


def test_ome_tiff_names_and_many_channels(tmp_path):
    """20 named channels: the old shape guess refused them (no axis <= 16) and named them w1..w20."""
    for site in (1, 2):
        tifffile.imwrite(tmp_path / f"P1_B02_s{site}.ome.tif", _stack(20, site=site), ome=True,
                         metadata={"axes": "CYX", "Channel": {"Name": NAMES}})
    idx = build_index(tmp_path)
    assert [c[5:] for c in idx.columns if c.startswith("Path_")] == NAMES
    assert idx["Metadata_Well"].tolist() == ["B02", "B02"] and idx["Metadata_Site"].tolist() == [1, 2]
    img = read_site(idx.iloc[1])
    assert img.shape == (20, 24, 28)
    np.testing.assert_array_equal(img[:, 0, 0], 100 * np.arange(20) + 2)


def test_channel_axis_from_metadata_not_shape(tmp_path):
    """YXC with 12 channels on a 10-pixel-high image: the guess would take the 10 rows as channels."""
    data = np.stack([np.full((10, 64), k, np.uint16) for k in range(12)], axis=-1)  # (10, 64, 12)
    tifffile.imwrite(tmp_path / "P1_C03_s1.tif", data, metadata={"axes": "YXC"})
    idx = build_index(tmp_path)
    assert len([c for c in idx.columns if c.startswith("Path_")]) == 12
    img = read_site(idx.iloc[0])
    assert img.shape == (12, 10, 64)
    np.testing.assert_array_equal(img[:, 3, 5], np.arange(12))


def test_imagej_labels_name_channels(tmp_path):
    tifffile.imwrite(tmp_path / "B02_s1.tif", _stack(3), imagej=True,
                     metadata={"axes": "CYX", "Labels": ["DNA", "ER", "Actin"]})
    idx = build_index(tmp_path)
    assert idx.columns.tolist()[-3:] == ["Path_DNA", "Path_ER", "Path_Actin"]
    assert read_site(idx.iloc[0], channels=["Actin"])[0, 0, 0] == 201


def test_z_stack_named_by_metadata_is_refused(tmp_path):
    """An ImageJ stack of 5 z slices is not 5 channels (the old guess took it for channels)."""
    tifffile.imwrite(tmp_path / "B02_s1.tif", _stack(5), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(DataError, match="5 z planes.*projection"):
        build_index(tmp_path)


def test_unnamed_stacks_keep_the_shape_rule(tmp_path):
    tifffile.imwrite(tmp_path / "B02_s1.tif", _stack(4), photometric="minisblack", metadata=None)  # no axes, no names
    idx = build_index(tmp_path)
    assert idx.columns.tolist()[-4:] == ["Path_w1", "Path_w2", "Path_w3", "Path_w4"]
    assert read_site(idx.iloc[0])[:, 0, 0].tolist() == [1, 101, 201, 301]
