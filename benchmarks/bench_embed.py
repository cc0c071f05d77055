"""Embedding throughput and memory: end-to-end sites/s vs forward-only sites/s, peak RSS vs plate size.

What is measured, in one run (ratios compare like with like on a shared machine):

1. **forward-only**: the featurizer (a StyleGAN2 discriminator, random weights: speed does not
   depend on the weights) on already decoded, normalized, tiled sites held in memory, at the same
   batch size -- the ceiling the engine can reach;
2. **end-to-end**: :func:`gandl_core.embed.embed_iter` on real 16-bit PNG files (decode +
   normalize + tile + forward + Parquet parts + merge), with ``--workers`` DataLoader processes;
3. **peak RSS** of a whole embedding run (main process + its workers, ``resource.getrusage``
   maxrss) for ``--rss-sites`` plate sizes, each in a fresh subprocess: it must stay flat.

PNGs come from ``gandl_core.synth.make_screen`` (the synthetic screen) when available; the index
cycles over its sites to reach ``--sites`` rows (every row is a real file decode).

Example (the numbers in docs/benchmarks.md)::

    OMP_NUM_THREADS=1 python benchmarks/bench_embed.py --sites 256 --size 256 --resolution 64 \
        --batch-size 16 --workers 1 --threads 1 --rss-sites 100,1000 --json bench_embed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling helpers, also when loaded by path
from _bench_common import cpu_model  # noqa: E402


def _own_plate(root: Path, n_files: int, size: int, channels: int, seed: int = 0) -> pd.DataFrame:
    """Fallback plate: cell-like Gaussian blobs + Poisson noise, 16-bit PNG per channel."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for i in range(n_files):
        well = f"{'BCDEFG'[i // 10 % 6]}{i % 10 + 2:02d}"
        row = {"Metadata_Plate": "Bench1", "Metadata_Well": well, "Metadata_Site": i // 60 + 1}
        for c in range(channels):
            img = np.full((size, size), 300.0)
            for _ in range(max(4, size * size // 4000)):
                cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(4, 12)
                img += rng.uniform(2000, 8000) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            img = rng.poisson(img).clip(0, 65535).astype(np.uint16)
            f = root / f"{well}_s{row['Metadata_Site']}_w{c + 1}.png"
            Image.fromarray(img).save(f)
            row[f"Path_ch{c + 1}"] = str(f)
        rows.append(row)
    return pd.DataFrame(rows)


def make_index(root: Path, n_sites: int, size: int, channels: int) -> tuple[pd.DataFrame, str]:
    """An index of ``n_sites`` rows pointing at real PNG files (cycled if fewer files exist)."""
    root.mkdir(parents=True, exist_ok=True)
    cached = root / "base_index.parquet"  # the RSS subprocesses reuse the parent's files
    if cached.is_file():
        base = pd.read_parquet(cached)
        return _cycle(base, n_sites), (root / "source.txt").read_text()
    try:
        from gandl_core.plates import build_index
        from gandl_core.synth import make_screen

        if channels != 5:
            raise ImportError("the synthetic screen has 5 channels")
        base = build_index(make_screen(root / "screen", plates=1, seed=0, image_size=size))
        source = "gandl_core.synth.make_screen"
    except ImportError:
        base = _own_plate(root, min(n_sites, 64), size, channels)
        source = "own blob PNGs"
    base.to_parquet(cached)
    (root / "source.txt").write_text(source)
    return _cycle(base, n_sites), source


def _cycle(base: pd.DataFrame, n_sites: int) -> pd.DataFrame:
    reps = -(-n_sites // len(base))
    index = pd.concat([base] * reps, ignore_index=True).iloc[:n_sites].copy()
    # Distinct site numbers keep rows distinguishable even when files repeat.
    index["Metadata_Site"] = np.arange(1, len(index) + 1)
    index["Metadata_Well"] = "B02"
    return index.reset_index(drop=True)


def make_featurizer(index: pd.DataFrame, args: argparse.Namespace):
    import torch

    from gandl_core.featurizers.base import GanFeaturizer
    from gandl_core.plates import IntensityNormalizer, channel_names
    from gandl_core.gan.stylegan2 import Discriminator

    torch.manual_seed(0)
    names = channel_names(index)
    D = Discriminator(args.resolution, len(names), channel_base=args.channel_base, channel_max=args.channel_max)
    norm = IntensityNormalizer().fit(index, n_sites=min(len(index), 16))
    return GanFeaturizer.from_discriminator(D, norm, names)


def forward_only(index: pd.DataFrame, fz, args: argparse.Namespace) -> dict:
    import torch

    from gandl_core.embed import forward_sites as _forward
    from gandl_core.plates import PlateDataset

    ds = PlateDataset(index, fz.normalizer, fz.resolution, mode=args.field_mode)
    tiles = []
    for i in range(args.batch_size):
        x = ds[i % len(index)]
        tiles.append(x if x.ndim == 4 else x.unsqueeze(0))
    _forward(fz, tiles, args.batch_size)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        _forward(fz, tiles, args.batch_size)
        best = min(best, time.perf_counter() - t)
    return {"forward_sites_per_s": args.batch_size / best, "tiles_per_site": int(tiles[0].shape[0]),
            "forward_s_per_batch": best}


def end_to_end(index: pd.DataFrame, fz, args: argparse.Namespace, workdir: Path) -> dict:
    from gandl_core.embed import embed_iter
    from gandl_core.progress import run_to_end

    best = float("inf")
    for r in range(args.repeats_e2e):
        out = workdir / f"emb{r}.parquet"
        t = time.perf_counter()
        df = run_to_end(embed_iter(index, fz, out=out, batch_size=args.batch_size, num_workers=args.workers,
                                   field_mode=args.field_mode, overwrite=True))
        best = min(best, time.perf_counter() - t)
        assert len(df) == len(index)
    return {"e2e_sites_per_s": len(index) / best, "e2e_seconds": best}


def rss_child(args: argparse.Namespace) -> None:
    """Run one embedding of ``--rss-child`` sites and print peak RSS (MiB) as JSON."""
    import torch

    from gandl_core.embed import embed_iter
    from gandl_core.progress import run_to_end

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        index, _ = make_index(Path(args.data_dir), args.rss_child, args.size, args.channels)
        fz = make_featurizer(index, args)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        run_to_end(embed_iter(index, fz, out=Path(tmp) / "e.parquet", batch_size=args.batch_size,
                              num_workers=args.workers, field_mode=args.field_mode))
        me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"sites": args.rss_child, "rss_main_mib": me, "rss_before_embed_mib": before,
                      "rss_worker_max_mib": kids}))


def separation(df: pd.DataFrame, *, positive: str = "Metadata_Role == 'positive'",
               negative: str = "Metadata_Role == 'negative'", seed: int = 0) -> dict:
    """How well C+ and C- controls separate, always scored on wells the model did not see.

    ``site_acc``: linear-SVM accuracy on sites, GroupKFold by well (no well in both train and
    test). ``well_acc``: the same on well profiles (median of sites, each plate standardized to all
    its wells), leave-one-well-out. ``site_d`` / ``well_d``: d' of the out-of-fold SVM decision
    values, ``(mean+ - mean-) / pooled sd`` -- keeps ranking embeddings once accuracy saturates at 1.
    """
    from sklearn.model_selection import GroupKFold, LeaveOneOut, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from gandl_core.analysis.profiles import aggregate, normalize_plates
    from gandl_core.selection import select

    def dprime(score: np.ndarray, y: np.ndarray) -> float:
        a, b = score[y == 1], score[y == 0]
        return float((a.mean() - b.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2 + 1e-12))

    clf = make_pipeline(StandardScaler(), LinearSVC(C=0.1, max_iter=20000, random_state=seed))
    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    pos, neg = select(df, positive, option="positive").to_numpy(), select(df, negative, option="negative").to_numpy()
    sites = df[pos | neg]
    y = pos[pos | neg].astype(int)
    groups = (sites.Metadata_Plate.astype(str) + "/" + sites.Metadata_Well.astype(str)).to_numpy()
    cv = GroupKFold(n_splits=min(5, len(set(groups))))
    s_score = cross_val_predict(clf, sites[feats].to_numpy(), y, groups=groups, cv=cv, method="decision_function")
    wells = normalize_plates(aggregate(df), controls=None)
    wp = select(wells, positive, option="positive").to_numpy()
    wn = select(wells, negative, option="negative").to_numpy()
    w = wells[wp | wn]
    wy = wp[wp | wn].astype(int)
    w_score = cross_val_predict(clf, w[feats].to_numpy(), wy, cv=LeaveOneOut(), method="decision_function")
    return {"site_acc": float(((s_score > 0) == y).mean()), "site_d": dprime(s_score, y),
            "well_acc": float(((w_score > 0) == wy).mean()), "well_d": dprime(w_score, wy),
            "n_pos_wells": int(wy.sum()), "n_neg_wells": int((wy == 0).sum()), "n_sites": int(len(sites))}


def separation_main(args: argparse.Namespace) -> dict:
    """Field mode x (trained, random-weight) discriminator: C+/C- separation on a screen."""
    import torch

    from gandl_core.checkpoint import build_discriminator, load_checkpoint
    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.base import GanFeaturizer
    from gandl_core.plates import build_index
    from gandl_core.progress import run_to_end

    torch.set_num_threads(args.threads)
    index = build_index(args.screen)
    trained = GanFeaturizer.from_checkpoint(args.separation)
    config = load_checkpoint(args.separation)["config"]
    res = {"screen": str(args.screen), "checkpoint": str(args.separation), "sites": len(index),
           "kimg": trained.identity()["checkpoint"].get("kimg")}
    modes = [m for m in args.modes.split(",") if m]
    featurizers = [("trained", trained)]
    for seed in [int(x) for x in str(args.seed).split(",")]:
        torch.manual_seed(seed)  # the trained run's architecture, freshly initialized
        D_rand = build_discriminator(config)
        featurizers.append((f"random{seed}", GanFeaturizer.from_discriminator(
            D_rand, trained.normalizer, trained.channels, prefix="RandD_", scale=trained.scale)))
    for name, fz in featurizers:
        for mode in modes:
            t = time.perf_counter()
            df = run_to_end(embed_iter(index, fz, field_mode=mode, batch_size=args.batch_size,
                                       num_workers=args.workers))
            r = separation(df)
            r["embed_s"] = time.perf_counter() - t
            res[f"{name}/{mode}"] = r
            print(name, mode, json.dumps(r), flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=256, help="sites of the end-to-end run")
    p.add_argument("--size", type=int, default=256, help="field side in pixels")
    p.add_argument("--channels", type=int, default=5)
    p.add_argument("--resolution", type=int, default=64, help="discriminator resolution (tile side)")
    p.add_argument("--channel-base", type=int, default=4096)
    p.add_argument("--channel-max", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    p.add_argument("--field-mode", default="tiles", choices=["tiles", "resize"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-e2e", type=int, default=2)
    p.add_argument("--rss-sites", default="", help="comma list of plate sizes for the peak-RSS runs")
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--separation", metavar="CKPT", help="instead of timing: C+/C- separation of this checkpoint's "
                   "discriminator vs the same network with random weights, per field mode, on --screen")
    p.add_argument("--screen", help="synthetic screen folder for --separation")
    p.add_argument("--modes", default="tiles,resize")
    p.add_argument("--seed", default="0", help="random-weight seeds for --separation, e.g. 0,1")
    p.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    import torch

    if args.rss_child:
        rss_child(args)
        return 0
    if args.separation:
        res = separation_main(args)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0
    torch.set_num_threads(args.threads)
    res: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
                 "threads": args.threads, "config": {k: v for k, v in vars(args).items()
                                                     if k not in ("rss_child", "data_dir", "json")}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        index, source = make_index(tmp / "data", args.sites, args.size, args.channels)
        res["data"] = {"source": source, "files": int(index.filter(like="Path_").stack().nunique()),
                       "setup_s": time.perf_counter() - t}
        fz = make_featurizer(index, args)
        res.update(forward_only(index, fz, args))
        res.update(end_to_end(index, fz, args, tmp))
        res["e2e_over_forward"] = res["e2e_sites_per_s"] / res["forward_sites_per_s"]
        # Other users of the cores slow the 2-process end-to-end run more than the 1-thread forward.
        res["loadavg_1min_after"] = os.getloadavg()[0]
        rss = []
        for n in [int(s) for s in args.rss_sites.split(",") if s.strip()]:
            cmd = [sys.executable, __file__, "--rss-child", str(n), "--data-dir", str(tmp / "data"),
                   "--size", str(args.size), "--channels", str(args.channels), "--resolution", str(args.resolution),
                   "--channel-base", str(args.channel_base), "--channel-max", str(args.channel_max),
                   "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                   "--threads", str(args.threads), "--field-mode", args.field_mode]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rss.append(json.loads(out.stdout.strip().splitlines()[-1]))
        res["rss"] = rss
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
