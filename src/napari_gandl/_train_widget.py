"""Training dock: train a GAN-DL StyleGAN2 on the open plate (or any plate path) without blocking napari.

Fields: data (a plate folder / LoadData CSV / index parquet; empty = the plate open in the viewer),
output folder, preset; then **advanced options**, folded away, made from
:class:`gandl_core.gan.train.TrainConfig` itself (every option the core has, with the preset's value,
the field's own comment as tooltip, units on the spin boxes, dropdowns where the core lists the
choices). Start runs :func:`gandl_core.gan.train.train` in a process of its own
(:mod:`._process`: the training never holds napari's GIL, and torch is imported there, not
in napari): the activity dock and this dock show kimg and the time left, the plot the losses
(redrawn at most once a second), and the latest fakes appear as one false-colour ``fakes`` layer
below the plate (the mosaic is made in the training process, each channel in its channel's
colour; the layer is created once, then updated in place at most every few seconds). Stop ends
the run after the current step; the core writes a checkpoint of that step. Resume continues the
run in the output folder. Opening another plate resets the dock (Resume then belongs to the new
plate's run, if any).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui import widgets as mw
from qtpy.QtWidgets import QPushButton, QWidget, QVBoxLayout

from . import _layers as L
from ._mpl import make_canvas
from ._ui import DockBase, Fold, button_row, status_label
from ._child import composite, fakes_grid  # noqa: F401 - re-exported (the mosaic is made in the child)
from ._process import ProcessWorker
from ._workers import ProgressTracker, notify_error

DATA_FIELDS = ("data", "data_path", "source", "index_path", "dataset")
OUT_FIELDS = ("out_dir", "outdir", "run_dir", "output", "out")
RESUME_FIELDS = ("resume", "resume_from", "checkpoint")
# Set from the data by the core, never by hand.
DERIVED_FIELDS = ("channels", "channel_names", "preset")
FAKES_PREFIX = L.FAKES_PREFIX
UNITS = (("_kimg", " kimg"), ("kimg", " kimg"), ("_s", " s"), ("resolution", " px"))


TRAIN_TARGET = "gandl_core.gan.train:train"  # what the training process runs (module:function)


def train_api() -> tuple[Any, dict, str]:
    """``(TrainConfig, PRESETS, target)``: the config class and presets (imported here: no torch) and
    the ``"module:function"`` the training process runs."""
    from gandl_core.gan import train_config as core

    return core.TrainConfig, core.PRESETS, TRAIN_TARGET


def _first(names: tuple[str, ...], fields: dict[str, Any]) -> str | None:
    return next((n for n in names if n in fields), None)


def field_docs(cls: type) -> dict[str, str]:
    """``{field: comment}`` from the trailing comments of a dataclass's source (tooltips)."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+)\s*:[^\n#]*#\s*(.+)$", src, re.M)}


def field_choices(value: str, doc: str) -> list[str]:
    """Choices a comment lists in quotes (``"ada" (...), "fixed", "none"``) when they include ``value``."""
    quoted = re.findall(r'"([A-Za-z0-9_:+.\-]+)"', doc)
    if "..." in doc or len(set(quoted)) < 2 or value not in quoted:
        return []
    return list(dict.fromkeys(quoted))


def colour_of(colormap: str) -> tuple[float, float, float]:
    """The RGB a napari colormap reaches at its top (the colour a channel is drawn in)."""
    from napari.utils.colormaps import ensure_colormap

    return tuple(float(v) for v in ensure_colormap(colormap).colors[-1][:3])


def fakes_colours(session: Any) -> tuple[list, list]:
    """(the open plate's channel colours, a fallback cycle for a run on other data): the fakes mosaic's colours."""
    colours = [colour_of(c.colormap) for c in session.channels] if session is not None else []
    used: list[str] = []
    for i in range(8):
        used.append(L.colormap_for(f"Ch{i + 1}", i, used))
    return colours, [colour_of(c) for c in used]


def _read_fakes_png(path: str | Path) -> np.ndarray:
    """A fakes PNG written by the core, as uint8 RGB [H,W,3]."""
    from PIL import Image

    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
    return arr


class TrainWidget(DockBase):
    """Dock widget running :func:`gandl_core.gan.train.train` in a worker (see module docstring)."""

    REDRAW_S = 1.0  # loss plot
    FAKES_S = 3.0  # fakes layers

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.worker = None
        self.history: dict[str, list[tuple[float, float]]] = {}
        self.last_checkpoint: Path | None = None
        self.result: Path | None = None
        self.progress_seen = 0
        self._api = None
        self._advanced: dict[str, mw.Widget] = {}
        self._pending_fakes: Any = None
        self._last_draw = 0.0
        self._last_fakes = 0.0
        self._run_session: int | None = None
        self._tracker: ProgressTracker | None = None
        self._lines: dict[str, Any] = {}

        self.data = mw.FileEdit(label="data", mode="d", tooltip="Plate folder, LoadData CSV or index parquet. "
                                "Empty: the plate open in the viewer.")
        self.out = mw.FileEdit(label="output dir", mode="d", value=str(Path.cwd() / "gandl-run"),
                               tooltip="Run folder: config.json, checkpoints/, fakes/, metrics.jsonl.")
        self.preset = mw.ComboBox(label="preset", choices=[],
                                  tooltip="cpu-tiny: seconds (smoke test); cpu-small: minutes on a laptop; "
                                          "gpu-256 / paper: GPU runs.")
        self.adv = mw.Container(labels=True)
        self.form = mw.Container(widgets=[self.data, self.out, self.preset])
        adv_box = QWidget()
        QVBoxLayout(adv_box).addWidget(self.adv.native)
        adv_box.layout().setContentsMargins(0, 0, 0, 0)
        self.adv_fold = Fold("Advanced options", adv_box)
        self.start_btn = QPushButton("Start")
        self.stop_btn = QPushButton("Stop")
        self.resume_btn = QPushButton("Resume")
        self.stop_btn.setEnabled(False)
        self.resume_btn.setEnabled(False)
        self.start_btn.setToolTip("Train a new run in the output dir (a run already there is refused).")
        self.stop_btn.setToolTip("Stop between steps; the core writes checkpoints/latest.pt.")
        self.resume_btn.setToolTip("Continue the run in the output dir (raise kimg to train longer).")
        self.info = status_label("Choose a preset and press Start.")
        self.canvas, self.fig, self.ax = make_canvas(4, 2.4)
        self.canvas.setMinimumHeight(160)
        self._style_plot()
        self.body.addWidget(self.form.native)
        self.body.addWidget(self.adv_fold)
        self.body.addWidget(button_row(self.start_btn, self.stop_btn, self.resume_btn))
        self.body.addWidget(self.info)
        self.body.addWidget(self.canvas, stretch=1)

        self.preset.changed.connect(self._fill_advanced)
        self.start_btn.clicked.connect(lambda: self.start())
        self.stop_btn.clicked.connect(lambda: self.stop())
        self.resume_btn.clicked.connect(lambda: self.start(resume=True))
        self._load_api()
        self.on_session(self.session)

    @property
    def show_adv(self) -> bool:
        return self.adv_fold.expanded

    def on_session(self, session: Any) -> None:
        """Another plate: Resume follows that plate's own run (if any); the plot starts empty."""
        if self.worker is not None and self.worker.is_running:
            return  # a run in progress keeps going; it belongs to the plate it started on
        self.last_checkpoint = Path(session.checkpoint) if session is not None and session.checkpoint else None
        self.result = None
        self.history.clear()
        self._plot()
        self._set_running(False)
        self.info.setText("Choose a preset and press Start." if session is None else
                          f"Train on {Path(session.source).name} ({len(session.plates)} plate(s)), or give another "
                          "plate in data.")

    # -- fields ----------------------------------------------------------------------------------
    def _load_api(self) -> None:
        try:
            self._api = train_api()
        except ImportError as exc:  # core training not installed: say so instead of crashing
            self.info.setText(f"gandl_core.gan.train is not available ({exc}).")
            self.start_btn.setEnabled(False)
            return
        _, presets, _ = self._api
        names = list(presets)
        self.preset.choices = names
        # cpu-small: the analyst's first real run (minutes); cpu-tiny is a smoke test that learns nothing
        self.preset.value = next((n for n in ("cpu-small", "cpu-tiny") if n in names), names[0])
        self._fill_advanced()

    def _fill_advanced(self, *_: Any) -> None:
        """Advanced fields = TrainConfig's own fields with the preset's values as defaults."""
        config_cls, _, _ = self._api
        cfg = config_cls.from_preset(self.preset.value)
        skip = set(DATA_FIELDS + OUT_FIELDS + RESUME_FIELDS + DERIVED_FIELDS)
        if not self._advanced:
            docs = field_docs(config_cls)
            for f in dataclasses.fields(cfg):
                value = getattr(cfg, f.name)
                if f.name in skip or not isinstance(value, (bool, int, float, str)):
                    continue
                widget = self._widget_for(f.name, value, docs.get(f.name, ""))
                self._advanced[f.name] = widget
                self.adv.append(widget)
        for name, widget in self._advanced.items():
            widget.value = getattr(cfg, name)

    @staticmethod
    def _widget_for(name: str, value: Any, doc: str = "") -> mw.Widget:
        unit = next((u for key, u in UNITS if name.endswith(key) or name == key.strip("_")), "")
        label = f"{name} ({unit.strip()})" if unit else name
        if isinstance(value, bool):
            return mw.CheckBox(name=name, label=label, value=value, tooltip=doc)
        if isinstance(value, int):
            return mw.SpinBox(name=name, label=label, value=value, min=-1, max=10**9, tooltip=doc)
        if isinstance(value, float):
            w = mw.FloatSpinBox(name=name, label=label, value=value, min=-1e9, max=1e9, step=0.001, tooltip=doc)
            w.native.setDecimals(6)  # lr 0.0025 must not read "0.00"
            return w
        choices = field_choices(value, doc)
        if choices:
            return mw.ComboBox(name=name, label=label, value=value, choices=choices, tooltip=doc)
        return mw.LineEdit(name=name, label=label, value=value, tooltip=doc)

    def config(self, *, resume: bool = False) -> Any:
        """The TrainConfig the fields describe (preset + advanced values + data/output/resume)."""
        config_cls, _, _ = self._api
        names = {f.name for f in dataclasses.fields(config_cls)}
        base = config_cls.from_preset(self.preset.value)
        over: dict[str, Any] = {}
        for name, widget in self._advanced.items():
            if widget.value != getattr(base, name):
                over[name] = widget.value
        data = self._data_path()
        data_field, out_field = _first(DATA_FIELDS, names), _first(OUT_FIELDS, names)
        if data_field and data:
            over[data_field] = data
        if out_field:
            over[out_field] = str(self.out.value)
        resume_field = _first(RESUME_FIELDS, names)
        if resume and resume_field and self.last_checkpoint is not None:
            over[resume_field] = str(self.last_checkpoint)
        return config_cls.from_preset(self.preset.value, **over)

    def _data_path(self) -> str:
        data = str(self.data.value)
        return "" if data in ("", ".") else data

    # -- run -------------------------------------------------------------------------------------
    def start(self, *, resume: bool = False) -> Any:
        """Start (or resume) training in its own process; returns the run (None, with one message, on bad input)."""
        if self.worker is not None and self.worker.is_running:
            return self.worker
        try:
            cfg = self.config(resume=resume)
        except Exception as exc:  # noqa: BLE001 - invalid option: show, keep the dock usable
            notify_error(exc)
            return None
        session = self.session
        index = session.index if (session is not None and not self._data_path()) else None
        _, _, target = self._api
        if not resume:
            self.history.clear()
        self.progress_seen = 0
        self.result = None
        self._run_session = session.id if session is not None and index is not None else None
        self.info.setText("Starting the training process (importing torch, reading the plate)...")
        self._set_running(True)
        self._tracker = ProgressTracker("Training GAN")
        colours, fallback = fakes_colours(session if index is not None else None)
        # The index travels through a queue (pickled off the GUI thread); a copy, so marks made
        # while it is being sent cannot tear it.
        payload = {"index": index.copy() if index is not None else None}
        self.worker = ProcessWorker(target, (cfg,), {"resume": bool(resume)}, payload=payload,
                                   on_yield=self._on_progress, on_return=self._on_done, on_error=self._on_error,
                                   on_finish=self._on_finish, context="Training", colours=colours,
                                   fallback=fallback).start()
        return self.worker

    def stop(self) -> None:
        """Stop training after the current step: the core writes a checkpoint of that step."""
        if self.worker is not None and self.worker.is_running:
            self.info.setText("Stopping after this step: saving a checkpoint...")
            self.worker.quit()

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running and self._api is not None)
        self.resume_btn.setEnabled((not running) and self.last_checkpoint is not None)
        self.stop_btn.setEnabled(running)

    def _on_progress(self, p: Any) -> None:
        self.progress_seen += 1
        for key, value in p.metrics.items():
            if "loss" in key.lower() or key.lower() in {"d", "g", "augment_p", "p"}:
                try:
                    self.history.setdefault(key, []).append((float(p.done), float(value)))
                except (TypeError, ValueError):
                    pass
        ckpt = p.artifacts.get("checkpoint")
        if ckpt:
            self.last_checkpoint = Path(ckpt)
        fakes = p.artifacts.get("fakes_rgb", p.artifacts.get("fakes_png"))
        if fakes is not None:
            self._pending_fakes = fakes
        text = self._tracker.update(p) if self._tracker else None
        if text is not None:
            self.info.setText(text)
        # Redraw at most every REDRAW_S seconds: a fast core can yield faster than matplotlib and
        # layer updates take, and a backlog of yields would make the GUI lag behind training.
        now = time.monotonic()
        if now - self._last_draw >= self.REDRAW_S:
            self._last_draw = now
            self._plot()
        if self._pending_fakes is not None and now - self._last_fakes >= self.FAKES_S:
            self._last_fakes = now
            self.show_fakes(self._pending_fakes)
            self._pending_fakes = None

    def redraw(self) -> None:
        """Draw the loss plot and the newest fakes received so far."""
        if self._pending_fakes is not None:
            self.show_fakes(self._pending_fakes)
            self._pending_fakes = None
        self._plot()

    def _on_done(self, result: Any) -> None:
        if result is not None:
            self.result = Path(result)
            self.last_checkpoint = self.result
            self.info.setText(f"Done: {self.result}")

    def _on_error(self, exc: BaseException) -> None:
        self.info.setText(f"Training failed: {str(exc).splitlines()[0][:200]}")
        self._pending_fakes = None

    def _on_finish(self) -> None:
        self.redraw()
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        latest = Path(str(self.out.value)) / "checkpoints" / "latest.pt"
        if self.result is None and latest.is_file():
            self.last_checkpoint = latest  # written by the core when the generator was closed
        if self.result is None and self.last_checkpoint is not None and not self.info.text().startswith("Training failed"):
            self.info.setText(f"Stopped; checkpoint: {self.last_checkpoint}")
        session = self.session
        if session is not None and self._run_session == session.id and self.last_checkpoint is not None:
            session.checkpoint = str(self.last_checkpoint)
        self._set_running(False)

    # -- display ---------------------------------------------------------------------------------
    def show_fakes(self, fakes: Any) -> None:
        """Show the latest fakes as one false-colour layer (created once, then updated in place).

        ``fakes`` is the uint8 RGB mosaic the training process made (each channel in its channel's
        colour) or the path of a fakes PNG. One RGB layer instead of a layer per channel: creating
        an image layer is the costliest thing napari does on the GUI thread, and fakes are looked
        at, not measured.
        """
        session = self.session
        if self._run_session is not None and (session is None or session.id != self._run_session):
            return  # the run's plate was closed: no layers for it
        rgb = _read_fakes_png(fakes) if isinstance(fakes, (str, Path)) else np.asarray(fakes)
        existing = self.hub.find("fakes", session.id) if session is not None else None
        if existing is None:
            existing = next((ly for ly in self.viewer.layers if ly.metadata.get(L.KIND_KEY) == "fakes"), None)
        if existing is not None:
            existing.data = rgb
            return
        h = session.site_shape[0] if session is not None else 0
        below = float(h + 4 * L.spacing_of(session)) if h else 0.0
        scale = (h / rgb.shape[0]) if h else 1.0
        kwargs = dict(name=FAKES_PREFIX, rgb=True, translate=(below, 0.0), scale=(scale, scale),
                      contrast_limits=(0, 255) if rgb.dtype == np.uint8 else None,
                      metadata={L.KIND_KEY: "fakes", "session_id": session.id if session is not None else None})
        self.hub.add_layers_staged([lambda: None if self.hub.find("fakes", kwargs["metadata"]["session_id"])
                                    else self.viewer.add_image(rgb, **kwargs)])

    def _style_plot(self) -> None:
        self.ax.set_xlabel("kimg")
        self.ax.set_ylabel("loss")
        self.ax.set_title("training losses", fontsize=9)

    def _plot(self) -> None:
        """Loss curves, updated in place (new lines only for new metrics; no axes clearing)."""
        lines = self._lines
        if not self.history:
            for line in lines.values():
                line.remove()
            lines.clear()
            legend = self.ax.get_legend()
            if legend is not None:
                legend.remove()
            self.canvas.draw_idle()
            return
        added = False
        for key, pts in self.history.items():
            if not pts:
                continue
            x, y = zip(*pts)
            if key not in lines:
                (lines[key],) = self.ax.plot(x, y, label=key, lw=1.2)
                added = True
            else:
                lines[key].set_data(x, y)
        self.ax.relim()
        self.ax.autoscale_view()
        if added:
            self.ax.legend(fontsize=7, facecolor="#262930", labelcolor="#e0e0e0", edgecolor="#555")
        self.canvas.draw_idle()
