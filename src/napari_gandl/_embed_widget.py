"""Embedding dock: GAN-DL features of the open plate's wells, stored on the plate map.

Pick a training checkpoint (``.pt``), optionally tick "selected wells only" (the wells selected in
the plate map), press Embed. :func:`gandl_core.embed.embed_iter` runs in a ``thread_worker`` with
a :class:`gandl_core.featurizers.base.GanFeaturizer` (discriminator features, ``GAN_000..``);
the site table it returns is aggregated per well with
:func:`gandl_core.analysis.profiles.aggregate` and merged into the plate map's ``features`` on
plate/well (wells not embedded keep NaN). "Save parquet" writes the per-well table atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from magicgui import widgets as mw
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from . import _layers as L
from ._workers import notify_error, start_generator


def embed_generator(index: pd.DataFrame, checkpoint: str, *, wells: list[tuple[str, str]] | None,
                    batch_size: int = 16):
    """Progress generator: load the discriminator (in the worker: imports torch) and embed.

    Returns
    -------
    pandas.DataFrame
        Site-level embedding table (Metadata_* + GAN_*).
    """
    from gandl_core.embed import embed_iter
    from gandl_core.featurizers.base import GanFeaturizer

    featurizer = GanFeaturizer.from_checkpoint(checkpoint, "cpu")
    return (yield from embed_iter(index, featurizer, wells=wells, batch_size=batch_size))


def well_profiles(sites: pd.DataFrame) -> pd.DataFrame:
    """Per-well median of the site features (core :func:`~gandl_core.analysis.profiles.aggregate`)."""
    from gandl_core.analysis.profiles import aggregate

    return aggregate(sites, strata=("Metadata_Plate", "Metadata_Well"), method="median")


class EmbedWidget(QWidget):
    """Dock widget: checkpoint + selected-wells option -> per-well features on the plate map."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.sites: pd.DataFrame | None = None
        self.checkpoint = mw.FileEdit(label="checkpoint", mode="r", filter="*.pt")
        self.selected_only = mw.CheckBox(label="selected wells only", value=False)
        self.batch = mw.SpinBox(label="batch size", value=16, min=1, max=1024)
        self.run_btn = mw.PushButton(text="Embed")
        self.save_path = mw.FileEdit(label="save as", mode="w", filter="*.parquet",
                                     value=str(Path.cwd() / "gandl-wells.parquet"))
        self.save_btn = mw.PushButton(text="Save parquet", enabled=False)
        self.form = mw.Container(widgets=[self.checkpoint, self.selected_only, self.batch, self.run_btn,
                                          self.save_path, self.save_btn])
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.info = QLabel("Open a plate, choose a checkpoint, press Embed.")
        self.info.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(self.form.native)
        lay.addWidget(self.bar)
        lay.addWidget(self.info)
        lay.addStretch(1)
        self.run_btn.changed.connect(lambda: self.start())
        self.save_btn.changed.connect(lambda: self.save())

    def start(self) -> Any:
        """Embed in a worker; returns it (None when inputs are missing, with a notification)."""
        from gandl_core.errors import ConfigError, DataError

        session = L.session_of(self.viewer)
        try:
            if session is None or session.index is None:
                raise DataError("No plate with images is open: open a plate folder / LoadData CSV first "
                                "(File > Open, or File > Open Sample > napari-gandl).")
            ckpt = str(self.checkpoint.value)
            if not ckpt or not Path(ckpt).is_file():
                raise ConfigError(f"checkpoint: {ckpt or '(empty)'} is not a file. Choose a training "
                                  "checkpoint (checkpoints/latest.pt of a run).")
            wells = L.selected_wells(self.viewer) if self.selected_only.value else None
            if self.selected_only.value and not wells:
                raise ConfigError("'selected wells only' is ticked but no well is selected in the plate map.")
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return None
        self.run_btn.enabled = False
        self.bar.setValue(0)
        self.info.setText("Loading the discriminator...")
        index, batch = session.index, int(self.batch.value)
        self.worker = start_generator(lambda: embed_generator(index, ckpt, wells=wells, batch_size=batch),
                                      on_yield=self._on_progress, on_return=self._on_done,
                                      on_finish=lambda: setattr(self.run_btn, "enabled", True))
        return self.worker

    def _on_progress(self, p: Any) -> None:
        if p.fraction is not None:
            self.bar.setValue(int(1000 * p.fraction))
        self.info.setText(f"{p.done:g}/{p.total:g} {p.unit} {p.message}" if p.total else p.message)

    def _on_done(self, sites: pd.DataFrame) -> None:
        layer = L.find_plate_map(self.viewer)
        if layer is None or sites is None:
            return
        session = layer.metadata[L.SESSION_KEY]
        self.sites = sites
        session.embeddings = sites
        wells = well_profiles(sites)
        session.merge_wells(wells)
        # Scores fitted on the previous features are stale now: drop them (refit in the analysis dock).
        stale = [c for c in ("OnScore", "OffScore") if c in session.wells.columns]
        if stale:
            session.wells = session.wells.drop(columns=stale)
            if session.extras.get("colour_by") in stale:
                session.extras.pop("colour_by")
                L.update_overlay(self.viewer)
        L.refresh_features(layer)
        self.bar.setValue(1000)
        n_feat = sum(1 for c in wells.columns if not str(c).startswith("Metadata_"))
        self.info.setText(f"Embedded {len(sites)} sites -> {len(wells)} wells x {n_feat} features "
                          "(in the plate map's features).")
        self.save_btn.enabled = True

    def save(self) -> Path | None:
        """Write the per-well table (metadata + embedded features, embedded wells only) atomically."""
        from gandl_core.tables import feature_columns, write_table

        session = L.session_of(self.viewer)
        if session is None or self.sites is None:
            return None
        wells = session.wells
        feats = [c for c in feature_columns(wells) if str(c).startswith("GAN_")]
        table = wells.dropna(subset=feats[:1]) if feats else wells
        table = table[[c for c in table.columns if str(c).startswith("Metadata_")] + feats]
        try:
            path = write_table(table, Path(self.save_path.value),
                               metadata={"checkpoint": str(self.checkpoint.value), "source": session.source})
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return None
        self.info.setText(f"Saved {len(table)} wells to {path}")
        return path
