"""``gandl-core profile``: site embeddings -> per-well profiles normalized to each plate's controls.

Example:

    gandl-core profile emb.parquet -o profiles.parquet --controls "Metadata_Role == 'negative'" --method mad
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_out_argument, add_overwrite_argument, check_new_file, check_queries, finite_float, plain

HELP = "aggregate site features per well and normalize each plate to its control wells"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("profile", help=HELP, description=plain(__doc__),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", metavar="EMBEDDINGS", help="site (or well) table: .parquet or .csv")
    add_out_argument(p, "OUT.parquet", "profile table to write")
    p.add_argument("--controls", metavar="QUERY", default=None,
                   help="selection of the control wells, e.g. \"Metadata_Role == 'negative'\" or "
                        "\"Metadata_Condition == 'Mock'\" (default: all wells of each plate); comparisons, "
                        "and/or/not, in; see docs/analysis.md")
    p.add_argument("--method", choices=["standardize", "mad", "none"], default="standardize",
                   help="per-plate normalization (default standardize)")
    p.add_argument("--aggregate", choices=["median", "mean", "none"], default="median",
                   help="site -> well aggregation (default median; none keeps the rows)")
    p.add_argument("--sphere", action="store_true", help="whiten with a transform fitted on the controls")
    p.add_argument("--epsilon", type=finite_float, default=1e-6, help="sphering regularizer (default 1e-6)")
    add_overwrite_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.profiles import aggregate, normalize_plates, sphere
    from ..tables import check_features, check_finite, check_unique_sites, read_table, write_table

    check_queries(args, "controls")
    out = check_new_file(args.out, args.overwrite)
    df = read_table(args.table)
    check_finite(df, check_features(df, name=str(args.table)), name=str(args.table))
    if args.aggregate != "none":
        check_unique_sites(df, name=str(args.table))
    source_meta = dict(df.attrs.get("gandl", {}))
    for key in ("rows", "skipped"):  # site bookkeeping, meaningless for wells
        source_meta.pop(key, None)
    if args.aggregate != "none":
        df = aggregate(df, method=args.aggregate)
    df = normalize_plates(df, controls=args.controls, method=args.method)
    if args.sphere:
        df = sphere(df, controls=args.controls, epsilon=args.epsilon)
    meta = {"kind": "profiles", "source": str(Path(args.table).resolve()), "source_metadata": source_meta,
            "aggregate": args.aggregate, "normalize": args.method, "controls": args.controls,
            "sphere": bool(args.sphere), "epsilon": args.epsilon if args.sphere else None}
    write_table(df, out, metadata=meta)
    print(f"wrote {out}: {len(df)} rows x {sum(1 for c in df.columns if not c.startswith('Metadata_'))} features")
    return 0
