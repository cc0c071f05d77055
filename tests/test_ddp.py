"""Distributed training under torchrun: 2 CPU ranks (gloo) share the batch and end with identical weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gandl_core.checkpoint import load_checkpoint
from gandl_core.gan.train import _StepBatches

STEP = 0.008  # cpu-tiny: 8 images per step (4 per rank with 2 ranks)


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("torchrun")
    if not found:
        pytest.skip("torchrun is not installed")
    return [found]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def _launch(args: list[str], env: dict) -> subprocess.CompletedProcess:
    gandl = str(Path(sys.executable).with_name("gandl-core"))
    return subprocess.run(_torchrun() + ["--standalone", "--nproc-per-node", "2", "--no-python", gandl, "train"]
                          + args, capture_output=True, text=True, timeout=180, env=env)


def test_rank_batches_partition_the_global_batch():
    """Each rank takes a disjoint half of the same global batch a single process would take."""
    one = _StepBatches(n=10, batch=8, seed=3, start_step=0, rank=0, world=1)
    r0 = _StepBatches(n=10, batch=8, seed=3, start_step=0, rank=0, world=2)
    r1 = _StepBatches(n=10, batch=8, seed=3, start_step=0, rank=1, world=2)
    for step in range(5):
        whole = one.batch_at(step)
        assert r0.batch_at(step) + r1.batch_at(step) == whole
        assert len(r0.batch_at(step)) == len(r1.batch_at(step)) == 4
    # every site appears once per epoch (10 sites, 8 per step: steps 0..1 cover 16 positions)
    seen = [i for s in range(5) for i, _ in one.batch_at(s)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))


def test_two_ranks_gloo_identical_weights(tmp_path, small_index_parquet):
    run, digests = tmp_path / "run", tmp_path / "digests"
    proc = _launch([str(small_index_parquet), "-o", str(run), "--preset", "cpu-tiny", "--kimg", str(2 * STEP),
                    "--device", "cpu"], _env(GANDL_TRAIN_RANK_DIGEST=str(digests)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # both ranks finished and hold bit-identical G, D, G_ema and the same ADA p
    d0 = json.loads((digests / "rank0.json").read_text())
    d1 = json.loads((digests / "rank1.json").read_text())
    assert d0 == d1 and d0["step"] == 2
    # rank 0 alone wrote the run folder; the checkpoint is the state the ranks agree on
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["step"] == 2 and state["kimg"] == pytest.approx(2 * STEP)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(x["world"] == 2 for x in lines)
    assert len(lines) == len({x["step"] for x in lines})  # one writer: no duplicated ticks
    assert all(x.get("ranks_in_sync", 1.0) == 1.0 for x in lines)
    assert proc.stdout.count("checkpoint:") == 1  # only rank 0 prints the summary


def test_batch_not_divisible_by_world_is_named(tmp_path, small_index_parquet):
    proc = _launch([str(small_index_parquet), "-o", str(tmp_path / "run"), "--preset", "cpu-tiny", "--kimg", str(STEP),
                    "--batch", "9"], _env())
    assert proc.returncode != 0
    assert "batch" in proc.stderr and "9" in proc.stderr and "divisible" in proc.stderr


def test_each_process_gets_its_own_gpu(monkeypatch):
    """cuda -> cuda:LOCAL_RANK under torchrun; too many processes for the GPUs is a named error."""
    import torch

    from gandl_core.errors import ConfigError
    from gandl_core.gan.train import _local_device

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert _local_device(torch.device("cpu")) == torch.device("cpu")  # gloo ranks share the CPU
    set_to = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: set_to.append(d))
    assert _local_device(torch.device("cuda")) == torch.device("cuda", 1) and set_to == [torch.device("cuda", 1)]
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="--nproc-per-node 2"):
        _local_device(torch.device("cuda"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _local_device(torch.device("cuda")) == torch.device("cuda")  # single process: untouched
