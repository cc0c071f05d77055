"""The run plan: every option of an embedding run checked and resolved before any image is read.

:func:`make_plan` turns ``embed_iter``'s arguments into an :class:`EmbedPlan`: the selected sites,
the positions this process embeds (its shard), the file it writes, the torchrun job it belongs to
(if any), the feature column names and the metadata the table will carry. Nothing is rebound later:
the loop and the part store only read the plan.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import ConfigError, DataError
from ..featurizers.base import check_channels, feature_names
from ..tables import metadata_columns
from .store import shard_path

FIELD_MODES = ("tiles", "resize")
#: Chosen by measurement on the synthetic screen (docs/embedding.md).
DEFAULT_FIELD_MODE = "tiles"
#: Sites per part file and per shard block: small enough that an interruption loses little work,
#: large enough that a 300k-site plate set gives ~1,200 files, not 300k.
DEFAULT_PART_SIZE = 256


@dataclass(frozen=True)
class Torchrun:
    """This process is rank ``rank`` of ``world`` under torchrun; rank 0 merges the shards into ``merged``."""

    rank: int
    world: int
    merged: Path


@dataclass(frozen=True)
class EmbedPlan:
    """Everything an embedding run needs, resolved and checked.

    ``positions`` are the rows of ``index`` this process embeds (all of them, or its shard's blocks
    of ``part_size`` sites). ``out`` is the file this process writes (``None``: in memory); under
    torchrun it is the rank's shard file and ``torchrun.merged`` the table rank 0 merges into.
    """

    index: pd.DataFrame
    featurizer: Any
    field_mode: str          # "tiles" | "resize", recorded in the metadata
    dataset_mode: str        # PlateDataset mode: field_mode, or "full" for resolution=None featurizers
    normalizer: Any
    columns: list[str]       # feature column names, <prefix>000 ..
    positions: np.ndarray
    out: Path | None
    shard: tuple[int, int] | None
    torchrun: Torchrun | None
    resume: bool
    overwrite: bool
    skip_bad: bool
    batch_size: int
    num_workers: int
    part_size: int
    info: dict               # the table's metadata (skipped, n_sites and rows are added at the end)

    @cached_property
    def meta(self) -> pd.DataFrame:
        """The ``Metadata_*`` columns of the selected sites (the left part of every row)."""
        return self.index[metadata_columns(self.index)]

    @cached_property
    def path_columns(self) -> list[str]:
        return _path_columns(self.index)


def parse_shard(shard: str | Sequence[int] | None) -> tuple[int, int] | None:
    """Parse ``"K/N"`` or ``(K, N)`` (K in 0..N-1) into a tuple; ``None`` stays ``None``.

    Raises
    ------
    ConfigError
        If the value is malformed or K is out of range; the message names ``--shard``.
    """
    if shard is None:
        return None
    try:
        if isinstance(shard, str):
            k_s, n_s = shard.split("/")
            k, n = int(k_s), int(n_s)
        else:
            k, n = (int(v) for v in shard)
    except (ValueError, TypeError):
        raise ConfigError(f"--shard {shard!r}: expected K/N with 0 <= K < N, e.g. --shard 0/4.") from None
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"--shard {k}/{n}: K must be in 0..{max(n - 1, 0)} (0-based) and N >= 1.")
    return k, n


def select_sites(index: pd.DataFrame, *, wells: Iterable[Any] | None = None,
                 sites: Iterable[int] | None = None) -> pd.DataFrame:
    """Rows of ``index`` in the given wells and site numbers, in index order.

    Parameters
    ----------
    index
        Site index (``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site`` ...).
    wells
        Well names (``"B02"``: that well on every plate) and/or ``(plate, well)`` pairs.
    sites
        Site numbers (``Metadata_Site``) to keep.

    Returns
    -------
    pd.DataFrame
        The selected rows, index reset.

    Raises
    ------
    DataError
        If a requested well or site is not in the index (the message lists what is there).
    """
    keep = np.ones(len(index), dtype=bool)
    if wells is not None:
        keep &= _well_mask(index, [wells] if isinstance(wells, str) else list(wells))
    if sites is not None:
        sites = [int(s) for s in sites]
        site = index["Metadata_Site"].astype(int).to_numpy()
        bad = sorted(set(sites) - set(site.tolist()))
        if bad:
            raise DataError(f"site numbers {bad} are not in the index (option sites=); it has "
                            f"{sorted(set(site.tolist()))}.")
        keep &= np.isin(site, sites)
    return index.loc[keep].reset_index(drop=True)


def _well_mask(index: pd.DataFrame, wells: list) -> np.ndarray:
    plate = index["Metadata_Plate"].astype(str).to_numpy()
    well = index["Metadata_Well"].astype(str).to_numpy()
    mask = np.zeros(len(index), dtype=bool)
    missing = []
    for w in wells:
        if isinstance(w, str):
            hit = well == w.strip().upper()
        else:
            p, wn = w
            hit = (plate == str(p)) & (well == str(wn).strip().upper())
        if not hit.any():
            missing.append(w)
        mask |= hit
    if missing:
        present = sorted(set(well))
        raise DataError(f"wells {missing} are not in the index (option --wells / wells=); "
                        f"it has {len(present)} wells, e.g. {present[:8]}.")
    return mask


def make_plan(index: Any, featurizer: Any, *, out: str | os.PathLike | None, wells: Iterable[Any] | None,
              sites: Iterable[int] | None, batch_size: int, num_workers: int, field_mode: str | None,
              resume: bool, overwrite: bool, shard: str | Sequence[int] | None, device: str | None,
              skip_bad: bool, part_size: int) -> EmbedPlan:
    """Check ``embed_iter``'s options and resolve them into an :class:`EmbedPlan` (see its docstring).

    Raises ConfigError / DataError / CheckpointError exactly as documented on ``embed_iter``.
    """
    field_mode = _check_options(featurizer, field_mode, batch_size, num_workers, part_size, resume, overwrite)
    shard = parse_shard(shard)
    _check_out(out, shard)
    job = _torchrun_job(out, shard, resume, overwrite)
    if job is not None:
        shard, out = (job.rank, job.world), shard_path(job.merged, job.rank, job.world)
    index = _selected_index(index, wells, sites)
    channels = _channel_names(index)
    check_channels(featurizer, channels, source="the data")
    if device is not None and hasattr(featurizer, "to"):
        featurizer.to(device)
    positions = np.arange(len(index))
    if shard is not None:
        positions = positions[(positions // part_size) % shard[1] == shard[0]]
    normalizer = featurizer.normalizer
    if normalizer is None:
        from ..plates import IntensityNormalizer

        normalizer = IntensityNormalizer().fit(index)
    info = _metadata(index, featurizer, field_mode, channels, normalizer, part_size, shard)
    return EmbedPlan(
        index=index, featurizer=featurizer, field_mode=field_mode,
        dataset_mode=field_mode if featurizer.resolution is not None else "full", normalizer=normalizer,
        columns=feature_names(featurizer.prefix, int(featurizer.n_features)), positions=positions,
        out=Path(out) if out is not None else None, shard=shard, torchrun=job, resume=bool(resume),
        overwrite=bool(overwrite), skip_bad=bool(skip_bad), batch_size=int(batch_size),
        num_workers=int(num_workers), part_size=int(part_size), info=info)


def _check_options(featurizer: Any, field_mode: str | None, batch_size: int, num_workers: int, part_size: int,
                   resume: bool, overwrite: bool) -> str:
    if field_mode is None:
        field_mode = getattr(featurizer, "field_mode", None) or DEFAULT_FIELD_MODE
    if field_mode not in FIELD_MODES:
        raise ConfigError(f"--field-mode {field_mode!r}: choose one of {list(FIELD_MODES)}.")
    if int(batch_size) < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be >= 1.")
    if int(num_workers) < 0:
        raise ConfigError(f"--workers {num_workers}: must be >= 0.")
    if int(part_size) < 1:
        raise ConfigError(f"part_size {part_size}: must be >= 1.")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: resume keeps finished work, "
                          "overwrite discards it. Pick one.")
    return field_mode


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _check_out(out: str | os.PathLike | None, shard: tuple[int, int] | None) -> None:
    if out is None:
        return
    suffix = Path(out).suffix.lower()
    if suffix not in (".parquet", ".csv", ".tsv"):
        raise ConfigError(f"-o {out}: the output must end in .parquet (or .csv/.tsv).")
    if suffix != ".parquet" and (shard is not None or _world_size() > 1):
        raise ConfigError(f"-o {out}: shards record their rows in Parquet metadata; write .parquet "
                          "and convert the merged table afterwards.")


def _torchrun_job(out: str | os.PathLike | None, shard: tuple[int, int] | None, resume: bool,
                  overwrite: bool) -> Torchrun | None:
    """Under torchrun (``WORLD_SIZE > 1``, no explicit shard) each rank embeds shard (RANK, WORLD_SIZE)."""
    world = _world_size()
    if shard is not None or world <= 1:
        return None
    if out is None:
        raise ConfigError("under torchrun (WORLD_SIZE > 1) give an output file (-o/out=) so the "
                          "ranks can write their shards and rank 0 can merge them.")
    merged = Path(out)
    if merged.exists() and not (resume or overwrite):
        raise DataError(f"{merged} already exists. Pass --resume to keep it (and finish it if "
                        "unfinished) or --overwrite to replace it.")
    return Torchrun(rank=int(os.environ.get("RANK", "0")), world=world, merged=merged)


def _selected_index(index: Any, wells: Iterable[Any] | None, sites: Iterable[int] | None) -> pd.DataFrame:
    if isinstance(index, (str, os.PathLike)):
        from ..plates import build_index

        index = build_index(index)
    if not isinstance(index, pd.DataFrame) or len(index) == 0:
        raise DataError("the index has no sites: check the data folder / CSV and the channel selection.")
    index = select_sites(index, wells=wells, sites=sites)
    if len(index) == 0:
        raise DataError("no sites selected: the wells/sites options match nothing.")
    return index


def _metadata(index: pd.DataFrame, featurizer: Any, field_mode: str, channels: list[str], normalizer: Any,
              part_size: int, shard: tuple[int, int] | None) -> dict:
    """The table's metadata; its identity keys (store.IDENTITY_KEYS) decide which runs may be resumed/merged."""
    return {
        "kind": "embeddings",
        "featurizer": featurizer.identity(),
        "checkpoint": featurizer.identity().get("checkpoint"),
        "field_mode": field_mode,
        "channels": channels,
        "resolution": featurizer.resolution,
        "scale": float(getattr(featurizer, "scale", 1.0) or 1.0),
        "normalizer": normalizer.to_dict() if hasattr(normalizer, "to_dict") else None,
        "package": "napari-gandl",
        "package_version": __version__,
        "n_sites_selected": int(len(index)),
        "selection_sha1": _selection_hash(index, _path_columns(index)),
        "part_size": int(part_size),
        "shard": list(shard) if shard is not None else None,
    }


def _selection_hash(index: pd.DataFrame, path_cols: list[str]) -> str:
    """Fingerprint of which sites (and files) a run embeds, so resume/merge never mixes runs."""
    h = hashlib.sha1()
    cols = [c for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site") if c in index.columns]
    for row in index[cols + path_cols].astype(str).itertuples(index=False):
        h.update("\x1f".join(row).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def _path_columns(index: pd.DataFrame) -> list[str]:
    from ..plates import channel_columns

    return list(channel_columns(index))


def _channel_names(index: pd.DataFrame) -> list[str]:
    from ..plates import channel_names

    return list(channel_names(index))
