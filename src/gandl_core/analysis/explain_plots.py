"""PNG figures of :mod:`gandl_core.analysis.explain`: the real-site montage and the generator strips.

* :func:`montage_figure` -- columns = quantiles of the On score (C- end left, C+ end right); for
  each well picked at a quantile, a false-colour composite row and one grey row per channel,
  labelled with the well, site and score. All images share one contrast per channel.
* :func:`strip_figure` -- one row per start (composite, or one channel), columns = target On
  scores; every image labelled with its measured score; the title says it is an illustration.
  Fakes are shown on the fixed normalized range [-1, 1] (how the training data was scaled).

Both return the PNG path and write it atomically (through :func:`gandl_core.analysis.plots._save`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from .explain import channel_colours, display_ranges, to_rgb

__all__ = ["montage_figure", "strip_figure"]

_TILE_IN = 1.25  # inches per image tile


def _grid(rows: int, cols: int, title: str, *, label_w: float = 0.9, title_h: float = 1.0,
          title_colour: str = "black"):
    """Figure with a rows x cols grid of bare image axes under ``title_h`` inches for the title and
    the column labels."""
    from .plots import _plt

    plt = _plt()
    height = title_h + rows * (_TILE_IN + 0.18)
    fig = plt.figure(figsize=(label_w + cols * _TILE_IN, height))
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={"wspace": 0.04, "hspace": 0.28})
    fig.subplots_adjust(left=label_w / (label_w + cols * _TILE_IN), right=0.995, bottom=0.01,
                        top=1 - title_h / height)
    fig.text(0.5, 1 - 0.08 / height, title, ha="center", va="top", fontsize=9, color=title_colour)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    return fig, axes


def _row_kinds(channels: Sequence[str]) -> list[tuple[str, int | None]]:
    """(label, channel index) of the rows drawn per replicate: the composite first, then each channel."""
    rows: list[tuple[str, int | None]] = [("composite" if len(channels) > 1 else str(channels[0]), None)]
    if len(channels) > 1:
        rows += [(str(c), k) for k, c in enumerate(channels)]
    return rows


def montage_figure(montage: Any, path: str | os.PathLike, *, title: str | None = None,
                   channels_shown: bool = True, label: str | None = None) -> Path:
    """Draw a :class:`~gandl_core.analysis.explain.Montage` as a labelled grid; returns the PNG path.

    Parameters
    ----------
    montage
        The montage.
    path
        PNG to write.
    title
        Figure title (default names the score and the C- -> C+ direction).
    channels_shown
        Add one grey row per channel under each composite (multi-channel images only).
    label
        A column of the montage table (e.g. ``Metadata_Dose``) whose value is added to each image's title.
    """
    from .plots import _save

    imgs = montage.images
    n, reps = imgs.shape[:2]
    ranges = display_ranges(imgs)
    colours = channel_colours(montage.channels)
    kinds = _row_kinds(montage.channels)
    if not channels_shown:
        kinds = kinds[:1]
    col = montage.score_col
    head = title or f"Real sites along the On axis: {col} quantiles over the wells, C- end (left) to C+ end (right)"
    if label is not None and label not in montage.table.columns:
        raise DataError(f"--label {label!r} is not a column of the scores table; it has "
                        f"{list(montage.table.columns)[:12]}.")
    fig, axes = _grid(reps * len(kinds), n, head, title_h=1.0 if len(kinds) > 1 or label else 0.8)
    tab = montage.table.set_index(["column", "row"])
    for k in range(n):
        for r in range(reps):
            rec = tab.loc[(k, r)]
            for j, (row_name, ch) in enumerate(kinds):
                ax = axes[r * len(kinds) + j, k]
                ax.imshow(to_rgb(imgs[k, r], ranges, channel=ch, colours=colours), interpolation="nearest")
                if j == 0:
                    extra = f"\n{label.removeprefix('Metadata_')} {rec[label]}" if label else ""
                    ax.set_title(f"{rec['Metadata_Well']} s{rec['Metadata_Site']}  {col} {rec[col]:+.2f}{extra}",
                                 fontsize=7)
                if k == 0:
                    ax.set_ylabel(row_name, fontsize=8)
    for k in range(n):
        q = montage.table.loc[montage.table["column"] == k, "quantile"].iloc[0]
        axes[0, k].annotate(f"quantile {q:.2f}", (0.5, 1.32 if label else 1.2), xycoords="axes fraction",
                            ha="center", fontsize=8,
                            weight="bold")
    return _save(fig, path)


def strip_figure(strip: Any, path: str | os.PathLike, *, channel: str | int | None = None,
                 title: str | None = None) -> Path:
    """Draw a generator ``Strip`` (rows = starts, columns = target scores); returns the PNG path.

    Parameters
    ----------
    strip
        :class:`~gandl_core.analysis.explain_generator.Strip`.
    path
        PNG to write.
    channel
        Show this channel in grey instead of the composite.
    title
        Figure title (always followed by the illustration note).
    """
    from .explain import _channel_index
    from .plots import _save

    imgs = strip.images
    steps, starts = imgs.shape[:2]
    # G draws normalized intensities: [-1, 1] is the range the real images were scaled to (their
    # 0.1 and 99.9 percentiles), so fakes are shown as the training data was, not re-stretched.
    ranges = np.tile(np.array([[-1.0, 1.0]], np.float32), (imgs.shape[2], 1))
    ch = None if channel is None else _channel_index(strip.channels, channel)
    colours = channel_colours(strip.channels)
    what = strip.channels[ch] if ch is not None else "composite" if len(strip.channels) > 1 else strip.channels[0]
    head = title or f"Generator's view of the On axis ({strip.info.get('method')}, {what}): C- end left, C+ end right"
    fig, axes = _grid(starts, steps, head + "\nILLUSTRATION, NOT A MEASUREMENT: images invented by the generator; "
                      "On = the score of each fake", title_colour="#7a0000")
    tab = strip.table.set_index(["position", "replicate"])
    for k in range(steps):
        for r in range(starts):
            ax = axes[r, k]
            ax.imshow(to_rgb(imgs[k, r], ranges, channel=ch, colours=colours), interpolation="nearest")
            ax.set_title(f"On {tab.loc[(k, r), 'score']:+.2f}", fontsize=7)
            if k == 0:
                ax.set_ylabel(f"start {r + 1}", fontsize=8)
    for k in range(steps):
        t = tab.loc[(k, 0), "target"]
        axes[0, k].annotate(f"target {t:+.2f}", (0.5, 1.2), xycoords="axes fraction", ha="center", fontsize=8,
                            weight="bold")
    return _save(fig, path)
