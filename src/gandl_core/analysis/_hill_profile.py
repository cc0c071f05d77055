"""Profile-likelihood 95% intervals of a Hill fit's log10 EC50 and slope, inside the fit's bounds.

Why not the covariance (Wald) interval: for a steep curve the EC50 is only pinned to the gap between
two doses, the Jacobian along log EC50 vanishes there and the Wald interval explodes to the bounds;
for a shallow one the symmetric interval of the slope runs below zero. The profile interval is the
set of values whose best fit (the other parameters re-optimised) is not significantly worse than the
best fit overall (extra-sum-of-squares F test, 1 and n - 4 degrees of freedom), so it follows the
data, is asymmetric where the data are, and never leaves the bounds the fit itself obeys.

The profile is computed on a grid: for a fixed (log EC50, slope) the curve is linear in (bottom,
top), solved exactly under their box bounds, from the dose means (the within-dose spread adds a
constant to every sum of squares).
"""

from __future__ import annotations

import numpy as np

#: Grid resolution: log10 EC50 points over the bounds (about 0.05 decade for a 2-decade dose range)
#: and slope points (log-spaced over the bounds).
N_LOG_EC50, N_SLOPE = 121, 61


def _box_ls(g: np.ndarray, ybar: np.ndarray, w: np.ndarray, lo: tuple[float, float],
            hi: tuple[float, float]) -> np.ndarray:
    """Min over (b, t) in the box of sum_d w_d (b (1 - g_d) + t g_d - ybar_d)^2, for every grid point.

    ``g``: [..., D] curve shapes; returns the weighted SSE of the dose means, shape ``g.shape[:-1]``.
    A 2-d convex quadratic on a box: the optimum is the unconstrained one if feasible, else on an edge;
    every candidate is feasible-clipped and the least SSE wins.
    """
    h = 1.0 - g
    a11, a12, a22 = (w * h * h).sum(-1), (w * h * g).sum(-1), (w * g * g).sum(-1)
    r1, r2 = (w * h * ybar).sum(-1), (w * g * ybar).sum(-1)

    def sse(b, t):
        return (w * (b[..., None] * h + t[..., None] * g - ybar) ** 2).sum(-1)

    det = a11 * a22 - a12**2
    safe = np.where(det > 1e-12 * np.maximum(a11 * a22, 1e-300), det, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        b0, t0 = (a22 * r1 - a12 * r2) / safe, (a11 * r2 - a12 * r1) / safe
    best = np.full(g.shape[:-1], np.inf)
    inside = np.isfinite(b0) & (b0 >= lo[0]) & (b0 <= hi[0]) & (t0 >= lo[1]) & (t0 <= hi[1])
    best = np.where(inside, sse(np.nan_to_num(b0), np.nan_to_num(t0)), best)
    for fixed_b in (lo[0], hi[0]):  # b on an edge, t optimal for it
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.clip(np.nan_to_num((r2 - fixed_b * a12) / a22, nan=0.0), lo[1], hi[1])
        best = np.minimum(best, sse(np.full_like(t, fixed_b), t))
    for fixed_t in (lo[1], hi[1]):  # t on an edge, b optimal for it
        with np.errstate(invalid="ignore", divide="ignore"):
            b = np.clip(np.nan_to_num((r1 - fixed_t * a12) / a11, nan=0.0), lo[0], hi[0])
        best = np.minimum(best, sse(b, np.full_like(b, fixed_t)))
    return best


def _interval(grid: np.ndarray, prof: np.ndarray, centre: float, threshold: float) -> tuple[float, float, bool]:
    """Contiguous stretch of ``grid`` around ``centre`` where ``prof <= threshold``, edges interpolated.

    Returns (low, high, open): ``open`` is True when the interval reaches an end of the grid (a bound).
    """
    i0 = int(np.argmin(np.abs(grid - centre)))
    if prof[i0] > threshold:  # the grid missed the optimum's basin: fall back to the grid's best point
        i0 = int(np.argmin(prof))
    lo_i, hi_i = i0, i0
    while lo_i > 0 and prof[lo_i - 1] <= threshold:
        lo_i -= 1
    while hi_i < len(grid) - 1 and prof[hi_i + 1] <= threshold:
        hi_i += 1

    def cross(i_in: int, i_out: int) -> float:
        p_in, p_out = prof[i_in], prof[i_out]
        f = (threshold - p_in) / (p_out - p_in) if p_out > p_in else 0.0
        return float(grid[i_in] + f * (grid[i_out] - grid[i_in]))

    lo = float(grid[0]) if lo_i == 0 else cross(lo_i, lo_i - 1)
    hi = float(grid[-1]) if hi_i == len(grid) - 1 else cross(hi_i, hi_i + 1)
    return min(lo, centre), max(hi, centre), lo_i == 0 or hi_i == len(grid) - 1


def profile_intervals(x: np.ndarray, y: np.ndarray, popt: np.ndarray, sse_min: float, lower: list[float],
                      upper: list[float], level: float = 0.95) -> dict[str, tuple[float, float, bool]]:
    """Profile-likelihood intervals of log10 EC50 and the slope.

    Parameters
    ----------
    x, y
        log10 concentrations and responses of the wells.
    popt
        Fitted (bottom, top, log10 EC50, slope).
    sse_min
        Residual sum of squares of the fit.
    lower, upper
        The fit's bounds on (bottom, top, log10 EC50, slope).
    level
        Confidence level.

    Returns
    -------
    dict
        ``{"log_ec50": (lo, hi, open), "hill": (lo, hi, open)}``; ``open`` when the interval runs to a
        bound (the data do not close it on that side).
    """
    from scipy import stats

    n = x.size
    doses, inv = np.unique(x, return_inverse=True)
    w = np.bincount(inv).astype(float)
    ybar = np.bincount(inv, weights=y) / w
    within = float(np.sum((y - ybar[inv]) ** 2))
    L = np.linspace(lower[2], upper[2], N_LOG_EC50)
    S = np.geomspace(lower[3], upper[3], N_SLOPE)
    z = S[None, :, None] * np.log(10.0) * (L[:, None, None] - doses[None, None, :])
    g = 1.0 / (1.0 + np.exp(np.clip(z, -700, 700)))
    sse = _box_ls(g, ybar, w, (lower[0], lower[1]), (upper[0], upper[1])) + within
    best = min(float(sse_min), float(sse.min()))
    threshold = best * (1.0 + stats.f.ppf(level, 1, n - 4) / (n - 4)) if best > 0 else 0.0
    lo_l, hi_l, open_l = _interval(L, sse.min(axis=1), float(popt[2]), threshold)
    lo_s, hi_s, open_s = _interval(np.log(S), sse.min(axis=0), float(np.log(popt[3])), threshold)
    hill_lo, hill_hi = np.clip(np.exp([lo_s, hi_s]), lower[3], upper[3])  # exp(log(10)) is 10.000000000000002
    return {"log_ec50": (lo_l, hi_l, open_l), "hill": (float(hill_lo), float(hill_hi), open_s)}
