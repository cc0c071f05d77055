"""``gandl-core evaluate``: how well does a linear SVM separate the controls (or classify a label)?"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ._common import add_out_argument, add_overwrite_argument, check_queries, finite_float, write_staged


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="linear-SVM separability of control wells (or multi-class accuracy of a label) on held-out wells",
        description="Fit a soft-margin linear SVM (standardized features, balanced class weights) on a profile "
        "table and report accuracy on held-out wells: a 75/25 split by well (stratified by class) on large "
        "tables, K-fold cross-validation grouped by well on small ones (fewer than 80 wells: every well tested "
        "once), or --cv K. Features are standardized on the training wells of each fold, or over all wells "
        "of the table (label-free) with --scaler wells. Writes DIR/evaluation.json, predictions.csv, per_group.csv, confusion.csv "
        "and confusion.png.",
    )
    p.add_argument("profiles", metavar="PROFILES", help="profile table (.parquet/.csv) from embed/featurize/profile")
    p.add_argument("--positive", metavar="QUERY", help="selection of the C+ rows, e.g. \"Metadata_Role == "
                   "'positive'\" (default: Metadata_Role, else RxRx Mock/Active SARS-CoV-2 untreated); "
                   "comparisons, and/or/not, in; see docs/analysis.md")
    p.add_argument("--negative", metavar="QUERY", help="selection of the C- rows")
    p.add_argument("--label", metavar="COL", help="multi-class mode: predict this metadata column instead "
                   "(e.g. Metadata_CellType)")
    p.add_argument("--query", metavar="QUERY", help="with --label: restrict to the rows this selection picks")
    p.add_argument("--test", metavar="TABLE", help="with --label: zero-shot check -- fit on all of PROFILES, predict "
                   "TABLE (e.g. other plates or another experiment; features matched by column name)")
    p.add_argument("--by", metavar="COL", help="also report accuracy per value of this column")
    p.add_argument("--cv", type=_cv, default="auto", metavar="K|auto|split",
                   help="K-fold cross-validation grouped by well; 'split' = one 75/25 split; 'auto' (default) = "
                   "split with 80 wells or more, else min(5, wells of the smaller class) folds")
    p.add_argument("--scaler", choices=("controls", "wells"), default="controls",
                   help="standardize features on each fold's training wells (controls, default) or once over all "
                   "wells of the table, label-free (wells)")
    p.add_argument("--test-size", type=finite_float, default=0.25, help="fraction of wells held out (default 0.25)")
    p.add_argument("--group", default="Metadata_Well", help="column naming a well (plate is prepended); "
                   "'none' splits rows independently (default Metadata_Well)")
    p.add_argument("--C", type=finite_float, default=1.0, dest="C", help="SVM soft-margin penalty (default 1)")
    p.add_argument("--prefix", default=None, help="use only feature columns starting with this (e.g. GAN_); "
                   "default: every non-Metadata_ column")
    p.add_argument("--map", nargs="+", metavar="COL", dest="map_sameby",
                   help="also compute replicate-retrieval mAP (copairs, cosine): rows with equal values of these "
                   "columns are replicates, e.g. --map Metadata_Treatment Metadata_Concentration; writes map.csv")
    p.add_argument("--map-query", metavar="QUERY", help="rows used for mAP (e.g. \"Metadata_Role == 'treated'\")")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the SVM (default 0)")
    add_out_argument(p, "DIR", "output folder")
    add_overwrite_argument(p, "evaluate output in DIR")
    p.set_defaults(func=run)


FILES = ["evaluation.json", "predictions.csv", "per_group.csv", "confusion.csv", "confusion.png", "map.csv"]
def _cv(text: str) -> int | str | None:
    """--cv value: an integer K, 'auto' or 'split' (None: one 75/25 split)."""
    if text in ("auto", "split"):
        return None if text == "split" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give an integer K, 'auto' or 'split'") from None


def run(args: argparse.Namespace) -> int:
    check_queries(args, "positive", "negative", "query", "map_query")
    return write_staged(args, "evaluate", FILES, _evaluate)


def _evaluate(args: argparse.Namespace, out: Path) -> list[str]:
    from ..analysis import evaluation, plots
    from ..errors import ConfigError
    from ..tables import write_table

    df = read_profiles(args.profiles)
    group = None if str(args.group).lower() == "none" else args.group
    features = select_features(df, args.prefix)
    common = dict(features=features, group=group, test_size=args.test_size, cv=args.cv, C=args.C, seed=args.seed,
                  by=args.by, scaler=args.scaler)
    if args.test and not args.label:
        raise ConfigError("--test (zero-shot) needs --label COL: the column to predict on the other table.")
    if args.label:
        if args.positive or args.negative:
            raise ConfigError("give either --label (multi-class) or --positive/--negative (controls), not both.")
        if args.test:
            test = read_profiles(args.test)
            if args.query:
                df = df[evaluation.select(df, args.query, "--query")]
                test = test[evaluation.select(test, args.query, "--query")]
            res = evaluation.zero_shot(df, test, label=args.label, features=features, C=args.C, seed=args.seed)
        else:
            res = evaluation.classify(df, label=args.label, query=args.query, **common)
    else:
        res = evaluation.separability(df, positive=args.positive, negative=args.negative, **common)
    write_table(res.predictions, out / "predictions.csv")
    write_table(res.per_group, out / "per_group.csv")
    write_table(res.confusion.reset_index(), out / "confusion.csv")
    k = res.params.get("cv")
    how = ("zero-shot: fit on PROFILES, tested on " + Path(args.test).name if args.test else
           f"out-of-fold, {k}-fold split by well" if k else "held-out wells")
    plots.confusion_matrix(res.confusion, out / "confusion.png", title=f"Confusion matrix ({how})")
    extra = {}
    if args.map_sameby:
        from ..analysis.metrics import mean_ap

        m, per = mean_ap(df, sameby=args.map_sameby, diffby=[args.map_sameby[0]], features=features,
                         query=args.map_query, seed=args.seed)
        write_table(per, out / "map.csv")
        extra = {"map": m, "map_sameby": args.map_sameby, "map_groups": len(per),
                 "map_significant_groups": int(per["below_corrected_p"].sum()) if "below_corrected_p" in per else None}
        print(f"replicate mAP over {len(per)} groups of {args.map_sameby}: {m:.3f}")
    write_json(out / "evaluation.json", {"profiles": str(args.profiles), "test_table": args.test, **res.summary(),
                                         **extra})
    print(json.dumps({"accuracy": round(res.accuracy, 4), "balanced_accuracy": round(res.balanced_accuracy, 4),
                      "n_train_wells": res.n_train, "n_test_wells": res.n_test}))
    if res.params.get("validation"):
        print(f"validation: {res.params['validation']}")
    return sorted(p.name for p in out.iterdir())


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Strict JSON, atomically (:func:`gandl_core.tables.write_json`)."""
    from ..tables import write_json as _write

    return _write(path, data)


def read_profiles(path: str | os.PathLike):
    """A profile table: Parquet, CSV/TSV, gzipped or not (:func:`gandl_core.tables.read_table`)."""
    from ..tables import read_table

    return read_table(path)


def select_features(df, prefix: str | None) -> list[str] | None:
    """Feature columns starting with ``prefix`` (None: all features).

    Raises
    ------
    ConfigError
        No feature column starts with ``prefix`` (the prefixes present are listed).
    """
    from ..errors import ConfigError
    from ..tables import feature_columns

    if not prefix:
        return None
    feats = [c for c in feature_columns(df) if str(c).startswith(prefix)]
    if not feats:
        seen = sorted({str(c).split("_")[0] + "_" for c in feature_columns(df) if "_" in str(c)})[:10]
        raise ConfigError(f"--prefix {prefix!r}: no feature column starts with it; prefixes in the table: {seen}.")
    return feats
