"""PlateDataset: sites of an index as normalized float32 tensors for training and embedding."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ._images import read_site
from ._index import channel_columns, channel_names
from ._normalize import IntensityNormalizer

MODES = ("random_crop", "resize", "tiles", "full")


class PlateDataset(torch.utils.data.Dataset):
    """Sites of an index as normalized float32 tensors.

    Parameters
    ----------
    index
        Site index from ``build_index`` (its ``Path_`` columns, in order, are the channels).
    normalizer
        A fitted :class:`IntensityNormalizer` with the same channel count (applied at full
        resolution, before any resizing).
    resolution
        Output side in pixels (``None`` only for ``mode="full"``).
    mode
        * ``"random_crop"``: one ``resolution``² crop at a random position (training). The field is
          first downscaled by ``scale`` (area averaging) when ``scale < 1``, so cells keep a size
          that suits the network (e.g. ``scale=0.5`` on 1024² RxRx19a fields). Positions are
          deterministic: the RNG is seeded with (seed, item, epoch), so results do not depend on
          DataLoader workers; call :meth:`set_epoch` each epoch for new crops.
        * ``"resize"``: the whole field resized to ``resolution``² with antialiased area
          interpolation (non-square fields are stretched).
        * ``"tiles"``: [T,C,res,res] tiles covering the whole (``scale``-d) field: ceil(H/res) x
          ceil(W/res) tiles, evenly spaced so that they overlap as little as possible (no overlap
          when the side is a multiple of ``resolution``), row-major order.
        * ``"full"``: the whole normalized field [C,H,W] (downscaled by ``scale`` if < 1).
    seed
        Seed of the random crops.
    scale
        Downscale factor applied before cropping/tiling/full (1 = native resolution).
    cache_bytes
        Memory budget for keeping decoded fields (normalized and scaled, float32): a field read once
        is kept while the budget allows, so later crops of it cost no decoding. 0 = no cache.
        :meth:`fill_cache` reads fields ahead of time. The cache stays in the process that filled
        it: DataLoader workers get the dataset without it.

    Items are float32 tensors; ``ds[i]`` is site ``i``. Training asks for *keyed* crops instead:
    ``ds[(i, key)]`` in ``"random_crop"`` mode is the crop of site ``i`` at a position drawn from
    ``key`` alone (a pure function of the key, whichever worker reads it); in the other modes the key
    is ignored. The dataset keeps only paths (no open files), so it is safe with
    ``DataLoader(num_workers>0)``.

    Raises
    ------
    ConfigError
        Unknown mode, bad resolution or scale, or a normalizer with another channel count.
    DataError
        (on access) a field smaller than ``resolution``, or an unreadable file.
    """

    def __init__(self, index: pd.DataFrame, normalizer: IntensityNormalizer, resolution: int | None,
                 mode: str = "random_crop", seed: int = 0, scale: float = 1.0, cache_bytes: int = 0) -> None:
        if mode not in MODES:
            raise ConfigError(f"PlateDataset mode={mode!r}: choose one of {list(MODES)}.")
        if resolution is None and mode != "full":
            raise ConfigError(f"PlateDataset mode={mode!r} needs a resolution (pixels).")
        if resolution is not None and int(resolution) < 1:
            raise ConfigError(f"PlateDataset resolution={resolution}: must be a positive number of pixels.")
        if not 0.0 < float(scale) <= 1.0:
            raise ConfigError(f"PlateDataset scale={scale}: must be in (0, 1] (a downscale factor).")
        cols = channel_columns(index)
        if not cols:
            raise DataError("PlateDataset: the index has no Path_<Channel> columns; build it with build_index.")
        if getattr(normalizer, "lo", None) is None:
            raise ConfigError("PlateDataset: the normalizer is not fitted; call IntensityNormalizer().fit(index).")
        nc = len(np.asarray(normalizer.lo).reshape(-1))
        if nc != len(cols):
            raise ConfigError(f"PlateDataset: the index has {len(cols)} channels {channel_names(index)} but the "
                              f"normalizer has {nc} ({normalizer.channels}). Select matching channels.")
        # Plain lists of strings: cheap to pickle into workers, no handles.
        self.paths = index[cols].astype(str).values.tolist()
        self.channels = channel_names(index)
        self.normalizer = normalizer
        self.resolution = None if resolution is None else int(resolution)
        self.mode = mode
        self.seed = int(seed)
        self.scale = float(scale)
        self.epoch = 0
        self.cache_bytes = max(0, int(cache_bytes))
        self._cache: dict[int, torch.Tensor] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        # Workers decode for themselves: copying the cache into every worker would multiply its memory.
        state = dict(self.__dict__)
        state["_cache"], state["_cached_bytes"], state["cache_bytes"] = {}, 0, 0
        return state

    @property
    def cached(self) -> int:
        """Number of fields held in memory."""
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        """Bytes of the fields held in memory."""
        return self._cached_bytes

    def fill_cache(self, threads: int = 1, partial: bool = True) -> Iterator[int]:
        """Decode fields into the cache, in site order, until all are held or the budget is spent.

        A generator yielding the number of fields held after each one (for progress reports);
        ``threads`` > 1 decodes with a thread pool (image decoders and numpy release the GIL).
        ``partial=False``: fill only if every field fits (estimated from the first one's size).
        """
        todo = [i for i in range(len(self)) if i not in self._cache]
        if not todo or self.cache_bytes <= 0:
            return
        first = self.field(todo[0])  # its size tells how many fields the budget holds
        yield self.cached
        if self._cached_bytes + first.numel() * first.element_size() > self.cache_bytes:
            return
        room = (self.cache_bytes - self._cached_bytes) // max(1, first.numel() * first.element_size())
        if not partial and room < len(todo):
            return
        todo = todo[1:1 + int(room)]
        if threads <= 1:
            for i in todo:
                self.field(i)
                yield self.cached
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=int(threads)) as pool:
            for x, i in zip(pool.map(self._decode, todo), todo):
                self._keep(i, x)
                yield self.cached

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch that seeds random crops (call before building each epoch's iterator)."""
        self.epoch = int(epoch)

    def field(self, i: int) -> torch.Tensor:
        """Site ``i`` normalized at full resolution (then downscaled by ``scale``) as [C,H,W].

        Served from the cache when held there (treat it as read-only); otherwise decoded, and kept
        when the cache budget allows.
        """
        x = self._cache.get(i)
        if x is None:
            x = self._decode(i)
            self._keep(i, x)
        return x

    def _decode(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(self.normalizer.transform(read_site(self.paths[i])))
        if self.scale < 1.0:
            h, w = x.shape[-2:]
            size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
            x = F.interpolate(x[None], size=size, mode="area")[0]
        return x

    def _keep(self, i: int, x: torch.Tensor) -> None:
        nbytes = x.numel() * x.element_size()
        if i not in self._cache and self._cached_bytes + nbytes <= self.cache_bytes:
            self._cache[i] = x
            self._cached_bytes += nbytes

    def __getitem__(self, item: int | tuple[int, int]) -> torch.Tensor:
        i, key = (item if isinstance(item, tuple) else (item, None))
        if not 0 <= i < len(self):
            raise IndexError(i)
        x = self.field(i)
        if self.mode == "full":
            return x.clone() if i in self._cache else x.contiguous()  # never hand out the cache itself
        r = self.resolution
        h, w = x.shape[-2:]
        if self.mode == "resize":
            # area = exact box averaging when shrinking (antialiased); bilinear when enlarging
            m = "area" if (h >= r and w >= r) else "bilinear"
            kw = {} if m == "area" else {"align_corners": False, "antialias": False}
            return F.interpolate(x[None], size=(r, r), mode=m, **kw)[0].contiguous()
        if h < r or w < r:
            raise DataError(f"site {i} ({self.paths[i][0]}): field {h}x{w} (after scale={self.scale}) is "
                            f"smaller than resolution {r}. Use whole fields (training: --crop-mode resize; "
                            "embedding: --field-mode resize), a smaller resolution (train --resolution) or a "
                            "larger scale (--field-scale).")
        if self.mode == "random_crop":
            rng = np.random.default_rng([self.seed, int(i), self.epoch] if key is None else int(key))
            y0 = int(rng.integers(0, h - r + 1))
            x0 = int(rng.integers(0, w - r + 1))
            return x[:, y0:y0 + r, x0:x0 + r].clone(memory_format=torch.contiguous_format)
        ys, xs = tile_starts(h, r), tile_starts(w, r)
        return torch.stack([x[:, y:y + r, xx:xx + r] for y in ys for xx in xs])


def tile_starts(size: int, tile: int) -> list[int]:
    """Start offsets of ceil(size/tile) tiles of ``tile`` px covering [0, size) with minimal, even overlap."""
    n = max(1, math.ceil(size / tile))
    if n == 1:
        return [0]
    return [round(k * (size - tile) / (n - 1)) for k in range(n)]
