"""Reproducible splits of a data set's items: :func:`stratified_split`.

Within each class the items are shuffled with a seed and cut by fractions; with groups
(the drone tiles' frame ids) whole groups are assigned, so no frame straddles two splits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["stratified_split"]


def _allocate(n: int, fractions: Sequence[float], ensure_each: bool) -> list[int]:
    """Split ``n`` into parts by largest remainder; optionally at least 1 per part."""
    share = [n * f for f in fractions]
    counts = [int(math.floor(s)) for s in share]
    order = sorted(range(len(share)), key=lambda i: (-(share[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if ensure_each and n >= sum(1 for f in fractions if f > 0):
        for i, f in enumerate(fractions):
            if f > 0 and counts[i] == 0:
                j = max(range(len(counts)), key=lambda k: (counts[k], -k))
                counts[j] -= 1
                counts[i] += 1
    return counts


def stratified_split(
    targets: Sequence[int] | np.ndarray,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    *,
    groups: Sequence[Any] | None = None,
) -> tuple[np.ndarray, ...]:
    """Reproducible stratified split of item indices (train, validation[, test]).

    Within each class the items are shuffled with ``seed`` and cut by the fractions
    (largest remainder); every class with at least as many items as splits gets at
    least one item in every split. With ``groups`` (e.g. the drone tiles' frame ids)
    whole groups are assigned, so no group is shared across splits: groups are
    stratified by their majority target and cut by their item counts.

    Args:
        targets: class index per item.
        fractions: 2 or 3 non-negative fractions summing to 1 (paper: ``(0.8, 0.2)``).
        seed: different seeds give different, equally valid splits.
        groups: optional group id per item.

    Returns:
        One sorted int64 index array per fraction, disjoint, covering all items.

    Example:
        >>> tr, va, te = stratified_split([0] * 10 + [1] * 5, (0.6, 0.2, 0.2), seed=1)
        >>> len(tr), len(va), len(te)
        (9, 3, 3)
    """
    y = np.asarray(targets)
    if y.ndim != 1:
        raise ValueError("targets must be one-dimensional")
    fr = [float(f) for f in fractions]
    if len(fr) not in (2, 3) or any(f < 0 for f in fr) or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be 2 or 3 non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    if groups is None:
        parts = _split_items(y, fr, rng)
    else:
        g = np.asarray(groups)
        if g.shape != y.shape:
            raise ValueError("groups must have one entry per target")
        parts = _split_groups(y, g, fr, rng)
    return tuple(np.array(sorted(p), dtype=np.int64) for p in parts)


def _split_items(y: np.ndarray, fr: list[float], rng: np.random.Generator) -> list[list[int]]:
    """Item indices per split: each class shuffled, then cut by the fractions."""
    parts: list[list[int]] = [[] for _ in fr]
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for p, k in enumerate(_allocate(len(idx), fr, ensure_each=True)):
            parts[p].extend(idx[start : start + k].tolist())
            start += k
    return parts


def _split_groups(y: np.ndarray, g: np.ndarray, fr: list[float], rng: np.random.Generator) -> list[list[int]]:
    """Item indices per split with whole groups assigned, stratified by majority target."""
    parts: list[list[int]] = [[] for _ in fr]
    uniq = list(dict.fromkeys(g.tolist()))  # first-seen order, deterministic
    members = {u: np.flatnonzero(g == u) for u in uniq}
    majority = {}
    for u in uniq:
        vals, cnt = np.unique(y[members[u]], return_counts=True)
        majority[u] = vals[int(cnt.argmax())].item()
    for cls in sorted(set(majority.values())):
        gs = [u for u in uniq if majority[u] == cls]
        gs = [gs[i] for i in rng.permutation(len(gs))]
        sizes = np.array([len(members[u]) for u in gs])
        counts = _allocate(len(gs), fr, ensure_each=True)
        # assign groups greedily to the split furthest below its item quota
        quota = np.array(fr) * sizes.sum()
        filled = np.zeros(len(fr))
        left = list(counts)
        for u, s in zip(gs, sizes):
            cand = [p for p in range(len(fr)) if left[p] > 0]
            p = max(cand, key=lambda q: (quota[q] - filled[q], -q))
            parts[p].extend(members[u].tolist())
            filled[p] += s
            left[p] -= 1
    return parts
