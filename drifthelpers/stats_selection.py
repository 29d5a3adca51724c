"""Selection regret without the winner's curse: pick on one half of the test items, score on the other.

The selection regret of :func:`drifthelpers.stats.protocol_statistics` is the faithful score lost by
picking the training view that corruption testing ranks first instead of the one faithful drift
ranks first, both picks and both scores made on the same test items. The faithful pick is then
the maximum of noisy scores, and a maximum of noise is positive: with twelve identical presets
the regret is above 0 in expectation, so "selection by corruptions costs faithful score" could be
found where there is no cost at all.

:func:`crossfit_regret` removes that bias by cross-fitting. Each unit's test items are split once
at random into halves A and B (fixed before resampling). Both protocols pick on A and the picks
are scored on B, then the roles swap, and the regret is the mean of the two. Picks made on A are
independent of B's noise, so with identical presets the expected regret is 0. The price is that
each pick sees half the items (noisier picks), so a real cost is estimated a little low: the
estimate is conservative. The interval comes from the same hierarchical bootstrap as every other
statistic, the half of each item kept with it (items are resampled, their halves are not).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import stats

__all__ = ["halves", "crossfit_regret"]


def halves(n_items: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """A fixed random split of each unit's items: a bool array per unit, True = half A
    (``ceil(n / 2)`` items), from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    out = []
    for n in n_items:
        a = np.zeros(int(n), bool)
        a[rng.permutation(int(n))[: (int(n) + 1) // 2]] = True
        out.append(a)
    return out


def _regret(means: dict) -> np.ndarray:
    """(B,) cross-fitted regret from the per-unit means of the half-weighted scores."""
    v, c, n = means["v"], means["c"], means["n"]  # (B, U, 2, T, T), (B, U, 2, T, K), (B, U, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = v / n[..., None, None]  # each half's own item mean
        c = c / n[..., None, None]
    m, cm = np.nanmean(v, 1), np.nanmean(c, 1)  # (B, 2, T, T), (B, 2, T, K): mean over units
    T = m.shape[-1]
    off = ~np.eye(T, dtype=bool)
    faithful = np.where(off, m, 0).sum(-1) / (T - 1)  # (B, 2, T)
    corrupt = cm.mean(-1)
    rows = np.arange(len(m))
    out = []
    for pick_half, score_half in ((0, 1), (1, 0)):
        pick_f, pick_c = faithful[:, pick_half].argmax(1), corrupt[:, pick_half].argmax(1)
        scored = faithful[:, score_half]
        out.append(scored[rows, pick_f] - scored[rows, pick_c])
    return (out[0] + out[1]) / 2


def crossfit_regret(views, corruptions, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                    split_seed: int = 0) -> stats.Estimate:
    """Cross-fitted selection regret with its hierarchical-bootstrap interval.

    Args:
        views: per-item scores, a list of U arrays (T, T, I_u) (as
            :func:`drifthelpers.stats.protocol_statistics`).
        corruptions: a list of U arrays (T, K, I_u), the same items in the same order.
        n_boot, seed, level: as :func:`drifthelpers.stats.hierarchical_bootstrap`.
        split_seed: seed of the fixed split of each unit's items into halves (:func:`halves`).

    Returns:
        An :class:`~drifthelpers.stats.Estimate` (``n`` as for the other statistics); undefined,
        with the reason, when a unit has fewer than 2 test items (no two halves). A resample in
        which a unit's half holds no item leaves that unit out of that half's means.
    """
    views = [np.asarray(v, float) for v in views]
    corruptions = [np.asarray(c, float) for c in corruptions]
    sizes = [v.shape[-1] for v in views]
    if min(sizes) < 2:
        return stats.Estimate(None, None, None, {"units": len(sizes)}, "expanded", level,
                              f"a unit has {min(sizes)} test item(s): no two halves to pick and score on")
    data = {"v": [], "c": [], "n": []}
    for v, c, a in zip(views, corruptions, halves(sizes, split_seed)):
        w = np.stack([a, ~a]).astype(float)  # (2, I): membership of each half
        data["v"].append(w[:, None, None, :] * v[None])
        data["c"].append(w[:, None, None, :] * c[None])
        data["n"].append(w)
    return stats.hierarchical_bootstrap(data, _regret, n_boot, seed, level)
