"""``gandl-core report``: one self-contained HTML page from what evaluate/project/dose-response wrote."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from ._common import add_out_argument, add_overwrite_argument, check_new_file
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
    add_out_argument(p, "HTML", "report file (default DIR/report.html; its numbers go to the .json beside it)",
                     required=False)
    add_overwrite_argument(p, "report (HTML and JSON)")
    p.add_argument("--title", default="napari-gandl analysis report", help="title of the page")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.report import collect_sections, write_report

    target = Path(args.out) if args.out else Path(args.folder) / "report.html"
    check_new_file(target, args.overwrite)
    check_new_file(target.with_suffix(".json"), args.overwrite)
    sections, headline = collect_sections(args.folder)
    # The page and its JSON are published together, or neither (a full disk must not leave one of them).
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gandl-stage-report-", dir=target.parent) as tmp:
        staged = write_report(Path(tmp) / target.name, sections, title=args.title, headline=headline)
        os.replace(staged.with_suffix(".json"), target.with_suffix(".json"))
        os.replace(staged, target)
    out = target
    print(f"wrote {out} ({len(sections)} sections) and {out.with_suffix('.json')}")
    return 0


