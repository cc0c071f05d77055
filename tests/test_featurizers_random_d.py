"""random-d: GAN-DL's discriminator with seeded random weights, architecture from a checkpoint or preset."""

from __future__ import annotations

import pytest
import torch

from gandl_core.errors import CheckpointError, ConfigError
from gandl_core.featurizers.random_d import architecture, random_d_featurizer
from gandl_core.plates import IntensityNormalizer


def _checkpoint(tmp_path, channels=("DNA", "ER")):
    from gandl_core.checkpoint import save_checkpoint
    from gandl_core.gan.stylegan2 import Discriminator

    D = Discriminator(16, len(channels), channel_base=256, channel_max=32)
    norm = IntensityNormalizer().fit(torch.rand(2, len(channels), 16, 16).numpy() * 100, channels=list(channels))
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"format": "gandl-checkpoint", "version": 1, "kind": "stylegan2",
                           "config": {"resolution": 16, "channels": len(channels), "channel_base": 256,
                                      "channel_max": 32, "mbstd_group": 4, "field_scale": 0.5},
                           "channel_names": list(channels), "normalizer": norm.to_dict(), "D": D.state_dict()})
    return path, D, norm


def test_architecture_and_normalizer_from_checkpoint(tmp_path):
    path, D, norm = _checkpoint(tmp_path)
    f = random_d_featurizer(["DNA", "ER"], checkpoint=path, seed=3)
    assert f.prefix == "RandD_" and f.resolution == 16 and f.scale == 0.5
    assert f.identity()["features"] == "multiscale" and f.n_features == f.module.feature_width("multiscale")
    assert list(f.normalizer.lo_) == list(norm.lo_)
    # same architecture (same parameter shapes), different (random) weights
    got = f.module.state_dict()
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in D.state_dict().items()}
    assert not torch.equal(got["fc.weight"], D.state_dict()["fc.weight"])
    ident = f.identity()
    assert ident["name"] == "random-d" and ident["seed"] == 3 and ident["architecture"]["channel_max"] == 32
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*\['DNA', 'ER'\].*--channels DNA,ER"):
        random_d_featurizer(["ER", "DNA"], checkpoint=path)


def test_seeded_deterministic_batch_invariant():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for kind, width in (("final", 512), ("multiscale", None)):
        a = random_d_featurizer(["a", "b", "c"], preset="cpu-tiny", resolution=32, seed=0, features=kind)
        b = random_d_featurizer(["a", "b", "c"], preset="cpu-tiny", resolution=32, seed=0, features=kind)
        c = random_d_featurizer(["a", "b", "c"], preset="cpu-tiny", resolution=32, seed=1, features=kind)
        ya = a(x)
        assert ya.shape == (4, width or a.module.feature_width(kind)) and torch.isfinite(ya).all()
        assert torch.allclose(ya, b(x), atol=1e-6)
        assert not torch.allclose(ya, c(x))
        assert torch.allclose(a(x[2:3]), ya[2:3], atol=1e-5)
        assert a.normalizer is None  # the engine fits one on the plate


def test_presets_and_errors(tmp_path):
    arch = architecture(preset="cpu-small")
    assert arch["resolution"] == 32 and arch["channel_max"] == 64
    assert architecture()["channel_base"] == arch["channel_base"]  # default = cpu-small
    with pytest.raises(ConfigError, match="--preset 'huge'.*cpu-small"):
        architecture(preset="huge")
    with pytest.raises(CheckpointError, match=r"missing\.pt: no such checkpoint"):
        random_d_featurizer(["a"], checkpoint=tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_text("not torch")
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        random_d_featurizer(["a"], checkpoint=tmp_path / "bad.pt")
