"""Statistics: hand-checked cases, and simulated experiments with a known truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as st

from drifthelpers import stats

# --------------------------------------------------------------------------- the bootstrap


def test_two_units_of_one_item_give_the_three_possible_means():
    # units with scores 0 and 1: a resample draws (0,0), (0,1)/(1,0) or (1,1) -> mean 0, .5 or 1
    est, boot = stats.hierarchical_bootstrap(np.array([[0.0], [1.0]]), lambda m: m.mean(1), n_boot=400, seed=1,
                                             method="percentile", return_replicates=True)
    assert est.value == 0.5
    assert set(np.unique(boot)) == {0.0, 0.5, 1.0}
    assert (est.low, est.high) == (0.0, 1.0)
    assert est.n == {"units": 2, "items": 1, "resamples": 400}
    # about a quarter, a half and a quarter of the resamples
    np.testing.assert_allclose([np.mean(boot == v) for v in (0, 0.5, 1)], [0.25, 0.5, 0.25], atol=0.07)


def test_items_are_resampled_within_units():
    # one unit, items 0 and 1: item resampling alone moves the mean
    est = stats.hierarchical_bootstrap(np.array([[0.0, 1.0]]), lambda m: m.mean(1), n_boot=400, seed=0,
                                       method="percentile")
    assert (est.value, est.low, est.high) == (0.5, 0.0, 1.0)


def test_pairing_of_items_across_conditions_is_kept():
    rng = np.random.default_rng(0)
    a = rng.random((5, 30))
    scores = {"views": np.stack([a, a + 0.1], 1), "corruptions": (a - 0.2)[:, None]}  # same items, shifted
    stat = lambda m: np.stack([m["views"][..., 1].mean(1) - m["views"][..., 0].mean(1),
                               m["views"][..., 0].mean(1) - m["corruptions"][..., 0].mean(1)], 1)
    diff, gap = stats.hierarchical_bootstrap(scores, stat, n_boot=300, seed=0)
    # an unpaired resampling would spread these; paired, every resample gives exactly the shift
    assert diff.low == pytest.approx(0.1) and diff.high == pytest.approx(0.1)
    assert gap.low == pytest.approx(0.2) and gap.high == pytest.approx(0.2)


def test_units_may_have_different_item_counts_but_named_arrays_must_agree():
    units = [np.array([[1.0, 0.0, 1.0]]), np.array([[1.0, 1.0]])]
    est = stats.hierarchical_bootstrap(units, lambda m: m[..., 0].mean(1), n_boot=200)
    assert est.value == pytest.approx((2 / 3 + 1) / 2)
    assert est.n["items"] == [2, 3]
    with pytest.raises(ValueError, match="item counts"):
        stats.hierarchical_bootstrap({"a": np.zeros((2, 1, 3)), "b": np.zeros((2, 1, 4))}, lambda m: m["a"].mean(1))
    with pytest.raises(ValueError, match="n_boot"):
        stats.hierarchical_bootstrap(np.zeros((2, 3)), lambda m: m.mean(1), n_boot=5)


def test_bootstrap_is_reproducible_and_bca_stays_near_percentile():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 1, 20))
    f = lambda m: m[..., 0].mean(1)
    a = stats.hierarchical_bootstrap(x, f, n_boot=500, seed=7, method="percentile")
    b = stats.hierarchical_bootstrap(x, f, n_boot=500, seed=7, method="percentile")
    c = stats.hierarchical_bootstrap(x, f, n_boot=500, seed=7, method="bca")
    assert (a.low, a.high) == (b.low, b.high)
    assert c.method == "bca" and c.low < c.value < c.high
    assert abs(c.low - a.low) < 0.1 and abs(c.high - a.high) < 0.1


def test_spearman_rows_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (20, 12)).astype(float), rng.integers(0, 5, (20, 12)).astype(float)
    expect = [st.spearmanr(a, b).statistic for a, b in zip(x, y)]
    np.testing.assert_allclose(stats.spearman_rows(x, y), expect)
    assert np.isnan(stats.spearman_rows(np.ones((1, 4)), np.arange(4.0)[None]))[0]


# --------------------------------------------------------------------------- protocol statistics


def test_protocol_statistics_hand_checked():
    # the 3-preset example of the synthesis tests: every unit the same, items all alike
    m = np.array([[0.9, 0.8, 0.7], [0.6, 0.8, 0.8], [0.9, 0.9, 0.9]])
    c = np.array([[0.5, 0.3], [0.7, 0.7], [0.2, 0.4]])
    views = np.repeat(np.repeat(m[None, ..., None], 4, 0), 5, -1)
    corr = np.repeat(np.repeat(c[None, ..., None], 4, 0), 5, -1)
    out = stats.protocol_statistics(views, corr, n_boot=200)
    assert out["mean_drop_faithful"].value == pytest.approx(0.5 / 6)
    assert out["mean_drop_corruption"].value == pytest.approx(2.4 / 6)
    assert out["ratio"].value == pytest.approx(2.4 / 0.5)
    assert out["log_ratio"].value == pytest.approx(math.log(4.8))
    assert out["spearman_rho"].value == pytest.approx(-1.0)
    assert out["top1_agreement"].value == 0.0
    # faithful scores a .75, b .7, c .9; corruption picks b: regret .9 - .7
    assert out["selection_regret"].value == pytest.approx(0.2)
    for e in (out[k] for k in stats.PROTOCOL_STATISTICS):  # no variation anywhere: zero-width intervals
        assert e.low == pytest.approx(e.value) and e.high == pytest.approx(e.value)
    np.testing.assert_allclose(np.array(out["cell_mean"]["value"], float), m)
    np.testing.assert_allclose(out["cell_sd"], np.zeros((3, 3)), atol=1e-12)


def test_log_ratio_is_never_infinite_in_json():
    # no faithful drop at all (every view scores the same): the ratio is unbounded, never inf
    views = np.full((3, 3, 3, 4), 0.8)
    corr = np.full((3, 3, 2, 4), 0.5)
    out = stats.protocol_statistics(views, corr, n_boot=100)
    assert out["log_ratio"].value is None and "unbounded" in out["log_ratio"].reason
    text = json.dumps({k: v.to_dict() for k, v in out.items() if isinstance(v, stats.Estimate)}, allow_nan=False)
    assert "Infinity" not in text
    # both drops zero: undefined, with the reason
    out = stats.protocol_statistics(views, np.full((3, 3, 2, 4), 0.8), n_boot=100)
    assert out["ratio"].value is None and "both" in out["ratio"].reason


def test_unbounded_side_of_a_ratio_interval():
    # unit 0 has no faithful drop, unit 1 has one: a quarter of the resamples draw unit 0 twice,
    # their ratio is unbounded, so the interval's upper side is too
    views = np.full((2, 3, 3, 2), 0.8)
    views[1, 0, 1:] = 0.7
    corr = np.full((2, 3, 2, 2), 0.5)
    out = stats.protocol_statistics(views, corr, n_boot=400)
    lr = out["log_ratio"]
    assert lr.value is not None and lr.low is not None and lr.low > 0
    assert lr.high is None and "upper bound unbounded" in lr.reason
    # the mirror image: no corruption drop in unit 0, so the ratio's lower bound is 0 (log: -inf)
    corr = np.stack([np.full((3, 2, 2), 0.8), np.full((3, 2, 2), 0.5)])
    views = np.broadcast_to(np.where(np.eye(3, dtype=bool), 0.8, 0.75)[None, ..., None], (2, 3, 3, 2))
    out = stats.protocol_statistics(views, corr, n_boot=400)
    assert out["log_ratio"].low is None and out["ratio"].low == 0.0 and "lower bound 0" in out["ratio"].reason


# --------------------------------------------------------------------------- tests and metrics


def test_friedman_matches_scipy_and_handles_degenerate_input():
    x = np.array([[1, 2, 3], [1, 3, 2], [1, 2, 3], [2, 1, 3.0]])
    out = stats.friedman(x)
    ref = st.friedmanchisquare(*x.T)
    assert out["statistic"] == pytest.approx(ref.statistic) and out["p_value"] == pytest.approx(ref.pvalue)
    assert out["kendall_w"] == pytest.approx(ref.statistic / (4 * 2))
    tied = stats.friedman(np.ones((3, 4)))
    assert tied["p_value"] is None and not tied["rejects"] and "variation" in tied["reason"]
    with pytest.raises(ValueError, match="blocks"):
        stats.friedman(np.ones(4))


def test_reliability_hand_checked():
    # two repeats of three treatments: means 0, 1, 2 (var 1); within-treatment var 0.5 each
    x = np.array([[-0.5, 0.5, 1.5], [0.5, 1.5, 2.5]])
    out = stats.reliability(x)
    assert out["var_noise"] == pytest.approx(0.5)
    assert out["var_between"] == pytest.approx(1 - 0.5 / 2)
    assert out["reliability"] == pytest.approx(0.75 / (0.75 + 0.25))
    assert out["repeats_for_target"] == math.ceil(4 * 0.5 / 0.75)


def test_variance_ratio_hand_checked():
    out = stats.variance_ratio([0.0, 2.0], [0.0, 4.0])  # variances 2 and 8
    r = out["ratio"]
    assert r.value == pytest.approx(4.0)
    assert r.low == pytest.approx(4 / st.f.ppf(0.975, 1, 1)) and r.high == pytest.approx(4 / st.f.ppf(0.025, 1, 1))
    assert out["p_greater"] == pytest.approx(st.f.sf(4, 1, 1))
    assert stats.variance_ratio([1.0, 1.0], [0.0, 1.0])["ratio"].value is None
    with pytest.raises(ValueError, match=">= 2 runs"):
        stats.variance_ratio([1.0], [1.0, 2.0])


def test_classification_metrics_hand_checked():
    pred, target = [0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0]
    np.testing.assert_array_equal(stats.confusion_matrix(pred, target, 4),
                                  [[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]])
    rec = stats.per_class_recall(pred, target, 4)
    np.testing.assert_allclose(rec[:3], [0.5, 0.5, 1.0])
    assert np.isnan(rec[3])
    assert stats.balanced_accuracy(pred, target, 4) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="class indices"):
        stats.confusion_matrix([5], [0], 3)


def test_iou_pooled_and_per_image_hand_checked():
    pred = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], bool)
    target = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]], bool)
    inter, union = stats.iou_counts(pred, target)
    np.testing.assert_array_equal(inter, [1, 0, 0])
    np.testing.assert_array_equal(union, [2, 0, 4])
    assert stats.iou_pooled(inter, union) == pytest.approx(1 / 6)
    np.testing.assert_allclose(stats.iou_per_image(inter, union), [0.5, 1.0, 0.0])  # empty image: 1


# --------------------------------------------------------------------------- verdicts


def _est(v, lo, hi, units=10):
    return stats.Estimate(v, lo, hi, {"units": units})


@pytest.mark.parametrize("kind,est,verdict,rule", [
    ("greater", (0.3, 0.1, 0.5), "supported", "interval lies above 0"),
    ("greater", (-0.3, -0.5, -0.1), "contradicted", "interval lies below 0"),
    ("greater", (0.1, -0.1, 0.3), "undecided", "interval spans the decision threshold 0"),
    ("less", (-0.3, -0.5, -0.1), "supported", "interval lies below 0"),
    ("less", (0.3, 0.1, None), "contradicted", "interval lies above 0"),
])
def test_judge_threshold_rules(kind, est, verdict, rule):
    v = stats.judge(stats.Claim("c", "x", kind, threshold=0.0), _est(*est))
    assert (v.verdict, v.rule) == (verdict, rule)
    assert (v.to_dict()["method"], v.to_dict()["level"]) == ("percentile", 0.95)  # the interval is recorded


def test_judge_range_rules_gate_and_undefined():
    claim = stats.Claim("drop near 0.024", "x", "within", low=0.0, high=0.05, paper=0.024)
    assert stats.judge(claim, _est(0.02, 0.01, 0.03)).verdict == "supported"
    assert stats.judge(claim, _est(0.1, 0.07, 0.13)).verdict == "contradicted"
    und = stats.judge(claim, _est(0.04, 0.03, 0.06, units=4))
    assert und.verdict == "undecided" and "edge" in und.rule
    assert und.units_to_decide == math.ceil(4 * (0.02 / 0.01) ** 2)
    gated = stats.judge(stats.Claim("c", "x", "less", threshold=0.5), _est(0.1, -0.2, 0.3), (False, "no Friedman"))
    assert (gated.verdict, gated.rule) == ("undecided", "no Friedman")
    undef = stats.judge(claim, stats.Estimate(None, None, None, {}, reason="both drops <= 0"))
    assert undef.verdict == "undecided" and "both drops" in undef.rule
    json.dumps(undef.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="threshold"):
        stats.Claim("c", "x", "greater")


def test_sample_size_helpers():
    assert stats.units_to_decide(0.1, -0.1, 0.3, 4, [0.0]) == 16
    assert stats.units_to_decide(0.0, -0.1, 0.1, 4, [0.0]) is None  # on the threshold: no size decides
    # a paired difference of one SD: 10 pairs give >= 80 % power (and 9 do not)
    n = stats.paired_sample_size(0.2, 0.2)
    assert n == 10
    sim = np.random.default_rng(0).normal(1.0, 1.0, (4000, n))
    power = np.mean(st.ttest_1samp(sim, 0.0, axis=1).pvalue < 0.05)
    assert 0.77 <= power <= 0.86


# --------------------------------------------------------------------------- simulated experiments


def _null_experiment(rng, units=10, presets=12, corruptions=10, items=6, seed_sd=0.03, item_sd=0.1):
    """12 identical presets: every cell's score is a common base plus seed noise (per unit, training
    preset and test condition) plus item noise; no preset is better than another."""
    views = 0.8 + seed_sd * rng.normal(size=(units, presets, presets, 1)) + item_sd * rng.normal(
        size=(units, presets, presets, items))
    corr = 0.6 + seed_sd * rng.normal(size=(units, presets, corruptions, 1)) + item_sd * rng.normal(
        size=(units, presets, corruptions, items))
    return views, corr


def test_null_rank_correlation_interval_covers_zero_and_friedman_is_uniform():
    rng = np.random.default_rng(2024)
    covered, pvalues = 0, []
    for k in range(200):
        views, corr = _null_experiment(rng)
        rho = stats.hierarchical_bootstrap({"views": views, "corruptions": corr},
                                           lambda m: stats._protocol_stat(m)[:, 3], n_boot=300, seed=k)
        covered += rho.low <= 0 <= rho.high
        off = ~np.eye(12, dtype=bool)
        faithful = np.where(off, views.mean(-1), 0).sum(-1) / 11  # (units, presets)
        pvalues.append(stats.friedman(faithful)["p_value"])
    assert covered / 200 >= 0.90
    assert st.kstest(pvalues, "uniform").pvalue > 0.01
    deciles = np.histogram(pvalues, bins=10, range=(0, 1))[0]
    assert deciles.min() >= 8 and deciles.max() <= 35  # 20 expected per decile


def test_model_noise_shared_by_all_test_conditions_is_held_back_by_the_friedman_gate():
    # identical presets, but each trained model's luck lifts all its scores: the two protocols then
    # agree on the trained models (rho well above 0) although the presets are alike; the Friedman
    # tests (blocks: units) still hold their level, so the gated ranking claims stay undecided
    rng = np.random.default_rng(99)
    both, rhos = 0, []
    off = ~np.eye(12, dtype=bool)
    for _ in range(200):
        views, corr = _null_experiment(rng)
        luck = 0.03 * rng.normal(size=(10, 12, 1, 1))
        views, corr = views + luck, corr + luck
        faithful = np.where(off, views.mean(-1), 0).sum(-1) / 11
        corrupt = corr.mean((-1, -2))
        both += stats.friedman(faithful)["rejects"] and stats.friedman(corrupt)["rejects"]
        rhos.append(stats.spearman_rows(faithful.mean(0)[None], corrupt.mean(0)[None])[0])
    assert np.mean(rhos) > 0.3
    assert both / 200 <= 0.05


def test_planted_preset_effect_is_found_by_friedman():
    rng = np.random.default_rng(7)
    rejects = 0
    for _ in range(200):
        effect = 2.0 * rng.normal(size=12)  # between-preset spread: twice the noise
        scores = effect + rng.normal(size=(10, 12))  # 10 repeats (units) per preset, noise SD 1
        rejects += stats.friedman(scores)["rejects"]
    assert rejects / 200 >= 0.80


def _paired_experiment(rng, gap, seeds=10, items=20, seed_sd=1.0, item_sd=1.0):
    """Learned and frozen arms on the same items of the same units; arm means differ by ``gap``."""
    item = item_sd * rng.normal(size=(seeds, items))  # shared by both arms (paired items)
    learned = gap + seed_sd * rng.normal(size=(seeds, 1)) + item + 0.5 * rng.normal(size=(seeds, items))
    frozen = seed_sd * rng.normal(size=(seeds, 1)) + item + 0.5 * rng.normal(size=(seeds, items))
    return learned, frozen


def test_planted_learned_minus_frozen_gap_is_detected_and_no_gap_rarely_is():
    rng = np.random.default_rng(11)
    claim = stats.Claim("learned beats frozen", "learned_minus_frozen", "greater", threshold=0.0)
    found, covered, false = 0, 0, 0
    for k in range(200):
        learned, frozen = _paired_experiment(rng, gap=2.0)  # two SDs of the seed noise of an arm
        est = stats.paired_difference(learned, frozen, n_boot=300, seed=k)
        found += stats.judge(claim, est).verdict == "supported"
        covered += est.low <= 2.0 <= est.high
        learned, frozen = _paired_experiment(rng, gap=0.0)
        false += stats.judge(claim, stats.paired_difference(learned, frozen, n_boot=300, seed=k)).verdict != "undecided"
    assert found / 200 >= 0.80
    assert covered / 200 >= 0.90
    assert false / 200 <= 0.10  # either tail: about 5 % expected


def test_expanded_interval_widens_for_few_units_and_uses_items_for_one_unit():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 1, 30))
    f = lambda m: m[..., 0].mean(1)
    plain = stats.hierarchical_bootstrap(x, f, n_boot=800, seed=1, method="percentile")
    wide = stats.hierarchical_bootstrap(x, f, n_boot=800, seed=1)  # expanded by default
    assert wide.method == "expanded" and wide.low < plain.low and wide.high > plain.high
    # one unit: the 30 items set the width, as in a one-level bootstrap of the mean
    one = stats.hierarchical_bootstrap(x[:1], f, n_boot=2000, seed=1)
    se = x[0, 0].std(ddof=1) / np.sqrt(30)
    assert (one.high - one.low) / (2 * se) == pytest.approx(st.t.ppf(0.975, 29) * np.sqrt(30 / 29), rel=0.15)


def test_units_to_decide_for_expanded_intervals():
    # an expanded interval from 3 units spanning 0; more units shrink both the error and the t quantile
    n = stats.units_to_decide(0.1, -0.3, 0.5, 3, [0.0], method="expanded")
    z = lambda m: np.sqrt(m / (m - 1)) * st.t.ppf(0.975, m - 1)
    se1 = 0.4 / z(3) * np.sqrt(3)
    assert z(n) * se1 / np.sqrt(n) < 0.1 <= z(n - 1) * se1 / np.sqrt(n - 1)


# --------------------------------------------------------------------------- paired spread


def test_paired_variance_ratio_hand_checked():
    from drifthelpers.stats_spread import paired_variance_ratio

    a, b = np.array([0.70, 0.72, 0.75, 0.71]), np.array([0.60, 0.70, 0.80, 0.64])
    out = paired_variance_ratio(a, b)
    f, r, n = b.var(ddof=1) / a.var(ddof=1), np.corrcoef(a, b)[0, 1], 4
    t = st.t.ppf(0.975, n - 2)
    k = 1 + 2 * (1 - r**2) * t**2 / (n - 2)
    e = out["ratio"]
    assert (e.value, e.method, e.n) == (pytest.approx(f), "Pitman-Morgan", {"pairs": 4})
    assert e.low == pytest.approx(f * (k - np.sqrt(k * k - 1))) and e.high == pytest.approx(f * (k + np.sqrt(k * k - 1)))
    assert out["correlation"] == pytest.approx(r)
    # the interval is the inverted test: at the bounds, sums and differences of sqrt(ratio) a and b are
    # correlated exactly at the critical value
    for bound in (e.low, e.high):
        u, v = np.sqrt(bound) * a + b, np.sqrt(bound) * a - b
        ruv = np.corrcoef(u, v)[0, 1]
        assert abs(ruv) * np.sqrt((n - 2) / (1 - ruv**2)) == pytest.approx(t, rel=1e-6)
    assert paired_variance_ratio([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])["ratio"].value is None
    assert paired_variance_ratio(a, 2 * a)["ratio"].low is None  # perfectly correlated
    with pytest.raises(ValueError, match=">= 3 pairs"):
        paired_variance_ratio([1.0, 2.0], [1.0, 3.0])
    with pytest.raises(ValueError, match="same length"):
        paired_variance_ratio([1.0, 2.0, 3.0], [1.0, 3.0])


def test_paired_variance_ratio_covers_and_is_narrower_than_f_for_correlated_arms():
    """Equal variances, correlation 0.8, 10 pairs: the Pitman-Morgan interval covers 1 in about
    95 % of experiments and its test agrees with it; the F interval, which assumes independent
    arms, over-covers and is wider."""
    from drifthelpers.stats_spread import paired_variance_ratio

    rng = np.random.default_rng(3)
    cover = cover_f = agree = 0
    width, width_f = [], []
    for _ in range(400):
        x = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=10)
        out = paired_variance_ratio(x[:, 0], x[:, 1])
        e, f = out["ratio"], stats.variance_ratio(x[:, 0], x[:, 1])["ratio"]
        cover += e.low <= 1 <= e.high
        cover_f += f.low <= 1 <= f.high
        agree += (out["p_greater"] < 0.025) == (e.low > 1)
        width.append(np.log(e.high / e.low))
        width_f.append(np.log(f.high / f.low))
    assert 0.92 <= cover / 400 <= 0.98 and cover_f / 400 > 0.98 and agree == 400
    assert np.mean(width) < 0.8 * np.mean(width_f)
    # a planted spread (sd ratio 2) with the same correlation is detected in most experiments
    hits = 0
    for _ in range(200):
        x = rng.multivariate_normal([0, 0], [[1, 1.6], [1.6, 4]], size=10)
        hits += paired_variance_ratio(x[:, 0], x[:, 1])["p_greater"] < 0.05
    assert hits / 200 >= 0.8


# --------------------------------------------------------------------------- cross-fitted selection regret


def _selection_experiment(rng, faithful_gain=None, corruption_gain=None, U=6, T=12, K=10, I=30):
    """Per-item scores of U units: an item difficulty, a skill per model (unit x training view),
    optionally a planted gain of some training views under one protocol."""
    fg = np.zeros(T) if faithful_gain is None else faithful_gain
    cg = np.zeros(T) if corruption_gain is None else corruption_gain
    views, corrs = [], []
    for _ in range(U):
        p = rng.uniform(0.5, 0.9, size=I)
        skill = rng.normal(0, 0.05, size=(T, 1, 1))
        views.append((rng.random((T, T, I)) < np.clip(p + skill + fg[:, None, None], 0, 1)).astype(float))
        corrs.append((rng.random((T, K, I)) < np.clip(p - 0.2 + skill + cg[:, None, None], 0, 1)).astype(float))
    return views, corrs


def test_crossfit_regret_is_unbiased_where_the_in_sample_regret_is_not():
    """Twelve identical presets: picking and scoring on the same items gives a positive regret on
    average (the winner's curse); picking on one half and scoring on the other does not."""
    from drifthelpers.stats_selection import crossfit_regret

    rng = np.random.default_rng(0)
    old, new = [], []
    for _ in range(60):
        views, corrs = _selection_experiment(rng)
        old.append(stats.protocol_statistics(views, corrs, n_boot=10)["selection_regret"].value)
        new.append(crossfit_regret(views, corrs, n_boot=10).value)
    se = lambda x: np.std(x, ddof=1) / np.sqrt(len(x))  # noqa: E731
    assert np.mean(old) > 3 * se(old)
    assert abs(np.mean(new)) < 3 * se(new)


def test_crossfit_regret_finds_a_planted_cost_and_brackets_it():
    """View 0 is best under faithful drift (+0.15), view 1 under corruptions (+0.3) and a little
    worse faithfully (-0.05): picking by corruptions costs about 0.2 of faithful score."""
    from drifthelpers.stats_selection import crossfit_regret, halves

    rng = np.random.default_rng(1)
    fg, cg = np.zeros(12), np.zeros(12)
    fg[0], fg[1], cg[1] = 0.15, -0.05, 0.3
    views, corrs = _selection_experiment(rng, fg, cg)
    e = crossfit_regret(views, corrs, n_boot=300)
    assert e.low is not None and 0 < e.low <= e.value <= e.high and 0.12 < e.value < 0.28
    split = halves([30, 31])
    assert [a.sum() for a in split] == [15, 16] and all(a.dtype == bool for a in split)
    one_item = crossfit_regret([v[..., :1] for v in views], [c[..., :1] for c in corrs], n_boot=10)
    assert one_item.value is None and "no two halves" in one_item.reason
