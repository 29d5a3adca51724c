"""Spread of two paired arms: the Pitman-Morgan variance ratio.

The learned and frozen arms of notebook 05 are trained from the same seed (same initial task
model, same batch order, same augmentation draws) on the same split, so run ``i`` of one arm and
run ``i`` of the other are a pair, and their final metrics are correlated. The F interval of
:func:`drifthelpers.stats.variance_ratio` assumes independent arms; with correlated pairs it is
too wide (positive correlation) and its p-value too large. Pitman (1939) and Morgan (1939) test
equal variances of paired values through the correlation of sums and differences:
``cov(a + b, b - a) = var(b) - var(a)``, so ``var(b) = var(a)`` exactly when the sum and the
difference are uncorrelated, and the usual t-test of a correlation (``n - 2`` degrees of freedom)
applies. Inverting the test for a ratio ``λ`` (sums and differences of ``sqrt(λ) a`` and ``b``)
gives the interval

    [F (K - sqrt(K² - 1)),  F (K + sqrt(K² - 1))],   K = 1 + 2 (1 - r²) t² / (n - 2),

with ``F = s_b² / s_a²``, ``r`` the correlation of ``a`` and ``b`` and ``t`` the two-sided
critical value of Student's t with ``n - 2`` degrees of freedom. Written here because SciPy and
statsmodels provide the test of a correlation but not this interval.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as _st

from .stats import Estimate, _num

__all__ = ["paired_variance_ratio"]


def paired_variance_ratio(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Is the spread of ``b`` larger than that of ``a``, for paired values? var(b) / var(a).

    Args:
        a, b: one value per pair (e.g. the final test metric of the same seed in two arms), in
            the same order; at least 3 pairs.
        level: coverage of the interval.

    Returns:
        ``{"ratio": Estimate (Pitman-Morgan interval of var_b / var_a), "p_greater": one-sided
        p-value of var_b > var_a, "correlation": r of a and b, "sd_a", "sd_b"}``. With a zero
        variance, or a and b perfectly correlated, the ratio or its interval is undefined (the
        reason says which).

    Raises:
        ValueError: fewer than 3 pairs, or a and b of different lengths.

    Example:
        >>> out = paired_variance_ratio([0.70, 0.72, 0.75, 0.71], [0.60, 0.70, 0.80, 0.64])
        >>> round(out["ratio"].value, 2), out["ratio"].method
        (16.21, 'Pitman-Morgan')
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be paired 1-D sequences of the same length, got {a.shape} and {b.shape}")
    n = len(a)
    if n < 3:
        raise ValueError(f"paired_variance_ratio needs >= 3 pairs (n - 2 degrees of freedom), got {n}")
    va, vb = a.var(ddof=1), b.var(ddof=1)
    sizes = {"pairs": n}
    out = {"sd_a": float(math.sqrt(va)), "sd_b": float(math.sqrt(vb)), "p_greater": None, "correlation": None}
    if va <= 0 or vb <= 0:
        out["ratio"] = Estimate(None, None, None, sizes, "Pitman-Morgan", level, "a variance is 0: the ratio is undefined")
        return out
    r = float(np.corrcoef(a, b)[0, 1])
    out["correlation"] = r
    f = vb / va
    if 1 - r * r <= 1e-12:
        out["ratio"] = Estimate(float(f), None, None, sizes, "Pitman-Morgan", level,
                                "a and b are perfectly correlated: no interval")
        return out
    t = _st.t.ppf(1 - (1 - level) / 2, n - 2)
    k = 1 + 2 * (1 - r * r) * t * t / (n - 2)
    root = math.sqrt(k * k - 1)
    out["ratio"] = Estimate(float(f), float(f * (k - root)), float(f * (k + root)), sizes, "Pitman-Morgan", level)
    s, d = a + b, b - a  # cov(s, d) = var(b) - var(a)
    rsd = float(np.corrcoef(s, d)[0, 1])
    if abs(rsd) < 1:
        tstat = rsd * math.sqrt((n - 2) / (1 - rsd * rsd))
        out["p_greater"] = _num(_st.t.sf(tstat, n - 2))
    else:
        out["p_greater"] = 0.0 if rsd > 0 else 1.0
    return out
