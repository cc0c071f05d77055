"""Adaptive discriminator augmentation (ADA) for multichannel microscopy images.

Follows the idea of Karras et al. 2020, "Training Generative Adversarial Networks with Limited
Data": every image the discriminator sees (reals *and* fakes) goes through the same random
augmentations, each applied per sample with probability ``p``, and ``p`` is tuned on the fly so
that the overfitting heuristic ``r_t = E[sign(D(real))]`` stays near a target (0.6).

The transformations are chosen for fluorescence microscopy, where the "right way up" does not
exist and each stain has its own intensity scale:

* **dihedral** -- x-flip and rotation by a multiple of 90 degrees (together the 8 symmetries of
  the square, uniformly at p = 1). Pixel values are only permuted, so per-channel histograms are
  untouched.
* **integer translation** -- shift by up to ``translate`` x the image size, filling with the
  reflection of the image (``"reflect"``) or zeros (``"zero"``).
* **isotropic scaling** -- zoom by ``2**N(0, scale_std)`` (bilinear resampling, reflected borders).
* **per-channel brightness and contrast** -- each channel gets its own offset ``N(0, brightness_std)``
  and its own contrast factor ``2**N(0, contrast_std)`` about its mean: stains vary independently.

All operations are differentiable with respect to the images (gradients reach the generator)
and vectorised over the batch (no per-sample Python loops). Images are [N, C, H, W], any C >= 1;
rotations need square images.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError

__all__ = ["augment", "AdaptiveAugment", "PADDING_MODES"]

PADDING_MODES = ("reflect", "zero")


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"augment expects images [N, C, H, W], got shape {list(images.shape)}")


# Random draws: with a (CPU) torch.Generator on the CPU, so it gives the same numbers on any device;
# without one on the images' device, so a GPU step never waits for a host-to-device copy.
def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    if generator is None:
        return torch.rand(shape, device=like.device).to(like.dtype)
    return torch.rand(shape, generator=generator).to(like.device, like.dtype)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, device=like.device).to(like.dtype)
    return torch.randn(shape, generator=generator).to(like.device, like.dtype)


def _draw(fn, shape: tuple[int, ...], generator: torch.Generator | None, device, **kw) -> torch.Tensor:
    if generator is None:
        return fn(*shape, device=device, **kw) if fn is torch.randint else fn(shape, device=device, **kw)
    out = fn(*shape, generator=generator, **kw) if fn is torch.randint else fn(shape, generator=generator, **kw)
    return out.to(device)


def _select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def _reflect_index(idx: torch.Tensor, size: int) -> torch.Tensor:
    # Mirror about the edge samples (numpy 'reflect'); repeat until inside for large shifts.
    period = 2 * (size - 1)
    if period == 0:
        return torch.zeros_like(idx)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= size, period - idx, idx)


def _translate(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, padding: str) -> torch.Tensor:
    """Shift each sample by integer (dx, dy) pixels: output[y, x] = input[y - dy, x - dx]."""
    n, c, h, w = images.shape
    dev = images.device
    rows = torch.arange(h, device=dev)[None, :] - dy[:, None]  # [N, H]
    cols = torch.arange(w, device=dev)[None, :] - dx[:, None]  # [N, W]
    if padding == "reflect":
        rows_i, cols_i = _reflect_index(rows, h), _reflect_index(cols, w)
    else:
        rows_i, cols_i = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    out = images.gather(2, rows_i[:, None, :, None].expand(n, c, h, w))
    out = out.gather(3, cols_i[:, None, None, :].expand(n, c, h, w))
    if padding == "zero":
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        out = out * inside[:, None].to(out.dtype)
    return out


def augment(
    images: torch.Tensor,
    p: float,
    *,
    xflip: bool = True,
    rotate90: bool = True,
    translate: float = 0.125,
    padding: str = "reflect",
    scale_std: float = 0.2,
    brightness_std: float = 0.2,
    contrast_std: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the ADA transformations, each to each sample independently with probability ``p``.

    Parameters
    ----------
    images
        Batch [N, C, H, W] (any C), usually normalized to about [-1, 1].
    p
        Probability in [0, 1] of applying each transformation to each sample. ``p = 0`` returns
        ``images`` unchanged (the same tensor). A 0-dim tensor (ADA's adaptive ``p``, on the images'
        device) is used without reading it: every op then runs and keeps the unchosen samples as
        they are, so ``p = 0`` gives the same values.
    xflip, rotate90
        Enable the dihedral symmetries (x-flip; rotation by 90, 180 or 270 degrees).
    translate
        Maximum integer shift as a fraction of the image size (0 disables).
    padding
        Fill for translated-in pixels: ``"reflect"`` or ``"zero"``.
    scale_std
        Standard deviation of log2 of the isotropic zoom factor (0 disables).
    brightness_std
        Standard deviation of the per-channel additive offset (0 disables).
    contrast_std
        Standard deviation of log2 of the per-channel contrast factor (0 disables).
    generator
        Optional CPU torch.Generator for reproducible draws.

    Returns
    -------
    Augmented batch, same shape and dtype, differentiable with respect to ``images``.

    Raises
    ------
    ConfigError
        For p outside [0, 1], negative strengths or an unknown padding mode.
    """
    _check_images(images)
    adaptive = isinstance(p, torch.Tensor)  # ADA's p lives on the device: no host sync to read it
    _check_options(0.0 if adaptive else p, translate, padding, scale_std, brightness_std, contrast_std)
    if not adaptive and p == 0:
        return images
    n, c, h, w = images.shape
    x = images
    dev = x.device

    def chosen() -> torch.Tensor:
        return _draw(torch.rand, (n,), generator, dev) < p

    # When a dihedral op is applied, it draws uniformly from its whole group *including* the
    # identity (as in ADA): at p = 1 the 8 symmetries are then equally likely, so the augmented
    # distribution never favours one orientation and the augmentation does not "leak" into G.
    # Every op runs on the whole batch and keeps each sample's original where it is not chosen
    # (torch.where): no data-dependent branch, so the step never waits to read a tensor.
    if xflip:
        flip = chosen() & (_draw(torch.rand, (n,), generator, dev) < 0.5)
        x = _select(flip, x.flip(3), x)
    if rotate90:
        if h != w:
            raise ValueError(f"rotate90 needs square images, got {h}x{w}; pass rotate90=False")
        apply = chosen()
        k = _draw(torch.randint, (0, 4, (n,)), generator, dev)
        k = torch.where(apply, k, torch.zeros_like(k))
        out = x
        for quarter in (1, 2, 3):
            out = _select(k == quarter, torch.rot90(x, quarter, dims=(2, 3)), out)
        x = out
    if translate > 0:
        apply = chosen()
        # Uniform integer shifts in [-translate*size, translate*size].
        dx = torch.round((_draw(torch.rand, (n,), generator, dev) * 2 - 1) * translate * w).long()
        dy = torch.round((_draw(torch.rand, (n,), generator, dev) * 2 - 1) * translate * h).long()
        dx = torch.where(apply, dx, torch.zeros_like(dx))
        dy = torch.where(apply, dy, torch.zeros_like(dy))
        x = _translate(x, dx, dy, padding)
    if scale_std > 0:
        apply = chosen()
        x = _select(apply, _zoom(x, torch.exp2(_draw(torch.randn, (n,), generator, dev) * scale_std)), x)
    if brightness_std > 0:
        apply = chosen().to(x.dtype)
        b = _randn((n, c), generator, x) * brightness_std * apply[:, None]
        x = x + b[:, :, None, None]
    if contrast_std > 0:
        apply = chosen()
        f = torch.exp2(_randn((n, c), generator, x) * contrast_std)
        mean = x.mean(dim=(2, 3), keepdim=True)
        x = _select(apply, mean + (x - mean) * f[:, :, None, None], x)
    return x


def _zoom(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Zoom each sample by its factor ``s`` [N] about the centre (bilinear, reflected borders)."""
    n, c, h, w = x.shape
    s = s.to(x.dtype)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = 1.0 / s  # output pixel at u samples input at u/s: zoom by s
    theta[:, 1, 1] = 1.0 / s
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _check_options(p: float, translate: float, padding: str, scale_std: float, brightness_std: float,
                   contrast_std: float) -> None:
    if not (0.0 <= float(p) <= 1.0):
        raise ConfigError(f"augmentation probability p = {p!r} must be in [0, 1].")
    if not (0.0 <= translate <= 0.5):
        raise ConfigError(f"option 'augment_translate' = {translate!r} must be in [0, 0.5] (fraction of the size).")
    if padding not in PADDING_MODES:
        raise ConfigError(f"option 'augment_padding' = {padding!r}: use one of {', '.join(PADDING_MODES)}.")
    for name, value in (("augment_scale_std", scale_std), ("augment_brightness_std", brightness_std),
                        ("augment_contrast_std", contrast_std)):
        if value < 0 or not math.isfinite(value):
            raise ConfigError(f"option '{name}' = {value!r} must be a finite number >= 0 (0 disables it).")


class AdaptiveAugment:
    """ADA controller: augments batches with probability ``p`` and tunes ``p`` from D's outputs.

    Call :meth:`update` with D's scores on each (augmented) real batch. Every ``interval`` calls it
    computes ``r_t = E[sign(D(real))]`` over those batches and moves ``p`` by
    ``sign(r_t - target) * images / (speed_kimg * 1000)`` (clamped to [0, 1]): so ``p`` could go from
    0 to 1 in ``speed_kimg`` thousand real images, whatever the batch size. ``r_t`` near 1 means D
    is confidently right about every real -- it is memorising them -- and more augmentation helps.

    Parameters
    ----------
    p
        Initial probability (0 at the start of training; restored from checkpoints).
    target
        Target value of r_t (0.6 in the ADA paper). ``None`` keeps ``p`` fixed.
    speed_kimg
        Thousands of images for a full 0 -> 1 sweep of p (500 in the paper).
    interval
        Number of batches between adjustments (4 in the paper).
    **ops
        Transformation settings passed to :func:`augment` (``xflip``, ``rotate90``, ``translate``,
        ``padding``, ``scale_std``, ``brightness_std``, ``contrast_std``).

    Raises
    ------
    ConfigError
        For out-of-range settings, naming the option.
    """

    def __init__(
        self,
        p: float = 0.0,
        *,
        target: float | None = 0.6,
        speed_kimg: float = 500.0,
        interval: int = 4,
        **ops: Any,
    ) -> None:
        allowed = {"xflip", "rotate90", "translate", "padding", "scale_std", "brightness_std", "contrast_std"}
        unknown = set(ops) - allowed
        if unknown:
            raise ConfigError(f"unknown augmentation option(s) {sorted(unknown)}; valid: {sorted(allowed)}.")
        if target is not None and not (0.0 <= target <= 1.0):
            raise ConfigError(f"option 'augment_target' = {target!r} must be in [0, 1] (0.6 recommended).")
        if not speed_kimg > 0:
            raise ConfigError(f"option 'augment_speed_kimg' = {speed_kimg!r} must be > 0 (500 recommended).")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"option 'augment_interval' = {interval!r} must be an integer >= 1.")
        defaults = dict(xflip=True, rotate90=True, translate=0.125, padding="reflect", scale_std=0.2,
                        brightness_std=0.2, contrast_std=0.5)
        defaults.update(ops)
        _check_options(p, defaults["translate"], defaults["padding"], defaults["scale_std"],
                       defaults["brightness_std"], defaults["contrast_std"])
        self.ops = defaults
        self.target = target
        self.speed_kimg = float(speed_kimg)
        self.interval = interval
        self._set(float(p), 0.0, 0, 0, None)

    def _set(self, p: float, sign_sum: float, count: int, calls: int, r_t: float | None) -> None:
        # With a target, p and the statistics are tensors that move to the scores' device on first use
        # and are updated there: the training step never waits to read them (see :meth:`accumulate`).
        self._p: float | torch.Tensor = p if self.target is None else torch.tensor(p, dtype=torch.float64)
        self._sign_sum = torch.tensor(float(sign_sum), dtype=torch.float64)
        self._count = torch.tensor(int(count), dtype=torch.int64)
        self._calls = int(calls)
        self._r_t = None if r_t is None else torch.tensor(float(r_t), dtype=torch.float64)

    @property
    def p(self) -> float:
        """The current probability (reading it waits for the device; the step itself never does)."""
        return float(self._p)

    @property
    def r_t(self) -> float | None:
        """The last overfitting estimate E[sign(D(real))], or None before the first adjustment."""
        return None if self._r_t is None else float(self._r_t)

    def __call__(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch [N, C, H, W] with the current ``p`` (see :func:`augment`)."""
        p = self._p
        if isinstance(p, torch.Tensor) and p.device != images.device:
            self._p = p = p.to(images.device)
        return augment(images, p, generator=generator, **self.ops)

    def accumulate(self, real_scores: torch.Tensor) -> None:
        """Record D's scores on a real batch; every ``interval`` calls adjust ``p`` -- all on the
        scores' device, without reading anything back (no host sync in the training step)."""
        if self.target is None:
            return
        s = real_scores.detach().flatten().double()
        valid = ~torch.isnan(s)  # a NaN score must not poison r_t (it compares as neither side)
        dev = s.device
        if self._sign_sum.device != dev:
            self._sign_sum, self._count = self._sign_sum.to(dev), self._count.to(dev)
            self._p = self._p.to(dev)
            self._r_t = None if self._r_t is None else self._r_t.to(dev)
        self._sign_sum = self._sign_sum + torch.where(valid, torch.sign(s), torch.zeros_like(s)).sum()
        self._count = self._count + valid.sum()
        self._calls += 1
        if self._calls >= self.interval:
            seen = self._count > 0
            r_t = self._sign_sum / self._count.clamp(min=1)
            step = self._count.double() / (self.speed_kimg * 1000.0)
            moved = (self._p + torch.sign(r_t - self.target) * step).clamp(0.0, 1.0)
            self._p = torch.where(seen, moved, self._p)
            self._r_t = torch.where(seen, r_t, self._r_t if self._r_t is not None else torch.full_like(r_t, float("nan")))
            self._sign_sum, self._count, self._calls = torch.zeros_like(self._sign_sum), torch.zeros_like(self._count), 0

    def update(self, real_scores: torch.Tensor) -> float:
        """:meth:`accumulate`, then return ``p`` as a number (which waits for the device)."""
        self.accumulate(real_scores)
        return self.p

    def state_dict(self) -> dict:
        """Plain numbers/strings for a checkpoint (``weights_only`` safe)."""
        return {
            "p": self.p,
            "target": self.target,
            "speed_kimg": self.speed_kimg,
            "interval": self.interval,
            "ops": dict(self.ops),
            "sign_sum": float(self._sign_sum),
            "count": int(self._count),
            "calls": self._calls,
            "r_t": self.r_t,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` output (e.g. when resuming training).

        Raises
        ------
        CheckpointError
            If ``state`` lacks ``p``, holds a value outside [0, 1], or unknown or invalid options
            (the object is then left unchanged).
        """
        try:
            p = float(state["p"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                "augmentation state in the checkpoint has no valid 'p'; resume from a checkpoint written by "
                "gandl-core train or start a new run"
            ) from exc
        if not 0.0 <= p <= 1.0:
            raise CheckpointError(f"augmentation state in the checkpoint has p = {p}, outside [0, 1].")
        # Validate everything before assigning anything, so a refused state leaves self unchanged.
        ops = dict(state.get("ops", {}))
        unknown = set(ops) - set(self.ops)
        if unknown:
            raise CheckpointError(
                f"augmentation state in the checkpoint has unknown option(s) {sorted(unknown)}; it was written "
                "by a different version: start a new run or drop the 'augment' entry to keep only p"
            )
        merged = {**self.ops, **ops}
        try:
            _check_options(p, merged["translate"], merged["padding"], merged["scale_std"],
                           merged["brightness_std"], merged["contrast_std"])
        except ConfigError as exc:
            raise CheckpointError(f"augmentation state in the checkpoint is invalid: {exc}") from exc
        self.ops = merged
        self.target = state.get("target", self.target)
        self.speed_kimg = float(state.get("speed_kimg", self.speed_kimg))
        self.interval = int(state.get("interval", self.interval))
        r_t = state.get("r_t")
        self._set(p, float(state.get("sign_sum", 0.0)), int(state.get("count", 0)), int(state.get("calls", 0)),
                  None if r_t is None else float(r_t))
