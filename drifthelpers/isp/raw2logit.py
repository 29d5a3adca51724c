"""The data model as the paper's public code computed it: the ``"raw2logit"`` fidelity.

:mod:`drifthelpers.isp` implements a *corrected* data model (the default fidelity,
``"corrected"``). To compare numbers with the paper first, and to measure each correction
after, this module computes what the paper's public code (``aiaudit-org/raw2logit``)
computed, artefacts included:

* **Input**: the mosaic divided by its full scale, ``x / (2^bits - 1)`` (float64); the black
  level is in the same units and is subtracted as an offset per position of the 2x2 cell,
  without rescaling by the white level and without clipping.
* **Demosaicing** with the border handling of the ``colour-demosaicing`` package (the public
  code's demosaicers): bilinear and Malvar-He-Cutler correlate the (masked) mosaic with
  scipy's ``mode="reflect"`` (``c b a | a b c``, the edge repeated, so the padded samples
  have the wrong CFA phase); Menon's directional filters use ``mode="mirror"``
  (``c b | a b c``), its classifier window zero fill.
* **White balance** ``img * gains`` (gains may be negative) and **colour matrix**
  ``einsum('ijk,lk->ijl', img, ccm)``.
* Luma filters on the Y of scikit-image's YUV (:data:`YUV_FROM_RGB`; back through its
  numerical inverse), one round trip per filter:
  the 3x3 **sharpening** kernel convolved with **zero fill** (a bright one-pixel frame); the
  **unsharp mask** (radius 1, amount 1, not clipped: the public call passed
  ``preserve_range=True``) whose Gaussian blur runs along the **first image axis only** (the
  public code passed scikit-image's per-channel flag with a 2-D luma plane, so each column
  was blurred as a 1-D signal; ``unsharp_axis=1`` of :func:`render` blurs rows instead, as
  the same call does on scikit-image >= 0.19, see there); **median** 3x3 and **Gaussian**
  sigma 0.5 with scipy's default ``mode="reflect"``.
* **clip** to [0, 1] and ``x ** (1 / gamma)``.

The static chain runs in numpy/scipy in float64 (no autograd): :func:`render`. The public
code's *parametrized* model, :class:`Raw2LogitParametrizedDataModel`, is in torch: 132
unbounded scalars and a non-affine BatchNorm on its output.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, signal
from torch import Tensor, nn

from ..camera import Camera as CameraParams
from ..raw import cfa_channel_indices
from .presets import parse_preset

__all__ = [
    "FIDELITIES",
    "check_fidelity",
    "YUV_FROM_RGB",
    "RGB_FROM_YUV",
    "subtract_black_offset",
    "demosaic_bilinear",
    "demosaic_malvar2004",
    "demosaic_menon2007",
    "render_image",
    "render",
    "Raw2LogitParametrizedDataModel",
    "full_scale_input",
]

#: The two fidelities of the data model: today's corrected chain and the public code's.
FIDELITIES: tuple[str, ...] = ("corrected", "raw2logit")

#: RGB -> YUV of ``skimage.color.rgb2yuv`` (``yuv = rgb @ YUV_FROM_RGB.T``).
YUV_FROM_RGB = np.array([[0.299, 0.587, 0.114],
                         [-0.14714119, -0.28886916, 0.43601035],
                         [0.61497538, -0.51496512, -0.10001026]])
#: YUV -> RGB of ``skimage.color.yuv2rgb``: the numerical inverse of :data:`YUV_FROM_RGB`.
RGB_FROM_YUV = np.linalg.inv(YUV_FROM_RGB)

_SHARPEN = np.array([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])
_UNSHARP_RADIUS, _UNSHARP_AMOUNT = 1.0, 1.0
_MEDIAN_SIZE, _GAUSS_SIGMA = 3, 0.5
_MIN_SIZE = 4

# linear demosaicing kernels (correlations; all symmetric), colour-demosaicing's weights
_BI_G = np.array([[0.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 0.0]]) / 4
_BI_RB = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 4
_MHC_G = np.array([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]]) / 8
_MHC_ROW = np.array([[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0],
                     [0, 0, 0.5, 0, 0]]) / 8  # same-colour neighbours left and right
_MHC_COL = _MHC_ROW.T  # same-colour neighbours above and below
_MHC_DIAG = np.array([[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0],
                      [0, 0, -1.5, 0, 0]]) / 8
# Menon: G along a line, the two same-line G neighbours plus a Laplacian of the centre colour
_MENON_G_LINE = np.array([-0.25, 0.5, 0.5, 0.5, -0.25])
_THIRD = np.full(3, 1.0 / 3.0)


def check_fidelity(fidelity) -> str:
    """Validate a ``fidelity`` value.

    Raises:
        ValueError: ``fidelity`` is not one of :data:`FIDELITIES`.

    Example:
        >>> check_fidelity("raw2logit")
        'raw2logit'
    """
    if not isinstance(fidelity, str) or fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
    return fidelity


# --------------------------------------------------------------------------- CFA geometry


def _masks(cfa: str, shape: tuple[int, int]) -> np.ndarray:
    """Boolean site masks (3, H, W) of R, G, B for the pattern at the mosaic's origin."""
    masks = np.zeros((3,) + tuple(shape), dtype=bool)
    for pos, colour in enumerate(cfa_channel_indices(cfa)):
        masks[colour, pos // 2 :: 2, pos % 2 :: 2] = True
    return masks


def _lines(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (broadcastable (H, 1) and (1, W) booleans) that hold a site of ``mask``."""
    return mask.any(axis=1)[:, None], mask.any(axis=0)[None, :]


def _check_mosaic(mosaic: np.ndarray) -> np.ndarray:
    mosaic = np.asarray(mosaic, dtype=np.float64)
    if mosaic.ndim != 2 or min(mosaic.shape) < _MIN_SIZE:
        raise ValueError(f"mosaic must be a 2-D array of at least {_MIN_SIZE}x{_MIN_SIZE}, got shape {mosaic.shape}")
    return mosaic


# --------------------------------------------------------------------------- stages (numpy, one image)


def subtract_black_offset(mosaic: np.ndarray, black_level) -> np.ndarray:
    """``mosaic - black`` per position of the 2x2 cell (TL, TR, BL, BR): no rescale, no clip.

    Args:
        mosaic: (H, W) float, the mosaic divided by its full scale.
        black_level: 4 values in the same units.

    Returns:
        A new (H, W) float64 array.
    """
    black = np.asarray(black_level, dtype=np.float64).reshape(-1)
    if black.size != 4:
        raise ValueError(f"black_level must have 4 values (TL, TR, BL, BR), got {black.size}")
    out = np.array(mosaic, dtype=np.float64)
    for pos in range(4):
        out[pos // 2 :: 2, pos % 2 :: 2] -= black[pos]
    return out


def demosaic_bilinear(mosaic: np.ndarray, cfa: str = "RGGB") -> np.ndarray:
    """Bilinear demosaicing with colour-demosaicing's borders (edge-repeating reflect).

    Each colour is its masked mosaic correlated with a 3x3 kernel; the padding repeats the
    edge row/column, so a border pixel sees its own row's samples as the row beyond.

    Args:
        mosaic: (H, W) float.
        cfa: pattern at the origin.

    Returns:
        (H, W, 3) float64 RGB.
    """
    mosaic = _check_mosaic(mosaic)
    masks = _masks(cfa, mosaic.shape)
    planes = [ndimage.correlate(mosaic * masks[c], _BI_G if c == 1 else _BI_RB, mode="reflect") for c in range(3)]
    return np.stack(planes, axis=-1)


def demosaic_malvar2004(mosaic: np.ndarray, cfa: str = "RGGB") -> np.ndarray:
    """Malvar-He-Cutler (2004) demosaicing with colour-demosaicing's borders (edge-repeating reflect).

    Args:
        mosaic: (H, W) float.
        cfa: pattern at the origin.

    Returns:
        (H, W, 3) float64 RGB.
    """
    mosaic = _check_mosaic(mosaic)
    masks = _masks(cfa, mosaic.shape)
    est = {name: ndimage.correlate(mosaic, k, mode="reflect")
           for name, k in (("g", _MHC_G), ("row", _MHC_ROW), ("col", _MHC_COL), ("diag", _MHC_DIAG))}
    red_rows, red_cols = _lines(masks[0])
    blue_rows, blue_cols = _lines(masks[2])
    out = mosaic[..., None] * np.moveaxis(masks, 0, -1)
    out[..., 1] = np.where(masks[1], mosaic, est["g"])
    for c, (own_rows, own_cols), (other_rows, other_cols) in ((0, (red_rows, red_cols), (blue_rows, blue_cols)),
                                                             (2, (blue_rows, blue_cols), (red_rows, red_cols))):
        chan = out[..., c]
        chan[:] = np.where(masks[1] & own_rows & other_cols, est["row"], chan)  # G between two of c in a row
        chan[:] = np.where(masks[1] & other_rows & own_cols, est["col"], chan)  # G between two of c in a column
        chan[:] = np.where(other_rows & other_cols, est["diag"], chan)  # the other colour's sites
    return out


def _shifted(padded: np.ndarray, pad: int, dy: int, dx: int, shape) -> np.ndarray:
    """View of ``padded`` (padded by ``pad`` on every side) shifted by (dy, dx): out[i, j] = x[i+dy, j+dx]."""
    h, w = shape
    return padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def _mean2(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the two neighbours along ``axis`` (scipy ``mode="mirror"`` borders)."""
    return ndimage.correlate1d(x, [0.5, 0.0, 0.5], axis=axis, mode="mirror")


def _mean3(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the pixel and its two neighbours along ``axis`` (``mode="mirror"``)."""
    return ndimage.correlate1d(x, _THIRD, axis=axis, mode="mirror")


def _menon_direction(mosaic: np.ndarray, masks: np.ndarray):
    """Menon's directional G estimates and the per-pixel choice (True = horizontal).

    Returns:
        ``(g_h, g_v, horizontal)``, each (H, W).
    """
    green = masks[1]
    g_h = np.where(green, mosaic, ndimage.correlate1d(mosaic, _MENON_G_LINE, axis=1, mode="mirror"))
    g_v = np.where(green, mosaic, ndimage.correlate1d(mosaic, _MENON_G_LINE, axis=0, mode="mirror"))
    shape = mosaic.shape
    scores = []
    for g_est, vertical in ((g_h, False), (g_v, True)):
        chroma = np.where(green, 0.0, mosaic - g_est)
        # |chroma - chroma two pixels ahead|, the far border mirrored (numpy "reflect")
        pad = ((0, 2), (0, 0)) if vertical else ((0, 0), (0, 2))
        padded = np.pad(chroma, pad, mode="reflect")
        diff = np.abs(chroma - (padded[2:, :] if vertical else padded[:, 2:]))
        # classifier window (zero fill): the pixel and the one two behind (weight 3), the same
        # pair two lines either side (weight 1), and the pixel between them one line either side
        p = np.pad(diff, 2)
        taps = ((0, 0, 3.0), (0, -2, 3.0), (2, 0, 1.0), (-2, 0, 1.0), (2, -2, 1.0), (-2, -2, 1.0),
                (1, -1, 1.0), (-1, -1, 1.0))
        score = np.zeros(shape)
        for across, along, weight in taps:
            dy, dx = (along, across) if vertical else (across, along)
            score += weight * _shifted(p, 2, dy, dx, shape)
        scores.append(score)
    return g_h, g_v, scores[1] >= scores[0]


def _menon_colour(mosaic, masks, g, horizontal):
    """R and B from the decided G: colour differences along rows/columns (Menon step 2)."""
    red_rows, _ = _lines(masks[0])
    blue_rows, _ = _lines(masks[2])
    green = masks[1]
    r = mosaic * masks[0]
    b = mosaic * masks[2]
    r_new = np.where(green & red_rows, g + _mean2(r, 1) - _mean2(g, 1), r)
    r_new = np.where(green & blue_rows, g + _mean2(r, 0) - _mean2(g, 0), r_new)
    b_new = np.where(green & blue_rows, g + _mean2(b, 1) - _mean2(g, 1), b)
    b_new = np.where(green & red_rows, g + _mean2(b, 0) - _mean2(g, 0), b_new)
    r, b = r_new, b_new
    r_at_b = np.where(horizontal, b + _mean2(r, 1) - _mean2(b, 1), b + _mean2(r, 0) - _mean2(b, 0))
    r = np.where(masks[2], r_at_b, r)
    b_at_r = np.where(horizontal, r + _mean2(b, 1) - _mean2(r, 1), r + _mean2(b, 0) - _mean2(r, 0))
    b = np.where(masks[0], b_at_r, b)
    return r, b


def _directional_mean3(x: np.ndarray, horizontal: np.ndarray) -> np.ndarray:
    return np.where(horizontal, _mean3(x, 1), _mean3(x, 0))


def _menon_refine(r, g, b, masks, horizontal):
    """Menon's refining step: G, then R/B at G sites, then R/B at B/R sites."""
    red, green, blue = masks
    red_rows, red_cols = _lines(red)
    blue_rows, blue_cols = _lines(blue)
    g = np.where(red, r - _directional_mean3(r - g, horizontal), g)
    g = np.where(blue, b - _directional_mean3(b - g, horizontal), g)
    r_g, b_g = r - g, b - g
    r = np.where(green & blue_rows, g + _mean2(r_g, 0), r)
    r = np.where(green & blue_cols, g + _mean2(r_g, 1), r)
    b = np.where(green & red_rows, g + _mean2(b_g, 0), b)
    b = np.where(green & red_cols, g + _mean2(b_g, 1), b)
    r_b = r - b
    diff = _directional_mean3(r_b, horizontal)
    r = np.where(blue, b + diff, r)
    b = np.where(red, r - diff, b)
    return r, g, b


def demosaic_menon2007(mosaic: np.ndarray, cfa: str = "RGGB", refining_step: bool = True) -> np.ndarray:
    """Menon, Andriani and Calvagno (2007), DDFAPD, with colour-demosaicing's borders.

    G is estimated along rows and along columns; per pixel the direction whose colour
    difference varies less over a window is kept (a tie keeps the horizontal one); R and B
    follow from colour differences, then an optional refining step.

    Args:
        mosaic: (H, W) float.
        cfa: pattern at the origin.
        refining_step: apply the refining step.

    Returns:
        (H, W, 3) float64 RGB.
    """
    mosaic = _check_mosaic(mosaic)
    masks = _masks(cfa, mosaic.shape)
    g_h, g_v, horizontal = _menon_direction(mosaic, masks)
    g = np.where(horizontal, g_h, g_v)
    r, b = _menon_colour(mosaic, masks, g, horizontal)
    if refining_step:
        r, g, b = _menon_refine(r, g, b, masks, horizontal)
    return np.stack([r, g, b], axis=-1)


_DEMOSAICERS = {"bi": demosaic_bilinear, "ma": demosaic_malvar2004, "me": demosaic_menon2007}


def _on_luma(rgb: np.ndarray, op) -> np.ndarray:
    """RGB -> scikit-image YUV, ``Y <- op(Y)``, back to RGB."""
    yuv = rgb @ YUV_FROM_RGB.T
    yuv[..., 0] = op(yuv[..., 0])
    return yuv @ RGB_FROM_YUV.T


def _sharpen_zero_fill(y: np.ndarray) -> np.ndarray:
    return signal.convolve2d(y, _SHARPEN, mode="same", boundary="fill", fillvalue=0)


def _unsharp_one_axis(y: np.ndarray, axis: int) -> np.ndarray:
    # The public call passes preserve_range=True: scikit-image does not clip the result.
    blurred = ndimage.gaussian_filter1d(y, _UNSHARP_RADIUS, axis=axis, mode="reflect", truncate=4.0)
    return y + (y - blurred) * _UNSHARP_AMOUNT


def _median(y: np.ndarray) -> np.ndarray:
    return ndimage.median_filter(y, _MEDIAN_SIZE)


def _gaussian(y: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(y, _GAUSS_SIGMA)


def _sharpener(code: str, unsharp_axis: int):
    if code == "s":
        return _sharpen_zero_fill
    return lambda y: _unsharp_one_axis(y, unsharp_axis)


_DENOISERS = {"me": _median, "ga": _gaussian}


def _check_axis(unsharp_axis) -> int:
    if unsharp_axis not in (0, 1) or isinstance(unsharp_axis, bool):
        raise ValueError(f"unsharp_axis must be 0 or 1, got {unsharp_axis!r}")
    return int(unsharp_axis)


def render_image(mosaic: np.ndarray, preset: str, cfa: str, black_level, wb_gains, ccm, gamma: float = 2.2,
                 return_stages: bool = False, unsharp_axis: int = 0):
    """One mosaic through one of the twelve static presets, as the public code computed it.

    Args:
        mosaic: (H, W) float, the mosaic divided by its full scale.
        preset: a label of :data:`drifthelpers.isp.PRESETS`, e.g. ``"bi,s,ga"``.
        cfa: pattern at the origin.
        black_level: 4 offsets in the mosaic's units (TL, TR, BL, BR).
        wb_gains: R, G, B gains (any sign).
        ccm: 3x3 colour matrix (row-major; ``out_l = sum_k ccm[l, k] in_k``).
        gamma: the encoding is ``x ** (1 / gamma)``.
        return_stages: also return an OrderedDict of every stage's (H, W[, 3]) output.
        unsharp_axis: the image axis the unsharp mask's blur runs along (see :func:`render`).

    Returns:
        (H, W, 3) float64 in [0, 1] (and the stages if asked).
    """
    d, s, n = parse_preset(preset)
    sharpener = _sharpener(s, _check_axis(unsharp_axis))
    stages = OrderedDict()
    stages["black_level"] = x = subtract_black_offset(_check_mosaic(mosaic), black_level)
    stages["demosaic"] = x = _DEMOSAICERS[d](x, cfa)
    stages["white_balance"] = x = x * np.asarray(wb_gains, dtype=np.float64).reshape(3)
    stages["colour_matrix"] = x = np.einsum("ijk,lk->ijl", x, np.asarray(ccm, dtype=np.float64).reshape(3, 3))
    stages["sharpen"] = x = _on_luma(x, sharpener)
    stages["denoise"] = x = _on_luma(x, _DENOISERS[n])
    stages["clip"] = x = np.clip(x, 0.0, 1.0)
    stages["gamma"] = x = x ** (1.0 / gamma)
    return (x, stages) if return_stages else x


def render(raw: Tensor, preset: str, camera, return_stages: bool = False, unsharp_axis: int = 0):
    """A batch of mosaics through a static preset, as the public code computed it.

    Args:
        raw: (B, 1, H, W) float64 tensor, the mosaics divided by their full scale.
        preset: a label of :data:`drifthelpers.isp.PRESETS`.
        camera: a :class:`drifthelpers.isp.CameraParams` whose black levels are in the
            units of ``raw`` (subtracted as offsets); its white level is not used.
        return_stages: also return an OrderedDict of stage outputs, each (B, C, H, W).
        unsharp_axis: the axis of the unsharp mask's one-dimensional blur (Gaussian sigma 1,
            ``mode="reflect"``; never clipped, as the public call passed
            ``preserve_range=True``). 0, the default, blurs along columns: what the public
            code computed with the scikit-image it pinned, 0.18.1, where
            ``unsharp_mask(y, multichannel=True)`` on the 2-D luma ``y`` loops over
            ``y[..., c]``, i.e. over the columns, and blurs each as a 1-D signal. 1 blurs
            along rows: what the same call computes on scikit-image >= 0.19 with
            ``channel_axis=-1`` in place of ``multichannel=True``, whose loop takes
            ``y[c, ...]`` (a row) for each ``c < W``. That equals a row blur only on square
            frames (a wider frame raises ``IndexError`` there, a taller one leaves its last
            rows unset). The 96x96 reference outputs ``raw2logit_micro.npz`` were made that
            way, on scikit-image 0.26, so they are matched with ``unsharp_axis=1``.

    Returns:
        (B, 3, H, W) float64 in [0, 1] on ``raw``'s device (and the stages if asked).

    Raises:
        TypeError: ``raw`` is not a float64 tensor or ``camera`` not a CameraParams.
        ValueError: a wrong shape, or ``raw`` requires gradients (this chain has none; the
            differentiable model is :class:`Raw2LogitParametrizedDataModel`).
    """
    if not isinstance(camera, CameraParams):
        raise TypeError(f"camera must be a CameraParams (drifthelpers.camera.Camera), got {type(camera).__name__}")
    if not isinstance(raw, Tensor) or raw.dtype != torch.float64:
        raise TypeError(f"raw must be a float64 torch.Tensor for fidelity='raw2logit', got "
                        f"{type(raw).__name__ if not isinstance(raw, Tensor) else raw.dtype}")
    if raw.dim() != 4 or raw.shape[1] != 1:
        raise ValueError(f"raw must have shape (B, 1, H, W), got {tuple(raw.shape)}")
    if raw.requires_grad:
        raise ValueError("raw requires gradients, but the raw2logit static chain is not differentiable")
    images, stage_lists = [], OrderedDict()
    for mosaic in raw[:, 0].cpu().numpy():
        out = render_image(mosaic, preset, camera.cfa, camera.black_level, camera.wb_gains, camera.ccm,
                           camera.gamma, return_stages, unsharp_axis)
        if return_stages:
            out, stages = out
            for key, value in stages.items():
                stage_lists.setdefault(key, []).append(value if value.ndim == 2 else np.moveaxis(value, -1, 0))
        images.append(np.moveaxis(out, -1, 0))
    result = torch.from_numpy(np.stack(images)).to(raw.device)
    if not return_stages:
        return result
    stages = OrderedDict((k, torch.from_numpy(np.stack(v)).reshape(len(v), -1, *raw.shape[-2:]).to(raw.device))
                         for k, v in stage_lists.items())
    return result, stages


# --------------------------------------------------------------------------- the parametrized model

# The public model's 5x5 denoising kernel: scipy's Gaussian sigma 0.5 weights (truncated at
# 4 sigma), as the public code wrote them, to five significant digits.
_K_BLUR = ((6.9625e-08, 2.8089e-05, 2.0755e-04, 2.8089e-05, 6.9625e-08),
           (2.8089e-05, 1.1332e-02, 8.3731e-02, 1.1332e-02, 2.8089e-05),
           (2.0755e-04, 8.3731e-02, 6.1869e-01, 8.3731e-02, 2.0755e-04),
           (2.8089e-05, 1.1332e-02, 8.3731e-02, 1.1332e-02, 2.8089e-05),
           (6.9625e-08, 2.8089e-05, 2.0755e-04, 2.8089e-05, 6.9625e-08))
_CLIP_FLOOR = 1e-5  # the public model clips to [1e-5, 1] before exp(log(x) / gamma)


class Raw2LogitParametrizedDataModel(nn.Module):
    """The public code's parametrized data model: 132 unbounded scalars and an output BatchNorm.

    Layout (parameter groups named as in :class:`drifthelpers.isp.ParametrizedDataModel`):

    * ``black_level`` (4,): offsets per position of the 2x2 cell, in the units of the input.
    * ``demosaic`` (3, 3, 3, 3): a 3 -> 3 channel 3x3 convolution of the *masked* mosaic (each
      sample in its colour's channel, zeros elsewhere), ``mode="reflect"`` padding (torch's:
      ``c b | a b c``); initialised to bilinear (R and B: [[1,2,1],[2,4,2],[1,2,1]] / 4,
      G: [[0,1,0],[1,4,1],[0,1,0]] / 4, no cross-channel taps).
    * ``white_balance`` (3,), ``colour_matrix`` (3, 3): the camera's values (any sign).
    * ``sharpen`` (3, 3) on the luma, zero padding; init [[0,-1,0],[-1,5,-1],[0,-1,0]].
    * ``denoise`` (5, 5) on the luma, reflect padding; init the public code's 5-digit table of
      the Gaussian sigma 0.5 weights.
    * ``gamma`` (1,): init 2.2; the output is ``exp(log(clip(x, 1e-5, 1)) / gamma)``.

    4 + 81 + 3 + 9 + 9 + 25 + 1 = 132 scalars, none bounded (:meth:`project_` does nothing).
    The luma is Y of the YUV matrix :data:`YUV_FROM_RGB`, and back through its inverse.
    The output then passes a ``BatchNorm2d(3, affine=False)`` (:attr:`batch_norm`): in training
    mode it standardises each channel with the batch's statistics, in eval mode with its
    running ones (at construction mean 0, variance 1).

    At initialisation the output before the BatchNorm (:meth:`forward_unnormalised`) equals
    the static ``bi,s,ga`` view of :func:`render` except where the public code's choices
    differ from its own static chain: the 1-3 border pixels (the convolutions pad with
    ``reflect`` where colour-demosaicing and scipy repeat the edge), pixels whose linear value
    is below the 1e-5 clip floor, and the rounding of the 5-digit blur table (tested).

    Args:
        camera: a :class:`drifthelpers.isp.CameraParams` (black levels in the input's units).

    Shapes:
        forward: raw ``(B, 1, H, W)`` (mosaic / full scale) -> ``(B, 3, H, W)``.
    """

    GROUPS: tuple[str, ...] = ("black_level", "demosaic", "white_balance", "colour_matrix", "sharpen", "denoise",
                               "gamma")

    def __init__(self, camera):
        super().__init__()
        if not isinstance(camera, CameraParams):
            raise TypeError(f"camera must be a CameraParams (drifthelpers.camera.Camera), got {type(camera).__name__}")
        self.camera = camera
        self.cfa = camera.cfa
        debayer = torch.zeros(3, 3, 3, 3, dtype=torch.float64)
        debayer[0, 0] = debayer[2, 2] = torch.from_numpy(_BI_RB)
        debayer[1, 1] = torch.from_numpy(_BI_G)
        self._init = {
            "black_level": torch.tensor(camera.black_level, dtype=torch.float64),
            "demosaic": debayer,
            "white_balance": torch.tensor(camera.wb_gains, dtype=torch.float64),
            "colour_matrix": torch.tensor(camera.ccm, dtype=torch.float64),
            "sharpen": torch.from_numpy(_SHARPEN.copy()),
            "denoise": torch.tensor(_K_BLUR, dtype=torch.float64),
            "gamma": torch.tensor([camera.gamma], dtype=torch.float64),
        }
        for name in self.GROUPS:
            self.register_parameter(name, nn.Parameter(self._init[name].float()))
        self.register_buffer("yuv_from_rgb", torch.from_numpy(YUV_FROM_RGB.copy()).float())
        self.register_buffer("rgb_from_yuv", torch.from_numpy(RGB_FROM_YUV.copy()).float())
        self.batch_norm = nn.BatchNorm2d(3, affine=False)

    @torch.no_grad()
    def reset_parameters(self) -> Raw2LogitParametrizedDataModel:
        """Set every parameter back to its initial value (exact in the parameters' dtype)."""
        for name, value in self._init.items():
            getattr(self, name).copy_(value)
        self.yuv_from_rgb.copy_(torch.from_numpy(YUV_FROM_RGB))
        self.rgb_from_yuv.copy_(torch.from_numpy(RGB_FROM_YUV))
        self.batch_norm.reset_running_stats()
        return self

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by stage name (all seven groups)."""
        return {name: [getattr(self, name)] for name in self.GROUPS}

    def freeze_all_but(self, *groups: str) -> Raw2LogitParametrizedDataModel:
        """Let only the named groups require gradients; returns ``self``.

        Raises:
            ValueError: a name that is not one of :attr:`GROUPS`.
        """
        unknown = [g for g in groups if g not in self.GROUPS]
        if unknown:
            raise ValueError(f"groups must be among {list(self.GROUPS)}, got unknown {unknown}")
        for name in self.GROUPS:
            getattr(self, name).requires_grad_(name in groups)
        return self

    def bounds(self) -> dict[str, dict]:
        """Every group is unbounded, as in the public code."""
        return {name: {"lower": -math.inf, "upper": math.inf} for name in self.GROUPS}

    def project_(self) -> Raw2LogitParametrizedDataModel:
        """No projection (the public parameters are unbounded); returns ``self``."""
        return self

    def _masked_mosaic(self, raw: Tensor) -> Tensor:
        """(B, 1, H, W) -> (B, 3, H, W): black offset subtracted, each sample in its colour's channel."""
        b, _, h, w = raw.shape
        out = raw.new_zeros(b, 3, h, w)
        black = self.black_level.to(raw.dtype)
        for pos, colour in enumerate(cfa_channel_indices(self.cfa)):
            out[:, colour, pos // 2 :: 2, pos % 2 :: 2] = raw[:, 0, pos // 2 :: 2, pos % 2 :: 2] - black[pos]
        return out

    def _luma_filter(self, rgb: Tensor, kernel: Tensor, mode: str) -> Tensor:
        m_in, m_out = self.yuv_from_rgb.to(rgb.dtype), self.rgb_from_yuv.to(rgb.dtype)
        yuv = torch.einsum("bchw,kc->bkhw", rgb, m_in)
        pad = kernel.shape[-1] // 2
        y = yuv[:, :1]
        y = F.pad(y, (pad,) * 4, mode="constant" if mode == "zeros" else "reflect")
        y = F.conv2d(y, kernel.to(rgb.dtype)[None, None])
        yuv = torch.cat([y, yuv[:, 1:]], dim=1)
        return torch.einsum("bchw,kc->bkhw", yuv, m_out)

    def forward_unnormalised(self, raw: Tensor, return_stages: bool = False):
        """The chain up to the gamma curve, without the output BatchNorm.

        Args:
            raw: (B, 1, H, W) float, the mosaics divided by their full scale.
            return_stages: also return an OrderedDict of stage outputs.
        """
        if not isinstance(raw, Tensor) or not raw.is_floating_point() or raw.dim() != 4 or raw.shape[1] != 1:
            raise ValueError(f"raw must be a float tensor of shape (B, 1, H, W), got "
                             f"{tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__}")
        if min(raw.shape[-2:]) < 3:
            raise ValueError(f"raw must be at least 3x3 for the 5x5 reflect padding, got {tuple(raw.shape[-2:])}")
        stages = OrderedDict()
        dt = raw.dtype
        stages["black_level"] = x = self._masked_mosaic(raw)
        stages["demosaic"] = x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.demosaic.to(dt))
        stages["white_balance"] = x = x * self.white_balance.to(dt)[None, :, None, None]
        stages["colour_matrix"] = x = torch.einsum("bchw,kc->bkhw", x, self.colour_matrix.to(dt))
        stages["sharpen"] = x = self._luma_filter(x, self.sharpen, "zeros")
        stages["denoise"] = x = self._luma_filter(x, self.denoise, "reflect")
        stages["clip"] = x = x.clamp(_CLIP_FLOOR, 1.0)
        stages["gamma"] = x = torch.exp(torch.log(x) / self.gamma.to(dt))
        return (x, stages) if return_stages else x

    def forward(self, raw: Tensor, return_stages: bool = False):
        """The chain and the output BatchNorm: (B, 1, H, W) -> (B, 3, H, W)."""
        x, stages = self.forward_unnormalised(raw, return_stages=True)
        out = self.batch_norm(x)
        if return_stages:
            stages["batch_norm"] = out
            return out, stages
        return out

    def state_as_dict(self) -> dict:
        """Current values as plain Python numbers."""
        out = {name: getattr(self, name).detach().cpu().tolist() for name in self.GROUPS}
        out["gamma"] = float(self.gamma.detach())
        return out

    def extra_repr(self) -> str:
        return f"cfa={self.cfa!r}, scalars={sum(getattr(self, n).numel() for n in self.GROUPS)}"


def full_scale_input(raw_dn: Tensor, camera):
    """A mosaic in DN and its camera as this fidelity's input: both divided by the full scale.

    The full scale is ``2^bits - 1`` with ``bits`` the number of bits the white level spans
    (as :attr:`drifthelpers.raw.RawImage.bit_depth`): 1023 for a 10-bit sensor whose white
    level is 1023, 511 for a white level of 510, 65535 for a 16-bit container. The public
    code divided its 16-bit data sets by ``2^16 - 1`` in the same way, whatever their white level.

    Args:
        raw_dn: (B, 1, H, W) mosaic in DN (e.g. from :func:`drifthelpers.isp.load_raw_file`).
        camera: its :class:`drifthelpers.isp.CameraParams` (black and white level in DN).

    Returns:
        ``(raw, camera)``: float64 ``raw_dn / (2^bits - 1)`` and a camera whose black and
        white levels are in those units.

    Example:
        >>> raw, cam = full_scale_input(torch.full((1, 1, 4, 4), 511.0), CameraParams("RGGB", (0.0,) * 4, 510.0))
        >>> float(raw.max()), round(cam.white_level, 6)
        (1.0, 0.998043)
    """
    from dataclasses import replace

    white = float(camera.white_level)
    full = float(2 ** int(white).bit_length() - 1) if white >= 1 else white
    black = tuple(b / full for b in camera.black_level)
    return raw_dn.to(torch.float64) / full, replace(camera, black_level=black, white_level=white / full)
