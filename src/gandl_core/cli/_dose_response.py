"""``gandl-core dose-response``: Hill fits of the On score per compound, hit list, dose plots."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ._common import add_out_argument, add_overwrite_argument, check_queries, finite_float, write_staged


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dose-response",
        help="4-parameter Hill fit of a score (On) per compound, ranked hit list, dose plots",
        description="Input: a scores table from 'gandl-core project' (has an OnScore column; On from older "
        "versions is read too), or a profile table (then the On score is fitted first from --positive/--negative "
        "controls). Status per compound: ok, extrapolated (EC50 outside the tested doses), inactive (no dose mean "
        "--noise-k or more standard errors away from the negative controls' mean), flat (no significant trend), non-monotone, "
        "too-few-doses/single-dose, failed. Writes DIR/dose_summary.csv (mean/sd/n per compound x dose), "
        "dose_fits.csv (one row per compound: status, EC50, hill, efficacy, each with a 95 percent CI, R2), "
        "hits.csv (ranked, with the hit rule), dose_response.json and dose_<compound>.png for the top ones -- all "
        "of them or none: a failure leaves DIR as it was.",
    )
    p.add_argument("table", metavar="SCORES|PROFILES", help="scores.parquet from 'project', or a profile table")
    p.add_argument("--score-col", default="OnScore", help="response column (default OnScore)")
    p.add_argument("--compound-col", default="Metadata_Treatment", help="compound column (default Metadata_Treatment)")
    p.add_argument("--dose-col", default="Metadata_Concentration", help="dose column, uM (default Metadata_Concentration)")
    p.add_argument("--exclude", nargs="*", default=[], metavar="NAME", help="compounds to leave out (e.g. DMSO)")
    p.add_argument("--positive", metavar="QUERY", help="profiles input: selection of the C+ rows for the On score")
    p.add_argument("--negative", metavar="QUERY", help="profiles input: selection of the C- rows for the On score")
    p.add_argument("--min-efficacy", type=finite_float, default=0.5,
                   help="hit rule: |top-bottom| as a fraction of the C- -> C+ window (default 0.5)")
    p.add_argument("--min-r2", type=finite_float, default=0.5, help="hit rule: minimum R2 of the fit (default 0.5)")
    p.add_argument("--noise-k", type=finite_float, default=3.0, metavar="K",
                   help="inactive when no dose mean lies K standard errors or more from the negative controls' "
                   "mean (SE = control SD x sqrt(1/n_dose + 1/n_controls); the out-of-fold control scores of "
                   "'project' when known; default 3)")
    p.add_argument("--direction", default=None, choices=["positive", "both"],
                   help="hit rule direction: positive (towards C+, a rescue; default) or both")
    p.add_argument("--top", type=int, default=6, help="dose plots for this many top-ranked compounds (default 6)")
    add_out_argument(p, "DIR", "output folder")
    add_overwrite_argument(p, "dose-response output in DIR")
    p.set_defaults(func=run)


FILES = ["dose_summary.csv", "dose_fits.csv", "hits.csv", "dose_response.json", "dose_*.png"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_")[:80] or "compound"


def run(args: argparse.Namespace) -> int:
    check_queries(args, "positive", "negative")
    return write_staged(args, "dose-response", FILES, _dose_response)


def _dose_response(args: argparse.Namespace, out: Path) -> list[str]:
    import numpy as np

    from ..analysis import dose_response as dr
    from ..analysis import plots
    from ..errors import ConfigError
    from ..tables import feature_columns, write_table
    from ._report import read_profiles, write_json

    from ..analysis.projection import resolve_score

    df, args.score_col = resolve_score(read_profiles(args.table), args.score_col)
    if args.score_col not in df.columns:
        if args.score_col != "OnScore" or not feature_columns(df):
            raise ConfigError(f"{args.table}: no score column {args.score_col!r}; give --score-col or a scores table "
                              "from 'gandl-core project'.")
        from ..analysis.projection import project_table

        _, df, stats = project_table(df, positive=args.positive, negative=args.negative)
        print(f"On score fitted on the controls: Z' = {stats['z_prime']:.3f} ({stats['z_prime_method']})")
    for opt, col in (("--compound-col", args.compound_col), ("--dose-col", args.dose_col)):
        if col not in df.columns:
            raise ConfigError(f"{args.table}: no column {col!r} ({opt}); metadata columns are "
                              f"{[c for c in df.columns if str(c).startswith('Metadata_')][:15]}.")
    noise = dr.control_noise(df, score=args.score_col)  # before --exclude drops the control wells (e.g. DMSO)
    if args.exclude:
        df = df[~df[args.compound_col].astype(str).isin(args.exclude)]
    summary = dr.dose_response(df, score=args.score_col, compound=args.compound_col, dose=args.dose_col)
    fits = dr.fit_all(df, score=args.score_col, compound=args.compound_col, dose=args.dose_col, noise=noise,
                      noise_k=args.noise_k)
    kw = dict(min_efficacy=args.min_efficacy, min_r2=args.min_r2)
    if args.direction:
        kw["direction"] = args.direction
    hits = dr.hit_list(fits, **kw)
    write_table(summary, out / "dose_summary.csv")
    write_table(fits, out / "dose_fits.csv")
    write_table(hits, out / "hits.csv")
    controls = None
    if "Metadata_Control" in df.columns and args.score_col == "OnScore":
        controls = {"C+": 1.0, "C-": -1.0}
    plotted = []
    for name in hits["Metadata_Compound"].head(max(args.top, 0)):
        path = out / f"dose_{_safe(name)}.png"
        plots.dose_scatter(df, fits, name, path, score=args.score_col, compound_col=args.compound_col,
                           dose_col=args.dose_col, controls=controls)
        plotted.append(path.name)
    n_hits = int(np.asarray(hits["Metadata_Hit"], bool).sum())
    status = fits["Metadata_Status"].value_counts().to_dict()
    rule = hits.attrs.get("rule") or ""
    write_json(out / "dose_response.json", {"table": str(args.table), "compounds": len(fits), "hits": n_hits,
                                            "active": int(fits["Metadata_Status"].isin(dr.ACTIVE_STATUSES).sum()),
                                            "status": status, "rule": rule, "method": fits.attrs.get("method", ""),
                                            "noise": fits.attrs.get("noise")})
    print(f"{len(fits)} compounds fitted ({', '.join(f'{k}: {v}' for k, v in status.items())}); {n_hits} hit(s). "
          f"Rule: {rule}")
    return ["dose_summary.csv", "dose_fits.csv", "hits.csv", "dose_response.json"] + plotted
