"""Embedding dock: GAN-DL features of the open plate's wells, merged into the plate map.

Pick a training checkpoint (``.pt``), optionally tick "selected wells only" (the wells selected in
the plate map), press Embed. :func:`gandl_core.embed.embed_iter` runs in a worker process
(:mod:`._process`: torch is imported there, never in napari's process) with a
:class:`gandl_core.featurizers.base.GanFeaturizer` (discriminator features, ``GAN_000..``); progress
and the time left show here and in napari's activity dock; **Stop** ends it between batches
(nothing is merged then). The site table is aggregated per well with
:func:`gandl_core.analysis.profiles.aggregate` and merged into the well table on plate + well
(wells not embedded keep NaN; the plate map marks embedded wells with a white border). "Save
parquet" writes the per-well table (metadata, including any marked controls, + features) atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from magicgui import widgets as mw
from qtpy.QtWidgets import QPushButton

from ._jobs import embed_generator, well_profiles  # noqa: F401 - re-exported
from ._process import ProcessWorker
from ._ui import DockBase, button_row, status_label
from ._workers import ProgressTracker, notify_error

SCORES = ("OnScore", "OffScore")


EMBED_TARGET = "napari_gandl._jobs:embed_generator"  # what the embedding process runs (module:function)


class EmbedWidget(DockBase):
    """Dock widget: checkpoint + selected-wells option -> per-well features on the plate map."""

    target = EMBED_TARGET

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.worker = None
        self.sites: pd.DataFrame | None = None
        self.stopped = False
        self.checkpoint = mw.FileEdit(label="checkpoint", mode="r", filter="*.pt",
                                      tooltip="A training checkpoint: checkpoints/latest.pt of a run.")
        self.selected_only = mw.CheckBox(label="selected wells only", value=False,
                                         tooltip="Embed just the wells selected in the plate map.")
        self.batch = mw.SpinBox(label="batch size", value=16, min=1, max=1024,
                                tooltip="Sites per forward pass (memory vs speed).")
        self.save_path = mw.FileEdit(label="save as", mode="w", filter="*.parquet",
                                     value=str(Path.cwd() / "gandl-wells.parquet"))
        self.form = mw.Container(widgets=[self.checkpoint, self.selected_only, self.batch])
        self.run_btn = QPushButton("Embed")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.save_btn = QPushButton("Save parquet")
        self.save_btn.setEnabled(False)
        self.info = status_label("Open a plate, choose a checkpoint, press Embed.")
        self.body.addWidget(self.form.native)
        self.body.addWidget(button_row(self.run_btn, self.stop_btn))
        self.body.addWidget(self.info)
        self.body.addWidget(mw.Container(widgets=[self.save_path]).native)
        self.body.addWidget(button_row(self.save_btn))
        self.body.addStretch(1)
        self.run_btn.clicked.connect(lambda: self.start())
        self.stop_btn.clicked.connect(lambda: self.stop())
        self.save_btn.clicked.connect(lambda: self.save())
        self._tracker: ProgressTracker | None = None

    def on_session(self, session: Any) -> None:
        if self.worker is not None and self.worker.is_running:
            self.stop()
        self.sites = None
        self._update_save()
        if session is not None:
            self.link_session(session.wells_changed, lambda cols: self._update_save())
        self.info.setText("Open a plate, choose a checkpoint, press Embed." if session is None else
                          f"{len(session.wells)} wells on {len(session.plates)} plate(s). Choose a checkpoint.")
        if session is not None and session.checkpoint and not str(self.checkpoint.value).endswith(".pt"):
            self.checkpoint.value = session.checkpoint

    def _update_save(self) -> None:
        s = self.session
        self.save_btn.setEnabled(s is not None and any(str(c).startswith("GAN_") for c in s.wells.columns))

    def start(self) -> Any:
        """Embed in a worker process; returns it (None when inputs are missing, with one notification)."""
        from gandl_core.errors import ConfigError, DataError

        session = self.session
        try:
            if session is None or session.index is None:
                raise DataError("No plate with images is open: open a plate folder / LoadData CSV first "
                                "(File > Open, or File > Open Sample > napari-gandl).")
            ckpt = str(self.checkpoint.value)
            if not ckpt or ckpt == "." or not Path(ckpt).is_file():
                raise ConfigError(f"checkpoint: {ckpt or '(empty)'} is not a file. Choose a training "
                                  "checkpoint (checkpoints/latest.pt of a run).")
            wells = self.hub.selected() if self.selected_only.value else None
            if self.selected_only.value and not wells:
                raise ConfigError("'selected wells only' is ticked but no well is selected in the plate map.")
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return None
        self._set_running(True)
        self.stopped = False
        self.info.setText("Loading the discriminator...")
        index, batch, sid = session.index, int(self.batch.value), session.id
        self._tracker = ProgressTracker("Embedding wells")
        self.worker = ProcessWorker(self.target, (), {"checkpoint": ckpt, "wells": wells, "batch_size": batch},
                                    payload={"index": index.copy()}, on_yield=self._on_progress,
                                    on_return=lambda out: self._on_done(out, sid, ckpt), on_error=self._on_error,
                                    on_finish=self._on_finish, context="Embedding").start()
        return self.worker

    def stop(self) -> None:
        """Stop embedding at the next batch (nothing is merged)."""
        if self.worker is not None and self.worker.is_running:
            self.stopped = True
            self.info.setText("Stopping...")
            self.worker.quit()

    def _set_running(self, running: bool) -> None:
        self.run_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)

    def _on_progress(self, p: Any) -> None:
        text = self._tracker.update(p) if self._tracker else None
        if text is not None:
            self.info.setText(text)

    def _on_error(self, exc: BaseException) -> None:
        self.info.setText(f"Embedding failed: {str(exc).splitlines()[0][:200]}")

    def _on_finish(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        self._set_running(False)
        if self.stopped:
            self.info.setText("Stopped; nothing was merged. Press Embed to start again.")

    def _on_done(self, out: Any, session_id: int, ckpt: str) -> None:
        session = self.session
        if out is None or session is None or session.id != session_id:
            return  # stopped, or another plate was opened meanwhile
        sites, wells = out
        self.sites = sites
        session.embeddings = sites
        session.checkpoint = ckpt
        stale = [c for c in SCORES if c in session.wells.columns]
        session.merge_wells(wells)
        # Scores fitted on the previous features are stale now: drop them (refit in the Projection dock).
        session.drop_columns(stale)
        n_feat = sum(1 for c in wells.columns if not str(c).startswith("Metadata_"))
        self.info.setText(f"Embedded {len(sites)} sites -> {len(wells)} wells x {n_feat} features "
                          "(merged into the plate map's features; embedded wells have a white border).")

    def save(self) -> Path | None:
        """Write the per-well table (metadata + embedded features, embedded wells only) atomically."""
        from gandl_core.tables import feature_columns, write_table

        session = self.session
        wells = session.wells if session is not None else None
        feats = [c for c in feature_columns(wells) if str(c).startswith("GAN_")] if wells is not None else []
        if not feats:
            return None
        table = wells.dropna(subset=feats[:1])
        table = table[[c for c in table.columns if str(c).startswith("Metadata_")] + feats]
        try:
            path = write_table(table, Path(self.save_path.value),
                               metadata={"checkpoint": session.checkpoint or str(self.checkpoint.value),
                                         "source": session.source})
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return None
        self.info.setText(f"Saved {len(table)} wells to {path}")
        return path
