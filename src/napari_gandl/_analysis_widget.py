"""Projection & activity dock: control-trained On-perturbation axis, E2 scatter, Z', dose-response.

The analyst picks the two control groups from the well table's metadata (a column such as
``Metadata_Role`` or ``Metadata_Condition`` and one value for each group), and a feature set
(column prefix, ``GAN_`` after embedding). **Fit** calls
:class:`gandl_core.analysis.projection.Projection` (a linear SVM between the controls; its normal
is the On-perturbation axis) on the per-well table and stores the scores as well features
(``OnScore``, and ``OffScore`` when the projection gives a second axis). Then:

* the plate map is coloured by the chosen numeric column (``OnScore`` by default) with a
  colormap; a semi-transparent overlay gives the shown site its well's colour; the colourbar is
  drawn in this dock;
* the E2 scatter (On vs Off axis, controls ringed) is linked to the wells: click a point to
  select its well in the plate map and show its image;
* Z' of the controls on the On axis (:func:`gandl_core.analysis.projection.z_prime`);
* the dose-response of a compound (On score vs concentration) with the core's Hill fit
  (:mod:`gandl_core.analysis.dose_response`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from magicgui import widgets as mw
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from . import _layers as L
from ._mpl import make_canvas, style_axes
from ._workers import notify_error

ON, OFF = "OnScore", "OffScore"
ROLE_COLOURS = {"positive": "#4caf50", "negative": "#e53935"}
COLORMAPS = ["viridis", "magma", "plasma", "inferno", "turbo", "coolwarm", "gray"]


def feature_prefixes(df: pd.DataFrame) -> list[str]:
    """Feature families present (``GAN_``, ``HC_``...) in column order; numeric columns only."""
    out: list[str] = []
    for c in df.columns:
        c = str(c)
        if c.startswith("Metadata_") or "_" not in c or not pd.api.types.is_numeric_dtype(df[c]):
            continue
        p = c.split("_", 1)[0] + "_"
        if p not in out:
            out.append(p)
    return out


def _query(df: pd.DataFrame, column: str, value: Any) -> str:
    """A pandas query selecting ``df[column] == value`` (value typed as in the column)."""
    typed = next((v for v in df[column].dropna().unique() if str(v) == str(value)), value)
    if isinstance(typed, (np.integer, np.floating)):
        typed = typed.item()
    return f"`{column}` == {typed!r}"


def fit_projection(wells: pd.DataFrame, *, column: str, positive: Any, negative: Any,
                   prefix: str = "GAN_") -> tuple[pd.DataFrame, float, Any]:
    """Fit the core Projection on the control wells and score every embedded well.

    One call to :func:`gandl_core.analysis.projection.project_table` (linear SVM between the
    controls; On = its normal, scaled so C+ mean = +1 and C- mean = -1; Off = orthogonal axis).

    Parameters
    ----------
    wells
        Per-well table (metadata + features).
    column, positive, negative
        Control groups: rows with ``wells[column] == positive`` / ``== negative``.
    prefix
        Feature columns used: those starting with ``prefix``.

    Returns
    -------
    (scores, z_prime, projection): ``scores`` has Metadata_Plate, Metadata_Well, OnScore and
    OffScore for the wells with features.

    Raises
    ------
    ConfigError
        Missing column, same value for both groups, no features with that prefix.
    DataError
        Fewer than two embedded wells in a control group.
    """
    from gandl_core.analysis.projection import project_table
    from gandl_core.errors import ConfigError

    if column not in wells.columns:
        raise ConfigError(f"control column {column!r} is not in the well table; choose one of "
                          f"{[c for c in wells.columns if str(c).startswith('Metadata_')]}.")
    features = [c for c in wells.columns if str(c).startswith(prefix) and pd.api.types.is_numeric_dtype(wells[c])]
    if not features:
        raise ConfigError(f"no feature columns start with {prefix!r}: embed the wells first (Embed wells dock) "
                          "or choose another feature set.")
    if str(positive) == str(negative):
        raise ConfigError(f"positive and negative controls are both {column} == {positive!r}; pick two values.")
    data = wells.dropna(subset=features).reset_index(drop=True)
    meta = [c for c in data.columns if str(c).startswith("Metadata_")]
    proj, table, stats = project_table(data[meta + features], positive=_query(data, column, positive),
                                       negative=_query(data, column, negative), features=features)
    scores = data[["Metadata_Plate", "Metadata_Well"]].copy()
    scores[ON] = table[ON].to_numpy(float)
    scores[OFF] = table[OFF].to_numpy(float)
    return scores, float(stats["z_prime"]), proj


class AnalysisWidget(QWidget):
    """Dock widget: controls -> Projection fit -> On score on the plate map, E2 scatter, dose-response."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.scores: pd.DataFrame | None = None
        self.z_prime: float | None = None
        self._scatter = None
        self._scatter_rows: pd.DataFrame | None = None

        self.column = mw.ComboBox(label="control column", choices=[])
        self.positive = mw.ComboBox(label="positive (C+)", choices=[])
        self.negative = mw.ComboBox(label="negative (C-)", choices=[])
        self.prefix = mw.ComboBox(label="features", choices=[])
        self.fit_btn = mw.PushButton(text="Fit")
        self.colour_by = mw.ComboBox(label="colour wells by", choices=[])
        self.cmap = mw.ComboBox(label="colormap", choices=COLORMAPS, value="viridis")
        self.compound = mw.ComboBox(label="compound", choices=[])
        self.form = mw.Container(widgets=[self.column, self.positive, self.negative, self.prefix, self.fit_btn])
        self.form2 = mw.Container(widgets=[self.colour_by, self.cmap])
        self.z_label = QLabel("Z' = -")
        self.canvas, self.fig, self.ax = make_canvas(4, 3.2)
        self.dr_canvas, self.dr_fig, self.dr_ax = make_canvas(4, 2.6)
        self.form3 = mw.Container(widgets=[self.compound])
        self.dr_label = QLabel("")
        self.dr_label.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.addWidget(self.form.native)
        lay.addWidget(self.z_label)
        lay.addWidget(self.form2.native)
        lay.addWidget(self.canvas, stretch=2)
        lay.addWidget(self.form3.native)
        lay.addWidget(self.dr_canvas, stretch=1)
        lay.addWidget(self.dr_label)

        self.column.changed.connect(self._fill_values)
        self.fit_btn.changed.connect(lambda: self.fit())
        self.colour_by.changed.connect(lambda _: self.apply_colour())
        self.cmap.changed.connect(lambda _: self.apply_colour())
        self.compound.changed.connect(lambda _: self.plot_dose_response())
        self.canvas.mpl_connect("pick_event", self._on_pick)
        self.viewer.layers.events.inserted.connect(lambda e: self.refresh_choices())
        self.refresh_choices()

    # -- choices ---------------------------------------------------------------------------------
    def refresh_choices(self) -> None:
        """Fill the dropdowns from the plate map's well table."""
        session = L.session_of(self.viewer)
        if session is None:
            return
        wells = session.wells
        meta = [c for c in wells.columns if str(c).startswith("Metadata_") and 1 < wells[c].nunique() < len(wells)]
        keep = self.column.value
        self.column.choices = meta
        if keep in meta:
            self.column.value = keep
        elif "Metadata_Role" in meta:
            self.column.value = "Metadata_Role"
        self._fill_values()
        prefixes = feature_prefixes(wells.drop(columns=[c for c in (ON, OFF, "n_sites") if c in wells]))
        keep_prefix = self.prefix.value
        self.prefix.choices = prefixes
        if keep_prefix in prefixes:
            self.prefix.value = keep_prefix
        elif "GAN_" in prefixes:
            self.prefix.value = "GAN_"
        numeric = [c for c in wells.columns if not str(c).startswith("Metadata_")
                   and pd.api.types.is_numeric_dtype(wells[c]) and c != "n_sites"]
        numeric = ([ON] if ON in numeric else []) + [c for c in numeric if c != ON][:200]
        self.colour_by.choices = numeric
        if "Metadata_Treatment" in wells.columns:
            comps = sorted(v for v in wells["Metadata_Treatment"].dropna().astype(str).unique() if v.strip())
            self.compound.choices = comps

    def _fill_values(self, *_: Any) -> None:
        session = L.session_of(self.viewer)
        col = self.column.value
        if session is None or not col:
            return
        vals = sorted(session.wells[col].dropna().astype(str).unique().tolist())
        keep = (self.positive.value, self.negative.value)
        self.positive.choices = vals
        self.negative.choices = vals
        if keep[0] in vals and keep[1] in vals and keep[0] != keep[1]:
            self.positive.value, self.negative.value = keep  # a refresh keeps the analyst's choice
        elif col == "Metadata_Role" and {"positive", "negative"} <= set(vals):
            self.positive.value, self.negative.value = "positive", "negative"
        elif len(vals) > 1:
            self.negative.value = vals[1]

    # -- fit -------------------------------------------------------------------------------------
    def fit(self) -> pd.DataFrame | None:
        """Fit the projection on the chosen controls; colour the plate; draw E2, Z' and dose-response."""
        layer = L.find_plate_map(self.viewer)
        if layer is None:
            notify_error(_no_plate())
            return None
        session = layer.metadata[L.SESSION_KEY]
        if not self.prefix.choices:
            self.refresh_choices()  # features arrived (embedding) after the dock was opened
        try:
            scores, zp, _ = fit_projection(session.wells, column=self.column.value, positive=self.positive.value,
                                           negative=self.negative.value, prefix=self.prefix.value or "GAN_")
        except Exception as exc:  # noqa: BLE001 - GandlError -> notification; bugs too, without a dialog
            notify_error(exc)
            return None
        self.scores, self.z_prime = scores, zp
        session.merge_wells(scores)
        session.extras["controls"] = (self.column.value, self.positive.value, self.negative.value)
        self.z_label.setText(f"Z' out of fold (On axis, {self.positive.value} vs {self.negative.value}) = {zp:.3f}")
        self.refresh_choices()
        self.colour_by.value = ON
        self.apply_colour()
        self.plot_dose_response()
        return scores

    # -- colour ----------------------------------------------------------------------------------
    def apply_colour(self) -> None:
        """Colour the plate map + overlay by the chosen column; redraw the scatter and colourbar."""
        layer = L.find_plate_map(self.viewer)
        if layer is None or not self.colour_by.value:
            return
        session = layer.metadata[L.SESSION_KEY]
        session.extras["colour_by"] = self.colour_by.value
        session.extras["colormap"] = self.cmap.value
        L.refresh_features(layer)
        L.update_overlay(self.viewer)
        self.draw_scatter()

    def draw_scatter(self) -> None:
        """E2 scatter of the scored wells (pickable), controls highlighted, with the colourbar."""
        session = L.session_of(self.viewer)
        # Start from an empty figure each time: the colourbar axis is recreated with the scatter.
        self.fig.clear()
        self.ax = self.fig.add_subplot()
        style_axes(self.ax)
        if session is None or ON not in session.wells.columns:
            self.canvas.draw_idle()
            return
        rows = session.wells.dropna(subset=[ON]).reset_index(drop=True)
        x = rows[ON].to_numpy(float)
        y = rows[OFF].to_numpy(float) if OFF in rows else np.zeros_like(x)
        col = session.extras.get("colour_by", ON)
        c = pd.to_numeric(rows[col], errors="coerce").to_numpy(float) if col in rows else x
        lo, hi = session.extras.get("limits") or L.colour_limits(c)
        self._scatter = self.ax.scatter(x, y, c=c, cmap=self.cmap.value, vmin=lo, vmax=hi, s=22,
                                        picker=True, pickradius=4, edgecolors="none")
        self._scatter_rows = rows
        ctrl = session.extras.get("controls")
        if ctrl and ctrl[0] in rows:
            for value, colour, label in ((ctrl[1], ROLE_COLOURS["positive"], "C+"),
                                         (ctrl[2], ROLE_COLOURS["negative"], "C-")):
                m = rows[ctrl[0]].astype(str).to_numpy() == str(value)
                self.ax.scatter(x[m], y[m], s=46, facecolors="none", edgecolors=colour, linewidths=1.2,
                                label=f"{label}: {value}")
            self.ax.legend(fontsize=7, facecolor="#262930", labelcolor="#e0e0e0", edgecolor="#555", loc="best")
        self.ax.set_xlabel("On-perturbation (SVM normal)")
        self.ax.set_ylabel("Off-perturbation" if OFF in rows else "")
        self.ax.set_title(f"E2 projection, {len(rows)} wells (click a point)", fontsize=9)
        cbar = self.fig.colorbar(self._scatter, ax=self.ax, fraction=0.05, pad=0.02)
        style_axes(cbar.ax)
        cbar.set_label(f"{col} (plate map colour)", color="#e0e0e0", fontsize=8)
        self.canvas.draw_idle()

    def _on_pick(self, event: Any) -> None:
        if event.artist is not self._scatter or self._scatter_rows is None or not len(event.ind):
            return
        # Several points can lie under the cursor: take the one nearest to the click.
        ind = np.asarray(event.ind)
        xy = self.ax.transData.transform(self._scatter.get_offsets()[ind])
        d = np.hypot(xy[:, 0] - event.mouseevent.x, xy[:, 1] - event.mouseevent.y)
        self.select_scatter_point(int(ind[int(np.argmin(d))]))

    def select_scatter_point(self, i: int) -> tuple[str, str]:
        """Select the well of scatter point ``i`` in the plate map and show its image."""
        row = self._scatter_rows.iloc[i]
        plate, well = str(row["Metadata_Plate"]), str(row["Metadata_Well"])
        L.select_well(self.viewer, plate, well)
        try:
            L.show_well_site(self.viewer, plate, well)
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
        self.ax.set_title(f"E2 projection: {plate} {well}  On = {row[ON]:.3g}", fontsize=9)
        self.canvas.draw_idle()
        return plate, well

    # -- dose-response ---------------------------------------------------------------------------
    def plot_dose_response(self) -> Any:
        """On score vs concentration for the chosen compound, with the core's Hill fit."""
        session = L.session_of(self.viewer)
        self.dr_ax.clear()
        style_axes(self.dr_ax)
        comp = self.compound.value
        if session is None or ON not in session.wells or not comp or "Metadata_Concentration" not in session.wells:
            self.dr_canvas.draw_idle()
            return None
        w = session.wells.dropna(subset=[ON])
        sub = w[w["Metadata_Treatment"].astype(str) == comp]
        conc = pd.to_numeric(sub["Metadata_Concentration"], errors="coerce").to_numpy(float)
        resp = sub[ON].to_numpy(float)
        ok = np.isfinite(conc) & (conc > 0) & np.isfinite(resp)
        conc, resp = conc[ok], resp[ok]
        self.dr_ax.set_xscale("log")
        self.dr_ax.scatter(conc, resp, s=18, color="#4fc3f7", zorder=3, label="wells")
        ctrl = session.extras.get("controls")
        if ctrl and ctrl[0] in w:
            for value, colour in ((ctrl[1], ROLE_COLOURS["positive"]), (ctrl[2], ROLE_COLOURS["negative"])):
                m = w[ctrl[0]].astype(str) == str(value)
                if m.any():
                    self.dr_ax.axhline(float(np.median(w.loc[m, ON])), color=colour, ls="--", lw=1)
        fit = None
        if len(np.unique(conc)) >= 3:
            try:
                fit = _hill_fit(conc, resp)
            except Exception as exc:  # noqa: BLE001 - a failed fit is shown, not fatal
                self.dr_label.setText(f"{comp}: no Hill fit ({exc})")
        if fit is not None:
            xs, ys, text = fit
            self.dr_ax.plot(xs, ys, color="#ffb74d", lw=1.5, label="Hill fit")
            self.dr_label.setText(f"{comp}: {text}")
        elif len(np.unique(conc)) < 3:
            self.dr_label.setText(f"{comp}: {len(np.unique(conc))} dose(s); a fit needs 3 or more.")
        self.dr_ax.set_xlabel(f"{comp} concentration (uM)")
        self.dr_ax.set_ylabel("On score")
        self.dr_ax.set_title("dose-response (dashed: C+ / C- medians)", fontsize=9)
        self.dr_canvas.draw_idle()
        return fit


def _hill_fit(conc: np.ndarray, resp: np.ndarray) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Core Hill fit (:func:`gandl_core.analysis.dose_response.fit_hill`) -> (x grid, curve, text)."""
    from gandl_core.analysis.dose_response import fit_hill

    res = fit_hill(conc, resp)
    if not res.fitted:
        raise ValueError(f"{res.status}: {res.message}")
    xs = np.logspace(np.log10(conc.min()), np.log10(conc.max()), 100)
    text = (f"{res.status}, EC50 = {res.ec50:.3g} uM, efficacy = {res.efficacy:.2f} of the control window, "
            f"R2 = {res.r2:.2f}")
    return xs, np.asarray(res.predict(xs), dtype=float), text


def _no_plate():
    from gandl_core.errors import DataError

    return DataError("No plate map is open: open a plate or a profile table first.")
