"""Drift synthesis: matrices, drops, protocol comparison, and a tiny end-to-end run with the cache."""

from __future__ import annotations

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
