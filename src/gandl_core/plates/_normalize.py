"""Per-channel robust intensity scaling fitted on a sample of sites."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError

MAX_PIXELS_PER_SITE = 1 << 16  # per channel; bounds memory on 1024^2 fields, plenty for 99.9th pct


class IntensityNormalizer:
    """Map each channel's [low, high] percentile to [-1, 1] and clip.

    Parameters
    ----------
    low, high
        Percentiles (0..100) of the pooled pixel values of each channel that map to -1 and +1.
        The defaults 0.1 / 99.9 ignore a few hot or dead pixels.
    gamma
        Power applied to the [0, 1]-scaled intensities before mapping to [-1, 1]: 1 = linear;
        0.5 (square root) lifts dim structure (cytoplasm, ER) off the background, the usual display
        stretch for fluorescence, where most pixels are background near -1 on a linear scale.

    Attributes (after ``fit``)
    --------------------------
    lo_, hi_ : numpy.ndarray
        float64 [C] raw intensities mapped to -1 and +1.
    channels_ : list[str]
        Channel names, in order; ``transform`` refuses images with another channel count.
    """

    def __init__(self, low: float = 0.1, high: float = 99.9, gamma: float = 1.0) -> None:
        if not 0.0 <= float(low) < float(high) <= 100.0:
            raise ConfigError(f"IntensityNormalizer(low={low}, high={high}): need 0 <= low < high <= 100.")
        if not 0.0 < float(gamma) <= 4.0:
            raise ConfigError(f"IntensityNormalizer(gamma={gamma}): need 0 < gamma <= 4 (1 = linear, 0.5 = sqrt).")
        self.low = float(low)
        self.high = float(high)
        self.gamma = float(gamma)
        self.lo_: np.ndarray | None = None
        self.hi_: np.ndarray | None = None
        self.channels_: list[str] | None = None
        self.n_sites_: int = 0

    # Aliases used by other modules (featurizers read .channels; loaders may set .lo/.hi).
    @property
    def channels(self) -> list[str] | None:
        return self.channels_

    @channels.setter
    def channels(self, value: Sequence[str] | None) -> None:
        self.channels_ = None if value is None else [str(c) for c in value]

    @property
    def lo(self) -> np.ndarray | None:
        return self.lo_

    @lo.setter
    def lo(self, value: Sequence[float]) -> None:
        self.lo_ = np.asarray(value, dtype=np.float64).reshape(-1)

    @property
    def hi(self) -> np.ndarray | None:
        return self.hi_

    @hi.setter
    def hi(self, value: Sequence[float]) -> None:
        self.hi_ = np.asarray(value, dtype=np.float64).reshape(-1)

    def fit(self, index: pd.DataFrame | np.ndarray, n_sites: int = 64, seed: int = 0,
            channels: Sequence[str] | None = None) -> "IntensityNormalizer":
        """Fit per-channel percentiles on a random sample of sites.

        Parameters
        ----------
        index
            A site index (``build_index``), or an array of images [N,C,H,W] (raw intensities).
        n_sites
            How many sites to sample (all if fewer). Each contributes at most 65536 random pixels
            per channel, so memory stays small on big fields.
        seed
            Seed of the site and pixel sampling (same seed, same result).
        channels
            Channel names when ``index`` is an array (default ``c1..cC``).

        Returns
        -------
        IntensityNormalizer
            ``self``, fitted.

        Raises
        ------
        DataError
            Empty index, or a sampled site cannot be read (message names the file).
        """
        from ._images import read_site
        from ._index import channel_names

        rng = np.random.default_rng(seed)
        if isinstance(index, np.ndarray):
            if index.ndim != 4 or len(index) == 0:
                raise DataError(f"IntensityNormalizer.fit: images must be [N,C,H,W] with N >= 1, got {index.shape}.")
            images = list(index)
            names = list(channels) if channels is not None else [f"c{k + 1}" for k in range(index.shape[1])]
        else:
            if len(index) == 0:
                raise DataError("IntensityNormalizer.fit: the index has no sites.")
            picks = np.sort(rng.choice(len(index), size=min(int(n_sites), len(index)), replace=False))
            names = channel_names(index)
            images = (read_site(index.iloc[int(i)]) for i in picks)
        samples: list[np.ndarray] = []
        n = 0
        for img in images:
            flat = np.asarray(img, dtype=np.float32).reshape(img.shape[0], -1)
            if flat.shape[1] > MAX_PIXELS_PER_SITE:
                # with replacement: O(k) instead of a full permutation of a megapixel field
                flat = flat[:, rng.integers(0, flat.shape[1], MAX_PIXELS_PER_SITE)]
            samples.append(flat)
            n += 1
        counts = {s.shape[0] for s in samples}
        if len(counts) != 1 or counts.pop() != len(names):
            raise DataError(f"IntensityNormalizer.fit: sites have {sorted({s.shape[0] for s in samples})} "
                            f"channels but the index names {len(names)}.")
        pooled = np.concatenate(samples, axis=1).astype(np.float64)
        lo = np.percentile(pooled, self.low, axis=1)
        hi = np.percentile(pooled, self.high, axis=1)
        # A constant channel (e.g. empty stain) would divide by zero: give it a unit range.
        hi = np.where(hi > lo, hi, lo + 1.0)
        self.lo_, self.hi_, self.channels_, self.n_sites_ = lo, hi, list(names), n
        return self

    def _check(self) -> None:
        if self.lo_ is None or self.hi_ is None:
            raise ConfigError("IntensityNormalizer is not fitted: call .fit(index) or load one with from_dict.")

    def transform(self, img: Any) -> Any:
        """Scale raw intensities to about [-1, 1] and clip.

        Parameters
        ----------
        img
            numpy array or torch tensor [C,H,W] or [N,C,H,W] of raw intensities.

        Returns
        -------
        float32 array/tensor of the same shape (same type as the input).

        Raises
        ------
        DataError
            If the channel count differs from the fitted channels (the message names them).
        """
        self._check()
        if img.ndim not in (3, 4):
            raise DataError(f"IntensityNormalizer.transform: expected [C,H,W] or [N,C,H,W], got shape {tuple(img.shape)}.")
        c = img.shape[-3]
        if c != len(self.lo_):
            raise DataError(f"IntensityNormalizer.transform: image has {c} channels but the normalizer "
                            f"was fitted on {len(self.lo_)} ({self.channels_}). Use the normalizer fitted "
                            "on this plate's channels, or select the same channels.")
        shape = (-1, 1, 1)
        lo = self.lo_.astype(np.float32).reshape(shape)
        scale = (2.0 / (self.hi_ - self.lo_)).astype(np.float32).reshape(shape)
        g = self.gamma
        if isinstance(img, np.ndarray):
            out = np.clip((img.astype(np.float32, copy=False) - lo) * scale - 1.0, -1.0, 1.0).astype(np.float32)
            if g != 1.0:
                out = (np.power((out + 1.0) * 0.5, g, dtype=np.float32) * 2.0 - 1.0).astype(np.float32)
            return out
        import torch

        lo_t = torch.as_tensor(lo, device=img.device)
        sc_t = torch.as_tensor(scale, device=img.device)
        out = ((img.float() - lo_t) * sc_t - 1.0).clamp_(-1.0, 1.0)
        if g != 1.0:
            out = ((out + 1.0) * 0.5).pow_(g).mul_(2.0).sub_(1.0)
        return out

    def inverse(self, img: np.ndarray) -> np.ndarray:
        """Map normalized values back to raw intensities (clipped values stay at the bounds)."""
        self._check()
        shape = (-1, 1, 1)
        u = (np.asarray(img, dtype=np.float64) + 1.0) / 2.0
        if self.gamma != 1.0:  # the power is only defined on [0, 1]
            u = np.clip(u, 0.0, 1.0) ** (1.0 / self.gamma)
        return (u * (self.hi_ - self.lo_).reshape(shape) + self.lo_.reshape(shape)).astype(np.float32)

    def to_dict(self) -> dict:
        """Plain JSON/torch-safe dict (floats, lists, strings) that :meth:`from_dict` restores exactly."""
        self._check()
        return {"kind": "percentile", "low": self.low, "high": self.high, "gamma": self.gamma,
                "lo": [float(v) for v in self.lo_], "hi": [float(v) for v in self.hi_],
                "channels": list(self.channels_ or [f"c{k + 1}" for k in range(len(self.lo_))]),
                "n_sites": int(self.n_sites_)}

    @classmethod
    def from_dict(cls, d: dict) -> "IntensityNormalizer":
        """Rebuild a fitted normalizer from :meth:`to_dict` output.

        Raises
        ------
        ConfigError
            If a key is missing or the lists disagree in length.
        """
        missing = [k for k in ("low", "high", "lo", "hi", "channels") if k not in d]
        if missing:
            raise ConfigError(f"normalizer dict lacks key(s) {missing}; it must come from IntensityNormalizer.to_dict().")
        if not len(d["lo"]) == len(d["hi"]) == len(d["channels"]):
            raise ConfigError(f"normalizer dict: lo ({len(d['lo'])}), hi ({len(d['hi'])}) and channels "
                              f"({len(d['channels'])}) must have one entry per channel.")
        self = cls(d["low"], d["high"], d.get("gamma", 1.0))  # dicts from before gamma: linear
        self.lo_ = np.asarray(d["lo"], dtype=np.float64)
        self.hi_ = np.asarray(d["hi"], dtype=np.float64)
        self.channels_ = [str(c) for c in d["channels"]]
        self.n_sites_ = int(d.get("n_sites", 0))
        return self

    def __repr__(self) -> str:
        fitted = f", channels={self.channels_}" if self.channels_ is not None else " (not fitted)"
        return f"IntensityNormalizer(low={self.low}, high={self.high}{fitted})"
