"""Dose-response along a 1-d activity score (usually the On-perturbation score).

Three steps, each a plain function on a table:

* :func:`dose_response` -- per compound x concentration: n, mean, sd, sem of the score.
* :func:`fit_hill` / :func:`fit_all` -- a 4-parameter logistic (Hill) curve per compound, fitted on
  the well-level scores by bounded least squares (:func:`scipy.optimize.least_squares`)::

      y(c) = bottom + (top - bottom) / (1 + (EC50 / c) ** hill)

  ``bottom`` is the response at low dose, ``top`` at high dose; ``hill > 0`` always, so a falling
  curve has ``top < bottom`` (this keeps the fit identifiable). EC50 is fitted as ``log10(EC50)``
  (uM if the doses are uM), bounded to two decades around the tested range, with 95% confidence
  intervals (below).
* :func:`hit_list` -- ranks the fits and flags hits with an explicit rule (kept in the output).

**Efficacy** is ``(top - bottom) / window`` with ``window = 2``: the distance between the negative
(-1) and positive (+1) control means on the On score. Efficacy 1 means the compound moves wells
the whole way from C- to C+; negative efficacy moves them away from C+.

**Status** of a fit (never an exception for a bad compound), checked in this order:

``too-few-doses`` / ``single-dose``
    Fewer than 3 distinct positive doses (a 4-parameter curve needs at least 3) or fewer than 5
    wells; means only.
``inactive``
    The response never leaves the negative controls' noise: no dose's mean score differs from the
    negative controls' mean by ``noise_k`` (default 3) standard errors or more, the standard error
    of a dose mean of n wells against m control wells being ``sd_C- * sqrt(1/n + 1/m)``
    (``sd_C-``: SD of the control wells' scores). With one well per dose this is the classic "3 SD
    of the negative controls"; with replicates a dose mean is held to its own, smaller noise. Needs
    the controls' scores (``noise=``, or :func:`control_noise` in :func:`fit_all`: the out-of-fold
    control scores of ``project`` when known); without them this status is never given. No EC50 is
    reported.
``flat``
    The Hill curve is not significantly better than a constant (extra-sum-of-squares F test,
    p >= ``alpha``); EC50 and CIs are NaN.
``failed``
    The optimiser did not converge from any starting point.
``non-monotone``
    The dose means rise and fall (e.g. rescue, then toxicity at high dose): the best monotone
    (isotonic) fit of the dose means explains less than 70% of their spread. Parameters are still
    reported, but such a compound is never a hit.
``extrapolated``
    A significant, monotone curve whose EC50 lies outside the tested doses (below the lowest or
    above the highest): the compound is active, but its EC50 is an extrapolation (its CI is wide or
    open on one side), so it is not a hit under the default rule.
``ok``
    A significant, monotone curve with its EC50 inside the tested range.

A compound is **called active** when its status is ``ok`` or ``extrapolated``
(:data:`ACTIVE_STATUSES`).

**Confidence intervals** (95%): EC50 and Hill slope by profile likelihood
(:mod:`._hill_profile`: the values whose refitted curve is not significantly worse, F test with 1
and n - 4 degrees of freedom), on a grid inside the fit's bounds -- a slope's interval never goes
below 0.1 or above 10, an EC50's never beyond the two-decade margin, and a steep curve's EC50 is
pinned to the gap between its doses. Bottom, top and efficacy: Wald intervals from the covariance
(Student t, n - 4 dof), clipped to the bounds. A parameter that ends at a bound, and an EC50
interval the data leave open on one side, are named in ``message``.

**Tables** follow the profile-table contract: string columns are ``Metadata_*``
(``Metadata_Compound``, ``Metadata_Status``, ``Metadata_Message``, and in the hit list
``Metadata_Hit`` and ``Metadata_Rule``), every other column is numeric.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from .projection import resolve_score

#: Distance between the C- (-1) and C+ (+1) means on the On score.
CONTROL_WINDOW = 2.0

__all__ = ["HillFit", "hill", "fit_hill", "dose_response", "fit_all", "hit_list", "ci_table", "control_noise",
           "CONTROL_WINDOW", "STATUSES", "ACTIVE_STATUSES"]


def hill(conc: np.ndarray | float, bottom: float, top: float, ec50: float, slope: float) -> np.ndarray:
    """4-parameter logistic ``bottom + (top - bottom) / (1 + (ec50 / conc) ** slope)``.

    Parameters
    ----------
    conc
        Concentration(s), > 0 (0 gives ``bottom``).
    bottom, top, ec50, slope
        Low-dose level, high-dose level, half-effect concentration, Hill slope (> 0).

    Returns
    -------
    ndarray
        The curve at ``conc``.
    """
    c = np.asarray(conc, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        # exp/log form: stable for large slopes and tiny concentrations.
        z = slope * (np.log(ec50) - np.log(np.where(c > 0, c, np.nan)))
        y = bottom + (top - bottom) / (1.0 + np.exp(np.clip(z, -700, 700)))
    return np.where(c > 0, y, bottom)


def _hill_log(logc: np.ndarray, bottom: float, top: float, log_ec50: float, slope: float) -> np.ndarray:
    # Fitting form: log10 concentrations in, log10 EC50 as parameter (even curvature for the optimiser).
    z = slope * np.log(10.0) * (log_ec50 - logc)
    return bottom + (top - bottom) / (1.0 + np.exp(np.clip(z, -700, 700)))


def _grid_starts(x: np.ndarray, y: np.ndarray, lower: list[float], upper: list[float]) -> list[list[float]]:
    """Best (bottom, top, log EC50, slope) grid points, best first, strictly inside the bounds."""
    logs = np.linspace(x.min() - 0.5, x.max() + 0.5, 25)
    slopes = np.array([0.5, 1.0, 2.0, 4.0])
    L, S = np.meshgrid(logs, slopes, indexing="ij")
    L, S = L.ravel(), S.ravel()
    g = 1.0 / (1.0 + np.exp(np.clip(S[:, None] * np.log(10.0) * (L[:, None] - x[None, :]), -700, 700)))
    # Least squares for y = b (1 - g) + t g, per grid point (2 x 2 normal equations).
    a11, a12, a22 = ((1 - g) ** 2).sum(1), ((1 - g) * g).sum(1), (g**2).sum(1)
    r1, r2 = ((1 - g) * y).sum(1), (g * y).sum(1)
    det = a11 * a22 - a12**2
    ok = np.abs(det) > 1e-12
    b = np.where(ok, (a22 * r1 - a12 * r2) / np.where(ok, det, 1), y.mean())
    t = np.where(ok, (a11 * r2 - a12 * r1) / np.where(ok, det, 1), y.mean())
    sse = (((b[:, None] * (1 - g) + t[:, None] * g) - y[None, :]) ** 2).sum(1)
    out = []
    for i in np.argsort(sse):
        p0 = [b[i], t[i], L[i], S[i]]
        out.append([float(np.clip(v, lo + 1e-6 * (hi - lo), hi - 1e-6 * (hi - lo)))
                    for v, lo, hi in zip(p0, lower, upper)])
        if len(out) == 3:
            break
    return out


def _hill_jac(logc: np.ndarray, p: np.ndarray) -> np.ndarray:
    # Analytic Jacobian of _hill_log: exact and much cheaper than finite differences.
    bottom, top, log_ec50, slope = p
    z = np.clip(slope * np.log(10.0) * (log_ec50 - logc), -700, 700)
    g = 1.0 / (1.0 + np.exp(z))
    dg = -g * (1.0 - g) * (top - bottom) * np.log(10.0)
    return np.column_stack([1.0 - g, g, dg * slope, dg * (log_ec50 - logc)])


@dataclass
class HillFit:
    """Result of :func:`fit_hill`.

    Attributes
    ----------
    status
        One of :data:`STATUSES` (see the module docstring).
    bottom, top, ec50, hill
        Fitted parameters (NaN when not fitted). ``ec50`` in the dose unit.
    log10_ec50
        ``log10(ec50)``.
    efficacy
        ``(top - bottom) / window`` (fraction of the C- -> C+ control window; signed).
    r2
        Coefficient of determination on the well-level scores.
    p_flat
        p-value of the F test "Hill curve vs constant" (small = real dose trend).
    monotone_r2
        Fraction of the dose means' spread explained by the best monotone fit.
    max_dev_se
        Largest distance of a dose mean from the negative controls' mean, in standard errors of
        that dose mean (NaN without control noise); ``inactive`` when below ``noise_k``.
    ci
        95% intervals ``{"bottom": (lo, hi), "top": ..., "ec50": ..., "hill": ..., "efficacy": ...}``,
        clipped to the fit's bounds.
    n, n_doses, dose_min, dose_max
        Wells used, distinct doses, tested range.
    message
        Why the status is not ``ok``, and any parameter that ended at a bound (empty otherwise).
    """

    status: str
    bottom: float = float("nan")
    top: float = float("nan")
    ec50: float = float("nan")
    hill: float = float("nan")
    r2: float = float("nan")
    p_flat: float = float("nan")
    monotone_r2: float = float("nan")
    max_dev_se: float = float("nan")
    n: int = 0
    n_doses: int = 0
    dose_min: float = float("nan")
    dose_max: float = float("nan")
    window: float = CONTROL_WINDOW
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    message: str = ""

    @property
    def log10_ec50(self) -> float:
        return float(np.log10(self.ec50)) if np.isfinite(self.ec50) and self.ec50 > 0 else float("nan")

    @property
    def efficacy(self) -> float:
        return float((self.top - self.bottom) / self.window)

    @property
    def fitted(self) -> bool:
        """True when curve parameters are available (``ok``, ``extrapolated`` or ``non-monotone``)."""
        return bool(np.isfinite(self.ec50))

    @property
    def active(self) -> bool:
        """True when the status calls the compound active (:data:`ACTIVE_STATUSES`)."""
        return self.status in ACTIVE_STATUSES

    def predict(self, conc: np.ndarray | float) -> np.ndarray:
        """The fitted curve at ``conc`` (NaN everywhere when nothing was fitted).

        Parameters
        ----------
        conc
            Concentration(s) in the dose unit of the fit.

        Returns
        -------
        ndarray
        """
        c = np.asarray(conc, dtype=np.float64)
        if not self.fitted:
            return np.full(c.shape, np.nan)
        return hill(c, self.bottom, self.top, self.ec50, self.hill)

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON/CSV-ready dict (CIs as ``<param>_ci_low`` / ``<param>_ci_high``)."""
        d = asdict(self)
        ci = d.pop("ci")
        d["log10_ec50"] = self.log10_ec50
        d["efficacy"] = self.efficacy
        for name in CI_PARAMS:
            lo, hi = ci.get(name, (float("nan"), float("nan")))
            d[f"{name}_ci_low"], d[f"{name}_ci_high"] = float(lo), float(hi)
        return d


#: Every status :func:`fit_hill` can give, and the ones that call a compound active.
STATUSES = ("ok", "extrapolated", "non-monotone", "flat", "inactive", "too-few-doses", "single-dose", "failed")
ACTIVE_STATUSES = ("ok", "extrapolated")
#: Parameters with a 95% CI in the fits table.
CI_PARAMS = ("ec50", "hill", "bottom", "top", "efficacy")


def _isotonic_r2(doses: np.ndarray, means: np.ndarray, weights: np.ndarray) -> float:
    """Share of the weighted spread of dose means explained by the best monotone (either way) fit."""
    from sklearn.isotonic import IsotonicRegression

    grand = np.average(means, weights=weights)
    ss = float(np.sum(weights * (means - grand) ** 2))
    if ss <= 0:
        return 1.0
    best = np.inf
    for increasing in (True, False):
        fit = IsotonicRegression(increasing=increasing).fit(doses, means, sample_weight=weights).predict(doses)
        best = min(best, float(np.sum(weights * (means - fit) ** 2)))
    return 1.0 - best / ss


def _max_dev_se(means: np.ndarray, counts: np.ndarray, noise: Sequence[float] | None) -> float:
    """Largest |dose mean - control mean| in standard errors ``sd sqrt(1/n_dose + 1/n_controls)``;
    NaN when the noise is unknown or zero. ``noise``: (mean, sd) or (mean, sd, n_controls)."""
    if noise is None:
        return float("nan")
    center, sd = float(noise[0]), float(noise[1])
    m = float(noise[2]) if len(noise) > 2 and noise[2] else np.inf
    if not (np.isfinite(center) and np.isfinite(sd) and sd > 0):
        return float("nan")
    return float(np.max(np.abs(means - center) / (sd * np.sqrt(1.0 / counts + 1.0 / m))))


def _optimise(x: np.ndarray, y: np.ndarray, lower: list[float], upper: list[float]):
    """Bounded least squares of the Hill curve from the best grid starts: (sse, params, jacobian) or None."""
    from scipy.optimize import least_squares

    best = None
    # Start from the best point of a grid over (log EC50, slope): for fixed EC50 and slope the curve is
    # linear in (bottom, top), solved exactly, so the grid is cheap and avoids local minima; then one
    # bounded least-squares refinement (it returns its best point even at max_nfev, as on flat data).
    for p0 in _grid_starts(x, y, lower, upper)[:2]:
        try:
            res = least_squares(lambda p: _hill_log(x, *p) - y, p0, jac=lambda p: _hill_jac(x, p),
                                bounds=(lower, upper), max_nfev=200, method="trf")
        except (ValueError, np.linalg.LinAlgError):  # no usable step from this start
            continue
        if not np.all(np.isfinite(res.x)):
            continue
        sse = float(np.sum(res.fun**2))
        if best is None or sse < best[0]:
            best = (sse, res.x, res.jac)
    return best


def _intervals(x: np.ndarray, y: np.ndarray, popt: np.ndarray, sse: float, pcov: np.ndarray,
               lower: list[float], upper: list[float], window: float) -> tuple[dict[str, tuple[float, float]], str]:
    """95% intervals inside the fit bounds: profile likelihood for EC50 and slope, Wald (t, n - 4 dof,
    clipped) for bottom, top and efficacy. Returns the intervals and a note on sides left open."""
    from scipy import stats

    from ._hill_profile import profile_intervals

    n = x.size
    if n <= 4:
        return {}, ""
    prof = profile_intervals(x, y, popt, sse, lower, upper)
    lo, hi, open_l = prof["log_ec50"]
    ci: dict[str, tuple[float, float]] = {"ec50": (float(10**lo), float(10**hi)), "hill": prof["hill"][:2]}
    # A steep side left open is common (a few wells rarely bound the slope); an open EC50 is worth saying.
    opened = open_l and min(popt[2] - lower[2], upper[2] - popt[2]) > 1e-6 * (upper[2] - lower[2])
    if np.all(np.isfinite(pcov)):
        t = float(stats.t.ppf(0.975, n - 4))
        se = np.sqrt(np.clip(np.diag(pcov), 0, None))
        for i, name in ((0, "bottom"), (1, "top")):
            a, b = np.clip([popt[i] - t * se[i], popt[i] + t * se[i]], lower[i], upper[i])
            ci[name] = (float(a), float(b))
        var_eff = (pcov[0, 0] + pcov[1, 1] - 2 * pcov[0, 1]) / window**2
        eff, se_eff = (popt[1] - popt[0]) / window, float(np.sqrt(max(var_eff, 0.0)))
        ci["efficacy"] = (float(eff - t * se_eff), float(eff + t * se_eff))
    note = "the EC50's 95% CI runs to the fit's bound (the data do not close it on that side)" if opened else ""
    return ci, note


def _at_bounds(popt: np.ndarray, lower: list[float], upper: list[float]) -> str:
    names = ("bottom", "top", "log10 EC50", "hill")
    hit = [f"{names[i]} at its bound {lo if abs(v - lo) <= abs(v - hi) else hi:.3g}"
           for i, (v, lo, hi) in enumerate(zip(popt, lower, upper)) if min(v - lo, hi - v) <= 1e-6 * (hi - lo)]
    return "; ".join(hit)


def fit_hill(conc: Sequence[float] | np.ndarray, resp: Sequence[float] | np.ndarray, *, alpha: float = 0.05,
             window: float = CONTROL_WINDOW, min_monotone_r2: float = 0.7,
             noise: Sequence[float] | None = None, noise_k: float = 3.0) -> HillFit:
    """Fit a 4-parameter Hill curve to well-level responses of one compound.

    Never raises for a bad compound: flat, inactive, non-monotone, single-dose data and optimiser
    failures come back as a :class:`HillFit` with that ``status`` (module docstring, in order).

    Parameters
    ----------
    conc
        Concentration per well (> 0; zeros, negatives and NaNs are dropped -- untreated wells
        have no place on a log axis).
    resp
        Score per well (same length as ``conc``; NaNs dropped).
    alpha
        Significance level of the "better than flat" F test.
    window
        Control window for ``efficacy`` (2 for the On score: C- at -1, C+ at +1).
    min_monotone_r2
        Below this share of dose-mean spread explained by a monotone fit, status is ``non-monotone``.
    noise
        ``(mean, sd)`` or ``(mean, sd, n)`` of the negative-control wells' scores (n wells; unknown n
        counts as many); ``None``: no ``inactive`` status.
    noise_k
        A compound is ``inactive`` when no dose mean lies ``noise_k`` standard errors or more from
        the control mean.

    Returns
    -------
    HillFit

    Raises
    ------
    DataError
        If ``conc`` and ``resp`` differ in length.
    """
    from scipy import stats

    c = np.asarray(conc, dtype=np.float64).ravel()
    y = np.asarray(resp, dtype=np.float64).ravel()
    if c.shape != y.shape:
        raise DataError(f"fit_hill: {c.size} concentrations but {y.size} responses; give one of each per well.")
    keep = np.isfinite(c) & np.isfinite(y) & (c > 0)
    c, y = c[keep], y[keep]
    doses = np.unique(c)
    base = dict(n=int(c.size), n_doses=int(doses.size), window=float(window),
                dose_min=float(doses.min()) if doses.size else float("nan"),
                dose_max=float(doses.max()) if doses.size else float("nan"))
    if doses.size == 0:
        return HillFit("single-dose", message="no well with a positive dose and a finite score", **base)
    means = np.array([y[c == d].mean() for d in doses])
    counts = np.array([(c == d).sum() for d in doses], dtype=float)
    base["max_dev_se"] = _max_dev_se(means, counts, noise)
    if doses.size < 3:
        status = "single-dose" if doses.size == 1 else "too-few-doses"
        return HillFit(status, message=f"{doses.size} distinct dose(s); a Hill fit needs 3 or more", **base)
    if c.size < 5:  # 4 parameters: with <= 4 wells any curve fits exactly and nothing can be tested
        return HillFit("too-few-doses", message=f"{c.size} wells; a 4-parameter fit needs at least 5", **base)

    x = np.log10(c)
    mono = _isotonic_r2(np.log10(doses), means, counts)
    base["monotone_r2"] = float(mono)
    ss0 = float(np.sum((y - y.mean()) ** 2))
    span = float(np.ptp(y)) or 1.0
    # Asymptotes may lie beyond the observed range (curve not saturated), but not absurdly far.
    lower = [y.min() - span, y.min() - span, float(x.min()) - 2.0, 0.1]
    upper = [y.max() + span, y.max() + span, float(x.max()) + 2.0, 10.0]
    best = _optimise(x, y, lower, upper)
    n = c.size
    if best is not None:
        sse = best[0]
        base["r2"] = float(1.0 - sse / ss0) if ss0 > 0 else 0.0
        # Extra-sum-of-squares F test: 4-parameter curve vs a constant (1 parameter).
        base["p_flat"] = (float(stats.f.sf(((ss0 - sse) / 3.0) / (sse / (n - 4)), 3, n - 4)) if sse > 0
                          else (0.0 if ss0 > 0 else 1.0))  # exact fit: decide by the spread alone
    if np.isfinite(base["max_dev_se"]) and base["max_dev_se"] < noise_k:
        return HillFit("inactive", message=f"every dose mean lies within {noise_k:g} standard errors of the negative "
                       f"controls' mean (largest {base['max_dev_se']:.2f})", **base)
    if best is None:
        return HillFit("failed", message="the optimiser did not converge from any start", **base)
    if base["p_flat"] >= alpha:
        return HillFit("flat", message=f"no significant dose trend (F test p = {base['p_flat']:.3g} >= {alpha})",
                       **base)
    return _fitted(x, y, best, base, lower, upper, window=window, mono_ok=mono >= min_monotone_r2)


def _fitted(x: np.ndarray, y: np.ndarray, best: tuple, base: dict, lower: list[float], upper: list[float], *,
            window: float, mono_ok: bool) -> HillFit:
    """The HillFit of a significant curve: non-monotone, extrapolated or ok, with its intervals."""
    n = x.size
    sse, popt, jac = best
    try:  # covariance as curve_fit computes it: s^2 (J^T J)^-1
        pcov = np.linalg.pinv(jac.T @ jac) * (sse / max(n - 4, 1))
    except np.linalg.LinAlgError:
        pcov = np.full((4, 4), np.nan)
    bottom, top, log_ec50, slope = (float(v) for v in popt)
    notes = []
    if not mono_ok:
        status = "non-monotone"
        notes.append(f"a monotone fit explains only {base['monotone_r2']:.0%} of the dose means' spread (rise and fall)")
    elif not base["dose_min"] <= 10**log_ec50 <= base["dose_max"]:
        status = "extrapolated"
        side = "below the lowest" if 10**log_ec50 < base["dose_min"] else "above the highest"
        notes.append(f"EC50 {10**log_ec50:.3g} lies {side} tested dose "
                     f"({base['dose_min']:.3g}-{base['dose_max']:.3g}): active, EC50 extrapolated")
    else:
        status = "ok"
    ci, open_note = _intervals(x, y, popt, sse, pcov, lower, upper, window)
    notes += [_at_bounds(popt, lower, upper), open_note]
    return HillFit(status, bottom=bottom, top=top, ec50=float(10**log_ec50), hill=slope, ci=ci,
                   message="; ".join(m for m in notes if m), **base)


def _columns(df: pd.DataFrame, score: str, compound: str, dose: str) -> None:
    for option, col in (("score", score), ("compound", compound), ("dose", dose)):
        if col not in df.columns:
            raise DataError(f"dose-response: {option} column {col!r} is not in the table; columns are "
                            f"{list(df.columns)[:15]}. Pass --{option}-col / {option}= with the right name.")
    if not pd.api.types.is_numeric_dtype(df[score]):
        raise DataError(f"dose-response: score column {score!r} is not numeric.")


def _treated(df: pd.DataFrame, score: str, compound: str, dose: str) -> pd.DataFrame:
    df, score = resolve_score(df, score)
    _columns(df, score, compound, dose)
    d = pd.DataFrame({"compound": df[compound], "dose": pd.to_numeric(df[dose], errors="coerce"),
                      "score": df[score].astype(float)})
    # Untreated wells (empty/NaN compound) are controls, not a compound.
    named = d["compound"].notna() & (d["compound"].astype(str).str.strip() != "")
    d = d[named]
    if len(d) and d["dose"].isna().all():
        example = df.loc[named, dose].iloc[0]
        raise DataError(f"dose-response: dose column {dose!r} has no numeric value (e.g. {example!r}); give "
                        "concentrations as numbers in one unit (uM).")
    d["compound"] = d["compound"].astype(str)
    return d


def control_noise(df: pd.DataFrame, *, score: str = "OnScore", column: str = "Metadata_Control",
                  value: str = "negative") -> tuple[float, float, int] | None:
    """``(mean, sd, n)`` of the negative-control wells' scores: the noise of the ``inactive`` rule.

    Out-of-fold figures first: a table written by ``gandl-core project`` / :func:`~.projection.project_table`
    carries its projection statistics (``df.attrs["gandl"]["projection"]``), whose
    ``on_mean_negative_oof``/``on_sd_negative_oof`` describe control wells scored by a projection that
    never saw them -- as every treated well is. Otherwise the ``column == value`` rows' own scores
    (in sample: tighter than an unseen well's scatter when the SVM had many features).

    Parameters
    ----------
    df
        Scores table.
    score, column, value
        Score column, and the column/value naming the negative-control rows.

    Returns
    -------
    (float, float, int) or None
        Mean, sample SD (ddof 1) and number of control wells; ``None`` when neither source is there
        (or fewer than 2 control rows with a finite score).
    """
    df, score = resolve_score(df, score)
    stats = ((df.attrs.get("gandl") or {}).get("projection") or {}) if score == "OnScore" else {}
    m, sd = stats.get("on_mean_negative_oof"), stats.get("on_sd_negative_oof")
    if m is not None and sd is not None and np.isfinite(m) and np.isfinite(sd) and sd > 0:
        return float(m), float(sd), int(stats.get("n_negative") or 0)
    if column not in df.columns or score not in df.columns:
        return None
    v = pd.to_numeric(df.loc[df[column].astype(str) == value, score], errors="coerce").to_numpy(float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None
    return float(v.mean()), float(v.std(ddof=1)), int(v.size)


def dose_response(df: pd.DataFrame, *, score: str = "OnScore", compound: str = "Metadata_Treatment",
                  dose: str = "Metadata_Concentration") -> pd.DataFrame:
    """Per compound x concentration summary of a score.

    Parameters
    ----------
    df
        Table with one row per well (e.g. ``Projection.transform_table`` output: metadata + OnScore/OffScore;
        an older table with ``On``/``Off`` columns is read as well).
    score, compound, dose
        Column names of the score, the compound name and the concentration. Rows with an empty
        compound (untreated controls) are left out.

    Returns
    -------
    DataFrame
        ``Metadata_Compound, dose, n, mean, sd, sem`` sorted by compound then dose (sd/sem NaN for n = 1).

    Raises
    ------
    DataError
        A column is missing or the score is not numeric.
    """
    d = _treated(df, score, compound, dose).dropna(subset=["dose", "score"])
    g = d.groupby(["compound", "dose"], sort=True)["score"]
    out = g.agg(n="count", mean="mean", sd="std").reset_index()
    out["sem"] = out["sd"] / np.sqrt(out["n"])
    return out.rename(columns={"compound": "Metadata_Compound"})


#: Columns of :func:`fit_all`'s table: Metadata_* strings first, then numbers only.
FIT_COLUMNS = (["Metadata_Compound", "Metadata_Status", "Metadata_Message", "n", "n_doses", "dose_min", "dose_max",
                "bottom", "top", "ec50", "log10_ec50", "hill", "efficacy", "r2", "p_flat", "monotone_r2",
                "max_dev_se"] + [f"{p}_ci_{e}" for p in CI_PARAMS for e in ("low", "high")])
#: Names of the string columns before they took the Metadata_ prefix (dose_fits.csv of older versions).
_OLD_FIT_COLUMNS = {"compound": "Metadata_Compound", "status": "Metadata_Status", "message": "Metadata_Message",
                    "hit": "Metadata_Hit", "rule": "Metadata_Rule"}


def with_fit_names(fits: pd.DataFrame) -> pd.DataFrame:
    """A fits/hits table with the current column names (renames an older file's ``compound``/``status``...)."""
    old = {k: v for k, v in _OLD_FIT_COLUMNS.items() if k in fits.columns and v not in fits.columns}
    return fits.rename(columns=old) if old else fits


def fit_all(df: pd.DataFrame, *, score: str = "OnScore", compound: str = "Metadata_Treatment",
            dose: str = "Metadata_Concentration", alpha: float = 0.05, window: float = CONTROL_WINDOW,
            noise: Sequence[float] | str | None = "auto", noise_k: float = 3.0) -> pd.DataFrame:
    """Fit :func:`fit_hill` to every compound of a table.

    Parameters
    ----------
    df, score, compound, dose
        As in :func:`dose_response`.
    alpha, window
        Passed to :func:`fit_hill`.
    noise
        ``(mean, sd[, n])`` of the negative controls' scores for the ``inactive`` rule; ``"auto"``:
        :func:`control_noise` (out-of-fold statistics carried by a ``project`` scores table, else the
        ``Metadata_Control == "negative"`` rows), if any; ``None``: no ``inactive`` status.
    noise_k
        Standard errors a dose mean must reach to leave the control noise (default 3).

    Returns
    -------
    DataFrame
        One row per compound with the columns of :data:`FIT_COLUMNS` (``ec50`` in the dose unit).
        ``attrs["method"]`` describes the model and the rules, ``attrs["noise"]`` the band used.

    Raises
    ------
    DataError
        A column is missing, or no row names a compound.
    ConfigError
        ``noise`` is neither "auto", None nor (mean, sd[, n]).
    """
    if isinstance(noise, str):
        if noise != "auto":
            raise ConfigError(f"fit_all: noise={noise!r}; use 'auto', None or (mean, sd).")
        noise = control_noise(df, score=score)
    elif noise is not None and len(noise) not in (2, 3):
        raise ConfigError(f"fit_all: noise={noise!r}; give (mean, sd) or (mean, sd, n) of the negative controls' "
                          "scores.")
    df, score = resolve_score(df, score)
    d = _treated(df, score, compound, dose)
    if d.empty:
        raise DataError(f"dose-response: no row has a compound name in {compound!r} (all empty); "
                        "is the compound column right?")
    rows = []
    for name, sub in d.groupby("compound", sort=True):
        res = fit_hill(sub["dose"].to_numpy(), sub["score"].to_numpy(), alpha=alpha, window=window,
                       noise=noise, noise_k=noise_k)
        d_ = res.as_dict()
        rows.append({"Metadata_Compound": name, "Metadata_Status": d_.pop("status"),
                     "Metadata_Message": d_.pop("message"), **d_})
    out = pd.DataFrame(rows)[FIT_COLUMNS]
    band = ("no negative-control scores, so no 'inactive' status" if noise is None else
            f"inactive if every dose mean is within {noise_k:g} standard errors of the negative controls' mean "
            f"(mean {noise[0]:.3g}, well SD {noise[1]:.3g}, SE = SD sqrt(1/n_dose + 1/n_controls))")
    out.attrs["method"] = (f"4-parameter Hill fit of {score!r} vs {dose!r} per {compound!r} (well level, "
                           f"log10 EC50, slope 0.1-10, 95% CIs clipped to those bounds); {band}; flat if F test "
                           f"vs constant p >= {alpha}; extrapolated if EC50 outside the tested doses; "
                           f"efficacy = (top - bottom) / {window:g}")
    out.attrs["noise"] = None if noise is None else {"mean": float(noise[0]), "sd": float(noise[1]),
                                                     "n": int(noise[2]) if len(noise) > 2 else None, "k": noise_k}
    return out


def hit_list(fits: pd.DataFrame, *, min_efficacy: float = 0.5, min_r2: float = 0.5,
             direction: str = "positive", ec50_in_range: bool = True) -> pd.DataFrame:
    """Rank fitted compounds and flag hits with an explicit, recorded rule.

    Hit rule: status ``ok`` (or also ``extrapolated`` with ``ec50_in_range=False``) and efficacy >=
    ``min_efficacy`` (fraction of the C- -> C+ control window; ``direction="both"`` uses |efficacy|)
    and R² >= ``min_r2``. Ranking: hits first, then by efficacy (descending; |efficacy| for "both"),
    then by potency (lower EC50 first).

    Parameters
    ----------
    fits
        Output of :func:`fit_all` (an older file with ``compound``/``status`` columns is read too).
    min_efficacy, min_r2, direction, ec50_in_range
        The rule's thresholds. ``direction``: ``"positive"`` (towards C+, a rescue) or ``"both"``.

    Returns
    -------
    DataFrame
        ``fits`` sorted, with ``rank`` (1 = best), ``Metadata_Hit`` (bool) and ``Metadata_Rule`` (the
        rule as text) columns; the rule is also in ``attrs["rule"]``.

    Raises
    ------
    ConfigError
        Unknown ``direction``.
    DataError
        ``fits`` lacks a required column.
    """
    if direction not in ("positive", "both"):
        raise ConfigError(f"hit_list: direction={direction!r}; use 'positive' or 'both'.")
    fits = with_fit_names(fits)
    need = ["Metadata_Compound", "Metadata_Status", "efficacy", "r2", "ec50", "dose_min", "dose_max"]
    missing = [c for c in need if c not in fits.columns]
    if missing:
        raise DataError(f"hit_list: the fits table lacks column(s) {missing}; pass the output of fit_all.")
    out = fits.copy()
    eff = out["efficacy"].abs() if direction == "both" else out["efficacy"]
    allowed = ["ok"] if ec50_in_range else list(ACTIVE_STATUSES)
    hit = out["Metadata_Status"].isin(allowed) & (eff >= min_efficacy) & (out["r2"] >= min_r2)
    if ec50_in_range:
        hit &= (out["ec50"] >= out["dose_min"]) & (out["ec50"] <= out["dose_max"])
    out["Metadata_Hit"] = hit.fillna(False).astype(bool)
    out["_eff"] = eff.fillna(-np.inf)
    out = out.sort_values(["Metadata_Hit", "_eff", "ec50"], ascending=[False, False, True], na_position="last")
    out = out.drop(columns="_eff").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    eff_txt = "|efficacy|" if direction == "both" else "efficacy"
    rule = (f"hit = status ok{'' if ec50_in_range else ' or extrapolated'} and {eff_txt} >= {min_efficacy:g} of "
            f"the control window and R2 >= {min_r2:g}"
            + (" (status ok: EC50 within the tested doses)" if ec50_in_range else "")
            + "; ranked by hit, efficacy, then EC50 (lower first)")
    out["Metadata_Rule"] = rule
    out.attrs["rule"] = rule
    return out


def ci_table(fits: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """A compact, readable view of a fits table: each estimate with its 95% CI as text.

    Parameters
    ----------
    fits
        Output of :func:`fit_all` or :func:`hit_list` (or their CSV files).
    digits
        Significant digits.

    Returns
    -------
    DataFrame
        ``compound, status, EC50 [95% CI], hill [95% CI], efficacy [95% CI], R2`` (``hit`` too when
        present); estimates that were not fitted are empty.
    """
    f = with_fit_names(fits)

    def fmt(name: str) -> list[str]:
        vals = []
        for _, r in f.iterrows():
            v, lo, hi = (float(r.get(k, np.nan)) for k in (name, f"{name}_ci_low", f"{name}_ci_high"))
            if not np.isfinite(v):
                vals.append("")
            else:
                ci = f" [{lo:.{digits}g}, {hi:.{digits}g}]" if np.isfinite(lo) and np.isfinite(hi) else ""
                vals.append(f"{v:.{digits}g}{ci}")
        return vals

    out = pd.DataFrame({"compound": f["Metadata_Compound"].astype(str), "status": f["Metadata_Status"].astype(str),
                        "EC50 [95% CI]": fmt("ec50"), "hill [95% CI]": fmt("hill"),
                        "efficacy [95% CI]": fmt("efficacy"), "R2": f["r2"].round(digits)})
    if "Metadata_Hit" in f.columns:
        out.insert(2, "hit", f["Metadata_Hit"].astype(str).str.lower().isin(["true", "1"]))
    if "rank" in f.columns:
        out.insert(0, "rank", f["rank"].to_numpy())
    return out
