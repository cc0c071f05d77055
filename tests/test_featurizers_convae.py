"""convae: SSIM, a few training steps, exact resume, the CAE_ featurizer, and option errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gandl_core.errors import CheckpointError, ConfigError
from gandl_core.featurizers.convae import (ConvAEConfig, ConvAEFeaturizer, build_convae, load_convae, ssim,
                                           train_convae)
from gandl_core.progress import run_to_end


def test_ssim_matches_skimage_per_channel():
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 24, generator=gen, dtype=torch.float64) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(-1, 1)
    per = ssim(x, y, reduce=False)
    assert per.shape == (2, 3)
    for n in range(2):
        for c in range(3):
            ref = structural_similarity(x[n, c].numpy(), y[n, c].numpy(), data_range=2.0, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False)
            assert per[n, c].item() == pytest.approx(ref, abs=2e-3)  # skimage crops a 3-px border more
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-9)


def test_model_shapes_any_channel_count():
    m = build_convae(7, 16, width=4, embed_dim=1024)
    x = torch.rand(3, 7, 16, 16) * 2 - 1
    z = m.encode(x)
    assert z.shape == (3, 1024) and m(x).shape == x.shape and m(x).abs().max() <= 1
    with pytest.raises(ConfigError, match="--resolution 24"):
        build_convae(3, 24)


def _cfg(tmp_path, name, **kw):
    base = dict(out=str(tmp_path / name), resolution=16, width=4, embed_dim=64, batch=4, kimg=0.024,
                checkpoint_every=3, lr=1e-3)
    base.update(kw)
    return ConvAEConfig(**base)


@pytest.fixture(scope="module")
def index(synth_screen):
    from gandl_core.plates import build_index

    return build_index(synth_screen).iloc[:24].reset_index(drop=True)


def test_train_resume_equals_uninterrupted(tmp_path, index):
    straight = run_to_end(train_convae(_cfg(tmp_path, "a"), index))  # 6 steps
    gen = train_convae(_cfg(tmp_path, "b"), index)
    reports = [next(gen) for _ in range(4)]  # start + 3 steps (checkpoint at step 3)
    assert "checkpoint" in reports[-1].artifacts
    gen.close()
    resumed = run_to_end(train_convae(_cfg(tmp_path, "b"), index, resume=True))
    ma, _, sa = load_convae(straight)
    mb, _, sb = load_convae(resumed)
    assert sa["step"] == sb["step"] == 6 and sa["kind"] == "convae"
    for k, v in ma.state_dict().items():
        assert torch.allclose(v, mb.state_dict()[k], atol=1e-6), k
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and '"ssim"' in lines[0]
    assert (tmp_path / "a" / "config.json").is_file()
    with pytest.raises(ConfigError, match="already holds a convae run.*--resume"):
        run_to_end(train_convae(_cfg(tmp_path, "a"), index))
    with pytest.raises(CheckpointError, match="cannot resume with changed \\['width'\\]"):
        run_to_end(train_convae(_cfg(tmp_path, "a", width=8, kimg=0.05), index, resume=True))


def test_training_lowers_the_loss(tmp_path, index):
    gen = train_convae(_cfg(tmp_path, "c", kimg=0.16, checkpoint_every=1000, lr=3e-3), index)
    losses = []
    try:
        while True:
            p = next(gen)
            if "loss" in p.metrics:
                losses.append(p.metrics["loss"])
    except StopIteration as stop:
        path = stop.value
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    f = ConvAEFeaturizer.from_checkpoint(tmp_path / "c")  # run folder works
    assert f.prefix == "CAE_" and f.n_features == 64 and f.resolution == 16
    assert f.channels == ["DNA", "ER", "Actin", "RNA", "Golgi"]
    x = torch.rand(3, 5, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y = f(x)
    assert y.shape == (3, 64) and torch.allclose(f(x[1:2]), y[1:2], atol=1e-5)
    assert f.identity()["checkpoint"]["path"] == str(path.resolve())


def test_option_errors(tmp_path, index):
    with pytest.raises(ConfigError, match="--perceptual-weights .*dn\\.pth: file not found"):
        run_to_end(train_convae(_cfg(tmp_path, "d", perceptual_weights=str(tmp_path / "dn.pth")), index))
    with pytest.raises(ConfigError, match="--pixel-loss"):
        _cfg(tmp_path, "e", pixel_loss="l3").validate()
    with pytest.raises(CheckpointError, match="--resume: .*latest.pt does not exist"):
        run_to_end(train_convae(_cfg(tmp_path, "f"), index, resume=True))
    with pytest.raises(CheckpointError, match="not a convae checkpoint"):
        from gandl_core.checkpoint import save_checkpoint

        save_checkpoint(tmp_path / "gan.pt", {"format": "gandl-checkpoint", "version": 1, "kind": "stylegan2"})
        ConvAEFeaturizer.from_checkpoint(tmp_path / "gan.pt")


def test_perceptual_term_with_local_weights(tmp_path, index):
    from gandl_core.featurizers.densenet import densenet121

    torch.save(densenet121(seed=0).state_dict(), tmp_path / "dn.pth")
    gen = train_convae(_cfg(tmp_path, "g", kimg=0.008, perceptual_weights=str(tmp_path / "dn.pth")), index)
    metrics = [p.metrics for p in iter(lambda: next(gen, None), None)]
    assert any("perceptual" in m and m["perceptual"] > 0 for m in metrics)
