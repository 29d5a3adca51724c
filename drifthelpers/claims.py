"""The paper's claims for the three drift controls, as statements an interval can decide.

Each claim is a :class:`~drifthelpers.stats.Claim`: the statistic it is judged on, the rule
(``greater`` than a threshold, ``less``, or ``within`` a range) and the paper's value. The
experiments compute the statistics; :func:`drifthelpers.stats.judge` turns an estimate with
its interval into ``supported``, ``contradicted`` or ``undecided``.

* :data:`SYNTHESIS_CLAIMS` (from :data:`SYNTHESIS_NUMBERS`): judged by
  :func:`drifthelpers.synthesis.synthesis_statistics`.
* :data:`FORENSICS_CLAIMS`: judged by :func:`judge_forensics` on the drops of
  :func:`drifthelpers.forensics.harm_statistics`.
* :data:`OPTIMISATION_CLAIMS`: judged by :func:`judge_optimisation` on the paired
  differences between the arms of :func:`arm_statistics`.

Example:
    >>> [c.statistic for c in OPTIMISATION_CLAIMS["drone"]]
    ['learned_minus_frozen']
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import stats
from .stats import Claim

__all__ = [
    "SYNTHESIS_NUMBERS",
    "SYNTHESIS_CLAIMS",
    "FORENSICS_CLAIMS",
    "OPTIMISATION_CLAIMS",
    "judge_forensics",
    "arm_pairs",
    "arm_statistics",
    "judge_optimisation",
]


# --------------------------------------------------------------------------- drift synthesis

#: The paper's drift-synthesis numbers (mean drop under ISP drift, under corruptions, their ratio).
SYNTHESIS_NUMBERS = {"microscopy": (0.024, 0.243), "drone": (0.046, 0.180)}


def _synthesis_claims(dataset: str) -> list[Claim]:
    """The paper's drift-synthesis claims for one data set.

    Equivalence ranges: a drop within ±0.025 (faithful) or ±0.05 (corruptions) of the paper's
    mean drop, a ratio within a factor 2 of the paper's; "rankings differ" means a rank
    correlation below 0.5 (the paper's matrices give 0.1-0.2)."""
    f, c = SYNTHESIS_NUMBERS[dataset]
    ratio = c / f
    return [
        Claim(f"{dataset}: faithful drift less severe than corruptions", "log_ratio", "greater", threshold=0.0,
              paper=float(np.log(ratio)), text=f"log(corruption drop / faithful drop) > 0 (paper: {c} vs {f})"),
        Claim(f"{dataset}: drop ratio ~{ratio:.0f}x", "ratio", "within", low=ratio / 2, high=ratio * 2, paper=ratio,
              text=f"corruption drop / faithful drop within a factor 2 of the paper's {ratio:.1f}"),
        Claim(f"{dataset}: faithful drop ~{f}", "mean_drop_faithful", "within", low=max(f - 0.025, 0.0),
              high=f + 0.025, paper=f, text=f"mean drop under ISP drift within ±0.025 of the paper's {f}"),
        Claim(f"{dataset}: corruption drop ~{c}", "mean_drop_corruption", "within", low=c - 0.05, high=c + 0.05,
              paper=c, text=f"mean drop under corruptions within ±0.05 of the paper's {c}"),
        Claim(f"{dataset}: protocols rank models differently", "spearman_rho", "less", threshold=0.5, paper=0.15,
              text="rank correlation of the two protocols' model rankings < 0.5 (paper: about 0.1-0.2)",
              gate="friedman"),
        Claim(f"{dataset}: corruption-based selection costs faithful score", "selection_regret_crossfit",
              "greater", threshold=0.0, gate="friedman",
              text="faithful score lost by picking the corruption protocol's model > 0 (picked on half the "
                   "test items, scored on the other half)"),
    ]


#: ``{dataset: [Claim]}``; the ranking claims are gated on the Friedman tests.
SYNTHESIS_CLAIMS = {name: _synthesis_claims(name) for name in SYNTHESIS_NUMBERS}


# --------------------------------------------------------------------------- drift forensics


def _forensics_claims() -> list[Claim]:
    out = [
        Claim("microscopy forensics: black level alone is harmful", "black_level", "greater", threshold=0.0,
              paper=0.29, text="accuracy drop at the most harmful black level > 0 (paper: 87 % -> 55-61 %)"),
        Claim("microscopy forensics: denoising kernel alone is harmful", "denoise", "greater", threshold=0.0,
              paper=0.20, text="accuracy drop at the most harmful denoising kernel > 0 (paper: 87 % -> 67 %)"),
        Claim("microscopy forensics: all parameters together are harmful", "all", "greater", threshold=0.0,
              paper=0.41, text="accuracy drop with every group searched > 0 (paper: 87 % -> 46 % at moderate λ)"),
    ]
    for group in ("white_balance", "colour_matrix", "gamma", "sharpen"):
        out.append(Claim(f"microscopy forensics: {group} alone does no real harm", group, "within", low=-0.05,
                         high=0.05, paper=0.0, text=f"accuracy drop at the most harmful {group} within ±0.05 "
                         "(paper: no real drop)"))
    return out


#: The paper's drift-forensics claims (Raw-Microscopy), judged on the drop of each group's most
#: harmful configuration; "no real harm" is taken as a drop within ±0.05.
FORENSICS_CLAIMS = _forensics_claims()


def judge_forensics(drops: dict[str, dict]) -> list[dict]:
    """Verdicts of :data:`FORENSICS_CLAIMS` on per-group drops (claims whose group is absent are skipped)."""
    return [stats.judge(c, drops[c.statistic]).to_dict() for c in FORENSICS_CLAIMS if c.statistic in drops]


# --------------------------------------------------------------------------- drift optimisation


def _optimisation_claims() -> dict[str, list[Claim]]:
    return {
        "microscopy": [
            Claim("microscopy: learned ISP beats frozen ISP", "learned_minus_frozen", "greater", threshold=0.0,
                  paper=0.79 - 0.59, text="test accuracy learned - frozen > 0 (paper: 0.79 vs 0.59)"),
            Claim("microscopy: learned ISP trains more stably", "variance_ratio_frozen_over_learned", "greater",
                  threshold=1.0, text="variance across seeds of the frozen arm / the learned arm > 1 (paper: a much "
                  "narrower spread)"),
        ],
        "drone": [
            Claim("drone: learned ISP equals frozen ISP", "learned_minus_frozen", "within", low=-0.05, high=0.05,
                  paper=0.0, text="test IoU learned - frozen within ±0.05 (paper: ≈ 0.65 both)"),
        ],
    }


#: The paper's drift-optimisation claims, decidable by an interval (the paper: microscopy at low
#: light, learned ISP ≈ 0.79 vs frozen ≈ 0.59 with a narrower spread across runs; drone: both ≈ 0.65).
#: "Equal" is taken as a difference within ±0.05; "narrower spread" as var(frozen) / var(learned) > 1.
OPTIMISATION_CLAIMS = _optimisation_claims()


def arm_pairs(runs: dict[str, Sequence], a: str, b: str) -> tuple[list, list]:
    """Test-item scores of arms ``a`` and ``b``, paired by (split seed, seed).

    Args:
        runs: ``{arm: [run]}``; a run has ``split_seed``, ``seed`` and ``test_items``
            (:class:`drifthelpers.optimisation.ArmRun`).

    Returns:
        Two lists of (items,) float arrays, one entry per pair found.
    """
    index_b = {(r.split_seed, r.seed): r for r in runs[b]}
    xs, ys = [], []
    for r in runs[a]:
        other = index_b.get((r.split_seed, r.seed))
        if other is not None and len(other.test_items) == len(r.test_items):
            xs.append(np.asarray(r.test_items, float))
            ys.append(np.asarray(other.test_items, float))
    return xs, ys


def _spread(learned: Sequence, frozen: Sequence) -> dict:
    """var(frozen) / var(learned) of the runs' test metrics: the Pitman-Morgan interval when the
    runs pair up by (split seed, seed), three pairs or more; else the F interval, which assumes
    independent arms."""
    from .stats_spread import paired_variance_ratio

    index = {(r.split_seed, r.seed): r for r in frozen}
    pairs = [(r.test, index[(r.split_seed, r.seed)].test) for r in learned if (r.split_seed, r.seed) in index]
    if len(pairs) >= 3 and len(pairs) == len(learned) == len(frozen):
        return paired_variance_ratio([x for x, _ in pairs], [y for _, y in pairs])
    return stats.variance_ratio([r.test for r in learned], [r.test for r in frozen])


def arm_statistics(runs: dict[str, Sequence], n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired differences between the arms, with intervals, and the spread test.

    Runs of two arms with the same split and seed form a unit; the hierarchical bootstrap
    (:func:`drifthelpers.stats.paired_difference`) resamples units, then the test items of each
    unit, an item's score in both arms moving together. The spread claim is tested on the final
    test metric of each run: runs of the same (split seed, seed) are paired, so with three pairs or
    more the interval is Pitman-Morgan's (:func:`drifthelpers.stats_spread.paired_variance_ratio`),
    else the F interval of :func:`drifthelpers.stats.variance_ratio`.

    Returns:
        ``{"statistics": {"learned_minus_frozen", "learned_minus_raw_direct", "<arm>_test",
        "variance_ratio_frozen_over_learned": {value, low, high, n, ...}}, "tests": {...}}``.
    """
    out, tests = {}, {}
    for arm, rs in runs.items():
        if rs and all(r.test_items for r in rs):
            out[f"{arm}_test"] = stats.hierarchical_bootstrap(
                [np.asarray(r.test_items, float)[None] for r in rs], lambda m: m[..., 0].mean(1), n_boot, seed).to_dict()
    for a, b in (("learned", "frozen"), ("learned", "raw_direct"), ("frozen", "raw_direct")):
        if a in runs and b in runs:
            xs, ys = arm_pairs(runs, a, b)
            if xs:
                out[f"{a}_minus_{b}"] = stats.paired_difference(xs, ys, n_boot, seed).to_dict()
    if "learned" in runs and "frozen" in runs and min(len(runs["learned"]), len(runs["frozen"])) > 1:
        vr = _spread(runs["learned"], runs["frozen"])
        out["variance_ratio_frozen_over_learned"] = vr["ratio"].to_dict()
        tests["variance_ratio"] = {k: v for k, v in vr.items() if k != "ratio"}
    return {"statistics": out, "tests": tests}


def judge_optimisation(dataset: str, statistics: dict) -> list[dict]:
    """The verdicts on the paper's claims for ``dataset`` (:data:`OPTIMISATION_CLAIMS`) that ``statistics`` can judge."""
    return [stats.judge(c, statistics[c.statistic]).to_dict() for c in OPTIMISATION_CLAIMS.get(dataset, [])
            if c.statistic in statistics]
