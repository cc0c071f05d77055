"""A matplotlib figure that lives in a napari dock (Qt5Agg canvas, dark theme to match napari).

Drawing a figure runs on the GUI thread, so the canvas is made cheap to keep the event loop
responsive: fixed margins instead of ``tight_layout`` (which measures every tick label on each
draw), plain tick labels on log axes (matplotlib's default ones go through mathtext, whose parser
alone takes seconds to build), and no drawing while the canvas is hidden (a dock in another tab):
it draws once when shown.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QSizePolicy


def _canvas_class() -> type:
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg

    class LazyCanvas(FigureCanvasQTAgg):
        """Draws only when visible; a request while hidden is kept for the next show."""

        _stale_while_hidden = False

        def draw_idle(self) -> None:
            if not self.isVisible():
                self._stale_while_hidden = True
                return
            super().draw_idle()

        def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
            super().showEvent(event)
            if self._stale_while_hidden:
                self._stale_while_hidden = False
                super().draw_idle()

    return LazyCanvas


def make_canvas(width: float = 4.0, height: float = 3.0, *, nrows: int = 1, ncols: int = 1) -> tuple[Any, Any, Any]:
    """Create ``(canvas, figure, axes)``; the canvas is a QWidget to put in a layout."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90, facecolor="#262930")
    fig.subplots_adjust(left=0.17, right=0.96, bottom=0.2, top=0.88)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        style_axes(ax)
    canvas = _canvas_class()(fig)
    canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
    canvas.setMinimumHeight(int(height * 60))
    ax = axes[0, 0] if nrows * ncols == 1 else axes
    return canvas, fig, ax


def style_axes(ax: Any) -> None:
    """Light text and spines on the dark background."""
    ax.set_facecolor("#1e2027")
    for spine in ax.spines.values():
        spine.set_color("#a0a0a0")
    ax.tick_params(colors="#d0d0d0", labelsize=8)
    ax.xaxis.label.set_color("#e0e0e0")
    ax.yaxis.label.set_color("#e0e0e0")
    ax.title.set_color("#ffffff")


def plain_log_axis(axis: Any) -> None:
    """Log-scale tick labels as plain numbers (``0.1``, ``10``), not mathtext powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
