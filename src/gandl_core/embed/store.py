"""The part store: the files of one embedding output, and the only code that writes them.

An output ``emb.parquet`` is written through

* ``emb.parquet.lock``: the writer lock (:func:`gandl_core.locks.output_lock`), held for the whole
  run; a second writer is refused with a message naming the holder;
* ``emb.parquet.parts/manifest.json``: the run's identity (featurizer, field mode, channels, sites,
  part size, shard), checked before a resume;
* ``emb.parquet.parts/part-<k>.parquet``: sites ``k*part_size .. (k+1)*part_size - 1`` (those of
  them this process embeds), written atomically the moment the last of them is done; each part's
  metadata holds its rows, its skipped sites and the run's identity digest, so parts of two runs
  are never merged into one table;
* ``emb.parquet``: the finished table, written atomically from the parts, after which the parts
  folder is removed.

Temp files (``.<name>.<random>.tmp``) of writes cut short by a kill are removed by the next run; a
full disk gives one :class:`DiskFullError` line naming the file and the fix.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import ContextManager, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError, GandlError
from ..locks import output_lock
from ..tables import read_table, read_table_metadata, write_table, write_text_atomic

#: Metadata keys that must agree for parts, shards or a finished table to belong to one run.
IDENTITY_KEYS = ("featurizer", "field_mode", "channels", "selection_sha1", "part_size", "shard")
MANIFEST = "manifest.json"
_PART = re.compile(r"part-(\d+)\.parquet")


class DiskFullError(GandlError):
    """No space left (or quota exceeded) while writing an output; finished work is kept."""


def shard_path(out: str | os.PathLike, k: int, n: int) -> Path:
    """File a shard writes: ``emb.parquet`` -> ``emb.shard-<k>-of-<n>.parquet``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{k}-of-{n}{out.suffix}")


def parts_dir(out: str | os.PathLike) -> Path:
    """Folder of the part files of an unfinished run writing ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def ranges(positions: Iterable[int]) -> list[list[int]]:
    """Sorted positions -> [[start, stop), ...] runs (compact JSON for 300k-site metadata)."""
    out: list[list[int]] = []
    for p in positions:
        p = int(p)
        if out and out[-1][1] == p:
            out[-1][1] = p + 1
        else:
            out.append([p, p + 1])
    return out


def expand(runs: Iterable[Sequence[int]]) -> np.ndarray:
    """Inverse of :func:`ranges`."""
    parts = [np.arange(a, b) for a, b in runs]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _key(d: dict, k: str) -> str:
    return json.dumps(d.get(k), sort_keys=True, default=str)


def differing(a: dict, b: dict, keys: Sequence[str] = IDENTITY_KEYS) -> list[str]:
    """Identity keys on which two metadata dicts disagree (empty: same run)."""
    return [k for k in keys if _key(a, k) != _key(b, k)]


def run_digest(info: dict) -> str:
    """Short digest of a run's identity, stamped on each part it writes."""
    return hashlib.sha1("\x1f".join(_key(info, k) for k in IDENTITY_KEYS).encode()).hexdigest()[:16]


def frame(meta: pd.DataFrame, order: Sequence[int], feats: dict[int, np.ndarray], columns: list[str]) -> pd.DataFrame:
    """Rows ``order`` of ``meta`` with their feature vectors as float32 ``columns``."""
    m = meta.iloc[list(order)].reset_index(drop=True)
    x = np.stack([feats[p] for p in order]) if len(order) else np.zeros((0, len(columns)), np.float32)
    f = pd.DataFrame(x.astype(np.float32, copy=False), columns=columns)
    return pd.concat([m, f], axis=1)


def _is_disk_full(exc: OSError) -> bool:
    text = str(exc)
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "quota exceeded" in text.lower()


@contextmanager
def disk_full_explained(path: Path, fix: str) -> Iterator[None]:
    """Turn "no space left" / "quota exceeded" while writing ``path`` into one :class:`DiskFullError` line.

    The writers are atomic (temp file + rename), so the temp file is already gone and ``path`` untouched.
    """
    try:
        yield
    except OSError as exc:
        if not _is_disk_full(exc):
            raise
        reason = os.strerror(exc.errno) if exc.errno else "no space left on the disk"
        raise DiskFullError(f"cannot write {path}: {reason}. Free space in {path.parent} (or write to "
                            f"another disk), then {fix}") from exc


def read_complete(path: Path, info: dict, keys: Sequence[str]) -> pd.DataFrame:
    """A finished table at ``path`` that must come from the same run as ``info`` (on ``keys``)."""
    old = read_table_metadata(path) if path.suffix == ".parquet" else {}
    if differing(old, info, keys):
        raise DataError(f"{path} exists but was made from other sites or with another "
                        "featurizer/field mode; pass --overwrite to replace it.")
    return read_table(path)


class PartStore:
    """The files of one output ``out`` (see the module docstring): lock, manifest, parts, table.

    Parameters
    ----------
    out
        The table this run writes (a shard file for a shard).
    info
        The run's metadata (identity keys as in :data:`IDENTITY_KEYS`).
    part_size
        Sites per part.
    """

    def __init__(self, out: Path, info: dict, part_size: int):
        self.out = Path(out)
        self.dir = parts_dir(self.out)
        self.info = info
        self.part_size = int(part_size)
        self.run = run_digest(info)

    def lock(self) -> ContextManager[Path]:
        """The writer lock of ``out``, held by the caller for the whole run."""
        return output_lock(self.out, command="embed")

    def part_file(self, p: int) -> Path:
        return self.dir / f"part-{p:06d}.parquet"

    def remove_temp_files(self) -> None:
        """Temp files that writes cut short by a kill left behind (ours only; call with the lock held)."""
        beside = self.out.parent.glob(glob.escape(f".{self.out.name}.") + "*.tmp")
        inside = self.dir.glob(".*.tmp") if self.dir.is_dir() else []
        for f in [*beside, *inside]:
            f.unlink(missing_ok=True)

    def complete_table(self, *, resume: bool, overwrite: bool) -> pd.DataFrame | None:
        """An existing ``out``: returned when resuming the same run; ``None`` when absent or when
        ``overwrite`` (it stays valid until the new table replaces it); refused otherwise."""
        if not self.out.exists() or overwrite:
            return None
        if not resume:
            raise DataError(f"{self.out} already exists. Pass --resume to keep it or --overwrite "
                            "to replace it (or choose another -o).")
        sharded = self.info.get("shard") is not None
        return read_complete(self.out, self.info, [k for k in IDENTITY_KEYS if k != "part_size" or sharded])

    def open(self, *, resume: bool, overwrite: bool) -> set[int]:
        """Prepare the parts folder for this run; return the ids of parts already finished (resume)."""
        done: set[int] = set()
        if self.dir.exists():
            if overwrite:
                shutil.rmtree(self.dir)
            elif resume:
                done = self._finished_parts()
            else:
                raise DataError(f"{self.dir} holds parts of an unfinished run. Pass --resume to continue "
                                "it or --overwrite to start over.")
        with disk_full_explained(self.dir / MANIFEST, "rerun the same command."):
            self.dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.dir / MANIFEST, json.dumps(self.info, indent=1, default=str))
        return done

    def _finished_parts(self) -> set[int]:
        mf = self.dir / MANIFEST
        if mf.is_file():
            try:
                old = json.loads(mf.read_text())
            except json.JSONDecodeError:
                old = {}
            changed = differing(old, self.info)
            if changed:
                raise DataError(f"{self.dir} holds parts of a run with other settings ({', '.join(changed)} "
                                "differ); resume with the same data, checkpoint and options, or pass "
                                "--overwrite to start over.")
        done = set()
        for f in self.dir.glob("part-*.parquet"):
            m = _PART.fullmatch(f.name)
            if m and self._readable(f):
                done.add(int(m.group(1)))
        return done

    def _readable(self, f: Path) -> bool:
        try:
            read_table_metadata(f)
            return True
        except Exception as exc:  # noqa: BLE001 - a damaged part is embedded again, not trusted
            warnings.warn(f"{f} is damaged ({type(exc).__name__}); its sites are embedded again.", stacklevel=4)
            f.unlink(missing_ok=True)
            return False

    def write_part(self, p: int, table: pd.DataFrame, rows: list[list[int]], skipped: list[dict]) -> None:
        """Write part ``p`` (atomic): its rows, their positions, its skipped sites and this run's digest."""
        path = self.part_file(p)
        with disk_full_explained(path, f"rerun the same command with --resume: the finished parts in "
                                       f"{self.dir} are kept."):
            write_table(table, path, metadata={"rows": rows, "skipped": skipped, "run": self.run})

    def read(self, part_ids: Sequence[int], meta_cols: list[str], columns: list[str]) -> tuple[pd.DataFrame, list[dict]]:
        """The parts' rows in order, and their skipped sites; refuses parts of another run."""
        frames, skipped = [], []
        for p in part_ids:
            f = self.part_file(p)
            if not f.is_file():
                raise DataError(f"{f} is missing; rerun with --resume to embed its sites.")
            df = read_table(f)
            md = df.attrs.get("gandl", {})
            if md.get("run", self.run) != self.run:
                raise DataError(f"{f} was written by another run (another checkpoint, data or options) while "
                                f"this one was writing {self.out}: two writers shared it (a filesystem whose "
                                "locks do not work?). Nothing was written; embed again with --overwrite, one "
                                "writer at a time.")
            skipped += md.get("skipped", [])
            frames.append(df)
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=meta_cols + columns)
        df = df.astype({c: np.float32 for c in columns})  # one cast: per-column assignment fragments the frame
        df.attrs = {}
        return df, skipped

    def finish(self, df: pd.DataFrame, info: dict) -> None:
        """Write the finished table (atomic) and remove the parts."""
        with disk_full_explained(self.out, f"rerun the same command with --resume: the finished parts in "
                                           f"{self.dir} are kept."):
            write_table(df, self.out, metadata=info)
        shutil.rmtree(self.dir, ignore_errors=True)
