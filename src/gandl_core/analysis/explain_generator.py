"""The generator's view of the On-perturbation axis: fakes that move from C- to C+ (illustrations).

GAN-DL trains a generator G beside the discriminator D whose features are the embedding, so it can
draw what the On axis responds to. The pieces:

**Where a single image lands on the axis.** The axis of ``gandl-core project`` lives in *profile
space*: site features (D's features averaged over the tiles of a field) -> the median over a
well's sites -> each plate standardized against its own control wells -> the linear SVM's On score.
Every step after the median is affine for a given plate, so the On score of one feature vector
``x`` as if it were the profile of a well on plate ``p`` is ``x @ weights[p] + offsets[p]``
(:class:`FeatureAxis`). A fake has no plate: it gets the **mean over the plates** of those scores
(the mean of affine maps is affine: :attr:`FeatureAxis.pooled_weights`). A fake is one tile and
is scored as a one-tile, one-site well, so fake scores spread wider than well scores (a well's
median over sites and the mean over tiles average noise away).

:func:`profile_axis` recovers the axis in profile space from the ``project`` outputs (``axes.csv``
has the unit On direction; the affine scale comes from regressing the ``OnScore`` column of
``scores.parquet`` on it). :func:`feature_axis` recovers each plate's normalization by regressing
each profile feature on the same feature of the aggregated embeddings, plate by plate (exact for
``standardize``, ``mad`` and ``none``; sphered profiles are refused, their map mixes features).

**Fakes along the axis** (:func:`generator_strip`), method ``"direction"``: sample ``n_fit``
styles ``w = mapping(z)``, render G(w) (EMA generator, fixed noise), score D's features of each
fake, fit a ridge regression ``score ~ w`` and take its direction in W. Through each start
``w0`` (a sampled style) the line along that direction is searched for the shift whose fake
scores each target (17 samples within ``max_shift`` standard deviations of the sampled styles
along the line, then three rounds of interpolation on the measured scores), so w stays near the
mapping's distribution and the table holds the *measured* score of every fake next to its
target; a target the line does not reach gets the line's end. Method ``"optimize"``: from each start,
gradient steps in W towards each target score with a penalty ``lam * |w - w0|^2 / var(w)`` that
keeps w near the start (and so near the mapping's distribution).

These strips are **illustrations, not measurements**: they show what the generator associates
with the axis after the training it had, in images it invented.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import CheckpointError, ConfigError, DataError
from ..featurizers.base import check_feature_kind
from ..tables import feature_columns

__all__ = ["ProfileAxis", "FeatureAxis", "Strip", "profile_axis", "feature_axis", "load_feature_axis",
           "generator_strip", "strip_from_networks", "ILLUSTRATION_NOTE", "METHODS"]

ILLUSTRATION_NOTE = ("Illustration, not a measurement: images invented by the run's generator, moved along the On "
                     "axis; the scores are those of D's features of each fake mapped onto the axis.")
METHODS = ("direction", "optimize")
_KEYS = ["Metadata_Plate", "Metadata_Well"]


@dataclass
class ProfileAxis:
    """The On axis in profile space: ``on = (profiles[features] @ coef - center) / halfwidth``."""

    features: list[str]
    coef: np.ndarray
    center: float
    halfwidth: float

    @classmethod
    def from_projection(cls, proj: Any) -> "ProfileAxis":
        """From a fitted :class:`~gandl_core.analysis.projection.Projection` (fitted on a table)."""
        names = getattr(proj, "feature_names_in_", None)
        if names is None:
            raise DataError("the Projection was fitted on an array: fit it with fit_table so its features are named.")
        return cls(list(names), np.asarray(proj.coef_, np.float64), float(proj.on_center_), float(proj.on_halfwidth_))

    def score(self, profiles: pd.DataFrame) -> np.ndarray:
        """On score of every row of a profile table."""
        return (profiles[self.features].to_numpy(np.float64) @ self.coef - self.center) / self.halfwidth


@dataclass
class FeatureAxis:
    """On score of raw feature vectors (one image's D features), per plate and pooled over plates.

    ``score_p(x) = x @ weights[p] + offsets[p]`` is the On score a well on plate ``p`` whose profile
    came from features ``x`` would get; :meth:`score` without a plate uses the mean over plates.
    ``features`` are every feature column of the embeddings in their table order (= the order of
    the network's outputs); features the projection did not use have weight 0.
    """

    features: list[str]
    plates: list[str]
    weights: np.ndarray  # [P, F]
    offsets: np.ndarray  # [P]
    info: dict = field(default_factory=dict)

    @property
    def pooled_weights(self) -> np.ndarray:
        return self.weights.mean(axis=0)

    @property
    def pooled_offset(self) -> float:
        return float(self.offsets.mean())

    def score(self, X: Any, plate: str | None = None) -> np.ndarray:
        """On scores of ``X`` [N, F] (array, or a table with the feature columns)."""
        if isinstance(X, pd.DataFrame):
            X = X[self.features].to_numpy(np.float64)
        X = np.asarray(X, dtype=np.float64)
        if plate is None:
            return X @ self.pooled_weights + self.pooled_offset
        if str(plate) not in self.plates:
            raise DataError(f"plate {plate!r} is not one of the axis's plates {self.plates[:6]}.")
        p = self.plates.index(str(plate))
        return X @ self.weights[p] + self.offsets[p]


def profile_axis(scores: pd.DataFrame, profiles: pd.DataFrame, axes: pd.DataFrame, *,
                 score_col: str | None = None) -> ProfileAxis:
    """The On axis of a ``gandl-core project`` run, from its ``axes.csv`` and ``scores.parquet``.

    ``axes`` gives the unit direction (columns ``feature`` and ``on``); the centre and half-width
    come from a least-squares fit of the scores on ``profiles @ direction`` over the wells, which is
    exact when ``profiles`` are the table the projection was fitted on.

    Raises
    ------
    DataError
        Missing columns or features, too few matching wells, or scores that are not an affine
        function of the profiles (another profile table than the one projected).
    """
    from .explain import score_column

    scores, col = score_column(scores, score_col)
    if not {"feature", "on"} <= set(axes.columns):
        raise DataError(f"the axes table needs columns 'feature' and 'on' (axes.csv of 'gandl-core project'); it has "
                        f"{list(axes.columns)}.")
    feats = axes["feature"].astype(str).tolist()
    missing = [f for f in feats if f not in profiles.columns]
    if missing:
        raise DataError(f"the profile table lacks {len(missing)} feature(s) of the projection, e.g. {missing[:3]}: "
                        "give the profiles that 'gandl-core project' was run on.")
    both = profiles.merge(scores[_KEYS + [col]], on=_KEYS, how="inner", suffixes=("", "_score"))
    raw = both[feats].to_numpy(np.float64) @ axes["on"].to_numpy(np.float64)
    on = both[col].to_numpy(np.float64)
    ok = np.isfinite(raw) & np.isfinite(on)
    if ok.sum() < 3 or np.ptp(raw[ok]) == 0:
        raise DataError(f"only {int(ok.sum())} well(s) match between the profiles and the scores (by plate and well): "
                        "give the profiles the projection was fitted on.")
    slope, icpt = np.polyfit(raw[ok], on[ok], 1)
    resid = on[ok] - (slope * raw[ok] + icpt)
    if np.abs(resid).max() > 1e-3 * max(1.0, np.abs(on[ok]).max()) or slope <= 0:
        raise DataError("the scores are not the projection of these profiles (largest misfit "
                        f"{np.abs(resid).max():.3g}): give the profile table that 'gandl-core project' was run on.")
    return ProfileAxis(feats, axes["on"].to_numpy(np.float64), float(-icpt / slope), float(1.0 / slope))


def _plate_affine(x: np.ndarray, z: np.ndarray, plate: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``z = a + b x`` over the wells of one plate (least squares), checked to be exact."""
    if len(x) < 2:
        raise DataError(f"plate {plate!r} has {len(x)} well(s) in both tables; need at least 2 to recover its "
                        "normalization.")
    mx, mz = np.nanmean(x, axis=0), np.nanmean(z, axis=0)
    dx, dz = x - mx, z - mz
    vx = np.nansum(dx * dx, axis=0)
    b = np.where(vx > 0, np.nansum(dx * dz, axis=0) / np.where(vx > 0, vx, 1.0), 0.0)
    a = mz - b * mx
    misfit = np.nanmax(np.abs(z - (a + b * x)), axis=0)
    scale = np.maximum(np.nanstd(z, axis=0), 1e-6)
    bad = misfit > 1e-3 * np.maximum(scale, 1.0)
    if bad.any():
        raise DataError(f"plate {plate!r}: {int(bad.sum())} profile feature(s) are not a per-feature affine "
                        "function of the aggregated embeddings (sphered profiles, or profiles of another "
                        "embedding?). Make profiles without --sphere from these embeddings.")
    return a, b


def feature_axis(axis: ProfileAxis, profiles: pd.DataFrame, embeddings: pd.DataFrame, *,
                 aggregate: str = "median") -> FeatureAxis:
    """Compose each plate's normalization with the On axis: On score of raw (site/tile) features.

    Parameters
    ----------
    axis
        The On axis in profile space (:func:`profile_axis` or :meth:`ProfileAxis.from_projection`).
    profiles
        The profile table the axis was fitted on (``gandl-core profile`` output, not sphered).
    embeddings
        The site table those profiles were made from (``gandl-core embed`` output).
    aggregate
        How sites were aggregated into wells (``"median"``, ``"mean"``, or ``"none"`` when the
        profiles are site rows); recorded in the profile table's metadata as ``aggregate``.

    Returns
    -------
    FeatureAxis

    Raises
    ------
    DataError
        Features missing from the embeddings, plates without enough wells, or profiles that are not
        a per-plate affine normalization of the embeddings.
    """
    from .profiles import aggregate as agg

    # The embeddings' own column order is the order of the network's outputs (GAN_000, GAN_001, ..):
    # the axis's weights are laid out in it (zero for features the projection did not use), so an
    # array of D features can be scored directly.
    order = feature_columns(embeddings)
    missing = [f for f in axis.features if f not in embeddings.columns]
    if missing:
        raise DataError(f"the embeddings lack {len(missing)} of the axis's features, e.g. {missing[:3]}: give the "
                        "embeddings the profiles were made from.")
    wells = embeddings if aggregate == "none" else agg(embeddings, features=axis.features, method=aggregate)
    keys = _KEYS + (["Metadata_Site"] if aggregate == "none" and "Metadata_Site" in profiles.columns else [])
    both = wells[keys + axis.features].merge(profiles[keys + axis.features], on=keys, suffixes=("_x", "_z"))
    if both.empty:
        raise DataError("no well of the embeddings matches a profile row by plate and well: give the embeddings the "
                        "profiles were made from.")
    xs = [f + "_x" for f in axis.features]
    zs = [f + "_z" for f in axis.features]
    slot = np.array([order.index(f) for f in axis.features])
    plates, W, b = [], [], []
    for plate, rows in both.groupby("Metadata_Plate", sort=True):
        a, s = _plate_affine(rows[xs].to_numpy(np.float64), rows[zs].to_numpy(np.float64), str(plate))
        plates.append(str(plate))
        w = np.zeros(len(order))
        w[slot] = s * axis.coef / axis.halfwidth
        W.append(w)
        b.append(float((a @ axis.coef - axis.center) / axis.halfwidth))
    ident = embeddings.attrs.get("gandl", {}).get("featurizer", {}) or {}
    info = {"wells": int(len(both)), "aggregate": aggregate,
            "source": {"featurizer": ident.get("name"), "checkpoint": ident.get("checkpoint"),
                       "features": ident.get("features", "final")}}  # tables from before the option: final
    return FeatureAxis(order, plates, np.asarray(W), np.asarray(b), info)


@dataclass
class Strip:
    """Generated images along the On axis (illustrations).

    Attributes
    ----------
    images
        float32 ``[steps, starts, C, H, W]`` as G draws them (normalized intensities, about [-1, 1]);
        position ``k`` is the k-th target from the C- end.
    table
        One row per image (position-major): ``position``, ``replicate`` (the start), ``target``,
        ``score`` (measured On score of the fake), ``shift`` (distance from the start in W:
        ``direction``, signed, in standard deviations of the sampled styles along the line;
        ``optimize``, the root-mean-square over W's dimensions in their standard deviations).
    channels
        Channel names.
    normalizer
        The checkpoint's intensity normalizer (:meth:`raw_images` undoes it).
    info
        Method, sample size, fit quality (``r2_cv``), fake score distribution, the note.
    """

    images: np.ndarray
    table: pd.DataFrame
    channels: list[str]
    normalizer: Any
    info: dict = field(default_factory=dict)

    def raw_images(self) -> np.ndarray:
        """The images in the plate's raw intensity units: clipped to [-1, 1] (the range of the
        normalized real images G learned from), then the normalizer undone."""
        n, r = self.images.shape[:2]
        flat = np.clip(self.images.reshape(n * r, *self.images.shape[2:]), -1.0, 1.0)
        return self.normalizer.inverse(flat).reshape(self.images.shape)


def _load_gd(checkpoint: str | os.PathLike, device: str) -> tuple[Any, Any, Any, dict]:
    """EMA generator, discriminator, normalizer and info of a training checkpoint."""
    from ..checkpoint import build_generator, load_checkpoint, load_discriminator

    D, normalizer, info = load_discriminator(checkpoint, device=device)
    state = load_checkpoint(checkpoint)
    key = "G_ema" if "G_ema" in state else "G"
    if key not in state:
        raise CheckpointError(f"{checkpoint}: the checkpoint has no generator ('G_ema' or 'G'); the generator's view "
                              "needs a GAN-DL training checkpoint.")
    G = build_generator(state["config"])
    try:
        G.load_state_dict(state[key])
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint}: the generator weights do not match the architecture in its config "
                              f"({str(exc).splitlines()[0]}).") from exc
    return G.eval().requires_grad_(False).to(device), D.eval().requires_grad_(False), normalizer, info


def _render(G: Any, w: "Any") -> "Any":
    return G.synthesis(w[:, None, :].expand(-1, G.num_ws, -1), noise_mode="const")


def _score_fakes(G: Any, D: Any, axis: FeatureAxis, w: "Any", batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, C, H, W] (numpy) and On scores of the fakes of styles ``w`` (no grad)."""
    import torch

    imgs, scores = [], []
    with torch.no_grad():
        for wb in w.split(batch):
            img = _render(G, wb)
            imgs.append(img.float().cpu().numpy())
            scores.append(axis.score(D.features(img).float().cpu().numpy()))
    return np.concatenate(imgs), np.concatenate(scores)


class _Readout:
    """``D`` whose :meth:`features` gives the readout the embeddings were made with (final or multiscale)."""

    def __init__(self, D: Any, kind: str) -> None:
        self.D, self.kind = D, check_feature_kind(kind)
        self.feature_dim = int(D.feature_width(self.kind))

    def features(self, img: Any) -> Any:
        return self.D.features(img, kind=self.kind)


def _as_readout(D: Any, axis: FeatureAxis) -> Any:
    """A discriminator (anything with ``feature_width``) reading out what the axis's embeddings used."""
    if isinstance(D, _Readout) or not hasattr(D, "feature_width"):
        return D  # already wrapped, or a stand-in whose features() is the readout
    return _Readout(D, (axis.info.get("source") or {}).get("features") or "final")


def _check_axis(axis: FeatureAxis, D: Any, info: dict) -> None:
    if len(axis.features) != int(D.feature_dim):
        raise CheckpointError(f"the axis has {len(axis.features)} features but the checkpoint's discriminator gives "
                              f"{int(D.feature_dim)}: use the checkpoint the embeddings were made with.")
    want = ((axis.info.get("source") or {}).get("checkpoint") or {}).get("sha256")
    if want and info.get("sha256") and want != info["sha256"]:
        raise CheckpointError(f"the embeddings were made with another checkpoint (sha256 {want[:12]}...) than "
                              f"{info.get('path')} ({info['sha256'][:12]}...): the generator's fakes would be "
                              "scored by a different D. Give the checkpoint named in the embeddings' metadata.")


def _fit_direction(w: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Ridge fit ``s ~ w``: coefficients, intercept and the leave-one-out R² of the chosen fit."""
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=np.logspace(-3, 4, 15)).fit(w, s)
    var = float(np.var(s))
    r2 = 1.0 + float(model.best_score_) / var if var > 0 else float("nan")  # best_score_ = -LOO MSE
    return np.asarray(model.coef_, np.float64), float(model.intercept_), r2


def _direction_styles(G: Any, D: Any, axis: FeatureAxis, w0: np.ndarray, unit: np.ndarray, sd_along: float,
                      targets: np.ndarray, max_shift: float, batch: int, grid: int = 17,
                      refine: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Styles [steps, starts, w_dim] on the line through each start along ``unit`` whose fakes score
    the targets, and their shifts (in sd of the sampled styles along the line).

    Each start's line is sampled at ``grid`` shifts in [-max_shift, max_shift] and its fakes scored;
    each target's shift is read off by linear interpolation of shift against score (the scores made
    monotone with a running maximum, i.e. the first crossing), the fakes there are scored and added
    to the samples, ``refine`` times (regula falsi). Targets outside what a line reaches get its end.
    """
    import torch

    def scores(lams: np.ndarray) -> np.ndarray:  # lams [starts, k] -> scores [starts, k]
        line = w0[:, None, :] + (lams * sd_along)[..., None] * unit[None, None, :]
        flat = torch.as_tensor(line.reshape(-1, line.shape[-1]), dtype=torch.float32)
        return _score_fakes(G, D, axis, flat, batch)[1].reshape(lams.shape)

    lam = np.tile(np.linspace(-max_shift, max_shift, int(grid)), (len(w0), 1))
    val = scores(lam)
    shift = np.empty((len(w0), len(targets)))
    for it in range(int(refine) + 1):
        for r in range(len(w0)):
            order = np.argsort(lam[r], kind="stable")
            mono = np.maximum.accumulate(val[r, order])
            shift[r] = np.interp(targets, mono, lam[r, order])  # np.interp clips to the line's reach
        if it < refine:
            lam, val = np.concatenate([lam, shift], axis=1), np.concatenate([val, scores(shift)], axis=1)
    ws = w0[None] + (shift.T * sd_along)[..., None] * unit[None, None]
    return ws, shift.T


def _optimize_styles(G: Any, D: Any, axis: FeatureAxis, w0: np.ndarray, targets: np.ndarray, w_sd: float,
                     iters: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Styles [steps, starts, w_dim] reached by gradient steps towards each target, warm-started step to step."""
    import torch

    weights = torch.as_tensor(axis.pooled_weights, dtype=torch.float32)
    start = torch.as_tensor(w0, dtype=torch.float32)
    w = start.clone().requires_grad_(True)
    out = []
    for t in targets:
        opt = torch.optim.Adam([w], lr=0.05 * w_sd)
        for _ in range(int(iters)):
            opt.zero_grad()
            score = D.features(_render(G, w)) @ weights + axis.pooled_offset
            loss = ((score - float(t)) ** 2).mean() + lam * ((w - start) ** 2).sum(1).mean() / (w_sd**2 * w.shape[1])
            loss.backward()
            opt.step()
        out.append(w.detach().clone().numpy())
    ws = np.stack(out)
    shift = np.linalg.norm(ws - w0[None], axis=2) / (w_sd * np.sqrt(w0.shape[1]))
    return ws, shift


def _check_options(method: str, starts: int, steps: int, n_fit: int, span: Sequence[float] | str) -> None:
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: choose one of {', '.join(METHODS)}.")
    if int(starts) < 1 or int(steps) < 2 or int(n_fit) < 16:
        raise ConfigError(f"--starts {starts} / --steps {steps} / n_fit {n_fit}: need >= 1 start, >= 2 steps and "
                          ">= 16 fakes to fit on.")
    if isinstance(span, str):
        if span != "auto":
            raise ConfigError(f"--span {span!r}: give two scores (e.g. -1 1) or 'auto'.")
        return
    lo, hi = (float(v) for v in span)
    if not lo < hi:
        raise ConfigError(f"--span {lo} {hi}: the first target must be below the last (C- end first).")


def generator_strip(checkpoint: str | os.PathLike, axis: FeatureAxis, *, starts: int = 4, steps: int = 7,
                    span: Sequence[float] | str = (-1.0, 1.0), method: str = "direction", n_fit: int = 1024,
                    seed: int = 0, max_shift: float = 4.0, iters: int = 30, lam: float = 0.1,
                    batch: int = 64, device: str = "cpu") -> Strip:
    """Fakes of the run's generator that move along the On axis, ``steps`` targets for ``starts`` starts.

    Parameters
    ----------
    checkpoint
        Training checkpoint (or run folder) whose D made the embeddings behind ``axis``.
    axis
        :func:`feature_axis` of the projection.
    starts, steps
        Strips (random starting styles) and images per strip.
    span
        First and last target On score (default the C- mean -1 to the C+ mean +1), or ``"auto"``:
        the 10th to the 90th percentile of the sampled fakes' scores (for fakes that do not reach
        the control levels).
    method
        ``"direction"`` (move along a direction in W fitted to the scores of ``n_fit`` fakes) or
        ``"optimize"`` (gradient steps in W towards each target, penalised by the distance to the start).
    n_fit
        Fakes sampled to fit the direction (and to pick starts and report the fakes' score range).
    seed
        Seed of the sampled styles (same seed, same strips).
    max_shift
        ``"direction"``: largest move along the direction, in standard deviations of the sampled styles.
    iters, lam
        ``"optimize"``: gradient steps per target and the weight of the distance penalty.
    batch, device
        Rendering batch size and torch device.

    Returns
    -------
    Strip
        ``info["note"]`` says these are illustrations; ``table["score"]`` is each fake's measured score.

    Raises
    ------
    ConfigError
        Bad method, counts or span.
    CheckpointError
        The checkpoint lacks G or D, or is not the one the embeddings were made with.
    """
    _check_options(method, starts, steps, n_fit, span)
    G, D, normalizer, info = _load_gd(checkpoint, device)
    D = _as_readout(D, axis)
    _check_axis(axis, D, info)
    channels = list(info.get("channel_names") or normalizer.channels or [])
    strip = strip_from_networks(G, D, normalizer, axis, channels=channels, starts=starts, steps=steps, span=span,
                                method=method, n_fit=n_fit, seed=seed, max_shift=max_shift, iters=iters, lam=lam,
                                batch=batch, device=device)
    strip.info.update({"checkpoint": info.get("path"), "kimg": info.get("kimg")})
    return strip


def strip_from_networks(G: Any, D: Any, normalizer: Any, axis: FeatureAxis, *, channels: Sequence[str],
                        starts: int = 4, steps: int = 7, span: Sequence[float] | str = (-1.0, 1.0),
                        method: str = "direction", n_fit: int = 1024, seed: int = 0, max_shift: float = 4.0,
                        iters: int = 30, lam: float = 0.1, batch: int = 64, device: str = "cpu") -> Strip:
    """:func:`generator_strip` on networks in memory (any ``G`` with ``z_dim``, ``num_ws``, ``mapping(z)``
    and ``synthesis(ws, noise_mode=)``, any ``D`` with ``features``); the options are the same.

    Raises
    ------
    ConfigError
        Bad method, counts or span.
    """
    import torch

    _check_options(method, starts, steps, n_fit, span)
    D = _as_readout(D, axis)
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(int(n_fit), G.z_dim, generator=gen)
    with torch.no_grad():
        w = torch.cat([G.mapping(zb.to(device)) for zb in z.split(int(batch))]).float().cpu()
    _, s = _score_fakes(G, D, axis, w, int(batch))
    lo, hi = (float(np.quantile(s, 0.1)), float(np.quantile(s, 0.9))) if span == "auto" else (float(v) for v in span)
    W = w.numpy().astype(np.float64)
    beta, icpt, r2 = _fit_direction(W, s)
    unit = beta / max(float(np.linalg.norm(beta)), 1e-12)
    sd_along = float(np.std(W @ unit)) or 1.0
    targets = np.linspace(lo, hi, int(steps))
    w0 = W[: int(starts)]
    if method == "direction":
        ws, shift = _direction_styles(G, D, axis, w0, unit, sd_along, targets, float(max_shift), int(batch))
    else:
        w_sd = float(W.std(axis=0).mean()) or 1.0
        ws, shift = _optimize_styles(G, D, axis, w0.astype(np.float32), targets, w_sd, iters, lam)
    flat = torch.as_tensor(ws.reshape(-1, ws.shape[-1]), dtype=torch.float32)
    imgs, measured = _score_fakes(G, D, axis, flat, int(batch))
    k, r = np.meshgrid(np.arange(len(targets)), np.arange(int(starts)), indexing="ij")
    table = pd.DataFrame({"position": k.ravel(), "replicate": r.ravel(), "target": np.repeat(targets, int(starts)),
                          "score": measured, "shift": np.asarray(shift).ravel()})
    stats = {"method": method, "n_fit": int(n_fit), "seed": int(seed), "r2_cv": r2,
             "fake_score_q05": float(np.quantile(s, 0.05)), "fake_score_median": float(np.median(s)),
             "fake_score_q95": float(np.quantile(s, 0.95)), "span": [lo, hi], "max_shift": float(max_shift),
             "note": ILLUSTRATION_NOTE}
    images = imgs.reshape(len(targets), int(starts), *imgs.shape[1:]).astype(np.float32)
    return Strip(images, table, list(channels), normalizer, stats)


def _recorded(path: str | None, what: str, option: str, via: str) -> str:
    if not path:
        raise DataError(f"{via} does not record which {what} it was made from: give {option}.")
    if not os.path.exists(path):
        raise DataError(f"{via} was made from {path}, which no longer exists: give {option}.")
    return path


def load_feature_axis(project: str | os.PathLike, *, profiles: str | os.PathLike | None = None,
                      embeddings: str | os.PathLike | None = None) -> tuple[FeatureAxis, str | None]:
    """The :class:`FeatureAxis` of a ``gandl-core project`` folder, following the files' provenance.

    ``PROJECT/scores.parquet`` records the profile table it was fitted on, which records the
    embeddings it was made from, which record the checkpoint of their discriminator; each link can
    be overridden.

    Parameters
    ----------
    project
        Output folder of ``gandl-core project`` (``scores.parquet`` and ``axes.csv``), or its
        ``scores.parquet``.
    profiles, embeddings
        Override the recorded profile table / embeddings.

    Returns
    -------
    (FeatureAxis, checkpoint)
        ``checkpoint`` is the path recorded in the embeddings (``None`` when they name none).

    Raises
    ------
    DataError
        Missing files or links, sphered profiles, tables that do not match.
    """
    from pathlib import Path

    from ..tables import read_table

    p = Path(project)
    scores_path = p / "scores.parquet" if p.is_dir() else p
    axes_path = scores_path.with_name("axes.csv")
    for f in (scores_path, axes_path):
        if not f.is_file():
            raise DataError(f"{f}: not found; give the -o folder of 'gandl-core project' (scores.parquet + axes.csv).")
    scores = read_table(scores_path)
    smeta = scores.attrs.get("gandl", {})
    prof_path = str(profiles) if profiles else _recorded(smeta.get("source"), "profile table", "--profiles",
                                                          str(scores_path))
    prof = read_table(prof_path)
    pmeta = prof.attrs.get("gandl", {})
    if pmeta.get("sphere"):
        raise DataError(f"{prof_path} was sphered (--sphere): its features mix, so one image cannot be placed on the "
                        "axis. Make profiles without --sphere, project them, and explain that projection.")
    emb_path = str(embeddings) if embeddings else _recorded(pmeta.get("source"), "embeddings", "--embeddings",
                                                             prof_path)
    emb = read_table(emb_path)
    axis = profile_axis(scores, prof, read_table(axes_path))
    fax = feature_axis(axis, prof, emb, aggregate=str(pmeta.get("aggregate") or "median"))
    ckpt = ((fax.info.get("source") or {}).get("checkpoint") or {}).get("path")
    fax.info.update({"scores": str(scores_path), "profiles": prof_path, "embeddings": emb_path})
    return fax, ckpt
