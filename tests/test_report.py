"""HTML report (self-contained, numbers also as JSON) and the dose-response / report CLIs end to end."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gandl_core.analysis import dose_response as dr
from gandl_core.analysis import plots
from gandl_core.analysis.report import Section, collect_sections, write_report
from gandl_core.cli import main
from gandl_core.errors import DataError
from gandl_core.tables import write_table


def _png(tmp_path: Path) -> Path:
    cm = pd.DataFrame([[3, 1], [0, 4]], index=["a", "b"], columns=["a", "b"])
    return plots.confusion_matrix(cm, tmp_path / "confusion_small.png")


def test_write_report_is_self_contained_with_json(tmp_path: Path) -> None:
    fig = _png(tmp_path)
    table = pd.DataFrame({"compound": ["<b>x</b>", "y"], "ec50": [1.23456, np.nan]})
    sec = Section("Extra section", html="<p id='mine'>raw</p>", figures=[fig], tables={"fits": table},
                  numbers={"auc": 0.9}, text="first para\n\nsecond & para", notes=["rule: a < b"])
    out = write_report(tmp_path / "r" / "report.html", [sec], title="T & co", headline={"accuracy": 0.975},
                       numbers={"z_prime": float("nan"), "ec50_spearman": None}, notes=["method note"])
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "T &amp; co" in html
    # the figure is embedded, byte for byte; nothing refers to a file on disk
    assert base64.b64encode(fig.read_bytes()).decode() in html and "src=\"confusion" not in html
    assert html.index("Headline numbers") < html.index("Extra section") < html.index("Methods and rules")
    assert "0.975" in html and "<p id='mine'>raw</p>" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "second &amp; para" in html and "rule: a &lt; b" in html
    assert "1.235" in html  # floats shown with 4 significant digits
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["headline"] == {"accuracy": 0.975, "z_prime": None, "ec50_spearman": None}  # NaN -> null
    assert "<td>ec50_spearman</td><td>n/a</td>" in html
    assert data["sections"]["Extra section"] == {"auc": 0.9}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    # a folder path gets report.html inside it
    assert write_report(tmp_path / "folder").name == "report.html"


def test_write_report_names_a_missing_figure(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="gone.png"):
        write_report(tmp_path / "r.html", figures=[tmp_path / "gone.png"])
    with pytest.raises(DataError, match="'t'"):
        write_report(tmp_path / "r.html", tables={"t": [1, 2]})


def test_collect_sections_groups_artifacts_by_step(tmp_path: Path) -> None:
    (tmp_path / "evaluation.json").write_text(json.dumps({"accuracy": 0.9, "classes": ["a", "b"]}))
    _png(tmp_path).rename(tmp_path / "confusion.png")
    pd.DataFrame({"true": ["a"], "predicted": ["a"]}).to_csv(tmp_path / "predictions.csv", index=False)
    sub = tmp_path / "dr"
    sub.mkdir()
    (sub / "dose_response.json").write_text(json.dumps({"compounds": 4, "hits": 1, "rule": "hit = ..."}))
    pd.DataFrame({"Metadata_Compound": ["c"]}).to_csv(sub / "hits.csv", index=False)
    pd.DataFrame({"x": [1]}).to_csv(sub / "misc.csv", index=False)
    sections, headline = collect_sections(tmp_path)
    titles = [s.title for s in sections]
    assert titles == ["Separability (linear SVM on held-out wells)", "Dose-response (Hill fits) [dr]",
                      "Other artifacts [dr]"]
    assert [Path(f).name for f in sections[0].figures] == ["confusion.png"]
    assert sections[0].tables == {}  # per-well predictions stay in their CSV
    assert list(sections[1].tables) == ["hits"] and sections[1].numbers["rule"] == "hit = ..."
    assert headline == {"evaluation: accuracy": 0.9, "dose_response [dr]: compounds": 4, "dose_response [dr]: hits": 1}
    with pytest.raises(DataError, match="no .json"):
        collect_sections(_empty(tmp_path))
    with pytest.raises(DataError, match="not a folder"):
        collect_sections(tmp_path / "nope")


def _empty(tmp_path: Path) -> Path:
    p = tmp_path / "empty"
    p.mkdir()
    return p


def _scores(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for name, (b, t, e) in {"good": (-1, 1, 1.0), "dead": (-1, -1, 1.0)}.items():
        for c in [0.01, 0.1, 1.0, 10.0, 100.0]:
            for r in range(3):
                rows.append({"Metadata_Well": f"W{len(rows)}", "Metadata_Treatment": name,
                             "Metadata_Concentration": c, "OnScore": float(dr.hill(c, b, t, e, 1.5)) + rng.normal(0, .1)})
    rows.append({"Metadata_Well": "C1", "Metadata_Treatment": "", "Metadata_Concentration": 0.0, "OnScore": 1.0})
    return write_table(pd.DataFrame(rows), tmp_path / "scores.parquet")


def test_dose_response_then_report_cli(tmp_path: Path, capsys) -> None:
    scores = _scores(tmp_path)
    out = tmp_path / "out"
    assert main(["dose-response", str(scores), "-o", str(out), "--top", "2"]) == 0
    fits = pd.read_csv(out / "dose_fits.csv").set_index("Metadata_Compound")
    assert fits.loc["good", "Metadata_Status"] == "ok" and fits.loc["dead", "Metadata_Status"] == "flat"
    assert abs(np.log10(fits.loc["good", "ec50"])) < 0.25
    assert fits.loc["good", "ec50_ci_low"] < fits.loc["good", "ec50"] < fits.loc["good", "ec50_ci_high"]
    hits = pd.read_csv(out / "hits.csv")
    assert hits.loc[0, "Metadata_Compound"] == "good" and bool(hits.loc[0, "Metadata_Hit"])
    assert hits["Metadata_Hit"].sum() == 1
    assert (out / "dose_good.png").is_file() and (out / "dose_dead.png").is_file()
    info = json.loads((out / "dose_response.json").read_text())
    assert info["compounds"] == 2 and info["hits"] == 1 and "efficacy >= 0.5" in info["rule"]
    assert info["noise"] is None and "no 'inactive' status" in info["method"]  # no control wells in this table
    assert main(["report", str(out), "-o", str(tmp_path / "rep.html")]) == 0
    html = (tmp_path / "rep.html").read_text()
    assert "Dose-response (Hill fits)" in html and html.count("data:image/png;base64,") == 2
    # the report shows each estimate with its 95% CI
    lo, hi = fits.loc["good", ["ec50_ci_low", "ec50_ci_high"]]
    assert "EC50 [95% CI]" in html and f"[{lo:.3g}, {hi:.3g}]" in html
    assert json.loads((tmp_path / "rep.json").read_text())["headline"]["dose_response: hits"] == 1
    capsys.readouterr()
    assert main(["dose-response", str(scores), "-o", str(out), "--dose-col", "Metadata_Dose", "--overwrite"]) == 1
    assert "Metadata_Dose" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "x.html")]) == 1
    assert "not a folder" in capsys.readouterr().err


def test_report_headlines_the_out_of_fold_z_prime(tmp_path: Path) -> None:
    """The headline Z' is the out-of-fold figure, labelled; the in-sample one stays in its section, named so.
    A projection.json of an older version (in-sample z_prime, out-of-fold z_prime_cv) reads the same way."""
    new = {"z_prime": 0.100, "z_prime_in_sample": 0.374, "ssmd": 2.0, "ssmd_in_sample": 5.0,
           "z_prime_method": "out of fold: ..."}
    old = {"z_prime": 0.374, "z_prime_cv": 0.100, "ssmd": 5.0, "ssmd_cv": 2.0}
    for name, data in (("new", new), ("old", old)):
        d = tmp_path / name
        d.mkdir()
        (d / "projection.json").write_text(json.dumps(data))
        sections, headline = collect_sections(d)
        assert headline == {"projection: z_prime (out of fold)": 0.1, "projection: ssmd (out of fold)": 2.0}
        assert sections[0].numbers["z_prime_in_sample"] == 0.374 and "z_prime_cv" not in sections[0].numbers
