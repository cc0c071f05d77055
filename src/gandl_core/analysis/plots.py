"""Figures of the downstream analysis: one function per figure, each writes a PNG and returns its path.

* :func:`e2_scatter` -- the paper's E2 space: On-perturbation vs Off-perturbation score per well,
  coloured by role/condition, one marker per cell type.
* :func:`c2_scatter` -- the same for a cell-type projection (C2: two cell types as the two classes).
* :func:`dose_scatter` -- one compound's wells, score vs concentration (log axis), points coloured
  by concentration, per-dose mean +- sem, the fitted Hill curve and the control levels.
* :func:`plate_heatmap` -- any per-well value on the plate layout (96, 384 or 1536 wells), one panel
  per plate.
* :func:`confusion_matrix` -- counts and row percentages of a classification check.

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies);
continuous values use viridis, signed values a diverging map centred at 0. matplotlib runs with the
Agg backend (no display needed). Files are written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..plates.wells import parse_well, row_letters

__all__ = ["e2_scatter", "c2_scatter", "dose_scatter", "plate_heatmap", "plate_grids", "confusion_matrix",
           "OKABE_ITO"]

#: Okabe-Ito colour-blind-safe palette (black last: used for "other").
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
#: Fixed colours for control roles, so C+ / C- look the same in every figure.
ROLE_COLOURS = {"positive": "#0072B2", "negative": "#D55E00", "treated": "#BBBBBB", "other": "#AAAAAA",
                "(none)": "#AAAAAA"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DPI = 130


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display; a napari session keeps its own backend
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG atomically (temp file in the same folder, then rename) and close it."""
    from ..tables import atomic_write

    plt = _plt()
    path = Path(path)
    try:
        with atomic_write(path, suffix=".png") as tmp:
            # Legends placed outside the axes are not always in the tight box unless named.
            extra = fig.get_default_bbox_extra_artists()
            extra += [a for ax in fig.axes for a in ax.get_children()
                      if type(a).__name__ == "Legend" and a not in extra]
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", bbox_extra_artists=extra, facecolor="white")
    finally:
        plt.close(fig)
    return path


def _need(df: pd.DataFrame, cols: Sequence[str | None], what: str) -> None:
    missing = [c for c in cols if c is not None and c not in df.columns]
    if missing:
        raise DataError(f"{what}: column(s) {missing} are not in the table; columns are {list(df.columns)[:15]}.")


def _label(col: str) -> str:
    return col[len("Metadata_"):] if col.startswith("Metadata_") else col


def _palette(values: Sequence[Any]) -> dict[Any, str]:
    out, k = {}, 0
    for v in values:
        if str(v) in ROLE_COLOURS:
            out[v] = ROLE_COLOURS[str(v)]
        else:
            out[v] = OKABE_ITO[k % len(OKABE_ITO)]
            k += 1
    return out


def _category(s: pd.Series) -> pd.Series:
    # Empty strings and NaN become a readable category name instead of a blank legend entry.
    s = s.astype(object).where(s.notna(), "(none)").astype(str)
    return s.replace("", "(none)")


def _order(values: pd.Series) -> list[str]:
    # Controls first, treated (the grey cloud) drawn first so controls stay visible on top.
    rank = {"treated": 0, "other": 0, "(none)": 0, "negative": 2, "positive": 3}
    return sorted(values.unique(), key=lambda v: (rank.get(v, 1), v))


def _scatter(df: pd.DataFrame, path: str | os.PathLike, *, x: str, y: str, color: str | None, marker: str | None,
             title: str, xlabel: str, ylabel: str, guides: Sequence[float]) -> Path:
    plt = _plt()
    _need(df, [x, y, color, marker], "scatter")
    d = df[np.isfinite(df[x].astype(float)) & np.isfinite(df[y].astype(float))]
    if d.empty:
        raise DataError(f"scatter: no row has finite {x!r} and {y!r} scores.")
    col = _category(d[color]) if color else pd.Series("wells", index=d.index)
    mk = _category(d[marker]) if marker else pd.Series("", index=d.index)
    colours = _palette(_order(col))
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(sorted(mk.unique()))}
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    for v in guides:
        ax.axvline(v, color="#888888", lw=0.8, ls="--", zorder=0)
    ax.axhline(0, color="#cccccc", lw=0.6, zorder=0)
    many = len(d) > 400
    for c in _order(col):
        for m in sorted(mk.unique()):
            sel = (col == c) & (mk == m)
            if not sel.any():
                continue
            ax.scatter(d.loc[sel, x], d.loc[sel, y], s=12 if many else 26, c=colours[c], marker=markers[m],
                       alpha=0.55 if c in ("treated", "other", "(none)") else 0.85, edgecolors="white", linewidths=0.3)
    # Two legends: colour (role/condition) and marker (cell type), so neither repeats the other.
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=colours[c], label=f"{c} (n={int((col == c).sum())})")
               for c in _order(col)]
    leg = ax.legend(handles=handles, title=_label(color) if color else None, loc="upper left",
                    bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8, title_fontsize=9)
    if marker and len(markers) > 1:
        ax.add_artist(leg)
        mh = [Line2D([], [], ls="", marker=markers[m], color="#444444", label=m) for m in sorted(markers)]
        ax.legend(handles=mh, title=_label(marker), loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False,
                  fontsize=8, title_fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def e2_scatter(scores: pd.DataFrame, path: str | os.PathLike, *, x: str = "OnScore", y: str = "OffScore",
               color: str | None = "Metadata_Role", marker: str | None = "Metadata_CellType",
               title: str = "E2 space: On- vs Off-perturbation score per well") -> Path:
    """On vs Off scatter (the paper's E2 space), dashed lines at the control means -1 (C-) and +1 (C+).

    Parameters
    ----------
    scores
        Table with ``x``/``y`` score columns (e.g. ``Projection.transform_table`` output).
    path
        PNG to write.
    x, y
        Score columns (``OnScore``, ``OffScore``; a table of an older version with ``On``/``Off`` is read too).
    color, marker
        Metadata columns for colour (roles get fixed colours: C+ blue, C- vermillion, treated grey)
        and marker shape (e.g. cell type); ``None`` or a missing-from-table default is an error only
        when given explicitly -- defaults absent from the table are skipped.
    title
        Figure title.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DataError
        A named column is missing, or no row has finite scores.
    """
    from .projection import resolve_score

    scores, x = resolve_score(scores, x)
    scores, y = resolve_score(scores, y)
    color = color if color is None or color in scores.columns or color != "Metadata_Role" else None
    marker = marker if marker is None or marker in scores.columns or marker != "Metadata_CellType" else None
    return _scatter(scores, path, x=x, y=y, color=color, marker=marker, title=title,
                    xlabel="On-perturbation score (C- = -1, C+ = +1)",
                    ylabel="Off-perturbation score (orthogonal, same scale)", guides=(-1.0, 1.0))


def c2_scatter(scores: pd.DataFrame, path: str | os.PathLike, *, x: str = "OnScore", y: str = "OffScore",
               color: str | None = "Metadata_CellType", marker: str | None = None,
               classes: tuple[str, str] | None = None,
               title: str = "C2 space: cell-type axis vs orthogonal axis") -> Path:
    """Scatter of a cell-type projection (a :class:`~gandl_core.analysis.projection.Projection` fitted
    with two cell types as the classes): the x axis runs from one cell type (-1) to the other (+1).

    Parameters
    ----------
    scores, path, x, y, color, marker, title
        As in :func:`e2_scatter` (colour defaults to the cell type).
    classes
        ``(negative, positive)`` class names for the x-axis label.

    Returns
    -------
    Path

    Raises
    ------
    DataError
        A named column is missing, or no row has finite scores.
    """
    xl = (f"cell-type axis ({classes[0]} = -1, {classes[1]} = +1)" if classes
          else "cell-type axis (class means at -1 / +1)")
    return _scatter(scores, path, x=x, y=y, color=color, marker=marker, title=title, xlabel=xl,
                    ylabel="orthogonal axis (same scale)", guides=(-1.0, 1.0))


def dose_scatter(df: pd.DataFrame, fits: pd.DataFrame | None, compound: str, path: str | os.PathLike, *,
                 score: str = "OnScore", compound_col: str = "Metadata_Treatment",
                 dose_col: str = "Metadata_Concentration", unit: str = "uM",
                 controls: dict[str, float] | None = None) -> Path:
    """One compound's dose-response: wells coloured by concentration, mean +- sem, fitted Hill curve,
    its EC50 with the 95% CI as a shaded band, and the status.

    Parameters
    ----------
    df
        Well table with ``score``, ``compound_col`` and ``dose_col``.
    fits
        Output of :func:`~gandl_core.analysis.dose_response.fit_all` (row ``Metadata_Compound == compound``
        gives the curve), or ``None`` to fit here.
    compound
        Compound to draw.
    path
        PNG to write.
    score, compound_col, dose_col, unit
        Column names and the dose unit for the axis label.
    controls
        Horizontal reference lines ``{label: level}``; default for the On score:
        ``{"C+ mean": 1, "C- mean": -1}``.

    Returns
    -------
    Path

    Raises
    ------
    DataError
        A column is missing or the compound has no well with a positive dose and a finite score.
    """
    from matplotlib.colors import LogNorm

    from . import dose_response as dr
    from .projection import resolve_score

    plt = _plt()
    df, score = resolve_score(df, score)
    _need(df, [score, compound_col, dose_col], "dose_scatter")
    sub = df[df[compound_col].astype(str) == str(compound)]
    conc = pd.to_numeric(sub[dose_col], errors="coerce").to_numpy(float)
    resp = sub[score].to_numpy(float)
    ok = np.isfinite(conc) & (conc > 0) & np.isfinite(resp)
    if not ok.any():
        raise DataError(f"dose_scatter: compound {compound!r} has no well with a positive {dose_col!r} and a "
                        f"finite {score!r}; check the compound name and columns.")
    conc, resp = conc[ok], resp[ok]
    row = _fit_row(fits, compound, conc, resp)
    is_on = score in ("OnScore", "On")
    if controls is None:
        controls = {"C+ mean": 1.0, "C- mean": -1.0} if is_on else {}
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    for (label, level), colour in zip(controls.items(), (ROLE_COLOURS["positive"], ROLE_COLOURS["negative"],
                                                          "#777777", "#777777")):
        ax.axhline(level, color=colour, ls="--", lw=1.0, label=label)
    pts = ax.scatter(conc, resp, c=conc, cmap="viridis", norm=LogNorm(conc.min(), max(conc.max(), conc.min() * 1.01)),
                     s=30, edgecolors="white", linewidths=0.4, zorder=3, label="wells")
    doses = np.unique(conc)
    means = np.array([resp[conc == d].mean() for d in doses])
    sems = np.array([resp[conc == d].std(ddof=1) / np.sqrt((conc == d).sum()) if (conc == d).sum() > 1 else 0
                     for d in doses])
    ax.errorbar(doses, means, yerr=sems, fmt="_", color="#333333", ms=12, capsize=3, lw=1, zorder=4,
                label="mean ± sem")
    sub_t = _draw_fit(ax, row, doses, unit)
    ax.set_xscale("log")
    ax.set_xlabel(f"concentration ({unit}, log scale)")
    ax.set_ylabel(f"{score}" + (" (C- = -1, C+ = +1)" if is_on else ""))
    ax.set_title(f"{compound}\n{sub_t}", fontsize=9)
    cb = fig.colorbar(pts, ax=ax, pad=0.02)
    cb.set_label(f"concentration ({unit})")
    ax.legend(fontsize=8, frameon=False, loc="best")
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def _fit_row(fits: pd.DataFrame | None, compound: str, conc: np.ndarray, resp: np.ndarray) -> pd.Series:
    """The compound's row of a fits table (current or older column names), or a fit made here."""
    from . import dose_response as dr

    if fits is not None:
        f = dr.with_fit_names(fits)
        if "Metadata_Compound" in f.columns:
            m = f["Metadata_Compound"].astype(str) == str(compound)
            if m.any():
                return f[m].iloc[0]
    res = dr.fit_hill(conc, resp)
    d = res.as_dict()
    return pd.Series({"Metadata_Compound": compound, "Metadata_Status": d.pop("status"),
                      "Metadata_Message": d.pop("message"), **d})


def _ci_text(row: pd.Series, name: str) -> str:
    lo, hi = float(row.get(f"{name}_ci_low", np.nan)), float(row.get(f"{name}_ci_high", np.nan))
    return f" [{lo:.3g}, {hi:.3g}]" if np.isfinite(lo) and np.isfinite(hi) else ""


def _draw_fit(ax: Any, row: pd.Series, doses: np.ndarray, unit: str) -> str:
    """Hill curve, EC50 line and its 95% CI band on ``ax``; returns the title's second line."""
    from . import dose_response as dr

    status = str(row.get("Metadata_Status", ""))
    ec50 = float(row.get("ec50", np.nan))
    if not np.isfinite(ec50):
        msg = str(row.get("Metadata_Message", "") or "")
        return f"no curve: {status}" + (f" ({msg})" if msg and msg != "nan" else "")
    xs = np.logspace(np.log10(min(doses.min(), ec50)) - 0.3, np.log10(max(doses.max(), ec50)) + 0.3, 200)
    ys = dr.hill(xs, float(row["bottom"]), float(row["top"]), ec50, float(row["hill"]))
    ax.plot(xs, ys, color="#CC79A7", lw=2, zorder=2, label="Hill fit")
    ax.axvline(ec50, color="#CC79A7", lw=0.8, ls=":", zorder=1)
    lo, hi = float(row.get("ec50_ci_low", np.nan)), float(row.get("ec50_ci_high", np.nan))
    if np.isfinite(lo) and np.isfinite(hi):
        ax.axvspan(max(lo, xs.min()), min(hi, xs.max()), color="#CC79A7", alpha=0.12, lw=0, zorder=0,
                   label="EC50 95% CI")
    return (f"EC50 = {ec50:.3g} {unit}{_ci_text(row, 'ec50')}, hill = {float(row['hill']):.2g}{_ci_text(row, 'hill')}\n"
            f"efficacy = {float(row['efficacy']):.2f}{_ci_text(row, 'efficacy')}, R² = {float(row['r2']):.2f} "
            f"({status})")


LAYOUTS = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}


def _well_rc(well: str) -> tuple[int, int]:
    return parse_well(well, where="plate_heatmap")  # 0-based (row, column); WellNameError (a DataError) if not a well


_row_name = row_letters


def plate_grids(df: pd.DataFrame, value: str, *, plate_col: str = "Metadata_Plate",
                well_col: str = "Metadata_Well", layout: int | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """Per-plate ``rows x columns`` arrays of a per-well value (mean over rows of one well, NaN = no data).

    Parameters
    ----------
    df, value, plate_col, well_col, layout
        As in :func:`plate_heatmap`.

    Returns
    -------
    (int, dict)
        The layout (96, 384 or 1536) and ``{plate: array [rows, columns]}`` in sorted plate order.

    Raises
    ------
    DataError
        Missing column, non-numeric value, a well name not like ``B02``, or wells beyond the layout.
    """
    _need(df, [value, well_col], "plate_heatmap")
    if not pd.api.types.is_numeric_dtype(df[value]):
        raise DataError(f"plate_heatmap: column {value!r} is not numeric.")
    if df.empty:
        raise DataError("plate_heatmap: the table has no rows.")
    plates = df[plate_col].astype(str) if plate_col in df.columns else pd.Series("plate", index=df.index)
    rc = np.array([_well_rc(w) for w in df[well_col].astype(str)])
    if layout is None:
        layout = next((n for n, (r, c) in LAYOUTS.items() if rc[:, 0].max() < r and rc[:, 1].max() < c), None)
        if layout is None:
            raise DataError(f"plate_heatmap: well {df[well_col].iloc[int(np.argmax(rc.max(axis=1)))]!r} is beyond "
                            "a 1536-well plate.")
    if layout not in LAYOUTS:
        raise DataError(f"plate_heatmap: layout={layout}; use 96, 384 or 1536.")
    nr, nc = LAYOUTS[layout]
    if rc[:, 0].max() >= nr or rc[:, 1].max() >= nc:
        raise DataError(f"plate_heatmap: some wells do not fit a {layout}-well plate ({nr} x {nc}); "
                        "leave layout unset to choose it from the wells.")
    vals = df[value].astype(float).to_numpy()
    grids = {}
    for p in sorted(plates.unique()):
        m = (plates == p).to_numpy() & np.isfinite(vals)
        s = np.zeros((nr, nc))
        k = np.zeros((nr, nc))
        np.add.at(s, (rc[m, 0], rc[m, 1]), vals[m])
        np.add.at(k, (rc[m, 0], rc[m, 1]), 1)
        grids[p] = np.where(k > 0, s / np.maximum(k, 1), np.nan)
    return layout, grids


def plate_heatmap(df: pd.DataFrame, value: str, path: str | os.PathLike, *, plate_col: str = "Metadata_Plate",
                  well_col: str = "Metadata_Well", layout: int | None = None, title: str | None = None,
                  cmap: str | None = None, max_plates: int = 12) -> Path:
    """A per-well value on the plate layout, one panel per plate (wells without a value are grey).

    Several rows per well (e.g. sites) are averaged. Signed values (some < 0, some > 0) use a diverging
    map centred at 0 (blue = positive), others viridis; every panel shares one colour scale.

    Parameters
    ----------
    df
        Table with ``well_col`` (``B02`` style), ``value`` and optionally ``plate_col``.
    value
        Numeric column to show.
    path
        PNG to write.
    plate_col, well_col
        Metadata columns (a missing plate column means one plate).
    layout
        96, 384 or 1536; default: the smallest that holds every well.
    title, cmap
        Figure title and colour map override.
    max_plates
        Draw at most this many plates (the first in sorted order).

    Returns
    -------
    Path

    Raises
    ------
    DataError
        Missing column, non-numeric value, or a well name that is not like ``B02``.
    """
    from matplotlib.colors import TwoSlopeNorm

    plt = _plt()
    layout, all_grids = plate_grids(df, value, plate_col=plate_col, well_col=well_col, layout=layout)
    nr, nc = LAYOUTS[layout]
    names = list(all_grids)[:max_plates]
    grids = [all_grids[p] for p in names]
    n_plates = len(all_grids)
    allv = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
    if allv.size == 0:
        raise DataError(f"plate_heatmap: column {value!r} has no finite value.")
    lo, hi = float(allv.min()), float(allv.max())
    signed = lo < 0 < hi
    if signed:
        lim = max(-lo, hi)
        norm, cm = TwoSlopeNorm(0.0, -lim, lim), cmap or "RdBu"
    else:
        norm, cm = None, cmap or "viridis"
    ncols = min(len(names), 3)
    nrows = int(np.ceil(len(names) / ncols))
    w = 4.6 if layout == 96 else 6.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols + 0.8, w * nr / nc * nrows + 0.8), squeeze=False,
                             layout="constrained")
    cmap_obj = plt.get_cmap(cm).with_extremes(bad="#e0e0e0")  # wells without data: light grey
    im = None
    step = 1 if layout == 96 else 2 if layout == 384 else 4
    for ax, p, g in zip(axes.ravel(), names, grids):
        im = ax.imshow(np.ma.masked_invalid(g), cmap=cmap_obj, norm=norm,
                       vmin=None if signed else lo, vmax=None if signed else hi, aspect="equal")
        ax.set_title(f"plate {p}", fontsize=9)
        ax.set_xticks(range(0, nc, step), [str(i + 1) for i in range(0, nc, step)], fontsize=7)
        ax.set_yticks(range(0, nr, step), [_row_name(i) for i in range(0, nr, step)], fontsize=7)
        ax.tick_params(length=0)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, pad=0.02)
    cb.set_label(value)
    extra = f" (first {max_plates} of {n_plates} plates)" if n_plates > max_plates else ""
    gaps = any(np.isnan(g).any() for g in grids)
    fig.suptitle((title or f"{value} per well") + extra + ("; grey = no data" if gaps else ""), fontsize=11)
    return _save(fig, path)


def confusion_matrix(cm: pd.DataFrame | np.ndarray, path: str | os.PathLike, *, classes: Sequence[str] | None = None,
                     title: str = "Confusion matrix (held-out wells)") -> Path:
    """Confusion matrix with counts and row percentages (rows = true class).

    Parameters
    ----------
    cm
        Square counts, rows = true, columns = predicted (a DataFrame's index/columns give the names).
    path
        PNG to write.
    classes
        Class names when ``cm`` is an array.
    title
        Figure title.

    Returns
    -------
    Path

    Raises
    ------
    DataError
        ``cm`` is not square or the names do not match its size.
    """
    plt = _plt()
    if isinstance(cm, pd.DataFrame):
        classes = [str(c) for c in cm.index] if classes is None else list(classes)
        counts = cm.to_numpy(dtype=float)
    else:
        counts = np.asarray(cm, dtype=float)
        classes = list(classes) if classes is not None else [str(i) for i in range(len(counts))]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or len(classes) != counts.shape[0]:
        raise DataError(f"confusion_matrix: need a square matrix with one name per class; got shape "
                        f"{counts.shape} and {len(classes)} name(s).")
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = counts / counts.sum(axis=1, keepdims=True)
    n = len(classes)
    size = 2.2 + 0.9 * n
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(np.nan_to_num(frac), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            f = frac[i, j]
            txt = f"{int(counts[i, j])}\n{f:.0%}" if np.isfinite(f) else "0"
            ax.text(j, i, txt, ha="center", va="center", fontsize=9,
                    color="white" if np.isfinite(f) and f > 0.6 else "black")
    ax.set_xticks(range(n), classes, rotation=30 if max(map(len, classes)) > 6 else 0, ha="right" if
                  max(map(len, classes)) > 6 else "center")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = np.trace(counts) / counts.sum() if counts.sum() else float("nan")
    ax.set_title(f"{title}\naccuracy {acc:.1%} (n = {int(counts.sum())})", fontsize=10)
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("fraction of the true class")
    return _save(fig, path)
