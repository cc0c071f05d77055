"""The embedding engine under attack: concurrent writers, overwrite during a run, disk full, kills.

Each test names the defect of the safety issue (#12) it covers. Tiny plates (16 sites of 32 px,
3 channels) and a 16 px discriminator keep each test at a few seconds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gandl_core.embed import embed_iter, merge_shards, parts_dir, shard_path
from gandl_core.errors import DataError, GandlError
from gandl_core.locks import OutputBusyError, lock_path, output_lock
from gandl_core.progress import run_to_end
from gandl_core.tables import read_table

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import test_embed as te  # noqa: E402  (the tiny plate and featurizer of the engine's own tests)

FEATS = te.FEATS


@pytest.fixture()
def plate(tmp_path):
    import gandl_core.plates as plates

    from gandl_core.featurizers.base import GanFeaturizer

    index = te.make_index(tmp_path / "plate")
    first = te.make_featurizer(plates, index, seed=0)
    # A second checkpoint: other weights and another identity (what the manifest and parts record).
    other = te.make_featurizer(plates, index, seed=1)
    other = GanFeaturizer.from_discriminator(other.module, other.normalizer, te.CHANNELS,
                                             info={"checkpoint": {"path": "other.pt", "sha256": "y"}})
    return index, first, other


def _tmp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


def _advance(gen, n: int) -> None:
    for _ in range(n):
        next(gen)


def _same(df: pd.DataFrame, ref: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(df.drop(columns=FEATS), ref.drop(columns=FEATS))
    np.testing.assert_allclose(df[FEATS].to_numpy(), ref[FEATS].to_numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# One writer per output (#12 item 2: two embeds into one output gave a table mixing two checkpoints)
# --------------------------------------------------------------------------------------------


def test_second_writer_is_refused_naming_the_holder(plate, tmp_path) -> None:
    index, fz_a, fz_b = plate
    out = tmp_path / "emb.parquet"
    first = embed_iter(index, fz_a, out=out, batch_size=2, part_size=4)
    _advance(first, 5)  # 8 sites done: parts 0 and 1 on disk, the run still going
    assert (parts_dir(out) / "part-000001.parquet").is_file()
    for kw in ({"overwrite": True}, {"resume": True}, {}):
        with pytest.raises(OutputBusyError) as err:
            run_to_end(embed_iter(index, fz_b, out=out, **kw))
        msg = str(err.value)
        assert str(out) in msg and f"pid {os.getpid()}" in msg and "'embed'" in msg
    # The first run was not disturbed: its table is entirely its own.
    _same(run_to_end(first), run_to_end(embed_iter(index, fz_a)))
    assert not lock_path(out).exists()
    # Once it has finished, --overwrite replaces the whole table with the second checkpoint's.
    run_to_end(embed_iter(index, fz_b, out=out, overwrite=True))
    _same(read_table(out), run_to_end(embed_iter(index, fz_b)))
    assert read_table(out).attrs["gandl"]["checkpoint"]["sha256"] == "y"


def test_writers_without_a_working_lock_never_mix_tables(plate, tmp_path, monkeypatch) -> None:
    """On a filesystem where locks do nothing (some network mounts), parts carry their run's identity."""
    with contextlib.suppress(ImportError):
        import gandl_core.embed.store as store

        monkeypatch.setattr(store, "output_lock", lambda *a, **k: contextlib.nullcontext())
    index, fz_a, fz_b = plate
    out = tmp_path / "emb.parquet"
    a = embed_iter(index, fz_a, out=out, batch_size=2, part_size=4)
    _advance(a, 5)  # A: parts 0 and 1 written
    b = embed_iter(index, fz_b, out=out, batch_size=2, part_size=4, overwrite=True)
    _advance(b, 5)  # B threw A's parts away and wrote its own parts 0 and 1
    # A goes on writing parts 2 and 3, then finds B's parts 0 and 1 among its own: refused, not mixed.
    with pytest.raises(DataError, match="another run"):
        run_to_end(a)
    assert not out.exists()
    # B finishes and rewrites its parts; its table is its own.
    _same(run_to_end(b), run_to_end(embed_iter(index, fz_b)))
    _same(read_table(out), run_to_end(embed_iter(index, fz_b)))


def test_merge_is_one_writer_too(plate, tmp_path) -> None:
    index, fz, _ = plate
    out = tmp_path / "emb.parquet"
    for k in range(2):
        run_to_end(embed_iter(index, fz, out=shard_path(out, k, 2), shard=(k, 2), part_size=4))
    with output_lock(out, command="embed --merge"):
        with pytest.raises(OutputBusyError, match="embed --merge"):
            merge_shards(out)
    assert shard_path(out, 0, 2).is_file() and not out.exists()
    _same(merge_shards(out), run_to_end(embed_iter(index, fz)))


# --------------------------------------------------------------------------------------------
# Disk full (#12 item 7: raw tracebacks; temp files left behind)
# --------------------------------------------------------------------------------------------


def _fill_disk(monkeypatch, err: int, when) -> list[str]:
    """Make pyarrow's Parquet writer write half a file, then fail like a full disk, for matching paths."""
    import pyarrow.parquet as pq

    real = pq.write_table
    hits: list[str] = []

    def write_table(table, where, *a, **k):
        if when(Path(where).name):
            hits.append(Path(where).name)
            Path(where).write_bytes(b"PAR1" + b"\0" * 100)
            raise OSError(err, os.strerror(err))
        return real(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", write_table)
    return hits


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_while_writing_a_part(plate, tmp_path, monkeypatch, err) -> None:
    index, fz, _ = plate
    out = tmp_path / "emb.parquet"
    hits = _fill_disk(monkeypatch, err, lambda name: name.startswith(".part-000002"))
    with pytest.raises(GandlError) as exc:
        run_to_end(embed_iter(index, fz, out=out, batch_size=2, part_size=4))
    msg = str(exc.value)
    assert hits and "\n" not in msg
    assert str(parts_dir(out) / "part-000002.parquet") in msg and os.strerror(err) in msg
    assert "free space" in msg.lower() and "--resume" in msg
    assert _tmp_files(tmp_path) == [] and not lock_path(out).exists()
    assert sorted(p.name for p in parts_dir(out).glob("part-*")) == ["part-000000.parquet", "part-000001.parquet"]
    monkeypatch.undo()
    counting = te.Counting(fz)
    df = run_to_end(embed_iter(index, counting, out=out, batch_size=2, part_size=4, resume=True))
    assert counting.images == 8 * 4  # parts 0 and 1 were kept
    _same(df, run_to_end(embed_iter(index, fz)))


def test_disk_full_while_writing_the_table_keeps_the_parts(plate, tmp_path, monkeypatch) -> None:
    index, fz, _ = plate
    out = tmp_path / "emb.parquet"
    _fill_disk(monkeypatch, errno.ENOSPC, lambda name: name.startswith(".emb.parquet."))
    with pytest.raises(GandlError) as exc:
        run_to_end(embed_iter(index, fz, out=out, part_size=4))
    msg = str(exc.value)
    assert str(out) in msg and "No space left on device" in msg and "--resume" in msg
    assert not out.exists() and _tmp_files(tmp_path) == []
    assert len(list(parts_dir(out).glob("part-*.parquet"))) == 4
    monkeypatch.undo()
    counting = te.Counting(fz)
    _same(run_to_end(embed_iter(index, counting, out=out, part_size=4, resume=True)), run_to_end(embed_iter(index, fz)))
    assert counting.images == 0  # every site was on disk already


def test_disk_full_while_merging_shards(plate, tmp_path, monkeypatch) -> None:
    index, fz, _ = plate
    out = tmp_path / "emb.parquet"
    for k in range(2):
        run_to_end(embed_iter(index, fz, out=shard_path(out, k, 2), shard=(k, 2), part_size=4))
    _fill_disk(monkeypatch, errno.ENOSPC, lambda name: name.startswith(".emb.parquet."))
    with pytest.raises(GandlError, match="No space left on device") as exc:
        merge_shards(out)
    assert str(out) in str(exc.value) and _tmp_files(tmp_path) == []
    assert shard_path(out, 0, 2).is_file() and shard_path(out, 1, 2).is_file()


# --------------------------------------------------------------------------------------------
# Kills (#12 items 2 and 7: stale locks recovered; a half .tmp from a kill mid-write cleaned)
# --------------------------------------------------------------------------------------------


def test_half_written_temp_files_and_a_stale_lock_are_cleaned(plate, tmp_path) -> None:
    index, fz, _ = plate
    out = tmp_path / "emb.parquet"
    gen = embed_iter(index, fz, out=out, batch_size=2, part_size=4)
    _advance(gen, 5)
    gen.close()
    # What a SIGKILL in the middle of writes leaves: temp files of the table, a part and the manifest,
    # and a lock file naming a process that no longer exists.
    pdir = parts_dir(out)
    (tmp_path / ".emb.parquet.k2x9f0.tmp").write_bytes(b"")
    (pdir / ".part-000002.parquet.a81kq3.tmp").write_bytes(b"PAR1" + b"\0" * 50)
    (pdir / ".manifest.json.zz01.tmp").write_text('{"kind": "embe')
    lock_path(out).write_text('{"pid": 999999, "host": "gone", "command": "embed", "since": 0}')
    (tmp_path / ".other.parquet.abc.tmp").write_bytes(b"")  # not ours: left alone
    df = run_to_end(embed_iter(index, fz, out=out, batch_size=2, part_size=4, resume=True))
    _same(df, run_to_end(embed_iter(index, fz)))
    assert _tmp_files(tmp_path) == [".other.parquet.abc.tmp"]
    assert not lock_path(out).exists() and not pdir.exists()


KILLED = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    import pandas as pd
    import test_embed as te
    import gandl_core.plates as plates
    from gandl_core.embed import embed_iter
    from gandl_core.progress import run_to_end

    index = pd.read_parquet(sys.argv[1])
    fz = te.make_featurizer(plates, index)

    class Slow(te.Counting):
        def __call__(self, batch):
            time.sleep(0.2)
            return super().__call__(batch)

    run_to_end(embed_iter(index, Slow(fz), out=sys.argv[2], part_size=4, batch_size=2))
    """
)


def test_sigkill_mid_run_then_resume(plate, tmp_path) -> None:
    index, fz, _ = plate
    idx = tmp_path / "index.parquet"
    index.to_parquet(idx)
    out = tmp_path / "emb.parquet"
    script = tmp_path / "killed.py"
    script.write_text(KILLED.format(tests=str(TESTS)))
    proc = subprocess.Popen([sys.executable, str(script), str(idx), str(out)])
    try:
        first = parts_dir(out) / "part-000000.parquet"
        t0 = time.time()
        while not first.exists() and proc.poll() is None and time.time() - t0 < 60:
            time.sleep(0.02)
        assert first.exists(), "the child never wrote a part"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    with pytest.raises(DataError, match="--resume"):  # the dead run's lock does not block; its parts are found
        run_to_end(embed_iter(index, fz, out=out, part_size=4, batch_size=2))
    df = run_to_end(embed_iter(index, fz, out=out, part_size=4, batch_size=2, resume=True))
    _same(df, run_to_end(embed_iter(index, fz, batch_size=2)))
    assert _tmp_files(tmp_path) == [] and not lock_path(out).exists()


def test_a_damaged_part_is_embedded_again_on_resume(plate, tmp_path) -> None:
    """A part cut short outside our atomic writes (a copy, a crash of the filesystem) is redone, not trusted."""
    index, fz, _ = plate
    out = tmp_path / "emb.parquet"
    gen = embed_iter(index, fz, out=out, batch_size=2, part_size=4)
    _advance(gen, 5)
    gen.close()
    part = parts_dir(out) / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:40])
    counting = te.Counting(fz)
    with pytest.warns(UserWarning, match="part-000001.parquet is damaged"):
        df = run_to_end(embed_iter(index, counting, out=out, batch_size=2, part_size=4, resume=True))
    assert counting.images == 12 * 4  # parts 1, 2 and 3; part 0 was kept
    _same(df, run_to_end(embed_iter(index, fz)))
