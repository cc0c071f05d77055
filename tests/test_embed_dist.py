"""Scale-out under torchrun: 2 CPU ranks (gloo) split the sites; the merged table equals one process's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gandl_core.embed import embed_iter
from gandl_core.progress import run_to_end
from gandl_core.tables import read_table

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import os, sys, warnings
    sys.path.insert(0, {tests!r})
    import pandas as pd
    import test_embed as te
    try:
        import gandl_core.plates as plates
    except ImportError:
        plates = te._fake_plates()
        sys.modules["gandl_core.plates"] = plates
    from gandl_core.embed import embed_iter
    from gandl_core.progress import run_to_end

    index = pd.read_parquet(sys.argv[1])
    fz = te.make_featurizer(plates, index)
    df = run_to_end(embed_iter(index, fz, out=sys.argv[2], part_size=3, batch_size=2))
    os.write(1, f"rank {{os.environ['RANK']}} rows {{len(df)}}\\n".encode())  # one write: ranks share stdout
    """
)


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("torchrun")
    if not found:
        pytest.skip("torchrun is not installed")
    return [found]


def test_torchrun_two_ranks_match_single_process(tmp_path) -> None:
    sys.path.insert(0, str(TESTS))
    import test_embed as te

    try:
        import gandl_core.plates as plates
    except ImportError:
        plates = te._fake_plates()
    index = te.make_index(tmp_path / "plate", wells=("B02", "B03", "B04", "C02", "C03"), sites=3)
    index_file = tmp_path / "index.parquet"
    index.to_parquet(index_file)
    script = tmp_path / "run_embed.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    out = tmp_path / "emb.parquet"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        _torchrun() + ["--standalone", "--nproc-per-node", "2", str(script), str(index_file), str(out)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 0 rows 30" in proc.stdout and "rank 1 rows 30" in proc.stdout
    # Shard files are merged away; the merged table equals a single-process run, row for row.
    assert not list(tmp_path.glob("emb.shard-*")) and out.is_file()
    merged = read_table(out)
    assert merged.attrs["gandl"]["merged_from"] == 2

    import gandl_core

    saved = sys.modules.get("gandl_core.plates")
    sys.modules["gandl_core.plates"] = plates
    try:
        ref = run_to_end(embed_iter(index, te.make_featurizer(plates, index)))
    finally:
        if saved is None:
            sys.modules.pop("gandl_core.plates", None)
    feats = [c for c in ref.columns if not c.startswith("Metadata_")]
    pd.testing.assert_frame_equal(merged.drop(columns=feats), ref.drop(columns=feats))
    np.testing.assert_allclose(merged[feats].to_numpy(), ref[feats].to_numpy(), rtol=1e-5, atol=1e-6)
    del gandl_core


def test_cli_under_torchrun_matches_single_process(tmp_path) -> None:
    """The same `gandl-core embed` command line, launched by torchrun, splits the sites over ranks."""
    pytest.importorskip("gandl_core.checkpoint")
    sys.path.insert(0, str(TESTS))
    import test_embed as te

    import gandl_core.checkpoint as ckpt_mod
    import gandl_core.plates as plates

    index = te.make_index(tmp_path / "plate", wells=("B02", "C02", "C03"), sites=3)
    index_file = tmp_path / "index.parquet"
    index.to_parquet(index_file)
    fz = te.make_featurizer(plates, index)
    ck = te.write_checkpoint(ckpt_mod, tmp_path / "ckpt.pt", fz)
    out = tmp_path / "emb.parquet"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    gandl = str(Path(sys.executable).with_name("gandl-core"))
    proc = subprocess.run(
        _torchrun() + ["--standalone", "--nproc-per-node", "2", "--no-python", gandl, "embed", str(index_file),
                       "--checkpoint", str(ck), "-o", str(out), "--workers", "0", "--batch-size", "4",
                       "--features", "final"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("wrote") == 1  # only rank 0 reports
    merged = read_table(out)
    assert merged.attrs["gandl"]["merged_from"] == 2 and not list(tmp_path.glob("emb.shard-*"))
    ref = run_to_end(embed_iter(index, fz))
    feats = [c for c in ref.columns if not c.startswith("Metadata_")]
    pd.testing.assert_frame_equal(merged.drop(columns=feats), ref.drop(columns=feats))
    np.testing.assert_allclose(merged[feats].to_numpy(), ref[feats].to_numpy(), rtol=1e-5, atol=1e-6)
