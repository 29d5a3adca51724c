"""Drift forensics in the ``"raw2logit"`` fidelity: the public code's search and its protocol.

A small random CNN on textured mosaics plays the frozen task model. The searches are checked
against the protocol by construction: the gradient comes from the training items only (a
hand-written Adam loop on those items gives the same parameters, and the held-out items cannot
change them), the reported scores are the held-out problem's, the closeness term is the sum of
squares over the batch and the λ grid the public one, and the unbounded parameters move where
the corrected model's bounds would never let them.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from drifthelpers import forensics as fx
from drifthelpers import forensics_fidelity as ff
from drifthelpers.isp import CameraParams, ParametrizedDataModel
from drifthelpers.isp.raw2logit import Raw2LogitParametrizedDataModel, full_scale_input

CAMERA = CameraParams("RGGB", (64.0, 64.0, 64.0, 64.0), 4095.0, (1.9, 1.0, 1.6),
                      ((1.6, -0.4, -0.2), (-0.3, 1.5, -0.2), (0.0, -0.5, 1.5)))
CONFIG = SimpleNamespace(image_size=0)


class FakeSet:
    """A classification data set of textured mosaics in DN (what ``make_problem`` reads)."""

    def __init__(self, n: int = 10, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.raws = 400.0 + 3000.0 * torch.rand(n, 1, 32, 32, generator=g)
        self.targets = [i % 3 for i in range(n)]
        self.camera = CAMERA

    def __getitem__(self, i):
        return {"raw": self.raws[i]}


def _model(seed: int = 0):
    from drifthelpers.models import build_task_model

    torch.manual_seed(seed)
    return build_task_model("small_cnn", num_classes=3)


@pytest.fixture(scope="module")
def data():
    return FakeSet()


def _problems(data, search_idx=(0, 1, 2, 3, 4, 5), holdout_idx=(6, 7, 8, 9), model=None):
    model = model or _model()
    return (ff.make_problem(data, list(search_idx), model, CONFIG, fidelity="raw2logit"),
            ff.make_problem(data, list(holdout_idx), model, CONFIG, fidelity="raw2logit"))


def _hand_search(search, steps, lam, lr, closeness="sum"):
    """Full-batch Adam on the training items, written out: -CE + lam * closeness, no projection."""
    dm = Raw2LogitParametrizedDataModel(full_scale_input(torch.zeros(1, 1, 4, 4), CAMERA)[1]).eval()
    with torch.no_grad():
        for name, (p,) in dm.param_groups().items():
            p.copy_(search.reference_state[name])
    params = [p for (p,) in dm.param_groups().values()]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        rgb = dm(search.raw)
        sq = (rgb - search.rgb_ref).square()
        d = sq.sum() if closeness == "sum" else sq.mean()
        loss = -F.cross_entropy(search.task_model(rgb), search.targets) + lam * d
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {name: p.detach().clone() for name, (p,) in dm.param_groups().items()}


def _close(a: dict, b: dict, atol: float = 2e-5) -> bool:
    return all(torch.allclose(a[k], b[k], rtol=1e-4, atol=atol) for k in a)


# --------------------------------------------------------------------------- the problem


def test_make_problem_corrected_is_the_bounded_model_on_the_mosaic_in_dn(data):
    model = _model()
    problem = ff.make_problem(data, [1, 3, 5], model, CONFIG, preset="ma,s,ga")
    direct = fx.ForensicsProblem(ParametrizedDataModel(CAMERA.with_gamma(2.2), demosaic="ma"), model,
                                 data.raws[[1, 3, 5]], torch.as_tensor([1, 0, 2]), image_size=0)
    assert type(problem.data_model) is ParametrizedDataModel and problem.data_model.demosaic_method == "ma"
    assert torch.equal(problem.raw, data.raws[[1, 3, 5]])
    assert torch.equal(problem.rgb_ref, direct.rgb_ref)
    assert problem.reference_metric == direct.reference_metric


def test_make_problem_raw2logit_is_the_public_model_on_the_full_scale_mosaic(data):
    problem = ff.make_problem(data, [0, 2], _model(), CONFIG, fidelity="raw2logit")
    dm = problem.data_model
    assert isinstance(dm, Raw2LogitParametrizedDataModel) and not dm.training
    assert problem.raw.dtype == torch.float32
    torch.testing.assert_close(problem.raw, data.raws[[0, 2]] / 4095.0)  # 12-bit white level: 2^12 - 1
    torch.testing.assert_close(dm.black_level.detach(), torch.full((4,), 64.0 / 4095.0))
    # the output BatchNorm in eval mode with its initial running statistics: x / sqrt(1 + eps)
    with torch.no_grad():
        expected = dm.forward_unnormalised(problem.raw) / math.sqrt(1.0 + dm.batch_norm.eps)
    torch.testing.assert_close(problem.rgb_ref, expected)
    assert all(math.isinf(b["upper"]) for b in dm.bounds().values())


def test_make_problem_rejects_what_it_cannot_build(data):
    with pytest.raises(ValueError, match="fidelity"):
        ff.make_problem(data, [0], _model(), CONFIG, fidelity="public")
    with pytest.raises(ValueError, match="bi,s,ga"):
        ff.make_problem(data, [0], _model(), CONFIG, preset="me,s,ga", fidelity="raw2logit")


# --------------------------------------------------------------------------- the search


def test_search_gradient_comes_from_the_training_items_only(data):
    search, holdout = _problems(data)
    result = ff.public_search(search, holdout, "all", lam=1e-2, lr=1e-2, epochs=3, batch_size=32)
    assert result.evaluations == 3 and result.search_items == 6 and result.scored_items == 4
    assert _close(result.state, _hand_search(search, 3, 1e-2, 1e-2))
    # the same loop on the held-out items gives other parameters
    assert not _close(result.state, _hand_search(holdout, 3, 1e-2, 1e-2))
    # another held-out set changes the scores, never the parameters found
    _, other = _problems(data, holdout_idx=(6, 7))
    again = ff.public_search(search, other, "all", lam=1e-2, lr=1e-2, epochs=3, batch_size=32)
    assert all(torch.equal(result.state[k], again.state[k]) for k in result.state)
    assert again.scored_items == 2 and again.reference_metric == other.reference_metric


def test_search_reports_the_final_configuration_on_the_held_out_items(data):
    search, holdout = _problems(data)
    result = ff.public_search(search, holdout, "white_balance", lam=1e-3, lr=0.05, epochs=2, batch_size=4)
    e = holdout.evaluate(result.state, distance="sse")
    assert (result.metric, result.loss, result.dissimilarity) == (e["metric"], e["loss"], e["distance"])
    assert result.reference_metric == holdout.reference_metric
    assert [h["epoch"] for h in result.holdout_trace] == [1, 2]
    assert result.holdout_trace[-1]["metric"] == result.metric
    # every epoch visits each training item once, in batches of 4 (6 items: 4 + 2)
    assert result.evaluations == len(result.trace) == 4
    for epoch in (1, 2):
        rows = [row for row in result.trace if row["epoch"] == epoch]
        assert [len(row["items"]) for row in rows] == [4, 2]
        assert sorted(i for row in rows for i in row["items"]) == list(range(6))
    # only the searched group moved; both problems are back at the reference
    assert all(torch.equal(result.state[g], search.reference_state[g]) for g in result.state if g != "white_balance")
    assert all(torch.equal(p, search.reference_state[g]) for g, (p,) in search.data_model.param_groups().items())


def test_closeness_is_the_sum_of_squares_over_the_batch(data):
    search, holdout = _problems(data)
    result = ff.public_search(search, holdout, "all", lam=1e-2, lr=1e-2, epochs=3, batch_size=32)
    assert result.distance == "sse"
    # the penalty is a sum: a mean with the same λ is another search
    assert not _close(result.state, _hand_search(search, 3, 1e-2, 1e-2, closeness="mean"), atol=1e-6)
    # λ enters (not at the first step, where the penalty's gradient is 0)
    free = ff.public_search(search, holdout, "all", lam=0.0, lr=1e-2, epochs=3, batch_size=32)
    assert not _close(result.state, free.state, atol=1e-6)
    # the reported dissimilarity is the held-out sum of squares
    holdout.set_state(result.state)
    with torch.no_grad():
        sse = float((holdout.render() - holdout.rgb_ref).square().sum())
    holdout.reset()
    assert result.dissimilarity == pytest.approx(sse, rel=1e-5)
    assert result.trace[0]["distance"] == 0.0  # the first batch is rendered at the reference


def test_sweep_runs_the_public_lambda_grid_over_the_figure_groups(data):
    search, holdout = _problems(data)
    results = ff.public_sweep(search, holdout, epochs=1, batch_size=32)
    labels = [*fx.GROUPS, "all"]
    assert ff.public_groups(search) == labels
    assert [(r.label, r.lam) for r in results] == [(g, lam) for g in labels for lam in fx.PUBLIC_LAMBDAS]
    assert fx.PUBLIC_LAMBDAS == (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
    assert {r.distance for r in results} == {"sse"} and {r.method for r in results} == {"public"}
    assert results[-1].groups == tuple(search.groups) and "demosaic" in results[-1].groups
    d = results[0].to_dict()
    assert d["lr"] == ff.PUBLIC_LR == 1e-3 and d["epochs"] == 1 and d["batch_size"] == ff.PUBLIC_BATCH_SIZE == 32
    assert ff.PUBLIC_EPOCHS == 7


def test_search_moves_unbounded_parameters_past_any_physical_bound(data):
    search, holdout = _problems(data)
    result = ff.public_search(search, holdout, ["black_level", "gamma"], lam=0.0, lr=3.0, epochs=1, batch_size=32)
    ref = search.reference_state
    # Adam's first step is lr * g / (|g| + eps): every coordinate with a gradient moves by lr
    torch.testing.assert_close((result.state["black_level"] - ref["black_level"]).abs(),
                               torch.full((4,), 3.0), rtol=1e-4, atol=1e-4)
    assert abs(float(result.state["gamma"] - ref["gamma"])) == pytest.approx(3.0, rel=1e-4)
    bounded = ParametrizedDataModel(CAMERA).bounds()
    assert float(result.state["black_level"].abs().max()) > bounded["black_level"]["upper"]
    # the output BatchNorm is never fitted: eval mode, initial running statistics
    bn = search.data_model.batch_norm
    assert not bn.training and torch.equal(bn.running_mean, torch.zeros(3))
    assert torch.equal(bn.running_var, torch.ones(3))


def test_search_rejects_bad_settings(data):
    search, holdout = _problems(data)
    for kw in ({"lam": -1.0}, {"lam": math.inf}, {"lr": 0.0}, {"epochs": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            ff.public_search(search, holdout, "gamma", **kw)
    with pytest.raises(ValueError, match="groups"):
        ff.public_search(search, holdout, "vignetting")
    bounded = ff.make_problem(data, [6, 7], _model(), CONFIG)
    with pytest.raises(ValueError, match="same groups"):
        ff.public_search(search, bounded, "gamma")
