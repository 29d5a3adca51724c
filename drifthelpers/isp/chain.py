"""The ISP chain: one definition of its stages and their order, run by every data model.

    raw (DN) ──black level / white level──▶ raw in [0, 1] ──demosaic──▶ camera RGB
    ──white balance──▶ ──colour matrix──▶ linear sRGB ──sharpen (luma)──▶
    ──denoise (luma)──▶ ──clip [0, 1]──▶ ──gamma x^(1/γ)──▶ sRGB-gamma in [0, 1]

:data:`STAGES` names the stages in this order, :class:`ChainValues` holds what each stage
needs (camera values and the stage operations), and :func:`run_stages` runs them one after the
other: that function is the definition of the chain. The data models differ only in the values
they give it:

* the twelve static presets (:func:`drifthelpers.isp.render`,
  :class:`drifthelpers.isp.StaticDataModel`): the camera's values and a preset's components
  (:func:`component_ops`);
* the parametrized data model (:class:`drifthelpers.isp.ParametrizedDataModel`): learnable
  camera values and filter kernels (and optionally demosaicing kernels);
* the ISP explorer (:func:`drifthelpers.widgets.render_settings`): nudged camera values, and
  the sharpening or denoising stage may be skipped (``None``).

:func:`run_chain` is the chain as the data models run it: with ``return_stages`` it is
:func:`run_stages`; without, the same arithmetic fused: white balance folded into the colour
matrix (``ccm @ diag(gains)``), the luma computed once and both luma filters applied to it (the
luma weights sum to 1, so the second filter sees exactly the first one's Y), the clip folded
into the gamma curve, and, without autograd, the black level folded into the taps of a linear
demosaicer and the tail computed in place. The staged and fused runs agree to float rounding
(tested). For a static preset in float32 on the CPU without autograd,
:mod:`drifthelpers.isp.fastisp` runs this same chain as a few compiled passes: the verified fast
implementation of it (equal to float32 rounding, tested against float64).

The ``"raw2logit"`` fidelity (:mod:`drifthelpers.isp.raw2logit`) is deliberately a different
chain, the one the paper's public code computed, and does not run here.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ..camera import Camera
from .demosaicing import _DEMOSAICERS, _FIXED_KERNELS, _demosaic_fixed
from .stages import (_gamma_encode_, _gauss_op, _kernel_op, _luma, _median_op, _mix_planes, _on_luma, _unsharp_op,
                     colour_correct, gamma_encode, subtract_black_level, white_balance)
from .tables import _DENOISE_SIGMA, _UNSHARP_AMOUNT, _UNSHARP_RADIUS, SHARPEN_KERNEL, _gaussian_size
from .tensors import _flat, _grad_needed

__all__ = ["STAGES", "ChainValues", "component_ops", "run_stages", "run_chain"]

#: The stages of the chain in the order they run (the keys of every ``return_stages`` dict).
STAGES: tuple[str, ...] = ("black_level", "demosaic", "white_balance", "colour_matrix", "sharpen", "denoise", "clip",
                           "gamma")

LumaOp = Callable[[Tensor], Tensor]


@dataclass(frozen=True, eq=False)
class ChainValues:
    """What each stage of the chain needs, in stage order.

    Attributes:
        cfa: pattern string of the mosaic's top-left 2x2 cell.
        black_level: black level in DN, a tensor of shape (), (4,) by cell position, or (*, 4).
        white_level: white level in DN, a tensor of shape () (or per site, as the black level).
        wb_gains: white-balance gains (R, G, B), a tensor of shape (3,) or (*, 3).
        ccm: camera-RGB to linear-sRGB matrix, a tensor of shape (3, 3) or (*, 3, 3).
        gamma: display gamma, a float or a tensor of shape () / (1,) or (*,).
        demosaic: ``demosaic(mosaic (*, 1, H, W) in [0, 1], cfa) -> camera RGB (*, 3, H, W)``.
        sharpen: a luma operation ``(N, 1, H, W) -> (N, 1, H, W)``, or ``None`` to skip the stage.
        denoise: a luma operation, or ``None`` to skip the stage.
    """

    cfa: str
    black_level: Tensor
    white_level: Tensor
    wb_gains: Tensor
    ccm: Tensor
    gamma: float | Tensor
    demosaic: Callable[[Tensor, str], Tensor]
    sharpen: Optional[LumaOp]
    denoise: Optional[LumaOp]


def _check_camera(camera) -> Camera:
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a CameraParams (drifthelpers.camera.Camera), got {type(camera).__name__}")
    return camera


def component_ops(demosaic: str, sharpen: str, denoise: str, like: Tensor,
                  unsharp_amount: float | Tensor = _UNSHARP_AMOUNT) -> tuple:
    """The stage operations of a preset's component codes: ``(demosaic, sharpen, denoise)``.

    Args:
        demosaic: ``"bi"``, ``"ma"`` or ``"me"``.
        sharpen: ``"s"`` (the 3x3 kernel), ``"u"`` (unsharp mask, radius 1) or ``"none"``.
        denoise: ``"me"`` (median 3x3), ``"ga"`` (Gaussian sigma 0.5) or ``"none"``.
        like: a tensor with the dtype and device the operations will see.
        unsharp_amount: the unsharp mask's amount: the float 1 of the static presets (computed
            as ``(1 + a) y - a G y``), or a tensor of per-image amounts (computed as
            ``y + a (y - G y)``, the form of :func:`drifthelpers.isp.unsharp_mask`).

    Returns:
        The demosaicing function and the two luma operations (``None`` for ``"none"``), as
        :class:`ChainValues` takes them.

    Example:
        >>> d, s, n = component_ops("ma", "u", "none", torch.zeros(1))
        >>> d.__name__, n is None
        ('demosaic_malvar2004', True)
    """
    if demosaic not in _DEMOSAICERS:
        raise ValueError(f"demosaic must be one of {sorted(_DEMOSAICERS)}, got {demosaic!r}")
    if sharpen == "s":
        sharpen_op = _kernel_op(SHARPEN_KERNEL, like)
    elif sharpen == "u":
        sharpen_op = _unsharp_op(_UNSHARP_RADIUS, unsharp_amount)
    elif sharpen == "none":
        sharpen_op = None
    else:
        raise ValueError(f"sharpen must be one of ['s', 'u', 'none'], got {sharpen!r}")
    if denoise == "me":
        denoise_op = _median_op(3)
    elif denoise == "ga":
        denoise_op = _gauss_op(_DENOISE_SIGMA, _gaussian_size(_DENOISE_SIGMA))
    elif denoise == "none":
        denoise_op = None
    else:
        raise ValueError(f"denoise must be one of ['me', 'ga', 'none'], got {denoise!r}")
    return _DEMOSAICERS[demosaic], sharpen_op, denoise_op


def run_stages(raw: Tensor, values: ChainValues) -> tuple[Tensor, OrderedDict[str, Tensor]]:
    """The chain, stage by stage, in the order of :data:`STAGES` (the definition of the chain).

    Args:
        raw: mosaics in DN, shape (*, 1, H, W), float.
        values: every stage's values.

    Returns:
        ``(image, stages)``: sRGB-gamma images (*, 3, H, W) in [0, 1], and an OrderedDict of
        every stage's output keyed by stage name (a skipped stage is absent).

    Example:
        >>> cam = Camera("RGGB", (0.0,) * 4, 1.0)
        >>> t = lambda v: torch.tensor(v, dtype=torch.float32)
        >>> values = ChainValues(cam.cfa, t(cam.black_level), t(cam.white_level), t(cam.wb_gains), t(cam.ccm),
        ...                      cam.gamma, *component_ops("bi", "s", "none", t(0.0)))
        >>> out, stages = run_stages(torch.rand(1, 1, 8, 8), values)
        >>> list(stages)
        ['black_level', 'demosaic', 'white_balance', 'colour_matrix', 'sharpen', 'clip', 'gamma']
    """
    v = values
    stages: OrderedDict[str, Tensor] = OrderedDict()
    x = stages["black_level"] = subtract_black_level(raw, v.black_level, v.white_level)
    x = stages["demosaic"] = v.demosaic(x, v.cfa)
    x = stages["white_balance"] = white_balance(x, v.wb_gains)
    x = stages["colour_matrix"] = colour_correct(x, v.ccm)
    if v.sharpen is not None:
        x = stages["sharpen"] = _on_luma(x, v.sharpen)
    if v.denoise is not None:
        x = stages["denoise"] = _on_luma(x, v.denoise)
    x = stages["clip"] = x.clamp(0.0, 1.0)
    x = stages["gamma"] = gamma_encode(x, v.gamma)
    return x, stages


def _same(y: Tensor) -> Tensor:
    return y


def run_chain(raw: Tensor, values: ChainValues, return_stages: bool = False):
    """The chain as the data models run it: :func:`run_stages` with ``return_stages``,
    otherwise the same arithmetic fused (see the module docstring).

    Args:
        raw: mosaics in DN, shape (*, 1, H, W), float.
        values: every stage's values.
        return_stages: also return the OrderedDict of every stage's output.

    Returns:
        sRGB-gamma images (*, 3, H, W) in [0, 1] (and the stages if asked).
    """
    if return_stages:
        return run_stages(raw, values)
    v = values
    black, white = v.black_level, v.white_level
    kernels = _FIXED_KERNELS.get(v.demosaic)
    if (kernels is not None and raw.shape[-2] % 2 == 0 and raw.shape[-1] % 2 == 0
            and black.dim() <= 1 and white.dim() <= 1 and not _grad_needed(raw, black, white)):
        # black level folded into the demosaicing taps: one pass over the mosaic less
        scale = 1.0 / (white - black).expand(4)
        affine = (scale.tolist(), (-black.expand(4) * scale).tolist())
        cam = _demosaic_fixed(raw, v.cfa, kernels, affine)
    else:
        cam = v.demosaic(subtract_black_level(raw, black, white), v.cfa)
    sharpen_op, denoise_op = v.sharpen or _same, v.denoise or _same
    m = v.ccm * v.wb_gains.unsqueeze(-2)  # ccm @ diag(gains)
    if not _grad_needed(cam, m, v.gamma):
        return _fused_tail_(cam, m, sharpen_op, denoise_op, v.gamma)
    lin, shape = _flat(colour_correct(cam, m))
    y = _luma(lin)
    out = lin + (denoise_op(sharpen_op(y)) - y)
    return gamma_encode(out, v.gamma).reshape(shape)


def _fused_tail_(cam: Tensor, m: Tensor, sharpen_op, denoise_op, gamma) -> Tensor:
    """The fused chain after demosaicing, without autograd: colour matrix ``m`` (white balance
    folded in), both luma filters, clip and gamma, written into fresh tensors in place.

    Same arithmetic as the autograd path of :func:`run_chain` (float rounding aside): a constant
    (3, 3) matrix is applied as nine plane-wise multiply-adds into one output (about 2.5x
    faster than ``einsum``'s batched matmul with an inner dimension of 3), and
    :func:`_gamma_encode_` works in place.
    """
    flat, shape = _flat(cam)
    if m.dim() == 2:
        lin = _mix_planes(flat, m.tolist())
    else:
        lin, _ = _flat(colour_correct(cam, m))
    y = _luma(lin)
    filtered = denoise_op(sharpen_op(y))
    delta = filtered.sub_(y) if filtered is not y else torch.zeros_like(y)
    lin.add_(delta)  # the luma change goes to R, G and B alike (see _on_luma)
    return _gamma_encode_(lin, gamma).reshape(shape)
