"""Drift optimisation in both fidelities: the arms' data models, their inputs and their modes.

:class:`drifthelpers.optimisation.JointConfig` has a field ``fidelity``:

* ``"corrected"`` (the default): the ``learned`` and ``frozen`` arms use the bounded
  :class:`~drifthelpers.isp.ParametrizedDataModel` on the mosaic in DN. It holds no
  normalisation layer and no buffers (:func:`check_no_running_stats`), so both arms run it in
  the same mode and differ only in whether it learns; the data model has its own learning rate.
* ``"raw2logit"``: the arms as the paper's public code configured them, the confound included
  so that it can be measured. Both use the public parametrized model
  (:class:`~drifthelpers.isp.raw2logit.Raw2LogitParametrizedDataModel`: 132 unbounded scalars,
  the 81-tap debayer convolution learned, then a non-affine ``BatchNorm2d`` on the output) on
  the mosaic divided by its full scale (:func:`arm_data`, once per run). In the ``learned`` arm
  the BatchNorm is in training mode while the models train, so it standardises each batch and
  fits its running statistics (eval mode, with those statistics, for validation and test), and
  the data model learns with the task model's learning rate (``one_lr``). In the ``frozen``
  arm its parameters never change and its BatchNorm stays un-fitted: eval mode throughout,
  with its initial running statistics (mean 0, variance 1). ``raw_direct`` is the same in
  both fidelities. The published optimisation figure trained with batch 32 for 60 epochs
  (:data:`PUBLIC_PROTOCOL`); each profile's ``"optimisation_raw2logit"`` entry says how many
  epochs and which batch size it uses in this fidelity (:func:`protocol`).

This module imports nothing of :mod:`drifthelpers.optimisation`: it receives its objects
(``JointConfig``, ``JointData``, ``ArmRun``) as arguments.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .isp import CameraParams, ParametrizedDataModel, parametrized_data_model
from .profiles import PROFILES, check_name

__all__ = ["FIDELITIES", "PUBLIC_PROTOCOL", "check_config", "protocol", "arm_data", "data_model",
           "fits_batch_norm", "check_no_running_stats", "learned_data_model"]

#: The values of ``JointConfig.fidelity``, the default first.
FIDELITIES: tuple[str, ...] = ("corrected", "raw2logit")
#: The published optimisation figure's training length and batch size.
PUBLIC_PROTOCOL: dict = {"epochs": 60, "batch_size": 32}
_FULL_SCALE = "full_scale"  # the fingerprint's "units" of data converted by arm_data


def check_config(config) -> None:
    """Validate ``config.fidelity``; in ``"raw2logit"`` set ``one_lr`` and ``learn_demosaic``.

    The public code learned every one of its 132 data-model scalars with the task model's
    learning rate, so a ``"raw2logit"`` configuration records ``one_lr=True`` and
    ``learn_demosaic=True`` whatever it was given.

    Raises:
        ValueError: a fidelity that is not one of :data:`FIDELITIES`.
    """
    if config.fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {FIDELITIES}, got {config.fidelity!r}")
    if config.fidelity == "raw2logit":
        object.__setattr__(config, "one_lr", True)
        object.__setattr__(config, "learn_demosaic", True)


def protocol(profile: str, overrides: dict) -> dict:
    """The training length and batch size a profile uses for ``overrides["fidelity"]``.

    ``{}`` for ``"corrected"`` (the profile's own values); for ``"raw2logit"`` the profile's
    ``"optimisation_raw2logit"`` entry of :data:`drifthelpers.profiles.PROFILES`. Explicit
    ``epochs`` / ``batch_size`` in ``overrides`` are left out, so that they win.

    Example:
        >>> protocol("paper", {"fidelity": "raw2logit"}) == PUBLIC_PROTOCOL
        True
        >>> protocol("quick", {"fidelity": "raw2logit", "epochs": 3})
        {'batch_size': 32}
    """
    if overrides.get("fidelity", "corrected") == "corrected":
        return {}
    entry = PROFILES[check_name(profile)].get("optimisation_raw2logit", PUBLIC_PROTOCOL)
    return {k: v for k, v in entry.items() if k not in overrides}


def arm_data(arm: str, config, data):
    """The data an arm trains on: ``data`` itself, or its mosaics divided by their full scale.

    In ``"raw2logit"`` the ``learned`` and ``frozen`` arms read ``raw / (2^bits - 1)``
    (float32) with a camera whose black levels are in those units
    (:func:`drifthelpers.isp.raw2logit.full_scale_input`); the fingerprint gains
    ``"units": "full_scale"``, and converted data are returned as they are. Every other case
    returns ``data`` unchanged (``raw_direct`` packs the mosaic in DN in both fidelities).

    Args:
        arm: ``"learned"``, ``"frozen"`` or ``"raw_direct"``.
        config: a ``JointConfig``; data: a ``JointData``.
    """
    from .isp.raw2logit import full_scale_input

    if config.fidelity == "corrected" or arm == "raw_direct" or data.fingerprint.get("units") == _FULL_SCALE:
        return data
    raw, camera = full_scale_input(data.raw, data.camera)
    return replace(data, raw=raw.float(), camera=camera, fingerprint={**data.fingerprint, "units": _FULL_SCALE})


def data_model(config, data) -> nn.Module:
    """The ``learned`` / ``frozen`` arms' data model at its ``bi,s,ga`` initialisation.

    ``"corrected"``: :class:`~drifthelpers.isp.ParametrizedDataModel` (bilinear, demosaic
    kernels learned when ``config.learn_demosaic``). ``"raw2logit"``: the public model on the
    camera of :func:`arm_data`'s output.

    Raises:
        ValueError: ``"raw2logit"`` with data that :func:`arm_data` did not convert.
    """
    if config.fidelity == "corrected":
        return ParametrizedDataModel(data.camera, demosaic="bi", learn_demosaic=config.learn_demosaic)
    if data.fingerprint.get("units") != _FULL_SCALE:
        raise ValueError("fidelity='raw2logit' needs the mosaics divided by their full scale: "
                         "pass optimisation_fidelity.arm_data(arm, config, data)")
    return parametrized_data_model(data.camera, "raw2logit")


def fits_batch_norm(arm: str, config) -> bool:
    """Whether the arm's data model trains in training mode: the ``raw2logit`` ``learned`` arm only."""
    return config.fidelity == "raw2logit" and arm == "learned"


def check_no_running_stats(module: nn.Module) -> None:
    """Refuse a data model that holds state besides parameters (the ``"corrected"`` arms).

    The learned-vs-frozen confound of the public code was a normalisation layer inside the
    data model, fitted in one arm only; buffers or normalisation layers would behave
    differently in the two arms.

    Raises:
        ValueError: naming the buffers and normalisation layers found.
    """
    buffers = [name for name, _ in module.named_buffers()]
    norms = [name for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._NormBase)
             or isinstance(m, (nn.GroupNorm, nn.LayerNorm))]
    if buffers or norms:
        raise ValueError(f"the data model must hold no buffers or normalisation layers (found {buffers + norms}); "
                         "they would behave differently in the learned and frozen arms")


def learned_data_model(run, camera: CameraParams, which: str = "final") -> nn.Module:
    """Rebuild the data model of a ``learned`` (or ``frozen``) run, at its ``"init"`` or ``"final"`` values.

    A run of fidelity ``"raw2logit"`` (its parameters hold the BatchNorm's running statistics)
    gives the public model with those statistics; its input is the mosaic divided by its full
    scale (:func:`arm_data`). ``camera`` gives the CFA pattern; every value comes from the run.

    Returns:
        The model in eval mode.

    Raises:
        ValueError: a run without data-model parameters (``raw_direct``).
    """
    params = run.final_params if which == "final" else run.init_params
    if not params:
        raise ValueError(f"run of arm {run.arm!r} has no data-model parameters")
    if "batch_norm.running_mean" in params:
        model = parametrized_data_model(camera, "raw2logit")
    else:
        model = ParametrizedDataModel(camera, demosaic="bi", learn_demosaic="demosaic" in params)
    model.load_state_dict({k: torch.tensor(v) for k, v in params.items()})
    return model.eval()
