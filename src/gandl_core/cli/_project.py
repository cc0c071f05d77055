"""``gandl-core project``: On-/Off-perturbation scores of every well (the paper's E2 space)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_out_argument, add_overwrite_argument, check_queries, finite_float, write_staged


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "project",
        help="On-perturbation score (linear SVM between controls, C+=+1, C-=-1) and Off score of every well",
        description="Fit a linear SVM between the control wells; its normal is the On-perturbation axis, scaled "
        "so the C+ mean is +1 and the C- mean -1. Off = first principal direction orthogonal to On. Writes "
        "DIR/scores.parquet (Metadata_* + OnScore, OffScore, Metadata_Control), projection.json (Z' and SSMD out of fold -- "
        "each control well scored by an axis fitted without it -- plus the optimistic in-sample figures, counts), "
        "axes.csv (feature weights of On and Off; sorted by the standardized On weight), e2.png and on_heatmap.png (when wells are known).",
    )
    p.add_argument("profiles", metavar="PROFILES", help="profile table (.parquet/.csv)")
    p.add_argument("--positive", metavar="QUERY", help="selection of the C+ rows (default: Metadata_Role "
                   "== 'positive', else RxRx Mock untreated); comparisons, and/or/not, in; see docs/analysis.md")
    p.add_argument("--negative", metavar="QUERY", help="selection of the C- rows")
    p.add_argument("--C", type=finite_float, default=1.0, dest="C", help="SVM soft-margin penalty (default 1)")
    p.add_argument("--prefix", default=None, help="use only feature columns starting with this (e.g. GAN_)")
    p.add_argument("--color", default=None, help="E2 plot: colour column (default Metadata_Control)")
    p.add_argument("--marker", default="Metadata_CellType", help="E2 plot: marker column if present")
    add_out_argument(p, "DIR", "output folder")
    add_overwrite_argument(p, "project output in DIR")
    p.set_defaults(func=run)


FILES = ["scores.parquet", "projection.json", "axes.csv", "e2.png", "on_heatmap.png"]


def run(args: argparse.Namespace) -> int:
    check_queries(args, "positive", "negative")
    return write_staged(args, "project", FILES, _project)


def _project(args: argparse.Namespace, out: Path) -> list[str]:
    import numpy as np
    import pandas as pd

    from ..analysis import plots
    from ..analysis.projection import project_table
    from ..tables import write_table
    from ._evaluate import read_profiles, select_features, write_json

    df = read_profiles(args.profiles)
    proj, scores, stats = project_table(df, positive=args.positive, negative=args.negative, C=args.C,
                                        features=select_features(df, args.prefix))
    write_table(scores, out / "scores.parquet", metadata={"projection": stats, "source": str(args.profiles)})
    # Input-space weights depend on each feature's unit; the standardized weights (x sd) compare features.
    std_on = proj.coef_ * proj.scale_
    axes = pd.DataFrame({"feature": proj.feature_names_in_, "on_standardized": std_on / np.linalg.norm(std_on),
                         "on": proj.coef_, "off": proj.off_coef_})
    axes = axes.reindex(axes["on_standardized"].abs().sort_values(ascending=False).index)
    write_table(axes, out / "axes.csv")
    plot_df = scores.copy()
    plot_df["Metadata_Control"] = plot_df["Metadata_Control"].replace("", "treated")  # grey in plots.ROLE_COLOURS
    color = args.color or "Metadata_Control"
    marker = args.marker if args.marker in plot_df.columns else None
    plots.e2_scatter(plot_df, out / "e2.png", color=color if color in plot_df.columns else None, marker=marker)
    written = ["scores.parquet", "projection.json", "axes.csv", "e2.png"]
    if {"Metadata_Well", "Metadata_Plate"} <= set(scores.columns) and np.isfinite(scores["OnScore"]).any():
        plots.plate_heatmap(scores, "OnScore", out / "on_heatmap.png", title="On-perturbation score per well")
        written.append("on_heatmap.png")
    write_json(out / "projection.json", {"profiles": str(args.profiles), **stats})
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()
                      if k in ("z_prime", "ssmd", "z_prime_in_sample", "ssmd_in_sample", "n_positive", "n_negative")}))
    print(f"Z' = {stats['z_prime']:.3f}, {stats['z_prime_method']}; in sample (optimistic): "
          f"{stats['z_prime_in_sample']:.3f}")
    return written
