"""Ablation of the corrections: headline numbers from item records, paired changes, a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drifthelpers import ablation, synthesis


def _result(kind, fidelity="raw2logit", corrections=(), units=2, items=6, seed=0, shift=0.0, test_index=None):
    """A run_synthesis-shaped result (3 presets, 2 corruptions) made up item by item, with the
    matrices its records imply under the configuration's metric."""
    rng = np.random.default_rng(seed)
    cfg = {"fidelity": fidelity, "corrections": list(corrections)}
    recs, mats, tables = [], [], []
    for k in range(units):
        if kind == "predictions":
            y = rng.integers(0, 3, items)
            models = np.where(rng.random((3, 5, items)) < 0.6 + shift, y, (y + 1) % 3)
            recs.append({"split": k, "seed": 0, "targets": y.tolist(), "models": models.tolist()})
            cells = (models == y).mean(-1)
        else:
            union = rng.integers(1, 50, (3, 5, 1, items))
            inter = (union * rng.random((3, 5, 1, items))).astype(int)
            models = np.concatenate([inter, union], 2)
            recs.append({"split": k, "seed": 0, "targets": None, "models": models.tolist()})
            per_image = fidelity == "raw2logit" and "pooled_iou" not in corrections
            cells = (inter / union).mean(-1)[..., 0] if per_image else inter.sum(-1)[..., 0] / union.sum(-1)[..., 0]
        recs[-1]["test_index"] = list(range(items)) if test_index is None else test_index
        mats.append(cells[:, :3])
        tables.append(cells[:, 3:])
    return {"config": cfg, "items": {"kind": kind, "units": recs}, "matrix_mean": np.mean(mats, 0),
            "corruption_mean": np.mean(tables, 0)}


@pytest.mark.parametrize("kind,corrections", [("predictions", ()), ("intersection_union", ()),
                                              ("intersection_union", ("pooled_iou",))])
def test_headline_values_agree_with_compare_protocols(kind, corrections):
    r = _result(kind, corrections=corrections)
    point = ablation._point(ablation.arm_scores(r))
    want = synthesis.compare_protocols(r["matrix_mean"], r["corruption_mean"], ["a", "b", "c"])
    assert point[0] == pytest.approx(np.diag(r["matrix_mean"]).mean())
    assert point[1] == pytest.approx(want["mean_drop_faithful"])
    assert point[2] == pytest.approx(want["mean_drop_corruption"])
    if want["ratio"] is not None and want["mean_drop_corruption"] > 0:
        assert np.exp(point[3]) == pytest.approx(want["ratio"])
    if want["spearman_rho"] is not None:
        assert point[4] == pytest.approx(want["spearman_rho"])


def test_pooled_and_per_image_iou_differ_on_the_same_records():
    per_image = ablation._point(ablation.arm_scores(_result("intersection_union")))
    pooled = ablation._point(ablation.arm_scores(_result("intersection_union", corrections=("pooled_iou",))))
    assert abs(per_image[0] - pooled[0]) > 1e-3


def test_compare_arms_pairs_items_and_reports_changes():
    base = _result("predictions", seed=1)
    arm = _result("predictions", seed=2, shift=0.3)
    out = ablation.compare_arms(base, arm, n_boot=200, seed=0)
    assert out["paired"] is True
    for name in ablation.HEADLINE:
        n = out["numbers"][name]
        if n["change"]["value"] is not None and n["baseline"]["value"] is not None:
            assert n["change"]["value"] == pytest.approx(n["corrected"]["value"] - n["baseline"]["value"])
    d = out["numbers"]["diagonal_mean"]["change"]
    assert d["low"] <= d["value"] <= d["high"] and d["value"] > 0  # the arm is more accurate by construction
    none = ablation.compare_arms(base, arm, n_boot=0)
    assert none["numbers"]["diagonal_mean"]["change"]["value"] == pytest.approx(d["value"])
    moved = _result("predictions", seed=2, test_index=[5, 4, 3, 2, 1, 0])
    unpaired = ablation.compare_arms(base, moved, n_boot=200)
    assert unpaired["paired"] is False and unpaired["numbers"]["diagonal_mean"]["change"]["method"] == "percentile"


def test_applicable_corrections_and_bad_names(tiny_micro):
    cfg = synthesis.SynthesisConfig(presets=("bi,s,ga", "me,u,me"))
    assert ablation.applicable_corrections(tiny_micro, cfg) == ["chain", "unsharp_2d", "imagenet_c",
                                                                "no_standardisation"]
    with pytest.raises(ValueError, match="unknown corrections"):
        ablation.ablation(tiny_micro, cfg, corrections=["bogus"])


def test_ablation_one_correction_quick(tiny_micro, tmp_path):
    cfg = synthesis.SynthesisConfig(dataset="microscopy", model="small_cnn", epochs=1, batch_size=8, n_splits=1,
                                    image_size=16, presets=("bi,s,me", "ma,u,ga"))
    out = ablation.ablation(tiny_micro, cfg, corrections=["no_standardisation"], cache_dir=False, n_boot=50,
                            workers=1)
    assert [r["correction"] for r in out["rows"]] == ["no_standardisation", "all"]
    row = out["rows"][0]
    assert row["paired"] and row["explanation"] == ablation.CORRECTIONS["no_standardisation"]
    n = row["numbers"]["diagonal_mean"]
    assert n["change"]["value"] == pytest.approx(n["corrected"]["value"] - n["baseline"]["value"])
    assert out["baseline"]["diagonal_mean"] == out["rows"][1]["numbers"]["diagonal_mean"]["baseline"]


@pytest.mark.slow
def test_ablation_tiny_end_to_end(tiny_micro, tmp_path):
    cfg = synthesis.SynthesisConfig(dataset="microscopy", model="small_cnn", epochs=1, batch_size=8, n_splits=2,
                                    image_size=16, presets=("bi,s,me", "ma,u,ga", "me,s,ga"))
    out = ablation.ablation(tiny_micro, cfg, cache_dir=tmp_path, n_boot=100, workers=1)
    assert [r["correction"] for r in out["rows"]] == ["chain", "unsharp_2d", "imagenet_c", "no_standardisation",
                                                      "all"]
    assert out["config"]["fidelity"] == "raw2logit" and out["config"]["corrections"] == ()
    by = {r["correction"]: r for r in out["rows"]}
    # ImageNet-C constants change only the corruption table: the views' numbers are the same models'
    same = by["imagenet_c"]["numbers"]
    assert same["diagonal_mean"]["change"]["value"] == pytest.approx(0.0)
    assert same["mean_drop_faithful"]["change"]["value"] == pytest.approx(0.0)
    for row in out["rows"]:
        assert row["paired"] and row["explanation"]
        for name in ablation.HEADLINE:
            c = row["numbers"][name]["change"]
            assert c["value"] is None or c["low"] is None or c["low"] <= c["value"] <= c["high"]
    table = ablation.ablation_table(out)
    assert table.count("\n") == 2 + len(out["rows"]) and "+ no_standardisation" in table
    json.dumps(out, allow_nan=False, default=float)
