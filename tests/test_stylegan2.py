"""StyleGAN2 networks: shapes for any channel count, errors, batch-invariant features, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gandl_core.errors import ConfigError, DataError
from gandl_core.gan.stylegan2 import (
    Discriminator,
    Generator,
    MinibatchStd,
    ModulatedConv2d,
    channels_at,
    fir_blur,
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


@pytest.mark.parametrize("up", [False, True])
def test_modulated_conv_batched_equals_grouped(up: bool) -> None:
    m = ModulatedConv2d(6, 10, 3, 16, up=up)
    x, w = torch.randn(3, 6, 8, 8), torch.randn(3, 16)
    a = m(x, w)
    assert a.shape == (3, 10, 16 if up else 8, 16 if up else 8)
    m.fused = True
    b = m(x, w)
    m.fused = False
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # Per-sample: each output depends only on its own style (no cross-talk in the batched form).
    torch.testing.assert_close(m(x[1:2], w[1:2]), a[1:2], atol=1e-5, rtol=1e-4)
    # Demodulation: unit-variance input gives about unit-variance output per channel.
    if not up:  # (upsampling white noise smooths it, so only the plain conv keeps unit variance)
        x = torch.randn(64, 6, 16, 16)
        with torch.no_grad():
            assert 0.7 < float(m(x, torch.randn(64, 16)).std()) < 1.3


def test_fir_resampling() -> None:
    x = torch.randn(2, 3, 8, 8)
    # Reference: zero insertion, then the 4x4 [1,3,3,1] filter with gain 4, zero padding.
    z = torch.zeros(2, 3, 16, 16)
    z[:, :, ::2, ::2] = x
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k2 = torch.outer(k, k) / 64 * 4
    ref = F.conv2d(F.pad(z, (2, 1, 2, 1)), k2.expand(3, 1, 4, 4), groups=3)
    up = upsample2d(x)
    assert up.shape == (2, 3, 16, 16)
    torch.testing.assert_close(up[:, :, 1:-1, 1:-1], ref[:, :, 1:-1, 1:-1], atol=1e-5, rtol=1e-5)
    # Blur: preserves constants away from the border, size S -> S-1, gain as asked.
    b = fir_blur(torch.full((1, 2, 8, 8), 3.0))
    assert b.shape == (1, 2, 7, 7)
    torch.testing.assert_close(b[:, :, 1:-1, 1:-1], torch.full((1, 2, 5, 5), 3.0))
    torch.testing.assert_close(fir_blur(torch.ones(1, 1, 6, 6), gain=4.0)[0, 0, 2, 2], torch.tensor(4.0))
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    # Output m is centred at input m + 1/2: a ramp maps to m + 0.5 (interior).
    assert fir_blur(ramp)[0, 0, 3, 3].item() == pytest.approx(3.5)


def test_up_and_down_layers_keep_alignment() -> None:
    # A fresh generator's upsampling conv and the discriminator's downsampling conv keep the
    # spatial layout: a blob's centre of mass stays at the same relative position.
    from gandl_core.gan.stylegan2 import EqualizedConv2d

    down = EqualizedConv2d(1, 1, 3, bias=False, down=True)
    down.weight.data.zero_()
    down.weight.data[0, 0, 1, 1] = 3.0  # identity tap (weight gain 1/3)
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 4:8, 10:14] = 1.0  # centre (5.5, 11.5); output j covers inputs 2j, 2j+1 -> (2.5, 5.5)
    y = down(x)[0, 0]
    assert y.shape == (8, 8)
    grid = torch.arange(8.0)
    cy = float((y.sum(1) * grid).sum() / y.sum())
    cx = float((y.sum(0) * grid).sum() / y.sum())
    assert cy == pytest.approx(2.5, abs=0.05) and cx == pytest.approx(5.5, abs=0.05)
    # Upsampling: input pixel p covers output pixels 2p, 2p+1 (centre 2p + 0.5); mass x4 preserved.
    up = ModulatedConv2d(1, 1, 3, 4, up=True, demodulate=False)
    up.affine.weight.data.zero_()  # style = bias = 1
    up.weight.data.zero_()
    up.weight.data[0, 0, 1, 1] = 3.0
    small = torch.zeros(1, 1, 8, 8)
    small[0, 0, 2, 5] = 1.0
    big = up(small, torch.zeros(1, 4))[0, 0].detach()
    assert big.shape == (16, 16)
    grid = torch.arange(16.0)
    assert float((big.sum(1) * grid).sum() / big.sum()) == pytest.approx(4.5, abs=1e-4)
    assert float((big.sum(0) * grid).sum() / big.sum()) == pytest.approx(10.5, abs=1e-4)
    assert float(big.sum()) == pytest.approx(4.0, rel=1e-5)


def test_generator_bad_latent_shape() -> None:
    G = Generator(8, 1, **GTINY)
    with pytest.raises(ValueError, match=r"\[N, 32\]"):
        G(torch.randn(2, 16))
    with pytest.raises(ValueError, match="ws"):
        G.synthesis(torch.randn(2, 3, 32))


def test_channels_last_gives_same_outputs() -> None:
    G = Generator(16, 5, **GTINY).eval()
    D = Discriminator(16, 5, **TINY).eval()
    z = torch.randn(4, 32)
    with torch.no_grad():
        img = G(z, noise_mode="const")
        f = D.features(img)
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
        img_cl = G(z, noise_mode="const")
        f_cl = D.features(img.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(img_cl, img, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(f_cl, f, atol=1e-4, rtol=1e-4)


def test_benchmark_script_runs_tiny_config(tmp_path) -> None:
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # Analytic FLOPs of one conv: 2 * N * Cout * H * W * Cin * k * k.
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    assert bench.count_flops(lambda: F.conv2d(x, w, padding=1)) == 2 * 2 * 4 * 8 * 8 * 3 * 9
    out = tmp_path / "b.json"
    args = ["--resolution", "8", "--channels", "2", "--batch", "4", "--channel-base", "32", "--channel-max", "8",
            "--z-dim", "16", "--matmul-sizes", "64", "--repeats", "1", "--threads", "1", "--with-reg",
            "--augment-p", "0.5", "--json", str(out)]
    assert bench.main(args) == 0
    r = json.loads(out.read_text())
    assert r["peak_gflops"] > 0
    for key in ("d_forward", "train_step"):
        assert r[key]["images_per_s"] > 0 and r[key]["gflop_per_image"] > 0
        assert r[key]["fraction_of_peak"] == pytest.approx(r[key]["gflops"] / r["peak_gflops_used"])
    assert r["peak_gflops_used"] == max(r["peak_gflops"], r["peak_gflops_after"])
    # A training step does more work per image than a D forward pass (G, backward passes).
    assert r["train_step"]["gflop_per_image"] > 3 * r["d_forward"]["gflop_per_image"]


def test_truncation_zero_collapses_to_mean_image_and_odd_training_batches() -> None:
    G = Generator(16, 3, **GTINY)
    G.train()
    G.mapping(torch.randn(32, 32))  # a non-zero w_avg
    G.eval()
    with torch.no_grad():
        imgs = G(torch.randn(5, 32), truncation_psi=0.0, noise_mode="const")
        free = G(torch.randn(5, 32), noise_mode="const")
    assert torch.allclose(imgs, imgs[:1].expand_as(imgs), atol=1e-5)
    assert not torch.allclose(free, free[:1].expand_as(free), atol=1e-3)
    # Training-mode D works for any batch size (mbstd group shrinks to a divisor).
    D = Discriminator(16, 3, mbstd_group=4, **TINY).train()
    for n in (1, 3, 6, 7):
        out = D(torch.randn(n, 3, 16, 16))
        assert out.shape == (n, 1) and torch.isfinite(out).all()


def test_mapped_input_gives_each_sample_its_own_coarse_layout() -> None:
    """g_input="mapped": the 4x4 input depends on w, so two latents start from different layouts;
    with StyleGAN2's constant the 4x4 input is the same for every sample (only rescaled by styles)."""
    from gandl_core.checkpoint import build_generator

    torch.manual_seed(0)
    const = Generator(16, 3, z_dim=16, w_dim=16, channel_base=256, channel_max=32)
    mapped = Generator(16, 3, z_dim=16, w_dim=16, channel_base=256, channel_max=32, input_mode="mapped")
    assert mapped.synthesis.input_map is not None and const.synthesis.input_map is None
    ws = mapped.styles(torch.randn(2, 16))
    seen = {}
    mapped.synthesis.conv4.register_forward_hook(lambda m, args, out: seen.setdefault("x4", args[0]))
    img = mapped.synthesis(ws, noise_mode="const")
    assert img.shape == (2, 3, 16, 16)
    x4 = seen["x4"]
    # per-sample spatial pattern: normalise each channel map, then compare the two samples
    pat = (x4 - x4.mean(dim=(2, 3), keepdim=True)) / x4.std(dim=(2, 3), keepdim=True)
    assert (pat[0] - pat[1]).abs().mean() > 0.3
    # StyleGAN2's constant: the same 4x4 input for both samples
    const.synthesis.conv4.register_forward_hook(lambda m, args, out: seen.setdefault("c4", args[0]))
    const.synthesis(const.styles(torch.randn(2, 16)), noise_mode="const")
    assert torch.equal(seen["c4"][0], seen["c4"][1])
    # checkpoints record it; configs written before the option existed build the StyleGAN2 constant
    cfg = dict(resolution=16, channels=3, z_dim=16, w_dim=16, channel_base=256, channel_max=32)
    assert build_generator({**cfg, "g_input": "mapped"}).synthesis.input_mode == "mapped"
    assert build_generator(cfg).synthesis.input_mode == "const"
    with pytest.raises(ConfigError, match="g_input"):
        Generator(16, 3, input_mode="noise")
