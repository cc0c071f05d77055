"""A matplotlib figure that lives in a napari dock (Qt5Agg canvas, dark theme to match napari)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QSizePolicy


def make_canvas(width: float = 4.0, height: float = 3.0, *, nrows: int = 1, ncols: int = 1) -> tuple[Any, Any, Any]:
    """Create ``(canvas, figure, axes)``; the canvas is a QWidget to put in a layout.

    The figure uses napari's dark background so the dock does not flash white.
    """
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90, facecolor="#262930", tight_layout=True)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        style_axes(ax)
    canvas = FigureCanvasQTAgg(fig)
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
