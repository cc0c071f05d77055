"""One self-contained HTML report (PNGs embedded as base64) plus a JSON file of its numbers.

A report is a title, headline ``numbers`` (shown first, as a table) and a list of :class:`Section`
objects, each with its own text, HTML, numbers, figures and tables. Anyone can add a section::

    from gandl_core.analysis.report import Section, write_report
    write_report("out/report.html", title="My screen", numbers={"accuracy": 0.97},
                 sections=[Section("Comparison", text="...", tables={"featurizers": df})])

:func:`collect_sections` turns a folder of artifacts written by ``gandl-core evaluate / project /
dose-response`` (JSON, CSV, PNG) into sections; ``gandl-core report DIR`` uses it.

The JSON file (same name as the HTML, ``.json`` suffix) holds ``title``, ``numbers`` and every
section's ``numbers`` keyed by section title, for scripts and the comparison table.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html as _html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError

__all__ = ["Section", "write_report", "collect_sections"]


@dataclass
class Section:
    """One part of a report.

    Attributes
    ----------
    title
        Heading.
    html
        Trusted HTML inserted as is (after ``text``).
    figures
        PNG paths, embedded in the HTML (captions from the file names).
    tables
        ``{caption: DataFrame}``, rendered as HTML tables (first ``max_rows`` rows).
    numbers
        Headline numbers of the section (a small table, and the JSON file).
    text
        Plain text (escaped; blank lines separate paragraphs).
    notes
        Method / rule notes, shown as a list under the section.
    """

    title: str
    html: str = ""
    figures: list[str | os.PathLike] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    notes: list[str] = field(default_factory=list)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #0072B2;padding-bottom:.2em}
h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f3f6fa}
td:first-child,th:first-child{text-align:left}
table.numbers td:first-child{font-weight:600}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.8em;color:#555}
.notes{font-size:.85em;color:#444}
.meta{color:#777;font-size:.8em}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "n/a" if not math.isfinite(float(v)) else f"{float(v):.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


from ..tables import jsonable as _jsonable  # noqa: E402  (one JSON convention for every artifact)


def _numbers_table(numbers: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><td>{_html.escape(str(k))}</td><td>{_html.escape(_fmt(v))}</td></tr>"
                   for k, v in numbers.items() if not isinstance(v, (Mapping, pd.DataFrame)))
    return f'<table class="numbers">{rows}</table>' if rows else ""


def _figure(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"report: figure {p} does not exist; write it before the report or drop it.")
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    caption = _html.escape(p.stem.replace("_", " "))
    return (f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _table(caption: str, df: pd.DataFrame, max_rows: int) -> str:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"report: table {caption!r} is a {type(df).__name__}, not a pandas DataFrame.")
    shown = df.head(max_rows)
    more = f" (first {max_rows} of {len(df)} rows)" if len(df) > max_rows else ""
    body = shown.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.4g}", border=0, escape=True)
    return f"<h3>{_html.escape(caption)}{more}</h3>{body}"


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{_html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def _section_html(s: Section, max_rows: int) -> str:
    parts = [f"<section><h2>{_html.escape(s.title)}</h2>", _paragraphs(s.text), s.html, _numbers_table(s.numbers)]
    parts += [_figure(f) for f in s.figures]
    parts += [_table(c, t, max_rows) for c, t in s.tables.items()]
    if s.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_html.escape(n)}</li>" for n in s.notes) + "</ul>")
    parts.append("</section>")
    return "".join(parts)


def _atomic_write(path: Path, text: str) -> None:
    from ..tables import write_text_atomic

    write_text_atomic(path, text)


def write_report(path: str | os.PathLike, sections: Sequence[Section] = (), *,
                 title: str = "napari-gandl analysis report", headline: Mapping[str, Any] | None = None,
                 numbers: Mapping[str, Any] | None = None, figures: Sequence[str | os.PathLike] = (), tables: Mapping[str, pd.DataFrame] | None = None,
                 notes: Sequence[str] = (), max_rows: int = 50) -> Path:
    """Write a self-contained HTML report and a JSON file of its numbers.

    Parameters
    ----------
    path
        ``.html`` file to write, or a folder (then ``<folder>/report.html``). The JSON goes next to it
        with the ``.json`` suffix.
    sections
        :class:`Section` objects, in order.
    title
        Report title.
    headline, numbers
        Headline numbers, shown at the top (``numbers`` is an alias; both are merged).
    figures, tables, notes
        Shorthand for one extra section "Figures and tables" (figures, tables) and "Methods and
        rules" (notes), appended after ``sections``.
    max_rows
        Longest table shown in full (the rest is cut, with a note).

    Returns
    -------
    Path
        The HTML file.

    Raises
    ------
    DataError
        A figure file is missing or a table is not a DataFrame.
    """
    path = Path(path)
    if path.suffix.lower() not in {".html", ".htm"}:
        path = path / "report.html"
    numbers = {**dict(headline or {}), **dict(numbers or {})}
    secs = list(sections)
    if figures or tables:
        secs.append(Section("Figures and tables", figures=list(figures), tables=dict(tables or {})))
    if notes:
        secs.append(Section("Methods and rules", notes=list(notes)))
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from .. import __version__

    body = [f"<h1>{_html.escape(title)}</h1>",
            f'<p class="meta">gandl-core {_html.escape(str(__version__))}, written {stamp}</p>']
    if numbers:
        body += ["<h2>Headline numbers</h2>", _numbers_table(numbers)]
    body += [_section_html(s, max_rows) for s in secs]
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_html.escape(title)}</title>'
           f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
    payload = {"title": title, "written": stamp, "headline": _jsonable(numbers),
               "sections": {s.title: _jsonable(s.numbers) for s in secs if s.numbers}}
    _atomic_write(path.with_suffix(".json"), json.dumps(payload, indent=2))
    _atomic_write(path, doc)
    return path


# Files the analysis CLIs write: JSON stem -> (section title, name prefixes of its CSV/PNG files).
_KNOWN = {
    "evaluation": ("Separability (linear SVM on held-out wells)", ("confusion", "per_group", "predictions",
                                                                    "evaluation")),
    "projection": ("On-/Off-perturbation projection (E2 space)", ("e2", "c2", "on_", "axes", "projection")),
    "dose_response": ("Dose-response (Hill fits)", ("dose", "hits")),
    "explain": ("What the On axis sees (real sites; generator illustrations)", ("montage", "strip", "explain")),
}
#: Numbers worth a place in the headline table when found in an artifact's JSON.
HEADLINE_KEYS = ("accuracy", "balanced_accuracy", "z_prime", "ssmd", "compounds", "active", "hits", "mean_ap")
#: How a headline key is labelled (Z' and SSMD of ``project`` are out-of-fold figures).
_HEADLINE_LABELS = {"z_prime": "z_prime (out of fold)", "ssmd": "ssmd (out of fold)"}
#: Tables too long to be useful in a page (per-well predictions) are left to their CSV; the fits table
#: is shown through the hit list (same compounds, ranked, estimates with their 95% CIs).
_SKIP_TABLES = ("predictions", "dose_fits")


def _projection_numbers(numbers: dict[str, Any]) -> dict[str, Any]:
    """projection.json of an older version (in-sample ``z_prime``, out-of-fold ``z_prime_cv``) in today's keys."""
    if "z_prime_cv" not in numbers or "z_prime_in_sample" in numbers:
        return numbers
    out = {k: v for k, v in numbers.items() if k not in ("z_prime", "ssmd", "z_prime_cv", "ssmd_cv")}
    out.update(z_prime=numbers.get("z_prime_cv"), ssmd=numbers.get("ssmd_cv"),
               z_prime_in_sample=numbers.get("z_prime"), ssmd_in_sample=numbers.get("ssmd"))
    return out


def collect_sections(folder: str | os.PathLike, *, max_figures: int = 12) -> tuple[list[Section], dict[str, Any]]:
    """Sections for every analysis artifact in ``folder`` (and its direct sub-folders), and headline numbers.

    Each ``<step>.json`` written by ``gandl-core evaluate / project / dose-response`` becomes a section
    with its scalar entries as numbers; the CSV tables and PNG figures that step writes (recognised by
    name, e.g. ``confusion.png``, ``dose_*.png``, ``hits.csv``) join it. Other JSON files get a section
    of their own, and remaining CSV/PNG files a section "Other artifacts" per folder.

    Parameters
    ----------
    folder
        Output folder of ``gandl-core evaluate / project / dose-response`` (or a parent of several).
    max_figures
        At most this many figures per section (in name order).

    Returns
    -------
    (list[Section], dict)
        The sections, and the headline numbers (:data:`HEADLINE_KEYS` found in the JSON files, named
        ``<step>: <key>``, with ``[<sub-folder>]`` when not at the top).

    Raises
    ------
    DataError
        ``folder`` does not exist or holds no JSON, CSV or PNG file, or a JSON/CSV cannot be read.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"report: {root} is not a folder; give the -o folder of evaluate/project/dose-response.")
    dirs = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out: list[Section] = []
    headline: dict[str, Any] = {}
    for d in dirs:
        where = "" if d == root else f" [{d.name}]"
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in {".csv", ".png"} and not p.name.startswith("."))
        used: set[Path] = set()
        for j in sorted(d.glob("*.json")):
            if j.stem == "report" or j.name.startswith("."):
                continue  # a previous report's own JSON
            try:
                data = json.loads(j.read_text())
            except (OSError, ValueError) as exc:
                raise DataError(f"report: {j} is not valid JSON ({exc}); rerun the step that wrote it.") from exc
            if not isinstance(data, dict):
                continue
            title, prefixes = _KNOWN.get(j.stem, (j.stem.replace("_", " "), (j.stem,)))
            numbers = {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool))}
            if j.stem == "projection":
                numbers = _projection_numbers(numbers)
            mine = [p for p in files if p not in used and p.name.lower().startswith(prefixes)]
            used.update(mine)
            out.append(_make_section(title + where, numbers, mine, max_figures))
            labels = _HEADLINE_LABELS if j.stem == "projection" else {}
            headline.update({f"{j.stem}{where}: {labels.get(k, k)}": numbers[k] for k in HEADLINE_KEYS if k in numbers})
        rest = [p for p in files if p not in used]
        if rest:
            out.append(_make_section("Other artifacts" + where, {}, rest, max_figures))
    # Pipeline order (evaluate, project, dose-response), whatever the folder names.
    rank = {title: i for i, (title, _) in enumerate(_KNOWN.values())}
    out.sort(key=lambda s: next((i for t, i in rank.items() if s.title.startswith(t)), len(rank)))
    if not out:
        raise DataError(f"report: {root} holds no .json, .csv or .png artifacts; run evaluate, project or "
                        "dose-response with -o pointing there first.")
    return out, headline


def _make_section(title: str, numbers: dict[str, Any], files: list[Path], max_figures: int) -> Section:
    tables, notes = {}, []
    for c in (p for p in files if p.suffix.lower() == ".csv"):
        if c.stem.startswith(_SKIP_TABLES):
            notes.append(f"{c.name}: every row and column is in the file (not shown in full here).")
            continue
        try:
            t = pd.read_csv(c)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"report: cannot read {c} ({exc}).") from exc
        if c.stem == "hits" and "ec50" in t.columns:
            from .dose_response import ci_table

            tables["hit list, estimates with 95% CIs"] = ci_table(t)
        else:
            tables[c.stem.replace("_", " ")] = t
    figures = [p for p in files if p.suffix.lower() == ".png"][:max_figures]
    return Section(title, figures=figures, tables=tables, numbers=numbers, notes=notes)
