"""Speed and coverage of the hierarchical bootstrap.

Usage::

    .venv/bin/python benchmarks/bench_stats.py [--units 12] [--items 28] [--resamples 2000]
    .venv/bin/python benchmarks/bench_stats.py --coverage [--experiments 400]

Speed: times :func:`drifthelpers.stats.protocol_statistics` on random correctness scores of a
12 x 12 matrix plus a 12 x 10 corruption table per unit (the shape of notebook 03), for the
expanded percentile and the BCa interval, and prints seconds per call.

Coverage (``--coverage``): simulates experiments with a known mean and counts how often the
95 % interval of the mean holds it, for the percentile, expanded percentile and BCa intervals
and 3, 5, 10 and 20 units of 28 items each. Two regimes: unit noise dominant (unit SD 1, item
SD 1, so the items add 1/28 of the unit variance) and item noise dominant (correctness 1/0
with a unit-level accuracy 0.7 ± 0.08, so the items add about as much variance as the units).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from drifthelpers import stats

METHODS = ("percentile", "expanded", "bca")


def _experiment(rng: np.random.Generator, units: int, items: int, regime: str) -> tuple[np.ndarray, float]:
    """(units, 1, items) scores and their true mean."""
    if regime == "unit noise":
        return rng.normal(size=(units, 1, 1)) + rng.normal(size=(units, 1, items)), 0.0
    p = np.clip(0.7 + 0.08 * rng.normal(size=(units, 1, 1)), 0, 1)
    return (rng.random((units, 1, items)) < p).astype(float), 0.7


def coverage(units: int, regime: str, experiments: int, items: int = 28, resamples: int = 500) -> dict:
    """``{method: (coverage, mean width)}`` over ``experiments`` simulated experiments."""
    rng = np.random.default_rng(100 + units)
    hits, width = dict.fromkeys(METHODS, 0), dict.fromkeys(METHODS, 0.0)
    for k in range(experiments):
        x, truth = _experiment(rng, units, items, regime)
        for m in METHODS:
            e = stats.hierarchical_bootstrap(x, lambda s: s[..., 0].mean(1), n_boot=resamples, seed=k, method=m)
            hits[m] += e.low <= truth <= e.high
            width[m] += e.high - e.low
    return {m: (hits[m] / experiments, width[m] / experiments) for m in METHODS}


def speed(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    views = (rng.random((args.units, 12, 12, args.items)) < 0.8).astype(float)
    corr = (rng.random((args.units, 12, 10, args.items)) < 0.6).astype(float)
    print(f"{args.units} units x (12 x 12 views + 12 x 10 corruptions) x {args.items} items, "
          f"{args.resamples} resamples")
    for method in ("expanded", "bca"):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            stats.protocol_statistics(views, corr, n_boot=args.resamples, method=method)
            times.append(time.perf_counter() - t0)
        print(f"{method:>9}: {min(times):.2f} s per call (best of {args.repeat})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--items", type=int, default=28)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--coverage", action="store_true", help="simulate the intervals' coverage instead")
    parser.add_argument("--experiments", type=int, default=400)
    args = parser.parse_args()
    if not args.coverage:
        speed(args)
        return
    print(f"coverage of the 95 % interval of a mean, {args.experiments} experiments per row, "
          "28 items per unit (coverage, mean width)")
    for regime in ("unit noise", "item noise"):
        for units in (3, 5, 10, 20):
            row = coverage(units, regime, args.experiments)
            print(f"{regime:>10}, {units:>2} units: "
                  + "  ".join(f"{m} {c:.3f} ({w:.3f})" for m, (c, w) in row.items()), flush=True)


if __name__ == "__main__":
    main()
