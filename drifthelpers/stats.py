"""Uncertainty and verdicts for the drift experiments (NumPy and SciPy only).

A trained model's score moves with the data split, the training seed and the handful of test
items it is scored on. This module turns per-item scores into intervals that cover those
sources, and intervals into verdicts on the paper's claims:

* :func:`hierarchical_bootstrap`: resample the top-level units (split x seed) with
  replacement, then the test items within each drawn unit with replacement. One draw of items
  is shared by every view, corruption and arm of that unit, so the pairing of an item across
  conditions is kept. Any statistic of the per-unit item means can be bootstrapped.
* :func:`protocol_statistics`: the drift-synthesis statistics (cell means of the train x test
  matrix, mean faithful and corruption drops, the log of their ratio, the rank correlation of
  the two protocols' model rankings, top-1 agreement and selection regret) in one bootstrap.
* :func:`friedman`, :func:`variance_ratio`, :func:`paired_difference`, :func:`reliability`:
  tests before rankings, spread claims and paired arms.
* :func:`confusion_matrix`, :func:`per_class_recall`, :func:`balanced_accuracy`,
  :func:`iou_counts`, :func:`iou_pooled`, :func:`iou_per_image`: per-item metrics.
* :class:`Claim`, :func:`judge`, :class:`Verdict`: a computed verdict per claim, with its
  rule and, when undecided, the number of units that would decide it
  (:func:`units_to_decide`, :func:`paired_sample_size`).

Example:
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.random((6, 2, 40)) < np.array([0.8, 0.6])[:, None]   # 6 units, 2 arms, 40 items
    >>> est = paired_difference(scores[:, 0], scores[:, 1], n_boot=500, seed=0)
    >>> est.low <= est.value <= est.high
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats as _st

__all__ = [
    "Estimate", "Claim", "Verdict", "hierarchical_bootstrap", "bootstrap_estimates", "spearman_rows",
    "protocol_statistics", "friedman", "reliability", "paired_difference", "variance_ratio", "confusion_matrix",
    "per_class_recall", "balanced_accuracy", "iou_counts", "iou_pooled", "iou_per_image", "judge",
    "units_to_decide", "paired_sample_size", "format_estimate", "claims_table",
]

Units = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray | Sequence[np.ndarray]]


# --------------------------------------------------------------------------- estimates


def _num(x) -> float | None:
    """A finite float, or ``None`` (JSON has no inf or nan)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class Estimate:
    """A point value with its interval.

    Attributes:
        value: the statistic on the data (``None`` when undefined).
        low, high: interval bounds (``None`` when undefined or unbounded on that side).
        n: sample sizes, e.g. ``{"units": 6, "items": 28, "resamples": 2000}``.
        method: how the interval was made (``"expanded"``, ``"percentile"``, ``"bca"``, ``"F"``).
        level: the interval's coverage (0.95).
        reason: why the value or a bound is missing, empty otherwise.
        undefined_fraction: share of resamples on which the statistic was undefined.
    """

    value: float | None
    low: float | None
    high: float | None
    n: dict = field(default_factory=dict)
    method: str = "percentile"
    level: float = 0.95
    reason: str = ""
    undefined_fraction: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready: ``{value, low, high, n, method, level, reason, undefined_fraction}``."""
        d = asdict(self)
        for k in ("value", "low", "high"):
            d[k] = _num(d[k])
        return d

    @property
    def contains_value(self) -> bool:
        """The interval holds the point value (an unbounded side counts as holding it)."""
        if self.value is None:
            return False
        lo = -math.inf if self.low is None else self.low
        hi = math.inf if self.high is None else self.high
        return lo <= self.value <= hi


def format_estimate(e: Estimate | dict, digits: int = 3) -> str:
    """``"0.024 [0.011, 0.040]"``; ``"undefined (reason)"``; an unbounded side prints as ``∞``.

    Example:
        >>> format_estimate(Estimate(0.5, 0.25, None, reason="upper bound unbounded"))
        '0.500 [0.250, ∞]'
    """
    d = e.to_dict() if isinstance(e, Estimate) else e
    if d.get("value") is None:
        return f"undefined ({d.get('reason') or 'no data'})"
    lo = "-∞" if d.get("low") is None else f"{d['low']:.{digits}f}"
    hi = "∞" if d.get("high") is None else f"{d['high']:.{digits}f}"
    return f"{d['value']:.{digits}f} [{lo}, {hi}]"


# --------------------------------------------------------------------------- the bootstrap


def _as_units(scores) -> list[np.ndarray]:
    if isinstance(scores, np.ndarray):
        if scores.ndim < 2:
            raise ValueError(f"scores must have shape (units, ..., items), got {scores.shape}")
        return [np.asarray(s, float) for s in scores]
    out = [np.asarray(s, float) for s in scores]
    if not out:
        raise ValueError("scores must hold at least one unit")
    return out


def _prepare(scores: Units):
    """Flatten every named array to (cells, items) per unit and concatenate the names."""
    named = dict(scores) if isinstance(scores, Mapping) else {"": scores}
    per_name = {k: _as_units(v) for k, v in named.items()}
    n_units = {len(v) for v in per_name.values()}
    if len(n_units) != 1:
        raise ValueError(f"every named score array must have the same number of units, got {n_units}")
    U = n_units.pop()
    layout, blocks = [], []
    for name, units in per_name.items():
        shape = units[0].shape[:-1]
        if any(u.shape[:-1] != shape for u in units):
            raise ValueError(f"scores {name!r}: every unit must have the same cell shape {shape}")
        layout.append((name, shape, int(np.prod(shape, dtype=int))))
    for u in range(U):
        items = {per_name[name][u].shape[-1] for name, _, _ in layout}
        if len(items) != 1:
            raise ValueError(f"unit {u}: the named arrays have different item counts {items}; items are paired")
        if items == {0}:
            raise ValueError(f"unit {u} has no items")
        blocks.append(np.concatenate([per_name[name][u].reshape(size, -1) for name, _, size in layout]))
    return blocks, layout, isinstance(scores, Mapping)


def _unflatten(flat: np.ndarray, layout, named: bool):
    """(..., cells) -> the named arrays (..., *shape)."""
    out, start = {}, 0
    for name, shape, size in layout:
        out[name] = flat[..., start : start + size].reshape(*flat.shape[:-1], *shape)
        start += size
    return out if named else out[""]


def _resample_means(blocks, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, U, cells): item means of ``n`` hierarchical resamples."""
    U, C = len(blocks), blocks[0].shape[0]
    top = rng.integers(0, U, size=(n, U))
    out = np.empty((n, U, C))
    for s, block in enumerate(blocks):
        where = np.nonzero(top == s)
        k = len(where[0])
        if not k:
            continue
        m = block.shape[1]
        counts = rng.multinomial(m, np.full(m, 1.0 / m), size=k)
        out[where] = counts @ block.T / m
    return out


def _bca_levels(boot, value, jack, alpha):
    """BCa-adjusted percentile levels, or ``None`` when the correction is undefined."""
    below = np.mean(boot < value) + 0.5 * np.mean(boot == value)
    if not 0 < below < 1:
        return None
    jack = jack[np.isfinite(jack)]
    if len(jack) < 3:
        return None
    z0 = _st.norm.ppf(below)
    d = jack.mean() - jack
    denom = 6.0 * np.sum(d**2) ** 1.5
    a = np.sum(d**3) / denom if denom > 0 else 0.0
    z = _st.norm.ppf([alpha / 2, 1 - alpha / 2])
    adj = _st.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    return adj if np.all(np.isfinite(adj)) and np.all((adj >= 0) & (adj <= 1)) else None


def _top_level_size(n: dict) -> int:
    """The sample size the interval's width is set by: the units, or for a single unit (whose
    items are the only thing resampled) its items."""
    units = int(n.get("units", 0))
    if units == 1:
        items = n.get("items", 0)
        return int(min(items) if isinstance(items, list) else items)
    return units


def _expanded_z(alpha: float, units: int) -> float:
    """sqrt(U / (U - 1)) times Student's t quantile with U - 1 degrees of freedom."""
    return math.sqrt(units / (units - 1)) * float(_st.t.ppf(1 - alpha / 2, units - 1))


def _expanded_levels(alpha: float, units: int) -> np.ndarray:
    """Percentile levels widened for few top-level units (Hesterberg's expanded percentile
    interval): the normal quantile is replaced by sqrt(U / (U - 1)) times Student's t with
    U - 1 degrees of freedom, which undoes the bootstrap's (U - 1) / U variance shrinkage and
    the extra uncertainty of a variance estimated from U units."""
    if units < 2:
        return np.array([0.0, 1.0])
    p = float(_st.norm.cdf(-_expanded_z(alpha, units)))
    return np.array([p, 1 - p])


def bootstrap_estimates(value: np.ndarray, boot: np.ndarray, n: dict, level: float = 0.95,
                        method: str = "expanded", jack: np.ndarray | None = None) -> list[Estimate]:
    """Turn bootstrap replicates into :class:`Estimate` objects, one per statistic.

    Args:
        value: (K,) point values.
        boot: (B, K) replicates; ``nan`` marks an undefined replicate, ``±inf`` one that is
            beyond every bound on that side (e.g. a ratio whose denominator reached 0).
        n: sample sizes recorded with each estimate.
        method: ``"expanded"`` (percentile levels widened for the number of units, the
            default), ``"percentile"`` or ``"bca"`` (needs ``jack``, (U, K) leave-one-unit-out values).

    Returns:
        K estimates; a bound that lands on ``±inf`` is ``None`` with a reason.
    """
    alpha = 1 - level
    out = []
    for k in range(boot.shape[1]):
        v, b = float(value[k]), boot[:, k]
        ok = ~np.isnan(b)
        frac = float(1 - ok.mean())
        if not math.isfinite(v):
            out.append(Estimate(None, None, None, n, method, level, "undefined on the data", frac))
            continue
        if ok.sum() < 2:
            out.append(Estimate(v, None, None, n, method, level, "undefined on almost every resample", frac))
            continue
        levels, used = np.array([alpha / 2, 1 - alpha / 2]), "percentile"
        if method == "expanded":
            levels, used = _expanded_levels(alpha, _top_level_size(n)), "expanded"
        elif method == "bca" and jack is not None:
            adj = _bca_levels(b[ok], v, jack[:, k], alpha)
            if adj is not None:
                levels, used = adj, "bca"
        big = np.clip(b[ok], -1e300, 1e300)  # ±inf as huge finite values: quantiles interpolate cleanly
        lo, hi = np.quantile(big, levels)
        lo, hi = (-math.inf if lo <= -1e299 else lo), (math.inf if hi >= 1e299 else hi)
        reason = [f"undefined on {frac:.1%} of resamples (left out)"] if frac > 0 else []
        reason += [f"{side} bound unbounded" for side, b in (("lower", lo), ("upper", hi)) if not math.isfinite(b)]
        out.append(Estimate(v, _num(lo), _num(hi), n, used, level, "; ".join(reason), frac))
    return out


def hierarchical_bootstrap(scores: Units, statistic: Callable, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95, method: str = "expanded", chunk: int = 0,
                           return_replicates: bool = False):
    """Two-level bootstrap: units with replacement, then items within each drawn unit.

    Args:
        scores: per-unit, per-item scores: an array (U, *cells, I), a list of U arrays
            (*cells, I_u) (item counts may differ between units), or a dict of such arrays
            with the same units and items (e.g. ``{"views": (U, 12, 12, I), "corrupt":
            (U, 12, 10, I)}``). Within a unit one draw of items applies to every cell and
            every named array: an item's scores under every view and corruption move together.
        statistic: vectorised function of the per-unit item means, ``(B, U, *cells)`` (or a
            dict of those) → ``(B,)`` or ``(B, K)``; ``nan`` = undefined, ``±inf`` = beyond
            any bound. It is called on the data itself with ``B = 1``.
        n_boot: resamples (1000-2000 are enough for 95 % intervals).
        seed: seed of the :class:`numpy.random.Generator` (results are reproducible).
        level: coverage of the interval.
        method: ``"expanded"`` (default: the percentile interval with its levels widened for
            the number of units, see :func:`_expanded_levels`; plain percentile intervals cover
            about 90 % instead of 95 % with 10 units), ``"percentile"``, or ``"bca"``
            (bias-corrected and accelerated; acceleration from leave-one-unit-out values;
            falls back to percentile where undefined).
        chunk: resamples per batch (0: chosen to keep the batch near 4 million numbers).
        return_replicates: also return the (B, K) replicates.

    Returns:
        An :class:`Estimate` (scalar statistic) or a list of them (one per output), and the
        replicates when asked.
    """
    if n_boot < 10:
        raise ValueError(f"n_boot must be >= 10, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if method not in ("expanded", "percentile", "bca"):
        raise ValueError(f"method must be 'expanded', 'percentile' or 'bca', got {method!r}")
    blocks, layout, named = _prepare(scores)
    U, C = len(blocks), blocks[0].shape[0]
    means = np.stack([b.mean(1) for b in blocks])

    def stat(flat):
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.asarray(statistic(_unflatten(flat, layout, named)), float)
        return r.reshape(flat.shape[0], -1)

    value = stat(means[None])[0]
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, int(4e6 // max(U * C, 1)))
    boot = np.concatenate([stat(_resample_means(blocks, min(chunk, n_boot - s), rng))
                           for s in range(0, n_boot, chunk)])
    jack = None
    if method == "bca" and U > 2:
        jack = np.concatenate([stat(np.delete(means, u, axis=0)[None]) for u in range(U)])
    items = sorted({b.shape[1] for b in blocks})
    n = {"units": U, "items": items[0] if len(items) == 1 else items, "resamples": int(n_boot)}
    est = bootstrap_estimates(value, boot, n, level, method, jack)
    res = est[0] if len(est) == 1 else est
    return (res, boot) if return_replicates else res


# --------------------------------------------------------------------------- rank statistics


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of ``x[b]`` and ``y[b]`` for every row b (ties: average ranks).

    Args:
        x, y: (B, K) arrays.

    Returns:
        (B,) correlations; ``nan`` where a row is constant.

    Example:
        >>> spearman_rows(np.array([[1, 2, 3, 4.]]), np.array([[2, 1, 4, 3.]])).round(2).tolist()
        [0.6]
    """
    rx = _st.rankdata(np.asarray(x, float), axis=-1)
    ry = _st.rankdata(np.asarray(y, float), axis=-1)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (rx * ry).sum(-1) / den
    return np.where(den > 0, r, np.nan)


def _log_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """log(num / den) on the extended line: +inf when only the denominator is <= 0, -inf when
    only the numerator is, nan when both are (the ratio of two non-positive drops means nothing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(np.where((num > 0) & (den > 0), num / np.where(den > 0, den, 1), 1.0))
    out = np.where((num > 0) & (den <= 0), np.inf, out)
    out = np.where((num <= 0) & (den > 0), -np.inf, out)
    return np.where((num <= 0) & (den <= 0), np.nan, out)


PROTOCOL_STATISTICS = ("mean_drop_faithful", "mean_drop_corruption", "log_ratio", "spearman_rho",
                       "top1_agreement", "selection_regret")


def _protocol_stat(means: dict) -> np.ndarray:
    """(B, 6 + T*V) per resample: the scalar protocol statistics, then the cell means."""
    m = means["views"].mean(1)  # (B, T, V): mean over units
    c = means["corruptions"].mean(1)  # (B, T, K)
    T = m.shape[1]
    diag = np.diagonal(m, axis1=1, axis2=2)  # (B, T)
    off = ~np.eye(T, dtype=bool)
    faithful = np.where(off, m, 0).sum(2) / (T - 1)  # (B, T) score per training view
    corrupt = c.mean(2)
    drop_f = (diag - faithful).mean(1)
    drop_c = (diag[:, :, None] - c).mean((1, 2))
    rho = spearman_rows(faithful, corrupt)
    pick_f, pick_c = faithful.argmax(1), corrupt.argmax(1)
    rows = np.arange(len(m))
    regret = faithful[rows, pick_f] - faithful[rows, pick_c]
    scalars = np.stack([drop_f, drop_c, _log_ratio(drop_c, drop_f), rho, (pick_f == pick_c).astype(float),
                        regret], 1)
    return np.concatenate([scalars, m.reshape(len(m), -1)], 1)


def protocol_statistics(views, corruptions, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                        method: str = "expanded") -> dict:
    """Faithful drift against corruption testing, every statistic with its interval.

    Args:
        views: per-item scores of each model on each view, (U, T, T, I) or a list of U
            (T, T, I_u) arrays (rows: training view, columns: test view).
        corruptions: per-item scores of each model on its own view under each corruption,
            (U, T, K, I), the same items in the same order as ``views``.

    Returns:
        ``{name: Estimate}`` for :data:`PROTOCOL_STATISTICS` (the mean faithful drop is the mean
        off-diagonal ``M[i, i] - M[i, j]`` of the unit-mean matrix; the corruption drop the mean
        ``M[i, i] - C[i, k]``; ``log_ratio`` = log(corruption drop / faithful drop); the ranking
        score of a training view is its mean off-diagonal score (faithful) or its mean score
        under corruptions; ``top1_agreement`` is 1 when both pick the same view;
        ``selection_regret`` is the faithful score lost by picking the corruption protocol's
        choice), ``"ratio"`` (exp of the log-ratio bounds), ``"cell_mean"`` (value, low and
        high as T x T lists) and ``"cell_sd"`` (the standard deviation of unit cell means
        across units, ddof=1; ``None`` for a single unit).
    """
    scores = {"views": views, "corruptions": corruptions}
    ests = hierarchical_bootstrap(scores, _protocol_stat, n_boot, seed, level, method)
    out = dict(zip(PROTOCOL_STATISTICS, ests[: len(PROTOCOL_STATISTICS)]))
    lr = out["log_ratio"]
    exp = lambda v: None if v is None else float(np.exp(v))  # noqa: E731
    low = 0.0 if lr.value is not None and lr.low is None else exp(lr.low)  # log bound -inf: ratio bound 0
    reason = lr.reason.replace("lower bound unbounded", "lower bound 0: the corruption drop can be <= 0")
    out["ratio"] = Estimate(exp(lr.value), low, exp(lr.high), lr.n, lr.method, lr.level,
                            reason or ("" if lr.value is not None else "undefined"), lr.undefined_fraction)
    if lr.value is None:
        both = (out["mean_drop_corruption"].value or 0.0) <= 0 and (out["mean_drop_faithful"].value or 0.0) <= 0
        out["log_ratio"].reason = out["ratio"].reason = (
            "undefined: the mean faithful and corruption drops are both <= 0" if both
            else "unbounded: one of the mean drops is <= 0")
    cells = ests[len(PROTOCOL_STATISTICS):]
    T = int(round(math.sqrt(len(cells))))
    grid = lambda key: np.array([getattr(e, key) for e in cells], dtype=object).reshape(T, T).tolist()  # noqa: E731
    out["cell_mean"] = {"value": grid("value"), "low": grid("low"), "high": grid("high"), "n": cells[0].n}
    unit_means = np.stack([np.asarray(u, float).mean(-1) for u in _as_units(views)])
    out["cell_sd"] = unit_means.std(0, ddof=1).tolist() if len(unit_means) > 1 else None
    return out


# --------------------------------------------------------------------------- tests


def friedman(scores: np.ndarray, alpha: float = 0.05) -> dict:
    """Do the treatments differ at all? Friedman's test over blocks.

    Args:
        scores: (blocks, treatments), e.g. (split x seed units, 12 training presets).

    Returns:
        ``{"statistic", "p_value", "kendall_w", "blocks", "treatments", "alpha", "rejects"}``;
        ``p_value`` is ``None`` (and ``rejects`` False) when the test is undefined (fewer than
        3 treatments or 2 blocks, or every block tied).
    """
    x = np.asarray(scores, float)
    if x.ndim != 2:
        raise ValueError(f"scores must be (blocks, treatments), got shape {x.shape}")
    b, k = x.shape
    out = {"statistic": None, "p_value": None, "kendall_w": None, "blocks": b, "treatments": k, "alpha": alpha,
           "rejects": False}
    if k < 3 or b < 2 or np.all(np.ptp(x, axis=1) == 0):
        out["reason"] = "needs >= 3 treatments, >= 2 blocks and some variation within a block"
        return out
    res = _st.friedmanchisquare(*x.T)
    stat, p = _num(res.statistic), _num(res.pvalue)
    out.update(statistic=stat, p_value=p, rejects=bool(p is not None and p < alpha))
    if stat is not None:
        out["kendall_w"] = stat / (b * (k - 1))
    return out


def reliability(scores: np.ndarray, target: float = 0.8) -> dict:
    """How much of the spread of treatment means is real: a one-way random-effects split.

    Args:
        scores: (repeats, treatments), e.g. per-unit scores of each training preset.
        target: reliability wanted.

    Returns:
        ``{"var_between", "var_noise", "reliability", "repeats", "repeats_for_target"}`` where
        reliability = var_between / (var_between + var_noise / repeats), and
        ``repeats_for_target`` the repeats per treatment that reach ``target`` (``None`` when
        no between-treatment variance is detectable).
    """
    x = np.asarray(scores, float)
    r, k = x.shape
    if r < 2 or k < 2:
        raise ValueError(f"reliability needs >= 2 repeats and >= 2 treatments, got shape {x.shape}")
    var_noise = float(x.var(0, ddof=1).mean())
    var_between = max(float(x.mean(0).var(ddof=1)) - var_noise / r, 0.0)
    rel = var_between / (var_between + var_noise / r) if var_between + var_noise > 0 else 0.0
    need = None
    if var_between > 0:
        need = int(math.ceil(target / (1 - target) * var_noise / var_between))
    return {"var_between": var_between, "var_noise": var_noise, "reliability": rel, "repeats": r,
            "repeats_for_target": need, "target": target}


def paired_difference(a, b, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                      method: str = "expanded") -> Estimate:
    """Mean of ``a - b`` over units, paired by unit and by item, with a hierarchical interval.

    Args:
        a, b: per-unit per-item scores of two arms, (U, I) or lists of U (I_u,) arrays; unit u of
            ``a`` and of ``b`` share split and seed, item i is the same test item in both.

    Returns:
        An :class:`Estimate` of mean(a) - mean(b).
    """
    ua, ub = _as_units(a), _as_units(b)
    if len(ua) != len(ub) or any(x.shape != y.shape for x, y in zip(ua, ub)):
        raise ValueError("a and b must have the same units and items (they are paired)")
    pair = [np.stack([x, y]) for x, y in zip(ua, ub)]
    return hierarchical_bootstrap(pair, lambda m: m[..., 0].mean(1) - m[..., 1].mean(1), n_boot, seed, level, method)


def variance_ratio(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Is the spread of ``b`` larger than that of ``a``? var(b) / var(a) with an F interval.

    Args:
        a, b: one value per run (e.g. the final test metric per seed) of two arms.

    Returns:
        ``{"ratio": Estimate (F-distribution interval of var_b / var_a), "p_greater": one-sided
        F-test p-value of var_b > var_a, "levene_p": Brown-Forsythe (median-centred Levene)
        p-value, "sd_a", "sd_b"}``. A ratio with a zero variance is undefined.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"variance_ratio needs >= 2 runs per arm, got {len(a)} and {len(b)}")
    va, vb = a.var(ddof=1), b.var(ddof=1)
    da, db = len(a) - 1, len(b) - 1
    n = {"runs_a": len(a), "runs_b": len(b)}
    out = {"sd_a": float(np.sqrt(va)), "sd_b": float(np.sqrt(vb)), "p_greater": None, "levene_p": None}
    if va <= 0 or vb <= 0:
        out["ratio"] = Estimate(None, None, None, n, "F", level, "a variance is 0: the ratio is undefined")
        return out
    f = vb / va
    alpha = 1 - level
    lo = f / _st.f.ppf(1 - alpha / 2, db, da)
    hi = f / _st.f.ppf(alpha / 2, db, da)
    out["ratio"] = Estimate(float(f), float(lo), float(hi), n, "F", level)
    out["p_greater"] = float(_st.f.sf(f, db, da))
    with np.errstate(divide="ignore", invalid="ignore"):  # two runs per arm: Levene's W is undefined
        out["levene_p"] = _num(_st.levene(a, b, center="median").pvalue)
    return out


# --------------------------------------------------------------------------- per-item metrics


def confusion_matrix(pred, target, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of items of true class i predicted as j.

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 0, 1], 2).tolist()
        [[1, 1], [0, 1]]
    """
    p, t = np.asarray(pred, int).ravel(), np.asarray(target, int).ravel()
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in size: {p.shape} vs {t.shape}")
    if p.size and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= num_classes):
        raise ValueError(f"class indices must be in 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_recall(pred, target, num_classes: int) -> np.ndarray:
    """Recall of each class (``nan`` for a class with no item)."""
    cm = confusion_matrix(pred, target, num_classes).astype(float)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def balanced_accuracy(pred, target, num_classes: int) -> float:
    """Mean recall over the classes present in ``target``."""
    r = per_class_recall(pred, target, num_classes)
    return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")


def iou_counts(pred_masks, target_masks) -> tuple[np.ndarray, np.ndarray]:
    """Per-item intersection and union pixel counts of binary masks (N, ...)."""
    p, t = np.asarray(pred_masks).astype(bool), np.asarray(target_masks).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    p, t = p.reshape(len(p), -1), t.reshape(len(t), -1)
    return (p & t).sum(1), (p | t).sum(1)


def iou_pooled(inter, union) -> float:
    """IoU over the whole set: sum of intersections / sum of unions (1.0 when all unions are 0)."""
    u = float(np.sum(union))
    return float(np.sum(inter)) / u if u > 0 else 1.0


def iou_per_image(inter, union) -> np.ndarray:
    """Each image's IoU (an image with empty prediction and target scores 1.0); its mean is
    the paper's IoU (the public code evaluated with batch 1)."""
    i, u = np.asarray(inter, float), np.asarray(union, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(u > 0, i / np.where(u > 0, u, 1), 1.0)


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Claim:
    """A claim of the paper in a form an interval can decide.

    Attributes:
        name: short identifier (``"microscopy: faithful drift less severe"``).
        statistic: key of the estimate it is judged on.
        kind: ``"greater"`` (the value exceeds ``threshold``), ``"less"``, or ``"within"``
            (the value lies in ``[low, high]``, an equivalence range around the paper's value).
        threshold: decision threshold for ``greater`` / ``less``.
        low, high: the range for ``within``.
        paper: the paper's value, for the record.
        text: the claim in words, with its source.
        gate: name of a precondition (e.g. ``"friedman"``) that must hold for a verdict.
    """

    name: str
    statistic: str
    kind: str
    threshold: float | None = None
    low: float | None = None
    high: float | None = None
    paper: float | None = None
    text: str = ""
    gate: str = ""

    def __post_init__(self):
        if self.kind in ("greater", "less") and self.threshold is None:
            raise ValueError(f"claim {self.name!r}: kind {self.kind!r} needs a threshold")
        if self.kind == "within" and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError(f"claim {self.name!r}: kind 'within' needs low <= high")
        if self.kind not in ("greater", "less", "within"):
            raise ValueError(f"claim kind must be 'greater', 'less' or 'within', got {self.kind!r}")


@dataclass
class Verdict:
    """The computed verdict on one claim (JSON-ready with :meth:`to_dict`).

    Attributes:
        claim: the claim's name; ``text``: the claim in words.
        value, low, high, n: the estimate it was judged on.
        verdict: ``"supported"``, ``"contradicted"`` or ``"undecided"``.
        rule: the rule that produced the verdict, in words.
        paper: the paper's value.
        units_to_decide: for an undecided claim, the sample size at which an interval of the
            same centre would decide it (``None`` when no sample size would); counted in
            ``size_unit``: ``"units"`` (split x seed), or ``"items"`` for a single unit, or
            ``"runs"`` for a per-run test.
        size_unit: what ``units_to_decide`` counts.
        method, level: how the interval was made and its coverage (from the estimate).
    """

    claim: str
    value: float | None
    low: float | None
    high: float | None
    n: dict
    verdict: str
    rule: str
    paper: float | None = None
    text: str = ""
    units_to_decide: int | None = None
    size_unit: str = "units"
    method: str = ""
    level: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("value", "low", "high", "paper"):
            d[k] = _num(d[k])
        return d


def units_to_decide(value: float, low: float | None, high: float | None, n: int,
                    thresholds: Sequence[float], method: str = "percentile", level: float = 0.95,
                    max_units: int = 100000) -> int | None:
    """Units at which the interval would stop spanning every threshold it now spans.

    Assumes the point value stays and the standard error shrinks as 1/sqrt(units). For an
    ``"expanded"`` interval the width also carries the t quantile of :func:`_expanded_levels`,
    which shrinks as the units grow; other intervals use the normal quantile. ``None`` when the
    value sits on a threshold, a side is unbounded, or no size up to ``max_units`` would do.

    Example:
        >>> units_to_decide(0.1, -0.1, 0.3, 4, [0.0])   # half-width 0.2 must shrink to 0.1
        16
    """
    if value is None or low is None or high is None or n < 1:
        return None
    alpha = 1 - level
    expanded = method == "expanded" and n >= 2
    z = (lambda m: _expanded_z(alpha, m)) if expanded else (lambda m: float(_st.norm.ppf(1 - alpha / 2)))
    need = []
    for t in thresholds:
        if not low <= t <= high:
            continue
        dist = abs(value - t)
        half = (value - low) if value > t else (high - value)
        if dist <= 0 or half <= 0:
            return None
        se1 = half / z(n) * math.sqrt(n)  # the standard error of a single unit
        m = max(n, 2) if expanded else math.ceil((se1 * z(n) / dist) ** 2)
        if expanded:
            while m <= max_units and z(m) * se1 / math.sqrt(m) >= dist:
                m = m + 1 if m < 64 else int(m * 1.05) + 1
            if m > max_units:
                return None
        need.append(max(m, n + 1))
    return max(need) if need else None


def judge(claim: Claim, estimate: Estimate | dict, gate: tuple[bool, str] | None = None) -> Verdict:
    """The verdict of ``estimate`` on ``claim``.

    Rules (``lo``/``hi`` the interval; an unbounded side extends to infinity):

    * ``greater t``: lo > t → supported ("interval lies above t"); hi < t → contradicted
      ("interval lies below t"); otherwise undecided ("interval spans the decision threshold t").
    * ``less t``: the mirror image.
    * ``within [a, b]``: the interval inside [a, b] → supported; disjoint from it →
      contradicted; otherwise undecided ("interval overlaps an edge of the paper's range").
    * an undefined estimate, or a failed gate (e.g. the Friedman test did not reject), →
      undecided with the reason as the rule.

    Args:
        gate: ``(passed, why)`` of the claim's precondition, when it has one.
    """
    d = estimate.to_dict() if isinstance(estimate, Estimate) else dict(estimate)
    v, lo, hi, n = d.get("value"), d.get("low"), d.get("high"), d.get("n", {})
    if not isinstance(n, dict):
        units, size_unit = int(n), "units"
    elif "units" in n:
        units = _top_level_size(n)
        size_unit = "items" if n["units"] == 1 else "units"
    else:
        units, size_unit = min(n.get("runs_a", 0), n.get("runs_b", 0)), "runs"
    base = dict(claim=claim.name, value=v, low=lo, high=hi, n=n, paper=claim.paper, text=claim.text,
                size_unit=size_unit, method=d.get("method", ""), level=d.get("level"))
    if v is None:
        return Verdict(**base, verdict="undecided", rule=f"statistic undefined: {d.get('reason') or 'no data'}")
    if gate is not None and not gate[0]:
        return Verdict(**base, verdict="undecided", rule=gate[1])
    L = -math.inf if lo is None else lo
    H = math.inf if hi is None else hi
    if claim.kind in ("greater", "less"):
        t = claim.threshold
        above, below = L > t, H < t
        if claim.kind == "greater":
            verdict = "supported" if above else "contradicted" if below else "undecided"
        else:
            verdict = "supported" if below else "contradicted" if above else "undecided"
        rule = (f"interval lies above {t:g}" if above else f"interval lies below {t:g}" if below
                else f"interval spans the decision threshold {t:g}")
        edges = [t]
    else:
        a, b = claim.low, claim.high
        if a <= L and H <= b:
            verdict, rule = "supported", f"interval lies inside the paper's range [{a:g}, {b:g}]"
        elif H < a or L > b:
            verdict, rule = "contradicted", f"interval lies outside the paper's range [{a:g}, {b:g}]"
        else:
            verdict, rule = "undecided", f"interval overlaps an edge of the paper's range [{a:g}, {b:g}]"
        edges = [a, b]
    need = (units_to_decide(v, lo, hi, units, edges, d.get("method", "percentile"), d.get("level", 0.95))
            if verdict == "undecided" else None)
    return Verdict(**base, verdict=verdict, rule=rule, units_to_decide=need)


def paired_sample_size(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8,
                       max_n: int = 100000) -> int | None:
    """Pairs needed to detect a mean paired difference ``effect`` (two-sided t-test, exact power
    from the non-central t distribution).

    Example:
        >>> paired_sample_size(0.2, 0.2)   # a difference of one paired SD
        10
    """
    if sd <= 0 or effect == 0:
        return None
    d = abs(effect) / sd
    for n in range(2, max_n + 1):
        df = n - 1
        tc = _st.t.ppf(1 - alpha / 2, df)
        nc = d * math.sqrt(n)
        if _st.nct.sf(tc, df, nc) + _st.nct.cdf(-tc, df, nc) >= power:
            return n
    return None


def claims_table(verdicts: Sequence[Verdict | dict], digits: int = 3) -> str:
    """A plain-text table of verdicts: claim, value [low, high], units, verdict, rule."""
    rows = [v.to_dict() if isinstance(v, Verdict) else v for v in verdicts]
    lines = []
    width = max([len(r["claim"]) for r in rows] + [5])
    for r in rows:
        est = format_estimate(r, digits)
        n = r.get("n") or {}
        units = n.get("units", n.get("runs_a", "")) if isinstance(n, dict) else n
        if isinstance(n, dict) and n.get("units") == 1:  # one model: the items are the sample
            units = f"{n.get('items')} items"
        more = (f" (decides at ~{r['units_to_decide']} {r.get('size_unit', 'units')})"
                if r.get("units_to_decide") else "")
        lines.append(f"{r['claim']:<{width}}  {est:<26} n={units!s:<4} {r['verdict']:<12} {r['rule']}{more}")
    return "\n".join(lines)
