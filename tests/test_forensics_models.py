"""Drift forensics over several trained models: each model a unit of the drops' interval."""

from __future__ import annotations

import pytest
import torch

from drifthelpers import forensics as fx
from drifthelpers.forensics_models import harm_over_models, model_splits
from drifthelpers.profiles import PROFILES

from test_forensics import ratio_problem


def _gamma(problem, value):
    state = {k: v.clone() for k, v in problem.reference_state.items()}
    state["gamma"] = torch.full_like(state["gamma"], value)
    return state


def test_one_model_gives_the_drops_of_harm_statistics():
    problem = ratio_problem()
    states = {"gamma": _gamma(problem, 2.9), "reference": problem.reference_state}
    assert harm_over_models([(problem, states)], n_boot=300) == fx.harm_statistics(problem, states, n_boot=300)


def test_models_are_the_units_of_the_interval():
    a = ratio_problem()  # gamma 2.9 flips images 0 and 1: drop 0.5
    b = ratio_problem(gammas=(2.5, 2.6, 2.7, 2.8))  # every image flips below 2.9: drop 1.0
    drops = harm_over_models([(a, {"gamma": _gamma(a, 2.9)}), (b, {"gamma": _gamma(b, 2.9)})], n_boot=400)
    g = drops["gamma"]
    assert g["value"] == pytest.approx(0.75) and g["n"]["units"] == 2 and g["n"]["items"] == 4
    assert g["low"] <= 0.75 <= g["high"]
    # resampling models: a resample of two copies of model b gives 1.0, of model a 0.5 at most
    assert g["high"] == pytest.approx(1.0) and g["low"] <= 0.5


def test_units_must_hold_the_same_configurations():
    a, b = ratio_problem(), ratio_problem()
    with pytest.raises(ValueError, match="every unit must hold"):
        harm_over_models([(a, {"gamma": _gamma(a, 2.9)}), (b, {"wb": _gamma(b, 2.9)})])
    with pytest.raises(ValueError, match="at least one"):
        harm_over_models([])


def test_model_splits_follow_the_profile_or_the_count_given():
    assert model_splits("quick", 0, 2) == [0] and PROFILES["quick"]["forensics_models"] == 1
    assert model_splits("study", 0, 16) == list(range(PROFILES["study"]["forensics_models"]))
    assert model_splits("quick", 2, 8, n_models=3) == [2, 3, 4]
    with pytest.raises(ValueError, match=r"needs splits 1..2, but notebook 03 trains splits 0..1"):
        model_splits("quick", 1, 2, n_models=2)
    with pytest.raises(ValueError, match="from split -1"):
        model_splits("quick", -1, 2)
    with pytest.raises(ValueError, match="n_models must be >= 0"):
        model_splits("quick", 0, 2, n_models=-1)
    with pytest.raises(ValueError, match="profile must be one of"):
        model_splits("huge", 0, 2)
