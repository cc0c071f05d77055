"""Dose-response along a 1-d activity score (usually the On-perturbation score).

Three steps, each a plain function on a table:

* :func:`dose_response` -- per compound x concentration: n, mean, sd, sem of the score.
* :func:`fit_hill` / :func:`fit_all` -- a 4-parameter logistic (Hill) curve per compound, fitted on
  the well-level scores by bounded least squares (:func:`scipy.optimize.least_squares`)::

      y(c) = bottom + (top - bottom) / (1 + (EC50 / c) ** hill)

  ``bottom`` is the response at low dose, ``top`` at high dose; ``hill > 0`` always, so a falling
  curve has ``top < bottom`` (this keeps the fit identifiable). EC50 is fitted as ``log10(EC50)``
  (uM if the doses are uM), bounded to two decades around the tested range. 95% confidence
  intervals come from the covariance matrix (Student t with n - 4 degrees of freedom).
* :func:`hit_list` -- ranks the fits and flags hits with an explicit rule (kept in the output).

**Efficacy** is ``(top - bottom) / window`` with ``window = 2``: the distance between the negative
(-1) and positive (+1) control means on the On score. Efficacy 1 means the compound moves wells
the whole way from C- to C+; negative efficacy moves them away from C+.

**Status** of a fit (never an exception for a bad compound):

``ok``
    The curve explains the dose trend.
``flat``
    The Hill curve is not significantly better than a constant (extra-sum-of-squares F test,
    p >= ``alpha``); EC50 and CIs are NaN.
``non-monotone``
    The dose means rise and fall (e.g. rescue, then toxicity at high dose): the best monotone
    (isotonic) fit of the dose means explains less than 70% of their spread. Parameters are still
    reported, but such a compound is never a hit.
``too-few-doses`` / ``single-dose``
    Fewer than 3 distinct positive doses (a 4-parameter curve needs at least 3); means only.
``failed``
    The optimiser did not converge from any starting point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError

#: Distance between the C- (-1) and C+ (+1) means on the On score.
CONTROL_WINDOW = 2.0

__all__ = ["HillFit", "hill", "fit_hill", "dose_response", "fit_all", "hit_list", "CONTROL_WINDOW"]


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
        ``ok``, ``flat``, ``non-monotone``, ``too-few-doses``, ``single-dose`` or ``failed``
        (see the module docstring).
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
    ci
        95% intervals ``{"bottom": (lo, hi), "top": ..., "ec50": ..., "hill": ...}``.
    n, n_doses, dose_min, dose_max
        Wells used, distinct doses, tested range.
    message
        Why the status is not ``ok`` (empty when it is).
    """

    status: str
    bottom: float = float("nan")
    top: float = float("nan")
    ec50: float = float("nan")
    hill: float = float("nan")
    r2: float = float("nan")
    p_flat: float = float("nan")
    monotone_r2: float = float("nan")
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
        """True when curve parameters are available (``ok`` or ``non-monotone``)."""
        return bool(np.isfinite(self.ec50))

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
        for name in ("bottom", "top", "ec50", "hill"):
            lo, hi = ci.get(name, (float("nan"), float("nan")))
            d[f"{name}_ci_low"], d[f"{name}_ci_high"] = float(lo), float(hi)
        return d


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


def fit_hill(conc: Sequence[float] | np.ndarray, resp: Sequence[float] | np.ndarray, *, alpha: float = 0.05,
             window: float = CONTROL_WINDOW, min_monotone_r2: float = 0.7) -> HillFit:
    """Fit a 4-parameter Hill curve to well-level responses of one compound.

    Never raises for a bad compound: flat, non-monotone, single-dose data and optimiser failures
    come back as a :class:`HillFit` with that ``status``.

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

    Returns
    -------
    HillFit

    Raises
    ------
    DataError
        If ``conc`` and ``resp`` differ in length.
    """
    from scipy import stats
    from scipy.optimize import least_squares

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
    if doses.size < 3:
        status = "single-dose" if doses.size == 1 else "too-few-doses"
        return HillFit(status, message=f"{doses.size} distinct dose(s); a Hill fit needs 3 or more", **base)
    if c.size < 5:  # 4 parameters: with <= 4 wells any curve fits exactly and nothing can be tested
        return HillFit("too-few-doses", message=f"{c.size} wells; a 4-parameter fit needs at least 5", **base)

    x = np.log10(c)
    means = np.array([y[c == d].mean() for d in doses])
    counts = np.array([(c == d).sum() for d in doses], dtype=float)
    mono = _isotonic_r2(np.log10(doses), means, counts)
    base["monotone_r2"] = float(mono)
    ss0 = float(np.sum((y - y.mean()) ** 2))
    span = float(np.ptp(y)) or 1.0
    lx_lo, lx_hi = float(x.min()), float(x.max())
    # Asymptotes may lie beyond the observed range (curve not saturated), but not absurdly far.
    lower = [y.min() - span, y.min() - span, lx_lo - 2.0, 0.1]
    upper = [y.max() + span, y.max() + span, lx_hi + 2.0, 10.0]
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
    if best is None:
        return HillFit("failed", message="the optimiser did not converge from any start", **base)
    sse, popt, jac = best
    dof = max(c.size - 4, 1)
    try:  # covariance as curve_fit computes it: s^2 (J^T J)^-1
        pcov = np.linalg.pinv(jac.T @ jac) * (sse / dof)
    except np.linalg.LinAlgError:
        pcov = np.full((4, 4), np.nan)
    n = c.size
    r2 = 1.0 - sse / ss0 if ss0 > 0 else 0.0
    # Extra-sum-of-squares F test: 4-parameter curve vs a constant (1 parameter).
    if n > 4 and sse > 0:
        f = ((ss0 - sse) / 3.0) / (sse / (n - 4))
        p_flat = float(stats.f.sf(f, 3, n - 4))
    else:  # exact fit or no residual degrees of freedom: decide by the spread alone
        p_flat = 0.0 if ss0 > 0 else 1.0
    base.update(r2=float(r2), p_flat=p_flat)
    if p_flat >= alpha:
        return HillFit("flat", message=f"no significant dose trend (F test p = {p_flat:.3g} >= {alpha})", **base)
    bottom, top, log_ec50, slope = (float(v) for v in popt)
    ci: dict[str, tuple[float, float]] = {}
    if c.size > 4 and np.all(np.isfinite(pcov)):
        t = float(stats.t.ppf(0.975, n - 4))
        se = np.sqrt(np.clip(np.diag(pcov), 0, None))
        for name, val, s in (("bottom", bottom, se[0]), ("top", top, se[1]), ("hill", slope, se[3])):
            ci[name] = (float(val - t * s), float(val + t * s))
        ci["ec50"] = (float(10 ** (log_ec50 - t * se[2])), float(10 ** (log_ec50 + t * se[2])))
    status, message = "ok", ""
    if mono < min_monotone_r2:
        status = "non-monotone"
        message = f"a monotone fit explains only {mono:.0%} of the dose means' spread (rise and fall)"
    return HillFit(status, bottom=bottom, top=top, ec50=float(10**log_ec50), hill=slope, ci=ci,
                   message=message, **base)


def _columns(df: pd.DataFrame, score: str, compound: str, dose: str) -> None:
    for option, col in (("score", score), ("compound", compound), ("dose", dose)):
        if col not in df.columns:
            raise DataError(f"dose-response: {option} column {col!r} is not in the table; columns are "
                            f"{list(df.columns)[:15]}. Pass --{option}-col / {option}= with the right name.")
    if not pd.api.types.is_numeric_dtype(df[score]):
        raise DataError(f"dose-response: score column {score!r} is not numeric.")


def _treated(df: pd.DataFrame, score: str, compound: str, dose: str) -> pd.DataFrame:
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


def dose_response(df: pd.DataFrame, *, score: str = "On", compound: str = "Metadata_Treatment",
                  dose: str = "Metadata_Concentration") -> pd.DataFrame:
    """Per compound x concentration summary of a score.

    Parameters
    ----------
    df
        Table with one row per well (e.g. ``Projection.transform_table`` output: metadata + On/Off).
    score, compound, dose
        Column names of the score, the compound name and the concentration. Rows with an empty
        compound (untreated controls) are left out.

    Returns
    -------
    DataFrame
        ``compound, dose, n, mean, sd, sem`` sorted by compound then dose (sd/sem NaN for n = 1).

    Raises
    ------
    DataError
        A column is missing or the score is not numeric.
    """
    d = _treated(df, score, compound, dose).dropna(subset=["dose", "score"])
    g = d.groupby(["compound", "dose"], sort=True)["score"]
    out = g.agg(n="count", mean="mean", sd="std").reset_index()
    out["sem"] = out["sd"] / np.sqrt(out["n"])
    return out


FIT_COLUMNS = ["compound", "status", "n", "n_doses", "dose_min", "dose_max", "bottom", "top", "ec50",
               "log10_ec50", "hill", "efficacy", "r2", "p_flat", "monotone_r2", "ec50_ci_low", "ec50_ci_high",
               "bottom_ci_low", "bottom_ci_high", "top_ci_low", "top_ci_high", "hill_ci_low", "hill_ci_high",
               "message"]


def fit_all(df: pd.DataFrame, *, score: str = "On", compound: str = "Metadata_Treatment",
            dose: str = "Metadata_Concentration", alpha: float = 0.05,
            window: float = CONTROL_WINDOW) -> pd.DataFrame:
    """Fit :func:`fit_hill` to every compound of a table.

    Parameters
    ----------
    df, score, compound, dose
        As in :func:`dose_response`.
    alpha, window
        Passed to :func:`fit_hill`.

    Returns
    -------
    DataFrame
        One row per compound with the columns of :data:`FIT_COLUMNS` (``ec50`` in the dose unit).
        ``attrs["method"]`` describes the model.

    Raises
    ------
    DataError
        A column is missing, or no row names a compound.
    """
    d = _treated(df, score, compound, dose)
    if d.empty:
        raise DataError(f"dose-response: no row has a compound name in {compound!r} (all empty); "
                        "is the compound column right?")
    rows = []
    for name, sub in d.groupby("compound", sort=True):
        res = fit_hill(sub["dose"].to_numpy(), sub["score"].to_numpy(), alpha=alpha, window=window)
        rows.append({"compound": name, **res.as_dict()})
    out = pd.DataFrame(rows)[FIT_COLUMNS]
    out.attrs["method"] = (f"4-parameter Hill fit of {score!r} vs {dose!r} per {compound!r} (well level, "
                           f"log10 EC50, slope 0.1-10); flat if F test vs constant p >= {alpha}; "
                           f"efficacy = (top - bottom) / {window:g}")
    return out


def hit_list(fits: pd.DataFrame, *, min_efficacy: float = 0.5, min_r2: float = 0.5,
             direction: str = "positive", ec50_in_range: bool = True) -> pd.DataFrame:
    """Rank fitted compounds and flag hits with an explicit, recorded rule.

    Hit rule: ``status == "ok"`` and efficacy >= ``min_efficacy`` (fraction of the C- -> C+ control
    window; ``direction="both"`` uses |efficacy|) and R² >= ``min_r2`` and, with ``ec50_in_range``,
    EC50 inside the tested dose range. Ranking: hits first, then by efficacy (descending; |efficacy|
    for "both"), then by potency (lower EC50 first).

    Parameters
    ----------
    fits
        Output of :func:`fit_all`.
    min_efficacy, min_r2, direction, ec50_in_range
        The rule's thresholds. ``direction``: ``"positive"`` (towards C+, a rescue) or ``"both"``.

    Returns
    -------
    DataFrame
        ``fits`` sorted, with ``rank`` (1 = best), ``hit`` (bool) and ``rule`` (the rule as text)
        columns; the rule is also in ``attrs["rule"]``.

    Raises
    ------
    ConfigError
        Unknown ``direction``.
    DataError
        ``fits`` lacks a required column.
    """
    if direction not in ("positive", "both"):
        raise ConfigError(f"hit_list: direction={direction!r}; use 'positive' or 'both'.")
    need = ["compound", "status", "efficacy", "r2", "ec50", "dose_min", "dose_max"]
    missing = [c for c in need if c not in fits.columns]
    if missing:
        raise DataError(f"hit_list: the fits table lacks column(s) {missing}; pass the output of fit_all.")
    out = fits.copy()
    eff = out["efficacy"].abs() if direction == "both" else out["efficacy"]
    hit = (out["status"] == "ok") & (eff >= min_efficacy) & (out["r2"] >= min_r2)
    if ec50_in_range:
        hit &= (out["ec50"] >= out["dose_min"]) & (out["ec50"] <= out["dose_max"])
    out["hit"] = hit.fillna(False).astype(bool)
    out["_eff"] = eff.fillna(-np.inf)
    out = out.sort_values(["hit", "_eff", "ec50"], ascending=[False, False, True], na_position="last")
    out = out.drop(columns="_eff").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    eff_txt = "|efficacy|" if direction == "both" else "efficacy"
    rule = (f"hit = status ok and {eff_txt} >= {min_efficacy:g} of the control window and R2 >= {min_r2:g}"
            + (" and EC50 within the tested doses" if ec50_in_range else "")
            + "; ranked by hit, efficacy, then EC50 (lower first)")
    out["rule"] = rule
    out.attrs["rule"] = rule
    return out
