"""``gandl-core report``: one self-contained HTML page from what evaluate/project/dose-response wrote."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any


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


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as strict JSON (NaN/inf -> null, numpy scalars -> numbers) atomically."""
    from ..analysis.report import _jsonable, _umask_mode

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, _umask_mode())
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_jsonable(data), fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def run(args: argparse.Namespace) -> int:
    from ..analysis.report import collect_sections, write_report

    sections, headline = collect_sections(args.folder)
    out = write_report(args.out or Path(args.folder) / "report.html", sections, title=args.title, headline=headline)
    print(f"wrote {out} ({len(sections)} sections) and {out.with_suffix('.json')}")
    return 0


def read_profiles(path: str | os.PathLike):
    """``tables.read_table`` plus gzip-compressed CSV/TSV (``.csv.gz``, ``.tsv.gz``: the usual
    pycytominer / cytominer outputs)."""
    import pandas as pd

    from ..errors import DataError
    from ..tables import read_table

    p = Path(path)
    name = p.name.lower()
    if name.endswith((".csv.gz", ".tsv.gz")):
        if not p.is_file():
            raise DataError(f"{p}: no such file. Give the path of a .parquet or .csv table.")
        try:
            return pd.read_csv(p, sep="\t" if name.endswith(".tsv.gz") else ",")
        except Exception as exc:  # noqa: BLE001 - re-raised with the file named
            raise DataError(f"{p}: cannot read this compressed table ({exc}).") from exc
    return read_table(p)
