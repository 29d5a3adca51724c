"""Drift optimisation in fidelity ``"raw2logit"``: the public code's arms, and the default unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drifthelpers import isp
from drifthelpers import optimisation as op
from drifthelpers import optimisation_fidelity as of
from drifthelpers.isp import CameraParams
from drifthelpers.isp.raw2logit import Raw2LogitParametrizedDataModel
from drifthelpers.training import config_key

CAMERA = CameraParams("RGGB", (64.0,) * 4, 1023.0, wb_gains=(1.8, 1.0, 1.4))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int = 12, size: int = 16, seed: int = 0, smooth: bool = False) -> op.JointData:
    """Class-dependent brightness in DN (black 64, white 1023), so the task is learnable."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    if smooth:  # no value near the public model's 1e-5 clip floor, no noise for the sharpen to amplify
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        scene = (1 + 0.3 * torch.sin(yy / 5.0) * torch.cos(xx / 7.0)).expand(n, 1, size, size)
    else:
        scene = 0.5 + torch.rand(n, 1, size, size, generator=g)
    raw = 64 + (100 + 250 * labels.float()).view(n, 1, 1, 1) * scene
    idx = np.arange(n)
    split = (idx[: n // 2], idx[n // 2 : 3 * n // 4], idx[3 * n // 4 :])
    return op.JointData(raw.float(), labels, CAMERA, "classification", 3, split, {"n": n, "synthetic": seed})


def _config(**kw) -> op.JointConfig:
    base = dict(dataset="microscopy", model="small_cnn", epochs=2, batch_size=3, lr=1e-2, data_lr=5e-2,
                image_size=0, learn_demosaic=True)
    return op.JointConfig(**{**base, **kw})


# --------------------------------------------------------------------------- configuration


def test_config_fidelity_validated_and_recorded():
    with pytest.raises(ValueError, match="fidelity must be one of"):
        _config(fidelity="public")
    default = _config()
    assert default.fidelity == "corrected" and "fidelity" not in default.to_dict()
    assert not default.one_lr
    public = _config(fidelity="raw2logit", learn_demosaic=False)
    # the public code learned all 132 scalars with one learning rate
    assert public.one_lr and public.learn_demosaic
    assert public.to_dict()["fidelity"] == "raw2logit"
    data = _data()
    assert op._run_key("learned", public, data, 0) != op._run_key("learned", _config(one_lr=True), data, 0)
    # the default's cache key does not depend on the field: it is the key of the configuration
    # without one_lr and fidelity, which is the recorded one
    fields = {k: v for k, v in default.to_dict().items() if k != "one_lr"}
    before = config_key({"arm": "learned", "seed": 0, "config": fields, "data": data.fingerprint},
                        version="optimisation-2")
    assert op._run_key("learned", default, data, 0) == before == "c450624280941577"


def test_config_for_uses_the_public_protocol_in_raw2logit():
    # the published figure's batch 32 everywhere; 60 epochs on the paper profile, 30 on the CPU ones
    expected = {"quick": (30, 32), "study": (30, 32), "paper": (60, 32)}
    assert of.PUBLIC_PROTOCOL == {"epochs": 60, "batch_size": 32}
    for profile, (epochs, batch_size) in expected.items():
        for dataset in ("microscopy", "drone"):
            corrected = op.config_for(dataset, profile)
            public = op.config_for(dataset, profile, fidelity="raw2logit")
            assert (public.epochs, public.batch_size) == (epochs, batch_size)
            assert (corrected.epochs, corrected.batch_size) != (epochs, batch_size)
            assert public.model == corrected.model and public.lr == corrected.lr
    # explicit values win over the protocol
    public = op.config_for("drone", "quick", fidelity="raw2logit", epochs=3)
    assert (public.epochs, public.batch_size) == (3, 32)
    assert of.protocol("quick", {}) == {}


# --------------------------------------------------------------------------- the arms


def test_arm_data_divides_by_the_full_scale_once():
    data, cfg = _data(), _config(fidelity="raw2logit")
    arm = of.arm_data("learned", cfg, data)
    torch.testing.assert_close(arm.raw, (data.raw.double() / 1023.0).float(), rtol=0, atol=0)
    assert arm.raw.dtype == torch.float32
    assert arm.camera.black_level == (64.0 / 1023.0,) * 4
    assert arm.fingerprint["units"] == "full_scale"
    assert of.arm_data("frozen", cfg, arm) is arm  # converted data are not converted again
    assert of.arm_data("raw_direct", cfg, data) is data  # the packed mosaic stays in DN
    assert of.arm_data("learned", _config(), data) is data
    with pytest.raises(ValueError, match="full scale"):
        op.build_arm("learned", cfg, data, seed=0)


def test_raw2logit_arms_use_the_public_model_at_its_bi_s_ga_initialisation():
    """Before its BatchNorm, the arm's data model at initialisation is the raw2logit static
    ``bi,s,ga`` view of the converted input, within 1e-5 at least 4 pixels from the border
    (as ``tests/test_fidelity.py`` checks for the model itself)."""
    data, cfg = _data(size=24, smooth=True), _config(fidelity="raw2logit")
    arm = of.arm_data("learned", cfg, data)
    _, learned = op.build_arm("learned", cfg, arm, seed=0)
    _, frozen = op.build_arm("frozen", cfg, arm, seed=0)
    assert isinstance(learned, Raw2LogitParametrizedDataModel) and isinstance(frozen, Raw2LogitParametrizedDataModel)
    assert sum(p.numel() for p in learned.parameters() if p.requires_grad) == 132
    assert not any(p.requires_grad for p in frozen.parameters())
    raw = arm.raw[:3]
    with torch.no_grad():
        ours = learned.forward_unnormalised(raw).double()
    static = isp.render(raw.double(), "bi,s,ga", arm.camera, fidelity="raw2logit")
    assert (ours - static).abs()[..., 4:-4, 4:-4].max() <= 1e-5
    torch.testing.assert_close(frozen.forward_unnormalised(raw), learned.forward_unnormalised(raw).detach())


def test_raw2logit_optimiser_has_one_learning_rate():
    data, cfg = _data(), _config(fidelity="raw2logit", lr=3e-3, data_lr=5e-2)
    task, dm = op.build_arm("learned", cfg, of.arm_data("learned", cfg, data), seed=0)
    opt = op._optimiser(task, dm, cfg, True)
    assert {g["lr"] for g in opt.param_groups} == {3e-3}
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in dm.parameters())  # black level included
    corrected = op._optimiser(task, dm, _config(lr=3e-3, data_lr=5e-2), True)
    assert len({g["lr"] for g in corrected.param_groups}) == 3  # the default: own rates


def test_learned_batch_norm_fits_and_frozen_stays_at_init():
    data, cfg = _data(), _config(fidelity="raw2logit")
    learned = op.train_arm("learned", cfg, data, seed=1)
    frozen = op.train_arm("frozen", cfg, data, seed=1)
    steps = learned.steps[-1]
    for run in (learned, frozen):  # both start un-fitted
        assert run.init_params["batch_norm.running_mean"] == [0.0] * 3
        assert run.init_params["batch_norm.running_var"] == [1.0] * 3
    # the learned arm's BatchNorm ran in training mode on every step: it fitted its statistics
    assert learned.final_params["batch_norm.num_batches_tracked"] == steps
    assert min(abs(v) for v in learned.final_params["batch_norm.running_mean"]) > 1e-3
    assert max(abs(v - 1) for v in learned.final_params["batch_norm.running_var"]) > 1e-3
    # the frozen arm's data model is exactly as it started: parameters and BatchNorm statistics
    assert frozen.final_params == frozen.init_params
    assert frozen.final_params["batch_norm.num_batches_tracked"] == 0
    # the learned arm's parameters moved, with the task model's learning rate
    assert learned.final_params["gamma"] != learned.init_params["gamma"]
    rebuilt = op.learned_data_model(learned, of.arm_data("learned", cfg, data).camera)
    assert isinstance(rebuilt, Raw2LogitParametrizedDataModel) and not rebuilt.training
    assert rebuilt.batch_norm.running_mean.tolist() == pytest.approx(learned.final_params["batch_norm.running_mean"])


def test_raw2logit_run_is_deterministic_and_raw_direct_unchanged():
    data = _data(size=32)
    public, default = _config(fidelity="raw2logit"), _config()
    a, b = op.train_arm("learned", public, data, seed=2), op.train_arm("learned", public, data, seed=2)
    assert a.train_loss == b.train_loss and a.final_params == b.final_params
    raw_public = op.train_arm("raw_direct", public, data, seed=2).to_dict()
    raw_default = op.train_arm("raw_direct", default, data, seed=2).to_dict()
    for d in (raw_public, raw_default):
        d.pop("seconds")
    assert raw_public == raw_default


# --------------------------------------------------------------------------- the default is unchanged


# train_arm(arm, _config(), _data(), seed=1) in the default ("corrected") fidelity: recorded
# values, so that any change of the default's results fails here.
_DEFAULT_RECORD = {  # arm: (training losses, validation curve, final gamma, final white balance)
    "learned": ([3.1521625220775604, 2.077068269252777], [0.3333333432674408] * 2, [2.30776047706604],
                [1.9302096366882324, 0.8632287979125977, 1.539261817932129]),
    "frozen": ([3.1509463489055634, 2.0703943967819214], [0.3333333432674408] * 2, [2.200000047683716],
               [1.7999999523162842, 1.0, 1.399999976158142]),
}


@pytest.mark.parametrize("arm", sorted(_DEFAULT_RECORD))
def test_default_fidelity_runs_as_recorded(arm):
    run = op.train_arm(arm, _config(), _data(), seed=1)
    losses, curve, gamma, white_balance = _DEFAULT_RECORD[arm]
    np.testing.assert_allclose(run.train_loss, losses, rtol=1e-4)
    np.testing.assert_allclose(run.curve, curve, rtol=1e-6)
    np.testing.assert_allclose(run.final_params["gamma"], gamma, rtol=1e-4)  # own data learning rate
    np.testing.assert_allclose(run.final_params["white_balance"], white_balance, rtol=1e-4)
    assert not any(k.startswith("batch_norm") for k in run.final_params)  # the bounded model, no buffers
