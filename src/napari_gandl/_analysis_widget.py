"""Projection & activity dock: control-trained On-perturbation axis, E2 scatter, Z', dose-response.

The analyst picks the two control groups from the well table's metadata (a column such as
``Metadata_Role`` -- marked by hand in the Plate browser when the plate has none -- or
``Metadata_Condition``, and one value for each group), and a feature family (``GAN_`` after
embedding). **Fit** runs :func:`gandl_core.analysis.projection.project_table` in a worker (a linear
SVM between the controls; its normal is the On-perturbation axis) and merges ``OnScore`` /
``OffScore`` into the well table. The control groups are boolean masks built with pandas; no
query text is ever made from column names or values (only the constant
``Metadata_Control == 'positive'`` on a column this dock writes). Wells marked ``ignore`` are left
out. Then the plate map is coloured by ``OnScore`` (the Fit asked for it), the E2 scatter (On vs
Off, controls ringed) is drawn -- click a point to select its well -- and the dose-response of a
compound is fitted in a worker with the core's Hill fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from magicgui import widgets as mw
from qtpy.QtWidgets import QPushButton

from ._mpl import make_canvas, plain_log_axis
from ._session import ROLE_COLUMN, Colouring, Controls
from ._ui import DockBase, button_row, status_label
from ._workers import notify_error, start_function

ON, OFF = "OnScore", "OffScore"
CONTROL = "Metadata_Control"
ROLE_COLOURS = {"positive": "#4caf50", "negative": "#e53935"}
COMPOUND_COLUMNS = ("Metadata_Treatment", "Metadata_Compound", "Metadata_broad_sample", "Metadata_pert_iname")
DOSE_COLUMNS = ("Metadata_Concentration", "Metadata_Dose", "Metadata_mmoles_per_liter")


def feature_prefixes(df: pd.DataFrame) -> list[str]:
    """Feature families present (``GAN_``, ``HC_``...) in column order; numeric columns only."""
    out: list[str] = []
    for c in df.columns:
        c = str(c)
        if c.startswith("Metadata_") or "_" not in c or c in (ON, OFF) or not pd.api.types.is_numeric_dtype(df[c]):
            continue
        p = c.split("_", 1)[0] + "_"
        if p not in out:
            out.append(p)
    return out


def _text(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), "").astype(str)


def control_masks(wells: pd.DataFrame, column: str, positive: Any, negative: Any) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``wells[column] == positive`` / ``== negative``, compared as text (no query strings)."""
    vals = _text(wells[column])
    return (vals == str(positive)).to_numpy(), (vals == str(negative)).to_numpy()


def fit_projection(wells: pd.DataFrame, *, column: str, positive: Any, negative: Any,
                   prefix: str = "GAN_") -> tuple[pd.DataFrame, dict]:
    """Fit the core Projection on the control wells and score every embedded, not-ignored well.

    Parameters
    ----------
    wells
        Per-well table (metadata + features).
    column, positive, negative
        Control groups: rows with ``wells[column] == positive`` / ``== negative`` (as text).
    prefix
        Feature columns used: those starting with ``prefix``.

    Returns
    -------
    (scores, stats): ``scores`` has Metadata_Plate, Metadata_Well, OnScore and OffScore for the
    scored wells; ``stats`` the core's (z_prime, z_prime_cv, n_positive, ...).

    Raises
    ------
    ConfigError
        Missing column, same value for both groups, no features with that prefix.
    DataError
        Fewer than two embedded wells in a control group.
    """
    from gandl_core.analysis.projection import project_table
    from gandl_core.errors import ConfigError

    if not column or column not in wells.columns:
        meta = [c for c in wells.columns if str(c).startswith("Metadata_")]
        raise ConfigError(f"control column {column!r} is not in the well table; choose one of {meta}, or mark "
                          "C+ and C- wells in the Plate browser (Mark selected wells as).")
    features = [c for c in wells.columns if str(c).startswith(prefix) and pd.api.types.is_numeric_dtype(wells[c])]
    if not features:
        raise ConfigError(f"no feature columns start with {prefix!r}: embed the wells first (Embed wells dock) "
                          "or choose another feature set.")
    if str(positive) == str(negative):
        raise ConfigError(f"positive and negative controls are both {column} = {positive!r}; pick two values.")
    keep = wells[features].notna().all(axis=1).to_numpy()
    if ROLE_COLUMN in wells.columns:
        keep = keep & (_text(wells[ROLE_COLUMN]) != "ignore").to_numpy()
    data = wells.loc[keep].reset_index(drop=True)
    pos, neg = control_masks(data, column, positive, negative)
    meta = [c for c in data.columns if str(c).startswith("Metadata_") and c != CONTROL]
    table = data[meta + features].assign(**{CONTROL: np.where(pos, "positive", np.where(neg, "negative", ""))})
    _, scored, stats = project_table(table, positive=f"{CONTROL} == 'positive'", negative=f"{CONTROL} == 'negative'",
                                     features=features)
    on = scored[ON] if ON in scored else scored["On"]
    off = scored[OFF] if OFF in scored else scored.get("Off")
    scores = data[["Metadata_Plate", "Metadata_Well"]].copy()
    scores[ON] = on.to_numpy(float)
    scores[OFF] = off.to_numpy(float) if off is not None else np.nan
    return scores, stats


def dose_response_data(wells: pd.DataFrame, compound: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(concentrations > 0, On scores, dose column) of one compound's scored wells."""
    comp_col = next((c for c in COMPOUND_COLUMNS if c in wells.columns), None)
    dose_col = next((c for c in DOSE_COLUMNS if c in wells.columns), None)
    if comp_col is None or dose_col is None or ON not in wells.columns:
        return np.zeros(0), np.zeros(0), dose_col or ""
    sub = wells[_text(wells[comp_col]) == str(compound)]
    conc = pd.to_numeric(sub[dose_col], errors="coerce").to_numpy(float)
    resp = sub[ON].to_numpy(float)
    ok = np.isfinite(conc) & (conc > 0) & np.isfinite(resp)
    return conc[ok], resp[ok], dose_col


def hill_curve(conc: np.ndarray, resp: np.ndarray) -> tuple[np.ndarray, np.ndarray, str] | str:
    """Core Hill fit (worker) -> (x grid, curve, text), or a text saying why there is no curve."""
    from gandl_core.analysis.dose_response import fit_hill

    n = len(np.unique(conc))
    if n < 3:
        return f"{n} dose(s); a fit needs 3 or more."
    res = fit_hill(conc, resp)
    if not res.fitted:
        return f"no Hill fit ({res.status}: {res.message})"
    xs = np.logspace(np.log10(conc.min()), np.log10(conc.max()), 100)
    text = (f"{res.status}, EC50 = {res.ec50:.3g}, efficacy = {res.efficacy:.2f} of the control window, "
            f"R2 = {res.r2:.2f}")
    return xs, np.asarray(res.predict(xs), dtype=float), text


class AnalysisWidget(DockBase):
    """Dock widget: controls -> Projection fit -> On score on the plate map, E2 scatter, dose-response."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.scores: pd.DataFrame | None = None
        self.stats: dict | None = None
        self.z_prime: float | None = None
        self.worker = None
        self.dr_worker = None
        self.montage_worker = None
        self._scatter = None
        self._rings: list[Any] = []
        self._pick_marker = None
        self._scatter_rows: pd.DataFrame | None = None

        self.column = mw.ComboBox(label="control column", choices=[],
                                  tooltip="Metadata column holding the control groups (mark C+/C- wells in the "
                                          "Plate browser when the plate has none).")
        self.positive = mw.ComboBox(label="positive (C+)", choices=[], tooltip="Value of the C+ wells.")
        self.negative = mw.ComboBox(label="negative (C-)", choices=[], tooltip="Value of the C- wells.")
        self.prefix = mw.ComboBox(label="features", choices=[], tooltip="Feature family fitted on (GAN_ after "
                                                                         "embedding).")
        self.compound = mw.ComboBox(label="compound", choices=[], tooltip="Compound whose dose-response is fitted.")
        self.form = mw.Container(widgets=[self.column, self.positive, self.negative, self.prefix])
        self.fit_btn = QPushButton("Fit")
        self.fit_btn.setToolTip("Linear SVM between C+ and C- wells: its normal is the On-perturbation axis.")
        self.z_label = status_label("Z' = -")
        self.canvas, self.fig, self.ax = make_canvas(4, 3.0)
        self.canvas.setMinimumHeight(200)
        self.pick_label = status_label("")
        self.dr_canvas, self.dr_fig, self.dr_ax = make_canvas(4, 2.4)
        self.dr_canvas.setMinimumHeight(160)
        self.dr_label = status_label("")
        self.body.addWidget(self.form.native)
        self.body.addWidget(button_row(self.fit_btn))
        self.body.addWidget(self.z_label)
        self.body.addWidget(self.canvas, stretch=2)
        self.body.addWidget(self.pick_label)
        self.body.addWidget(mw.Container(widgets=[self.compound]).native)
        self.body.addWidget(self.dr_canvas, stretch=1)
        self.body.addWidget(self.dr_label)
        self._add_explain_button()

        self._filling = False
        self._picked_by_hand = False
        self.column.changed.connect(self._fill_values)
        self.positive.changed.connect(self._picked)
        self.negative.changed.connect(self._picked)
        self.fit_btn.clicked.connect(lambda: self.fit())
        self.compound.changed.connect(lambda _: self.plot_dose_response())
        self.canvas.mpl_connect("pick_event", self._on_pick)
        self.on_session(self.session)

    def _add_explain_button(self) -> None:
        """A montage of real sites along the On axis, when the core has it (gandl_core.analysis.explain)."""
        try:
            from gandl_core.analysis import explain
        except ImportError:
            self.explain_btn = None
            return
        if not hasattr(explain, "axis_montage"):
            self.explain_btn = None
            return
        self.explain_btn = QPushButton("Montage of sites along the On axis")
        self.explain_btn.setEnabled(False)
        self.explain_btn.clicked.connect(lambda: self.open_montage())
        self.body.addWidget(button_row(self.explain_btn))

    # -- choices ---------------------------------------------------------------------------------
    def on_session(self, session: Any) -> None:
        self.scores, self.stats, self.z_prime = None, None, None
        self._picked_by_hand = False
        self.z_label.setText("Z' = -")
        self.pick_label.setText("")
        self.dr_label.setText("")
        self._clear_scatter()
        self._clear_dr()
        if self.explain_btn is not None:
            self.explain_btn.setEnabled(False)  # enabled again by the next Fit
        if session is not None:
            self.link_session(session.wells_changed, lambda cols: self.refresh_choices())
        self.refresh_choices()

    def refresh_choices(self) -> None:
        """Fill the dropdowns from the well table (keeps the analyst's choices when still valid)."""
        session = self.session
        if session is None:
            for w in (self.column, self.positive, self.negative, self.prefix, self.compound):
                w.choices = []
            return
        wells = session.wells
        meta = [c for c in wells.columns if str(c).startswith("Metadata_") and c not in
                ("Metadata_Plate", "Metadata_Well", "Metadata_Site", CONTROL) and 1 < wells[c].nunique() < len(wells)]
        keep = self.column.value
        self.column.choices = meta
        if keep in meta:
            self.column.value = keep
        elif ROLE_COLUMN in meta:
            self.column.value = ROLE_COLUMN
        self._fill_values()
        prefixes = feature_prefixes(wells.drop(columns=[c for c in ("n_sites",) if c in wells]))
        keep_prefix = self.prefix.value
        self.prefix.choices = prefixes
        if keep_prefix in prefixes:
            self.prefix.value = keep_prefix
        elif "GAN_" in prefixes:
            self.prefix.value = "GAN_"
        comp_col = next((c for c in COMPOUND_COLUMNS if c in wells.columns), None)
        comps = sorted(v for v in _text(wells[comp_col]).unique() if v.strip()) if comp_col else []
        if list(self.compound.choices) != comps:
            keep_comp = self.compound.value
            self.compound.changed.disconnect()
            self.compound.choices = comps
            if keep_comp in comps:
                self.compound.value = keep_comp
            self.compound.changed.connect(lambda _: self.plot_dose_response())

    def _fill_values(self, *_: Any) -> None:
        session = self.session
        col = self.column.value
        if session is None or not col or col not in session.wells.columns:
            self.positive.choices, self.negative.choices = [], []
            return
        vals = sorted(v for v in _text(session.wells[col]).unique() if v != "ignore")
        keep = (self.positive.value, self.negative.value)
        self._filling = True
        try:
            self.positive.choices = vals
            self.negative.choices = vals
            if self._picked_by_hand and keep[0] in vals and keep[1] in vals and keep[0] != keep[1]:
                self.positive.value, self.negative.value = keep  # a refresh keeps the analyst's choice
            elif {"positive", "negative"} <= set(vals):
                self.positive.value, self.negative.value = "positive", "negative"
            elif len(vals) > 1:
                self.negative.value = vals[1]
        finally:
            self._filling = False

    def _picked(self, *_: Any) -> None:
        if not self._filling:
            self._picked_by_hand = True

    # -- fit -------------------------------------------------------------------------------------
    def fit(self) -> Any:
        """Fit in a worker; returns the worker (None with one notification when nothing can be fitted)."""
        from gandl_core.errors import DataError

        session = self.session
        if session is None:
            notify_error(DataError("No plate map is open: open a plate or a profile table first."))
            return None
        if not self.prefix.choices:
            self.refresh_choices()  # features arrived (embedding) after the dock was opened
        args = dict(column=self.column.value, positive=self.positive.value, negative=self.negative.value,
                    prefix=self.prefix.value or "GAN_")
        wells, sid = session.wells, session.id
        self.fit_btn.setEnabled(False)
        self.z_label.setText("Fitting...")
        self.worker = start_function(lambda: fit_projection(wells, **args),
                                     on_return=lambda out: self._on_fitted(out, sid, args),
                                     on_error=lambda exc: self.z_label.setText("Z' = - (the fit failed; see the "
                                                                               "message)"),
                                     on_finish=lambda: self.fit_btn.setEnabled(True), context="Fit")
        return self.worker

    def _on_fitted(self, out: tuple, session_id: int, args: dict) -> None:
        session = self.session
        if session is None or session.id != session_id:
            return
        scores, stats = out
        self.scores, self.stats = scores, stats
        self.z_prime = float(stats["z_prime"])  # the core's headline: out of fold when it could be
        session.controls = Controls(args["column"], str(args["positive"]), str(args["negative"]))
        session.merge_wells(scores)
        oof = stats.get("cv") is not None
        inside = stats.get("z_prime_in_sample")
        self.z_label.setText(f"Z' {'out of fold' if oof else 'in sample'} (On axis, {args['positive']} vs "
                             f"{args['negative']}, {stats['n_positive']} + {stats['n_negative']} wells) = "
                             f"{self.z_prime:.3f}" + (f"; in sample {inside:.3f}" if oof and inside is not None else ""))
        self.z_label.setToolTip(str(stats.get("z_prime_method", "")))
        session.set_colouring(Colouring(ON, session.colouring.colormap, session.colouring.tint_site))
        self.draw_scatter()
        self.plot_dose_response()
        if self.explain_btn is not None:
            self.explain_btn.setEnabled(True)

    # -- E2 scatter ------------------------------------------------------------------------------
    def _clear_scatter(self) -> None:
        """Empty the E2 axes, keeping them (recreating axes costs far more than removing artists)."""
        _remove_artists(self.ax)
        self.ax.set_title("E2 projection (Fit to draw)", fontsize=9)
        self._scatter, self._rings, self._pick_marker, self._scatter_rows = None, [], None, None
        self.canvas.draw_idle()

    def draw_scatter(self) -> None:
        """E2 scatter of the scored wells (pickable), controls ringed, coloured like the plate map."""
        session = self.session
        if session is None or ON not in session.wells.columns:
            self._clear_scatter()
            return
        rows = session.wells.dropna(subset=[ON]).reset_index(drop=True)
        x = rows[ON].to_numpy(float)
        y = rows[OFF].to_numpy(float) if OFF in rows else np.zeros_like(x)
        self._clear_scatter()
        ax = self.ax
        from . import _layers as L

        rgba, _ = L.well_colours(rows, session.colouring.column or ON, session.colouring.colormap)
        self._scatter = ax.scatter(x, y, c=rgba, s=20, picker=True, pickradius=4, edgecolors="none")
        self._scatter_rows = rows
        ctrl = session.controls
        if ctrl is not None and ctrl.column in rows:
            for value, colour, label in ((ctrl.positive, ROLE_COLOURS["positive"], "C+"),
                                         (ctrl.negative, ROLE_COLOURS["negative"], "C-")):
                m = (_text(rows[ctrl.column]) == str(value)).to_numpy()
                self._rings.append(ax.scatter(x[m], y[m], s=44, facecolors="none", edgecolors=colour,
                                              linewidths=1.2, label=f"{label}: {value}"))
            ax.legend(fontsize=7, facecolor="#262930", labelcolor="#e0e0e0", edgecolor="#555", loc="best")
        (self._pick_marker,) = ax.plot([], [], marker="o", ms=10, mfc="none", mec="white", mew=1.5, ls="none")
        _fit_limits(ax, x, y)
        ax.set_xlabel("On-perturbation (SVM normal)")
        ax.set_ylabel("Off-perturbation" if OFF in rows else "")
        ax.set_title(f"E2 projection, {len(rows)} wells (click a point)", fontsize=9)
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
        """Select the well of scatter point ``i`` in the plate map (its site is then read and shown)."""
        row = self._scatter_rows.iloc[i]
        plate, well = str(row["Metadata_Plate"]), str(row["Metadata_Well"])
        self.hub.select([(plate, well)])
        self.pick_label.setText(f"{plate} {well}: On = {row[ON]:.3g}" +
                                (f", Off = {row[OFF]:.3g}" if OFF in row.index else ""))
        if self._pick_marker is not None:
            self._pick_marker.set_data([row[ON]], [row[OFF] if OFF in row.index else 0.0])
            self.canvas.draw_idle()
        return plate, well

    # -- dose-response ---------------------------------------------------------------------------
    def _clear_dr(self) -> None:
        _remove_artists(self.dr_ax)
        self.dr_ax.set_title("dose-response (Fit, then pick a compound)", fontsize=9)
        self.dr_canvas.draw_idle()

    def plot_dose_response(self) -> Any:
        """Draw a compound's On scores vs dose now; fit the Hill curve in a worker (returned)."""
        session = self.session
        comp = self.compound.value
        _remove_artists(self.dr_ax)
        if session is None or ON not in session.wells or not comp:
            self.dr_canvas.draw_idle()
            return None
        conc, resp, dose_col = dose_response_data(session.wells, comp)
        ax = self.dr_ax
        if ax.get_xscale() != "log":
            ax.set_xscale("log")
            plain_log_axis(ax.xaxis)
        ax.scatter(conc, resp, s=16, color="#4fc3f7", zorder=3, label="wells")
        ctrl = session.controls
        w = session.wells.dropna(subset=[ON])
        levels = list(resp)
        if ctrl is not None and ctrl.column in w:
            for value, colour in ((ctrl.positive, ROLE_COLOURS["positive"]), (ctrl.negative, ROLE_COLOURS["negative"])):
                m = _text(w[ctrl.column]) == str(value)
                if m.any():
                    levels.append(float(np.median(w.loc[m, ON])))
                    ax.axhline(levels[-1], color=colour, ls="--", lw=1)
        if len(conc):
            ax.set_xlim(float(conc.min()) / 1.5, float(conc.max()) * 1.5)
        _fit_limits(ax, None, np.asarray(levels, float))
        ax.set_xlabel(f"{comp} ({dose_col.replace('Metadata_', '')})")
        ax.set_ylabel("On score")
        ax.set_title("dose-response (dashed: C+ / C- medians)", fontsize=9)
        self.dr_canvas.draw_idle()
        if not len(conc):
            self.dr_label.setText(f"{comp}: no scored wells with a dose.")
            return None
        self.dr_label.setText(f"{comp}: fitting...")
        sid = session.id
        self.dr_worker = start_function(lambda: hill_curve(conc, resp),
                                        on_return=lambda out: self._on_hill(out, comp, sid),
                                        context=f"Dose-response of {comp}")
        return self.dr_worker

    def _on_hill(self, out: Any, comp: str, session_id: int) -> None:
        if self.session is None or self.session.id != session_id or self.compound.value != comp:
            return  # stale: another compound or plate was chosen meanwhile
        if isinstance(out, str):
            self.dr_label.setText(f"{comp}: {out}")
            return
        xs, ys, text = out
        self.dr_ax.plot(xs, ys, color="#ffb74d", lw=1.5, label="Hill fit")
        self.dr_label.setText(f"{comp}: {text}")
        self.dr_canvas.draw_idle()

    # -- explain ---------------------------------------------------------------------------------
    def open_montage(self, *, n: int = 7, per_quantile: int = 2) -> Any:
        """Real sites at quantiles of the On score (C- end left, C+ end right) as one image layer.

        :func:`gandl_core.analysis.explain.axis_montage` picks and reads the sites in a worker; the
        montage appears below the plate map, each channel in its channel's colour.
        """
        from gandl_core.errors import DataError

        session = self.session
        if session is None or session.index is None or ON not in session.wells:
            notify_error(DataError("Fit first (the montage shows sites along the fitted On axis), on a plate "
                                   "with images."))
            return None
        scores = session.wells.dropna(subset=[ON])
        scores = scores[[c for c in scores.columns if str(c).startswith("Metadata_")] + [ON]]
        index, colormaps, sid = session.index, [c.colormap for c in session.channels], session.id
        crop = int(min(min(session.site_shape) or 128, 160))

        def work():
            from gandl_core.analysis.explain import axis_montage

            montage = axis_montage(scores, index, n=n, per_quantile=per_quantile, crop=crop)
            return montage_rgb(montage.images, colormaps), montage.table

        if self.explain_btn is not None:
            self.explain_btn.setEnabled(False)
        self.montage_worker = start_function(
            work, on_return=lambda out: self._show_montage(out, sid), context="Montage along the On axis",
            on_finish=lambda: self.explain_btn.setEnabled(True) if self.explain_btn is not None else None)
        return self.montage_worker

    def _show_montage(self, out: tuple, session_id: int) -> None:
        from . import _layers as L

        session = self.session
        if session is None or session.id != session_id:
            return
        rgb, table = out
        existing = self.hub.find("montage")
        if existing is not None:
            existing.data = rgb
            existing.metadata["table"] = table
            return
        s = L.spacing_of(session)
        oy, ox = L.origin_of(session)
        n_cols = L.plate_shape(session.wells["Metadata_Well"].tolist())[1]
        scale = n_cols * s / rgb.shape[1]
        kwargs = dict(name="montage along On (C- left, C+ right)", rgb=True, scale=(scale, scale),
                      translate=(session.site_shape[0] + 4 * s, ox),
                      metadata={L.KIND_KEY: "montage", "session_id": session.id, "table": table})
        self.hub.add_layers_staged([lambda: self.viewer.add_image(rgb, **kwargs)])


def _remove_artists(ax: Any) -> None:
    """Remove a plot's data artists and legend (axes, ticks and labels stay)."""
    for artist in list(ax.collections) + list(ax.lines):
        artist.remove()
    legend = ax.get_legend()
    if legend is not None:
        legend.remove()


def _fit_limits(ax: Any, x: np.ndarray | None, y: np.ndarray | None, pad: float = 0.08) -> None:
    """Axis limits around the data (collections are not covered by matplotlib's relim)."""
    for values, setter in ((x, ax.set_xlim), (y, ax.set_ylim)):
        if values is None:
            continue
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        lo, hi = float(v.min()), float(v.max())
        span = (hi - lo) or max(abs(hi), 1.0)
        setter(lo - pad * span, hi + pad * span)


def montage_rgb(images: np.ndarray, colormaps: list[str], gap: int = 2) -> np.ndarray:
    """Montage images ``[n, rows, C, H, W]`` (raw intensities) -> one RGB mosaic, columns = quantiles.

    Each channel is scaled by its 0.5-99.5 percentiles over the whole montage (so columns compare)
    and drawn in its channel's colour.
    """
    from napari.utils.colormaps import ensure_colormap

    n, rows, c, h, w = images.shape
    out = np.zeros((rows * (h + gap) - gap, n * (w + gap) - gap, 3), np.float32)
    colours = [np.asarray(ensure_colormap(m).colors[-1][:3], np.float32) for m in colormaps[:c]]
    colours += [np.ones(3, np.float32)] * (c - len(colours))
    for k in range(c):
        lo, hi = np.percentile(images[:, :, k], [0.5, 99.5])
        scaled = np.clip((images[:, :, k] - lo) / max(hi - lo, 1e-6), 0, 1)
        for q in range(n):
            for r in range(rows):
                y, x = r * (h + gap), q * (w + gap)
                out[y:y + h, x:x + w] += scaled[q, r][..., None] * colours[k]
    return np.clip(out, 0, 1)
