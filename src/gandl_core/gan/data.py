"""Training data: deterministic batches of keyed crops from a :class:`~gandl_core.plates.PlateDataset`.

The batch of global step ``s`` is items ``[s*B, (s+1)*B)`` of the concatenated per-epoch
permutations of the sites, each paired with a crop key: a pure function of (seed, step), so a
resumed run sees exactly the crops the uninterrupted run would have seen, whichever process or
worker reads them.

Speed: when the plate's decoded fields fit the memory budget (``TrainConfig.cache_gib``), they
are read once before the first step (a thread pool) and every crop afterwards is a slice in memory;
otherwise they are decoded per crop, in ``workers`` DataLoader processes.
"""

from __future__ import annotations

import os
import time
from typing import Generator, Iterator

import numpy as np

__all__ = ["StepBatches", "crop_dataset", "cache_fields", "make_loader", "quality_reals", "QUALITY_SAMPLES"]

# Images in each SWD measurement. The metric's floor is the SWD between two draws of reals: 0.085 with 64
# images, 0.059 with 256 (sd 0.004 over 4 pairs; demo screen, 32 px), so 256 resolves fakes closer to the reals.
QUALITY_SAMPLES = 256


class StepBatches:
    """Batch sampler: for global step s, items [s*B, (s+1)*B) of the concatenated per-epoch
    permutations, keeping this rank's share. A pure function of (seed, step): resumable."""

    def __init__(self, n: int, batch: int, seed: int, start_step: int, rank: int, world: int) -> None:
        self.n, self.batch, self.seed, self.start = n, batch, seed, start_step
        self.rank, self.world = rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch, 11]).permutation(self.n)}
        return self._perms[epoch]

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        pos = np.arange(step * self.batch, (step + 1) * self.batch)
        items = [(int(self._perm(int(p // self.n))[p % self.n]), int(self.seed * 1_000_003 + p)) for p in pos]
        per = self.batch // self.world
        return items[self.rank * per:(self.rank + 1) * per]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while True:
            yield self.batch_at(step)
            step += 1


def crop_dataset(index, normalizer, config):
    """The plate as training crops: ``ds[(site, key)]`` is a ``config.resolution`` crop (or the whole
    field shrunk to it with ``crop_mode='resize'``), with a cache of ``config.cache_gib``."""
    from ..plates import PlateDataset

    mode = "resize" if config.crop_mode == "resize" else "random_crop"
    return PlateDataset(index, normalizer, config.resolution, mode=mode, seed=config.seed, scale=config.field_scale,
                        cache_bytes=int(config.cache_gib * 2**30))


def cache_fields(dataset, workers: int = 0) -> Generator[str, None, str]:
    """Fill ``dataset``'s cache, yielding a line if it takes long (>2 s so far); returns the summary line.

    With DataLoader ``workers`` the cache is filled only if the whole plate fits (a partial cache
    would stay in this process while the workers decode anyway)."""
    if dataset.cache_bytes <= 0:
        return "no field cache (cache_gib 0): every crop decodes its field"
    threads = max(1, min(8, os.cpu_count() or 1))
    t0 = time.time()
    said = False
    for _ in dataset.fill_cache(threads=threads, partial=workers == 0):
        if not said and time.time() - t0 > 2.0:
            said = True
            yield f"reading {len(dataset)} fields into memory (cache budget {dataset.cache_bytes / 2**30:.3g} GiB)..."
    mib = dataset.cached_bytes / 2**20
    if workers and dataset.cached < len(dataset):
        return (f"the plate's fields exceed the cache budget ({dataset.cache_bytes / 2**30:.3g} GiB): they are "
                f"decoded per crop in {workers} worker processes")
    if dataset.cached == len(dataset):
        return f"cached all {len(dataset)} fields in memory ({mib:.0f} MiB) in {time.time() - t0:.1f} s"
    return (f"cached {dataset.cached} of {len(dataset)} fields ({mib:.0f} MiB, the cache budget): the rest are "
            "decoded per crop; raise cache_gib (--cache-gib) to hold them all")


def make_loader(dataset, config, start_step: int, rank: int, world: int, pin: bool):
    """An endless iterator of this rank's batches from ``start_step`` on. Fully cached plates are
    cropped in this process (a crop is a slice); others are decoded in ``config.workers`` processes."""
    import torch

    workers = 0 if dataset.cached == len(dataset) else config.workers
    sampler = StepBatches(len(dataset), config.batch, config.seed, start_step, rank, world)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         generator=torch.Generator().manual_seed(config.seed),
                                         persistent_workers=False, pin_memory=pin)
    return iter(loader)


def quality_reals(dataset, config, n: int = QUALITY_SAMPLES):
    """``n`` fixed real crops (seeded): the reference set of every SWD point of a run."""
    import torch

    rng = np.random.default_rng(config.seed + 99)
    idx = rng.integers(0, len(dataset), n)
    return torch.stack([dataset[(int(i), int(config.seed * 7 + j))] for j, i in enumerate(idx)]).float()
