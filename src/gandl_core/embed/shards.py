"""Shards: combining ``<out>.shard-<k>-of-<n>`` tables, and the end of a torchrun embedding."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..locks import output_lock
from ..progress import Progress, ProgressGenerator
from ..tables import read_table, write_table
from .store import differing, disk_full_explained, expand, ranges, shard_path

#: Shards of one table agree on these (each has its own ``shard``).
_SHARD_KEYS = ("featurizer", "field_mode", "channels", "selection_sha1", "part_size")


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
    OutputBusyError
        Another process is writing ``out``.
    DiskFullError
        No space left while writing ``out`` (the shard files are kept).
    """
    out = Path(out)
    with output_lock(out, command="embed --merge"):
        return merge_locked(out, n, remove=remove, overwrite=overwrite)


def _shard_files(out: Path, n: int | None) -> tuple[int, dict[int, Path]]:
    pattern = re.compile(re.escape(out.stem) + r"\.shard-(\d+)-of-(\d+)" + re.escape(out.suffix) + "$")
    found: dict[int, dict[int, Path]] = {}
    for f in out.parent.glob(glob.escape(out.stem) + ".shard-*-of-*" + glob.escape(out.suffix)):
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
    return n, files


def merge_locked(out: Path, n: int | None, *, remove: bool, overwrite: bool) -> pd.DataFrame:
    """:func:`merge_shards` for a caller that already holds ``out``'s writer lock (torchrun rank 0)."""
    n, files = _shard_files(out, n)
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; pass --overwrite to replace it with the merged shards.")
    for f in out.parent.glob(glob.escape(f".{out.name}.") + "*.tmp"):
        f.unlink(missing_ok=True)  # a merge killed mid-write left it; we hold the lock
    frames, metas, pos = [], [], []
    for k in range(n):
        df = read_table(files[k])
        md = df.attrs.get("gandl", {})
        metas.append(md)
        r = expand(md.get("rows", []))
        if len(r) != len(df):
            raise DataError(f"{files[k]}: its metadata does not describe its rows; re-embed this shard.")
        pos.append(r)
        df.attrs = {}
        frames.append(df)
    for k in range(1, n):
        if differing(metas[0], metas[k], _SHARD_KEYS):
            raise DataError(f"{files[k]} and {files[0]} come from different data or settings; re-embed "
                            "all shards with one command line.")
    order = np.argsort(np.concatenate(pos), kind="stable")
    merged = pd.concat(frames, ignore_index=True).iloc[order].reset_index(drop=True)
    info = dict(metas[0])
    info["shard"] = None
    info["skipped"] = [s for m in metas for s in m.get("skipped", [])]
    info["n_sites"] = int(len(merged))
    info["rows"] = ranges(np.sort(np.concatenate(pos)))
    info["merged_from"] = n
    with disk_full_explained(out, f"run 'gandl-core embed --merge -o {out}' again: the shard files are kept."):
        write_table(merged, out, metadata=info)
    merged.attrs["gandl"] = info
    if remove:
        for f in files.values():
            f.unlink(missing_ok=True)
    return merged


def finish_torchrun(merged: Path, world: int, rank: int) -> ProgressGenerator[pd.DataFrame]:
    """All ranks meet at a gloo barrier; rank 0 (holding ``merged``'s lock) merges the shard files into it."""
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
            df = merge_locked(merged, world, remove=True, overwrite=True)
            yield Progress(len(df), len(df), unit="sites", stage="merge", message=f"wrote {merged}",
                           artifacts={"table": merged})
        dist.barrier()  # the others return only once the merged table exists
        if rank != 0:
            df = read_table(merged)
        return df
    finally:
        if own:
            dist.destroy_process_group()
