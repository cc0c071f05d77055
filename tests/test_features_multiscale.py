"""The discriminator's multiscale readout: shape, batch invariance, determinism, and what it measures."""

from __future__ import annotations

import pytest
import torch

from gandl_core.errors import ConfigError
from gandl_core.featurizers.base import GanFeaturizer, check_feature_kind
from gandl_core.featurizers.random_d import random_d_featurizer
from gandl_core.gan.stylegan2 import Discriminator


def _d(channels=2, resolution=32, seed=0):
    torch.manual_seed(seed)
    return Discriminator(resolution, channels, channel_base=512, channel_max=32).eval()


def _x(n=6, channels=2, resolution=32, seed=1):
    return torch.rand(n, channels, resolution, resolution, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_width_and_layout_are_every_stage_mean_then_std():
    D, x = _d(), _x()
    widths = D.stage_widths()
    assert widths == [16, 32, 32, 32, 32]  # fromImage at 32 px, blocks down to 16, 8, 4, the 4x4 conv
    assert D.feature_width("multiscale") == 2 * sum(widths) == 288
    assert D.feature_width("final") == 512
    f = D.features(x, "multiscale")
    assert f.shape == (6, 288) and torch.isfinite(f).all()
    maps = D.stages(x)
    assert [m.shape[1] for m in maps] == widths and [m.shape[-1] for m in maps] == [32, 16, 8, 4, 4]
    means = torch.cat([m.mean((2, 3)) for m in maps], 1)
    stds = torch.cat([m.std((2, 3), correction=0) for m in maps], 1)
    assert torch.allclose(f[:, :144], means, atol=1e-6) and torch.allclose(f[:, 144:], stds, atol=1e-6)
    assert (f[:, 144:] >= 0).all()


def test_final_readout_is_unchanged_by_the_option():
    D, x = _d(), _x()
    assert torch.equal(D.features(x), D.features(x, "final"))
    assert D.features(x).shape == (6, 512)


@pytest.mark.parametrize("kind", ["final", "multiscale"])
def test_batch_invariant_deterministic_in_train_and_eval_mode(kind):
    D, x = _d(), _x(8)
    ref = D.features(x, kind)
    assert torch.equal(ref, D.features(x, kind))
    for i in (0, 5):
        assert torch.allclose(D.features(x[i:i + 1], kind), ref[i:i + 1], atol=1e-5)
    D.train()  # the minibatch-std stage uses its running constant for features in either mode
    assert torch.allclose(D.features(x[3:5], kind), ref[3:5], atol=1e-5)


def test_std_part_responds_to_texture_at_equal_mean():
    """Two fields with the same mean intensity, one flat and one punctate: the first stage's
    spread is zero on the flat one and clearly not on the punctate one (the reason the readout
    keeps spreads: texture such as puncta moves them)."""
    D = _d(channels=1)
    flat = torch.full((1, 1, 32, 32), -0.5)
    dots = torch.full((1, 1, 32, 32), -0.5 - 1.0 / 15)
    dots[..., ::4, ::4] = -0.5 + 1.0  # 1/16 of the pixels bright: the same mean as flat
    assert torch.isclose(flat.mean(), dots.mean(), atol=1e-6)
    f = D.features(torch.cat([flat, dots]), "multiscale")
    half = f.shape[1] // 2
    assert float(f[0, half:half + 16].abs().max()) < 1e-6  # a flat field has no spread at fromImage
    assert float(f[1, half:half + 16].max()) > 0.1


def test_featurizers_follow_the_readout_and_record_it(tmp_path):
    a = random_d_featurizer(["a", "b"], preset="cpu-tiny", resolution=32, seed=0, features="multiscale")
    b = random_d_featurizer(["a", "b"], preset="cpu-tiny", resolution=32, seed=0, features="final")
    x = _x()
    assert a.n_features == a.module.feature_width("multiscale") and a(x).shape == (6, a.n_features)
    assert b.n_features == 512 and b(x).shape == (6, 512)
    assert a.identity()["features"] == "multiscale" and b.identity()["features"] == "final"
    g = GanFeaturizer.from_discriminator(_d(), None, ["a", "b"], features="final")
    assert g.identity()["features"] == "final" and g.n_features == 512


def test_unknown_readout_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="--features 'fc'.*final.*multiscale"):
        check_feature_kind("fc")
    with pytest.raises(ConfigError):
        random_d_featurizer(["a"], preset="cpu-tiny", features="fc")
    with pytest.raises(ConfigError):
        _d().features(_x(), "fc")
