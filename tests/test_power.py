"""The power calculation against simulated two-level experiments (no training)."""

import numpy as np
import pytest

from drifthelpers import power, stats


def simulate(rng, n_exp, splits, seeds, items, sd_split, sd_seed, sd_item):
    """(n_exp, splits * seeds, items) contributions of the model in drifthelpers.power."""
    split = rng.normal(0, sd_split, (n_exp, splits, 1, 1))
    seed = rng.normal(0, sd_seed, (n_exp, splits, seeds, 1))
    item = rng.normal(0, sd_item, (n_exp, splits, seeds, items))
    return (split + seed + item).reshape(n_exp, splits * seeds, items)


def test_variance_components_recover_the_simulated_variances():
    rng = np.random.default_rng(0)
    x = simulate(rng, 1, 400, 1, 30, 0.3, 0.0, 1.0)[0]
    c = power.variance_components(x)
    assert c.units == 400 and c.items == 30
    assert c.var_item == pytest.approx(1.0, rel=0.05)
    assert c.var_unit == pytest.approx(0.09, rel=0.25)


def test_t_half_width_matches_the_simulated_spread_of_the_mean():
    """Formula (1) with split and seed separated: the SD of the mean over 4000 experiments."""
    rng = np.random.default_rng(1)
    splits, seeds, items = 4, 3, 20
    x = simulate(rng, 4000, splits, seeds, items, 0.2, 0.15, 0.5)
    sd_mean = x.mean(axis=(1, 2)).std()
    hw = power.half_width(0.04, 0.25, splits * seeds, items, var_seed=0.0225, seeds=seeds, method="t")
    q = hw / sd_mean
    from scipy import stats as st

    assert q == pytest.approx(st.t.ppf(0.975, splits * seeds - 1), rel=0.05)
    # leaving the split level out (seeds treated as splits) would be too narrow here
    assert power.half_width(0.04 + 0.0225, 0.25, splits * seeds, items, method="t") < 0.8 * hw


def test_expanded_half_width_predicts_the_notebooks_bootstrap_interval():
    """Formula (2) against stats.hierarchical_bootstrap's expanded interval, in both regimes."""
    rng = np.random.default_rng(2)
    for sd_unit, sd_item, units, items in ((0.1, 0.3, 8, 20), (0.02, 0.5, 6, 28)):
        widths = []
        for x in simulate(rng, 40, units, 1, items, sd_unit, 0.0, sd_item):
            e = stats.hierarchical_bootstrap(x, lambda m: m.mean(1), n_boot=400, seed=0)
            widths.append((e.high - e.low) / 2)
        predicted = power.half_width(sd_unit**2, sd_item**2, units, items)
        assert np.mean(widths) == pytest.approx(predicted, rel=0.12), (sd_unit, sd_item)
        # the t interval of the same variance misses the bootstrap's second count of item noise
        plain = power.half_width(sd_unit**2, sd_item**2, units, items, method="t")
        assert abs(np.mean(widths) - predicted) < abs(np.mean(widths) - plain)


def test_sizes_for_a_target_half_width_are_the_smallest_that_reach_it():
    kw = dict(var_unit=0.002, var_item=0.05)
    u = power.units_for_half_width(0.03, items=40, **kw)
    assert power.half_width(units=u, items=40, **kw) <= 0.03 < power.half_width(units=u - 1, items=40, **kw)
    n = power.items_for_half_width(0.05, units=10, **kw)
    assert power.half_width(units=10, items=n, **kw) <= 0.05 < power.half_width(units=10, items=n - 1, **kw)
    # the unit variance alone sets a floor that no number of items goes below
    assert power.items_for_half_width(0.01, units=5, **kw) is None
    assert power.units_for_half_width(1e-4, items=40, max_units=50, **kw) is None
    # with seeds per split, units come in whole splits
    assert power.units_for_half_width(0.05, items=40, seeds=3, method="t", **kw) % 3 == 0


def test_log_ratio_linearisation_matches_the_bootstrap_spread():
    """The delta-method contributions give the log ratio's variance."""
    rng = np.random.default_rng(3)
    units, items = 10, 30
    num = 0.3 + rng.normal(0, 0.2, (units, items))
    den = 0.05 + rng.normal(0, 0.04, (units, items))
    z = power.log_ratio_contributions(num, den)
    assert z.shape == (units, items) and abs(z.mean()) < 1e-12
    flat_sd = lambda a: np.sqrt(a.var(ddof=1) / a.size)  # noqa: E731
    boot = []
    for _ in range(2000):
        i = rng.integers(0, num.size, num.size)
        boot.append(np.log(num.ravel()[i].mean() / den.ravel()[i].mean()))
    assert np.std(boot) == pytest.approx(flat_sd(z), rel=0.1)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2 units"):
        power.variance_components([[1.0, 2.0]])
    with pytest.raises(ValueError, match="at least 2 items"):
        power.variance_components([[1.0], [2.0]])
    with pytest.raises(ValueError, match="method"):
        power.half_width(0.1, 0.1, 5, 10, method="z")
    with pytest.raises(ValueError, match="units"):
        power.half_width(0.1, 0.1, 1, 10)
    with pytest.raises(ValueError, match=">= 0"):
        power.half_width(-0.1, 0.1, 5, 10)
    with pytest.raises(ValueError, match="mean drops must be > 0"):
        power.log_ratio_contributions(np.ones((2, 3)), np.zeros((2, 3)))


def test_synthesis_pilot_reads_notebook_03_item_records():
    """Drops computed by hand from planted predictions (3 views, 2 corruptions, 2 units)."""
    T, K, n = 3, 2, 4
    targets = [0, 1, 0, 1]

    def unit(own_wrong, off_wrong, corr_wrong):
        models = np.tile(np.array(targets), (T, T + K, 1))
        for i in range(T):
            models[i, i, :own_wrong] ^= 1
            for j in range(T):
                if j != i:
                    models[i, j, :off_wrong] ^= 1
            models[i, T:, :corr_wrong] ^= 1
        return {"split": 0, "seed": 0, "test_index": list(range(n)), "targets": targets,
                "models": models.tolist(), "mixed": None}

    result = {"presets": ["a", "b", "c"], "metric": "accuracy",
              "items": {"kind": "predictions", "num_classes": 2, "units": [unit(0, 1, 2), unit(0, 2, 4)]}}
    pilot = power.synthesis_pilot(result)
    assert pilot["mean_drop_faithful"].mean == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert pilot["mean_drop_corruption"].mean == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert pilot["mean_drop_faithful"].units == 2 and pilot["mean_drop_faithful"].items == 4
    assert pilot["mean_drop_faithful"].var_means == pytest.approx(np.var([0.25, 0.5], ddof=1))
    assert pilot["log_ratio"].mean == pytest.approx(0.0, abs=1e-12)
