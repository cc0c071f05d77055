"""Plate browser dock: pick a plate, click or box-select wells, see their image and metadata.

The plate map is the Points layer made by the reader (one square per well in plate geometry,
the per-well table in ``layer.features``). Selecting points there (click, shift-click, or the
Points layer's box select) selects wells: the first selected well's site is read from disk and
shown in the ``site <channel>`` layers (updated in place) and every selected well's metadata is
listed in the table below.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from qtpy.QtWidgets import (QComboBox, QFormLayout, QLabel, QSpinBox, QTableWidget, QTableWidgetItem,
                            QVBoxLayout, QWidget)

from . import _layers as L
from ._workers import notify_error


class PlateWidget(QWidget):
    """Dock widget: plate dropdown, site number, selected wells' metadata table."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._layer = None  # plate map we listen to
        self.plate_box = QComboBox()
        self.site_box = QSpinBox()
        self.site_box.setRange(1, 1)
        self.status = QLabel("Open a plate (File > Open, or File > Open Sample > napari-gandl).")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        form = QFormLayout()
        form.addRow("Plate", self.plate_box)
        form.addRow("Site", self.site_box)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.status)
        lay.addWidget(self.table, stretch=1)
        self.plate_box.currentTextChanged.connect(self._on_plate)
        self.site_box.valueChanged.connect(lambda _: self._show_first())
        self.viewer.layers.events.inserted.connect(lambda e: self.refresh())
        self.viewer.layers.events.removed.connect(lambda e: self.refresh())
        self.refresh()

    # -- wiring ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """(Re)attach to the plate-map layer and fill the plate dropdown."""
        layer = L.find_plate_map(self.viewer)
        if layer is self._layer:
            return
        if self._layer is not None:
            try:
                self._layer.selected_data.events.items_changed.disconnect(self._on_selection)
            except (TypeError, ValueError):
                pass
        self._layer = layer
        self.plate_box.blockSignals(True)
        self.plate_box.clear()
        if layer is not None:
            session = layer.metadata[L.SESSION_KEY]
            self.plate_box.addItems(session.plates)
            self.plate_box.setCurrentText(session.plate)
            layer.selected_data.events.items_changed.connect(self._on_selection)
            self.status.setText(f"{len(session.wells)} wells on {len(session.plates)} plate(s) from "
                                f"{session.source}. Click or box-select wells in the plate map.")
        self.plate_box.blockSignals(False)
        self._on_selection()

    def _on_plate(self, plate: str) -> None:
        if self._layer is None or not plate:
            return
        L.show_plate(self._layer, plate)

    def _on_selection(self, *_: Any) -> None:
        wells = L.selected_wells(self.viewer)
        self._fill_table(wells)
        session = L.session_of(self.viewer)
        if session is not None and session.plate != self.plate_box.currentText():
            # the plate was switched from elsewhere (E2 scatter click)
            self.plate_box.blockSignals(True)
            self.plate_box.setCurrentText(session.plate)
            self.plate_box.blockSignals(False)
        if wells:
            sites = session.sites_of(*wells[0]) if session is not None else pd.DataFrame()
            n = int(sites["Metadata_Site"].max()) if "Metadata_Site" in sites and len(sites) else 1
            self.site_box.blockSignals(True)
            self.site_box.setRange(1, max(n, 1))
            self.site_box.blockSignals(False)
            self._show_first()

    def _show_first(self) -> None:
        wells = L.selected_wells(self.viewer)
        if not wells:
            return
        try:
            L.show_well_site(self.viewer, *wells[0], site=self.site_box.value())
        except Exception as exc:  # noqa: BLE001 - unreadable image: tell the user, keep the GUI alive
            notify_error(exc)

    def _fill_table(self, wells: list[tuple[str, str]]) -> None:
        layer = self._layer
        if layer is None or not wells:
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            return
        feats = layer.features
        rows = feats[feats["Metadata_Well"].isin([w for _, w in wells])]
        cols = [c for c in rows.columns if str(c).startswith("Metadata_")] + \
               [c for c in ("n_sites", "OnScore") if c in rows.columns]
        self.table.setColumnCount(len(cols))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels([str(c).replace("Metadata_", "") for c in cols])
        for i, (_, r) in enumerate(rows[cols].iterrows()):
            for j, c in enumerate(cols):
                v = r[c]
                text = f"{v:.4g}" if isinstance(v, float) else str(v)
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.status.setText(f"{len(wells)} well(s) selected: " + ", ".join(w for _, w in wells[:12])
                            + (" ..." if len(wells) > 12 else ""))

    def selected_table(self) -> pd.DataFrame:
        """The rows of the selected wells (as shown in the table)."""
        layer = self._layer
        wells = [w for _, w in L.selected_wells(self.viewer)]
        return layer.features[layer.features["Metadata_Well"].isin(wells)] if layer is not None else pd.DataFrame()
