"""Plate browser dock: plates, wells, sites; controls marked by hand; colours; channels.

The plate map (a Points layer beside the site image, one square per well, every plate's wells
in ``layer.features``) is the well picker: click a well (pan/zoom mode; shift-click adds, a drag
pans), or box-select in the layer's select mode. The first selected well's site is read in a
worker and shown in the ``site <channel>`` layers (updated in place); the selected wells' metadata
is listed here. Below:

* **Mark selected wells** as C+ / C- / ignore (or clear): stored in ``Metadata_Role`` of the well
  table (created when the plate has none), so the Projection dock can fit on plates that come
  without a controls column; saved with the embedding table.
* **Colour wells by** any metadata (text: categorical colours, with a legend) or number
  (colormap over every plate's values, with its range); nothing is coloured until asked. Tick
  **tint the site** to give the shown site its well's colour.
* **Channels and file names** (folded): rename channels and pick their colours; for a TIFF
  folder, a file-name pattern to index it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QLabel, QLineEdit, QPushButton, QSpinBox,
                            QTableWidget, QTableWidgetItem, QWidget, QVBoxLayout, QHeaderView)

from . import _layers as L
from ._session import MARKS, ChannelSpec, Colouring
from ._ui import DockBase, Fold, button_row, status_label
from ._workers import notify_error

NONE = "(none)"
COLORMAPS = ["viridis", "magma", "plasma", "inferno", "turbo", "coolwarm", "gray"]
MAX_TABLE_ROWS = 200


class PlateWidget(DockBase):
    """Dock widget: plate and site pickers, selected wells' table, marks, colours, channels."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.plate_box = QComboBox()
        self.plate_box.setToolTip("Plate shown in the plate map (every plate's wells stay in its features).")
        self.site_box = QSpinBox()
        self.site_box.setRange(1, 1)
        self.site_box.setToolTip("Field of the selected well shown in the site layers.")
        self.showing = QLabel("")
        self.status = status_label("Open a plate (File > Open, or File > Open Sample > napari-gandl).")
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setMinimumHeight(150)
        self.table.verticalHeader().setDefaultSectionSize(20)
        form = QFormLayout()
        form.addRow("Plate", self.plate_box)
        form.addRow("Site", self.site_box)
        form.addRow("Showing", self.showing)
        self.body.addLayout(form)
        self.body.addWidget(self.status)
        self.body.addWidget(self.table)

        self.mark_buttons = {m: QPushButton(m) for m in MARKS}
        tips = {"C+": "positive control (Metadata_Role = positive)", "C-": "negative control (Metadata_Role = "
                "negative)", "ignore": "leave out of fits (Metadata_Role = ignore)", "clear": "no role"}
        for m, b in self.mark_buttons.items():
            b.setToolTip(f"Mark the selected wells: {tips[m]}.")
            b.clicked.connect(lambda _=False, m=m: self.mark(m))
        self.body.addWidget(QLabel("Mark selected wells as:"))
        self.body.addWidget(button_row(*self.mark_buttons.values()))

        self.colour_by = QComboBox()
        self.colour_by.setToolTip("Colour the plate map's wells by a column: text gets categorical colours, "
                                  "numbers the colormap (range shared by every plate).")
        self.cmap = QComboBox()
        self.cmap.addItems(COLORMAPS)
        self.cmap.setToolTip("Colormap for numeric columns.")
        self.tint = QCheckBox("tint the site with its well's colour")
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.RichText)
        self.colourbar = QLabel()
        self.colourbar.setVisible(False)
        cform = QFormLayout()
        cform.addRow("Colour wells by", self.colour_by)
        cform.addRow("Colormap", self.cmap)
        self.body.addLayout(cform)
        self.body.addWidget(self.tint)
        self.body.addWidget(self.legend)
        self.body.addWidget(self.colourbar)

        self.channel_table = QTableWidget(0, 2)
        self.channel_table.setHorizontalHeaderLabels(["name", "colour"])
        self.channel_table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.channel_table.setMinimumHeight(120)
        self.apply_channels = QPushButton("Apply channel names and colours")
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("TIFF folder (empty: the open plate's)")
        self.folder.setToolTip("A folder of TIFFs to index with the pattern below (also when its file names "
                               "match no built-in pattern and File > Open refused it).")
        self.pattern = QLineEdit()
        self.pattern.setPlaceholderText(r"e.g. (?P<well>[A-P]\d+)_f(?P<site>\d+)_c(?P<channel>\d+)\.tif")
        self.pattern.setToolTip("Regular expression matched against TIFF file names, with named groups well "
                                "(or row + column), site, plate, channel. Empty: the built-in patterns.")
        self.reindex = QPushButton("Open the folder with this pattern")
        inner = QWidget()
        il = QVBoxLayout(inner)
        il.setContentsMargins(0, 0, 0, 0)
        il.addWidget(self.channel_table)
        il.addWidget(self.apply_channels)
        il.addWidget(QLabel("TIFF folder and file-name pattern:"))
        il.addWidget(self.folder)
        il.addWidget(self.pattern)
        il.addWidget(self.reindex)
        self.channels_fold = Fold("Channels and file names", inner)
        self.body.addWidget(self.channels_fold)
        self.body.addStretch(1)

        self.plate_box.currentTextChanged.connect(self._on_plate_box)
        self.site_box.valueChanged.connect(self._on_site_box)
        self.colour_by.currentTextChanged.connect(lambda _: self._colouring_from_fields())
        self.cmap.currentTextChanged.connect(lambda _: self._colouring_from_fields())
        self.tint.toggled.connect(lambda _: self._colouring_from_fields())
        self.apply_channels.clicked.connect(lambda: self.rename_channels())
        self.reindex.clicked.connect(lambda: self.index_again())
        self.link(self.hub.site_shown, self._on_site_shown)
        self._pm = None
        self.on_session(self.session)

    # -- session wiring --------------------------------------------------------------------------
    def on_session(self, session: Any) -> None:
        if self._pm is not None:
            try:
                self._pm.selected_data.events.items_changed.disconnect(self._on_selection)
            except (TypeError, ValueError, RuntimeError):
                pass
            self._pm = None
        for w in (self.plate_box, self.colour_by):
            w.blockSignals(True)
            w.clear()
            w.blockSignals(False)
        self._fill_table([])
        self.legend.setText("")
        self.showing.setText("")
        enabled = session is not None
        for b in self.mark_buttons.values():
            b.setEnabled(enabled)
        if session is None:
            self.status.setText("Open a plate (File > Open, or File > Open Sample > napari-gandl).")
            self.channel_table.setRowCount(0)
            return
        self.plate_box.blockSignals(True)
        self.plate_box.addItems(session.plates)
        self.plate_box.setCurrentText(session.plate)
        self.plate_box.blockSignals(False)
        self._fill_colour_choices()
        self._fill_channels()
        self.pattern.setText(session.pattern or "")
        if session.index is not None and Path(session.source).is_dir():
            self.folder.setText(session.source)
        self.link_session(session.plate_changed, self._on_plate)
        self.link_session(session.wells_changed, self._on_wells)
        self.link_session(session.colouring_changed, self._on_colouring)
        self.link_session(session.channels_changed, self._fill_channels)
        self._pm = self.hub.plate_map
        if self._pm is not None:
            self._pm.selected_data.events.items_changed.connect(self._on_selection)
        skipped = f" {len(session.skipped)} site(s) were left out: " + "; ".join(
            f"{s['plate']}/{s['well']}/s{s['site']}: {s['reason']}" for s in session.skipped[:3]) \
            if session.skipped else ""
        self.status.setText(f"{len(session.wells)} wells on {len(session.plates)} plate(s) from "
                            f"{session.source}.{skipped} Click a well in the plate map (shift-click adds).")
        if session.current is not None:
            self._on_site_shown(session.current)

    def _on_plate(self, plate: str) -> None:
        self.plate_box.blockSignals(True)
        self.plate_box.setCurrentText(plate)
        self.plate_box.blockSignals(False)
        self._fill_table([])

    def _on_plate_box(self, plate: str) -> None:
        if self.session is not None and plate:
            self.session.set_plate(plate)

    def _on_site_box(self, site: int) -> None:
        sel = self.hub.selected()
        if sel:
            self.hub.show_site(*sel[0], site=site)

    def _on_selection(self, *_: Any) -> None:
        sel = self.hub.selected()
        self._fill_table(sel)
        s = self.session
        if sel and s is not None:
            sites = s.sites_of(*sel[0])
            n = int(sites["Metadata_Site"].max()) if "Metadata_Site" in sites and len(sites) else 1
            self.site_box.blockSignals(True)
            self.site_box.setRange(1, max(n, 1))
            self.site_box.setValue(1)
            self.site_box.blockSignals(False)

    def _on_site_shown(self, ref: Any) -> None:
        self.showing.setText(ref.label() if ref is not None else "")

    def _on_wells(self, columns: tuple) -> None:
        self._fill_colour_choices()
        self._fill_table(self.hub.selected())

    # -- table -----------------------------------------------------------------------------------
    def _fill_table(self, wells: list[tuple[str, str]]) -> None:
        s = self.session
        if s is None or not wells:
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            return
        rows = s.wells.iloc[s.rows_of(wells[:MAX_TABLE_ROWS])]
        cols = [c for c in rows.columns if str(c).startswith("Metadata_") and c != "Metadata_Plate"] + \
               [c for c in ("n_sites", "OnScore", "OffScore") if c in rows.columns]
        self.table.setUpdatesEnabled(False)
        self.table.setColumnCount(len(cols))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels([str(c).replace("Metadata_", "") for c in cols])
        for i, r in enumerate(rows[cols].itertuples(index=False)):
            for j, v in enumerate(r):
                text = f"{v:.4g}" if isinstance(v, float) else str(v)
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.table.setUpdatesEnabled(True)
        more = f" (first {MAX_TABLE_ROWS} listed)" if len(wells) > MAX_TABLE_ROWS else ""
        self.status.setText(f"{len(wells)} well(s) selected{more}: " + ", ".join(w for _, w in wells[:12])
                            + (" ..." if len(wells) > 12 else ""))

    def selected_table(self) -> pd.DataFrame:
        """The well-table rows of the selected wells (as listed)."""
        s = self.session
        return s.wells.iloc[s.rows_of(self.hub.selected())] if s is not None else pd.DataFrame()

    # -- marks -----------------------------------------------------------------------------------
    def mark(self, mark: str) -> int:
        """Mark the selected wells (C+, C-, ignore, clear) in ``Metadata_Role``; returns how many."""
        from gandl_core.errors import DataError

        s = self.session
        try:
            sel = self.hub.selected()
            if s is None or not sel:
                raise DataError("Select wells in the plate map first (click, shift-click or box-select), then "
                                "mark them.")
            n = s.mark(sel, mark)
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return 0
        self.status.setText(f"Marked {n} well(s) as {mark} (Metadata_Role = {MARKS[mark] or 'empty'}).")
        return n

    # -- colours ---------------------------------------------------------------------------------
    def _fill_colour_choices(self) -> None:
        s = self.session
        if s is None:
            return
        keep = self.colour_by.currentText()
        meta = [c for c in s.wells.columns if str(c).startswith("Metadata_") and c not in ("Metadata_Plate",)]
        numeric = [c for c in s.wells.columns if not str(c).startswith("Metadata_")
                   and pd.api.types.is_numeric_dtype(s.wells[c])]
        scores = [c for c in ("OnScore", "OffScore") if c in numeric]
        choices = [NONE] + scores + meta + [c for c in numeric if c not in scores][:300]
        self.colour_by.blockSignals(True)
        if choices != [self.colour_by.itemText(i) for i in range(self.colour_by.count())]:
            self.colour_by.clear()
            self.colour_by.addItems(choices)
        current = s.colouring.column or NONE
        self.colour_by.setCurrentText(current if current in choices else (keep if keep in choices else NONE))
        self.colour_by.blockSignals(False)

    def _colouring_from_fields(self) -> None:
        s = self.session
        if s is None:
            return
        col = self.colour_by.currentText()
        s.set_colouring(Colouring(column=None if col in ("", NONE) else col, colormap=self.cmap.currentText(),
                                  tint_site=self.tint.isChecked()))

    def _on_colouring(self) -> None:
        s = self.session
        c = s.colouring
        for w, v in ((self.colour_by, c.column or NONE), (self.cmap, c.colormap)):
            w.blockSignals(True)
            w.setCurrentText(v)
            w.blockSignals(False)
        self.tint.blockSignals(True)
        self.tint.setChecked(c.tint_site)
        self.tint.blockSignals(False)
        pm = self.hub.plate_map
        legend = pm.metadata.get("legend", {}) if pm is not None else {}
        self.legend.setText(legend_html(legend))
        if legend.get("kind") == "numeric":
            self.colourbar.setPixmap(colourbar_pixmap(legend["colormap"]))
            self.colourbar.setVisible(True)
        else:
            self.colourbar.setVisible(False)

    # -- channels and pattern --------------------------------------------------------------------
    def _fill_channels(self) -> None:
        s = self.session
        self.channel_table.setRowCount(0)
        if s is None:
            return
        self.channel_table.setRowCount(len(s.channels))
        for i, ch in enumerate(s.channels):
            self.channel_table.setItem(i, 0, QTableWidgetItem(ch.name))
            box = QComboBox()
            box.addItems(L.CHANNEL_COLORMAPS if ch.colormap in L.CHANNEL_COLORMAPS else [ch.colormap, *L.CHANNEL_COLORMAPS])
            box.setCurrentText(ch.colormap)
            self.channel_table.setCellWidget(i, 1, box)

    def channel_specs(self) -> list[ChannelSpec]:
        out = []
        for i in range(self.channel_table.rowCount()):
            item = self.channel_table.item(i, 0)
            box = self.channel_table.cellWidget(i, 1)
            out.append(ChannelSpec(item.text() if item else "", box.currentText() if box else "gray"))
        return out

    def rename_channels(self, specs: list[ChannelSpec] | None = None) -> bool:
        """Apply channel names/colours (the table's, or ``specs``) to the session and its layers."""
        s = self.session
        if s is None:
            return False
        try:
            s.rename_channels(specs if specs is not None else self.channel_specs())
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return False
        return True

    def index_again(self, pattern: str | None = None, folder: str | None = None) -> Any:
        """Open a TIFF folder (the field's, else the open plate's) with a file-name pattern; replaces the session."""
        from gandl_core.errors import ConfigError

        s = self.session
        folder = (self.folder.text().strip() if folder is None else folder) or (s.source if s is not None else "")
        pattern = self.pattern.text().strip() if pattern is None else pattern
        if not folder or not Path(folder).is_dir():
            notify_error(ConfigError(f"TIFF folder: {folder or '(empty)'} is not a folder. Give the folder that "
                                     "holds the plate's TIFF files."))
            return None
        return self.hub.open_source(folder, kind="plate", pattern=pattern or None)


def legend_html(legend: dict) -> str:
    """The plate map's colour legend as a few lines of HTML (categories or the numeric range)."""
    kind = legend.get("kind")
    if kind == "categories":
        items = list(legend["items"].items())
        cells = []
        for value, rgba in items[:16]:
            hexc = "#%02x%02x%02x" % tuple(int(255 * c) for c in rgba[:3])
            cells.append(f"<span style='color:{hexc}'>&#9632;</span>&nbsp;{value or '(empty)'}")
        more = f" &hellip; {len(items) - 16} more" if len(items) > 16 else ""
        return f"<b>{legend['column']}</b>: " + " &nbsp; ".join(cells) + more
    if kind == "numeric":
        lo, hi = legend["limits"]
        return (f"<b>{legend['column']}</b>: {lo:.3g} (left) to {hi:.3g} (right), {legend['colormap']}; "
                "1st-99th percentile of every plate; dark grey: no value")
    return ""


def colourbar_pixmap(colormap: str, width: int = 260, height: int = 12) -> Any:
    """A horizontal colour bar of a napari colormap (low values left)."""
    import numpy as np
    from napari.utils.colormaps import ensure_colormap
    from qtpy.QtGui import QImage, QPixmap

    rgba = (ensure_colormap(colormap).map(np.linspace(0, 1, width)) * 255).astype(np.uint8)
    img = np.ascontiguousarray(np.repeat(rgba[None], height, axis=0))
    qimg = QImage(img.data, width, height, 4 * width, QImage.Format_RGBA8888)
    return QPixmap.fromImage(qimg.copy())

