"""Plate-scale embedding: a streaming, sharded, resumable engine shared by every featurizer.

:func:`embed_iter` reads the sites of an index with :class:`gandl_core.plates.PlateDataset` in
DataLoader worker processes (decoding and normalizing overlap the forward pass), feeds batches to
a featurizer (see :mod:`gandl_core.featurizers.base`) and returns one row per site: every
``Metadata_*`` column of the index, then ``<prefix>000 ..`` float32 features. :func:`embed` is the
GAN-DL case: the discriminator of a training checkpoint (columns ``GAN_000 .. GAN_511``).

Fields larger than the featurizer's ``resolution``
    ``field_mode="tiles"`` (default): features averaged over non-overlapping tiles covering the
    field; ``"resize"``: the field shrunk to the resolution. On the synthetic screen tiles separate
    the control wells better (numbers in docs/embedding.md). A featurizer with ``resolution=None``
    receives whole fields.

Memory
    Images are never accumulated: a batch is decoded, embedded and dropped. Features of finished
    sites are small (2 KB per site at 512 floats); with ``out`` they are written to disk in parts
    of ``part_size`` sites and read back once at the end.

Files (``out`` given)
    ``<out>.parts/part-<k>.parquet`` is written atomically each time ``part_size`` consecutive
    sites are done, with ``<out>.parts/manifest.json`` describing the run; at the end the parts
    are merged into ``out`` (atomic) and removed. ``resume=True`` skips the parts already written
    (after an interruption, a crash or a corrupt image). An existing ``out`` is never replaced
    unless ``overwrite=True``.

Scale-out
    ``shard=(k, n)`` processes every n-th block of ``part_size`` sites starting at block k
    (0-based, for array jobs); :func:`merge_shards` combines ``<out>.shard-<k>-of-<n>.parquet``
    files in index order. Under ``torchrun`` (``WORLD_SIZE > 1``) each rank takes shard
    (RANK, WORLD_SIZE) automatically, writes its shard file, and rank 0 waits for the others
    (a gloo barrier) and merges them into ``out``.

Determinism
    Featurizers are batch-invariant and sites are processed in index order, so the table does not
    depend on ``batch_size``, ``num_workers``, sharding or resuming (up to float round-off of
    the BLAS kernels, ~1e-6 relative).

Metadata (``df.attrs["gandl"]`` and the Parquet file's ``gandl`` key)
    featurizer identity (for GAN-DL the checkpoint's path, sha256 and kimg), field mode, channel
    names, resolution, normalizer, package version, number of sites and the skipped sites.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import __version__
from .errors import ConfigError, DataError
from .featurizers.base import check_channels, feature_names
from .progress import Progress, ProgressGenerator, run_to_end
from .tables import metadata_columns, read_table, read_table_metadata, write_table

if TYPE_CHECKING:
    import torch

FIELD_MODES = ("tiles", "resize")
#: Chosen by measurement on the synthetic screen (docs/embedding.md).
DEFAULT_FIELD_MODE = "tiles"
#: Sites per part file and per shard block: small enough that an interruption loses little work,
#: large enough that a 300k-site plate set gives ~1,200 files, not 300k.
DEFAULT_PART_SIZE = 256
_MANIFEST = "manifest.json"


# --------------------------------------------------------------------------------------------
# Small helpers: selection, shards, row ranges
# --------------------------------------------------------------------------------------------


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


def shard_path(out: str | os.PathLike, k: int, n: int) -> Path:
    """File a shard writes: ``emb.parquet`` -> ``emb.shard-<k>-of-<n>.parquet``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{k}-of-{n}{out.suffix}")


def parts_dir(out: str | os.PathLike) -> Path:
    """Folder of the part files of an unfinished run writing ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _ranges(positions: Iterable[int]) -> list[list[int]]:
    """Sorted positions -> [[start, stop), ...] runs (compact JSON for 300k-site metadata)."""
    out: list[list[int]] = []
    for p in positions:
        p = int(p)
        if out and out[-1][1] == p:
            out[-1][1] = p + 1
        else:
            out.append([p, p + 1])
    return out


def _expand(ranges: Iterable[Sequence[int]]) -> np.ndarray:
    parts = [np.arange(a, b) for a, b in ranges]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


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
        wells = list(wells)
        if isinstance(wells, str):
            wells = [wells]
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
        keep &= mask
    if sites is not None:
        sites = [int(s) for s in sites]
        site = index["Metadata_Site"].astype(int).to_numpy()
        bad = sorted(set(sites) - set(site.tolist()))
        if bad:
            raise DataError(f"site numbers {bad} are not in the index (option sites=); it has "
                            f"{sorted(set(site.tolist()))}.")
        keep &= np.isin(site, sites)
    return index.loc[keep].reset_index(drop=True)


def _selection_hash(index: pd.DataFrame, path_cols: list[str]) -> str:
    """Fingerprint of which sites (and files) a run embeds, so resume/merge never mixes runs."""
    h = hashlib.sha1()
    cols = [c for c in ("Metadata_Plate", "Metadata_Well", "Metadata_Site") if c in index.columns]
    for row in index[cols + path_cols].astype(str).itertuples(index=False):
        h.update("\x1f".join(row).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def _path_columns(index: pd.DataFrame) -> list[str]:
    try:
        from .plates import channel_columns

        return list(channel_columns(index))
    except ImportError:  # pragma: no cover - plates is a hard dependency in a full install
        return [c for c in index.columns if str(c).startswith("Path_")]


def _channel_names(index: pd.DataFrame) -> list[str]:
    try:
        from .plates import channel_names

        return list(channel_names(index))
    except ImportError:  # pragma: no cover
        return [c[len("Path_"):] for c in index.columns if str(c).startswith("Path_")]


# --------------------------------------------------------------------------------------------
# The dataset wrapper: one item per site, errors turned into values
# --------------------------------------------------------------------------------------------


class _SiteItems:
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
            return pos, None, _describe_failure(exc, self.paths[pos] if self.paths is not None else [])


def _describe_failure(exc: BaseException, paths: Sequence[str]) -> str:
    msg = str(exc) or type(exc).__name__
    files = [p.split("::")[0] for p in paths]
    named = [f for f in files if f and (f in msg or Path(f).name in msg)]
    if not named:
        # Find the culprit ourselves: a missing or empty file, else list them all.
        named = [f for f in files if not Path(f).is_file() or Path(f).stat().st_size == 0][:1] or files
    return f"{type(exc).__name__}: {msg} [file: {', '.join(dict.fromkeys(named))}]"


def _collate(items: list) -> list:
    return items  # sites may have different tile counts: stack in the main process


def _site_label(meta: pd.DataFrame, pos: int) -> str:
    row = meta.iloc[pos]
    parts = [str(row[c]) for c in ("Metadata_Plate", "Metadata_Well") if c in meta.columns]
    if "Metadata_Site" in meta.columns:
        parts.append(f"site {row['Metadata_Site']}")
    return " ".join(parts) or f"row {pos}"


def _forward(featurizer: Any, tiles: list["torch.Tensor"], chunk: int) -> list[np.ndarray]:
    """Features of each site = mean over its tiles; forward in chunks of ``chunk`` tiles.

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
            out[i] = feats[start:start + n].mean(dim=0).numpy()
            start += n
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


def embed_iter(
    index: pd.DataFrame | str | os.PathLike,
    featurizer: Any,
    *,
    out: str | os.PathLike | None = None,
    wells: Iterable[Any] | None = None,
    sites: Iterable[int] | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    field_mode: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    shard: str | Sequence[int] | None = None,
    device: str | None = None,
    skip_bad: bool = False,
    part_size: int = DEFAULT_PART_SIZE,
) -> ProgressGenerator[pd.DataFrame]:
    """Embed every selected site of a plate index; yields progress, returns the table.

    Parameters
    ----------
    index
        Site index (``plates.build_index``) or anything ``build_index`` accepts (folder, CSV, parquet).
    featurizer
        Any object following the Featurizer protocol (:mod:`gandl_core.featurizers.base`).
    out
        Output ``.parquet`` (or ``.csv``); ``None`` keeps everything in memory and writes nothing.
    wells, sites
        Restrict to these wells (``"B02"`` or ``(plate, well)``) and site numbers.
    batch_size
        Sites per DataLoader batch, and tiles per forward call.
    num_workers
        DataLoader worker processes decoding images while the main process runs the network.
    field_mode
        ``"tiles"`` or ``"resize"`` for fields larger than ``featurizer.resolution``; ``None`` =
        the featurizer's ``field_mode`` attribute if it has one (a discriminator trained on whole
        resized fields, ``crop_mode="resize"``, asks for ``"resize"``), else ``"tiles"``.
    resume, overwrite
        What to do with an existing ``out`` or unfinished parts: continue / start over.
    shard
        ``(k, n)`` or ``"k/n"``: embed only blocks k, k+n, k+2n ... of ``part_size`` sites.
        Under torchrun (``WORLD_SIZE > 1``) it defaults to ``(RANK, WORLD_SIZE)`` and ``out``
        becomes the merged result (see the module docstring).
    device
        Move the featurizer there first (when it has ``.to``); ``None`` leaves it where it is.
    skip_bad
        Skip sites whose images cannot be read (or give non-finite features) instead of stopping;
        they are listed in a warning and in the metadata's ``skipped``.
    part_size
        Sites per part file / shard block.

    Yields
    ------
    Progress
        ``unit="sites"``, ``stage="embed"``, metrics ``sites/s`` and ``skipped``.

    Returns
    -------
    pd.DataFrame
        One row per embedded site: the index's ``Metadata_*`` columns, then float32 features.
        ``df.attrs["gandl"]`` holds the metadata also stored in the file.

    Raises
    ------
    DataError
        Unreadable image (names the file; finished parts are kept for ``resume``), ``out``
        exists without ``resume``/``overwrite``, parts from a different run, non-finite features.
    ConfigError
        Bad ``field_mode``, ``batch_size``, ``num_workers``, ``shard`` or option combination.
    CheckpointError
        The data's channels are not the featurizer's.
    """
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
    shard = parse_shard(shard)
    if out is not None and Path(out).suffix.lower() not in (".parquet", ".csv", ".tsv"):
        raise ConfigError(f"-o {out}: the output must end in .parquet (or .csv/.tsv).")
    if out is not None and Path(out).suffix.lower() != ".parquet" and (
            shard is not None or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1):
        raise ConfigError(f"-o {out}: shards record their rows in Parquet metadata; write .parquet "
                          "and convert the merged table afterwards.")

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    distributed = shard is None and world > 1
    final_out = None
    if distributed:
        if out is None:
            raise ConfigError("under torchrun (WORLD_SIZE > 1) give an output file (-o/out=) so the "
                              "ranks can write their shards and rank 0 can merge them.")
        rank = int(os.environ.get("RANK", "0"))
        shard = (rank, world)
        final_out = Path(out)
        if final_out.exists() and not (resume or overwrite):
            raise DataError(f"{final_out} already exists. Pass --resume to keep it (and finish it if "
                            "unfinished) or --overwrite to replace it.")
        out = shard_path(final_out, rank, world)

    if isinstance(index, (str, os.PathLike)):
        from .plates import build_index

        index = build_index(index)
    if not isinstance(index, pd.DataFrame) or len(index) == 0:
        raise DataError("the index has no sites: check the data folder / CSV and the channel selection.")
    index = select_sites(index, wells=wells, sites=sites)
    if len(index) == 0:
        raise DataError("no sites selected: the wells/sites options match nothing.")
    channels = _channel_names(index)
    check_channels(featurizer, channels, source="the data")
    if device is not None and hasattr(featurizer, "to"):
        featurizer.to(device)

    path_cols = _path_columns(index)
    meta_cols = metadata_columns(index)
    meta = index[meta_cols]
    n_all = len(index)
    positions = np.arange(n_all)
    if shard is not None:
        k, n = shard
        positions = positions[(positions // part_size) % n == k]
    normalizer = featurizer.normalizer
    if normalizer is None:
        from .plates import IntensityNormalizer

        normalizer = IntensityNormalizer().fit(index)
    columns = feature_names(featurizer.prefix, int(featurizer.n_features))
    info = {
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
        "n_sites_selected": int(n_all),
        "selection_sha1": _selection_hash(index, path_cols),
        "part_size": int(part_size),
        "shard": list(shard) if shard is not None else None,
    }

    # ---- existing output / parts -------------------------------------------------------------
    if final_out is not None and final_out.exists() and resume:
        # Already merged by an earlier torchrun launch: every rank returns it (nothing to embed).
        keys = [k for k in _IDENTITY_KEYS if k not in ("shard", "part_size")]
        if not _same_run(read_table_metadata(final_out), info, keys):
            raise DataError(f"{final_out} exists but was made from other sites or with another "
                            "featurizer/field mode; pass --overwrite to replace it.")
        df = read_table(final_out)
        yield Progress(len(df), len(df), unit="sites", stage="embed", message=f"{final_out} is complete; nothing to do.")
        return df
    out_path = Path(out) if out is not None else None
    pdir = parts_dir(out_path) if out_path is not None else None
    done_parts: dict[int, Path] = {}
    if out_path is not None:
        if out_path.exists():
            if overwrite:
                pass  # replaced atomically at the end; the old file stays valid until then
            elif resume:
                old = read_table_metadata(out_path) if out_path.suffix == ".parquet" else {}
                keys = [k for k in _IDENTITY_KEYS if k != "part_size" or shard is not None]
                if not _same_run(old, info, keys):
                    raise DataError(f"{out_path} exists but was made from other sites or with another "
                                    "featurizer/field mode; pass --overwrite to replace it.")
                df = read_table(out_path)
                yield Progress(len(df), len(df), unit="sites", stage="embed",
                               message=f"{out_path} is complete; nothing to do.")
                if final_out is not None:
                    return (yield from _finish_distributed(final_out, world, rank=shard[0], overwrite=True))
                return df
            else:
                raise DataError(f"{out_path} already exists. Pass --resume to keep it or --overwrite "
                                "to replace it (or choose another -o).")
        if pdir.exists():
            if overwrite:
                shutil.rmtree(pdir)
            elif resume:
                done_parts = _finished_parts(pdir, info)
            else:
                raise DataError(f"{pdir} holds parts of an unfinished run. Pass --resume to continue "
                                "it or --overwrite to start over.")
        pdir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(pdir / _MANIFEST, info)

    todo = positions[~np.isin(positions // part_size, list(done_parts))] if done_parts else positions
    n_total = len(positions)
    n_resumed = n_total - len(todo)

    # Remaining sites per part, so a part is written the moment its last site is done.
    remaining: dict[int, int] = {}
    for p in todo // part_size:
        remaining[int(p)] = remaining.get(int(p), 0) + 1
    feats: dict[int, np.ndarray] = {}  # position -> features, dropped once its part is on disk
    skipped: list[dict] = []
    skipped_by_part: dict[int, list[dict]] = {}

    mode = field_mode if featurizer.resolution is not None else "full"
    loader = None
    t0 = time.perf_counter()
    done = 0
    try:
        yield Progress(n_resumed, n_total, unit="sites", stage="embed",
                       message=(f"resuming: {n_resumed} of {n_total} sites already embedded"
                                if n_resumed else ""),
                       metrics={"sites/s": 0.0, "skipped": 0})
        if len(todo):
            import torch
            from torch.utils.data import DataLoader

            from .plates import PlateDataset

            # A network trained on downscaled fields (PlateDataset scale < 1) must embed at that scale.
            scale = float(getattr(featurizer, "scale", 1.0) or 1.0)
            kw = {"scale": scale} if scale != 1.0 else {}
            dataset = PlateDataset(index, normalizer, featurizer.resolution, mode=mode, **kw)
            items = _SiteItems(dataset, index, todo, path_cols)
            pin = str(getattr(featurizer, "device", "cpu")).startswith("cuda")
            loader = DataLoader(items, batch_size=int(batch_size), shuffle=False,
                                num_workers=int(num_workers), collate_fn=_collate, pin_memory=pin,
                                prefetch_factor=2 if num_workers else None,
                                persistent_workers=False)
            for batch in loader:
                good = [(pos, x) for pos, x, err in batch if err is None]
                for pos, _, err in batch:
                    if err is not None:
                        _bad_site(pos, err, meta, skip_bad, skipped, skipped_by_part, part_size, pdir)
                if good:
                    vecs = _forward(featurizer, [x for _, x in good], int(batch_size))
                    for (pos, _), v in zip(good, vecs):
                        if not np.isfinite(v).all():
                            _bad_site(pos, "the features are NaN/inf (a diverged checkpoint or a "
                                      "broken image)", meta, skip_bad, skipped, skipped_by_part,
                                      part_size, pdir)
                            continue
                        feats[pos] = v.astype(np.float32, copy=False)
                for pos, _, _ in batch:
                    p = int(pos) // part_size
                    remaining[p] -= 1
                    if remaining[p] == 0 and pdir is not None:
                        _write_part(pdir, p, part_size, n_all, meta, feats, columns,
                                    skipped_by_part.get(p, []))
                done += len(batch)
                rate = done / max(time.perf_counter() - t0, 1e-9)
                yield Progress(n_resumed + done, n_total, unit="sites", stage="embed",
                               metrics={"sites/s": rate, "skipped": len(skipped)})
            del loader
            loader = None
    finally:
        if loader is not None:
            del loader  # shuts the worker processes down when the generator is closed early

    # ---- assemble -------------------------------------------------------------------------------
    if pdir is not None:
        df, skipped = _read_parts(pdir, sorted({int(p) for p in positions // part_size}), meta_cols, columns)
    else:
        order = sorted(feats)
        df = _frame(meta, order, feats, columns)
    info["skipped"] = skipped
    info["n_sites"] = int(len(df))
    info["rows"] = _ranges(_positions_of(df, positions, skipped, meta))
    df.attrs["gandl"] = info
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable site(s): "
                      + "; ".join(f"{s['site']} ({s['error'][:120]})" for s in skipped[:5])
                      + (" ..." if len(skipped) > 5 else "") + " (listed in the table's metadata 'skipped').",
                      stacklevel=2)
    _warn_constant(df, columns)
    if out_path is not None:
        write_table(df, out_path, metadata=info)
        shutil.rmtree(pdir, ignore_errors=True)
        yield Progress(n_total, n_total, unit="sites", stage="embed", message=f"wrote {out_path}",
                       artifacts={"table": out_path})
    if final_out is not None:
        return (yield from _finish_distributed(final_out, world, rank=shard[0], overwrite=True))
    return df


def embed(index: pd.DataFrame | str | os.PathLike, checkpoint: str | os.PathLike, *,
          device: str = "cpu", **kw: Any) -> pd.DataFrame:
    """GAN-DL embedding of a plate: discriminator features of a checkpoint, one row per site.

    Parameters
    ----------
    index
        Site index or anything ``plates.build_index`` accepts.
    checkpoint
        Training checkpoint (``<run>/checkpoints/latest.pt``) or run folder.
    device
        Where the discriminator runs.
    **kw
        Passed to :func:`embed_iter` (``out``, ``wells``, ``batch_size``, ``num_workers``,
        ``field_mode``, ``resume``, ``overwrite``, ``shard``, ``skip_bad``).

    Returns
    -------
    pd.DataFrame
        ``Metadata_*`` + ``GAN_000 .. GAN_511``.

    Raises
    ------
    CheckpointError, DataError, ConfigError
        See :func:`embed_iter` and :meth:`GanFeaturizer.from_checkpoint`.
    """
    from .featurizers.base import GanFeaturizer

    featurizer = GanFeaturizer.from_checkpoint(checkpoint, device=device)
    return run_to_end(embed_iter(index, featurizer, **kw))


# --------------------------------------------------------------------------------------------
# Parts, shards and merging
# --------------------------------------------------------------------------------------------

_IDENTITY_KEYS = ("featurizer", "field_mode", "channels", "selection_sha1", "part_size", "shard")


def _same_run(a: dict, b: dict, keys: Sequence[str] = _IDENTITY_KEYS) -> bool:
    return all(json.dumps(a.get(k), sort_keys=True, default=str) == json.dumps(b.get(k), sort_keys=True, default=str)
               for k in keys)


def _write_json_atomic(path: Path, obj: dict) -> None:
    from .tables import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=1, default=str))


def _finished_parts(pdir: Path, info: dict) -> dict[int, Path]:
    mf = pdir / _MANIFEST
    if mf.is_file():
        try:
            old = json.loads(mf.read_text())
        except json.JSONDecodeError:
            old = {}
        if not _same_run(old, info):
            changed = [k for k in _IDENTITY_KEYS if json.dumps(old.get(k), sort_keys=True, default=str)
                       != json.dumps(info.get(k), sort_keys=True, default=str)]
            raise DataError(f"{pdir} holds parts of a run with other settings ({', '.join(changed)} "
                            "differ); resume with the same data, checkpoint and options, or pass "
                            "--overwrite to start over.")
    found = {}
    for f in pdir.glob("part-*.parquet"):
        m = re.fullmatch(r"part-(\d+)\.parquet", f.name)
        if m:
            found[int(m.group(1))] = f
    return found


def _frame(meta: pd.DataFrame, order: Sequence[int], feats: dict[int, np.ndarray], columns: list[str]) -> pd.DataFrame:
    m = meta.iloc[list(order)].reset_index(drop=True)
    x = np.stack([feats[p] for p in order]) if len(order) else np.zeros((0, len(columns)), np.float32)
    f = pd.DataFrame(x.astype(np.float32, copy=False), columns=columns)
    return pd.concat([m, f], axis=1)


def _write_part(pdir: Path, p: int, part_size: int, n_all: int, meta: pd.DataFrame,
                feats: dict[int, np.ndarray], columns: list[str], skipped: list[dict]) -> None:
    lo, hi = p * part_size, min((p + 1) * part_size, n_all)
    order = [q for q in range(lo, hi) if q in feats]
    df = _frame(meta, order, feats, columns)
    write_table(df, pdir / f"part-{p:06d}.parquet",
                metadata={"rows": _ranges(order), "skipped": skipped})
    for q in order:
        del feats[q]  # memory stays flat: finished features live on disk now


def _read_parts(pdir: Path, part_ids: list[int], meta_cols: list[str], columns: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    frames, skipped = [], []
    for p in part_ids:
        f = pdir / f"part-{p:06d}.parquet"
        if not f.is_file():
            raise DataError(f"{f} is missing; rerun with --resume to embed its sites.")
        df = read_table(f)
        skipped += df.attrs.get("gandl", {}).get("skipped", [])
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=meta_cols + columns)
    df = df.astype({c: np.float32 for c in columns})  # one cast: per-column assignment fragments the frame
    df.attrs = {}
    return df, skipped


def _positions_of(df: pd.DataFrame, positions: np.ndarray, skipped: list[dict], meta: pd.DataFrame) -> list[int]:
    bad = {int(s["position"]) for s in skipped}
    kept = [int(p) for p in positions if int(p) not in bad]
    if len(kept) != len(df):  # pragma: no cover - internal consistency
        raise RuntimeError(f"{len(df)} rows but {len(kept)} positions")
    return kept


def _bad_site(pos: int, err: str, meta: pd.DataFrame, skip_bad: bool, skipped: list,
              skipped_by_part: dict, part_size: int, pdir: Path | None) -> None:
    label = _site_label(meta, pos)
    if not skip_bad:
        kept = (f" Finished parts are kept in {pdir}: after fixing it, rerun with --resume."
                if pdir is not None else "")
        raise DataError(f"cannot embed {label}: {err}. Replace or remove the file, or pass "
                        f"--skip-bad (skip_bad=True) to skip such sites.{kept}")
    rec = {"position": int(pos), "site": label, "error": err}
    skipped.append(rec)
    skipped_by_part.setdefault(int(pos) // part_size, []).append(rec)


def _warn_constant(df: pd.DataFrame, columns: list[str]) -> None:
    if len(df) < 2:
        return
    x = df[columns].to_numpy(np.float64)
    const = [c for c, s in zip(columns, x.std(axis=0)) if s == 0]
    if len(const) == len(columns):
        warnings.warn(f"all {len(columns)} features are identical for every site: the featurizer "
                      "ignores its input (untrained or collapsed checkpoint?).", stacklevel=3)
    elif const:
        warnings.warn(f"{len(const)} of {len(columns)} features are constant over all sites "
                      f"(e.g. {const[:5]}); they carry no information (dead units).", stacklevel=3)


def merge_shards(out: str | os.PathLike, n: int | None = None, *, remove: bool = True,
                 overwrite: bool = False) -> pd.DataFrame:
    """Combine ``<out>.shard-<k>-of-<n>.parquet`` files into ``out`` in index order.

    Parameters
    ----------
    out
        The merged table to write; shard files are looked up beside it.
    n
        Number of shards (found from the file names when ``None``).
    remove
        Delete the shard files after ``out`` is written.
    overwrite
        Replace an existing ``out``.

    Returns
    -------
    pd.DataFrame
        The merged table (same rows and order as an unsharded run).

    Raises
    ------
    DataError
        Shards missing, from different runs, or ``out`` exists without ``overwrite``.
    """
    out = Path(out)
    pattern = re.compile(re.escape(out.stem) + r"\.shard-(\d+)-of-(\d+)" + re.escape(out.suffix) + "$")
    found: dict[int, dict[int, Path]] = {}
    for f in out.parent.glob(f"{out.stem}.shard-*-of-*{out.suffix}"):
        m = pattern.fullmatch(f.name)
        if m:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = f
    if n is None:
        if len(found) != 1:
            raise DataError(f"found shard files for N = {sorted(found)} beside {out}; pass the number of "
                            "shards explicitly." if found else f"no shard files {out.stem}.shard-K-of-N"
                            f"{out.suffix} beside {out}: run 'gandl-core embed ... --shard K/N -o {out}' first.")
        n = next(iter(found))
    files = found.get(n, {})
    missing = [k for k in range(n) if k not in files]
    if missing:
        raise DataError(f"shards {missing} of {n} are missing ({shard_path(out, missing[0], n)} ...): run "
                        f"'gandl-core embed ... --shard {missing[0]}/{n} -o {out}' for each, then merge.")
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; pass --overwrite to replace it with the merged shards.")
    frames, metas, pos = [], [], []
    for k in range(n):
        df = read_table(files[k])
        md = df.attrs.get("gandl", {})
        metas.append(md)
        r = _expand(md.get("rows", []))
        if len(r) != len(df):
            raise DataError(f"{files[k]}: its metadata does not describe its rows; re-embed this shard.")
        pos.append(r)
        df.attrs = {}
        frames.append(df)
    keys = ("featurizer", "field_mode", "channels", "selection_sha1", "part_size")
    for k in range(1, n):
        if not _same_run(metas[0], metas[k], keys):
            raise DataError(f"{files[k]} and {files[0]} come from different data or settings; re-embed "
                            "all shards with one command line.")
    order = np.argsort(np.concatenate(pos), kind="stable")
    merged = pd.concat(frames, ignore_index=True).iloc[order].reset_index(drop=True)
    info = dict(metas[0])
    info["shard"] = None
    info["skipped"] = [s for m in metas for s in m.get("skipped", [])]
    info["n_sites"] = int(len(merged))
    info["rows"] = _ranges(np.sort(np.concatenate(pos)))
    info["merged_from"] = n
    write_table(merged, out, metadata=info)
    merged.attrs["gandl"] = info
    if remove:
        for f in files.values():
            f.unlink(missing_ok=True)
    return merged


def _finish_distributed(final_out: Path, world: int, *, rank: int, overwrite: bool) -> ProgressGenerator[pd.DataFrame]:
    """All ranks meet at a gloo barrier; rank 0 merges the shard files into ``final_out``."""
    import datetime

    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:
        # Ranks finish at different times: the barrier must outwait the slowest rank's work.
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    try:
        yield Progress(0, None, unit="sites", stage="merge", message=f"rank {rank}: waiting for the other ranks")
        dist.barrier()
        if rank == 0:
            df = merge_shards(final_out, world, overwrite=overwrite)
            yield Progress(len(df), len(df), unit="sites", stage="merge", message=f"wrote {final_out}",
                           artifacts={"table": final_out})
        dist.barrier()  # the others return only once the merged table exists
        if rank != 0:
            df = read_table(final_out)
        return df
    finally:
        if own:
            dist.destroy_process_group()
