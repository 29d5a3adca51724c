"""The data model: an image signal processor (ISP) from a raw mosaic to sRGB.

The chain follows the paper's order, one pure function per stage:

    raw (DN) ──black level / white level──▶ raw in [0, 1] ──demosaic──▶ camera RGB
    ──white balance──▶ ──colour matrix──▶ linear sRGB ──sharpen (luma)──▶
    ──denoise (luma)──▶ ──clip [0, 1]──▶ ──gamma x^(1/γ)──▶ sRGB-gamma in [0, 1]

One module per room, in the order of the data path:

* :mod:`~drifthelpers.isp.stages`: black level, white balance, colour matrix, the luma filters
  (sharpen, unsharp mask, median, Gaussian), clip and gamma;
* :mod:`~drifthelpers.isp.demosaicing`: bilinear, Malvar 2004, Menon 2007;
* :mod:`~drifthelpers.isp.chain`: the order of the stages (:data:`STAGES`) and the one function
  that runs them (:func:`~drifthelpers.isp.chain.run_stages`), used by every data model below;
* :mod:`~drifthelpers.isp.presets`: the labels of the twelve static data models
  (:data:`PRESETS`, :func:`parse_preset`, :func:`describe_presets`);
* :mod:`~drifthelpers.isp.static`: rendering them (:func:`render`, :class:`StaticDataModel`);
* :mod:`~drifthelpers.isp.parametrized`: the differentiable data model with learnable values
  (:class:`ParametrizedDataModel`, :func:`parametrized_data_model`);
* :mod:`~drifthelpers.isp.raw2logit`: the chain as the paper's public code computed it
  (``fidelity="raw2logit"``), a deliberately different chain;
* :mod:`~drifthelpers.isp.files`: raw files in and images out (:func:`load_raw_file`,
  :func:`render_file`);
* internal: :mod:`~drifthelpers.isp.tables` (kernels and constants, read by the torch stages
  and the compiled kernels alike), :mod:`~drifthelpers.isp.tensors` (argument checks, padding),
  :mod:`~drifthelpers.isp.fastisp` and :mod:`~drifthelpers.isp.fastkernels` (the static presets
  as compiled CPU kernels).

The camera values are one :class:`drifthelpers.camera.Camera` (``CameraParams`` here).

Conventions: tensors are channel-first, raw mosaics ``(*, 1, H, W)`` and images
``(*, 3, H, W)``, float, with any number of leading dimensions (a *batched* parameter, e.g.
``black_level`` of shape ``(B, 4)``, matches them); per-site values are ordered by position in
the top-left 2x2 cell (TL, TR, BL, BR, as in :mod:`drifthelpers.raw`); every spatial filter pads
with ``reflect`` (``d c b | a b c d``, scipy's ``mode="mirror"``), which on a Bayer mosaic keeps
the CFA phase of the padded samples right. Speed: ``benchmarks/bench_isp.py`` measures it.

Example:
    >>> import torch
    >>> from drifthelpers import isp
    >>> cam = isp.CameraParams("RGGB", (0.0,) * 4, 1.0)
    >>> isp.render(torch.rand(2, 1, 16, 16), "ma,u,me", cam).shape
    torch.Size([2, 3, 16, 16])
"""

from __future__ import annotations

from ..camera import Camera as CameraParams
from .chain import STAGES
from .demosaicing import demosaic, demosaic_bilinear, demosaic_malvar2004, demosaic_menon2007
from .files import load_raw_file, render_file
from .parametrized import ParametrizedDataModel, parametrized_data_model
from .presets import DEMOSAIC_METHODS, PRESETS, describe_presets, parse_preset
from .stages import (colour_correct, denoise_gaussian, denoise_median, gamma_encode, luma_filter, sharpen,
                     subtract_black_level, unsharp_mask, white_balance)
from .static import StaticDataModel, render
from .tables import SHARPEN_KERNEL

__all__ = [
    "load_raw_file",
    "render_file",
    "CameraParams",
    "PRESETS",
    "DEMOSAIC_METHODS",
    "SHARPEN_KERNEL",
    "describe_presets",
    "parse_preset",
    "subtract_black_level",
    "demosaic",
    "demosaic_bilinear",
    "demosaic_malvar2004",
    "demosaic_menon2007",
    "white_balance",
    "colour_correct",
    "luma_filter",
    "sharpen",
    "unsharp_mask",
    "denoise_median",
    "denoise_gaussian",
    "gamma_encode",
    "render",
    "StaticDataModel",
    "ParametrizedDataModel",
    "parametrized_data_model",
    "STAGES",
]
