"""Power calculation: how wide an interval a design of splits, seeds and test items gives.

The hierarchical bootstrap of :mod:`drifthelpers.stats` resamples *units* (split x training
seed) and, within each unit, *test items*. A statistic that is a mean over units of an item
mean (a cell accuracy, a mean drop, a paired difference; a log ratio after linearisation)
then follows the two-level model

    theta_u = mu + a_split + a_seed + (1/n) * sum_i e_ui,

with split variance ``var_split``, seed variance ``var_seed`` and item variance ``var_item``
(the variance of one item's contribution within a unit). For S splits, R seeds per split
(U = S R units) and n test items per unit, the mean over units has the variance

    Var = var_split / S + var_seed / (S R) + var_item / (S R n)          (1)

and the expected 95 % half-width of a t interval is ``t(U - 1) * sqrt(Var)``. The
``"expanded"`` method reproduces the interval the notebooks report
(:func:`drifthelpers.stats.hierarchical_bootstrap`, ``method="expanded"``): the bootstrap
treats units as independent and adds the item variance a second time, so its variance is

    V_boot = ((U - 1) / U * (var_split + var_seed + var_item / n) + var_item / n) / U      (2)

and the half-width is ``sqrt(U / (U - 1)) * t(U - 1) * sqrt(V_boot)``.

Pilot values come from per-unit, per-item contributions (:func:`variance_components`, a
one-way random-effects analysis of variance); :func:`log_ratio_contributions` linearises
log(corruption drop / faithful drop) so that the same formulas apply to it.

Example:
    >>> hw = half_width(var_unit=0.01, var_item=0.2, units=10, items=60)
    >>> units_for_half_width(hw, var_unit=0.01, var_item=0.2, items=60)
    10
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _st

__all__ = ["Components", "variance_components", "half_width", "units_for_half_width",
           "items_for_half_width", "log_ratio_contributions", "drop_contributions", "synthesis_pilot"]

METHODS = ("expanded", "t")


@dataclass(frozen=True)
class Components:
    """Variance components of a unit statistic estimated from a pilot.

    Attributes:
        mean: grand mean of the contributions.
        var_unit: variance between units beyond item sampling (split and seed together), >= 0.
        var_item: variance of one item's contribution within a unit.
        units: units in the pilot.
        items: items per unit in the pilot (the mean if they differ).
        var_means: variance of the unit means (item sampling included): a conservative
            stand-in for ``var_unit`` when a pilot has too few units to separate the two.
    """

    mean: float
    var_unit: float
    var_item: float
    units: int
    items: float
    var_means: float

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def variance_components(values) -> Components:
    """Method-of-moments variance components of per-unit, per-item contributions.

    ``var_item`` is the pooled within-unit variance; ``var_unit`` the variance of the unit
    means minus the share item sampling explains (``var_item / n``), floored at 0.

    Args:
        values: a (U, n) array or a list of U one-dimensional arrays (item counts may differ),
            U >= 2, each with >= 2 items.

    Raises:
        ValueError: fewer than 2 units, or a unit with fewer than 2 items.
    """
    units = [np.asarray(v, float).ravel() for v in values]
    if len(units) < 2:
        raise ValueError(f"values must hold at least 2 units, got {len(units)}")
    if min(len(u) for u in units) < 2:
        raise ValueError("every unit of values must hold at least 2 items")
    sizes = np.array([len(u) for u in units], float)
    means = np.array([u.mean() for u in units])
    var_item = float(sum(((u - u.mean()) ** 2).sum() for u in units) / (sizes - 1).sum())
    var_means = float(means.var(ddof=1))
    var_unit = max(0.0, var_means - var_item * float(np.mean(1 / sizes)))
    return Components(float(means.mean()), var_unit, var_item, len(units), float(sizes.mean()), var_means)


def _check_sizes(units: int, items: int, seeds: int) -> None:
    if seeds < 1 or units < 2 or units % seeds:
        raise ValueError(f"units must be >= 2 and a multiple of seeds, got units={units}, seeds={seeds}")
    if items < 1:
        raise ValueError(f"items must be >= 1, got {items}")


def half_width(var_unit: float, var_item: float, units: int, items: int, *, var_seed: float = 0.0,
               seeds: int = 1, level: float = 0.95, method: str = "expanded") -> float:
    """Expected half-width of the interval of a mean over units (formulas (1), (2) above).

    Args:
        var_unit: split-level variance (with ``seeds=1``: split and seed together).
        var_item: variance of one item's contribution within a unit.
        units: S x R units (S splits, R = ``seeds`` per split), >= 2.
        items: test items per unit.
        var_seed: seed-level variance (only when split and seed are separated).
        seeds: training seeds per split.
        level: coverage.
        method: ``"expanded"`` (the notebooks' bootstrap interval) or ``"t"`` (a t interval
            with the exact variance (1)).

    Raises:
        ValueError: bad sizes, a negative variance or an unknown method.
    """
    if min(var_unit, var_item, var_seed) < 0:
        raise ValueError("variances must be >= 0")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_sizes(units, items, seeds)
    q = float(_st.t.ppf(0.5 + level / 2, units - 1))
    if method == "t":
        splits = units // seeds
        return q * math.sqrt(var_unit / splits + var_seed / units + var_item / (units * items))
    total = var_unit + var_seed + var_item / items
    v_boot = ((units - 1) / units * total + var_item / items) / units
    return math.sqrt(units / (units - 1)) * q * math.sqrt(v_boot)


def units_for_half_width(target: float, var_unit: float, var_item: float, items: int, *,
                         max_units: int = 1000, **kwargs) -> int | None:
    """The fewest units (>= 2) whose expected half-width is at most ``target``.

    Args:
        target: wanted half-width (> 0).
        max_units: search limit; ``None`` is returned when even that many do not reach it.
        **kwargs: as :func:`half_width` (``var_seed``, ``seeds``, ``level``, ``method``).
    """
    if target <= 0:
        raise ValueError(f"target must be > 0, got {target}")
    step = kwargs.get("seeds", 1)
    for u in range(max(2, step), max_units + 1, step):
        if half_width(var_unit, var_item, u, items, **kwargs) <= target:
            return u
    return None


def items_for_half_width(target: float, var_unit: float, var_item: float, units: int, *,
                         max_items: int = 100_000, **kwargs) -> int | None:
    """The fewest test items per unit whose expected half-width is at most ``target``.

    ``None`` when no number of items reaches it (the unit variance alone is too large).
    """
    if target <= 0:
        raise ValueError(f"target must be > 0, got {target}")
    if half_width(var_unit, var_item, units, max_items, **kwargs) > target:
        return None
    lo, hi = 1, max_items
    while lo < hi:
        mid = (lo + hi) // 2
        if half_width(var_unit, var_item, units, mid, **kwargs) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def drop_contributions(own: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per-item contribution to a mean drop: ``mean over (model, condition) of own - other``.

    Args:
        own: (U, M, n) scores of each model on its own view.
        other: (U, M, K, n) scores of each model under the K other conditions.

    Returns:
        (U, n) array.
    """
    own, other = np.asarray(own, float), np.asarray(other, float)
    return (own[:, :, None, :] - other).mean(axis=(1, 2))


def log_ratio_contributions(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Linearised contributions of log(mean num / mean den) (the delta method).

    log(A / B) moves, to first order, by ``a / A - b / B`` when one item's contributions
    (a, b) change, so the mean of ``num / A - den / B`` has the log ratio's variance.

    Args:
        num, den: (U, n) per-item contributions of the numerator and denominator drops.

    Raises:
        ValueError: a mean drop that is not positive (the log ratio is then undefined).
    """
    num, den = np.asarray(num, float), np.asarray(den, float)
    a, b = float(num.mean()), float(den.mean())
    if a <= 0 or b <= 0:
        raise ValueError(f"both mean drops must be > 0 to linearise the log ratio, got {a}, {b}")
    return num / a - den / b


def synthesis_pilot(result: dict) -> dict[str, Components]:
    """Variance components of notebook 03's headline statistics from one of its results.

    Args:
        result: one data set's entry of notebook 03's ``results.json`` (``runs/<data set>``),
            with its per-item records; at least 2 units with the same number of test items.

    Returns:
        ``{"mean_drop_faithful", "mean_drop_corruption", "log_ratio"}`` → :class:`Components`
        (the log ratio's from :func:`log_ratio_contributions`; absent when a drop is <= 0).
    """
    from .synthesis import unit_scores

    scores = unit_scores(result)
    views = np.stack([np.asarray(v, float) for v in scores["views"]])        # (U, T, T, n)
    corr = np.stack([np.asarray(c, float) for c in scores["corruptions"]])   # (U, T, K, n)
    T = views.shape[1]
    own = views[:, np.arange(T), np.arange(T)]                                # (U, T, n)
    off = np.stack([np.delete(views[:, i], i, axis=1) for i in range(T)], axis=1)
    faithful, corruption = drop_contributions(own, off), drop_contributions(own, corr)
    out = {"mean_drop_faithful": variance_components(faithful),
           "mean_drop_corruption": variance_components(corruption)}
    if faithful.mean() > 0 and corruption.mean() > 0:
        out["log_ratio"] = variance_components(log_ratio_contributions(corruption, faithful))
    return out
