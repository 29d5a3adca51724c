"""Drift synthesis: matrices, drops, protocol comparison, and a tiny end-to-end run with the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from drifthelpers import synthesis


def test_drop_matrix_hand_checked():
    m = np.array([[0.9, 0.8], [0.5, 0.7]])
    np.testing.assert_allclose(synthesis.drop_matrix(m), [[0.0, 0.1], [0.2, 0.0]])
    with pytest.raises(ValueError, match="square"):
        synthesis.drop_matrix(np.zeros((2, 3)))


def test_compare_protocols_hand_checked():
    presets = ["a", "b", "c"]
    m = np.array([[0.9, 0.8, 0.7], [0.6, 0.8, 0.8], [0.9, 0.9, 0.9]])
    corrupted = np.array([[0.5, 0.3], [0.7, 0.7], [0.2, 0.4]])
    out = synthesis.compare_protocols(m, corrupted, presets)
    # off-diagonal drops: a: .1 .2, b: .2 0, c: 0 0 -> mean .5/6
    assert out["mean_drop_faithful"] == pytest.approx(0.5 / 6)
    # corruption drops: a: .4 .6, b: .1 .1, c: .7 .5 -> 2.4/6
    assert out["mean_drop_corruption"] == pytest.approx(2.4 / 6)
    assert out["ratio"] == pytest.approx(2.4 / 0.5)
    # faithful scores a .75 b .7 c .9 ; corruption scores a .4 b .7 c .3 -> ranks (2,1,3) vs (2,3,1)
    # d = (0, -2, 2): rho = 1 - 6 * 8 / (3 * (9 - 1)) = -1
    assert out["spearman_rho"] == pytest.approx(-1.0)
    assert out["pick_faithful"] == "c" and out["pick_corruption"] == "b"
    assert out["worst_test_view"] == "a"  # column drops: a (0, .3, 0), b (.1, 0, 0), c (.2, 0, 0)


def test_config_validation():
    with pytest.raises(ValueError, match="dataset"):
        synthesis.SynthesisConfig(dataset="mnist")
    with pytest.raises(ValueError, match="severity"):
        synthesis.SynthesisConfig(severity=6)
    assert len(synthesis.SynthesisConfig().presets) == 12


def test_profiles_are_read_from_the_one_table():
    from drifthelpers import profiles

    assert synthesis.PROFILES == profiles.section("synthesis")
    assert synthesis.PROFILES["paper"]["drone"] is profiles.PROFILES["paper"]["synthesis"]["drone"]
    assert profiles.settings("synthesis", "quick", "drone") == dict(
        model="small_unet", epochs=12, batch_size=8, lr=1e-3, n_splits=2, image_size=48)
    for name in profiles.NAMES:
        for dataset in profiles.DATASETS:  # every profile builds a valid configuration
            assert synthesis.SynthesisConfig(dataset=dataset, **profiles.settings("synthesis", name, dataset))
    with pytest.raises(ValueError, match="profile must be one of"):
        profiles.settings("synthesis", "huge", "drone")
    for entry in profiles.PROFILES.values():  # every profile says what it reads and what it needs
        assert entry["data_source"] in ("mini", "zenodo", "standin") and isinstance(entry["needs_gpu"], bool)
        required = {"data_source", "needs_gpu", "forensics_models", "job_threads", *profiles.SECTIONS}
        assert required <= set(entry) <= required | {"data", "optimisation_seeds", "optimisation_raw2logit"}
        assert isinstance(entry["forensics_models"], int) and entry["forensics_models"] >= 1
        assert isinstance(entry["job_threads"], int) and entry["job_threads"] >= 0
    assert profiles.PROFILES["study"]["job_threads"] == 1  # its numbers must not depend on the cores


def test_mixed_view_dataset_covers_every_preset():
    views = {p: torch.full((4, 3, 2, 2), float(k)) for k, p in enumerate("abc")}
    ds = synthesis.MixedViewDataset(views, torch.arange(4), [1, 3])
    seen = {(float(ds[i]["rgb"][0, 0, 0]), int(ds[i]["label"])) for i in range(len(ds))}
    assert seen == {(k, t) for k in (0.0, 1.0, 2.0) for t in (1, 3)}


def test_resize_image_masks_stay_binary():
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    out = synthesis.resize_image(mask, 4, mask=True)
    assert out.shape == (2, 1, 4, 4) and set(out.unique().tolist()) <= {0.0, 1.0}
    assert synthesis.resize_image(mask, 0) is mask


@pytest.mark.slow
def test_run_synthesis_end_to_end_and_cache(tiny_micro, tmp_path):
    cfg = synthesis.SynthesisConfig(dataset="microscopy", model="small_cnn", epochs=2, batch_size=8, n_splits=2,
                                    image_size=32, presets=("bi,s,me", "ma,u,ga", "me,s,ga"))
    first = synthesis.run_synthesis(tiny_micro, cfg, cache_dir=tmp_path, progress=False)
    assert np.array(first["matrices"]).shape == (2, 3, 3)
    assert np.array(first["corruption_mean"]).shape == (3, 10)
    assert first["models_from_cache"] == 0
    m = np.array(first["matrix_mean"])
    assert ((0 <= m) & (m <= 1)).all()
    np.testing.assert_allclose(np.array(first["drop_mean"]), np.diag(m)[:, None] - m)
    assert set(first["comparison"]) >= {"mean_drop_faithful", "mean_drop_corruption", "ratio", "spearman_rho"}
    assert len(first["mixed"]["per_test_view"]) == 3
    # per-item records reproduce the matrices; every headline number has its interval; valid JSON
    units = first["items"]["units"]
    assert [(u["split"], u["seed"]) for u in units] == [(0, 0), (1, 0)]
    for u, mat, table in zip(units, first["matrices"], first["corruption_tables"]):
        correct = (np.asarray(u["models"]) == np.asarray(u["targets"])).mean(-1)
        np.testing.assert_allclose(correct, np.concatenate([mat, table], 1))
    stats_ = first["statistics"]
    for key in ("mean_drop_faithful", "mean_drop_corruption", "selection_regret", "accuracy_own_view",
                "balanced_accuracy_own_view", "mixed_minus_single_off_view"):
        e = stats_[key]
        assert e["n"]["units"] == 2 and e["low"] <= e["value"] <= e["high"], key
    rho = stats_["spearman_rho"]  # a barely trained model may score every preset alike: undefined, with a reason
    assert (rho["low"] <= rho["value"] <= rho["high"]) if rho["value"] is not None else rho["reason"]
    assert stats_["mean_drop_faithful"]["value"] == pytest.approx(first["comparison"]["mean_drop_faithful"])
    assert {c["verdict"] for c in first["claims"]} <= {"supported", "contradicted", "undecided"}
    assert len(first["claims"]) == len(synthesis.PAPER_CLAIMS["microscopy"])
    json.dumps(first, allow_nan=False)
    # the same configuration again: every model comes from the cache, numbers identical
    again = synthesis.run_synthesis(tiny_micro, cfg, cache_dir=tmp_path, progress=False)
    assert again["models_from_cache"] == 2 * 3 + 2
    assert again["matrices"] == first["matrices"]
    assert again["corruption_tables"] == first["corruption_tables"]


def test_trained_model_reuses_the_experiment_cache(tiny_micro, tmp_path):
    cfg = synthesis.SynthesisConfig(dataset="microscopy", epochs=1, batch_size=8, n_splits=1, image_size=32,
                                    presets=("bi,s,ga",))
    synthesis.run_synthesis(tiny_micro, cfg, cache_dir=tmp_path, progress=False, mixed=False)
    model, meta, parts = synthesis.trained_model(tiny_micro, cfg, "bi,s,ga", split=0, cache_dir=tmp_path)
    assert meta["cached"] is True
    assert len(parts) == 3 and sum(len(p) for p in parts) == len(tiny_micro)


def test_splits_and_seeds_are_separate_axes():
    cfg = synthesis.SynthesisConfig(n_splits=2, n_seeds=3, seed=5)
    assert cfg.units() == [(k, r) for k in range(2) for r in range(3)]
    seeds = {(k, r): synthesis.train_config(cfg, "bi,s,ga", k, {}, seed_index=r).seed for k, r in cfg.units()}
    assert seeds[(0, 0)] == seeds[(1, 0)] == 5 and seeds[(0, 2)] == seeds[(1, 2)] == 7  # crossed
    keys = {synthesis.config_key(synthesis.train_config(cfg, "bi,s,ga", k, {}, seed_index=r)) for k, r in cfg.units()}
    assert len(keys) == 6  # every unit its own model
    with pytest.raises(ValueError, match="n_seeds"):
        synthesis.SynthesisConfig(n_seeds=0)


def _fake_result(kind="predictions", units=3, items=5, seed=0):
    """A run_synthesis-shaped result with 3 presets and 2 corruptions, made up item by item."""
    rng = np.random.default_rng(seed)
    presets, names = ["a", "b", "c"], ["noise", "blur"]
    recs = []
    for k in range(units):
        if kind == "predictions":
            y = rng.integers(0, 3, items)
            models = np.where(rng.random((3, 5, items)) < 0.7, y, (y + 1) % 3)
            recs.append({"split": k, "seed": 0, "targets": y.tolist(), "models": models.tolist(),
                         "mixed": np.where(rng.random((3, items)) < 0.7, y, (y + 1) % 3).tolist()})
        else:
            union = rng.integers(1, 50, (3, 5, 1, items))
            inter = rng.integers(0, 1, (3, 5, 1, items)) + (union * rng.random((3, 5, 1, items))).astype(int)
            recs.append({"split": k, "seed": 0, "targets": None, "models": np.concatenate([inter, union], 2).tolist(),
                         "mixed": None})
    return {"dataset": "microscopy" if kind == "predictions" else "drone",
            "metric": "accuracy" if kind == "predictions" else "iou", "presets": presets, "corruptions": names,
            "items": {"kind": kind, "num_classes": 3, "conditions": presets + names, "units": recs}}


def test_synthesis_statistics_from_items():
    result = _fake_result()
    out = synthesis.synthesis_statistics(result, n_boot=300)
    scores = synthesis.unit_scores(result)
    m = np.mean([v.mean(-1) for v in scores["views"]], 0)
    c = np.mean([v.mean(-1) for v in scores["corruptions"]], 0)
    point = synthesis.compare_protocols(m, c, result["presets"])
    st_ = out["statistics"]
    assert st_["mean_drop_faithful"]["value"] == pytest.approx(point["mean_drop_faithful"])
    assert st_["mean_drop_corruption"]["value"] == pytest.approx(point["mean_drop_corruption"])
    np.testing.assert_allclose(np.array(st_["cell_mean"]["value"], float), m)
    assert np.shape(st_["cell_sd"]) == (3, 3)
    # balanced accuracy on the own views, by hand from the first principles
    recalls = []
    for unit in result["items"]["units"]:
        y = np.asarray(unit["targets"])
        pred = np.asarray(unit["models"])
        recalls.append(np.mean([np.nanmean([np.mean(pred[i, i][y == k] == k) if (y == k).any() else np.nan
                                            for k in range(3)]) for i in range(3)]))
    assert st_["balanced_accuracy_own_view"]["value"] == pytest.approx(np.mean(recalls))
    assert out["tests"]["friedman_faithful"]["blocks"] == 3
    names = [c["claim"] for c in out["claims"]]
    assert names == [c.name for c in synthesis.PAPER_CLAIMS["microscopy"]]
    gated = [c for c in out["claims"] if "rank" in c["claim"]][0]
    if not out["tests"]["friedman_faithful"]["rejects"]:
        assert gated["verdict"] == "undecided" and "Friedman" in gated["rule"]
    json.dumps(out, allow_nan=False)


def test_synthesis_statistics_segmentation_uses_per_image_and_pooled_iou():
    result = _fake_result("intersection_union")
    out = synthesis.synthesis_statistics(result, n_boot=200)
    recs = [np.asarray(u["models"], float) for u in result["items"]["units"]]
    per_image = np.mean([[r[i, i, 0] / r[i, i, 1] for i in range(3)] for r in recs])
    pooled = np.mean([[r[i, i, 0].sum() / r[i, i, 1].sum() for i in range(3)] for r in recs])
    assert out["statistics"]["iou_own_view"]["value"] == pytest.approx(per_image)
    assert out["statistics"]["iou_pooled_own_view"]["value"] == pytest.approx(pooled)
    assert "mixed_minus_single_off_view" not in out["statistics"]


def test_merge_results_pools_units():
    a, b = _fake_result(seed=1), _fake_result(seed=2)
    for r in (a, b):
        r.update(config={}, units=[{"split": u["split"], "seed": 0} for u in r["items"]["units"]],
                 matrices=np.zeros((3, 3, 3)).tolist(), corruption_tables=np.zeros((3, 3, 2)).tolist())
    merged = synthesis.merge_results([a, b])
    assert len(merged["items"]["units"]) == 6 and np.shape(merged["matrices"]) == (6, 3, 3)
    out = synthesis.synthesis_statistics(merged, n_boot=100)
    assert out["statistics"]["mean_drop_faithful"]["n"]["units"] == 6
    b["presets"] = ["x", "y", "z"]
    with pytest.raises(ValueError, match="same presets"):
        synthesis.merge_results([a, b])
