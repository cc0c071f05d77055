"""Compare embeddings (GAN-DL vs its counterparts) on the same downstream tasks: one table.

Every input table (site- or well-level: ``GAN_``, ``RandD_``, ``HC_``, ``CAE_``, ``DNc_``,
``DNx_`` ...) goes through the same steps:

1. well profiles: :func:`profiles.aggregate` (median of sites per plate x well), then
   :func:`profiles.normalize_plates` (standardize each plate against its negative controls when
   the table has them, else against all wells);
2. for each **task**, with C+ / C- control queries:

   * ``controls``: the default controls (``Metadata_Role`` positive/negative, or RxRx19a's
     Mock/Active untreated wells);
   * ``"POS_QUERY;NEG_QUERY"``: two selections on the metadata (:mod:`gandl_core.selection`);
   * ``percelltype``: the controls task within each ``Metadata_CellType`` (one row per type);
   * ``celltype``: multi-class accuracy of predicting ``Metadata_CellType`` (no Z' / dose rows).

   metrics: ``accuracy`` (held-out wells of a linear SVM, :func:`evaluation.separability` with its
   defaults: by-well split, or grouped K-fold CV on small plates; seed 0), ``z_prime`` of the
   On-perturbation score, out of fold (:func:`projection.project_table`), ``n_dose_fits``
   (compounds whose Hill fit of On vs dose is significant and monotone with the EC50 inside the
   tested doses, status ``ok``) and, with ground truth, ``ec50_spearman`` (rank agreement of fitted
   and true EC50 over the true actives with an ok fit) and ``active_precision`` /
   ``active_recall`` (compounds called active -- status ok or extrapolated -- against the truth's
   ``active`` column);
3. ``replicate_map`` (task-free): copairs mean average precision of retrieving a treated well's
   replicates (same compound and dose) among the other treated wells (:func:`metrics.mean_ap`).

Result: a DataFrame, rows = ``(task, metric)``, columns = embeddings; written as CSV + Markdown by
``gandl-core compare`` with a report :class:`~gandl_core.analysis.report.Section`.
A metric that cannot be computed for an embedding (e.g. too few wells) is NaN and the reason is
kept in ``result.attrs["notes"]``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError, GandlError
from ..selection import check_expr, select
from ..tables import feature_columns

DEFAULT_TASKS = ("controls",)
METRIC_HELP = {
    "accuracy": "held-out well accuracy of a linear SVM separating C+ from C- (by-well split; grouped K-fold CV "
                "below 80 control wells)",
    "z_prime": "Z' of the On-perturbation score between C+ and C- wells (1 - 3(sd+ + sd-)/|mean+ - mean-|), each "
               "control well scored out of fold",
    "n_dose_fits": "compounds with a significant, monotone Hill fit of On vs dose and the EC50 inside the tested doses",
    "ec50_spearman": "Spearman rank correlation of fitted vs true EC50 (true actives with an ok fit)",
    "active_precision": "share of compounds called active (status ok or extrapolated) that are truly active",
    "active_recall": "share of the truly active compounds called active (status ok or extrapolated)",
    "replicate_map": "mean average precision of retrieving replicate wells (same compound and dose)",
}


def embedding_name(df: pd.DataFrame, fallback: str) -> str:
    """A short column name for a table: its featurizer's name (``gan-dl``, ``handcrafted`` ...)."""
    feat = (df.attrs.get("gandl") or {}).get("featurizer") or {}
    name = feat.get("name")
    if name == "gan-dl":
        return "gan"
    if name == "ModuleFeaturizer" or not name:
        return fallback
    return str(name)


def parse_task(task: str) -> dict:
    """``"controls" | "celltype" | "percelltype" | "POS;NEG"`` -> task description dict.

    Raises
    ------
    ConfigError
        Empty or malformed task (names ``--task``).
    """
    t = (task or "").strip()
    if t in ("controls", "celltype", "percelltype"):
        return {"name": t, "kind": t}
    if ";" in t:
        pos, neg = (s.strip() for s in t.split(";", 1))
        if pos and neg:
            check_expr(pos, option="--task (before ';')")
            check_expr(neg, option="--task (after ';')")
            return {"name": t, "kind": "query", "positive": pos, "negative": neg}
    raise ConfigError(f"--task {task!r}: use controls, celltype, percelltype or \"POS_QUERY;NEG_QUERY\" "
                      "(e.g. \"Metadata_Condition == 'Mock';Metadata_Condition == 'Active SARS-CoV-2'\").")


def well_profiles(df: pd.DataFrame, *, negative: str | None = None) -> pd.DataFrame:
    """Aggregate sites to wells and standardize each plate against its negative controls.

    Parameters
    ----------
    df
        Site- or well-level embeddings table.
    negative
        Query of the control wells to normalize against (``None``: the default C- query when the
        table has controls, else all wells).

    Returns
    -------
    pd.DataFrame
        One row per plate x well, float features standardized per plate.
    """
    from .evaluation import default_controls
    from .profiles import aggregate, normalize_plates

    strata = [c for c in ("Metadata_Plate", "Metadata_Well") if c in df.columns]
    if len(strata) < 2:
        raise DataError(f"compare: the table needs Metadata_Plate and Metadata_Well columns (has {strata}).")
    wells = aggregate(df, strata=strata)
    if negative is None:
        try:
            negative = default_controls(wells)[1]
        except GandlError:
            negative = None
    if negative is not None and not select(wells, negative, option="--task").any():
        negative = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant features on a plate are zeroed: expected here
        return normalize_plates(wells, controls=negative, method="standardize")


def _ground_truth(gt: pd.DataFrame | str | os.PathLike | None) -> pd.DataFrame | None:
    if gt is None:
        return None
    if not isinstance(gt, pd.DataFrame):
        path = Path(gt)
        if not path.is_file():
            raise DataError(f"--ground-truth {path}: no such file; give the ground_truth.csv of the synthetic "
                            "screen (columns treatment/Metadata_Treatment and ec50_uM).")
        gt = pd.read_csv(path)
    gt = gt.rename(columns={"Metadata_Treatment": "treatment"})
    missing = [c for c in ("treatment", "ec50_uM") if c not in gt.columns]
    if missing:
        raise DataError(f"--ground-truth: column(s) {missing} missing; it has {list(gt.columns)}.")
    return gt


def _control_metrics(prof: pd.DataFrame, pos: str, neg: str, gt: pd.DataFrame | None,
                     notes: list[str], label: str) -> dict[str, float]:
    from .dose_response import fit_all
    from .evaluation import separability
    from .projection import project_table

    out: dict[str, float] = {}
    try:
        out["accuracy"] = float(separability(prof, positive=pos, negative=neg, seed=0).accuracy)
    except GandlError as exc:
        out["accuracy"] = np.nan
        notes.append(f"{label} accuracy: {exc}")
    try:
        _, scores, stats = project_table(prof, positive=pos, negative=neg)
        out["z_prime"] = float(stats["z_prime"])
    except GandlError as exc:
        notes.append(f"{label} z_prime: {exc}")
        out["z_prime"] = np.nan
        return out
    if "Metadata_Treatment" in scores.columns and "Metadata_Concentration" in scores.columns and \
            (scores["Metadata_Treatment"].fillna("").astype(str) != "").any():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fits = fit_all(scores)
            ok = fits[fits["Metadata_Status"] == "ok"]
            out["n_dose_fits"] = float(len(ok))
            if gt is not None:
                out.update(_truth_metrics(fits, gt, notes, label))
        except GandlError as exc:
            notes.append(f"{label} dose fits: {exc}")
    return out


def _truth_metrics(fits: pd.DataFrame, gt: pd.DataFrame, notes: list[str], label: str) -> dict[str, float]:
    """EC50 rank agreement and precision/recall of the active calls against a synthetic screen's truth."""
    from scipy.stats import spearmanr

    from .dose_response import ACTIVE_STATUSES

    out: dict[str, float] = {}
    is_active = gt["active"].astype(str).str.lower().isin(["true", "1"]) if "active" in gt.columns else \
        gt["ec50_uM"].notna()
    truth = gt[gt["ec50_uM"].notna() & is_active]
    ok = fits[fits["Metadata_Status"] == "ok"]
    m = ok.merge(truth, left_on="Metadata_Compound", right_on="treatment")
    if len(m) >= 3:
        out["ec50_spearman"] = float(spearmanr(m["ec50"], m["ec50_uM"]).statistic)
    else:
        out["ec50_spearman"] = np.nan
        notes.append(f"{label} ec50_spearman: only {len(m)} true active(s) with an ok fit (need 3)")
    both = fits.merge(gt.assign(_true=is_active)[["treatment", "_true"]], left_on="Metadata_Compound",
                      right_on="treatment")
    called, true = both["Metadata_Status"].isin(ACTIVE_STATUSES), both["_true"].astype(bool)
    tp = float((called & true).sum())
    out["active_precision"] = tp / called.sum() if called.sum() else np.nan
    out["active_recall"] = tp / true.sum() if true.sum() else np.nan
    return out


def compare_embeddings(tables: Mapping[str, pd.DataFrame], *, tasks: Sequence[str] = DEFAULT_TASKS,
                       ground_truth: pd.DataFrame | str | os.PathLike | None = None,
                       replicate_map: bool = True) -> pd.DataFrame:
    """The comparison table: rows ``(task, metric)``, one column per embedding.

    Parameters
    ----------
    tables
        ``{name: embeddings table}`` (site- or well-level; each keeps its own features).
    tasks
        Task strings (see :func:`parse_task`).
    ground_truth
        ``ground_truth.csv`` of the synthetic screen (or a frame) for ``ec50_spearman``.
    replicate_map
        Add the ``replicate / replicate_map`` row (copairs; needs treated wells with replicates).

    Returns
    -------
    pd.DataFrame
        Index = MultiIndex (task, metric); ``attrs["notes"]`` lists metrics that could not be computed
        and why; ``attrs["n_features"]`` the width of each embedding.

    Raises
    ------
    ConfigError
        No tables or a bad task.
    DataError
        A table lacks plate/well columns or features.
    """
    from .evaluation import classify, default_controls
    from .metrics import mean_ap

    if not tables:
        raise ConfigError("compare: give at least one embeddings table.")
    parsed = [parse_task(t) for t in tasks]
    gt = _ground_truth(ground_truth)
    columns: dict[str, dict[tuple[str, str], float]] = {}
    notes: list[str] = []
    widths: dict[str, int] = {}
    for name, df in tables.items():
        prof = well_profiles(df)
        widths[name] = len(feature_columns(prof))
        col: dict[tuple[str, str], float] = {}
        for task in parsed:
            label = f"{name} / {task['name']}"
            if task["kind"] == "celltype":
                try:
                    col[(task["name"], "accuracy")] = float(classify(prof, label="Metadata_CellType", seed=0).accuracy)
                except GandlError as exc:
                    col[(task["name"], "accuracy")] = np.nan
                    notes.append(f"{label}: {exc}")
                continue
            if task["kind"] == "query":
                pos, neg = task["positive"], task["negative"]
            else:
                pos, neg = default_controls(prof)
            if task["kind"] == "percelltype":
                if "Metadata_CellType" not in prof.columns:
                    raise DataError(f"--task percelltype: {name} has no Metadata_CellType column.")
                for ct in sorted(prof["Metadata_CellType"].dropna().astype(str).unique()):
                    sub = prof[prof["Metadata_CellType"].astype(str) == ct]
                    for k, v in _control_metrics(sub, pos, neg, gt, notes, f"{label} {ct}").items():
                        col[(f"controls [{ct}]", k)] = v
            else:
                for k, v in _control_metrics(prof, pos, neg, gt, notes, label).items():
                    col[(task["name"], k)] = v
        if replicate_map:
            try:
                treated = "Metadata_Role == 'treated'" if "Metadata_Role" in prof.columns else None
                sameby = [c for c in ("Metadata_Treatment", "Metadata_Concentration") if c in prof.columns]
                if not sameby:
                    raise DataError("no Metadata_Treatment column")
                rep = prof.copy()
                if "Metadata_Concentration" in rep.columns:
                    rep["Metadata_Concentration"] = rep["Metadata_Concentration"].round(6)
                col[("replicate", "replicate_map")] = float(
                    mean_ap(rep, sameby=sameby, query=treated, null_size=100)[0])
            except GandlError as exc:
                col[("replicate", "replicate_map")] = np.nan
                notes.append(f"{name} replicate_map: {exc}")
        columns[name] = col
    keys: list[tuple[str, str]] = []
    for col in columns.values():
        keys += [k for k in col if k not in keys]
    out = pd.DataFrame({name: [col.get(k, np.nan) for k in keys] for name, col in columns.items()},
                       index=pd.MultiIndex.from_tuples(keys, names=["task", "metric"]))
    out.attrs["notes"] = notes
    out.attrs["n_features"] = widths
    return out


def to_markdown(result: pd.DataFrame, *, digits: int = 3) -> str:
    """The comparison as a Markdown table (best value per row in bold), plus metric notes."""
    names = list(result.columns)
    lines = ["| task | metric | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for (task, metric), row in result.iterrows():
        vals = row.to_numpy(dtype=float)
        best = np.nanmax(vals) if np.isfinite(vals).any() else np.nan
        cells = []
        for v in vals:
            if not np.isfinite(v):
                cells.append("–")
            else:
                s = f"{int(v)}" if metric == "n_dose_fits" else f"{v:.{digits}f}"
                cells.append(f"**{s}**" if np.isclose(v, best, rtol=0, atol=5e-4) and len(names) > 1 else s)
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    widths = result.attrs.get("n_features") or {}
    if widths:
        lines.append("")
        lines.append("Features per embedding: " + ", ".join(f"{k} {v}" for k, v in widths.items()) + ".")
    lines.append("")
    for metric in dict.fromkeys(result.index.get_level_values("metric")):
        if metric in METRIC_HELP:
            lines.append(f"- `{metric}`: {METRIC_HELP[metric]}")
    return "\n".join(lines) + "\n"


def report_section(result: pd.DataFrame, *, title: str = "Embedding comparison") -> Any:
    """A :class:`gandl_core.analysis.report.Section` holding the comparison table and its notes."""
    from .report import Section

    flat = result.reset_index()
    numbers = {f"{name}: {task} {metric}": (None if not np.isfinite(v) else round(float(v), 4))
               for (task, metric), row in result.iterrows() for name, v in row.items()}
    notes = [f"{m}: {h}" for m, h in METRIC_HELP.items() if m in set(flat["metric"])]
    notes += list(result.attrs.get("notes") or [])[:20]
    return Section(title=title, tables={"rows = task / metric, columns = embeddings": flat},
                   numbers=numbers, notes=notes)
