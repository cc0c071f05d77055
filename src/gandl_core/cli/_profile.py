"""``gandl-core profile``: site embeddings -> per-well profiles normalized to each plate's controls.

Example::

    gandl-core profile emb.parquet -o profiles.parquet --controls "Metadata_Role == 'negative'" --method mad
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "aggregate site features per well and normalize each plate to its control wells"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("profile", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", metavar="EMBEDDINGS", help="site (or well) table: .parquet or .csv")
    p.add_argument("-o", "--out", required=True, metavar="OUT.parquet", help="profile table to write")
    p.add_argument("--controls", metavar="QUERY", default=None,
                   help="pandas query selecting control wells, e.g. \"Metadata_Role == 'negative'\" or "
                        "\"Metadata_Condition == 'Mock'\" (default: all wells of each plate)")
    p.add_argument("--method", choices=["standardize", "mad", "none"], default="standardize",
                   help="per-plate normalization (default standardize)")
    p.add_argument("--aggregate", choices=["median", "mean", "none"], default="median",
                   help="site -> well aggregation (default median; none keeps the rows)")
    p.add_argument("--sphere", action="store_true", help="whiten with a transform fitted on the controls")
    p.add_argument("--epsilon", type=float, default=1e-6, help="sphering regularizer (default 1e-6)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.profiles import aggregate, normalize_plates, sphere
    from ..errors import DataError
    from ..tables import read_table, write_table

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise DataError(f"{out} already exists; pass --overwrite to replace it or choose another -o.")
    df = read_table(args.table)
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
