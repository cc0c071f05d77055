"""Bad pixels and bad plates are refused with the file or row named (issue 12 items 3, 5, 8, 9, 10; issue 11
item 5): non-finite float images, mixed bit depths, huge declared sizes, stray channel files, text doses,
NaN features, duplicate sites, cut stacks, BBBC014 names without a field, numeric LoadData metadata."""

from __future__ import annotations

import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gandl_core.cli import main
from gandl_core.errors import DataError
from gandl_core.plates import IntensityNormalizer, build_index, channel_names, image_header, read_site
from test_plates_forms import site_arrays, write_loaddata, write_rxrx


def _stacks(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    import tifffile

    root.mkdir(parents=True, exist_ok=True)
    for well, arr in arrays.items():
        tifffile.imwrite(root / f"P1_{well}_s1.tif", arr)
    return root


def _float_plate(tmp_path, bad_value) -> Path:
    rng = np.random.default_rng(0)
    arrays = {w: rng.random((2, 16, 16)).astype(np.float32) for w in ("B02", "B03", "B04", "B05")}
    arrays["B04"][1, 3:6, 3:6] = bad_value
    return _stacks(tmp_path / "plate", arrays)


# ----- NaN / inf pixels ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_float_image_named_at_index_fit_and_featurize(tmp_path, bad, capsys) -> None:
    plate = _float_plate(tmp_path, bad)
    kind = "NaN" if np.isnan(bad) else "inf"
    with pytest.raises(DataError, match=rf"P1_B04_s1\.tif.*9 of 512 pixels are {kind}"):
        build_index(plate)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ok = build_index(plate, skip_missing=True)
    assert list(ok["Metadata_Well"]) == ["B02", "B03", "B05"]
    trusted = build_index(plate, validate=False)  # an index made without checks still cannot poison the fit
    with pytest.raises(DataError, match=r"P1_B04_s1\.tif"):
        IntensityNormalizer().fit(trusted, n_sites=4)
    idx = tmp_path / "trusted.parquet"
    assert main(["index", str(plate), "-o", str(idx), "--no-validate"]) == 0
    capsys.readouterr()
    rc = main(["featurize", str(idx), "-m", "handcrafted", "-o", str(tmp_path / "hc.parquet"), "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "P1_B04_s1.tif" in err and "Traceback" not in err, err


# ----- mixed pixel types ----------------------------------------------------------------------------------------

def test_mixed_dtypes_refused_with_site_named_and_summary_true(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    arrays = {w: rng.integers(0, 60000, (3, 16, 16), dtype=np.uint16) for w in ("B02", "B03", "B04", "B05")}
    arrays["B03"] = (arrays["B03"] // 257).astype(np.uint8)
    arrays["B05"] = arrays["B05"].astype(np.float32)
    plate = _stacks(tmp_path / "plate", arrays)
    with pytest.raises(DataError, match=r"P1_B03_s1\.tif.*uint8.*uint16"):
        build_index(plate)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ok = build_index(plate, skip_missing=True)
    assert list(ok["Metadata_Well"]) == ["B02", "B04"]
    assert "float32" in str(w[-1].message) and "uint8" in str(w[-1].message)
    assert ok.attrs["dtypes"] == {"w1": "uint16", "w2": "uint16", "w3": "uint16"}
    # 8-bit PNG among 16-bit ones (RxRx layout)
    from PIL import Image

    rx = write_rxrx(tmp_path / "rxrx", site_arrays(seed=1, h=8, w=8))
    f = rx / "images" / "HRCE-1" / "Plate1" / "B03_s1_w2.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(f)
    with pytest.raises(DataError, match=r"B03_s1_w2\.png stores uint8 .* ER images are uint16"):
        build_index(rx)
    # the CLI summary names the pixel types per channel when they differ by channel (and they are all checked)
    mixed = _stacks(tmp_path / "ok", {"B02": np.zeros((2, 8, 8), np.uint16)})
    assert main(["index", str(mixed), "-o", str(tmp_path / "i.parquet")]) == 0
    assert "8x8 uint16" in capsys.readouterr().out


# ----- declared sizes ---------------------------------------------------------------------------------------------

def _huge_tiff(path: Path, side: int = 100_000) -> Path:
    """A ~200-byte TIFF whose header declares side x side uint16 pixels in one deflate strip."""
    data = zlib.compress(b"\0" * 64)
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 16), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, len(data))]
    ifd_offset = 8
    n = len(entries)
    data_offset = ifd_offset + 2 + n * 12 + 4
    out = bytearray(b"II*\0" + struct.pack("<I", ifd_offset) + struct.pack("<H", n))
    for tag, typ, count, value in entries:
        value = data_offset if tag == 273 else value
        out += struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    out += struct.pack("<I", 0) + data
    path.write_bytes(bytes(out))
    return path


def _huge_png(path: Path, side: int = 100_000) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_huge_declared_image_refused_before_any_allocation(tmp_path, monkeypatch) -> None:
    import tifffile
    from PIL import Image

    def no_decode(*a, **k):
        raise AssertionError("pixels were decoded / allocated")

    monkeypatch.setattr(tifffile.TiffFile, "asarray", no_decode)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_decode)
    monkeypatch.setattr(Image.Image, "load", no_decode)
    tif = _huge_tiff(tmp_path / "P1_B02_s1.tif")
    png = _huge_png(tmp_path / "big.png")
    assert tif.stat().st_size < 1024 and png.stat().st_size < 1024
    for f in (tif, png):
        with pytest.raises(DataError, match=r"declares an image of 100000 x 100000 = 10,000,000,000 values"):
            image_header(f)
        with pytest.raises(DataError, match="GANDL_MAX_IMAGE_PIXELS"):
            read_site([f])
    with pytest.raises(DataError, match="100000 x 100000"):
        build_index(tmp_path, pattern=r"(?P<plate>P\d)_(?P<well>[A-Z]\d+)_s(?P<site>\d)\.tif")


def test_size_limit_is_configurable(tmp_path, monkeypatch, test_data) -> None:
    f = test_data / "bbbc022_crop" / "plate1_A14_site1_Ch1.tif"  # 64 x 80
    monkeypatch.setenv("GANDL_MAX_IMAGE_PIXELS", "5000")
    with pytest.raises(DataError, match="64 x 80 = 5,120 values, more than the limit of 5,000"):
        image_header(f)
    monkeypatch.setenv("GANDL_MAX_IMAGE_PIXELS", "5120")
    assert image_header(f)[0] == (64, 80)
    monkeypatch.setenv("GANDL_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(Exception, match="positive whole number"):
        image_header(f)


# ----- channel files matched exactly --------------------------------------------------------------------------

def test_stray_channel_file_blames_itself_and_never_renames_channels(tmp_path) -> None:
    from PIL import Image

    rx = write_rxrx(tmp_path / "rxrx", site_arrays(seed=3, h=8, w=8))
    stray = rx / "images" / "HRCE-1" / "Plate1" / "B03_s1_w6.png"
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(stray)
    with pytest.raises(DataError) as err:
        build_index(rx)
    msg = str(err.value)
    assert "B03_s1_w6.png" in msg and "line 4" in msg, msg  # B03 site 1 is metadata.csv line 4
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ix = build_index(rx, skip_missing=True)
    assert channel_names(ix) == ["DNA", "ER", "Actin", "RNA", "Golgi"]  # not RxRx1's 6 stains
    assert len(ix) == 5 and ix.attrs["skipped"][0]["well"] == "B03"
    golgi = read_site(ix.iloc[0], channels=["Golgi"])
    assert Path(ix.iloc[0]["Path_Golgi"]).name.endswith("_w5.png") and golgi.shape == (1, 8, 8)


def test_stray_channel_file_in_a_tiff_folder(tmp_path) -> None:
    import tifffile

    root = tmp_path / "tiffs"
    root.mkdir()
    for w in ("B02", "B03", "B04"):
        for k in (1, 2):
            tifffile.imwrite(root / f"P1_{w}_s1_w{k}.tif", np.full((8, 8), k, np.uint16))
    tifffile.imwrite(root / "P1_B03_s1_w3.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(DataError, match=r"P1_B03_s1_w3\.tif"):
        build_index(root)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ix = build_index(root, skip_missing=True)
    assert channel_names(ix) == ["w1", "w2"] and list(ix["Metadata_Well"]) == ["B02", "B04"]
    assert read_site(ix.iloc[1]).reshape(2, -1)[:, 0].tolist() == [1.0, 2.0]


# ----- metadata: doses as text, numeric columns -----------------------------------------------------------------

def test_text_doses_refused_naming_rows(tmp_path) -> None:
    csv_path = write_loaddata(tmp_path / "ld", site_arrays(seed=4, h=8, w=8))
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    df.loc[df["Metadata_Concentration"] == "0.3", "Metadata_Concentration"] = "1,5"
    df.loc[df["Metadata_Concentration"] == "10", "Metadata_Concentration"] = "ten uM"
    df.to_csv(csv_path, index=False)
    with pytest.raises(DataError) as err:
        build_index(csv_path)
    msg = str(err.value)
    assert "'1,5'" in msg and "'ten uM'" in msg and "line " in msg and "2 row(s)" in msg


def test_loaddata_numeric_metadata_read_as_numbers(tmp_path) -> None:
    csv_path = write_loaddata(tmp_path / "ld", site_arrays(seed=5, h=8, w=8))
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    df["Metadata_DoseIndex"] = [str(i % 3 + 1) for i in range(len(df))]
    df["Metadata_Volume"] = ["2.5", "", "0.5", "1", "3", "1e-3"]
    df["Metadata_Code"] = ["007", "008", "009", "010", "011", "012"]  # codes keep their leading zeros
    df.to_csv(csv_path, index=False)
    ix = build_index(csv_path)
    assert ix["Metadata_DoseIndex"].dtype == np.int64
    assert ix["Metadata_Volume"].dtype == np.float64 and ix["Metadata_Volume"].isna().sum() == 1
    assert sorted(ix["Metadata_Code"])[0] == "007"
    assert ix["Metadata_Concentration"].dtype == np.float64


# ----- BBBC014 names without a field suffix --------------------------------------------------------------------

def test_bbbc014_names_without_field_suffix(tmp_path, test_data) -> None:
    src = test_data / "bbbc014_crop"
    root = tmp_path / "bbbc014"
    root.mkdir()
    shutil.copy(src / "Channel 1-01-A-01-00.tif", root / "Channel1-01-A-01.tif")
    shutil.copy(src / "Channel 2-01-A-01-00.tif", root / "Channel2-01-A-01.tif")
    shutil.copy(src / "Channel 1-01-A-01-00.tif", root / "Channel1-02-B-12.tif")
    shutil.copy(src / "Channel 2-01-A-01-00.tif", root / "Channel2-02-B-12.tif")
    ix = build_index(root)
    assert channel_names(ix) == ["w1", "w2"]
    assert ix[["Metadata_Well", "Metadata_Site"]].values.tolist() == [["A01", 1], ["B12", 1]]
    assert read_site(ix.iloc[0]).shape == (2, 64, 80)
    assert build_index(src)[["Metadata_Well", "Metadata_Site"]].values.tolist() == [["A01", 1]]  # "-00" still works


# ----- cut stacks, profile inputs -------------------------------------------------------------------------------

def test_truncated_stack_reported_as_cut_short(tmp_path) -> None:
    rng = np.random.default_rng(0)
    plate = _stacks(tmp_path / "plate", {w: rng.integers(0, 60000, (5, 32, 32), dtype=np.uint16)
                                          for w in ("B02", "B03", "B04")})
    f = plate / "P1_B03_s1.tif"
    data = f.read_bytes()
    f.write_bytes(data[:int(len(data) * 0.6)])
    with pytest.raises(DataError) as err:
        build_index(plate)
    msg = str(err.value)
    assert "P1_B03_s1.tif" in msg and "cut short" in msg and "one plane" not in msg and "frame" not in msg


def _sites_table(tmp_path, *, poison=None, duplicate=False) -> Path:
    from gandl_core.tables import write_table

    rng = np.random.default_rng(0)
    rows = [{"Metadata_Plate": "P1", "Metadata_Well": w, "Metadata_Site": s, "Metadata_Role": r,
             "GAN_0": rng.normal(), "GAN_1": rng.normal()}
            for w, r in (("B02", "negative"), ("B03", "negative"), ("B04", "treated")) for s in (1, 2)]
    df = pd.DataFrame(rows)
    if poison is not None:
        df.loc[3, "GAN_1"] = poison
    if duplicate:
        df = pd.concat([df, df.iloc[[4]]], ignore_index=True)
    return write_table(df, tmp_path / "emb.parquet")


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_profile_refuses_non_finite_features(tmp_path, poison, capsys) -> None:
    emb = _sites_table(tmp_path, poison=poison)
    assert main(["profile", str(emb), "-o", str(tmp_path / "p.parquet")]) == 1
    err = capsys.readouterr().err
    assert "well B03 site 2" in err and "GAN_1" in err and not (tmp_path / "p.parquet").exists()


def test_profile_refuses_duplicate_sites(tmp_path, capsys) -> None:
    emb = _sites_table(tmp_path, duplicate=True)
    assert main(["profile", str(emb), "-o", str(tmp_path / "p.parquet")]) == 1
    assert "well B04 site 1" in capsys.readouterr().err
    assert main(["profile", str(_sites_table(tmp_path)), "-o", str(tmp_path / "p.parquet")]) == 0
