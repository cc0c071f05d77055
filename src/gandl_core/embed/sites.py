"""Sites in, one vector per site out: the dataset the loader reads and the featurizer forward.

:class:`SiteItems` serves one site per item (its tiles, or the error that stopped its reading, as a
value); :func:`forward_sites` runs the featurizer over the tiles of a batch of sites and reduces each
site's tile features to one vector with :func:`pool_tiles`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch


def pool_tiles(tile_features: "torch.Tensor") -> np.ndarray:
    """The tile -> field reduction: a site's vector from its tiles' features ``[T, F]`` (float32).

    The mean over tiles (GAN-DL averages the discriminator's features over tiles covering the field).
    A site given as one resized or whole field has ``T = 1``.
    """
    return tile_features.mean(dim=0).numpy()


def forward_sites(featurizer: Any, tiles: list["torch.Tensor"], chunk: int) -> list[np.ndarray]:
    """One vector per site (:func:`pool_tiles` of its tiles' features); forward in chunks of ``chunk`` tiles.

    Tiles of the same shape are concatenated across sites so one call sees a full batch.
    """
    import torch

    out: list[np.ndarray | None] = [None] * len(tiles)
    by_shape: dict[tuple, list[int]] = {}
    for i, t in enumerate(tiles):
        by_shape.setdefault(tuple(t.shape[1:]), []).append(i)
    for members in by_shape.values():
        stack = torch.cat([tiles[i] for i in members])  # [sum T, C, h, w]
        feats = torch.cat([featurizer(stack[s:s + chunk]) for s in range(0, len(stack), chunk)])
        feats = feats.to(torch.float32).cpu()
        start = 0
        for i in members:
            n = tiles[i].shape[0]
            out[i] = pool_tiles(feats[start:start + n])
            start += n
    return out  # type: ignore[return-value]


class SiteItems:
    """Map-style dataset over selected positions; item = (position, tiles [T,C,h,w] | None, error).

    A failure to read one site is returned as a value, not raised inside the worker, so the main
    process can name the file, keep finished parts, and skip the site when asked to.
    """

    def __init__(self, dataset: Any, index: pd.DataFrame, positions: np.ndarray, path_cols: list[str]):
        self.dataset = dataset
        self.positions = positions
        # Only the paths travel to workers for error messages (strings are cheap to pickle).
        self.paths = index[path_cols].astype(str).to_numpy() if path_cols else None

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        pos = int(self.positions[i])
        try:
            x = self.dataset[pos]
            if x.ndim == 3:
                x = x.unsqueeze(0)
            return pos, x, None
        except Exception as exc:  # noqa: BLE001 - reported with the file named by the caller
            return pos, None, describe_failure(exc, self.paths[pos] if self.paths is not None else [])


def collate(items: list) -> list:
    """Keep a batch as a list: sites may have different tile counts (stacked in the main process)."""
    return items


def describe_failure(exc: BaseException, paths: Sequence[str]) -> str:
    """The error of one site with the file to blame named (from the message, else a missing/empty file)."""
    msg = str(exc) or type(exc).__name__
    files = [p.split("::")[0] for p in paths]
    named = [f for f in files if f and (f in msg or Path(f).name in msg)]
    if not named:
        # Find the culprit ourselves: a missing or empty file, else list them all.
        named = [f for f in files if not Path(f).is_file() or Path(f).stat().st_size == 0][:1] or files
    return f"{type(exc).__name__}: {msg} [file: {', '.join(dict.fromkeys(named))}]"


def site_label(meta: pd.DataFrame, pos: int) -> str:
    """``"P1 B02 site 1"`` for error messages and the skipped-sites list."""
    row = meta.iloc[pos]
    parts = [str(row[c]) for c in ("Metadata_Plate", "Metadata_Well") if c in meta.columns]
    if "Metadata_Site" in meta.columns:
        parts.append(f"site {row['Metadata_Site']}")
    return " ".join(parts) or f"row {pos}"


def make_loader(plan: Any, todo: np.ndarray):
    """DataLoader over the sites ``todo`` of a plan: decoding in ``plan.num_workers`` processes."""
    from torch.utils.data import DataLoader

    from ..plates import PlateDataset

    featurizer = plan.featurizer
    # A network trained on downscaled fields (PlateDataset scale < 1) must embed at that scale.
    scale = float(getattr(featurizer, "scale", 1.0) or 1.0)
    kw = {"scale": scale} if scale != 1.0 else {}
    dataset = PlateDataset(plan.index, plan.normalizer, featurizer.resolution, mode=plan.dataset_mode, **kw)
    items = SiteItems(dataset, plan.index, todo, plan.path_columns)
    pin = str(getattr(featurizer, "device", "cpu")).startswith("cuda")
    return DataLoader(items, batch_size=plan.batch_size, shuffle=False, num_workers=plan.num_workers,
                      collate_fn=collate, pin_memory=pin, prefetch_factor=2 if plan.num_workers else None,
                      persistent_workers=False)
