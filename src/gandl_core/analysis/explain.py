"""What the On-perturbation axis sees: real sites along the axis, and a readout to check them.

An On score is a number; before trusting it an analyst wants to see what a well at -1 (C-), at 0
and at +1 (C+) looks like. This module picks those wells and cuts their images; it returns arrays
and tables and draws nothing (:mod:`gandl_core.analysis.explain_plots` writes the PNGs, and
:mod:`gandl_core.analysis.explain_generator` makes the generator's illustrations).

* :func:`axis_montage` -- for ``n`` quantiles of the On score over the wells, the ``per_quantile``
  wells whose score is nearest each quantile, one site of each (chosen with ``seed``), optionally
  a centre crop: a :class:`Montage` (raw-intensity images + one table row per image).
* :func:`spot_fraction` -- a simple readout of punctate signal in one channel (fraction of the
  background-subtracted intensity that sits in small bright spots, a white top-hat; NaN for an
  empty field): the synthetic screen's RNA puncta (infection) and BBBC016's beta-arrestin-GFP
  puncta (agonist) both raise it.
* :func:`readout` -- that readout (or any function of a 2-D image) on every image of a montage or
  a generator strip, as a table column, with its Spearman correlation against the position.
* :func:`display_ranges`, :func:`to_rgb` -- one contrast per channel shared by all images
  (brightness differences between images stay visible) and a false-colour composite.

Example::

    from gandl_core.analysis import explain
    from gandl_core.plates import build_index
    from gandl_core.tables import read_table

    m = explain.axis_montage(read_table("project/scores.parquet"), build_index("screen"), n=7, crop=64)
    table, rho = explain.readout(m, channel="RNA")      # rho: Spearman(spot fraction, column)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..tables import metadata_columns

__all__ = ["Montage", "axis_montage", "score_column", "spot_fraction", "readout", "readout_by_replicate",
           "display_ranges", "to_rgb", "channel_colours"]

_KEYS = ("Metadata_Plate", "Metadata_Well")


@dataclass
class Montage:
    """Images of real sites at quantiles of the On score.

    Attributes
    ----------
    images
        float32 ``[n, per_quantile, C, H, W]`` raw intensities (as read from the files); column
        ``k`` holds the wells nearest quantile ``k``, lowest score (C- side) first.
    table
        One row per image, in ``images`` order (column-major: all rows of column 0 first):
        ``column``, ``row``, ``quantile``, ``target`` (the score at that quantile), the well's
        ``Metadata_*`` columns from the scores table, ``Metadata_Site`` of the site shown, and the
        well's score (column named as in the scores table).
    channels
        Channel names, in image order.
    score_col
        Name of the score column.
    info
        How the montage was made (options, wells available, crop).
    """

    images: np.ndarray
    table: pd.DataFrame
    channels: list[str]
    score_col: str
    info: dict = field(default_factory=dict)

    @property
    def positions(self) -> np.ndarray:
        """Column of every image (``table['column']``), the position along the axis."""
        return self.table["column"].to_numpy()

    def flat_images(self) -> np.ndarray:
        """``[n * per_quantile, C, H, W]`` in table order."""
        n, r = self.images.shape[:2]
        return self.images.reshape(n * r, *self.images.shape[2:])


def score_column(df: pd.DataFrame, score_col: str | None = None) -> tuple[pd.DataFrame, str]:
    """The scores table with the shared score names, and its On score column (default ``OnScore``).

    Tables written before the rename (``On``/``Off``) are read through
    :func:`gandl_core.analysis.projection.resolve_score`, the one read-side fallback.

    Raises
    ------
    DataError
        The column is missing (the message lists the table's columns).
    """
    from .projection import resolve_score

    df, col = resolve_score(df, score_col or "OnScore")
    if col not in df.columns:
        raise DataError(f"the scores table has no column {col!r}; give the scores.parquet written by 'gandl-core "
                        f"project' (it has {list(df.columns)[:12]}).")
    return df, col


def _well_keys(df: pd.DataFrame) -> pd.Series:
    return df["Metadata_Plate"].astype(str) + "|" + df["Metadata_Well"].astype(str)


def _wells_with_sites(scores: pd.DataFrame, index: pd.DataFrame, score_col: str) -> pd.DataFrame:
    """Scored wells (finite score) that have at least one site in the index, with their site rows."""
    for name, df in (("scores table", scores), ("index", index)):
        missing = [k for k in _KEYS if k not in df.columns]
        if missing:
            raise DataError(f"the {name} lacks {missing}: the montage matches wells by plate and well.")
    ok = scores[np.isfinite(pd.to_numeric(scores[score_col], errors="coerce"))]
    keys = _well_keys(index)  # vectorized: a 300k-site index takes well under a second
    sites = pd.Series(np.arange(len(index)), index=keys.to_numpy()).groupby(level=0).agg(list)
    ok = ok.assign(_sites=_well_keys(ok).map(sites).to_numpy())
    ok = ok[ok["_sites"].notna()]
    if ok.empty:
        raise DataError("no scored well has a site in the index: plate/well names differ between the scores table "
                        f"(e.g. {scores[list(_KEYS)].head(2).to_dict('records')}) and the index "
                        f"(e.g. {index[list(_KEYS)].head(2).to_dict('records')}). Give the plate the scores came from.")
    return ok.reset_index(drop=True)


def _pick_wells(values: np.ndarray, targets: np.ndarray, per_quantile: int) -> list[list[int]]:
    """For each target, the ``per_quantile`` unused wells nearest to it (columns in order, no well twice).

    Ties are broken by the well's order in the table, so the pick is deterministic."""
    used = np.zeros(len(values), bool)
    picks = []
    for t in targets:
        d = np.where(used, np.inf, np.abs(values - t))
        take = np.argsort(d, kind="stable")[:per_quantile]
        used[take] = True
        picks.append(sorted(take.tolist(), key=lambda i: values[i]))
    return picks


def _centre_crop(img: np.ndarray, crop: int | None) -> np.ndarray:
    if crop is None:
        return img
    h, w = img.shape[-2:]
    c = min(crop, h, w)
    y0, x0 = (h - c) // 2, (w - c) // 2
    return img[..., y0:y0 + c, x0:x0 + c]


def axis_montage(scores: pd.DataFrame, index: pd.DataFrame, *, n: int = 7, per_quantile: int = 1,
                 crop: int | None = None, seed: int = 0, score_col: str | None = None,
                 quantile_range: tuple[float, float] = (0.02, 0.98)) -> Montage:
    """Real sites at ``n`` quantiles of the On score, from the C- end to the C+ end.

    The quantile levels are evenly spaced over ``quantile_range`` of the scores of every well that
    has a finite score and a site in ``index`` (the 2% at each end are left out by default: they are
    often outliers, e.g. empty or toxic wells). For each level the ``per_quantile`` wells whose score
    is nearest are taken (each well once), and one site per well is chosen at random with ``seed``.
    Restrict ``scores`` beforehand (e.g. to one cell type) when the plate mixes populations that
    look different at the same score.

    Parameters
    ----------
    scores
        Well scores (``scores.parquet`` of ``gandl-core project``): ``Metadata_Plate``,
        ``Metadata_Well`` and the On score.
    index
        Site index of the same plate(s) (:func:`gandl_core.plates.build_index`).
    n
        Number of quantiles (columns), >= 2.
    per_quantile
        Wells per quantile (rows), >= 1.
    crop
        Side of a centre crop in pixels (``None``: the whole field).
    seed
        Seed of the site chosen in each well (same seed, same montage).
    score_col
        Score column (default ``OnScore``; tables with the old name ``On`` are read too).
    quantile_range
        Lowest and highest quantile level, in [0, 1].

    Returns
    -------
    Montage

    Raises
    ------
    ConfigError
        Bad ``n``, ``per_quantile``, ``crop`` or ``quantile_range``, or fewer wells than images asked for.
    DataError
        Missing columns, no scored well with sites, unreadable images.
    """
    from ..plates import channel_names, read_site

    if int(n) < 2 or int(per_quantile) < 1:
        raise ConfigError(f"--n {n} / --per-quantile {per_quantile}: need n >= 2 quantiles and >= 1 well each.")
    if crop is not None and int(crop) < 4:
        raise ConfigError(f"--crop {crop}: give a crop side of at least 4 pixels, or none for whole fields.")
    lo, hi = (float(q) for q in quantile_range)
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"quantile_range {quantile_range}: need 0 <= low < high <= 1.")
    scores, col = score_column(scores, score_col)
    wells = _wells_with_sites(scores, index, col)
    if len(wells) < n * per_quantile:
        raise ConfigError(f"{len(wells)} scored well(s) with images, but --n {n} x --per-quantile {per_quantile} = "
                          f"{n * per_quantile} images were asked for: lower --n or --per-quantile.")
    values = wells[col].to_numpy(np.float64)
    levels = np.linspace(lo, hi, int(n))
    targets = np.quantile(values, levels)
    picks = _pick_wells(values, targets, int(per_quantile))
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for k, (level, target, chosen) in enumerate(zip(levels, targets, picks)):
        for r, w in enumerate(chosen):
            sites = wells.at[w, "_sites"]
            site = int(sites[int(rng.integers(len(sites)))])
            row = index.iloc[site]
            images.append(_centre_crop(read_site(row), crop))
            meta = {c: wells.at[w, c] for c in metadata_columns(wells)}
            rows.append({"column": k, "row": r, "quantile": float(level), "target": float(target), **meta,
                         "Metadata_Site": row.get("Metadata_Site", site), col: float(values[w])})
    shapes = {im.shape for im in images}
    if len(shapes) > 1:  # fields of different sizes: cut all to the smallest common square
        side = min(min(s[-2:]) for s in shapes)
        images = [_centre_crop(im, side) for im in images]
    arr = np.stack(images).astype(np.float32)
    arr = arr.reshape(int(n), int(per_quantile), *arr.shape[1:])
    info = {"n": int(n), "per_quantile": int(per_quantile), "crop": crop, "seed": int(seed),
            "quantile_range": [lo, hi], "wells_available": int(len(wells)), "score_col": col}
    return Montage(arr, pd.DataFrame(rows), channel_names(index), col, info)


# ------------------------------------------------------------------------------------------
# Readouts
# ------------------------------------------------------------------------------------------


def spot_fraction(image: np.ndarray, *, size: int = 5, min_foreground: float = 0.01) -> float:
    """Fraction of a channel's signal that lies in small bright spots (puncta): a white top-hat readout.

    1. ``g`` = the image smoothed with a Gaussian of sd 1 px (shot noise would otherwise look like
       one-pixel spots); the pixel noise ``sd`` is measured from differences of neighbouring pixels
       in the darkest 30% of the field (background), robustly (MAD).
    2. Background ``bg`` = the 5th percentile of ``g`` plus 1.64 x the smoothed noise (the
       background's mean when at least 5% of the field is background).
    3. ``s = max(g - bg, 0)``; ``spots = s - opening(s)`` with a ``size`` x ``size`` square (what a
       grey opening removes: bright structures narrower than the square). Readout =
       ``sum(spots) / sum(s)``, in [0, 1].

    It does not change when the image is multiplied by a constant or shifted by one (gain, offset),
    so raw images and generated images brought back to raw units (``IntensityNormalizer.inverse``)
    are read the same way. A field with (almost) no cells has no signal to divide: when less than
    ``min_foreground`` of its pixels lie 6 smoothed-noise sds above the background the readout is
    NaN, not a ratio of noise.

    Parameters
    ----------
    image
        2-D array, one channel.
    size
        Width in pixels of the largest spot counted (5 suits 1-2 px puncta; scale it with the pixel size).
    min_foreground
        Smallest fraction of foreground pixels for a readout.

    Raises
    ------
    DataError
        ``image`` is not 2-D.
    """
    from scipy import ndimage as ndi

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise DataError(f"spot_fraction: expected one channel [H, W], got shape {img.shape}.")
    g = ndi.gaussian_filter(img, 1.0)
    dark = g <= np.percentile(g, 30)
    d = np.diff(img, axis=1)[dark[:, 1:] & dark[:, :-1]]
    noise = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0) if d.size else 0.0
    sd_g = 0.28 * noise  # white noise after a Gaussian of sd 1 px: 1 / (2 sqrt(pi)) of its sd
    bg = float(np.percentile(g, 5)) + 1.64 * sd_g
    if (g > bg + 6.0 * sd_g).mean() < min_foreground or not (g > bg).any():
        return float("nan")
    s = np.clip(g - bg, 0.0, None)
    spots = s - ndi.grey_opening(s, size=(int(size), int(size)))
    return float(spots.sum() / s.sum())


def _channel_index(channels: Sequence[str], channel: str | int) -> int:
    if isinstance(channel, (int, np.integer)):
        if not 0 <= int(channel) < len(channels):
            raise ConfigError(f"channel {channel}: there are {len(channels)} channels ({list(channels)}).")
        return int(channel)
    if channel not in channels:
        raise ConfigError(f"channel {channel!r} is not one of {list(channels)}.")
    return list(channels).index(channel)


def readout(images: Any, *, channel: str | int, fn: Callable[[np.ndarray], float] = spot_fraction,
            channels: Sequence[str] | None = None) -> tuple[pd.DataFrame, float]:
    """A per-image readout along the axis and its Spearman correlation with the position.

    Parameters
    ----------
    images
        A :class:`Montage`, a generator ``Strip`` (its raw-unit images), or an array
        ``[positions, replicates, C, H, W]``.
    channel
        Channel name (or index) to read.
    fn
        ``fn(2-D image) -> float`` (default :func:`spot_fraction`).
    channels
        Channel names when ``images`` is an array.

    Returns
    -------
    (table, rho)
        ``table`` has ``position``, ``replicate`` and ``readout`` per image; ``rho`` is Spearman's
        correlation of readout and position over the images with a readout (NaN readouts, e.g.
        empty fields, are left out; rho is NaN when fewer than 3 remain or the readout is constant).
    """
    from scipy.stats import spearmanr

    if hasattr(images, "raw_images"):
        arr, names = images.raw_images(), images.channels
    elif hasattr(images, "images") and hasattr(images, "channels"):
        arr, names = images.images, images.channels
    else:
        arr = np.asarray(images)
        names = list(channels) if channels is not None else [str(k) for k in range(arr.shape[2])]
    if arr.ndim != 5:
        raise DataError(f"readout: expected images [positions, replicates, C, H, W], got shape {arr.shape}.")
    c = _channel_index(names, channel)
    rows = [{"position": k, "replicate": r, "readout": float(fn(arr[k, r, c]))}
            for k in range(arr.shape[0]) for r in range(arr.shape[1])]
    table = pd.DataFrame(rows)
    ok = table.dropna(subset=["readout"])
    if len(ok) < 3 or ok["readout"].nunique() < 2:
        return table, float("nan")
    return table, float(spearmanr(ok["position"], ok["readout"]).statistic)


def readout_by_replicate(table: pd.DataFrame) -> tuple[list[float], list[float]]:
    """Spearman of readout and position within each replicate (strip start / montage row), and the
    median readout at each position.

    The pooled rho of :func:`readout` mixes starts whose fields differ in cell count, so it
    understates a change every strip shows; these two say whether each strip changes and whether
    the typical image does. NaN where a replicate has fewer than 3 readouts or a constant one.
    """
    from scipy.stats import spearmanr

    rhos = []
    for _, g in table.dropna(subset=["readout"]).groupby("replicate"):
        ok = len(g) >= 3 and g["readout"].nunique() > 1
        rhos.append(float(spearmanr(g["position"], g["readout"]).statistic) if ok else float("nan"))
    medians = table.groupby("position")["readout"].median()
    return rhos, [float(v) for v in medians.to_numpy()]


# ------------------------------------------------------------------------------------------
# Display
# ------------------------------------------------------------------------------------------

#: Composite colours (RGB) by position; DNA-like channels are always blue, GFP green.
_PALETTE = [(0.0, 1.0, 0.0), (1.0, 0.0, 1.0), (1.0, 0.55, 0.0), (0.0, 0.9, 1.0), (1.0, 1.0, 0.0),
            (1.0, 0.0, 0.0), (0.6, 0.6, 1.0)]
_BLUE_NAMES = ("dna", "dapi", "hoechst", "nuclei", "nucleus", "h33342")
_GREEN_NAMES = ("gfp", "fitc")


def channel_colours(channels: Sequence[str]) -> list[tuple[float, float, float]]:
    """RGB colour of each channel in a composite: DNA stains blue, GFP green, the rest from a fixed
    palette in channel order; a single channel is grey (green when it is GFP)."""
    if len(channels) == 1:
        return [(0.0, 1.0, 0.0)] if any(g in str(channels[0]).lower() for g in _GREEN_NAMES) else [(1.0, 1.0, 1.0)]
    out, k = [], 0
    for name in channels:
        low = str(name).lower()
        if any(b in low for b in _BLUE_NAMES):
            out.append((0.15, 0.35, 1.0))
        elif any(g in low for g in _GREEN_NAMES):
            out.append((0.0, 1.0, 0.0))
        else:
            out.append(_PALETTE[k % len(_PALETTE)])
            k += 1
    return out


def display_ranges(images: np.ndarray, *, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Per-channel display range ``[C, 2]`` from percentiles of the pixels of all ``images`` [..., C, H, W].

    One range per channel for every image, so a brighter well looks brighter (per-image contrast
    would hide exactly the differences the montage is for).
    """
    arr = np.asarray(images, dtype=np.float32)
    flat = np.moveaxis(arr.reshape(-1, *arr.shape[-3:]), 1, 0).reshape(arr.shape[-3], -1)
    lo = np.percentile(flat, low, axis=1)
    hi = np.percentile(flat, high, axis=1)
    return np.stack([lo, np.where(hi > lo, hi, lo + 1.0)], axis=1)


def to_rgb(image: np.ndarray, ranges: np.ndarray, *, channel: int | None = None,
           colours: Sequence[tuple[float, float, float]] | None = None) -> np.ndarray:
    """float32 ``[H, W, 3]`` in [0, 1]: one channel in grey, or all channels as a false-colour composite.

    Parameters
    ----------
    image
        ``[C, H, W]``.
    ranges
        ``[C, 2]`` display ranges (:func:`display_ranges`).
    channel
        Index of the channel to show in grey; ``None`` for the composite (additive colours, clipped).
    colours
        Composite colour per channel (default :func:`channel_colours` of ``C`` unnamed channels).
    """
    img = np.asarray(image, dtype=np.float32)
    scaled = np.clip((img - ranges[:, :1, None]) / (ranges[:, 1:, None] - ranges[:, :1, None]), 0.0, 1.0)
    if channel is not None:
        return np.repeat(scaled[channel][..., None], 3, axis=2)
    cols = np.asarray(colours if colours is not None else channel_colours([str(k) for k in range(len(img))]),
                      dtype=np.float32)
    # Several channels add up in the same colour component: divide each component by its total
    # weight (times 2, so a lone bright channel still saturates) instead of letting cells go white.
    norm = np.maximum(cols.sum(axis=0) / 2.0, 1.0)
    return np.clip(np.tensordot(scaled, cols, axes=(0, 0)) / norm, 0.0, 1.0)
