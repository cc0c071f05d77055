"""The streaming embedding engine: table layout, determinism, parts/resume, shards, bad input, CLI."""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gandl_core.embed import embed_iter, merge_shards, parse_shard, parts_dir, select_sites, shard_path
from gandl_core.errors import CheckpointError, ConfigError, DataError
from gandl_core.featurizers.base import GanFeaturizer, ModuleFeaturizer, check_channels, feature_names
from gandl_core.progress import Progress, run_to_end
from gandl_core.gan.stylegan2 import Discriminator

CHANNELS = ["DNA", "ER", "Actin"]
TINY = dict(channel_base=256, channel_max=16, feature_dim=16)


# --------------------------------------------------------------------------------------------
# Plate I/O: the real gandl_core.plates when it exists, else a small fake of its contract
# --------------------------------------------------------------------------------------------


def _fake_plates() -> types.ModuleType:
    from PIL import Image

    m = types.ModuleType("gandl_core.plates")

    def channel_columns(index):
        return [c for c in index.columns if c.startswith("Path_")]

    def channel_names(index):
        return [c[5:] for c in channel_columns(index)]

    def read_site(row, channels=None):
        paths = [row[c] for c in channel_columns(row.to_frame().T)]
        arrs = []
        for p in paths:
            try:
                arrs.append(np.asarray(Image.open(p), dtype=np.float32))
            except Exception as exc:
                raise m.DataError(f"{p}: cannot read this image ({exc})") from exc
        return np.stack(arrs)

    class IntensityNormalizer:
        def __init__(self, low=0.1, high=99.9):
            self.low, self.high, self.lo, self.hi, self.channels = low, high, None, None, None

        def fit(self, index, n_sites=64):
            imgs = np.stack([read_site(index.iloc[i]) for i in range(min(len(index), n_sites))])
            self.lo = np.percentile(imgs, self.low, axis=(0, 2, 3))
            self.hi = np.percentile(imgs, self.high, axis=(0, 2, 3))
            self.channels = channel_names(index)
            return self

        def transform(self, img):
            shape = (-1, 1, 1) if img.ndim == 3 else (1, -1, 1, 1)
            lo, hi = self.lo.reshape(shape), self.hi.reshape(shape)
            return np.clip((img - lo) / np.maximum(hi - lo, 1e-6) * 2 - 1, -1, 1).astype(np.float32)

        def to_dict(self):
            return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "channels": self.channels}

    class PlateDataset(torch.utils.data.Dataset):
        def __init__(self, index, normalizer, resolution, mode="random_crop", seed=0, scale=1.0):
            self.index, self.norm, self.res, self.mode = index.reset_index(drop=True), normalizer, resolution, mode
            self.scale = scale

        def __len__(self):
            return len(self.index)

        def __getitem__(self, i):
            x = torch.from_numpy(self.norm.transform(read_site(self.index.iloc[i])))
            if self.scale != 1.0:
                x = torch.nn.functional.interpolate(x[None], scale_factor=self.scale, mode="area")[0]
            r = self.res
            if self.mode == "full":
                return x
            if self.mode == "resize":
                return torch.nn.functional.interpolate(x[None], size=(r, r), mode="area")[0]
            c, h, w = x.shape
            return torch.stack([x[:, a:a + r, b:b + r] for a in range(0, h - r + 1, r) for b in range(0, w - r + 1, r)])

    def build_index(source, *, channels=None, skip_missing=False, validate=True):
        index = pd.read_parquet(source)
        if channels is not None:
            keep = [c for c in index.columns if not c.startswith("Path_")]
            index = index[keep + [f"Path_{c}" for c in channels]]
        return index

    from gandl_core.errors import DataError

    m.DataError = DataError
    m.build_index = build_index
    m.channel_columns, m.channel_names, m.read_site = channel_columns, channel_names, read_site
    m.IntensityNormalizer, m.PlateDataset = IntensityNormalizer, PlateDataset
    return m


def _fake_checkpoint(plates) -> types.ModuleType:
    """The checkpoint contract's load_discriminator, for use until gandl_core.checkpoint lands."""
    m = types.ModuleType("gandl_core.checkpoint")

    def save_checkpoint(path, state):
        torch.save(state, path)

    def load_checkpoint(path):
        return torch.load(path, map_location="cpu", weights_only=True)

    def load_discriminator(path, device="cpu"):
        ck = load_checkpoint(path)
        cfg = ck["config"]
        D = Discriminator(cfg["resolution"], cfg["channels"], channel_base=cfg["channel_base"],
                          channel_max=cfg["channel_max"], mbstd_group=cfg.get("mbstd_group", 4),
                          feature_dim=cfg.get("feature_dim", 512))
        D.load_state_dict(ck["D"])
        norm = plates.IntensityNormalizer()
        norm.lo, norm.hi = np.array(ck["normalizer"]["lo"]), np.array(ck["normalizer"]["hi"])
        norm.channels = ck["normalizer"]["channels"]
        return D.to(device), norm, {"channel_names": ck["channel_names"], "kimg": ck.get("kimg")}

    m.save_checkpoint, m.load_checkpoint, m.load_discriminator = save_checkpoint, load_checkpoint, load_discriminator
    return m


@pytest.fixture()
def ckpt_mod(plates, monkeypatch):
    try:
        import gandl_core.checkpoint as real

        return real
    except ImportError:
        fake = _fake_checkpoint(plates)
        monkeypatch.setitem(sys.modules, "gandl_core.checkpoint", fake)
        return fake


def write_checkpoint(ckpt_mod, path: Path, fz: GanFeaturizer, channels=CHANNELS, **config) -> Path:
    """A minimal checkpoint per docs/architecture.md (config, D, normalizer, channel_names)."""
    D = fz.module
    cfg = {"resolution": D.resolution, "channels": D.channels, "channel_base": TINY["channel_base"],
           "channel_max": TINY["channel_max"], "mbstd_group": 4, "feature_dim": D.feature_dim, **config}
    state = {"format": "gandl-checkpoint", "version": 1, "kind": "stylegan2", "config": cfg,
             "channel_names": list(channels), "normalizer": fz.normalizer.to_dict(),
             "D": {k: v.contiguous() for k, v in D.state_dict().items()}, "kimg": 1.5, "step": 3}
    ckpt_mod.save_checkpoint(path, state)
    return path


@pytest.fixture()
def plates(monkeypatch):
    try:
        import gandl_core.plates as real

        return real
    except ImportError:
        fake = _fake_plates()
        monkeypatch.setitem(sys.modules, "gandl_core.plates", fake)
        import gandl_core

        monkeypatch.setattr(gandl_core, "plates", fake, raising=False)
        return fake


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint16)).save(path)


def make_index(root: Path, *, plates=("P1", "P2"), wells=("B02", "B03", "C02", "C03"), sites=2, size=32,
               seed=0) -> pd.DataFrame:
    """A tiny plate of 16-bit PNGs; C wells have brighter, blobbier DNA than B wells."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in plates:
        for w in wells:
            for s in range(1, sites + 1):
                row = {"Metadata_Plate": p, "Metadata_Well": w, "Metadata_Site": s,
                       "Metadata_Role": "negative" if w[0] == "B" else "positive"}
                for k, ch in enumerate(CHANNELS):
                    img = rng.integers(100, 2000, size=(size, size)).astype(np.float64)
                    if w[0] == "C" and k == 0:
                        img[size // 4: size // 2, size // 4: size // 2] += 20000
                    f = root / p / f"{w}_s{s}_w{k + 1}.png"
                    _write_png(f, img)
                    row[f"Path_{ch}"] = str(f)
                rows.append(row)
    return pd.DataFrame(rows)


def make_featurizer(plates, index, *, resolution=16, seed=0, channels=CHANNELS) -> GanFeaturizer:
    torch.manual_seed(seed)
    D = Discriminator(resolution, len(channels), **TINY)
    norm = plates.IntensityNormalizer().fit(index)
    # the engine's tests read the paper's fc layer (16 wide here); the readouts have tests of their own
    return GanFeaturizer.from_discriminator(D, norm, channels, features="final",
                                            info={"checkpoint": {"path": "mem", "sha256": "x"}})


class Counting:
    """Featurizer wrapper counting the images it embeds (to prove resume skips work)."""

    def __init__(self, inner):
        self.inner, self.images = inner, 0
        for k in ("prefix", "n_features", "channels", "resolution", "normalizer"):
            setattr(self, k, getattr(inner, k))

    def identity(self):
        return self.inner.identity()

    def __call__(self, batch):
        self.images += len(batch)
        return self.inner(batch)


@pytest.fixture()
def plate(tmp_path, plates):
    index = make_index(tmp_path / "plate")
    return index, make_featurizer(plates, index)


FEATS = feature_names("GAN_", 16)


# --------------------------------------------------------------------------------------------
# Table and numbers
# --------------------------------------------------------------------------------------------


def test_table_layout_and_tile_average(plate, plates) -> None:
    index, fz = plate
    gen = embed_iter(index, fz, batch_size=4)
    reports = []
    while True:
        try:
            reports.append(next(gen))
        except StopIteration as stop:
            df = stop.value
            break
    assert all(isinstance(r, Progress) and r.unit == "sites" for r in reports)
    assert reports[-1].done == reports[-1].total == 16 and reports[-1].metrics["sites/s"] > 0
    assert list(df.columns) == ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Role"] + FEATS
    assert len(df) == 16 and all(df[c].dtype == np.float32 for c in FEATS)
    pd.testing.assert_frame_equal(df[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]],
                                  index[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]])
    # Site 5's vector is the mean of D.features over its four 16x16 tiles.
    ds = plates.PlateDataset(index, fz.normalizer, 16, mode="tiles")
    tiles = ds[5]
    assert tiles.shape == (4, 3, 16, 16)
    with torch.no_grad():
        expect = fz.module.features(tiles).mean(0).numpy()
    np.testing.assert_allclose(df.loc[5, FEATS].to_numpy(np.float32), expect, rtol=1e-5, atol=1e-6)
    md = df.attrs["gandl"]
    assert md["field_mode"] == "tiles" and md["channels"] == CHANNELS and md["n_sites"] == 16
    assert md["package_version"] and md["checkpoint"]["sha256"] == "x"


def test_resize_mode_differs_and_bad_options(plate) -> None:
    index, fz = plate
    tiles = run_to_end(embed_iter(index, fz, field_mode="tiles"))
    resized = run_to_end(embed_iter(index, fz, field_mode="resize"))
    assert resized.attrs["gandl"]["field_mode"] == "resize"
    assert not np.allclose(tiles[FEATS].to_numpy(), resized[FEATS].to_numpy())
    with pytest.raises(ConfigError, match="--field-mode"):
        run_to_end(embed_iter(index, fz, field_mode="crop"))
    with pytest.raises(ConfigError, match="--batch-size"):
        run_to_end(embed_iter(index, fz, batch_size=0))
    with pytest.raises(ConfigError, match="--resume and --overwrite"):
        run_to_end(embed_iter(index, fz, resume=True, overwrite=True))


def test_same_numbers_for_any_batch_size_and_workers(plate) -> None:
    index, fz = plate
    ref = run_to_end(embed_iter(index, fz, batch_size=1, num_workers=0))
    for bs, nw in [(5, 0), (16, 0), (3, 2)]:
        df = run_to_end(embed_iter(index, fz, batch_size=bs, num_workers=nw))
        pd.testing.assert_frame_equal(df.drop(columns=FEATS), ref.drop(columns=FEATS))
        np.testing.assert_allclose(df[FEATS].to_numpy(), ref[FEATS].to_numpy(), rtol=1e-5, atol=1e-6)


def test_wells_selection(plate) -> None:
    index, fz = plate
    df = run_to_end(embed_iter(index, fz, wells=["B02", ("P2", "C03")]))
    assert sorted(set(zip(df.Metadata_Plate, df.Metadata_Well))) == [("P1", "B02"), ("P2", "B02"), ("P2", "C03")]
    full = run_to_end(embed_iter(index, fz))
    sel = full[(full.Metadata_Well == "B02") | ((full.Metadata_Plate == "P2") & (full.Metadata_Well == "C03"))]
    np.testing.assert_allclose(df[FEATS].to_numpy(), sel[FEATS].to_numpy(), rtol=1e-5, atol=1e-6)
    assert len(select_sites(index, sites=[2])) == 8
    with pytest.raises(DataError, match="H12"):
        run_to_end(embed_iter(index, fz, wells=["H12"]))


# --------------------------------------------------------------------------------------------
# Files: parts, resume, overwrite
# --------------------------------------------------------------------------------------------


def test_out_file_metadata_and_refusal(plate, tmp_path) -> None:
    from gandl_core.tables import read_table

    index, fz = plate
    out = tmp_path / "emb.parquet"
    df = run_to_end(embed_iter(index, fz, out=out, part_size=3))
    assert out.is_file() and not parts_dir(out).exists()
    back = read_table(out)
    np.testing.assert_array_equal(back[FEATS].to_numpy(), df[FEATS].to_numpy())
    md = back.attrs["gandl"]
    assert md["featurizer"]["name"] == "gan-dl" and md["field_mode"] == "tiles" and md["channels"] == CHANNELS
    with pytest.raises(DataError, match="--overwrite") as err:
        run_to_end(embed_iter(index, fz, out=out))
    assert str(out) in str(err.value)
    again = run_to_end(embed_iter(index, fz, out=out, resume=True))  # complete: nothing to do
    np.testing.assert_array_equal(again[FEATS].to_numpy(), df[FEATS].to_numpy())
    with pytest.raises(DataError, match="other sites"):
        run_to_end(embed_iter(index, fz, out=out, resume=True, wells=["B02"]))
    sub = run_to_end(embed_iter(index, fz, out=out, overwrite=True, wells=["B02"]))
    assert len(read_table(out)) == len(sub) == 4


def test_interrupt_then_resume_skips_finished_parts(plate, tmp_path) -> None:
    index, fz = plate
    ref = run_to_end(embed_iter(index, fz))
    out = tmp_path / "emb.parquet"
    gen = embed_iter(index, fz, out=out, batch_size=2, part_size=4, num_workers=1)
    for _ in range(5):  # start report + 4 batches of 2 = 8 sites = parts 0 and 1
        next(gen)
    gen.close()  # stops the loader's worker process too
    pdir = parts_dir(out)
    assert sorted(p.name for p in pdir.glob("part-*.parquet")) == ["part-000000.parquet", "part-000001.parquet"]
    assert not out.exists()
    with pytest.raises(DataError, match="--resume"):
        run_to_end(embed_iter(index, fz, out=out))
    counting = Counting(fz)
    df = run_to_end(embed_iter(index, counting, out=out, resume=True, batch_size=2, part_size=4))
    assert counting.images == 8 * 4  # 8 remaining sites x 4 tiles; the first 8 sites were not redone
    np.testing.assert_allclose(df[FEATS].to_numpy(), ref[FEATS].to_numpy(), rtol=1e-5, atol=1e-6)
    assert not pdir.exists()
    # Parts from other settings are refused, naming what changed.
    gen = embed_iter(index, fz, out=tmp_path / "b.parquet", part_size=4, batch_size=4)
    next(gen), next(gen), next(gen)
    gen.close()
    with pytest.raises(DataError, match="field_mode"):
        run_to_end(embed_iter(index, fz, out=tmp_path / "b.parquet", part_size=4, resume=True, field_mode="resize"))


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_corrupt_image_names_file_keeps_parts_and_skip_bad(plate, tmp_path) -> None:
    index, fz = plate
    bad = Path(index.loc[9, "Path_ER"])
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "emb.parquet"
    with pytest.raises(DataError) as err:
        run_to_end(embed_iter(index, fz, out=out, batch_size=2, part_size=4, num_workers=1))
    msg = str(err.value)
    assert str(bad) in msg and "P2 B02 site 2" in msg and "--skip-bad" in msg and "--resume" in msg
    assert (parts_dir(out) / "part-000001.parquet").is_file()  # sites 4..7 finished before the error
    with pytest.warns(UserWarning, match="skipped 1 unreadable site"):
        df = run_to_end(embed_iter(index, fz, out=out, batch_size=2, part_size=4, resume=True, skip_bad=True))
    assert len(df) == 15 and not ((df.Metadata_Plate == "P2") & (df.Metadata_Well == "B02") & (df.Metadata_Site == 2)).any()
    skipped = df.attrs["gandl"]["skipped"]
    assert len(skipped) == 1 and str(bad) in skipped[0]["error"]
    # Fixed file, fresh run: all 16 sites again.
    bad.write_bytes(good_bytes)
    assert len(run_to_end(embed_iter(index, fz, out=out, overwrite=True))) == 16


def test_missing_file_is_named(plate) -> None:
    index, fz = plate
    index = index.copy()
    index.loc[3, "Path_Actin"] = "/nonexistent/dir/B03_s2_w3.png"
    with pytest.raises(DataError, match="/nonexistent/dir/B03_s2_w3.png"):
        run_to_end(embed_iter(index, fz))


def test_channel_mismatch_names_both_lists(plate, plates) -> None:
    index, _ = plate
    fz = make_featurizer(plates, index, channels=["DNA", "Actin", "ER"])
    with pytest.raises(CheckpointError) as err:
        run_to_end(embed_iter(index, fz))
    msg = str(err.value)
    assert "['DNA', 'Actin', 'ER']" in msg and "['DNA', 'ER', 'Actin']" in msg and "--channels DNA,Actin,ER" in msg
    other = make_featurizer(plates, index, channels=["DNA", "ER", "Mito"])
    with pytest.raises(CheckpointError, match="lacks \\['Mito'\\]"):
        check_channels(other, CHANNELS)


def test_nan_and_constant_features(plate) -> None:
    index, fz = plate

    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.ones(len(x), 4)

    class Nan(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x), 4), torch.nan)

    kw = dict(prefix="T_", n_features=4, channels=CHANNELS, resolution=16, normalizer=fz.normalizer)
    with pytest.warns(UserWarning, match="identical for every site"):
        run_to_end(embed_iter(index, ModuleFeaturizer(Const(), **kw)))
    with pytest.raises(DataError, match="P1 B02 site 1: the features are NaN/inf"):
        run_to_end(embed_iter(index, ModuleFeaturizer(Nan(), **kw)))
    with pytest.warns(UserWarning, match="skipped 16"):
        df = run_to_end(embed_iter(index, ModuleFeaturizer(Nan(), **kw), skip_bad=True))
    assert len(df) == 0 and len(df.attrs["gandl"]["skipped"]) == 16
    # A featurizer without a checkpoint (identity checkpoint None) still gets a clear channel error.
    other = ModuleFeaturizer(Const(), **{**kw, "channels": ["A", "B", "C"]}, info={"checkpoint": None})
    with pytest.raises(CheckpointError, match="'T_'"):
        run_to_end(embed_iter(index, other))


# --------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------


def test_shards_merge_to_the_single_process_table(plate, tmp_path) -> None:
    index, fz = plate
    ref = run_to_end(embed_iter(index, fz))
    out = tmp_path / "emb.parquet"
    for k in range(3):
        part = run_to_end(embed_iter(index, fz, out=shard_path(out, k, 3), shard=f"{k}/3", part_size=2))
        assert 0 < len(part) < 16
    with pytest.raises(DataError, match="missing"):
        merge_shards(tmp_path / "other.parquet", 3)
    merged = merge_shards(out)
    pd.testing.assert_frame_equal(merged.drop(columns=FEATS), ref.drop(columns=FEATS))
    np.testing.assert_allclose(merged[FEATS].to_numpy(), ref[FEATS].to_numpy(), rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob("emb.shard-*"))
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_embed_checkpoint_shards_and_errors(plate, ckpt_mod, tmp_path, capsys) -> None:
    from gandl_core.cli import main
    from gandl_core.tables import read_table

    index, fz = plate
    idx = tmp_path / "index.parquet"
    index.to_parquet(idx)
    ck = write_checkpoint(ckpt_mod, tmp_path / "ckpt.pt", fz)
    out = tmp_path / "emb.parquet"
    # The default readout is multiscale: the same numbers as the engine with that readout.
    assert main(["embed", str(idx), "--checkpoint", str(ck), "-o", str(out), "--workers", "0",
                 "--batch-size", "5"]) == 0
    df = read_table(out)
    fz_ms = GanFeaturizer.from_discriminator(fz.module, fz.normalizer, fz.channels, features="multiscale")
    ref_ms = run_to_end(embed_iter(index, fz_ms))
    ms_cols = feature_names("GAN_", fz.module.feature_width("multiscale"))
    assert df.attrs["gandl"]["featurizer"]["features"] == "multiscale" and list(df.columns[-len(ms_cols):]) == ms_cols
    np.testing.assert_allclose(df[ms_cols].to_numpy(), ref_ms[ms_cols].to_numpy(), rtol=1e-5, atol=1e-6)
    ref = run_to_end(embed_iter(index, fz))  # the rest of this test reads the paper's fc layer
    md = df.attrs["gandl"]
    import hashlib

    assert md["checkpoint"]["sha256"] == hashlib.sha256(ck.read_bytes()).hexdigest()
    assert md["checkpoint"]["kimg"] == 1.5 and md["checkpoint"]["path"] == str(ck.resolve())
    assert "wrote" in capsys.readouterr().out
    # Existing output: refused with exit code 2 and the fix in the message.
    assert main(["embed", str(idx), "--checkpoint", str(ck), "-o", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    # Array-job shards, then --merge.
    out2 = tmp_path / "sharded.parquet"
    for k in range(2):
        assert main(["embed", str(idx), "-c", str(ck), "-o", str(out2), "--shard", f"{k}/2", "--workers", "0",
                     "--features", "final"]) == 0
        assert shard_path(out2, k, 2).is_file()
    assert main(["embed", "--merge", "-o", str(out2)]) == 0
    np.testing.assert_allclose(read_table(out2)[FEATS].to_numpy(), ref[FEATS].to_numpy(), rtol=1e-5, atol=1e-6)
    # Wells subset.
    out3 = tmp_path / "wells.parquet"
    assert main(["embed", str(idx), "-c", str(ck), "-o", str(out3), "--wells", "B02,P2:C03", "--workers", "0",
                 "--features", "final"]) == 0
    assert len(read_table(out3)) == 6
    # Channel order differs from the checkpoint's: the fix is --channels.
    ck2 = write_checkpoint(ckpt_mod, tmp_path / "ckpt2.pt", fz, channels=["ER", "DNA", "Actin"])
    assert main(["embed", str(idx), "-c", str(ck2), "-o", str(tmp_path / "x.parquet")]) == 1
    err = capsys.readouterr().err
    assert "['ER', 'DNA', 'Actin']" in err and "--channels ER,DNA,Actin" in err
    assert main(["embed", str(idx), "-c", str(ck2), "-o", str(tmp_path / "x.parquet"), "--workers", "0",
                 "--channels", "ER,DNA,Actin"]) == 0
    assert main(["embed", str(idx), "-c", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "y.parquet")]) == 1
    assert "nope.pt" in capsys.readouterr().err


def test_output_formats(plate, tmp_path) -> None:
    index, fz = plate
    csv = tmp_path / "emb.csv"
    df = run_to_end(embed_iter(index, fz, out=csv, wells=["B02"]))
    back = pd.read_csv(csv)
    np.testing.assert_allclose(back[FEATS].to_numpy(), df[FEATS].to_numpy(), rtol=1e-6)
    with pytest.raises(ConfigError, match="emb.txt"):
        run_to_end(embed_iter(index, fz, out=tmp_path / "emb.txt"))
    with pytest.raises(ConfigError, match="Parquet"):
        run_to_end(embed_iter(index, fz, out=tmp_path / "e.csv", shard="0/2"))


def test_scale_of_training_is_applied(plate, plates) -> None:
    index, fz = plate
    if "scale" not in plates.PlateDataset.__init__.__code__.co_varnames:
        pytest.skip("this PlateDataset has no scale option")
    fz.scale = 0.5  # trained on fields downscaled 2x: a 32 px field is one 16 px tile
    counting = Counting(fz)
    counting.scale = 0.5
    df = run_to_end(embed_iter(index, counting))
    assert counting.images == 16 and df.attrs["gandl"]["scale"] == 0.5


def test_torchrun_resume_of_a_merged_table_does_nothing(plate, tmp_path, monkeypatch) -> None:
    index, fz = plate
    out = tmp_path / "emb.parquet"
    ref = run_to_end(embed_iter(index, fz, out=out))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    counting = Counting(fz)
    df = run_to_end(embed_iter(index, counting, out=out, resume=True))
    assert counting.images == 0 and len(df) == len(ref)
    with pytest.raises(DataError, match="--resume"):
        run_to_end(embed_iter(index, fz, out=out))
    with pytest.raises(DataError, match="other sites"):
        run_to_end(embed_iter(index, fz, out=out, resume=True, wells=["B02"]))
    with pytest.raises(ConfigError, match="output file"):
        run_to_end(embed_iter(index, fz))


def test_featurizer_field_mode_is_the_default(plate) -> None:
    index, fz = plate
    fz.field_mode = "resize"  # e.g. a checkpoint trained with crop_mode="resize"
    auto = run_to_end(embed_iter(index, fz, wells=["B02"]))
    assert auto.attrs["gandl"]["field_mode"] == "resize"
    forced = run_to_end(embed_iter(index, fz, wells=["B02"], field_mode="tiles"))
    assert forced.attrs["gandl"]["field_mode"] == "tiles"
    assert not np.allclose(auto[FEATS].to_numpy(), forced[FEATS].to_numpy())


def test_checkpoint_crop_mode_and_scale_reach_the_featurizer(plate, ckpt_mod, tmp_path) -> None:
    _, fz = plate
    plain = GanFeaturizer.from_checkpoint(write_checkpoint(ckpt_mod, tmp_path / "a.pt", fz))
    assert plain.field_mode is None and plain.scale == 1.0
    ck = write_checkpoint(ckpt_mod, tmp_path / "b.pt", fz, crop_mode="resize", field_scale=0.5)
    resized = GanFeaturizer.from_checkpoint(ck)
    assert resized.field_mode == "resize" and resized.scale == 0.5
