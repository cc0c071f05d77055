"""StyleGAN2 networks: shapes for any channel count, errors, batch-invariant features, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gandl_core.errors import ConfigError, DataError
from gandl_core.stylegan2 import (
    Discriminator,
    Generator,
    MinibatchStd,
    ModulatedConv2d,
    channels_at,
    downsample2d,
    parameter_count,
    upsample2d,
)

TINY = dict(channel_base=128, channel_max=32)
GTINY = dict(z_dim=32, w_dim=32, **TINY)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("channels", [1, 3, 5, 6])
@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_shapes_any_channels_and_resolution(channels: int, resolution: int) -> None:
    G = Generator(resolution, channels, **GTINY)
    D = Discriminator(resolution, channels, feature_dim=512, **TINY)
    z = torch.randn(4, 32)
    img = G(z)
    assert img.shape == (4, channels, resolution, resolution)
    assert torch.isfinite(img).all()
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    assert D(img).shape == (4, 1)
    assert D.features(img).shape == (4, 512)


@pytest.mark.parametrize("bad", [0, 4, 12, 48, 100, 2.5, "64"])
def test_invalid_resolution_names_option_and_valid_values(bad) -> None:
    for cls in (Generator, Discriminator):
        with pytest.raises(ConfigError) as e:
            cls(bad, 3, **TINY)
        msg = str(e.value)
        assert "resolution" in msg and "power of two" in msg and "64" in msg


def test_invalid_channels_and_sizes() -> None:
    with pytest.raises(ConfigError, match="channels"):
        Generator(16, 0, **GTINY)
    with pytest.raises(ConfigError, match="channel_base"):
        Discriminator(16, 3, channel_base=0, channel_max=8)
    with pytest.raises(ConfigError, match="mapping_layers"):
        Generator(16, 3, mapping_layers=0, **GTINY)
    with pytest.raises(ConfigError, match="mbstd_group"):
        Discriminator(16, 3, mbstd_group=0, **TINY)


def test_wrong_image_shape_is_data_error_naming_expected_shape() -> None:
    D = Discriminator(16, 5, **TINY)
    with pytest.raises(DataError) as e:
        D.features(torch.randn(2, 3, 16, 16))
    assert "[N, 5, 16, 16]" in str(e.value) and "[2, 3, 16, 16]" in str(e.value)
    with pytest.raises(DataError):
        D(torch.randn(2, 5, 32, 32))


def test_channel_counts_follow_base_and_max() -> None:
    assert channels_at(4, 32768, 512) == 512
    assert channels_at(256, 32768, 512) == 128
    assert channels_at(1024, 512, 512) == 1  # never zero
    D = Discriminator(32, 2, channel_base=256, channel_max=16)
    assert D.from_image.weight.shape == (8, 2, 1, 1)  # 256 // 32
    assert D.conv.weight.shape == (16, 17, 3, 3)  # min(64, 16) + the mbstd map


def test_features_batch_invariant_and_deterministic() -> None:
    D = Discriminator(16, 5, feature_dim=512, mbstd_group=4, **TINY)
    imgs = torch.randn(16, 5, 16, 16)
    # Train a few forward passes so the running mbstd statistic is non-trivial.
    D.train()
    for _ in range(3):
        D(torch.randn(8, 5, 16, 16) * 2)
    assert float(D.mbstd.running_std) > 0
    with torch.no_grad():
        f16 = D.features(imgs)
        f1 = torch.cat([D.features(imgs[i : i + 1]) for i in range(16)])
        again = D.features(imgs)
        # A different batchmate must not change image 0's vector.
        other = D.features(torch.cat([imgs[:1], torch.randn(3, 5, 16, 16) * 5]))
    assert f16.shape == (16, 512)
    torch.testing.assert_close(f1, f16, atol=1e-5, rtol=1e-5)
    assert torch.equal(again, f16)
    torch.testing.assert_close(other[0], f16[0], atol=1e-5, rtol=1e-5)
    # Training-mode forward does see batchmates (the point of mbstd); eval forward does not.
    D.eval()
    with torch.no_grad():
        s_all = D(imgs)
        s_one = D(imgs[:1])
    torch.testing.assert_close(s_one[0], s_all[0], atol=1e-5, rtol=1e-5)


def test_mbstd_training_statistic_groups_and_odd_batches() -> None:
    layer = MinibatchStd(group_size=4)
    layer.train()
    assert [layer.group_for(n) for n in (1, 2, 3, 4, 6, 7, 8, 10)] == [1, 2, 3, 4, 3, 1, 4, 2]
    x = torch.randn(6, 3, 4, 4)
    out = layer(x)
    assert out.shape == (6, 4, 4, 4)
    # group size 3 for N=6: samples i and i+2 and i+4 share a group (i % 2).
    g = x.reshape(3, 2, 3, 4, 4)
    expected = g.std(dim=0, unbiased=False).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out[:, 3, 0, 0], expected.repeat(3), atol=1e-4, rtol=1e-4)
    assert float(layer.running_std) == pytest.approx(float(expected.mean()), rel=1e-5)
    # Batch of one: std over a group of one is 0 (up to the epsilon), no error.
    assert float(layer(torch.randn(1, 3, 4, 4))[0, 3].max()) < 1e-3
    # Later batches move the running mean by momentum 0.01 only.
    before = float(layer.running_std)
    layer(torch.randn(4, 3, 4, 4) * 100)
    assert before < float(layer.running_std) < before + 0.02 * 100


def test_generator_deterministic_init_and_const_noise() -> None:
    torch.manual_seed(7)
    a = Generator(16, 3, **GTINY)
    torch.manual_seed(7)
    b = Generator(16, 3, **GTINY)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    z = torch.randn(3, 32)
    a.eval()
    # Give noise a non-zero strength so the modes differ observably.
    for name, p in a.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.5)
    with torch.no_grad():
        c1, c2 = a(z, noise_mode="const"), a(z, noise_mode="const")
        r1, r2 = a(z, noise_mode="random"), a(z, noise_mode="random")
    assert torch.equal(c1, c2)
    assert not torch.allclose(r1, r2)
    with pytest.raises(ConfigError, match="noise_mode"):
        a(z, noise_mode="fixed")


def test_truncation_and_w_avg() -> None:
    G = Generator(8, 2, **GTINY)
    G.train()
    z = torch.randn(64, 32)
    assert torch.count_nonzero(G.mapping.w_avg) == 0
    G.mapping(z)  # updates w_avg in training mode
    w_avg = G.mapping.w_avg.clone()
    assert torch.count_nonzero(w_avg) > 0
    G.eval()
    w = G.mapping(z)
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.0), w_avg.expand_as(w))
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.5), 0.5 * (w + w_avg))
    assert torch.equal(G.mapping.w_avg, w_avg)  # eval mode leaves it alone


def test_style_mixing() -> None:
    G = Generator(16, 1, **GTINY)
    G.eval()
    z = torch.randn(200, 32)
    plain = G.styles(z)
    assert torch.equal(plain[:, 0], plain[:, -1])
    mixed = G.styles(z, mixing_prob=0.5, generator=torch.Generator().manual_seed(0))
    changed = (mixed != plain).any(dim=2).any(dim=1)
    assert 60 < int(changed.sum()) < 140  # about half the samples mix
    # Layer 0 always keeps the first latent; once switched, every later layer uses the second.
    assert torch.equal(mixed[:, 0], plain[:, 0])
    sw = (mixed != plain).any(dim=2).int()
    assert bool((sw[:, 1:] >= sw[:, :-1]).all())
    with pytest.raises(ConfigError, match="mixing_prob"):
        G.styles(z, mixing_prob=1.5)


def test_gradients_flow_through_g_and_d() -> None:
    G = Generator(16, 5, **GTINY)
    D = Discriminator(16, 5, **TINY)
    D(G(torch.randn(4, 32), mixing_prob=0.9)).sum().backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            if name.endswith("noise_strength"):
                continue  # starts at 0; its gradient may legitimately be anything, but must exist
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
        assert any(float(p.grad.abs().sum()) > 0 for p in net.parameters())
    assert all(p.grad is not None for p in G.mapping.parameters())


def test_parameter_count_matches_stylegan2_config() -> None:
    # Paper config at 256x256 (channel_base 32768, channel_max 512): D has ~28.9M parameters.
    # Mapping depth 3 instead of 8 removes 5 * (512*512 + 512) parameters from G's ~30.0M.
    D = Discriminator(256, 3, channel_base=32768, channel_max=512)
    G = Generator(256, 3, channel_base=32768, channel_max=512, mapping_layers=3)
    assert 28.5e6 < parameter_count(D) < 29.3e6
    assert 28.5e6 < parameter_count(G) < 29.3e6
    G8 = Generator(256, 3, channel_base=32768, channel_max=512, mapping_layers=8)
    assert parameter_count(G8) - parameter_count(G) == 5 * (512 * 512 + 512)


def test_modulated_conv_batched_equals_grouped() -> None:
    m = ModulatedConv2d(6, 10, 3, 16)
    x, w = torch.randn(3, 6, 8, 8), torch.randn(3, 16)
    a = m(x, w)
    m.fused = True
    b = m(x, w)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # Demodulation: unit-variance input gives about unit-variance output per channel.
    x = torch.randn(64, 6, 16, 16)
    assert 0.7 < float(m(x, torch.randn(64, 16)).std()) < 1.3


def test_fir_resampling() -> None:
    x = torch.randn(2, 3, 8, 8)
    # [1,3,3,1] upsampling with replicated borders is exactly bilinear (half-pixel centres).
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample2d(x), ref, atol=1e-6, rtol=1e-6)
    # Constants are preserved; interior samples use weights (1,3,3,1)/8 per axis.
    assert torch.allclose(downsample2d(torch.full((1, 2, 8, 8), 3.0)), torch.tensor(3.0))
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    d = downsample2d(ramp)
    assert d[0, 0, 0, 1].item() == pytest.approx((1 + 3 * 2 + 3 * 3 + 4) / 8)
    with pytest.raises(ValueError):
        downsample2d(torch.randn(1, 1, 7, 8))


def test_generator_bad_latent_shape() -> None:
    G = Generator(8, 1, **GTINY)
    with pytest.raises(ValueError, match=r"\[N, 32\]"):
        G(torch.randn(2, 16))
    with pytest.raises(ValueError, match="ws"):
        G.synthesis(torch.randn(2, 3, 32))
