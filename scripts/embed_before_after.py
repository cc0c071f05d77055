"""Embed one small synthetic plate with the code at a git ref ("before") and with this tree ("after"),
then compare every table bit for bit.

Used to show that a refactor of the embedding engine changes no number. The same inputs (a
synthetic plate written once, a cpu-tiny checkpoint trained for a few seconds) are embedded by two
child processes, one importing ``gandl_core`` from ``git archive <ref> src`` and one from this
tree's ``src/``. Each child runs the same scenarios and writes its tables; the parent compares:

* ``plain``        ``embed(folder, checkpoint, out=...)`` (public API, tiles, 2 workers)
* ``memory``       ``embed_iter`` with no output file (random-d featurizer, ``field_mode="resize"``,
                   a wells subset), table written afterwards with its metadata
* ``sharded``      3 array-job shards (``part_size=8``) merged with ``merge_shards``
* ``resumed``      interrupted after 3 batches (``gen.close()``), then ``resume=True``
* ``killed``       a child process SIGKILLed after its first part file, then ``resume=True``
* ``skip_bad``     one corrupt image, ``skip_bad=True`` (the skipped site is in the metadata)
* ``cli``          ``gandl-core embed --shard 0/2, 1/2`` then ``--merge``
* ``index``        the site index each side builds from the folder (well names parsed there)

Compared per table: column names and dtypes, metadata columns (exact), the feature matrix's bytes,
the ``gandl`` file metadata, and the file's sha256.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python scripts/embed_before_after.py --ref main

Exit code 0 when every table is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("index", "plain", "memory", "sharded", "resumed", "killed", "skip_bad", "cli")


# ------------------------------------------------------------------------------------------------
# Inputs (made once, by this tree's code)
# ------------------------------------------------------------------------------------------------


def make_inputs(work: Path) -> tuple[Path, Path]:
    """A small synthetic plate (56 sites, 64 px) and a cpu-tiny checkpoint trained for seconds."""
    from gandl_core.gan.train import train
    from gandl_core.gan.train_config import TrainConfig
    from gandl_core.progress import run_to_end
    from gandl_core.synth import make_screen

    plate = work / "plate"
    if not (plate / "metadata.csv").is_file():
        make_screen(plate, plates=1, seed=3, image_size=64, sites=2, compounds=3, replicates=1, controls=4,
                    cell_types=("HRCE",))
    run = work / "run"
    ckpt = run / "checkpoints" / "latest.pt"
    if not ckpt.is_file():
        cfg = TrainConfig.from_preset("cpu-tiny", data=str(plate), out_dir=str(run), kimg=0.05, workers=0, device="cpu")
        run_to_end(train(cfg))
    return plate, ckpt


# ------------------------------------------------------------------------------------------------
# One side: run every scenario with whichever gandl_core is on sys.path
# ------------------------------------------------------------------------------------------------


def _save(df, path: Path) -> None:
    from gandl_core.tables import write_table

    write_table(df, path, metadata=df.attrs.get("gandl"))


def _killed_child(plate: str, ckpt: str, out: str) -> None:
    """Embed with parts of 8 sites, one site per batch; the parent SIGKILLs us mid-run."""
    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.base import GanFeaturizer
    from gandl_core.progress import run_to_end

    fz = GanFeaturizer.from_checkpoint(ckpt)

    class Slow:  # 50 ms per site, so the parent sees the first part and kills us before the end
        def __getattr__(self, k):
            return getattr(fz, k)

        def __call__(self, x):
            time.sleep(0.05)
            return fz(x)

    run_to_end(embed_iter(plate, Slow(), out=out, part_size=8, batch_size=1, num_workers=0))


def run_side(plate: Path, ckpt: Path, out: Path) -> None:
    import torch

    torch.set_num_threads(1)
    import gandl_core
    from gandl_core.cli import main as cli
    from gandl_core.embed import embed, embed_iter, merge_shards, parts_dir, shard_path
    from gandl_core.featurizers.base import GanFeaturizer
    from gandl_core.featurizers.random_d import random_d_featurizer
    from gandl_core.plates import build_index, channel_names
    from gandl_core.progress import run_to_end

    print(f"  gandl_core from {Path(gandl_core.__file__).parent}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    index = build_index(plate)
    _save(index, out / "index.parquet")
    fz = GanFeaturizer.from_checkpoint(ckpt)

    embed(plate, ckpt, out=out / "plain.parquet", num_workers=2, batch_size=8)

    rd = random_d_featurizer(channel_names(index), preset="cpu-tiny", seed=1)
    wells = sorted(set(index["Metadata_Well"]))[::3]
    _save(run_to_end(embed_iter(index, rd, field_mode="resize", wells=wells, batch_size=5)),
          out / "memory.parquet")

    sharded = out / "sharded.parquet"
    for k in range(3):
        run_to_end(embed_iter(index, fz, out=shard_path(sharded, k, 3), shard=(k, 3), part_size=8, batch_size=3))
    merge_shards(sharded)

    resumed = out / "resumed.parquet"
    gen = embed_iter(index, fz, out=resumed, part_size=8, batch_size=4, num_workers=1)
    for _ in range(4):  # start report + 3 batches of 4 sites = part 0 done, part 1 half done
        next(gen)
    gen.close()
    assert parts_dir(resumed).is_dir() and not resumed.exists()
    run_to_end(embed_iter(index, fz, out=resumed, part_size=8, batch_size=4, resume=True))

    killed = out / "killed.parquet"
    proc = subprocess.Popen([sys.executable, __file__, "--killed-child", str(plate), str(ckpt), str(killed)])
    part = parts_dir(killed) / "part-000000.parquet"
    t0 = time.time()
    while not part.exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert part.exists() and not killed.exists(), "the killed child finished or never wrote a part"
    run_to_end(embed_iter(index, fz, out=killed, part_size=8, batch_size=4, resume=True))

    bad = index.copy()
    broken = plate.parent / "broken_w2.png"  # shared by both sides: its path lands in the metadata
    broken.write_bytes(b"not a png")
    bad.loc[5, "Path_ER"] = str(broken)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_to_end(embed_iter(bad, fz, out=out / "skip_bad.parquet", skip_bad=True, part_size=8))

    idx = out / "cli_index.parquet"
    index.to_parquet(idx)
    for k in range(2):
        assert cli(["embed", str(idx), "-c", str(ckpt), "-o", str(out / "cli.parquet"), "--shard", f"{k}/2",
                    "--workers", "0", "--batch-size", "7"]) == 0
    assert cli(["embed", "--merge", "-o", str(out / "cli.parquet")]) == 0


# ------------------------------------------------------------------------------------------------
# Comparison
# ------------------------------------------------------------------------------------------------


def compare(before: Path, after: Path) -> list[dict]:
    import numpy as np

    from gandl_core.tables import read_table

    rows = []
    for name in SCENARIOS:
        fa, fb = before / f"{name}.parquet", after / f"{name}.parquet"
        a, b = read_table(fa), read_table(fb)
        meta = [c for c in a.columns if str(c).startswith("Metadata_") or str(c).startswith("Path_")]
        feats = [c for c in a.columns if c not in meta]
        same_cols = list(a.columns) == list(b.columns) and list(a.dtypes) == list(b.dtypes)
        same_meta = same_cols and a[meta].equals(b[meta])
        xa = np.ascontiguousarray(a[feats].to_numpy()) if same_cols else None
        xb = np.ascontiguousarray(b[feats].to_numpy()) if same_cols else None
        same_bytes = same_cols and xa.tobytes() == xb.tobytes()
        diff = float(np.max(np.abs(xa.astype(np.float64) - xb.astype(np.float64)))) if same_cols and xa.size else 0.0
        ma, mb = a.attrs.get("gandl"), b.attrs.get("gandl")
        sha = [hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in (fa, fb)]
        rows.append({"table": name, "rows": len(a), "features": len(feats), "columns": same_cols,
                     "metadata_cols": same_meta, "feature_bytes": same_bytes, "max_abs_diff": diff,
                     "file_metadata": json.dumps(ma, sort_keys=True) == json.dumps(mb, sort_keys=True),
                     "file_sha256": sha[0] == sha[1], "sha_before": sha[0], "sha_after": sha[1]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default="main", help="git ref of the 'before' code (default main)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--side", nargs=3, metavar=("PLATE", "CKPT", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--killed-child", nargs=3, metavar=("PLATE", "CKPT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.killed_child:
        _killed_child(*args.killed_child)
        return 0
    if args.side:
        run_side(*(Path(p) for p in args.side))
        return 0

    work = args.work or Path(tempfile.mkdtemp(prefix="embed-before-after-"))
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", args.ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    before_src = work / f"src-{commit[:10]}"
    if not before_src.is_dir():
        before_src.mkdir()
        archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "--strip-components=1", "-C", str(before_src)], input=archive, check=True)
    print(f"work folder {work}; before = {args.ref} ({commit[:10]}), after = {ROOT / 'src'}", flush=True)
    plate, ckpt = make_inputs(work)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    sides = {"before": before_src, "after": ROOT / "src"}
    for side, src in sides.items():
        out = work / side
        if out.exists():
            import shutil

            shutil.rmtree(out)
        print(f"{side}:", flush=True)
        t0 = time.time()
        subprocess.run([sys.executable, __file__, "--side", str(plate), str(ckpt), str(out)],
                       env=dict(env, PYTHONPATH=str(src)), check=True)
        print(f"  {time.time() - t0:.1f} s", flush=True)
    rows = compare(work / "before", work / "after")
    keys = ["table", "rows", "features", "columns", "metadata_cols", "feature_bytes", "max_abs_diff",
            "file_metadata", "file_sha256"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    ok = all(r["columns"] and r["metadata_cols"] and r["feature_bytes"] and r["file_metadata"] for r in rows)
    print("IDENTICAL" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
