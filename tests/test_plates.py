"""gandl_core.plates: reading real formats, channel selection, validation errors, skip reports, CLI."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gandl_core.errors import ConfigError, DataError
from gandl_core.plates import build_index, channel_names, read_site, select_channels
from test_plates_forms import CH5, SITES, site_arrays, write_loaddata, write_rxrx, write_stacks

# --------------------------------------------------------------------------------------------
# Real formats: 16-bit Cell Painting TIFFs (BBBC022), 8-bit palette TIFFs (BBBC014), PNG bit depths
# --------------------------------------------------------------------------------------------


def test_bbbc022_crop_loaddata_16bit(test_data) -> None:
    import tifffile

    ix = build_index(test_data / "bbbc022_crop" / "load_data.csv")
    assert channel_names(ix) == ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert list(ix["Metadata_Site"]) == [1, 2] and set(ix["Metadata_Well"]) == {"A14"}
    img = read_site(ix.iloc[1])
    assert img.shape == (5, 64, 80) and img.dtype == np.float32
    raw = tifffile.imread(test_data / "bbbc022_crop" / "plate1_A14_site2_Ch5.tif")
    assert raw.dtype == np.uint16 and (img[4] == raw).all()
    assert img.max() > 255  # 16-bit values kept, not scaled to 8 bits


def test_bbbc014_crop_palette_tiff_stays_single_channel(test_data) -> None:
    import tifffile
    from PIL import Image

    folder = test_data / "bbbc014_crop"
    ix = build_index(folder, names=["NFkB", "DNA"])
    assert channel_names(ix) == ["NFkB", "DNA"]
    assert ix[["Metadata_Well", "Metadata_Site"]].values.tolist() == [["A01", 1]]  # field "-00" -> site 1
    img = read_site(ix.iloc[0])
    assert img.shape == (2, 64, 80)
    f = folder / "Channel 2-01-A-01-00.tif"
    assert Image.open(f).mode == "P"  # a palette TIFF: Pillow would expand it through the colormap
    assert (img[1] == tifffile.imread(f)).all() and img.max() <= 255


def test_png_8_and_16_bit(tmp_path) -> None:
    from PIL import Image

    a8 = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    a16 = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500 + 7)
    Image.fromarray(a8).save(tmp_path / "a8.png")
    Image.fromarray(a16).save(tmp_path / "a16.png")
    assert Image.open(tmp_path / "a16.png").mode.startswith("I")
    img = read_site([tmp_path / "a8.png", tmp_path / "a16.png"])
    assert img.dtype == np.float32 and img.shape == (2, 12, 10)
    assert (img[0] == a8).all() and (img[1] == a16).all() and img[1].max() == 119 * 500 + 7


def test_stack_frames_and_plane_errors(tmp_path) -> None:
    import tifffile

    stack = np.arange(3 * 5 * 4, dtype=np.uint16).reshape(3, 5, 4)
    f = tmp_path / "P_B02_s1.tif"
    tifffile.imwrite(f, stack, photometric="minisblack")
    got = read_site([f"{f}::2", f"{f}::0"])
    assert (got[0] == stack[2]).all() and (got[1] == stack[0]).all()
    with pytest.raises(DataError, match=r"P_B02_s1.tif: holds 3 channels .*'<file>::<k>'"):
        read_site([f])
    with pytest.raises(DataError, match=r"P_B02_s1.tif::3: asks for frame 3 but the stack has 3 channels"):
        read_site([f"{f}::3"])
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((6, 4), np.uint8))
    with pytest.raises(DataError, match=r"channels of one site differ in size: .*P_B02_s1.tif::0 \(5, 4\), .*big.tif \(6, 4\)"):
        read_site([f"{f}::0", tmp_path / "big.tif"])


def test_grey_saved_as_rgb_png_reads_and_colour_png_is_refused(tmp_path) -> None:
    from PIL import Image

    g = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "grey_rgb.png")
    assert (read_site([tmp_path / "grey_rgb.png"])[0] == g).all()
    Image.fromarray(np.stack([g, g + 1, g], -1)).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=r"colour.png: cannot read this image \(colour image \(mode RGB\)"):
        read_site([tmp_path / "colour.png"])


def test_shared_bbbc022_and_bbbc014_load(shared_data) -> None:
    ix = build_index(shared_data / "bbbc022_cellpainting_sample" / "load_data.csv")
    pd.testing.assert_frame_equal(ix, build_index(shared_data / "bbbc022_cellpainting_sample"))
    assert len(ix) == 10 and ix["Metadata_Well"].nunique() == 5 and len(channel_names(ix)) == 5
    assert read_site(ix.iloc[0]).shape == (5, 520, 696)
    ix2 = build_index(shared_data / "bbbc014_two_wells")
    assert channel_names(ix2) == ["w1", "w2"] and list(ix2["Metadata_Well"]) == ["A01", "A12"]
    img = read_site(ix2.iloc[0])
    assert img.shape == (2, 1024, 1360) and img.max() <= 255


# --------------------------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def rxrx6(tmp_path) -> Path:
    arrays = site_arrays(seed=1, h=8, w=8, c=6)
    return write_rxrx(tmp_path / "rxrx1", arrays)


def test_rxrx1_names_and_channel_selection(rxrx6) -> None:
    ix = build_index(rxrx6)
    assert channel_names(ix) == ["DNA", "ER", "Actin", "RNA", "Mito", "Golgi"]
    five = build_index(rxrx6, channels=["DNA", "ER", "Actin", "RNA", "Golgi"])
    assert channel_names(five) == ["DNA", "ER", "Actin", "RNA", "Golgi"]
    assert (read_site(five.iloc[0])[4] == read_site(ix.iloc[0])[5]).all()
    swapped = select_channels(ix, "golgi,dna")  # case-insensitive, reordered
    assert channel_names(swapped) == ["Golgi", "DNA"]
    renamed = select_channels(ix, {"DNA": "Hoechst", "Mito": "MitoTracker"})
    assert channel_names(renamed) == ["Hoechst", "MitoTracker"]
    assert read_site(ix.iloc[2], channels=["Mito"]).shape == (1, 8, 8)
    with pytest.raises(DataError, match=r"'Tubulin'.*available channels: \['DNA', 'ER', 'Actin', 'RNA', 'Mito', 'Golgi'\]"):
        select_channels(ix, ["DNA", "Tubulin"])
    with pytest.raises(DataError, match="selected twice"):
        select_channels(ix, ["DNA", "dna"])


def test_unselected_channels_are_not_validated_and_other_counts_get_w_names(rxrx6, tmp_path) -> None:
    (rxrx6 / "images" / "HRCE-1" / "Plate1" / "B03_s1_w5.png").unlink()  # a Mito file is missing
    with pytest.raises(DataError, match="missing file for channel Mito"):
        build_index(rxrx6)
    five = build_index(rxrx6, channels="DNA,ER,Actin,RNA,Golgi")  # Mito not used: not checked
    assert len(five) == len(SITES)
    four = build_index(write_rxrx(tmp_path / "rx4", site_arrays(seed=13, h=8, w=8, c=4)))
    assert channel_names(four) == ["w1", "w2", "w3", "w4"]


def test_names_must_match_channel_count(rxrx6) -> None:
    with pytest.raises(ConfigError, match="pattern= applies to folders of TIFFs only; .* is a rxrx source"):
        build_index(rxrx6, pattern=r"(?P<well>\w+)")
    with pytest.raises(ConfigError, match=r"names=\['a', 'b'\] must give 6 distinct names"):
        build_index(rxrx6, names=["a", "b"])


# --------------------------------------------------------------------------------------------
# Bad input: each error names the culprit
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def rxrx5(tmp_path) -> Path:
    return write_rxrx(tmp_path / "rxrx", site_arrays(seed=2, h=8, w=8))


def _site_file(root: Path, plate: int, well: str, site: int, k: int) -> Path:
    return root / "images" / "HRCE-1" / f"Plate{plate}" / f"{well}_s{site}_w{k}.png"


def test_rxrx_metadata_problems_named(rxrx5, tmp_path) -> None:
    meta = pd.read_csv(rxrx5 / "metadata.csv", dtype=str, keep_default_na=False)
    meta.drop(columns="site").to_csv(rxrx5 / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"metadata.csv: missing column\(s\) \['site'\]"):
        build_index(rxrx5)
    meta.assign(site=["1", "2", "1", "one", "1", "1"]).to_csv(rxrx5 / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"metadata.csv line 5 \(header = line 1\): site 'one' is not a whole number"):
        build_index(rxrx5)
    (tmp_path / "only_csv").mkdir()
    meta.to_csv(tmp_path / "only_csv" / "metadata.csv", index=False)
    with pytest.raises(DataError, match="has metadata.csv but no images/ folder"):
        build_index(tmp_path / "only_csv")


def test_missing_channel_file_names_file_and_line(rxrx5) -> None:
    f = _site_file(rxrx5, 1, "B03", 1, 4)
    f.unlink()
    with pytest.raises(DataError) as err:
        build_index(rxrx5)
    msg = str(err.value)
    # B03 site 1 is the 3rd data row of metadata.csv -> line 4 with the header as line 1
    assert "metadata.csv line 4 (header = line 1)" in msg and str(f) in msg and "RNA" in msg
    assert "skip_missing=True" in msg


def test_metadata_row_without_images(rxrx5) -> None:
    for k in range(1, 6):
        _site_file(rxrx5, 2, "B02", 1, k).unlink()
    with pytest.raises(DataError, match=r"metadata.csv line 7 .*metadata row without images"):
        build_index(rxrx5)


def test_truncated_png_and_tiff_named(rxrx5, tmp_path) -> None:
    f = _site_file(rxrx5, 1, "C02", 1, 2)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 30])
    with pytest.raises(DataError, match=str(f).replace("+", r"\+") + ".*truncated"):
        build_index(rxrx5)
    with pytest.raises(DataError, match=str(f)):
        read_site([f])

    st = write_stacks(tmp_path / "st", site_arrays(seed=4, h=16, w=16))
    g = sorted(st.glob("*.tif"))[2]
    g.write_bytes(g.read_bytes()[:-100])
    with pytest.raises(DataError, match=str(g) + ".*truncated"):
        build_index(st)


def test_not_an_image_named(rxrx5) -> None:
    f = _site_file(rxrx5, 1, "B02", 2, 1)
    f.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=f"{f}: cannot read this image"):
        build_index(rxrx5)


def test_image_size_differs(rxrx5) -> None:
    from PIL import Image

    for k in range(1, 6):  # one whole site at another size
        Image.fromarray(np.zeros((9, 8), np.uint16)).save(_site_file(rxrx5, 1, "C03", 1, k))
    with pytest.raises(DataError, match=r"line 6 .*image size 9x8 differs from the plate's 8x8"):
        build_index(rxrx5)
    Image.fromarray(np.zeros((9, 8), np.uint16)).save(_site_file(rxrx5, 1, "B02", 1, 3))
    with pytest.raises(DataError, match=r"line 2 .*w3.png is 9x8 but the site's other channels are 8x8"):
        build_index(rxrx5)


def test_channel_count_differs_between_stacks(tmp_path) -> None:
    import tifffile

    st = write_stacks(tmp_path / "st", site_arrays(seed=5, h=16, w=16))
    f = sorted(st.glob("*.tif"))[1]
    tifffile.imwrite(f, np.zeros((4, 16, 16), np.uint16), photometric="minisblack")
    with pytest.raises(DataError, match=f"{f}.*frame 4 but the stack has 4 channels"):
        build_index(st)


def test_duplicate_sites_name_both_lines(tmp_path) -> None:
    csv_path = write_loaddata(tmp_path / "ld", site_arrays(seed=6, h=8, w=8))
    rows = list(csv.reader(open(csv_path)))
    rows.append(rows[1])  # same site again as line 8
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(DataError, match=r"duplicate site .*line 2 .*line 8 "):
        build_index(csv_path)


def test_loaddata_needs_plate_well_and_site(tmp_path) -> None:
    csv_path = write_loaddata(tmp_path / "ld", site_arrays(seed=7, h=8, w=8))
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    df.drop(columns="Metadata_Plate").to_csv(tmp_path / "ld" / "noplate.csv", index=False)
    with pytest.raises(DataError, match="noplate.csv: no Metadata_Plate column"):
        build_index(tmp_path / "ld" / "noplate.csv")
    df.drop(columns="Metadata_Site").to_csv(tmp_path / "ld" / "nosite.csv", index=False)
    with pytest.raises(DataError, match=r"no Metadata_Site column, and .*nosite.csv line 6 \(header = line 1\) and line 7 share plate HRCE-1_Plate1 well B02. Add a Metadata_Site"):
        build_index(tmp_path / "ld" / "nosite.csv")
    one = df.drop(columns="Metadata_Site").drop_duplicates(["Metadata_Plate", "Metadata_Well"])
    one.to_csv(tmp_path / "ld" / "onesite.csv", index=False)
    assert list(build_index(tmp_path / "ld" / "onesite.csv")["Metadata_Site"]) == [1] * len(one)
    bad = df.copy()
    bad.loc[2, "Metadata_Well"] = "well7"
    bad.to_csv(tmp_path / "ld" / "badwell.csv", index=False)
    with pytest.raises(DataError, match=r"badwell.csv line 4 .*column Metadata_Well: well 'well7'"):
        build_index(tmp_path / "ld" / "badwell.csv")
    df[[c for c in df.columns if not c.startswith(("FileName", "PathName"))]].to_csv(tmp_path / "ld" / "nofiles.csv", index=False)
    with pytest.raises(DataError, match="nofiles.csv: no FileName_<Channel> columns"):
        build_index(tmp_path / "ld" / "nofiles.csv")


def test_loaddata_url_columns_and_relative_parquet_paths(test_data, tmp_path) -> None:
    from gandl_core.tables import write_table

    src = test_data / "bbbc022_crop"
    ref = build_index(src / "load_data.csv")
    df = pd.read_csv(src / "load_data.csv", dtype=str)
    for n in ["DNA", "ER", "RNA", "AGP", "Mito"]:
        df[f"URL_{n}"] = [(src / f).resolve().as_uri() for f in df.pop(f"FileName_{n}")]
        df.pop(f"PathName_{n}")
    df.to_csv(tmp_path / "urls.csv", index=False)
    pd.testing.assert_frame_equal(build_index(tmp_path / "urls.csv"), ref)
    df.iloc[:1].assign(URL_DNA="s3://bucket/x.tif").to_csv(tmp_path / "s3.csv", index=False)
    with pytest.raises(DataError, match=r"s3.csv line 2 \(header = line 1\), column URL_DNA: 's3://bucket/x.tif' is not a local file"):
        build_index(tmp_path / "s3.csv")
    # an index whose paths are relative to its own folder
    rel = ref.copy()
    for c in [c for c in ref.columns if c.startswith("Path_")]:
        rel[c] = ["imgs/" + Path(v).name for v in ref[c]]
    shutil.copytree(src, tmp_path / "moved" / "imgs")
    write_table(rel, tmp_path / "moved" / "index.parquet")
    back = build_index(tmp_path / "moved" / "index.parquet")
    assert (read_site(back.iloc[1]) == read_site(ref.iloc[1])).all()


def test_empty_and_unknown_sources(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'}: no .tif/.tiff files"):
        build_index(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file or folder"):
        build_index(tmp_path / "nope")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported file type '.json'"):
        build_index(tmp_path / "x.json")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "scan0001.tif").write_bytes(b"")
    with pytest.raises(DataError, match=r"scan0001.tif: file name does not match .*pattern="):
        build_index(tmp_path / "odd")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        build_index(tmp_path / "odd", pattern="(?P<well>")


def test_custom_pattern(tmp_path) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    for well in ("B2", "C11"):
        for f in (1, 2):
            for c in (1, 2, 3):
                tifffile.imwrite(tmp_path / f"scan_{well}_f{f}_c{c}.tif", rng.integers(0, 255, (6, 7), dtype=np.uint8))
    ix = build_index(tmp_path, pattern=r"scan_(?P<well>[A-P]\d+)_f(?P<site>\d+)_c(?P<channel>\d)\.tif")
    assert channel_names(ix) == ["w1", "w2", "w3"]
    assert ix[["Metadata_Well", "Metadata_Site"]].values.tolist() == [["B02", 1], ["B02", 2], ["C11", 1], ["C11", 2]]
    assert (read_site(ix.iloc[3])[2] == tifffile.imread(tmp_path / "scan_C11_f2_c3.tif")).all()
    (tmp_path / "scan_C11_f2_c3.tif").unlink()
    with pytest.raises(DataError, match="C11.*missing file for channel w3"):
        build_index(tmp_path, pattern=r"scan_(?P<well>[A-P]\d+)_f(?P<site>\d+)_c(?P<channel>\d)\.tif")


# --------------------------------------------------------------------------------------------
# skip_missing reports what it leaves out
# --------------------------------------------------------------------------------------------


def test_skip_missing_reports_each_site(rxrx5) -> None:
    _site_file(rxrx5, 1, "B03", 1, 4).unlink()
    f = _site_file(rxrx5, 2, "B02", 1, 2)
    f.write_bytes(f.read_bytes()[:40])
    with pytest.warns(UserWarning, match=r"skipped 2 of 6 sites: HRCE-1_Plate1/B03/s1: .*HRCE-1_Plate2/B02/s1"):
        ix = build_index(rxrx5, skip_missing=True)
    assert len(ix) == 4
    skipped = ix.attrs["skipped"]
    assert [(s["plate"], s["well"], s["site"]) for s in skipped] == [("HRCE-1_Plate1", "B03", 1), ("HRCE-1_Plate2", "B02", 1)]
    assert "missing file for channel RNA" in skipped[0]["reason"] and str(f) in skipped[1]["reason"]
    assert ("HRCE-1_Plate1", "B03") not in set(zip(ix["Metadata_Plate"], ix["Metadata_Well"]))


def test_validate_false_skips_file_checks(rxrx5) -> None:
    _site_file(rxrx5, 1, "B03", 1, 4).unlink()
    ix = build_index(rxrx5, validate=False)
    assert len(ix) == len(SITES)
    with pytest.raises(DataError, match="B03_s1_w4.png: no such file"):
        read_site(ix.iloc[2])


def test_plates_not_downloaded_are_left_out_with_warning(rxrx5) -> None:
    shutil.rmtree(rxrx5 / "images" / "HRCE-1" / "Plate2")
    with pytest.warns(UserWarning, match=r"1 rows belong to 1 plate\(s\) with no image folder .*HRCE-1/Plate2"):
        ix = build_index(rxrx5)
    assert set(ix["Metadata_Plate"]) == {"HRCE-1_Plate1"} and len(ix) == 5


def test_orphan_images_warned(rxrx5) -> None:
    lines = (rxrx5 / "metadata.csv").read_text().splitlines()
    (rxrx5 / "metadata.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.warns(UserWarning, match=r"1 image site\(s\) have no metadata.csv row"):
        ix = build_index(rxrx5)
    assert len(ix) == len(SITES) - 1


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_index_writes_parquet_and_summary(rxrx5, tmp_path, capsys) -> None:
    from gandl_core.cli import main
    from gandl_core.tables import read_table

    out = tmp_path / "out" / "index.parquet"
    assert main(["index", str(rxrx5), "-o", str(out), "--channels", "DNA,Golgi"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == f"{out}: 6 sites, 5 wells, 2 plates, 2 channels (DNA,Golgi), 8x8 uint16"
    back = read_table(out)
    assert channel_names(back) == ["DNA", "Golgi"] and len(back) == 6
    pd.testing.assert_frame_equal(back, build_index(out))
    pd.testing.assert_frame_equal(back, build_index(back))  # an index DataFrame is re-validated too
    with pytest.raises(DataError, match=r"<index DataFrame>: lacks column Metadata_Site"):
        build_index(back.drop(columns="Metadata_Site"))

    _site_file(rxrx5, 1, "B03", 1, 1).unlink()
    assert main(["index", str(rxrx5), "-o", str(tmp_path / "bad.parquet")]) == 1
    assert "B03_s1_w1.png" in capsys.readouterr().err
    assert not (tmp_path / "bad.parquet").exists()
    assert main(["index", str(rxrx5), "-o", str(tmp_path / "skip.parquet"), "--skip-missing"]) == 0
    cap = capsys.readouterr()
    assert "5 sites" in cap.out and "1 sites skipped" in cap.out and len(read_table(tmp_path / "skip.parquet")) == 5
    assert "warning: " in cap.err and "HRCE-1_Plate1/B03/s1: missing file for channel DNA" in cap.err
    from gandl_core.tables import read_table_metadata

    assert read_table_metadata(tmp_path / "skip.parquet")["skipped"][0]["well"] == "B03"


def test_stack_with_extra_channels_named(tmp_path) -> None:
    import tifffile

    st = write_stacks(tmp_path / "st", site_arrays(seed=8, h=16, w=16))
    f = sorted(st.glob("*.tif"))[3]
    tifffile.imwrite(f, np.zeros((6, 16, 16), np.uint16), photometric="minisblack")
    with pytest.raises(DataError, match=f"{f} holds 6 channel\\(s\\) but the plate's other files hold 5"):
        build_index(st)


def test_stack_folder_metadata_rows_and_images_must_match(tmp_path) -> None:
    st = write_stacks(tmp_path / "st", site_arrays(seed=10, h=16, w=16))
    gone = st / "HRCE-1_Plate1_C02_s1.tif"
    gone.unlink()
    # metadata.csv line 5 = 4th data row = C02 site 1 (SITES order)
    with pytest.raises(DataError, match=r"metadata.csv line 5 \(header = line 1\): no image files .*HRCE-1_Plate1_C02_s1.tif"):
        build_index(st)
    with pytest.warns(UserWarning, match="skipped 1 of 6 sites: HRCE-1_Plate1/C02/s1"):
        ix = build_index(st, skip_missing=True)
    assert len(ix) == 5 and ix.attrs["skipped"][0]["origin"].endswith("metadata.csv line 5 (header = line 1)")
    lines = (st / "metadata.csv").read_text().splitlines()
    (st / "metadata.csv").write_text("\n".join(lines[:2] + lines[3:4]) + "\n")  # rows for 2 sites only
    with pytest.warns(UserWarning, match=r"3 image site\(s\) have no row here"):
        ix = build_index(st)
    assert len(ix) == 5 and (ix["Metadata_Condition"] == "").sum() == 3


def test_import_does_not_load_torch() -> None:
    import subprocess
    import sys

    code = "import sys, gandl_core.plates as p; assert 'torch' not in sys.modules; p.PlateDataset; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_index_iter_reports_progress(tmp_path) -> None:
    from gandl_core.plates import build_index_iter
    from gandl_core.plates import _index as mod
    from gandl_core.progress import Progress

    root = write_rxrx(tmp_path / "rx", site_arrays(seed=12, h=8, w=8))
    old, mod.PROGRESS_EVERY = mod.PROGRESS_EVERY, 2
    try:
        gen = build_index_iter(root)
        reports = []
        while True:
            try:
                reports.append(next(gen))
            except StopIteration as stop:
                index = stop.value
                break
    finally:
        mod.PROGRESS_EVERY = old
    assert all(isinstance(r, Progress) and r.stage == "index" and r.total == 6 for r in reports)
    assert [r.done for r in reports] == [0, 2, 4, 6]
    pd.testing.assert_frame_equal(index, build_index(root))


def test_excel_style_csv_bom_spaces_and_tsv(test_data, tmp_path) -> None:
    src = test_data / "bbbc022_crop"
    ref = build_index(src / "load_data.csv")
    text = (src / "load_data.csv").read_text()
    lines = text.splitlines()
    header = ", ".join(lines[0].split(","))  # spaces after commas in the header
    body = [",".join(f" {v} " if k < 3 else v for k, v in enumerate(line.split(","))) for line in lines[1:]]
    (src_copy := tmp_path / "copy").mkdir()
    for f in src.glob("*.tif"):
        shutil.copy(f, src_copy / f.name)
    (src_copy / "excel.csv").write_bytes(("\ufeff" + "\r\n".join([header] + body) + "\r\n").encode("utf-8"))
    got = build_index(src_copy / "excel.csv")
    pd.testing.assert_frame_equal(got.drop(columns=[c for c in got if c.startswith("Path_")]),
                                  ref.drop(columns=[c for c in ref if c.startswith("Path_")]))
    (src_copy / "tabs.tsv").write_text("\n".join(line.replace(",", "\t") for line in lines) + "\n")
    assert len(build_index(src_copy / "tabs.tsv")) == 2
    (src_copy / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: cannot parse this CSV"):
        build_index(src_copy / "empty.csv")


def test_symlinked_images_keep_the_given_folder(rxrx5, tmp_path) -> None:
    link = tmp_path / "linked_plate"
    link.symlink_to(rxrx5, target_is_directory=True)
    ix = build_index(link)
    assert all(p.startswith(link.as_posix() + "/") for p in ix["Path_DNA"])
