"""handcrafted: CellProfiler-style whole-field features on images with known content."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gandl_core.errors import ConfigError
from gandl_core.featurizers.handcrafted import HandcraftedFeaturizer, RawIntensities, feature_labels


def _discs(centres, radius, size=96):
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size))
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 1.0
    return img


def _field():
    """5 well-separated nuclei of radius 6 in DNA; ER = DNA (correlation 1); RNA = its negative."""
    dna = _discs([(15, 15), (15, 60), (50, 30), (75, 75), (80, 20)], 6)
    x = np.stack([dna, dna, 1.0 - dna]) * 2 - 1  # normalized units [-1, 1]
    return torch.from_numpy(x.astype(np.float32))


def test_known_numbers():
    f = HandcraftedFeaturizer(["ER", "DNA", "RNA"])
    assert f.nuclear_channel == "DNA" and f.n_features == len(f.labels)
    assert f.n_features == 3 * (10 + 18 + 8) + 3 + 2 + 2 * (3 + 3)
    v = dict(zip(f.labels, f(_field()[None])[0].numpy().astype(float)))
    assert v["Objects_count"] == 5
    assert v["Objects_area_mean"] == pytest.approx(np.pi * 36, rel=0.15)
    assert v["Objects_area_sd"] < 3
    assert v["Objects_eccentricity_mean"] < 0.3 and v["Objects_solidity_mean"] > 0.9
    assert v["Objects_intensity_DNA_mean"] == pytest.approx(1.0, abs=1e-6)
    assert v["Objects_intensity_RNA_mean"] == pytest.approx(0.0, abs=1e-6)
    assert v["Correlation_ER_DNA"] == pytest.approx(1.0, abs=1e-6)
    assert v["Correlation_ER_RNA"] == pytest.approx(-1.0, abs=1e-6)
    frac = 5 * np.pi * 36 / 96 ** 2
    assert v["Intensity_mean_DNA"] == pytest.approx(frac, rel=0.05)
    assert v["Objects_foreground_fraction"] == pytest.approx(frac, rel=0.15)
    assert v["Texture_contrast_DNA_d1"] < v["Texture_contrast_DNA_d5"]  # edges are far apart at d=5
    assert all(np.isfinite(list(v.values())))


def test_granularity_peaks_at_the_spot_size():
    f = HandcraftedFeaturizer(["DNA"], granularity_steps=8, granularity_background=40)
    small = _discs([(y, x) for y in range(8, 96, 16) for x in range(8, 96, 16)], 2)
    big = _discs([(24, 24), (24, 72), (72, 24), (72, 72)], 6)
    spectra = []
    for img in (small, big):
        v = dict(zip(f.labels, f(torch.from_numpy((img * 2 - 1)[None, None].astype(np.float32)))[0].numpy()))
        spectra.append(np.array([v[f"Granularity_{k}_DNA"] for k in range(1, 9)]))
    assert np.argmax(spectra[0]) + 1 in (2, 3)  # radius-2 spots vanish at opening radius ~3
    assert np.argmax(spectra[1]) + 1 >= 6
    assert spectra[0].sum() == pytest.approx(100, abs=5) and spectra[1].sum() == pytest.approx(100, abs=5)


def test_batch_invariant_deterministic_and_empty_fields():
    f = HandcraftedFeaturizer(["DNA", "ER", "RNA"])
    x = torch.stack([_field(), -torch.ones(3, 96, 96), _field().flip(-1)])
    y = f(x)
    assert y.shape == (3, f.n_features) and torch.isfinite(y).all()
    assert torch.equal(f(x[2:3]), y[2:3]) and torch.equal(f(x), y)
    empty = dict(zip(f.labels, y[1].numpy()))
    assert empty["Objects_count"] == 0 and empty["Correlation_DNA_ER"] == 0


def test_raw_mode_and_options():
    f = HandcraftedFeaturizer(["DAPI", "X"], intensity="raw")
    assert f.nuclear_channel == "DAPI" and isinstance(f.normalizer, RawIntensities)
    raw = (_field()[:2] + 1) * 1000.0  # 0 / 2000 counts
    assert np.array_equal(f.normalizer.transform(raw.numpy()), raw.numpy())
    v = dict(zip(f.labels, f(raw[None])[0].numpy()))
    assert v["Objects_count"] == 5
    assert v["Intensity_p99_DAPI"] == pytest.approx(2000.0)
    assert f.identity()["feature_labels"] == feature_labels(["DAPI", "X"])
    assert HandcraftedFeaturizer(["A", "B"]).nuclear_channel == "A"
    with pytest.raises(ConfigError, match="--nuclear-channel 'Nuc'.*\\['A', 'B'\\]"):
        HandcraftedFeaturizer(["A", "B"], nuclear_channel="Nuc")
    with pytest.raises(ConfigError, match="--intensity"):
        HandcraftedFeaturizer(["A"], intensity="log")
    with pytest.raises(ConfigError, match="glcm-distances"):
        HandcraftedFeaturizer(["A"], distances=[0])
    with pytest.raises(ConfigError, match=r"\[2, H, W\]"):
        HandcraftedFeaturizer(["A", "B"])(torch.zeros(1, 3, 8, 8))


def test_real_bbbc022_field(shared_data):
    """A real 5-stain U2OS field: ~90 Hoechst nuclei of plausible size (0.66 um/px)."""
    from gandl_core.plates import IntensityNormalizer, build_index, channel_names, read_site

    index = build_index(shared_data / "bbbc022_cellpainting_sample" / "load_data.csv").iloc[:1]
    norm = IntensityNormalizer().fit(index)
    f = HandcraftedFeaturizer(channel_names(index))
    assert f.nuclear_channel == "DNA" and f.n_features == 208
    v = dict(zip(f.labels, f(torch.from_numpy(norm.transform(read_site(index.iloc[0])))[None])[0].numpy()))
    assert 60 <= v["Objects_count"] <= 130
    assert 250 <= v["Objects_area_mean"] <= 800  # ~10-20 um nuclei
    assert v["Objects_intensity_DNA_mean"] > 2 * v["Intensity_mean_DNA"]  # nuclei are the bright part
    assert np.isfinite(list(v.values())).all()
