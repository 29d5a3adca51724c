"""Drift forensics: bounded searches, the closeness penalty's sign, the random baseline, the envelope.

Most tests use a synthetic pipeline whose answer is known analytically: flat two-tone raw
images and a "task model" that reads only the log-ratio of the two tones after the data model.
Before the gamma stage everything is linear in the raw values (black level 0 here), so that
ratio is ``log(r) / gamma`` whatever the white balance, colour matrix, sharpening or denoising
(measured inside the flat regions, away from every filter's reach). The model calls an image
class 0 when ``log(r) / gamma > T``: only a larger gamma can harm it, a higher black level only
increases the ratio (helps), the other groups cannot change it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from drifthelpers import cli_forensics, forensics as fx
from drifthelpers.isp import CameraParams, ParametrizedDataModel

A1 = 0.04  # left tone (fraction of white); right tone = A1 * r
GAMMA_C = (2.6, 2.8, 3.0, 3.2)  # gamma at which image i flips
THRESHOLD = math.log(2.0) / 2.6  # r_i = exp(THRESHOLD * GAMMA_C[i])


class RatioModel(nn.Module):
    """Logits (k (f - T), 0) with f the log-ratio of the right and left tones (G channel, interiors)."""

    def __init__(self, k: float = 50.0):
        super().__init__()
        self.k = k
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        left = x[:, 1, 6:26, 5:11].mean(dim=(-2, -1)).clamp_min(1e-6)
        right = x[:, 1, 6:26, 21:27].mean(dim=(-2, -1)).clamp_min(1e-6)
        f = torch.log(right) - torch.log(left)
        return torch.stack([self.k * (f - THRESHOLD), torch.zeros_like(f)], dim=1)


def _camera(**kw):
    return CameraParams("RGGB", (0.0,) * 4, 1.0, **kw)


def ratio_problem(gammas=GAMMA_C, fast=True) -> fx.ForensicsProblem:
    raw = torch.full((len(gammas), 1, 32, 32), A1)
    for i, g in enumerate(gammas):
        raw[i, :, :, 16:] = A1 * math.exp(THRESHOLD * g)
    dm = ParametrizedDataModel(_camera())
    return fx.ForensicsProblem(dm, RatioModel(), raw, torch.zeros(len(gammas), dtype=torch.long), fast=fast)


def cnn_problem(demosaic="bi", n=6, seed=0) -> fx.ForensicsProblem:
    """A random (untrained) small CNN on textured mosaics with a realistic camera."""
    from drifthelpers.models import build_task_model

    g = torch.Generator().manual_seed(seed)
    raw = 400.0 + 3000.0 * torch.rand(n, 1, 32, 32, generator=g)
    camera = CameraParams("RGGB", (64.0, 64.0, 64.0, 64.0), 4095.0, (1.9, 1.0, 1.6),
                          ((1.6, -0.4, -0.2), (-0.3, 1.5, -0.2), (0.0, -0.5, 1.5)))
    torch.manual_seed(seed)
    model = build_task_model("small_cnn", num_classes=3)
    labels = torch.arange(n) % 3
    return fx.ForensicsProblem(ParametrizedDataModel(camera, demosaic=demosaic), model, raw, labels)


def assert_in_bounds(dm: ParametrizedDataModel, state: dict, atol: float = 1e-5):
    b = dm.bounds()
    for name in ("black_level", "white_balance", "gamma", "colour_matrix", "sharpen", "denoise"):
        v = state[name]
        assert float(v.min()) >= b[name]["lower"] - atol, name
        assert float(v.max()) <= b[name]["upper"] + atol, name
    assert torch.allclose(state["colour_matrix"].sum(1), torch.tensor(b["colour_matrix"]["row_sums"]).float(), atol=1e-4)
    assert abs(float(state["sharpen"].sum()) - 1) < 1e-4
    assert abs(float(state["denoise"].sum()) - 1) < 1e-4


# --------------------------------------------------------------------------- the pipeline


def test_reference_problem():
    p = ratio_problem()
    assert p.reference_metric == 1.0
    assert p.groups == fx.GROUPS
    assert p.metric_name == "accuracy"


@pytest.mark.parametrize("demosaic", ["bi", "ma", "me"])
def test_cached_rendering_matches_the_data_model(demosaic):
    p = cnn_problem(demosaic, n=2)
    dm = p.data_model
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        p.reset()
        fx._random_candidate(dm, p.reference_state, p.groups, gen, 0.05)
        with torch.no_grad():
            assert torch.allclose(p.render(), dm(p.raw), atol=2e-5)
    p.reset()


def test_rejects_bad_input():
    p = ratio_problem()
    with pytest.raises(ValueError, match="groups"):
        fx.gradient_search(p, "exposure")
    with pytest.raises(ValueError, match="lam"):
        fx.gradient_search(p, "gamma", lam=-1.0)
    with pytest.raises(ValueError, match="lam"):
        fx.random_search(p, "gamma", lam=float("inf"))
    with pytest.raises(ValueError, match="shape"):
        fx.ForensicsProblem(p.data_model, RatioModel(), torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="distance"):
        fx.dissimilarity(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), "l1")


# --------------------------------------------------------------------------- the penalty


@pytest.mark.parametrize("kind", ["mse", "ssim"])
def test_dissimilarity_grows_as_images_diverge(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 0.5 + 0.25
    noise = torch.randn(2, 3, 32, 32, generator=g)
    values = [float(fx.dissimilarity((x + s * noise).clamp(0, 1), x, kind)) for s in (0.0, 0.02, 0.1, 0.3)]
    assert abs(values[0]) < 1e-5
    assert values == sorted(values) and values[1] > 1e-5  # penalty grows with the change: right sign


@pytest.mark.slow
@pytest.mark.parametrize("distance", ["mse", "ssim"])
def test_huge_lambda_keeps_the_reference(distance):
    p = cnn_problem(n=2)
    r = fx.gradient_search(p, "all", lam=1e6, steps=3, step_fraction=0.05, distance=distance)
    for name, value in p.reference_state.items():
        assert torch.allclose(r.state[name], value, atol=1e-7), name
    assert r.metric == p.reference_metric and r.rms < 1e-6
    # and a small lambda does move (the test above cannot pass by doing nothing)
    r0 = fx.gradient_search(p, "all", lam=0.0, steps=3, step_fraction=0.05, distance=distance)
    assert r0.rms > 1e-3 and r0.loss > p.reference_loss


# --------------------------------------------------------------------------- bounds


def test_every_evaluated_configuration_is_inside_the_bounds():
    p = cnn_problem(n=2)
    seen = []
    render = p.render

    def spy():
        seen.append({k: v.detach().clone() for k, v in fx._snapshot(p.data_model).items()})
        return render()

    p.render = spy
    r = fx.gradient_search(p, "all", lam=0.0, steps=6, step_fraction=0.5)  # huge steps: bounds must bite
    assert len(seen) == r.evaluations == 6
    for state in seen + [r.state]:
        assert_in_bounds(p.data_model, state)
    hit = [float(s["gamma"]) for s in seen]
    assert max(hit) > 2.2 + 0.5 or min(hit) < 2.2 - 0.5  # the steps were really large
    rr = fx.random_search(p, "all", evaluations=6, seed=3, min_scale=1.0)
    assert_in_bounds(p.data_model, rr.state)


def test_sum_constrained_groups_move():
    """Kernels and matrix rows move along their constraint (Adam + projection would cancel a uniform step)."""
    p = cnn_problem(n=2)
    for g in ("sharpen", "denoise", "colour_matrix"):
        r = fx.gradient_search(p, g, lam=0.0, steps=3, step_fraction=0.05)
        assert float((r.state[g] - p.reference_state[g]).abs().max()) > 1e-3, g


# --------------------------------------------------------------------------- finding the parameter


@pytest.mark.slow
def test_search_finds_the_parameter_the_model_depends_on():
    p = ratio_problem()
    results = {g: fx.gradient_search(p, g, lam=0.0, steps=12, step_fraction=0.05) for g in fx.GROUPS}
    assert results["gamma"].metric == 0.0
    assert float(results["gamma"].state["gamma"]) > max(GAMMA_C)
    for g in fx.GROUPS:
        if g != "gamma":
            assert results[g].metric == 1.0, g
    harm = fx.most_harmful(results.values())
    assert min(harm, key=lambda k: (harm[k].metric, -harm[k].loss)) == "gamma"
    every = fx.gradient_search(p, "all", lam=0.0, steps=12, step_fraction=0.05)
    assert every.metric == 0.0 and float(every.state["gamma"]) > 2.2 + 0.1  # all groups free: gamma moves up


# --------------------------------------------------------------------------- random baseline, determinism


def test_random_search_spends_exactly_its_budget():
    p = ratio_problem()
    before_calls, before_evals = p.task_model.calls, p.evaluations
    r = fx.random_search(p, "all", evaluations=7, seed=0)
    assert p.task_model.calls - before_calls == 7 == r.evaluations == len(r.trace)
    assert p.evaluations - before_evals == 7
    g = fx.gradient_search(p, "gamma", steps=5, step_fraction=0.01, patience=100)
    assert g.evaluations == len(g.trace) == 5


@pytest.mark.slow
def test_searches_are_deterministic():
    p = cnn_problem(n=4)
    a = fx.random_search(p, "all", evaluations=5, seed=11)
    b = fx.random_search(p, "all", evaluations=5, seed=11)
    c = fx.random_search(p, "all", evaluations=5, seed=12)
    assert a.trace == b.trace and a.trace != c.trace
    g1 = fx.gradient_search(p, "all", steps=4, step_fraction=0.05)
    g2 = fx.gradient_search(p, "all", steps=4, step_fraction=0.05)
    assert g1.trace == g2.trace
    assert all(torch.equal(g1.state[k], g2.state[k]) for k in g1.state)


def test_early_stop_when_the_objective_stalls():
    p = ratio_problem()
    r = fx.gradient_search(p, "sharpen", lam=0.0, steps=50, patience=3)  # sharpening cannot change the ratio
    assert r.stopped_early and r.evaluations < 10


def test_compare_and_summaries_are_json_ready():
    import json

    p = ratio_problem()
    c = fx.compare_search(p, "gamma", lam=0.0, evaluations=6, seeds=(0, 1), step_fraction=0.05)
    assert len(c["gradient"]) == len(c["random"]) == 6
    assert c["gradient"][-1] <= c["gradient"][0] and c["gradient_drop"] >= 0
    results = fx.lambda_sweep(p, [0.0, 1e6], groups=["gamma"], steps=4, step_fraction=0.05)
    assert [r.lam for r in results] == [0.0, 1e6] and results[1].metric == 1.0
    pts = fx.harm_vs_change(results, c["random_trace"], p.reference_metric)
    json.dumps({"c": c, "pts": pts, "r": [r.to_dict(trace=True) for r in results]})


# --------------------------------------------------------------------------- the envelope


def test_envelope_matches_the_analytic_interval():
    p = ratio_problem()
    keep = ("gamma", "black_level", "wb_gain_g", "sharpen_amount")
    axes = [a for a in fx.envelope_axes(p.data_model) if a.name in keep]
    spec = fx.operating_envelope(p, tolerance=0.3, axes=axes, points=8, refine=8)
    gamma = spec["parameters"]["gamma"]
    # accuracy >= 0.7 allows one flipped image of four: gamma below the second threshold, 2.8
    assert gamma["upper_limited"] and 2.79 <= gamma["upper"] <= 2.8 + 1e-6
    assert not gamma["lower_limited"] and gamma["lower"] == pytest.approx(1.0)
    # a black level above the brighter tone clips both tones to 0: the ratio collapses; the
    # second-darkest bright tone sets the edge
    black = spec["parameters"]["black_level"]
    edge = A1 * math.exp(THRESHOLD * GAMMA_C[1])
    assert black["upper_limited"] and edge - 2e-3 <= black["upper"] <= edge + 1e-6
    assert black["lower"] == pytest.approx(0.0) and black["upper_DN"] == pytest.approx(black["upper"])
    for name in ("wb_gain_g", "sharpen_amount"):  # the ratio cannot see these
        e = spec["parameters"][name]
        assert not e["upper_limited"] and not e["lower_limited"], name
        assert e["lower"] == pytest.approx(e["range"][0]) and e["upper"] == pytest.approx(e["range"][1]), name
    table = fx.envelope_table(spec)
    assert "gamma" in table and "physical bounds only" in table
    assert torch.equal(p.data_model.gamma.detach(), p.reference_state["gamma"])  # left at the reference


def test_envelope_axes_start_at_the_reference():
    p = cnn_problem(n=2)
    dm = p.data_model
    harmful = {"denoise": {**p.reference_state, "denoise": torch.full((5, 5), 1 / 25)}}
    axes = fx.envelope_axes(dm, harmful)
    names = [a.name for a in axes]
    assert {"black_level", "wb_gain_r", "gamma", "ccm_strength", "sharpen_amount", "denoise_sigma",
            "path:denoise"} <= set(names)
    for axis in axes:
        p.reset()
        with torch.no_grad():
            axis.apply(dm, axis.reference)
            dm.project_()
        for name, value in p.reference_state.items():
            assert torch.allclose(getattr(dm, name).detach(), value, atol=2e-4), (axis.name, name)
        assert axis.lower <= axis.reference <= axis.upper
    p.reset()


# --------------------------------------------------------------------------- command line


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert cli_forensics.cli_main(["--preset", "bi,u,me"]) == 2
    assert "s,ga" in capsys.readouterr().err
    assert cli_forensics.cli_main(["--tolerance", "1.5"]) == 2
    assert cli_forensics.cli_main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli_forensics.cli_main(["--output", str(tmp_path)]) == 2
    assert cli_forensics.cli_main(["--dataset", "nope"]) == 2  # argparse's own error


@pytest.mark.slow
def test_cli_runs_the_envelope_for_a_checkpoint(tmp_path, capsys):
    import json

    from drifthelpers.models import build_task_model

    torch.manual_seed(0)
    ckpt = tmp_path / "task.pt"
    torch.save(build_task_model("small_cnn", num_classes=9).state_dict(), ckpt)
    out = tmp_path / "env.json"
    assert cli_forensics.cli_main(["--checkpoint", str(ckpt), "--points", "2", "--refine", "0", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    spec = json.loads(out.read_text())
    assert "Operating envelope" in printed and "gamma" in spec["parameters"]
    assert spec["n_images"] > 0 and spec["source"]["checkpoint"] == str(ckpt)


def test_item_scores_and_harm_with_an_interval_over_images():
    problem = ratio_problem()
    assert fx.item_scores(problem).tolist() == [1.0, 1.0, 1.0, 1.0]  # the reference classifies every image
    state = {k: v.clone() for k, v in problem.reference_state.items()}
    state["gamma"] = torch.full_like(state["gamma"], 2.9)  # past the flip points of images 0 and 1 only
    assert fx.item_scores(problem, state).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert torch.equal(problem.data_model.gamma.detach(), problem.reference_state["gamma"])  # left at the reference
    drops = fx.harm_statistics(problem, {"gamma": state, "reference": problem.reference_state}, n_boot=300)
    g = drops["gamma"]
    assert g["value"] == pytest.approx(0.5) and 0.0 <= g["low"] <= 0.5 <= g["high"] <= 1.0
    assert g["n"] == {"units": 1, "items": 4, "resamples": 300}
    assert drops["reference"]["value"] == 0.0 and drops["reference"]["high"] == 0.0
    verdicts = {v["claim"]: v for v in fx.judge_claims(drops)}
    assert set(verdicts) == {"microscopy forensics: gamma alone does no real harm"}
    # four images: the interval spans most of [0, 1], across the ±0.05 range of "no real harm"
    v = verdicts["microscopy forensics: gamma alone does no real harm"]
    assert v["verdict"] == "undecided" and "edge" in v["rule"] and v["units_to_decide"] > 4
