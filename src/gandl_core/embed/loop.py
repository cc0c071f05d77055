"""The embedding loop: plan, lock, read sites in batches, forward, write parts, assemble the table.

Read top to bottom: :func:`embed_iter` makes the plan and holds the writer locks; :func:`_run`
decides between "already done" and "embed"; :func:`_embed_sites` drives the loader; :class:`_Book`
keeps the sites in flight until their part is on disk; :func:`_assemble` builds the table.
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import ExitStack
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..locks import output_lock
from ..progress import Progress, ProgressGenerator, run_to_end
from .plan import DEFAULT_PART_SIZE, EmbedPlan, make_plan
from .shards import finish_torchrun
from .sites import forward_sites, make_loader, site_label
from .store import IDENTITY_KEYS, PartStore, frame, ranges, read_complete


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
        One writer at a time: a second run writing the same ``out`` is refused.
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
        What to do with an existing ``out`` or unfinished parts: continue / start over (an
        overwrite replaces the whole table; the old one stays valid until the new one is written).
    shard
        ``(k, n)`` or ``"k/n"``: embed only blocks k, k+n, k+2n ... of ``part_size`` sites.
        Under torchrun (``WORLD_SIZE > 1``) each rank embeds shard (RANK, WORLD_SIZE) into
        ``<out>.shard-RANK-of-WORLD_SIZE`` and rank 0 merges them into ``out``.
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
    OutputBusyError
        Another process is writing ``out``.
    DiskFullError
        No space left while writing a part or the table (finished parts are kept for ``resume``).
    """
    plan = make_plan(index, featurizer, out=out, wells=wells, sites=sites, batch_size=batch_size,
                     num_workers=num_workers, field_mode=field_mode, resume=resume, overwrite=overwrite,
                     shard=shard, device=device, skip_bad=skip_bad, part_size=part_size)
    store = PartStore(plan.out, plan.info, plan.part_size) if plan.out is not None else None
    with ExitStack() as held:
        if plan.torchrun is not None and plan.torchrun.rank == 0:
            held.enter_context(output_lock(plan.torchrun.merged, command="embed (torchrun rank 0)"))
        if store is not None:
            held.enter_context(store.lock())
            store.remove_temp_files()
        return (yield from _run(plan, store))


def _run(plan: EmbedPlan, store: PartStore | None) -> ProgressGenerator[pd.DataFrame]:
    """Return a finished table when resuming one, else embed; under torchrun, then merge."""
    job = plan.torchrun
    if job is not None and job.merged.exists() and plan.resume:
        # Already merged by an earlier torchrun launch: every rank returns it (nothing to embed).
        df = read_complete(job.merged, plan.info, [k for k in IDENTITY_KEYS if k not in ("shard", "part_size")])
        yield Progress(len(df), len(df), unit="sites", stage="embed", message=f"{job.merged} is complete; nothing to do.")
        return df
    done: set[int] = set()
    if store is not None:
        df = store.complete_table(resume=plan.resume, overwrite=plan.overwrite)
        if df is not None:
            yield Progress(len(df), len(df), unit="sites", stage="embed",
                           message=f"{store.out} is complete; nothing to do.")
            return (yield from finish_torchrun(job.merged, job.world, job.rank)) if job else df
        done = store.open(resume=plan.resume, overwrite=plan.overwrite)
    book = yield from _embed_sites(plan, store, done)
    df = _assemble(plan, store, book)
    if store is not None:
        store.finish(df, df.attrs["gandl"])
        n = len(plan.positions)
        yield Progress(n, n, unit="sites", stage="embed", message=f"wrote {store.out}", artifacts={"table": store.out})
    if job is not None:
        return (yield from finish_torchrun(job.merged, job.world, job.rank))
    return df


def _embed_sites(plan: EmbedPlan, store: PartStore | None, done: set[int]) -> ProgressGenerator["_Book"]:
    """Embed the plan's sites not in finished parts ``done``, in index order, batch by batch."""
    positions = plan.positions
    todo = positions[~np.isin(positions // plan.part_size, list(done))] if done else positions
    n_total, n_resumed = len(positions), len(positions) - len(todo)
    book = _Book(plan, store, todo)
    loader = None
    t0 = time.perf_counter()
    count = 0
    try:
        yield Progress(n_resumed, n_total, unit="sites", stage="embed",
                       message=(f"resuming: {n_resumed} of {n_total} sites already embedded" if n_resumed else ""),
                       metrics={"sites/s": 0.0, "skipped": 0})
        if len(todo):
            loader = make_loader(plan, todo)
            for batch in loader:
                book.add(batch)
                count += len(batch)
                rate = count / max(time.perf_counter() - t0, 1e-9)
                yield Progress(n_resumed + count, n_total, unit="sites", stage="embed",
                               metrics={"sites/s": rate, "skipped": len(book.skipped)})
            del loader
            loader = None
    finally:
        if loader is not None:
            del loader  # shuts the worker processes down when the generator is closed early
    return book


class _Book:
    """Sites in flight: features waiting for their part to be written, sites left per part, skipped sites."""

    def __init__(self, plan: EmbedPlan, store: PartStore | None, todo: np.ndarray):
        self.plan, self.store = plan, store
        self.feats: dict[int, np.ndarray] = {}  # position -> features, dropped once its part is on disk
        self.skipped: list[dict] = []
        self.skipped_by_part: dict[int, list[dict]] = {}
        # Remaining sites per part, so a part is written the moment its last site is done.
        self.remaining: dict[int, int] = {}
        for p in todo // plan.part_size:
            self.remaining[int(p)] = self.remaining.get(int(p), 0) + 1

    def add(self, batch: list) -> None:
        """One loader batch of (position, tiles | None, error): forward, check, file under its part."""
        good = [(pos, x) for pos, x, err in batch if err is None]
        for pos, _, err in batch:
            if err is not None:
                self.bad(pos, err)
        if good:
            vecs = forward_sites(self.plan.featurizer, [x for _, x in good], self.plan.batch_size)
            for (pos, _), v in zip(good, vecs):
                if not np.isfinite(v).all():
                    self.bad(pos, "the features are NaN/inf (a diverged checkpoint or a broken image)")
                    continue
                self.feats[pos] = v.astype(np.float32, copy=False)
        for pos, _, _ in batch:
            p = int(pos) // self.plan.part_size
            self.remaining[p] -= 1
            if self.remaining[p] == 0 and self.store is not None:
                self._write_part(p)

    def bad(self, pos: int, err: str) -> None:
        """A site that cannot be embedded: stop naming it, or record it as skipped (``skip_bad``)."""
        label = site_label(self.plan.meta, pos)
        if not self.plan.skip_bad:
            kept = (f" Finished parts are kept in {self.store.dir}: after fixing it, rerun with --resume."
                    if self.store is not None else "")
            raise DataError(f"cannot embed {label}: {err}. Replace or remove the file, or pass "
                            f"--skip-bad (skip_bad=True) to skip such sites.{kept}")
        rec = {"position": int(pos), "site": label, "error": err}
        self.skipped.append(rec)
        self.skipped_by_part.setdefault(int(pos) // self.plan.part_size, []).append(rec)

    def _write_part(self, p: int) -> None:
        size = self.plan.part_size
        lo, hi = p * size, min((p + 1) * size, len(self.plan.index))
        order = [q for q in range(lo, hi) if q in self.feats]
        table = frame(self.plan.meta, order, self.feats, self.plan.columns)
        self.store.write_part(p, table, ranges(order), self.skipped_by_part.get(p, []))
        for q in order:
            del self.feats[q]  # memory stays flat: finished features live on disk now


def _assemble(plan: EmbedPlan, store: PartStore | None, book: _Book) -> pd.DataFrame:
    """The table of every embedded site in index order (read back from the parts when written)."""
    if store is not None:
        part_ids = sorted({int(p) for p in plan.positions // plan.part_size})
        df, skipped = store.read(part_ids, list(plan.meta.columns), plan.columns)
    else:
        df, skipped = frame(plan.meta, sorted(book.feats), book.feats, plan.columns), book.skipped
    bad = {int(s["position"]) for s in skipped}
    kept = [int(p) for p in plan.positions if int(p) not in bad]
    if len(kept) != len(df):  # pragma: no cover - internal consistency
        raise RuntimeError(f"{len(df)} rows but {len(kept)} positions")
    df.attrs["gandl"] = {**plan.info, "skipped": skipped, "n_sites": int(len(df)), "rows": ranges(kept)}
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable site(s): "
                      + "; ".join(f"{s['site']} ({s['error'][:120]})" for s in skipped[:5])
                      + (" ..." if len(skipped) > 5 else "") + " (listed in the table's metadata 'skipped').",
                      stacklevel=4)
    _warn_constant(df, plan.columns)
    return df


def _warn_constant(df: pd.DataFrame, columns: list[str]) -> None:
    if len(df) < 2:
        return
    x = df[columns].to_numpy(np.float64)
    const = [c for c, s in zip(columns, x.std(axis=0)) if s == 0]
    if len(const) == len(columns):
        warnings.warn(f"all {len(columns)} features are identical for every site: the featurizer "
                      "ignores its input (untrained or collapsed checkpoint?).", stacklevel=4)
    elif const:
        warnings.warn(f"{len(const)} of {len(columns)} features are constant over all sites "
                      f"(e.g. {const[:5]}); they carry no information (dead units).", stacklevel=4)


def embed(index: pd.DataFrame | str | os.PathLike, checkpoint: str | os.PathLike, *,
          device: str = "cpu", features: str | None = None, **kw: Any) -> pd.DataFrame:
    """GAN-DL embedding of a plate: discriminator features of a checkpoint, one row per site.

    Parameters
    ----------
    index
        Site index or anything ``plates.build_index`` accepts.
    checkpoint
        Training checkpoint (``<run>/checkpoints/latest.pt``) or run folder.
    device
        Where the discriminator runs.
    features
        Discriminator readout, ``"multiscale"`` (default) or ``"final"`` (:class:`GanFeaturizer`).
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
    from ..featurizers.base import GanFeaturizer

    extra = {"features": features} if features is not None else {}
    featurizer = GanFeaturizer.from_checkpoint(checkpoint, device=device, **extra)
    return run_to_end(embed_iter(index, featurizer, **kw))
