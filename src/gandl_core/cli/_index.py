"""``gandl-core index DATA -o index.parquet``: validate a plate and write its site index."""

from __future__ import annotations

import argparse
import sys
import warnings

from ._common import CHANNELS_METAVAR, add_data_argument, add_out_argument, add_overwrite_argument, check_new_file


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``index`` subcommand."""
    p = subparsers.add_parser(
        "index", help="index a plate (one row per site) and check every image's header",
        description="Index a plate: one row per site with Metadata_* and Path_<Channel> columns. Before "
        "anything is written, every image's header is read (missing, truncated or damaged files; size, "
        "channel count and pixel type the same across the plate; declared size within "
        "GANDL_MAX_IMAGE_PIXELS), and a sample of 8 sites plus every floating-point image is decoded in full "
        "(corrupt data, NaN or infinite pixels).")
    add_data_argument(p)
    add_out_argument(p, "INDEX.parquet", "where to write the index (.parquet, or .csv)", old="--output")
    add_overwrite_argument(p, "INDEX")
    p.add_argument("--channels", metavar=CHANNELS_METAVAR, default=None,
                   help="keep these channels, in this order (e.g. DNA,ER,Actin,RNA,Golgi)")
    p.add_argument("--names", metavar=CHANNELS_METAVAR, default=None,
                   help="rename the source's channels, one name per channel in source order")
    p.add_argument("--pattern", metavar="REGEX", default=None,
                   help="TIFF folders: file-name regex with named groups well (or row+column), site, "
                   "plate, channel")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out sites with missing/unreadable/odd-sized images (listed) instead of failing")
    p.add_argument("--no-validate", action="store_true", help="skip the file checks (trusted input only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, validate and write the index; print a one-line summary. Returns 0."""
    from ..plates import build_index_iter, channel_names
    from ..plates._images import plane_shape
    from ..tables import write_table
    from ._common import follow

    check_new_file(args.out, args.overwrite)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = follow(build_index_iter(args.data, channels=args.channels, skip_missing=args.skip_missing,
                                        validate=not args.no_validate, pattern=args.pattern,
                                        names=args.names), desc="index")
    for w in caught:
        print(f"gandl-core index: warning: {w.message}", file=sys.stderr)
    skipped = index.attrs.get("skipped", [])
    names = channel_names(index)
    (h, w), dtype, _ = plane_shape(str(index.iloc[0]["Path_" + names[0]]))
    dtypes = index.attrs.get("dtypes") or {}
    kinds = sorted(set(dtypes.values()))
    if len(kinds) > 1:  # channels stored with different pixel types: say which
        dtype = ", ".join(f"{n} {dtypes[n]}" for n in names if n in dtypes)
    elif kinds:
        dtype = kinds[0]
    index.attrs.clear()  # attrs are not part of the table; skipped sites go into the file metadata
    out = write_table(index, args.out, metadata={"source": str(args.data), "skipped": skipped})
    wells = index[["Metadata_Plate", "Metadata_Well"]].drop_duplicates().shape[0]
    print(f"{out}: {len(index)} sites, {wells} wells, {index['Metadata_Plate'].nunique()} plates, "
          f"{len(names)} channels ({','.join(names)}), {h}x{w} {dtype}"
          + (f", {len(skipped)} sites skipped" if skipped else ""))
    return 0
