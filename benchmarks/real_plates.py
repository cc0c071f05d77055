"""Real-plate benchmark: GAN-DL at fixed CPU budgets against its counterparts on the same plate.

For each seed: train GAN-DL (one run, stopped and resumed at each budget; resume replays exactly,
so the checkpoint at budget b is the one a b-long run would give), embed every budget's
checkpoint with each discriminator readout, embed the same architecture with random weights
(same seed, same readouts), train the convolutional autoencoder for the convae budget, and
featurize the plate by hand once. Every table is scored the same way:

* ``acc``  leave-one-well-out accuracy of a class-balanced linear SVM on the control wells
* ``z``    Z' of the held-out On scores (C+ scaled to +1, C- to -1, from the training wells)
* ``rho``  Spearman rho of the On score (SVM on all controls) with dose over the treated wells
           (synthetic screen: with the true rescue of each treated well)
* ``map``  replicate mAP (copairs, cosine) of treated wells with the same treatment and dose

Site features are averaged per well and z-scored over each plate's wells first. These are the
definitions of ``../shared/tools/dose_plate_metrics.py`` (an independent yardstick that shares no
code with the project); ``--check-tool`` runs that script on the written tables as a cross-check.

Budgets are given in kimg (images shown to D); ``--sec-per-kimg`` converts them to minutes on
the machine the rate was measured on, so parallel runs on a busy machine stay comparable.

Usage::

    python benchmarks/real_plates.py bbbc016 --seeds 0 1 2 --kimg 30 60 120 --out artifacts/rp16
    python benchmarks/real_plates.py synthetic --seeds 0 1 2 --kimg 30 60 --out artifacts/rpsyn
    python benchmarks/real_plates.py summarize artifacts/rp16 artifacts/rpsyn   # markdown tables
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


# ------------------------------------------------------------------------------------------
# Plates
# ------------------------------------------------------------------------------------------

def plate_spec(name: str, work: Path) -> dict:
    """Data path and how its wells are labelled: ``neg``/``pos`` masks and a dose-like column."""
    if name == "bbbc016":
        root = SHARED / "data" / "bbbc016_transfluor_dose"
        return {"data": str(root / "load_data.csv"), "dose": "Metadata_Dose",
                "neg": lambda w: w.Metadata_Dose == 0, "pos": lambda w: w.Metadata_Dose.between(10, 30),
                "replicate": ["Metadata_Dose"]}
    if name == "synthetic":
        from gandl_core.synth import make_screen

        root = work / "screen"
        if not (root / "metadata.csv").is_file():
            make_screen(root, seed=0)
        truth = pd.read_csv(root / "wells.csv")
        truth["Metadata_Plate"] = truth.experiment + "_Plate" + truth.plate.astype(str)
        truth = truth.rename(columns={"well": "Metadata_Well"})[["Metadata_Plate", "Metadata_Well", "true_rescue"]]
        return {"data": str(root), "dose": "true_rescue", "truth": truth,
                "neg": lambda w: w.Metadata_Role == "negative", "pos": lambda w: w.Metadata_Role == "positive",
                "replicate": ["Metadata_Treatment", "Metadata_Concentration"]}
    if name == "bbbc022":  # smoke only: no treatment labels; A14/B13 (likely mock) vs the rest
        root = SHARED / "data" / "bbbc022_cellpainting_sample"
        return {"data": str(root / "load_data.csv"), "dose": None,
                "neg": lambda w: w.Metadata_Well.isin(["A14", "B13"]), "pos": lambda w: ~w.Metadata_Well.isin(["A14", "B13"]),
                "replicate": []}
    path = Path(name)
    if path.suffix == ".csv":  # any LoadData CSV with Metadata_Dose and Metadata_Role
        return {"data": str(path), "dose": "Metadata_Dose",
                "neg": lambda w: w.Metadata_Role == "negative",
                "pos": lambda w: w.Metadata_Role == "positive",
                "replicate": ["Metadata_Dose"]}
    raise SystemExit(f"unknown plate {name!r}: bbbc016, synthetic, bbbc022 or a LoadData .csv")


# ------------------------------------------------------------------------------------------
# Scoring (the definitions of shared/tools/dose_plate_metrics.py)
# ------------------------------------------------------------------------------------------

def well_matrix(table: pd.DataFrame, spec: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """Well means of the site features, z-scored over the plate's wells."""
    feats = [c for c in table.columns if not c.startswith("Metadata_")]
    keys = ["Metadata_Plate", "Metadata_Well"]
    meta_cols = [c for c in table.columns if c.startswith("Metadata_") and c not in ("Metadata_Site",)]
    wells = table[keys + feats].copy().groupby(keys, as_index=False)[feats].mean()
    meta = table[meta_cols].drop_duplicates(keys)
    wells = meta.merge(wells, on=keys)
    if spec.get("truth") is not None:
        wells = wells.merge(spec["truth"], on=keys, how="left")
    X = wells[feats].to_numpy(np.float64, copy=True)
    for plate in wells.Metadata_Plate.unique():  # each plate z-scored on its own wells (plate effects)
        rows = (wells.Metadata_Plate == plate).to_numpy()
        X[rows] = (X[rows] - X[rows].mean(0)) / (X[rows].std(0) + 1e-9)
    return wells.drop(columns=feats), X


def score_table(table: pd.DataFrame, spec: dict) -> dict:
    from scipy.stats import spearmanr
    from sklearn.svm import LinearSVC

    wells, X = well_matrix(table, spec)
    neg, pos = spec["neg"](wells).to_numpy(bool), spec["pos"](wells).to_numpy(bool)
    ctrl = np.flatnonzero(neg | pos)
    y = pos[ctrl].astype(int)

    def fit(idx):
        m = LinearSVC(C=1.0, class_weight="balanced", max_iter=20000).fit(X[ctrl[idx]], y[idx])
        s = m.decision_function(X[ctrl[idx]])
        hi, lo = s[y[idx] == 1].mean(), s[y[idx] == 0].mean()
        return m, (lambda Z: 2 * (m.decision_function(Z) - lo) / (hi - lo) - 1)

    pred, held = np.zeros(len(ctrl)), np.zeros(len(ctrl))
    for i in range(len(ctrl)):
        m, scale = fit(np.delete(np.arange(len(ctrl)), i))
        pred[i] = m.predict(X[ctrl[[i]]])[0]
        held[i] = scale(X[ctrl[[i]]])[0]
    sp, sn = held[y == 1], held[y == 0]
    out = {"acc": float((pred == y).mean()),
           "z": float(1 - 3 * (sp.std() + sn.std()) / abs(sp.mean() - sn.mean()))}
    _, scale = fit(np.arange(len(ctrl)))
    on = scale(X)
    # As the shared tool: every well the plate map calls treated (BBBC016's C+ wells are its top doses).
    treated = (wells.get("Metadata_Role", pd.Series("treated", index=wells.index)) == "treated").to_numpy() & ~neg
    if spec["dose"] and treated.sum() > 2:
        out["rho"] = float(spearmanr(wells[spec["dose"]].to_numpy()[treated], on[treated]).statistic)
    if spec["replicate"] and treated.sum() > 3:
        from gandl_core.analysis.metrics import mean_ap

        prof = wells.loc[treated, spec["replicate"]].reset_index(drop=True).copy()
        prof = prof.rename(columns={c: c if c.startswith("Metadata_") else "Metadata_" + c for c in prof.columns})
        same = list(prof.columns)
        prof = pd.concat([prof, pd.DataFrame(X[treated], columns=[f"f{i}" for i in range(X.shape[1])])], axis=1)
        out["map"], _ = mean_ap(prof, sameby=same, null_size=100)
    return out


# ------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------

def _embed(index, featurizer, path: Path) -> tuple[pd.DataFrame, float]:
    from gandl_core.embed import embed_iter
    from gandl_core.progress import run_to_end

    if path.is_file():
        return pd.read_parquet(path), float("nan")
    t0 = time.perf_counter()
    df = run_to_end(embed_iter(index, featurizer, out=path, batch_size=16))
    return df, time.perf_counter() - t0


def train_budgets(spec: dict, index, seed: int, budgets: list[float], run: Path, overrides: dict,
                  preset: str) -> dict[float, tuple[Path, float]]:
    """Train once, stopping at each budget (kimg); returns {budget: (checkpoint copy, seconds)}."""
    from gandl_core.gan.train import train
    from gandl_core.gan.train_config import TrainConfig
    from gandl_core.plates import channel_names
    from gandl_core.progress import run_to_end

    out, elapsed = {}, 0.0
    names = channel_names(index)
    for i, kimg in enumerate(sorted(budgets)):
        keep = run / f"kimg{kimg:g}.pt"
        if keep.is_file():
            out[kimg] = (keep, json.loads(keep.with_suffix(".json").read_text())["seconds"])
            elapsed = out[kimg][1]
            continue
        cfg = TrainConfig.from_preset(preset, out_dir=str(run / "train"), data=spec["data"], kimg=kimg, seed=seed,
                                      channels=len(names), channel_names=names, **overrides)
        t0 = time.perf_counter()
        ckpt = run_to_end(train(cfg, index, resume=(run / "train" / "checkpoints" / "latest.pt").is_file()))
        elapsed += time.perf_counter() - t0
        shutil.copy2(ckpt, keep)
        keep.with_suffix(".json").write_text(json.dumps({"seconds": elapsed, "kimg": kimg}))
        out[kimg] = (keep, elapsed)
    return out


def run_seed(plate: str, spec: dict, seed: int, args, work: Path) -> list[dict]:
    from gandl_core.featurizers.base import GanFeaturizer
    from gandl_core.featurizers.registry import make_featurizer
    from gandl_core.plates import build_index, channel_names

    index = build_index(spec["data"])
    names = channel_names(index)
    run = work / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    overrides = {k: _num(v) for k, v in overrides.items()}
    rows = []

    def record(method, readout, budget, seconds, df, embed_s):
        m = score_table(df, spec)
        rows.append({"plate": plate, "seed": seed, "method": method, "features": readout, "kimg": budget,
                     "train_s": seconds, "embed_s": embed_s, "n_features": sum(not c.startswith("Metadata_") for c in df.columns), **m})
        print(json.dumps(rows[-1]), flush=True)

    ckpts = {}
    if "gan" in args.methods:
        ckpts = train_budgets(spec, index, seed, args.kimg, run, overrides, args.preset)
        for kimg, (ck, secs) in ckpts.items():
            for readout in args.features:
                fz = GanFeaturizer.from_checkpoint(ck, features=readout)
                df, es = _embed(index, fz, run / f"gan_k{kimg:g}_{readout}.parquet")
                record("gan", readout, kimg, secs, df, es)
    if "random-d" in args.methods:
        # The trained run's architecture and normalizer when there is one, else the preset's.
        arch = {"checkpoint": str(next(iter(ckpts.values()))[0])} if ckpts else {"preset": args.preset}
        for readout in args.features:
            fz = make_featurizer("random-d", names, seed=seed, features=readout, **arch)
            df, es = _embed(index, fz, run / f"randd_{readout}.parquet")
            record("random-d", readout, 0, 0.0, df, es)
    if "convae" in args.methods:
        df, secs, es = _convae(spec, index, seed, args.convae_kimg, run)
        record("convae", "", args.convae_kimg, secs, df, es)
    if "handcrafted" in args.methods:
        path = work / "handcrafted.parquet"
        fz = make_featurizer("handcrafted", names)
        df, es = _embed(index, fz, path)
        record("handcrafted", "", 0, 0.0, df, es)
    return rows


def _convae(spec, index, seed, kimg, run):
    from gandl_core.featurizers.convae import ConvAEConfig, ConvAEFeaturizer, train_convae
    from gandl_core.progress import run_to_end

    folder = run / "convae"
    done = folder / "done.json"
    t0, secs = time.perf_counter(), None
    if done.is_file():
        secs = json.loads(done.read_text())["seconds"]
        ckpt = json.loads(done.read_text())["checkpoint"]
    else:
        cfg = ConvAEConfig(data=spec["data"], out=str(folder), kimg=kimg, seed=seed)
        ckpt = str(run_to_end(train_convae(cfg, index)))
        secs = time.perf_counter() - t0
        done.write_text(json.dumps({"seconds": secs, "checkpoint": ckpt}))
    df, es = _embed(index, ConvAEFeaturizer.from_checkpoint(ckpt), run / "convae.parquet")
    return df, secs, es


def _num(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


# ------------------------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------------------------

def summarize(folders: list[str], sec_per_kimg: float | None) -> str:
    rows = []
    for f in folders:
        p = Path(f) / "results.jsonl"
        rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    df = pd.DataFrame(rows)
    df["features"] = df["features"].fillna("")
    lines = []
    for plate, g in df.groupby("plate", sort=False):
        lines += [f"### {plate} ({g.seed.nunique()} seeds, mean ± sd)", "",
                  "| method | readout | budget | acc | Z′ | ρ | mAP | train min | embed min |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for (method, readout, kimg), h in g.groupby(["method", "features", "kimg"], sort=False):
            budget = "–" if method in ("handcrafted", "random-d") else f"{kimg:g} kimg"
            if sec_per_kimg and method == "gan":
                budget += f" (≈{kimg * sec_per_kimg / 60:.0f} min)"
            cells = [f"{h[m].mean():+.2f} ± {h[m].std(ddof=1) if len(h) > 1 else 0:.2f}" if m in h and h[m].notna().any()
                     else "–" for m in ("acc", "z", "rho", "map")]
            cells += [f"{h[m].mean() / 60:.1f}" if m in h and h[m].notna().any() and h[m].mean() > 0 else "–"
                      for m in ("train_s", "embed_s")]  # wall minutes of this (single-thread, shared) run
            lines.append(f"| {method} | {readout or '–'} | {budget} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plate", help="bbbc016 | synthetic | bbbc022 | LoadData.csv | summarize")
    ap.add_argument("folders", nargs="*", help="summarize: result folders")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--kimg", type=float, nargs="+", default=[30.0, 60.0])
    ap.add_argument("--features", nargs="+", default=["final", "multiscale"])
    ap.add_argument("--methods", nargs="+", default=["gan", "random-d", "handcrafted", "convae"])
    ap.add_argument("--convae-kimg", type=float, default=20.0)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="TrainConfig overrides")
    ap.add_argument("--sec-per-kimg", type=float, default=None, help="idle 2-core training rate, for minutes")
    ap.add_argument("--out", default="artifacts/real_plates")
    ap.add_argument("--check-tool", action="store_true", help="also run shared/tools/dose_plate_metrics.py")
    args = ap.parse_args(argv)
    if args.plate == "summarize":
        print(summarize(args.folders, args.sec_per_kimg))
        return 0
    import torch

    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "2")))
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    spec = plate_spec(args.plate, work)
    (work / "command.txt").write_text(" ".join(sys.argv) + "\n" + _commit() + "\n")
    with open(work / "results.jsonl", "a") as fh:
        for seed in args.seeds:
            for row in run_seed(args.plate, spec, seed, args, work):
                fh.write(json.dumps(row) + "\n")
                fh.flush()
    if args.check_tool and args.plate == "bbbc016":
        tool = SHARED / "tools" / "dose_plate_metrics.py"
        tables = sorted(str(p) for p in work.rglob("*.parquet"))
        subprocess.run([sys.executable, str(tool), str(Path(spec["data"]).parent / "platemap.csv"), "0:0", "10:30",
                        *tables], check=False)
    print(summarize([str(work)], args.sec_per_kimg))
    return 0


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
