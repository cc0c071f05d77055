"""``handcrafted`` (prefix ``HC_``): CellProfiler-style whole-field features, no learned weights.

The classic image-based profiling baseline, computed per site with scikit-image / scipy on CPU.
For a field with C channels the vector is, in this order (``feature_labels`` gives the names,
also stored in the table metadata under ``featurizer.feature_labels``):

1. **Intensity** per channel (10 each): mean, sd, median, 5/25/75/95/99th percentiles, skewness,
   excess kurtosis of the pixel values.
2. **Texture** per channel (6 properties x len(distances), default distances 1, 3, 5 px): Haralick
   features of the grey-level co-occurrence matrix (``skimage.feature.graycomatrix`` /
   ``graycoprops``; ``levels`` grey levels, symmetric, normalized, averaged over 0/45/90/135
   degrees): contrast, dissimilarity, homogeneity, ASM, energy, correlation.
3. **Granularity** per channel (``granularity_steps`` each, default 8): CellProfiler's
   MeasureGranularity: the field is subsampled to at most ``granularity_size`` px, the background
   (opening with a disk of ``granularity_background`` px) subtracted, then the share of the
   remaining signal (in %) removed by each successive grey opening with disks of radius 1..n.
4. **Correlation**: Pearson correlation of every channel pair (C(C-1)/2).
5. **Objects** from the nuclear channel (``nuclear_channel``: by name, default ``"DNA"`` if present
   else the first channel): Gaussian smoothing, Otsu threshold, small objects removed, touching
   nuclei split by a distance-transform watershed; then the object count, the foreground fraction
   and the per-site mean and sd of area (px), eccentricity, solidity and the mean intensity of each
   channel inside the object (``skimage.measure.regionprops_table``). A field without objects
   gets count 0 and zeros.

F = C*(10 + 6*len(distances) + granularity_steps) + C(C-1)/2 + 2 + 2*(3 + C); 208 for 5 channels
with the defaults.

Intensities
    ``intensity="normalized"`` (default): the engine's per-plate normalized values (about
    [-1, 1], percentiles 0.1/99.9 of the plate -> -1/+1) mapped to [0, 1]; features are
    comparable across plates with the same normalizer. ``intensity="raw"``: raw intensity units
    as read from the files (the engine's normalizer is replaced by :class:`RawIntensities`);
    texture and granularity then quantize/scale each channel by its own 0.1-99.9th percentiles in
    that field, as they need a bounded range.

Speed: numpy/scikit-image per image on one core; ``docs/benchmarks.md`` gives sites/s.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

INTENSITY_STATS = ("mean", "sd", "median", "p05", "p25", "p75", "p95", "p99", "skew", "kurtosis")
TEXTURE_PROPS = ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "correlation")
OBJECT_MEASURES = ("area", "eccentricity", "solidity")
NUCLEAR_NAMES = ("DNA", "dna", "Hoechst", "DAPI", "Nuclei")


class RawIntensities:
    """A stand-in normalizer that leaves raw intensities unchanged (``intensity="raw"``).

    It has the ``IntensityNormalizer`` interface the engine and ``PlateDataset`` use
    (``transform``, ``to_dict``, ``channels``).
    """

    def __init__(self, channels: Sequence[str]) -> None:
        self.channels = [str(c) for c in channels]
        # lo/hi as an identity mapping, so code checking "is it fitted?" sees a fitted normalizer
        self.lo = np.zeros(len(self.channels))
        self.hi = np.ones(len(self.channels))

    def transform(self, img: Any) -> Any:
        """Return ``img`` as float32 (numpy or torch), unchanged."""
        if isinstance(img, np.ndarray):
            return img.astype(np.float32, copy=False)
        return img.float()

    def to_dict(self) -> dict:
        """Describe the identity mapping (lo=0, hi=1 per channel, so shapes check out)."""
        n = len(self.channels)
        return {"kind": "raw", "low": 0.0, "high": 100.0, "lo": [0.0] * n, "hi": [1.0] * n,
                "channels": list(self.channels), "n_sites": 0}


def feature_labels(channels: Sequence[str], *, distances: Sequence[int] = (1, 3, 5),
                   granularity_steps: int = 8) -> list[str]:
    """Names of the handcrafted features, in column order (``HC_000`` = first name).

    Parameters
    ----------
    channels
        Channel names.
    distances
        GLCM distances.
    granularity_steps
        Number of granularity spectrum steps.

    Returns
    -------
    list[str]
    """
    names: list[str] = []
    for c in channels:
        names += [f"Intensity_{s}_{c}" for s in INTENSITY_STATS]
    for c in channels:
        names += [f"Texture_{p}_{c}_d{d}" for d in distances for p in TEXTURE_PROPS]
    for c in channels:
        names += [f"Granularity_{k}_{c}" for k in range(1, granularity_steps + 1)]
    for i, a in enumerate(channels):
        for b in channels[i + 1:]:
            names.append(f"Correlation_{a}_{b}")
    names += ["Objects_count", "Objects_foreground_fraction"]
    for m in list(OBJECT_MEASURES) + [f"intensity_{c}" for c in channels]:
        names += [f"Objects_{m}_mean", f"Objects_{m}_sd"]
    return names


def _intensity(x: np.ndarray) -> list[float]:
    from scipy import stats

    v = x.ravel().astype(np.float64)
    p = np.percentile(v, [50, 5, 25, 75, 95, 99])
    sd = float(v.std())
    if sd > 0:
        sk, ku = float(stats.skew(v)), float(stats.kurtosis(v))
    else:  # a constant channel has no shape: report 0, not NaN
        sk = ku = 0.0
    return [float(v.mean()), sd, *map(float, p), sk, ku]


def _unit(x: np.ndarray, raw: bool) -> np.ndarray:
    """Channel scaled to [0, 1]: fixed mapping for normalized input, own percentiles for raw."""
    if not raw:
        return np.clip(x, 0.0, 1.0)
    lo, hi = np.percentile(x, [0.1, 99.9])
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _texture(u: np.ndarray, distances: Sequence[int], levels: int) -> list[float]:
    from skimage.feature import graycomatrix, graycoprops

    q = np.minimum((u * levels).astype(np.uint8), levels - 1)
    glcm = graycomatrix(q, distances=list(distances), angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                        levels=levels, symmetric=True, normed=True)
    out = []
    for di in range(len(distances)):
        for prop in TEXTURE_PROPS:
            vals = graycoprops(glcm[:, :, di:di + 1, :], prop)  # [1, angles]
            # correlation is NaN on a constant image (zero variance): 0 = no linear dependence
            out.append(float(np.nan_to_num(vals.mean(), nan=0.0)))
    return out


@functools.lru_cache(maxsize=64)
def _disk(radius: int):
    from skimage.morphology import disk

    # 'sequence' decomposes the disk into small footprints (same result, faster opening); building
    # the decomposition costs more than an opening of a small field, hence the cache.
    return disk(radius, decomposition="sequence")


def _granularity(u: np.ndarray, steps: int, size: int, background: int) -> list[float]:
    from skimage.measure import block_reduce
    from skimage.morphology import opening

    # Integer block averaging (CellProfiler subsamples too): cheap and exact on every size.
    k = max(1, int(np.ceil(max(u.shape) / size)))
    img = block_reduce(u, (k, k), np.mean) if k > 1 else u
    bg_radius = max(1, int(round(background / k)))
    img = img - opening(img, _disk(bg_radius))
    start = float(img.mean())
    out: list[float] = []
    prev = start
    for r in range(1, steps + 1):
        cur = float(opening(img, _disk(r)).mean())
        out.append(100.0 * (prev - cur) / start if start > 0 else 0.0)
        prev = cur
    return out


def _segment(nuc: np.ndarray, min_size: int) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    sm = gaussian(nuc, sigma=1.0, preserve_range=True)
    if float(sm.max()) <= float(sm.min()):
        return np.zeros(nuc.shape, dtype=np.int32)
    mask = sm > threshold_otsu(sm)
    mask = remove_small_objects(mask, max_size=max(0, min_size - 1))
    if not mask.any():
        return np.zeros(nuc.shape, dtype=np.int32)
    dist = ndi.distance_transform_edt(mask)
    coarse, _ = ndi.label(mask)
    # min_distance ~ a small nucleus radius: splits touching nuclei without shattering big ones
    peaks = peak_local_max(dist, min_distance=max(2, int(np.sqrt(min_size))), labels=coarse, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak (tiny or flat) keep their own label so no object is lost
    missing = np.setdiff1d(np.unique(coarse[mask]), np.unique(coarse[markers > 0]))
    for k, lab in enumerate(missing, start=len(peaks) + 1):
        markers[coarse == lab] = k
    return watershed(-dist, markers, mask=mask).astype(np.int32)


def _objects(img: np.ndarray, nuc_idx: int, min_size: int) -> list[float]:
    from skimage.measure import regionprops_table

    labels = _segment(img[nuc_idx], min_size)
    n_ch = img.shape[0]
    n_meas = len(OBJECT_MEASURES) + n_ch
    if labels.max() == 0:
        return [0.0, 0.0] + [0.0] * (2 * n_meas)
    props = regionprops_table(labels, intensity_image=np.moveaxis(img, 0, -1),
                              properties=("area", "eccentricity", "solidity", "intensity_mean"))
    cols = [np.asarray(props["area"], float), np.asarray(props["eccentricity"], float),
            np.asarray(props["solidity"], float)]
    cols += [np.asarray(props[f"intensity_mean-{k}"], float) for k in range(n_ch)]
    out = [float(labels.max()), float((labels > 0).mean())]
    for v in cols:
        out += [float(v.mean()), float(v.std())]
    return out


class HandcraftedFeaturizer:
    """CellProfiler-style whole-field features (see the module docstring).

    Parameters
    ----------
    channels
        Channel names of the data, in order.
    nuclear_channel
        Name of the channel segmented into nuclei (default ``"DNA"`` / Hoechst / DAPI if present,
        else the first channel).
    intensity
        ``"normalized"`` (default) or ``"raw"`` (see the module docstring).
    distances
        GLCM distances in pixels (texture scales).
    levels
        Grey levels of the GLCM quantization.
    granularity_steps, granularity_size, granularity_background
        Spectrum length, maximum side after subsampling, background disk radius (px at full size).
    min_nucleus_area
        Objects smaller than this (px) are dropped before measuring.
    normalizer
        The plate's ``IntensityNormalizer`` for ``"normalized"`` (``None``: fitted by the engine).

    Raises
    ------
    ConfigError
        Unknown ``intensity``, unknown nuclear channel, no channels or bad sizes.
    """

    prefix = "HC_"

    def __init__(self, channels: Sequence[str], *, nuclear_channel: str | None = None,
                 intensity: str = "normalized", distances: Sequence[int] = (1, 3, 5), levels: int = 32,
                 granularity_steps: int = 8, granularity_size: int = 256, granularity_background: int = 40,
                 min_nucleus_area: int = 20, normalizer: Any = None) -> None:
        self.channels = [str(c) for c in channels]
        if not self.channels:
            raise ConfigError("handcrafted: the data has no channels.")
        if intensity not in ("normalized", "raw"):
            raise ConfigError(f"--intensity {intensity!r}: choose 'normalized' or 'raw'.")
        if nuclear_channel is None:
            nuclear_channel = next((c for c in NUCLEAR_NAMES if c in self.channels), self.channels[0])
        if nuclear_channel not in self.channels:
            raise ConfigError(f"--nuclear-channel {nuclear_channel!r} is not a channel of the data "
                              f"({self.channels}); give one of those names.")
        distances = [int(d) for d in distances]
        if not distances or min(distances) < 1:
            raise ConfigError(f"--glcm-distances {distances}: give positive pixel distances, e.g. 1,3,5.")
        if not 2 <= int(levels) <= 256:
            raise ConfigError(f"levels={levels}: the GLCM needs 2..256 grey levels.")
        if int(granularity_steps) < 1 or int(granularity_size) < 8:
            raise ConfigError("granularity_steps must be >= 1 and granularity_size >= 8 px.")
        self.nuclear_channel = nuclear_channel
        self.intensity = intensity
        self.distances = distances
        self.levels = int(levels)
        self.granularity_steps = int(granularity_steps)
        self.granularity_size = int(granularity_size)
        self.granularity_background = int(granularity_background)
        self.min_nucleus_area = int(min_nucleus_area)
        self.resolution = None  # whole fields
        self.normalizer = RawIntensities(self.channels) if intensity == "raw" else normalizer
        self.labels = feature_labels(self.channels, distances=self.distances,
                                     granularity_steps=self.granularity_steps)
        self.n_features = len(self.labels)

    def identity(self) -> dict:
        """Options and the feature names (column ``HC_k`` = ``feature_labels[k]``)."""
        return {"name": "handcrafted", "prefix": self.prefix, "n_features": self.n_features,
                "channels": self.channels, "resolution": None, "intensity": self.intensity,
                "nuclear_channel": self.nuclear_channel, "glcm_distances": self.distances,
                "glcm_levels": self.levels, "granularity_steps": self.granularity_steps,
                "granularity_size": self.granularity_size,
                "granularity_background": self.granularity_background,
                "min_nucleus_area": self.min_nucleus_area, "feature_labels": self.labels}

    def features(self, img: np.ndarray) -> np.ndarray:
        """Feature vector of one field ``[C, H, W]`` (engine values: normalized or raw).

        Returns
        -------
        numpy.ndarray
            float32 ``[n_features]``.

        Raises
        ------
        ConfigError
            If the image's channel count is not ``len(channels)``.
        """
        img = np.asarray(img, dtype=np.float64)
        if img.ndim != 3 or img.shape[0] != len(self.channels):
            raise ConfigError(f"handcrafted: expected a field [{len(self.channels)}, H, W] for channels "
                              f"{self.channels}, got shape {list(img.shape)}.")
        raw = self.intensity == "raw"
        x = img if raw else (img + 1.0) * 0.5  # normalized [-1, 1] -> [0, 1]
        units = [_unit(x[c], raw) for c in range(x.shape[0])]
        out: list[float] = []
        for c in range(x.shape[0]):
            out += _intensity(x[c])
        for u in units:
            out += _texture(u, self.distances, self.levels)
        for u in units:
            out += _granularity(u, self.granularity_steps, self.granularity_size, self.granularity_background)
        flat = x.reshape(x.shape[0], -1)
        sd = flat.std(axis=1)
        for i in range(x.shape[0]):
            for j in range(i + 1, x.shape[0]):
                if sd[i] > 0 and sd[j] > 0:
                    out.append(float(np.corrcoef(flat[i], flat[j])[0, 1]))
                else:
                    out.append(0.0)
        out += _objects(x, self.channels.index(self.nuclear_channel), self.min_nucleus_area)
        vec = np.asarray(out, dtype=np.float32)
        assert vec.shape == (self.n_features,), (vec.shape, self.n_features)
        return vec

    def __call__(self, batch: "torch.Tensor") -> "torch.Tensor":
        """Features ``[N, n_features]`` of ``batch [N, C, H, W]`` (each image alone)."""
        import torch

        arr = batch.detach().cpu().numpy()
        return torch.from_numpy(np.stack([self.features(a) for a in arr]))
