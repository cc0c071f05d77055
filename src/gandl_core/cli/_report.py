"""``gandl-core report``: one self-contained HTML page from what evaluate/project/dose-response wrote."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._evaluate import read_profiles, write_json  # noqa: F401  (shared helpers, re-exported for dose-response)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="collect the evaluate/project/dose-response outputs of a folder into one HTML report",
        description="Reads DIR (and its sub-folders, one level) for evaluation.json, projection.json, dose_fits.csv, "
        "hits.csv and PNGs, and writes one self-contained HTML file (figures embedded) plus a JSON of its numbers "
        "beside it.",
    )
    p.add_argument("folder", metavar="DIR", help="folder holding the outputs of evaluate/project/dose-response")
    p.add_argument("-o", "--out", default=None, metavar="HTML", help="report file (default DIR/report.html)")
    p.add_argument("--title", default="napari-gandl analysis report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.report import collect_sections, write_report

    sections, headline = collect_sections(args.folder)
    out = write_report(args.out or Path(args.folder) / "report.html", sections, title=args.title, headline=headline)
    print(f"wrote {out} ({len(sections)} sections) and {out.with_suffix('.json')}")
    return 0


