"""Training-quality signal without any downloaded network: sliced Wasserstein distance (SWD).

Following Karras et al. 2018 (progressive GANs, sec. 5), real and generated images are split into
Laplacian-pyramid levels; at each level random 7x7 patches (all channels) are normalised per channel
and compared with the sliced Wasserstein distance: the mean, over random unit directions, of the 1-D
Wasserstein distance between the projected patch sets (sorted projections, L1). Lower is better; it
falls as the generator learns the cells' fine structure (finest level) and layout (coarser levels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels of ``images`` [N,C,H,W], finest first; the last level is the low-pass residual."""
    out, cur = [], images
    for _ in range(levels - 1):
        if min(cur.shape[-2:]) < 8:
            break
        down = F.avg_pool2d(cur, 2)
        up = F.interpolate(down, scale_factor=2, mode="bilinear", align_corners=False)
        out.append(cur - up)
        cur = down
    out.append(cur)
    return out


def _patches(level: torch.Tensor, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    N, C, H, W = level.shape
    size = min(size, H, W)
    img = torch.randint(0, N, (n,), generator=gen)
    ys = torch.randint(0, H - size + 1, (n,), generator=gen)
    xs = torch.randint(0, W - size + 1, (n,), generator=gen)
    dy = torch.arange(size)
    rows = (ys[:, None] + dy[None]).long()  # [n, size]
    cols = (xs[:, None] + dy[None]).long()
    p = level[img[:, None, None, None], torch.arange(C)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
    return p  # [n, C, size, size]


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, *, n_proj: int = 256, gen: torch.Generator) -> float:
    """SWD between two point sets [n, d] (same n): mean over random directions of the 1-D distance."""
    d = a.shape[1]
    dirs = torch.randn(d, n_proj, generator=gen)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ dirs, dim=0)
    pb, _ = torch.sort(b @ dirs, dim=0)
    return float((pa - pb).abs().mean())


def swd(real: torch.Tensor, fake: torch.Tensor, *, levels: int = 3, patches_per_level: int = 4096,
        patch: int = 7, n_proj: int = 256, seed: int = 0) -> list[float]:
    """SWD per Laplacian level (finest first) between two image sets [N,C,H,W], in patch-sd units.

    Patches are normalised with the mean/std of each channel over both sets at that level, so the
    number compares structure, not brightness offsets alone.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {list(real.shape)} and fake {list(fake.shape)} image sets differ in shape")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for lr, lf in zip(laplacian_pyramid(real.float(), levels), laplacian_pyramid(fake.float(), levels)):
        # Same patch positions in both sets (same seed state): sampling noise cancels, SWD(x, x) = 0.
        state = gen.get_state()
        pr = _patches(lr, patches_per_level, patch, gen)
        gen.set_state(state)
        pf = _patches(lf, patches_per_level, patch, gen)
        both = torch.cat([pr, pf])
        mu = both.mean(dim=(0, 2, 3), keepdim=True)
        sd = both.std(dim=(0, 2, 3), keepdim=True) + 1e-8
        pr, pf = ((pr - mu) / sd).flatten(1), ((pf - mu) / sd).flatten(1)
        out.append(sliced_wasserstein(pr, pf, n_proj=n_proj, gen=gen))
    return out
