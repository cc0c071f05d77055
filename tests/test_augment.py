"""Adaptive discriminator augmentation: identity at p=0, symmetries, any channel count, p control."""

from __future__ import annotations

import pytest
import torch

from gandl_core.gan.augment import AdaptiveAugment, augment
from gandl_core.errors import CheckpointError, ConfigError

OFF = dict(xflip=False, rotate90=False, translate=0.0, scale_std=0.0, brightness_std=0.0, contrast_std=0.0)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("channels", [1, 3, 5, 6])
def test_p0_identity_and_p1_changes_every_sample(channels: int) -> None:
    x = torch.randn(8, channels, 16, 16)
    assert augment(x, 0.0) is x
    y = augment(x, 1.0, generator=_gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    changed = (y - x).abs().flatten(1).amax(dim=1) > 1e-3
    assert bool(changed.all())


@pytest.mark.parametrize("channels", [1, 5, 6])
def test_dihedral_ops_preserve_per_channel_histograms(channels: int) -> None:
    x = torch.randn(32, channels, 12, 12)
    y = augment(x, 1.0, **{**OFF, "xflip": True, "rotate90": True}, generator=_gen(1))
    assert not torch.equal(x, y)
    xs = x.flatten(2).sort(dim=2).values
    ys = y.flatten(2).sort(dim=2).values
    assert torch.equal(xs, ys)
    # And every output is one of the 8 symmetries of its input.
    for i in range(32):
        cands = [torch.rot90(v, k, dims=(1, 2)) for v in (x[i], x[i].flip(2)) for k in range(4)]
        assert any(torch.equal(y[i], c) for c in cands)


def test_all_eight_symmetries_equally_likely_at_p1() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(800, 1, 1, 1)
    y = augment(x, 1.0, **{**OFF, "xflip": True, "rotate90": True}, generator=_gen(2))
    counts: dict = {}
    for v in y:
        key = tuple(v.flatten().tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 8
    assert all(60 < c < 140 for c in counts.values())  # 100 expected each
    # At p = 0.5 the identity is more likely (not applied, or applied and drew the identity).
    y = augment(x, 0.5, **{**OFF, "xflip": True, "rotate90": True}, generator=_gen(3))
    same = sum(torch.equal(v, x[0]) for v in y)
    assert 0.38 * 800 < same < 0.56 * 800  # expected (0.5 + 0.5/2) * (0.5 + 0.5/4) = 0.47


@pytest.mark.parametrize("padding", ["reflect", "zero"])
def test_integer_translation(padding: str) -> None:
    x = torch.rand(32, 2, 16, 16) + 1.0  # strictly positive so zero fill is visible
    y = augment(x, 1.0, **{**OFF, "translate": 0.25}, padding=padding, generator=_gen(4))
    found_shift = 0
    for i in range(32):
        # Recover the shift: some integer (dy, dx) in range makes the overlap identical.
        ok = False
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                a = y[i, :, max(dy, 0) : 16 + min(dy, 0), max(dx, 0) : 16 + min(dx, 0)]
                b = x[i, :, max(-dy, 0) : 16 + min(-dy, 0), max(-dx, 0) : 16 + min(-dx, 0)]
                if torch.equal(a, b):
                    ok = True
                    found_shift += int(dx != 0 or dy != 0)
                    if padding == "zero" and dy > 0:
                        assert float(y[i, :, :dy].abs().max()) == 0.0
                    if padding == "reflect" and dx > 0:
                        # Mirror about the first column: y[:, :, dx-1] == x[:, :, 1].
                        assert torch.equal(y[i, :, max(dy, 0) : 16 + min(dy, 0), dx - 1],
                                           x[i, :, max(-dy, 0) : 16 + min(-dy, 0), 1])
                    break
            if ok:
                break
        assert ok, f"sample {i} is not an integer translation"
    assert found_shift >= 25


def test_isotropic_scaling_zooms() -> None:
    # A centred bright square grows or shrinks, keeping its centre, and its mean over many
    # samples of zoom factors stays near the original size.
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0
    y = augment(x, 1.0, **{**OFF, "scale_std": 0.3}, generator=_gen(5))
    area = (y > 0.5).flatten(1).sum(dim=1).float()
    assert area.std() > 5  # sizes vary
    assert 40 < float(area.median()) < 90  # around the 64 pixels of the original
    com = (y[:, 0] * torch.arange(32.0)[None, :, None]).sum(dim=(1, 2)) / y[:, 0].sum(dim=(1, 2))
    assert torch.allclose(com, torch.full_like(com, 15.5), atol=0.6)


def test_per_channel_brightness_and_contrast_are_independent() -> None:
    x = torch.randn(256, 5, 8, 8)
    yb = augment(x, 1.0, **{**OFF, "brightness_std": 0.2}, generator=_gen(6))
    offset = (yb - x).mean(dim=(2, 3))  # [N, C]
    assert torch.allclose((yb - x), offset[:, :, None, None].expand_as(x), atol=1e-6)  # constant per channel
    assert 0.15 < float(offset.std()) < 0.25
    # Different channels get different offsets (independent draws): correlation near 0.
    corr = torch.corrcoef(offset.T)
    assert float((corr - torch.eye(5)).abs().max()) < 0.25
    yc = augment(x, 1.0, **{**OFF, "contrast_std": 0.5}, generator=_gen(7))
    ratio = yc.std(dim=(2, 3)) / x.std(dim=(2, 3))
    assert torch.allclose(yc.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-5)  # about the channel mean
    assert float(torch.log2(ratio).std()) == pytest.approx(0.5, abs=0.06)
    assert float(torch.corrcoef(torch.log2(ratio).T).sub(torch.eye(5)).abs().max()) < 0.25


def test_gradients_flow_to_images() -> None:
    x = torch.randn(8, 5, 16, 16, requires_grad=True)
    y = augment(x, 1.0, generator=_gen(8))
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum(dim=(1, 2, 3)).min()) > 0


def test_reproducible_with_generator() -> None:
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(augment(x, 0.7, generator=_gen(9)), augment(x, 0.7, generator=_gen(9)))


def test_bad_options_name_the_option() -> None:
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ConfigError, match=r"p = 1.5"):
        augment(x, 1.5)
    with pytest.raises(ConfigError, match="augment_padding"):
        augment(x, 0.5, padding="wrap")
    with pytest.raises(ConfigError, match="augment_translate"):
        augment(x, 0.5, translate=0.9)
    with pytest.raises(ConfigError, match="augment_contrast_std"):
        AdaptiveAugment(contrast_std=-1)
    with pytest.raises(ConfigError, match="augment_target"):
        AdaptiveAugment(target=2.0)
    with pytest.raises(ConfigError, match="unknown augmentation option"):
        AdaptiveAugment(hue=0.1)
    with pytest.raises(ValueError, match="square"):
        augment(torch.randn(2, 1, 8, 16), 1.0, generator=_gen())


def test_adaptive_p_moves_toward_target() -> None:
    ada = AdaptiveAugment(p=0.0, target=0.6, speed_kimg=0.1, interval=2)  # 100 images for 0 -> 1
    confident = torch.full((10, 1), 3.0)  # r_t = 1 > 0.6: D overfits -> more augmentation
    assert ada.update(confident) == 0.0  # not yet: adjust every 2 batches
    p = ada.update(confident)
    assert p == pytest.approx(20 / 100)
    assert ada.r_t == 1.0
    for _ in range(20):
        p = ada.update(confident)
    assert p == 1.0  # clamped
    unsure = torch.cat([torch.ones(5), -torch.ones(5)])  # r_t = 0 < 0.6 -> less augmentation
    ada.update(unsure)
    assert ada.update(unsure) == pytest.approx(0.8)
    # The step scales with the batch: 4 batches of 5 = 2 batches of 10.
    a, b = AdaptiveAugment(speed_kimg=1, interval=4), AdaptiveAugment(speed_kimg=1, interval=2)
    for _ in range(4):
        a.update(torch.ones(5))
    for _ in range(2):
        b.update(torch.ones(10))
    assert a.p == pytest.approx(b.p) == pytest.approx(0.02)
    nan = AdaptiveAugment(p=0.5, speed_kimg=0.1, interval=1)
    nan.update(torch.tensor([float("nan"), 1.0, 1.0, float("inf")]))
    assert nan.r_t == 1.0 and nan.p == pytest.approx(0.5 + 3 / 100)  # NaN skipped, +inf counts as real
    fixed = AdaptiveAugment(p=0.3, target=None)
    for _ in range(8):
        fixed.update(confident)
    assert fixed.p == 0.3


def test_state_dict_roundtrip_and_errors(tmp_path) -> None:
    ada = AdaptiveAugment(p=0.25, speed_kimg=2, interval=3, padding="zero")
    ada.update(torch.ones(4))
    path = tmp_path / "ada.pt"
    torch.save(ada.state_dict(), path)
    state = torch.load(path, weights_only=True)
    other = AdaptiveAugment()
    other.load_state_dict(state)
    assert other.state_dict() == ada.state_dict()
    with pytest.raises(CheckpointError, match="'p'"):
        other.load_state_dict({})
    with pytest.raises(CheckpointError, match="outside"):
        other.load_state_dict({"p": 3.0})
    with pytest.raises(CheckpointError, match="hue"):
        other.load_state_dict({"p": 0.1, "ops": {"hue": 0.2}})
    with pytest.raises(CheckpointError, match="augment_padding"):
        other.load_state_dict({"p": 0.1, "ops": {"padding": "wrap"}})
    assert other.state_dict() == ada.state_dict()  # failed loads left it unchanged
