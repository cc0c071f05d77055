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
    unless ``overwrite=True`` (which replaces the whole table; the old one stays valid until then).
    ``<out>.lock`` is held for the whole run: a second writer of the same ``out`` (a second
    ``--overwrite`` too) is refused with a message naming the holder; the OS releases the lock when a
    run dies, so a killed run never blocks the next one. Temp files of writes cut short by a kill are
    removed by the next run. A full disk (or quota) stops the run with one line naming the file and
    the fix; finished parts are kept for ``resume``.

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

Package layout
    :mod:`.plan` (options checked, sites selected, shard and torchrun rank resolved into an
    :class:`~.plan.EmbedPlan`), :mod:`.store` (:class:`~.store.PartStore`: lock, manifest, parts,
    resume, the finished table), :mod:`.sites` (the loader's dataset, the featurizer forward and
    :func:`~.sites.pool_tiles`, the tile -> field reduction), :mod:`.loop` (:func:`embed_iter`,
    :func:`embed`), :mod:`.shards` (:func:`merge_shards`, the torchrun finish).
"""

from __future__ import annotations

from .loop import embed, embed_iter
from .plan import DEFAULT_FIELD_MODE, DEFAULT_PART_SIZE, FIELD_MODES, EmbedPlan, make_plan, parse_shard, select_sites
from .shards import merge_shards
from .sites import forward_sites, pool_tiles
from .store import DiskFullError, PartStore, parts_dir, shard_path

__all__ = ["embed", "embed_iter", "select_sites", "merge_shards", "parse_shard", "shard_path", "parts_dir",
           "DEFAULT_FIELD_MODE", "DEFAULT_PART_SIZE", "FIELD_MODES", "EmbedPlan", "make_plan", "PartStore",
           "DiskFullError", "forward_sites", "pool_tiles"]
