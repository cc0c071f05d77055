"""The embedding engine's parts: the run plan, the part store and the tile -> field reduction."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gandl_core.embed import PartStore, make_plan, parts_dir, pool_tiles, shard_path
from gandl_core.embed.store import differing, run_digest
from gandl_core.errors import DataError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_embed as te  # noqa: E402


@pytest.fixture()
def plate(tmp_path):
    import gandl_core.plates as plates

    index = te.make_index(tmp_path / "plate", plates=("P1",), sites=3)  # 12 sites
    return index, te.make_featurizer(plates, index)


def _plan(index, fz, **kw):
    opts = dict(out=None, wells=None, sites=None, batch_size=4, num_workers=0, field_mode=None, resume=False,
                overwrite=False, shard=None, device=None, skip_bad=False, part_size=2)
    return make_plan(index, fz, **{**opts, **kw})


def test_plan_resolves_shards_and_torchrun_ranks_without_rebinding(plate, tmp_path, monkeypatch) -> None:
    index, fz = plate
    whole = _plan(index, fz)
    assert whole.out is None and whole.shard is None and whole.torchrun is None
    assert whole.positions.tolist() == list(range(12)) and whole.dataset_mode == "tiles"
    assert whole.columns[0] == "GAN_000" and len(whole.columns) == 16 and whole.info["shard"] is None
    out = tmp_path / "emb.parquet"
    third = _plan(index, fz, out=shard_path(out, 1, 3), shard="1/3")  # blocks 1 and 4 of 2 sites
    assert third.positions.tolist() == [2, 3, 8, 9] and third.info["shard"] == [1, 3] and third.torchrun is None
    assert third.out == shard_path(out, 1, 3)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rank1 = _plan(index, fz, out=out)
    assert rank1.torchrun.rank == 1 and rank1.torchrun.world == 2 and rank1.torchrun.merged == out
    assert rank1.shard == (1, 2) and rank1.out == shard_path(out, 1, 2)
    assert rank1.positions.tolist() == [2, 3, 6, 7, 10, 11]


def test_pool_tiles_is_the_mean_over_tiles() -> None:
    feats = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])
    v = pool_tiles(feats)
    assert v.dtype == np.float32 and v.tolist() == [3.0, 3.0]
    assert pool_tiles(feats[:1]).tolist() == [1.0, 2.0]  # a resized/whole field is one tile


def test_part_store_round_trip_and_identity(plate, tmp_path) -> None:
    index, fz = plate
    plan = _plan(index, fz, out=tmp_path / "emb.parquet")
    store = PartStore(plan.out, plan.info, plan.part_size)
    assert store.dir == parts_dir(plan.out) and store.complete_table(resume=False, overwrite=False) is None
    assert store.open(resume=False, overwrite=False) == set()
    meta = plan.meta
    table = pd.concat([meta.iloc[2:4].reset_index(drop=True),
                       pd.DataFrame(np.ones((2, 16), np.float32), columns=plan.columns)], axis=1)
    store.write_part(1, table, [[2, 4]], [])
    with pytest.raises(DataError, match="holds parts of an unfinished run"):
        PartStore(plan.out, plan.info, 2).open(resume=False, overwrite=False)
    assert PartStore(plan.out, plan.info, 2).open(resume=True, overwrite=False) == {1}
    df, skipped = store.read([1], list(meta.columns), plan.columns)
    assert len(df) == 2 and skipped == [] and df[plan.columns].dtypes.unique().tolist() == [np.float32]
    other = dict(plan.info, field_mode="resize")
    assert differing(plan.info, other) == ["field_mode"] and run_digest(plan.info) != run_digest(other)
    with pytest.raises(DataError, match="field_mode differ"):
        PartStore(plan.out, other, 2).open(resume=True, overwrite=False)
    with pytest.raises(DataError, match="another run"):
        PartStore(plan.out, other, 2).read([1], list(meta.columns), plan.columns)
    assert PartStore(plan.out, other, 2).open(resume=False, overwrite=True) == set()  # overwrite: parts gone
    assert not store.part_file(1).exists()
