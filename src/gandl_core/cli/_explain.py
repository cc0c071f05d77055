"""``gandl-core explain``: what the On axis sees -- real sites along it, and the generator's illustrations.

Examples::

    gandl-core explain screen/ project/ -o explain/ --readout-channel RNA --where "Metadata_CellType == 'HRCE'"
    gandl-core explain plate.csv project/ -o explain/ --crop 128 --no-generator

Writes DIR/montage.png + montage.csv (real sites at quantiles of the On score), and unless
--no-generator DIR/strip.png + strip.csv (fakes of the run's generator moved along the axis;
illustrations, not measurements), and DIR/explain.json (options, readout correlations, fit quality).
The profile table, embeddings and checkpoint are found from the files' provenance
(scores.parquet -> profiles -> embeddings -> checkpoint) unless given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (CHANNELS_METAVAR, add_data_argument, add_out_argument, add_overwrite_argument, check_device,
                      check_queries, plain, staged_output)

HELP = "montage of real sites along the On axis and generator strips moving along it (illustrations)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("explain", help=HELP, description=plain(__doc__),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(p)
    p.add_argument("project", metavar="PROJECT", help="output folder of 'gandl-core project' (or its scores.parquet)")
    add_out_argument(p, "DIR", "output folder")
    p.add_argument("--channels", metavar=CHANNELS_METAVAR, help="select/reorder the plate's channels (as for embed)")
    p.add_argument("--n", type=int, default=7, help="quantiles of the On score (montage columns, default 7)")
    p.add_argument("--per-quantile", type=int, default=1, help="wells per quantile (montage rows, default 1)")
    p.add_argument("--crop", type=int, default=None, metavar="PX", help="centre crop of each field (default: whole)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sites and of the generator's styles")
    p.add_argument("--where", metavar="QUERY", default=None,
                   help="montage: only the wells this selection keeps, e.g. \"Metadata_CellType == 'HRCE'\" "
                        "(comparisons, and/or/not, in; see docs/analysis.md)")
    p.add_argument("--label", metavar="COL", default=None,
                   help="montage: add this column's value to each image's title, e.g. Metadata_Dose")
    p.add_argument("--readout-channel", metavar="NAME", default=None,
                   help="channel read with the spot-fraction (puncta) readout in both figures (default: the only "
                        "channel of a one-channel plate, else none)")
    g = p.add_argument_group("generator's view")
    g.add_argument("--no-generator", action="store_true", help="montage only")
    g.add_argument("--checkpoint", metavar="CKPT", help="training checkpoint (default: the one the embeddings name)")
    g.add_argument("--profiles", metavar="TABLE", help="profile table the projection was fitted on (default: recorded)")
    g.add_argument("--embeddings", metavar="TABLE", help="embeddings the profiles came from (default: recorded)")
    g.add_argument("--method", choices=["direction", "optimize"], default="direction",
                   help="move along a direction in W fitted to fake scores (default), or optimize each fake")
    g.add_argument("--starts", type=int, default=4, help="strips (random starting styles), default 4")
    g.add_argument("--steps", type=int, default=7, help="images per strip, default 7")
    g.add_argument("--span", nargs="+", default=["-1", "1"], metavar="FROM TO | auto",
                   help="first and last target On score (default -1 1: C- mean to C+ mean of the wells; one fake "
                        "tile's score spreads wider, so -3 3 often shows the change more clearly), or 'auto': the "
                        "10th to 90th percentile of the fakes' own scores")
    g.add_argument("--n-fit", type=int, default=1024, help="fakes sampled to fit the direction (default 1024)")
    g.add_argument("--device", default="cpu", help="torch device for the generator (default cpu)")
    add_overwrite_argument(p, "explain output in DIR")
    p.set_defaults(func=run)


FILES = ["montage.png", "montage.csv", "strip.png", "strip_*.png", "strip.csv", "explain.json"]


def _where(scores, query: str | None):
    """The wells of ``scores`` that ``query`` keeps (the safe selection language; never evaluated as code)."""
    from ..errors import ConfigError
    from ..selection import select

    if not query:
        return scores
    keep = select(scores, query, option="--where")
    if not keep.any():
        raise ConfigError(f"--where {query!r} selects no well.")
    return scores[keep]


def _span(values: list[str]):
    from ..errors import ConfigError

    if values == ["auto"]:
        return "auto"
    try:
        lo, hi = (float(v) for v in values)
    except ValueError:
        raise ConfigError(f"--span {' '.join(values)}: give two scores, e.g. --span -1 1, or --span auto.") from None
    return lo, hi


def run(args: argparse.Namespace) -> int:
    from ..errors import DataError
    from ..plates import build_index
    from ..tables import read_table

    check_queries(args, "where")
    if not args.no_generator:
        check_device(args.device)
    proj = Path(args.project)
    scores = read_table(proj / "scores.parquet" if proj.is_dir() else proj)
    if args.label and args.label not in scores.columns:
        raise DataError(f"--label {args.label!r} is not a column of the scores table; it has "
                        f"{list(scores.columns)[:12]}.")
    channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels else None
    index = build_index(args.data, channels=channels)
    with staged_output(args.out, "explain", overwrite=args.overwrite, known=FILES) as stage:
        written = _explain(args, scores, index, stage)
    print(f"wrote {args.out}/" + ", ".join(written))
    return 0


def _explain(args: argparse.Namespace, scores, index, out: Path) -> list[str]:
    """The montage, the strips (unless --no-generator) and explain.json, written into ``out``."""
    from ..analysis import explain, explain_plots
    from ..tables import write_json, write_table

    montage = explain.axis_montage(_where(scores, args.where), index, n=args.n, per_quantile=args.per_quantile,
                                   crop=args.crop, seed=args.seed)
    rc = args.readout_channel or (montage.channels[0] if len(montage.channels) == 1 else None)
    numbers = {"montage_wells_available": montage.info["wells_available"], "readout": "spot_fraction",
               "readout_channel": rc, "where": args.where}
    table = montage.table
    if rc:
        reads, rho = explain.readout(montage, channel=rc)
        table = table.assign(readout=reads["readout"].to_numpy())
        numbers["montage_readout_spearman"] = rho
    write_table(table, out / "montage.csv")
    explain_plots.montage_figure(montage, out / "montage.png", label=args.label)
    written = ["montage.png", "montage.csv"]
    if not args.no_generator:
        numbers.update(_generator(args, out, rc))
        written += ["strip.png", "strip.csv"] + ([f"strip_{rc}.png"] if rc else [])
    write_json(out / "explain.json", numbers)
    return written + ["explain.json"]


def _generator(args: argparse.Namespace, out: Path, rc: str | None) -> dict:
    """Fit the axis onto raw D features, draw the strips; returns the numbers for explain.json."""
    from ..analysis import explain, explain_plots
    from ..analysis.explain_generator import ILLUSTRATION_NOTE, generator_strip, load_feature_axis
    from ..errors import DataError
    from ..tables import write_table

    axis, recorded = load_feature_axis(args.project, profiles=args.profiles, embeddings=args.embeddings)
    ckpt = args.checkpoint or recorded
    if not ckpt:
        raise DataError("the embeddings name no checkpoint: give --checkpoint (the run whose D made them).")
    strip = generator_strip(ckpt, axis, starts=args.starts, steps=args.steps, span=_span(args.span), method=args.method,
                            n_fit=args.n_fit, seed=args.seed, device=args.device)
    table = strip.table
    numbers = {f"strip_{k}": v for k, v in strip.info.items() if k != "note"}
    numbers["note"] = ILLUSTRATION_NOTE
    numbers["strip_score_spearman"] = float(table[["position", "score"]].corr("spearman").iloc[0, 1])
    if rc:
        reads, rho = explain.readout(strip, channel=rc)
        table = table.assign(readout=reads["readout"].to_numpy())
        numbers["strip_readout_spearman"] = rho
        per_start, medians = explain.readout_by_replicate(reads)
        numbers["strip_readout_spearman_per_start"] = per_start
        numbers["strip_readout_median_by_position"] = medians
        explain_plots.strip_figure(strip, out / f"strip_{rc}.png", channel=rc)
    write_table(table, out / "strip.csv")
    explain_plots.strip_figure(strip, out / "strip.png")
    return numbers
