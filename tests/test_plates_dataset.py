"""IntensityNormalizer and PlateDataset: numbers, modes, determinism, DataLoader workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gandl_core.errors import ConfigError, DataError
from gandl_core.plates import IntensityNormalizer, PlateDataset, build_index, read_site
from test_plates_forms import write_rxrx


def _ramp_plate(tmp_path, h=40, w=56, n=6):
    """Sites whose channel k holds values k*1000 + (0..h*w-1), so percentiles are known exactly."""
    import tifffile

    root = tmp_path / "ramp"
    root.mkdir()
    base = np.arange(h * w, dtype=np.uint16).reshape(h, w)
    arrays = []
    for s in range(n):
        arr = np.stack([base + 1000 * k for k in range(3)]).astype(np.uint16)
        arr = np.roll(arr, 7 * s, axis=2)  # sites differ, pooled values do not
        tifffile.imwrite(root / f"P1_B{s + 2:02d}_s1.tif", arr, photometric="minisblack")
        arrays.append(arr)
    return build_index(root, names=["DNA", "ER", "Actin"]), arrays


def test_normalizer_percentiles_and_transform(tmp_path) -> None:
    ix, arrays = _ramp_plate(tmp_path)
    norm = IntensityNormalizer(low=1, high=99).fit(ix, n_sites=6)
    values = np.tile(np.arange(40 * 56, dtype=np.float64), 6)  # 6 sites pooled
    for k in range(3):
        assert norm.lo_[k] == pytest.approx(np.percentile(values, 1) + 1000 * k)
        assert norm.hi_[k] == pytest.approx(np.percentile(values, 99) + 1000 * k)
    assert norm.channels == ["DNA", "ER", "Actin"] and norm.n_sites_ == 6
    x = norm.transform(read_site(ix.iloc[0]))
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    mid = (norm.lo_[1] + norm.hi_[1]) / 2
    assert norm.transform(np.full((3, 2, 2), mid, np.float32))[1, 0, 0] == pytest.approx(0.0, abs=1e-6)
    # batch form and torch form agree with the single-image numpy form
    batch = np.stack([read_site(ix.iloc[i]) for i in range(2)])
    assert np.array_equal(norm.transform(batch)[1], norm.transform(batch[1]))
    t = norm.transform(torch.from_numpy(batch))
    assert torch.allclose(t, torch.from_numpy(norm.transform(batch)), atol=1e-6)
    assert np.allclose(norm.inverse(norm.transform(batch[0]))[0, 5, 5:20], batch[0, 0, 5, 5:20], rtol=1e-5)


def test_normalizer_round_trip_and_channel_check(tmp_path) -> None:
    ix, _ = _ramp_plate(tmp_path)
    norm = IntensityNormalizer().fit(ix, n_sites=3, seed=5)
    d = json.loads(json.dumps(norm.to_dict()))
    back = IntensityNormalizer.from_dict(d)
    assert back.to_dict() == norm.to_dict()
    img = read_site(ix.iloc[2])
    assert np.array_equal(back.transform(img), norm.transform(img))
    with pytest.raises(DataError, match=r"image has 2 channels but the normalizer was fitted on 3 \(\['DNA', 'ER', 'Actin'\]\)"):
        norm.transform(img[:2])
    with pytest.raises(ConfigError, match=r"lacks key\(s\) \['hi'\]"):
        IntensityNormalizer.from_dict({k: v for k, v in d.items() if k != "hi"})
    with pytest.raises(ConfigError, match="not fitted"):
        IntensityNormalizer().transform(img)
    with pytest.raises(ConfigError, match="low=50, high=10"):
        IntensityNormalizer(50, 10)


def test_normalizer_gamma_stretches_dim_values_and_round_trips(tmp_path) -> None:
    ix, arrays = _ramp_plate(tmp_path)
    lin = IntensityNormalizer(low=1, high=99).fit(ix, n_sites=6)
    sq = IntensityNormalizer(low=1, high=99, gamma=0.5).fit(ix, n_sites=6)
    # a value a quarter of the way up the range: linear -0.5; square root: 2*sqrt(0.25)-1 = 0
    q = lin.lo_ + 0.25 * (lin.hi_ - lin.lo_)
    img = np.broadcast_to(q.reshape(3, 1, 1), (3, 2, 2)).astype(np.float32)
    assert np.allclose(lin.transform(img), -0.5, atol=1e-5) and np.allclose(sq.transform(img), 0.0, atol=1e-5)
    # the ends stay at -1 and +1, numpy and torch agree, inverse restores the raw values
    x = sq.transform(arrays[0].astype(np.float32))
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.allclose(sq.transform(torch.from_numpy(arrays[0].astype(np.float32))), torch.from_numpy(x), atol=1e-6)
    assert np.allclose(sq.inverse(x)[:, 10, 10:30], arrays[0][:, 10, 10:30], rtol=1e-4)
    d = json.loads(json.dumps(sq.to_dict()))
    assert d["gamma"] == 0.5 and IntensityNormalizer.from_dict(d).gamma == 0.5
    old = {k: v for k, v in lin.to_dict().items() if k != "gamma"}  # written before gamma existed
    assert IntensityNormalizer.from_dict(old).gamma == 1.0
    with pytest.raises(ConfigError, match="gamma=0"):
        IntensityNormalizer(gamma=0)


def test_normalizer_sampling_is_seeded_and_constant_channel_safe(tmp_path) -> None:
    ix, _ = _ramp_plate(tmp_path)
    a = IntensityNormalizer().fit(ix, n_sites=2, seed=1).to_dict()
    assert a == IntensityNormalizer().fit(ix, n_sites=2, seed=1).to_dict()
    flat = IntensityNormalizer().fit(np.full((2, 1, 4, 4), 7.0, np.float32))
    assert flat.hi_[0] == 8.0 and np.isfinite(flat.transform(np.full((1, 4, 4), 7.0))).all()


# --------------------------------------------------------------------------------------------
# PlateDataset
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def ramp(tmp_path):
    ix, arrays = _ramp_plate(tmp_path)
    return ix, arrays, IntensityNormalizer().fit(ix)


def test_full_and_resize(ramp) -> None:
    ix, arrays, norm = ramp
    full = PlateDataset(ix, norm, None, mode="full")[1]
    assert full.dtype == torch.float32 and full.shape == (3, 40, 56)
    assert np.allclose(full.numpy(), norm.transform(arrays[1].astype(np.float32)))
    small = PlateDataset(ix, norm, 8, mode="resize")[1]
    assert small.shape == (3, 8, 8)
    # area interpolation = box mean: 40x56 -> 8x8 averages 5x7 blocks
    assert small[0, 2, 3].item() == pytest.approx(full[0, 10:15, 21:28].mean().item(), abs=1e-5)
    half = PlateDataset(ix, norm, None, mode="full", scale=0.5)[0]
    assert half.shape == (3, 20, 28)
    assert half[2, 3, 4].item() == pytest.approx(PlateDataset(ix, norm, None, mode="full")[0][2, 6:8, 8:10].mean().item(), abs=1e-5)


def test_tiles_cover_the_field(ramp) -> None:
    ix, _, norm = ramp
    full = PlateDataset(ix, norm, None, mode="full")[0]
    tiles = PlateDataset(ix, norm, 16, mode="tiles")[0]
    # 40 -> 3 rows of tiles at 0, 12, 24; 56 -> 4 columns at 0, 13, 27, 40
    assert tiles.shape == (12, 3, 16, 16)
    assert torch.equal(tiles[0], full[:, 0:16, 0:16]) and torch.equal(tiles[-1], full[:, 24:40, 40:56])
    assert torch.equal(tiles[5], full[:, 12:28, 13:29])
    exact = PlateDataset(ix, norm, 8, mode="tiles")[0]  # 40x56 is a multiple of 8: no overlap
    assert exact.shape == (35, 3, 8, 8)
    assert torch.equal(torch.cat([torch.cat(list(exact[r * 7:(r + 1) * 7]), dim=2) for r in range(5)], dim=1), full)


def test_random_crop_deterministic_and_inside_field(ramp) -> None:
    ix, _, norm = ramp
    ds = PlateDataset(ix, norm, 16, mode="random_crop", seed=3)
    full = PlateDataset(ix, norm, None, mode="full")[2]
    c = ds[2]
    assert c.shape == (3, 16, 16)
    hits = [(y, x) for y in range(25) for x in range(41) if torch.equal(full[:, y:y + 16, x:x + 16], c)]
    assert len(hits) == 1
    assert torch.equal(c, PlateDataset(ix, norm, 16, mode="random_crop", seed=3)[2])
    crops = {tuple(ds[2][0, 0, :2].tolist())}
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        crops.add(tuple(ds[2][0, 0, :2].tolist()))
    assert len(crops) > 3  # new positions each epoch


def test_dataloader_workers_match_single_process(ramp) -> None:
    ix, _, norm = ramp
    ds = PlateDataset(ix, norm, 16, mode="random_crop", seed=11)
    ds.set_epoch(2)
    one = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)))
    two = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)))
    assert one.shape == (6, 3, 16, 16) and torch.equal(one, two)
    assert -1.0 <= float(one.min()) and float(one.max()) <= 1.0


def test_dataset_errors(ramp, tmp_path) -> None:
    ix, _, norm = ramp
    with pytest.raises(ConfigError, match="mode='crop'.*random_crop"):
        PlateDataset(ix, norm, 16, mode="crop")
    with pytest.raises(ConfigError, match="needs a resolution"):
        PlateDataset(ix, norm, None, mode="tiles")
    with pytest.raises(ConfigError, match="scale=2"):
        PlateDataset(ix, norm, 16, scale=2)
    with pytest.raises(DataError, match=r"field 40x56 .* smaller than resolution 64"):
        PlateDataset(ix, norm, 64, mode="tiles")[0]
    with pytest.raises(ConfigError, match="normalizer is not fitted"):
        PlateDataset(ix, IntensityNormalizer(), 16)
    two = IntensityNormalizer().fit(np.ones((1, 2, 4, 4), np.float32) * np.arange(4))
    with pytest.raises(ConfigError, match=r"index has 3 channels \['DNA', 'ER', 'Actin'\] but the normalizer has 2"):
        PlateDataset(ix, two, 16)


def test_dataset_on_rxrx_png_plate(tmp_path) -> None:
    from test_plates_forms import site_arrays

    ix = build_index(write_rxrx(tmp_path / "rx", site_arrays(seed=9, h=32, w=32)))
    norm = IntensityNormalizer().fit(ix)
    ds = PlateDataset(ix, norm, 16, mode="tiles")
    assert len(ds) == 6 and ds[5].shape == (4, 5, 16, 16)


def test_normalizer_subsamples_big_fields_close_to_exact() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.gamma(2.0, 100.0, size=(3, 2, 300, 300)).astype(np.float32)  # 90000 px > 65536 per site
    norm = IntensityNormalizer(low=1, high=99).fit(imgs, seed=0, channels=["a", "b"])
    exact_hi = np.percentile(imgs[:, 1], 99)
    assert norm.channels == ["a", "b"]
    assert abs(norm.hi_[1] - exact_hi) / exact_hi < 0.02
    assert abs(norm.lo_[0] - np.percentile(imgs[:, 0], 1)) < 3.0
    assert IntensityNormalizer(low=1, high=99).fit(imgs, seed=0).to_dict()["hi"] == norm.to_dict()["hi"]
