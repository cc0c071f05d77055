"""SWD training-quality metric: zero on identical sets, grows with a distribution shift."""

from __future__ import annotations

import pytest
import torch

from gandl_core.gan.quality import laplacian_pyramid, swd


def _blobs(n: int, seed: int, sigma: float = 2.0, size: int = 32, channels: int = 3) -> torch.Tensor:
    """Gaussian 'cells' at random places: a stand-in for nuclei."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    out = torch.zeros(n, channels, size, size)
    for i in range(n):
        for _ in range(4):
            cy, cx = torch.rand(2, generator=g) * size
            out[i] += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    return out * 2 - 1


def test_pyramid_levels_reconstruct():
    x = torch.randn(2, 3, 32, 32)
    lv = laplacian_pyramid(x, 3)
    assert [t.shape[-1] for t in lv] == [32, 16, 8]
    # band-pass + upsampled residual gives back the image
    rec = lv[-1]
    for band in reversed(lv[:-1]):
        rec = torch.nn.functional.interpolate(rec, scale_factor=2, mode="bilinear", align_corners=False) + band
    torch.testing.assert_close(rec, x, atol=1e-5, rtol=1e-5)


def test_swd_zero_on_same_set_and_grows_with_shift():
    real = _blobs(48, 0)
    same = swd(real, real.clone(), patches_per_level=1024, seed=1)
    assert len(same) == 3 and max(same) < 1e-6
    other_draw = swd(real, _blobs(48, 1), patches_per_level=1024, seed=1)
    blurred = swd(real, _blobs(48, 1, sigma=4.0), patches_per_level=1024, seed=1)
    noise = swd(real, torch.rand_like(real) * 2 - 1, patches_per_level=1024, seed=1)
    m = lambda v: sum(v) / len(v)  # noqa: E731
    # same distribution, other sample: small; a shift in cell size: larger; noise: largest
    assert m(other_draw) < 0.5 * m(blurred), (other_draw, blurred)
    assert m(blurred) < m(noise), (blurred, noise)
    # fine structure is what noise gets wrong most at the finest level
    assert noise[0] > 5 * other_draw[0]


def test_swd_refuses_mismatched_sets():
    with pytest.raises(ValueError, match="differ in shape"):
        swd(torch.zeros(4, 3, 16, 16), torch.zeros(4, 2, 16, 16))
