"""Training dock: train a GAN-DL StyleGAN2 on the open plate (or any plate path) without blocking napari.

Fields: data (a plate folder / LoadData CSV / index parquet; empty = the plate open in the viewer),
output folder, preset (first: presets fix sensible sizes), then *advanced* fields folded away, made
from :class:`gandl_core.gan.train.TrainConfig` itself (so every option the core has is here, with the
preset's value as default). Start runs :func:`gandl_core.gan.train.train` in a ``thread_worker``;
the progress bar shows kimg and time left, the plot the losses, and the latest fakes appear as
``fakes <channel>`` image layers updated in place. Stop quits the worker: the core generator is
closed and leaves a valid checkpoint. Resume starts again from the newest checkpoint of the run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui import widgets as mw
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from . import _layers as L
from ._mpl import make_canvas, style_axes
from ._workers import notify_error, start_generator

DATA_FIELDS = ("data", "data_path", "source", "index_path", "dataset")
OUT_FIELDS = ("out_dir", "outdir", "run_dir", "output", "out")
RESUME_FIELDS = ("resume", "resume_from", "checkpoint")
# Set from the data by the core, never by hand.
DERIVED_FIELDS = ("channels", "channel_names", "preset")
FAKES_PREFIX = "fakes"


def train_api() -> tuple[Any, dict, Any]:
    """``(TrainConfig, PRESETS, train)`` from :mod:`gandl_core.gan.train` (imported when first needed)."""
    from gandl_core.gan import train as core

    return core.TrainConfig, core.PRESETS, core.train


def _first(names: tuple[str, ...], fields: dict[str, Any]) -> str | None:
    return next((n for n in names if n in fields), None)


def fakes_grid(fakes: np.ndarray, max_items: int = 16) -> np.ndarray:
    """Tile fakes [N,C,H,W] into one [C, rows*H, cols*W] mosaic (N up to ``max_items``)."""
    fakes = np.asarray(fakes, dtype=np.float32)
    if fakes.ndim == 3:
        fakes = fakes[None]
    n, c, h, w = fakes.shape
    n = min(n, max_items)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((c, rows * h, cols * w), np.nan, np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, r * h:(r + 1) * h, q * w:(q + 1) * w] = fakes[i]
    lo = float(np.nanmin(grid)) if np.isfinite(grid).any() else 0.0
    return np.nan_to_num(grid, nan=lo)


def _read_fakes_png(path: str | Path) -> np.ndarray:
    """A fakes PNG written by the core, as [1,3,H,W] or [1,1,H,W] float."""
    from PIL import Image

    arr = np.asarray(Image.open(path), dtype=np.float32)
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr[..., :3], -1, 0)
    return arr[None]


class TrainWidget(QWidget):
    """Dock widget running :func:`gandl_core.gan.train.train` in a worker (see module docstring)."""

    REDRAW_S = 0.5

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.history: dict[str, list[tuple[float, float]]] = {}
        self.last_checkpoint: Path | None = None
        self.result: Path | None = None
        self.progress_seen = 0
        self._t0 = 0.0
        self._done0 = 0.0
        self._api = None
        self._advanced: dict[str, mw.Widget] = {}
        self._pending_fakes: Any = None
        self._last_draw = 0.0

        self.data = mw.FileEdit(label="data", mode="d", tooltip="Plate folder, LoadData CSV or index "
                                "parquet. Empty: the plate open in the viewer.")
        self.out = mw.FileEdit(label="output dir", mode="d", value=str(Path.cwd() / "gandl-run"))
        self.preset = mw.ComboBox(label="preset", choices=[])
        self.show_adv = mw.CheckBox(label="advanced options", value=False)
        self.adv = mw.Container(labels=True)
        self.adv.visible = False
        self.start_btn = mw.PushButton(text="Start")
        self.stop_btn = mw.PushButton(text="Stop", enabled=False)
        self.resume_btn = mw.PushButton(text="Resume", enabled=False)
        buttons = mw.Container(widgets=[self.start_btn, self.stop_btn, self.resume_btn],
                               layout="horizontal", labels=False)
        self.form = mw.Container(widgets=[self.data, self.out, self.preset, self.show_adv, self.adv, buttons])
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.info = QLabel("Choose a preset and press Start.")
        self.info.setWordWrap(True)
        self.canvas, self.fig, self.ax = make_canvas(4, 2.6)
        self._style_plot()

        lay = QVBoxLayout(self)
        lay.addWidget(self.form.native)
        lay.addWidget(self.bar)
        lay.addWidget(self.info)
        lay.addWidget(self.canvas, stretch=1)

        self.show_adv.changed.connect(lambda v: setattr(self.adv, "visible", bool(v)))
        self.preset.changed.connect(self._fill_advanced)
        self.start_btn.changed.connect(lambda: self.start())
        self.stop_btn.changed.connect(lambda: self.stop())
        self.resume_btn.changed.connect(lambda: self.start(resume=True))
        self._load_api()

    # -- fields ----------------------------------------------------------------------------------
    def _load_api(self) -> None:
        try:
            self._api = train_api()
        except ImportError as exc:  # core training not installed/landed: say so instead of crashing
            self.info.setText(f"gandl_core.gan.train is not available ({exc}).")
            self.start_btn.enabled = False
            return
        _, presets, _ = self._api
        names = list(presets)
        self.preset.choices = names
        self.preset.value = "cpu-tiny" if "cpu-tiny" in names else names[0]
        self._fill_advanced()

    def _fill_advanced(self, *_: Any) -> None:
        """Advanced fields = TrainConfig's own fields with the preset's values as defaults."""
        config_cls, _, _ = self._api
        cfg = config_cls.from_preset(self.preset.value)
        skip = set(DATA_FIELDS + OUT_FIELDS + RESUME_FIELDS + DERIVED_FIELDS)
        if not self._advanced:
            for f in dataclasses.fields(cfg):
                value = getattr(cfg, f.name)
                if f.name in skip or not isinstance(value, (bool, int, float, str)):
                    continue
                widget = self._widget_for(f.name, value)
                self._advanced[f.name] = widget
                self.adv.append(widget)
        for name, widget in self._advanced.items():
            widget.value = getattr(cfg, name)

    @staticmethod
    def _widget_for(name: str, value: Any) -> mw.Widget:
        if isinstance(value, bool):
            return mw.CheckBox(name=name, label=name, value=value)
        if isinstance(value, int):
            return mw.SpinBox(name=name, label=name, value=value, min=0, max=10**9)
        if isinstance(value, float):
            return mw.FloatSpinBox(name=name, label=name, value=value, min=-1e9, max=1e9, step=0.001)
        return mw.LineEdit(name=name, label=name, value=value)

    def config(self, *, resume: bool = False) -> Any:
        """The TrainConfig the fields describe (preset + advanced values + data/output/resume)."""
        config_cls, _, _ = self._api
        names = {f.name for f in dataclasses.fields(config_cls)}
        base = config_cls.from_preset(self.preset.value)
        over: dict[str, Any] = {}
        for name, widget in self._advanced.items():
            if widget.value != getattr(base, name):
                over[name] = widget.value
        data = str(self.data.value) if str(self.data.value) not in ("", ".") else ""
        data_field, out_field = _first(DATA_FIELDS, names), _first(OUT_FIELDS, names)
        if data_field and data:
            over[data_field] = data
        if out_field:
            over[out_field] = str(self.out.value)
        resume_field = _first(RESUME_FIELDS, names)
        if resume and resume_field and self.last_checkpoint is not None:
            over[resume_field] = str(self.last_checkpoint)
        return config_cls.from_preset(self.preset.value, **over)

    # -- run -------------------------------------------------------------------------------------
    def start(self, *, resume: bool = False) -> Any:
        """Start (or resume) training in a worker; returns the worker."""
        if self.worker is not None and self.worker.is_running:
            return self.worker
        try:
            cfg = self.config(resume=resume)
        except Exception as exc:  # noqa: BLE001 - invalid option: show, keep the dock usable
            notify_error(exc)
            return None
        session = L.session_of(self.viewer)
        data = str(self.data.value) if str(self.data.value) not in ("", ".") else ""
        index = session.index if (session is not None and not data) else None
        _, _, train = self._api
        import inspect

        kwargs = {"index": index}
        if resume and "resume" in inspect.signature(train).parameters:
            kwargs["resume"] = True  # core continues the run in out_dir from checkpoints/latest.pt
        if not resume:
            self.history.clear()
        self._t0, self._done0, self.progress_seen = time.monotonic(), None, 0
        self.info.setText("Starting (importing torch, reading the plate)...")
        self._set_running(True)
        self.worker = start_generator(lambda: train(cfg, **kwargs), on_yield=self._on_progress,
                                      on_return=self._on_done, on_finish=self._on_finish)
        return self.worker

    def stop(self) -> None:
        """Stop training: the worker closes the core generator, which saves a checkpoint."""
        if self.worker is not None:
            self.info.setText("Stopping: saving a checkpoint...")
            self.worker.quit()

    def _set_running(self, running: bool) -> None:
        self.start_btn.enabled = not running
        self.resume_btn.enabled = (not running) and self.last_checkpoint is not None
        self.stop_btn.enabled = running
        self.form.native.setEnabled(True)

    def _on_progress(self, p: Any) -> None:
        self.progress_seen += 1
        if self._done0 is None:
            self._done0 = float(p.done)
            self._t0 = time.monotonic()
        if p.fraction is not None:
            self.bar.setValue(int(1000 * p.fraction))
        left = p.metrics.get("seconds_left", p.metrics.get("eta_s"))
        if left is None and p.total and p.done > self._done0:
            rate = (p.done - self._done0) / max(time.monotonic() - self._t0, 1e-6)
            left = (p.total - p.done) / rate
        total = f" / {p.total:g}" if p.total else ""
        eta = f", {left / 60:.1f} min left" if left is not None else ""
        self.info.setText(f"{p.done:.3f}{total} {p.unit}{eta}. {p.message}")
        for key, value in p.metrics.items():
            if "loss" in key.lower() or key.lower() in {"d", "g", "augment_p", "p"}:
                try:
                    self.history.setdefault(key, []).append((float(p.done), float(value)))
                except (TypeError, ValueError):
                    pass
        ckpt = p.artifacts.get("checkpoint")
        if ckpt:
            self.last_checkpoint = Path(ckpt)
        fakes = p.artifacts.get("fakes")
        if fakes is not None:
            self._pending_fakes = fakes
        # Redraw at most every REDRAW_S seconds: a fast core can yield faster than matplotlib and
        # layer updates take, and a backlog of yields would make the GUI lag behind training.
        now = time.monotonic()
        if now - self._last_draw >= self.REDRAW_S or p.fraction == 1.0:
            self._last_draw = now
            self.redraw()

    def redraw(self) -> None:
        """Draw the loss plot and the newest fakes received so far."""
        if self._pending_fakes is not None:
            self.show_fakes(self._pending_fakes)
            self._pending_fakes = None
        self._plot()

    def _on_done(self, result: Any) -> None:
        self.redraw()
        if result is not None:
            self.result = Path(result)
            self.last_checkpoint = self.result
            self.info.setText(f"Done: {self.result}")

    def _on_finish(self) -> None:
        self.redraw()
        latest = Path(str(self.out.value)) / "checkpoints" / "latest.pt"
        if self.result is None and latest.is_file():
            self.last_checkpoint = latest  # written by the core when the generator was closed
        if self.result is None and self.last_checkpoint is not None:
            self.info.setText(f"Stopped; checkpoint: {self.last_checkpoint}")
        self._set_running(False)

    # -- display ---------------------------------------------------------------------------------
    def show_fakes(self, fakes: Any) -> None:
        """Show the latest fakes as one additive layer per channel (updated in place)."""
        from_png = isinstance(fakes, (str, Path))
        if from_png:
            arr, names = _read_fakes_png(fakes), None
        else:
            arr = fakes.detach().cpu().numpy() if hasattr(fakes, "detach") else np.asarray(fakes)
            names = None
        grid = fakes_grid(arr)
        session = L.session_of(self.viewer)
        if names is None and session is not None and session.index is not None:
            from gandl_core.plates import channel_names

            names = channel_names(session.index)
        if not names or len(names) != grid.shape[0]:
            names = [f"Ch{i + 1}" for i in range(grid.shape[0])]
        # Keep fakes clear of the site image and plate map: place them below both.
        below = float(session.site_shape[0] + 4 * session.spacing) if session is not None and session.site_shape[0] else 0.0
        scale = (session.site_shape[0] / grid.shape[1]) if session is not None and session.site_shape[0] else 1.0
        used: list[str] = []
        for i, name in enumerate(names):
            layer_name = f"{FAKES_PREFIX} {name}"
            cmap = L.colormap_for(name, i, used)
            used.append(cmap)
            # Generator outputs live in the normalizer's [-1, 1] space (real background at -1), with
            # overshoot early in training: show them on that fixed scale (as the core's fakes PNG
            # does) so fakes and reals compare; a fakes PNG (0..255) gets robust limits.
            limits = L.robust_limits(grid[i]) if from_png else (-1.0, 1.0)
            if layer_name in self.viewer.layers:
                layer = self.viewer.layers[layer_name]
                layer.data = grid[i]
                layer.contrast_limits = limits
            else:
                self.viewer.add_image(grid[i], name=layer_name, colormap=cmap, blending="additive",
                                      contrast_limits=limits, translate=(below, 0.0), scale=(scale, scale),
                                      metadata={L.KIND_KEY: "fakes", "channel": name})

    def _style_plot(self) -> None:
        self.ax.set_xlabel("kimg")
        self.ax.set_ylabel("loss")
        self.ax.set_title("training losses", fontsize=9)

    def _plot(self) -> None:
        self.ax.clear()
        style_axes(self.ax)
        self._style_plot()
        for key, pts in self.history.items():
            if pts:
                x, y = zip(*pts)
                self.ax.plot(x, y, label=key, lw=1.2)
        if self.history:
            self.ax.legend(fontsize=7, facecolor="#262930", labelcolor="#e0e0e0", edgecolor="#555")
        self.canvas.draw_idle()
