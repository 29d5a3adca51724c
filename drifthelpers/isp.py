"""The data model: an image signal processor (ISP) from a raw mosaic to sRGB.

The chain follows the paper's order, one pure function per stage:

    raw (DN) ──black level / white level──▶ raw in [0, 1] ──demosaic──▶ camera RGB
    ──white balance──▶ ──colour matrix──▶ linear sRGB ──sharpen (luma)──▶
    ──denoise (luma)──▶ ──clip [0, 1]──▶ ──gamma x^(1/γ)──▶ sRGB-gamma in [0, 1]

On top of the stages sit

* the twelve *static* data models of the paper (:data:`PRESETS`, :class:`StaticDataModel`,
  :func:`render`): 3 demosaicers x 2 sharpeners x 2 denoisers with fixed camera values, and
* the *parametrized* data model (:class:`ParametrizedDataModel`): the same chain with its
  continuous values as learnable parameters, each kept in a physically meaningful range
  by a projection (:meth:`ParametrizedDataModel.project_`) and, at initialisation,
  identical to the static ``bi,s,ga`` view.

Conventions:

* Tensors are channel-first: raw mosaics ``(*, 1, H, W)``, images ``(*, 3, H, W)``, float.
  Any number of leading dimensions is allowed; a *batched* parameter (e.g. ``black_level``
  of shape ``(B, 4)``) must match the leading dimensions.
* Per-site values (black level) are ordered by position in the top-left 2x2 cell:
  top-left, top-right, bottom-left, bottom-right (as in :mod:`drifthelpers.raw`).
* Borders: every spatial filter pads with ``reflect`` (mirror without repeating the edge,
  ``d c b | a b c d``, scipy's ``mode="mirror"``). On a Bayer mosaic this keeps the CFA phase
  of the padded samples right, so demosaicing near the border uses true same-colour samples.
* Filters are correlations (``torch.nn.functional.conv2d``); the fixed kernels used here are
  symmetric, so correlation and convolution agree.
* Sharpening and denoising act on the luma only: Y of YUV (the Y row of
  :func:`kornia.color.rgb_to_yuv`, Y = 0.299 R + 0.587 G + 0.114 B) is filtered and U, V are
  kept. Since the Y column of kornia's (exact) inverse :func:`kornia.color.yuv_to_rgb` is
  (1, 1, 1), this is computed as ``rgb + (filtered Y - Y)``, tested equal to the round trip.
* Gaussian windows are truncated at 4 sigma like ``scipy.ndimage.gaussian_filter``: 5x5 for
  the denoiser's sigma 0.5 (the parametrized model's 5x5 kernel starts from the same weights),
  9x9 for the unsharp mask's radius 1.
* Without ``return_stages`` the chain runs fused (white balance folded into the colour
  matrix, one luma pass for both luma filters, clip folded into the gamma curve); with it,
  stage by stage. Both agree to float rounding.
"""

from __future__ import annotations

import math
from pathlib import Path
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drifthelpers.raw import CFA_PATTERNS, cfa_channel_indices

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
    "STAGES",
]

# --------------------------------------------------------------------------- constants

#: The paper's sharpening kernel (label ``s``), applied to the luma.
SHARPEN_KERNEL: tuple[tuple[float, ...], ...] = ((0.0, -1.0, 0.0), (-1.0, 5.0, -1.0), (0.0, -1.0, 0.0))

#: Demosaicer short names (paper labels) and their long names.
DEMOSAIC_METHODS: dict[str, str] = {"bi": "bilinear", "ma": "malvar2004", "me": "menon2007"}
_SHARPENERS: dict[str, str] = {"s": "3x3 sharpening kernel [[0,-1,0],[-1,5,-1],[0,-1,0]] on luma",
                               "u": "unsharp mask, radius 1, amount 1, isotropic 2-D, on luma"}
_DENOISERS: dict[str, str] = {"me": "median 3x3 on luma", "ga": "Gaussian sigma 0.5 (5x5 window) on luma"}

#: The twelve static data models in the paper's order: index = 4*d + 2*s + n.
PRESETS: tuple[str, ...] = tuple(f"{d},{s},{n}" for d in DEMOSAIC_METHODS for s in _SHARPENERS for n in _DENOISERS)

_LUMA = (0.299, 0.587, 0.114)  # Y row of kornia.color.rgb_to_yuv (BT.601)
_GAMMA_EPS = 1e-6  # below this linear value gamma_encode is a straight line through 0
_GAUSS_TRUNCATE = 4.0  # Gaussian windows reach round(truncate * sigma) pixels, like scipy

# Source-form kernels of the linear demosaicers (see _demosaic_linear): each interpolates one
# missing colour at one kind of site directly from the mosaic. Order: G at R/B sites; R or B at
# a G site whose same-colour neighbours lie in its row; ... in its column; R at B / B at R.
_BILINEAR_KERNELS = (
    ((0.0, 0.25, 0.0), (0.25, 0.0, 0.25), (0.0, 0.25, 0.0)),
    ((0.0, 0.0, 0.0), (0.5, 0.0, 0.5), (0.0, 0.0, 0.0)),
    ((0.0, 0.5, 0.0), (0.0, 0.0, 0.0), (0.0, 0.5, 0.0)),
    ((0.25, 0.0, 0.25), (0.0, 0.0, 0.0), (0.25, 0.0, 0.25)),
)
# Malvar, He & Cutler (ICASSP 2004), Fig. 2, in eighths.
_MHC_G_AT_RB = ((0, 0, -1, 0, 0), (0, 0, 2, 0, 0), (-1, 2, 4, 2, -1), (0, 0, 2, 0, 0), (0, 0, -1, 0, 0))
_MHC_ROW = ((0, 0, 0.5, 0, 0), (0, -1, 0, -1, 0), (-1, 4, 5, 4, -1), (0, -1, 0, -1, 0), (0, 0, 0.5, 0, 0))
_MHC_DIAG = ((0, 0, -1.5, 0, 0), (0, 2, 0, 2, 0), (-1.5, 0, 6, 0, -1.5), (0, 2, 0, 2, 0), (0, 0, -1.5, 0, 0))
_MALVAR_KERNELS = tuple(
    tuple(tuple(v / 8 for v in row) for row in k)
    for k in (_MHC_G_AT_RB, _MHC_ROW, tuple(zip(*_MHC_ROW)), _MHC_DIAG)
)


# --------------------------------------------------------------------------- validation helpers


def _check_image(x: Tensor, channels: int, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 3 or x.shape[-3] != channels:
        raise ValueError(f"{name} must have shape (*, {channels}, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_cfa(cfa: str) -> str:
    if not isinstance(cfa, str) or cfa.upper() not in CFA_PATTERNS:
        raise ValueError(f"cfa must be one of {CFA_PATTERNS}, got {cfa!r}")
    return cfa.upper()


def _param(value: float | Sequence | Tensor, like: Tensor, size: int, name: str) -> Tensor:
    """``value`` as a tensor with ``like``'s dtype/device and last dim ``size``: (size,) or (*, size)."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0 or t.shape[-1] != size:
        raise ValueError(f"{name} must have shape ({size},) or (*, {size}), got {tuple(t.shape)}")
    if t.dim() - 1 > like.dim() - 3:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}: too many leading dims for an input of shape {tuple(like.shape)}"
        )
    return t


def _per_image(value: float | Tensor, like: Tensor, name: str) -> Tensor:
    """A scalar, or a (*,) tensor of per-image values reshaped to broadcast over (C, H, W)."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.numel() == 1:
        return t.reshape(())
    if t.dim() > like.dim() - 3:
        raise ValueError(f"{name} must be a scalar or have shape (*,) over the leading dims, got {tuple(t.shape)}")
    return _lead(t, 3)


def _site_param(value, like: Tensor, name: str) -> Tensor:
    """A scalar, or per-position values of shape (4,) / (*, 4)."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.numel() == 1 and t.dim() <= 1:
        return t.reshape(())
    return _param(t, like, 4, name)


def _lead(t: Tensor, trailing: int) -> Tensor:
    """Append ``trailing`` singleton dims so a (*,) parameter broadcasts over (C, H, W)."""
    return t.reshape(t.shape + (1,) * trailing)


def _site_map(values: Tensor, h: int, w: int) -> Tensor:
    """(*, 4) per-position values -> (*, 1, H, W) map tiled over the mosaic."""
    cell = values.reshape(values.shape[:-1] + (1, 2, 2))
    reps = (1,) * (cell.dim() - 2) + ((h + 1) // 2, (w + 1) // 2)
    return cell.repeat(*reps)[..., :h, :w]


def _flat(x: Tensor) -> tuple[Tensor, torch.Size]:
    return x.reshape((-1,) + tuple(x.shape[-3:])), x.shape


def _require_size(x: Tensor, ph: int, pw: int) -> None:
    h, w = x.shape[-2:]
    if ph >= h or pw >= w:
        raise ValueError(
            f"image of size {h}x{w} is too small for reflect padding of {ph}x{pw} pixels "
            f"(needs more than {ph} rows and {pw} columns)"
        )


def _pad_reflect(x: Tensor, ph: int, pw: int) -> Tensor:
    _require_size(x, ph, pw)
    return F.pad(x, (pw, pw, ph, ph), mode="reflect")


def _filter2d(x: Tensor, kernel: Tensor) -> Tensor:
    """Depthwise correlation of (N, C, H, W) with one (kh, kw) kernel, reflect borders."""
    kh, kw = kernel.shape[-2:]
    n, c, h, w = x.shape
    # batch folded into the channels of one grouped convolution: same result, and on CPU the
    # weight gradient is several times faster than with a batch of single-channel images
    weight = kernel.to(x.dtype).reshape(1, 1, kh, kw).expand(n * c, 1, kh, kw)
    out = F.conv2d(_pad_reflect(x.reshape(1, n * c, h, w), kh // 2, kw // 2), weight, groups=n * c)
    return out.reshape(n, c, h, w)


def _kernel(kernel: Sequence | Tensor, like: Tensor, name: str) -> Tensor:
    k = torch.as_tensor(kernel, dtype=like.dtype, device=like.device)
    if k.dim() != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"{name} must be a 2-D kernel with odd sides, got shape {tuple(k.shape)}")
    return k


def _gaussian_size(sigma: float) -> int:
    return 2 * max(1, int(_GAUSS_TRUNCATE * sigma + 0.5)) + 1


# --------------------------------------------------------------------------- stage 1: black level


def subtract_black_level(
    raw: Tensor, black_level: float | Sequence[float] | Tensor, white_level: float | Sequence[float] | Tensor
) -> Tensor:
    """Subtract the black level per CFA site and normalise by the white level.

    Computes ``(raw - black) / (white - black)`` per site, so that black maps to 0 and
    saturation to 1. The result is not clipped: noise below black stays negative until
    the clip stage.

    Args:
        raw: mosaic in digital numbers (DN), shape (*, 1, H, W), float.
        black_level: black level in DN, a float, shape (4,) by position in the 2x2 cell
            (top-left, top-right, bottom-left, bottom-right), or (*, 4) per image.
        white_level: saturation level in DN, a float or a tensor of shape (), (4,) or (*, 4).

    Returns:
        Normalised mosaic, same shape as ``raw``, nominally in [0, 1].

    Example:
        >>> raw = torch.tensor([[[[32.0, 1023.0], [527.5, 40.0]]]])
        >>> subtract_black_level(raw, 32.0, 1023.0)
        tensor([[[[0.0000, 1.0000],
                  [0.5000, 0.0081]]]])
    """
    _check_image(raw, 1, "raw")
    h, w = raw.shape[-2:]
    black = _site_param(black_level, raw, "black_level")
    white = _site_param(white_level, raw, "white_level")
    if not isinstance(black_level, Tensor) and not isinstance(white_level, Tensor):
        if float(white.min()) <= float(black.max()):
            raise ValueError(f"white_level ({white_level}) must be above every black_level ({black_level})")
    scale = 1.0 / (white - black)
    return _sitewise_affine(raw, scale, -black * scale)


def _sitewise_affine(raw: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    """``raw * scale + offset`` with scalar or per-position (*, 4) ``scale``/``offset``."""
    if scale.dim() == 0 and offset.dim() == 0:
        return raw * scale + offset
    # here both are (4,) or (*, 4) of the same shape: offset = -black * scale
    h, w = raw.shape[-2:]
    if h % 2 or w % 2:
        return raw * _site_map(scale, h, w) + _site_map(offset, h, w)
    lead = raw.shape[:-3]
    cells = raw.reshape(lead + (1, h // 2, 2, w // 2, 2))
    s6 = scale.reshape(scale.shape[:-1] + (1, 1, 2, 1, 2))
    o6 = offset.reshape(offset.shape[:-1] + (1, 1, 2, 1, 2))
    return torch.addcmul(o6, cells, s6).reshape(torch.broadcast_shapes(lead, scale.shape[:-1]) + (1, h, w))


# --------------------------------------------------------------------------- stage 2: demosaic


def _site_masks(cfa: str, h: int, w: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Boolean (1, 1, H, W) masks of the R, G and B sites."""
    idx = torch.tensor(cfa_channel_indices(cfa), device=like.device)
    sites = _site_map(idx, h, w)
    return sites == 0, sites == 1, sites == 2


def _phase_sources(cfa: str) -> list[tuple[int, int, int]]:
    """Per position of the 2x2 cell (TL, TR, BL, BR): the source of R, G and B (see below)."""
    colours = cfa_channel_indices(cfa)
    table = []
    for pos, c in enumerate(colours):
        if c == 0:
            table.append((0, 1, 4))
        elif c == 2:
            table.append((4, 1, 0))
        else:
            row_mate = colours[pos ^ 1]  # the other site in the same row of the cell
            table.append((2, 0, 3) if row_mate == 0 else (3, 0, 2))
    return table


def _demosaic_linear(raw: Tensor, cfa: str, kernels: Tensor) -> Tensor:
    """Linear demosaicing from four source-form kernels (4, k, k), reflect borders.

    Sources: 0 the mosaic itself; 1 G interpolated at an R/B site; 2 R/B from row neighbours
    at a G site; 3 R/B from column neighbours at a G site; 4 R at B / B at R (diagonals).
    Each kernel is evaluated only at the sites that need it (a stride-2 convolution per
    position of the 2x2 cell) and the four positions are interleaved with ``pixel_shuffle``.
    """
    flat, shape = _flat(raw)
    n, _, h, w = flat.shape
    k = kernels.shape[-1]
    kernels = kernels.to(flat.dtype)
    padded = _pad_reflect(flat, k // 2, k // 2)
    table = _phase_sources(cfa)
    if h % 2 or w % 2:  # odd sizes: evaluate every kernel everywhere and pick per pixel
        planes = F.conv2d(padded, kernels.unsqueeze(1))
        sources = torch.cat([flat, planes], dim=1)
        cell = torch.tensor(table, device=flat.device).T  # (3, 4)
        index = _site_map(cell, h, w).reshape(1, 3, h, w).expand(n, 3, h, w)
        return torch.gather(sources, 1, index).reshape(shape[:-3] + (3, h, w))
    phases = []
    for pos, sources in enumerate(table):
        py, px = divmod(pos, 2)
        need = [src - 1 for src in sources if src]
        src = padded[..., py:, px:]
        weight = kernels[need].unsqueeze(1).repeat(n, 1, 1, 1)  # batch folded into groups (see _filter2d)
        est = F.conv2d(src.reshape(1, n, *src.shape[-2:]), weight, stride=2, groups=n)
        est = est.reshape(n, len(need), *est.shape[-2:])[..., : h // 2, : w // 2].unbind(1)
        phases.append(_assemble_phase(flat, py, px, sources, est))
    return _interleave(phases, shape)


def _assemble_phase(flat: Tensor, py: int, px: int, sources, estimates) -> list[Tensor]:
    """The (R, G, B) half-resolution planes of one cell position: measured or estimated."""
    it = iter(estimates)
    own = flat[:, 0, py::2, px::2]
    return [own if src == 0 else next(it) for src in sources]


def _interleave(phases: list[list[Tensor]], shape: torch.Size) -> Tensor:
    """Per position (TL, TR, BL, BR) the (R, G, B) planes (N, H/2, W/2) -> (*, 3, H, W)."""
    n, h2, w2 = phases[0][0].shape
    cells = torch.stack([phases[pos][c] for c in range(3) for pos in range(4)], dim=1)  # colour * 4 + position
    return F.pixel_shuffle(cells, 2).reshape(shape[:-3] + (3, 2 * h2, 2 * w2))


def _taps(kernel) -> dict[tuple[int, int], float]:
    c = len(kernel) // 2
    return {(i - c, j - c): float(v) for i, row in enumerate(kernel) for j, v in enumerate(row) if v}


def _demosaic_fixed(raw: Tensor, cfa: str, kernels: tuple) -> Tensor:
    """:func:`_demosaic_linear` for constant kernels, on the four half-resolution planes.

    The reflect-padded mosaic is split into its four CFA planes (``pixel_unshuffle``); each
    needed value is then a weighted sum of contiguous shifted views of those planes, evaluated
    only at its own sites, which on CPU beats a convolution for these sparse 4- to 13-tap
    kernels (and its backward pass touches quarter-size planes only).
    """
    flat, shape = _flat(raw)
    h, w = flat.shape[-2:]
    if h % 2 or w % 2:
        return _demosaic_linear(raw, cfa, torch.tensor(kernels, dtype=raw.dtype, device=raw.device))
    r = len(kernels[0]) // 2
    pad = 2 * ((r + 1) // 2)  # even, so the padded mosaic keeps the pattern
    planes = F.pixel_unshuffle(_pad_reflect(flat, pad, pad), 2)  # channel = 2 * row parity + column parity
    o, h2, w2 = pad // 2, h // 2, w // 2
    taps = [_taps(k) for k in kernels]
    phases = []
    for pos, sources in enumerate(_phase_sources(cfa)):
        py, px = divmod(pos, 2)
        est = []
        for src in sources:
            if src == 0:
                continue
            acc = None
            for (dy, dx), wt in taps[src - 1].items():
                yy, xx = py + dy, px + dx
                y0, x0 = o + yy // 2, o + xx // 2
                part = planes[:, 2 * (yy % 2) + xx % 2, y0 : y0 + h2, x0 : x0 + w2]
                acc = part * wt if acc is None else torch.add(acc, part, alpha=wt)
            est.append(acc)
        phases.append(_assemble_phase(flat, py, px, sources, est))
    return _interleave(phases, shape)


def demosaic_bilinear(raw: Tensor, cfa: str) -> Tensor:
    """Bilinear demosaicing: each missing colour is the mean of its nearest same-colour sites.

    Each missing value is evaluated only at its own sites, from reflect-padded neighbours. It
    equals :func:`kornia.color.raw_to_rgb` (pattern mapped with
    :func:`drifthelpers.raw.cfa_to_kornia`) on every pixel, borders included, for even H and W
    (tested: kornia's replicate padding of the sub-sampled planes amounts to reflect padding of
    the mosaic), is faster on CPU, and also takes odd sizes. Interior pixels equal
    ``colour_demosaicing.demosaicing_CFA_Bayer_bilinear``.

    Args:
        raw: normalised mosaic, shape (*, 1, H, W), H, W >= 2.
        cfa: pattern string, one of ``"RGGB", "BGGR", "GRBG", "GBRG"``.

    Returns:
        Camera RGB, shape (*, 3, H, W); the measured samples are kept unchanged.

    Example:
        >>> demosaic_bilinear(torch.full((1, 1, 4, 4), 0.5), "RGGB")[0, :, 1, 1]
        tensor([0.5000, 0.5000, 0.5000])
    """
    _check_image(raw, 1, "raw")
    cfa = _check_cfa(cfa)
    return _demosaic_fixed(raw, cfa, _BILINEAR_KERNELS)


def demosaic_malvar2004(raw: Tensor, cfa: str) -> Tensor:
    """Malvar-He-Cutler (2004) gradient-corrected linear demosaicing with the 5x5 filters.

    Each missing colour is a 5x5 linear combination of the mosaic (the bilinear estimate
    plus a Laplacian correction from the site's own colour). Borders: reflect padding.
    Interior pixels equal ``colour_demosaicing.demosaicing_CFA_Bayer_Malvar2004``.

    Args:
        raw: normalised mosaic, shape (*, 1, H, W), H, W >= 3.
        cfa: pattern string.

    Returns:
        Camera RGB, shape (*, 3, H, W) (not clipped: the correction can overshoot).

    Example:
        >>> demosaic_malvar2004(torch.full((1, 1, 6, 6), 0.25), "GRBG")[0, :, 2, 2]
        tensor([0.2500, 0.2500, 0.2500])
    """
    _check_image(raw, 1, "raw")
    return _demosaic_fixed(raw, _check_cfa(cfa), _MALVAR_KERNELS)


def _shifted_sum(x: Tensor, taps: dict[tuple[int, int], float]) -> Tensor:
    """``sum_(dy, dx) w * x[i + dy, j + dx]`` over a sparse set of offsets, reflect borders."""
    ry = max(abs(dy) for dy, _ in taps)
    rx = max(abs(dx) for _, dx in taps)
    p = _pad_reflect(x, ry, rx)
    h, w = x.shape[-2:]
    out = None
    for (dy, dx), wt in taps.items():
        part = p[..., ry + dy : ry + dy + h, rx + dx : rx + dx + w]
        out = part * wt if out is None else torch.add(out, part, alpha=wt)
    return out


def _line(x: Tensor, taps: Sequence[float], vertical: bool) -> Tensor:
    """1-D correlation along columns (``vertical``) or rows with a centred odd-length filter."""
    c = len(taps) // 2
    offsets = {((i - c, 0) if vertical else (0, i - c)): t for i, t in enumerate(taps) if t}
    return _shifted_sum(x, offsets)


def demosaic_menon2007(raw: Tensor, cfa: str, refining_step: bool = True) -> Tensor:
    """Menon, Andriani & Calvagno (2007) directional filtering and a-posteriori decision (DDFAPD).

    1. Green is interpolated horizontally and vertically with the 5-tap filter
       ``[-1/4, 1/2, 1/2, 1/2, -1/4]``.
    2. The direction with the smaller summed gradient of the colour differences (R-G, B-G)
       over a 5x5 window is chosen per pixel (ties go to horizontal).
    3. R and B are filled from the colour differences along that direction.
    4. Optional refining step (default, as in the paper): green, then R/B at green sites,
       then R/B at B/R sites are re-estimated from 3-tap means of colour differences.

    Borders: reflect padding at every filter, so pixels within ~10 px of the border may
    differ from implementations that pad differently. Interior pixels equal
    ``colour_demosaicing.demosaicing_CFA_Bayer_Menon2007`` (float64). The direction choice
    is piecewise constant, so gradients flow through the interpolation values only.

    Args:
        raw: normalised mosaic, shape (*, 1, H, W), H, W >= 5.
        cfa: pattern string.
        refining_step: run step 4.

    Returns:
        Camera RGB, shape (*, 3, H, W).

    Example:
        >>> demosaic_menon2007(torch.full((1, 1, 8, 8), 0.5), "BGGR")[0, :, 4, 4]
        tensor([0.5000, 0.5000, 0.5000])
    """
    _check_image(raw, 1, "raw")
    cfa = _check_cfa(cfa)
    x, shape = _flat(raw)
    h, w = x.shape[-2:]
    m_r, m_g, m_b = _site_masks(cfa, h, w, x)
    rows = torch.arange(h, device=x.device).reshape(1, 1, h, 1)
    colours = cfa_channel_indices(cfa)
    r_pos, b_pos = colours.index(0), colours.index(2)
    r_row = (rows % 2) == r_pos // 2  # rows that hold R sites
    b_row = (rows % 2) == b_pos // 2
    g_in_r_row = m_g & r_row  # R neighbours left/right, B neighbours above/below
    g_in_b_row = m_g & b_row  # B left/right, R above/below
    zero = x.new_zeros(())

    # 1. directional green
    taps = (-0.25, 0.5, 0.5, 0.5, -0.25)
    g_h = torch.where(m_g, x, _line(x, taps, vertical=False))
    g_v = torch.where(m_g, x, _line(x, taps, vertical=True))

    # 2. decision from colour-difference gradients
    c_h = x - g_h  # colour differences R-G / B-G; exactly 0 at G sites, where g_h = x
    c_v = x - g_v
    d_h = (c_h - _pad_reflect(c_h, 0, 2)[..., :, 4:]).abs()  # |C(i, j) - C(i, j + 2)|
    d_v = (c_v - _pad_reflect(c_v, 2, 0)[..., 4:, :]).abs()
    # Menon's classifier window (colour-demosaicing's kernel used as a convolution): the
    # gradient at the pixel and two to its left (above, for vertical) weigh 3, the others 1.
    sum_h = _menon_window(d_h, vertical=False)
    sum_v = _menon_window(d_v, vertical=True)
    horizontal = sum_v >= sum_h
    g = torch.where(horizontal, g_h, g_v)

    # 3. red and blue along the chosen direction: X = G + mean of the neighbours' (X - G)
    #    (the filters are linear, so this is G + filter(X) - filter(G) with X zero off its sites)
    half = (0.5, 0.0, 0.5)
    rb = torch.cat([torch.where(m_r, x, zero), torch.where(m_b, x, zero)], dim=1)  # (N, 2, H, W)
    diff = rb - g
    rb_h = g + _line(diff, half, False)
    rb_v = g + _line(diff, half, True)
    # R from row neighbours where the G site sits in an R row, from column neighbours otherwise.
    r = torch.where(g_in_r_row, rb_h[:, :1], torch.where(g_in_b_row, rb_v[:, :1], rb[:, :1]))
    b = torch.where(g_in_b_row, rb_h[:, 1:], torch.where(g_in_r_row, rb_v[:, 1:], rb[:, 1:]))
    other = torch.cat([b, r], dim=1)
    diff = torch.cat([r, b], dim=1) - other
    rb_at_other = other + torch.where(horizontal, _line(diff, half, False), _line(diff, half, True))
    r = torch.where(m_b, rb_at_other[:, :1], r)  # R at B sites (ch 0), B at R sites (ch 1)
    b = torch.where(m_r, rb_at_other[:, 1:], b)

    if refining_step:
        r, g, b = _menon_refine(r, g, b, m_r, m_g, m_b, g_in_r_row, g_in_b_row, horizontal)
    return torch.cat([r, g, b], dim=1).reshape(shape[:-3] + (3, h, w))


def _menon_refine(r, g, b, m_r, m_g, m_b, g_in_r_row, g_in_b_row, horizontal):
    third = (1 / 3, 1 / 3, 1 / 3)
    half = (0.5, 0.0, 0.5)

    def along(t: Tensor, taps) -> Tensor:
        return torch.where(horizontal, _line(t, taps, False), _line(t, taps, True))

    # green at R and B sites from the smoothed colour difference along the chosen direction
    diff = along(torch.cat([r - g, b - g], dim=1), third)
    g = torch.where(m_r, r - diff[:, :1], torch.where(m_b, b - diff[:, 1:], g))
    # R and B at G sites from the neighbouring colour differences
    d = torch.cat([r - g, b - g], dim=1)
    d_h, d_v = _line(d, half, False), _line(d, half, True)
    r = torch.where(g_in_r_row, g + d_h[:, :1], torch.where(g_in_b_row, g + d_v[:, :1], r))
    b = torch.where(g_in_b_row, g + d_h[:, 1:], torch.where(g_in_r_row, g + d_v[:, 1:], b))
    # R at B sites and B at R sites from the smoothed R-B difference
    rb = along(r - b, third)
    r, b = torch.where(m_b, b + rb, r), torch.where(m_r, r - rb, b)
    return r, g, b


def _menon_window(d: Tensor, vertical: bool) -> Tensor:
    """Menon's classifier window, reflect borders. Horizontal:
    ``3 (D[i, j] + D[i, j-2]) + D[i-1, j-1] + D[i+1, j-1] + D[i-2, j] + D[i+2, j] + D[i-2, j-2] + D[i+2, j-2]``
    (vertical: the transpose), computed as the rows {-2, 0, 2}, weighted (1, 3, 1), of
    ``D[., j] + D[., j-2]`` plus the two remaining taps.
    """
    h, w = d.shape[-2:]
    p = _pad_reflect(d, 2, 2)
    if vertical:
        pair = p[..., 2 : 2 + h, :] + p[..., 0:h, :]
        out = torch.add(pair[..., :, 0:w] + pair[..., :, 4 : 4 + w], pair[..., :, 2 : 2 + w], alpha=3.0)
        return out + (p[..., 1 : 1 + h, 1 : 1 + w] + p[..., 1 : 1 + h, 3 : 3 + w])
    pair = p[..., :, 2 : 2 + w] + p[..., :, 0:w]
    out = torch.add(pair[..., 0:h, :] + pair[..., 4 : 4 + h, :], pair[..., 2 : 2 + h, :], alpha=3.0)
    return out + (p[..., 1 : 1 + h, 1 : 1 + w] + p[..., 3 : 3 + h, 1 : 1 + w])


_DEMOSAICERS = {"bi": demosaic_bilinear, "ma": demosaic_malvar2004, "me": demosaic_menon2007}
_DEMOSAIC_ALIASES = {**{k: k for k in DEMOSAIC_METHODS}, **{v: k for k, v in DEMOSAIC_METHODS.items()}}


def demosaic(raw: Tensor, cfa: str, method: str = "bi") -> Tensor:
    """Demosaic with one of the paper's three methods.

    Args:
        raw: normalised mosaic, shape (*, 1, H, W).
        cfa: pattern string.
        method: ``"bi"``/``"bilinear"``, ``"ma"``/``"malvar2004"`` or ``"me"``/``"menon2007"``.

    Returns:
        Camera RGB, shape (*, 3, H, W).

    Example:
        >>> demosaic(torch.rand(2, 1, 8, 8), "RGGB", "ma").shape
        torch.Size([2, 3, 8, 8])
    """
    key = _DEMOSAIC_ALIASES.get(method) if isinstance(method, str) else None
    if key is None:
        raise ValueError(f"method must be one of {sorted(_DEMOSAIC_ALIASES)}, got {method!r}")
    return _DEMOSAICERS[key](raw, cfa)


# --------------------------------------------------------------------------- stages 3-4: colour


def white_balance(rgb: Tensor, wb_gains: float | Sequence[float] | Tensor) -> Tensor:
    """Scale each colour channel by its gain.

    Args:
        rgb: linear camera RGB, shape (*, 3, H, W).
        wb_gains: per-channel gains (R, G, B), shape (3,) or (*, 3).

    Returns:
        Balanced linear RGB, same shape.

    Example:
        >>> white_balance(torch.ones(1, 3, 2, 2), torch.tensor([2.0, 1.0, 1.5]))[0, :, 0, 0]
        tensor([2.0000, 1.0000, 1.5000])
    """
    _check_image(rgb, 3, "rgb")
    gains = _param(wb_gains, rgb, 3, "wb_gains")
    return rgb * _lead(gains, 2)


def colour_correct(rgb: Tensor, ccm: Sequence | Tensor) -> Tensor:
    """Apply a 3x3 colour-correction matrix per pixel: ``out_i = sum_j ccm[i, j] * rgb_j``.

    Args:
        rgb: white-balanced camera RGB, shape (*, 3, H, W).
        ccm: camera-RGB to linear-sRGB matrix, shape (3, 3) or (*, 3, 3).

    Returns:
        Linear sRGB, same shape (not clipped).

    Example:
        >>> colour_correct(torch.ones(1, 3, 1, 1), torch.eye(3) * 2)[0, :, 0, 0]
        tensor([2., 2., 2.])
    """
    _check_image(rgb, 3, "rgb")
    m = torch.as_tensor(ccm, dtype=rgb.dtype, device=rgb.device)
    if m.dim() < 2 or m.shape[-2:] != (3, 3):
        raise ValueError(f"ccm must have shape (3, 3) or (*, 3, 3), got {tuple(m.shape)}")
    if m.dim() - 2 > rgb.dim() - 3:
        raise ValueError(f"ccm has shape {tuple(m.shape)}: too many leading dims for rgb {tuple(rgb.shape)}")
    return torch.einsum("...ij,...jhw->...ihw", m, rgb)


# --------------------------------------------------------------------------- stages 5-6: luma filters


def luma_filter(rgb: Tensor, kernel: Sequence | Tensor) -> Tensor:
    """Filter the luma (Y of YUV) with a 2-D kernel, leaving chroma unchanged.

    Args:
        rgb: linear RGB, shape (*, 3, H, W).
        kernel: correlation kernel, shape (kh, kw) with odd sides; reflect borders.

    Returns:
        RGB with filtered luma, same shape.

    Example:
        >>> x = torch.rand(1, 3, 5, 5)
        >>> torch.allclose(luma_filter(x, torch.tensor([[1.0]])), x, atol=1e-6)
        True
    """
    _check_image(rgb, 3, "rgb")
    return _on_luma(rgb, _kernel_op(kernel, rgb))


def _kernel_op(kernel: Sequence | Tensor, like: Tensor):
    k = _kernel(kernel, like, "kernel")
    if not isinstance(kernel, Tensor):  # a constant sparse kernel: sum of shifted views (fast on CPU)
        taps = _taps(k.tolist())
        if 0 < len(taps) <= 9:
            return lambda y: _shifted_sum(y, taps)
    return lambda y: _filter2d(y, k)


def _luma(rgb: Tensor) -> Tensor:
    """Y of YUV (BT.601 weights, as kornia.color.rgb_to_yuv) of (N, 3, H, W) -> (N, 1, H, W)."""
    weights = torch.tensor(_LUMA, dtype=rgb.dtype, device=rgb.device).reshape(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def _on_luma(rgb: Tensor, op) -> Tensor:
    """Apply ``op`` to the luma Y of YUV and return RGB.

    Equal to ``yuv_to_rgb(cat(op(Y), U, V))`` after ``rgb_to_yuv`` (kornia's pair, an exact
    inverse): the Y column of the YUV-to-RGB matrix is (1, 1, 1), so changing Y by ``dY`` adds
    ``dY`` to R, G and B. This form skips two 3x3 colour transforms per stage (tested against
    kornia's round trip).
    """
    flat, shape = _flat(rgb)
    y = _luma(flat)
    return (flat + (op(y) - y)).reshape(shape)


def sharpen(rgb: Tensor, kernel: Sequence | Tensor = SHARPEN_KERNEL) -> Tensor:
    """Sharpen the luma with a small kernel (paper label ``s``).

    Args:
        rgb: linear RGB, shape (*, 3, H, W).
        kernel: (3, 3) kernel, default :data:`SHARPEN_KERNEL` ``[[0,-1,0],[-1,5,-1],[0,-1,0]]``.

    Returns:
        Sharpened RGB, same shape (not clipped). Borders: reflect padding.

    Example:
        >>> sharpen(torch.full((1, 3, 4, 4), 0.5))[0, :, 0, 0]
        tensor([0.5000, 0.5000, 0.5000])
    """
    return luma_filter(rgb, kernel)


def unsharp_mask(rgb: Tensor, radius: float = 1.0, amount: float | Tensor = 1.0) -> Tensor:
    """Isotropic 2-D unsharp masking of the luma (paper label ``u``).

    ``y + amount * (y - G_radius * y)`` with a 2-D Gaussian blur ``G`` of standard deviation
    ``radius`` truncated at ``4 * radius`` (a 9x9 window for radius 1), the definition of
    ``skimage.filters.unsharp_mask`` (which uses ``scipy.ndimage.gaussian_filter``). Unlike the
    paper's public code, it acts along both axes. Borders: reflect padding.

    Args:
        rgb: linear RGB, shape (*, 3, H, W), H and W above ``4 * radius``.
        radius: Gaussian standard deviation in pixels (> 0).
        amount: strength, a float or a tensor of shape (*,) per image.

    Returns:
        Sharpened RGB, same shape (not clipped).

    Example:
        >>> unsharp_mask(torch.full((1, 3, 10, 10), 0.5))[0, :, 5, 5]
        tensor([0.5000, 0.5000, 0.5000])
    """
    _check_image(rgb, 3, "rgb")
    radius = float(radius)
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    return _on_luma(rgb, _unsharp_op(radius, _per_image(amount, rgb, "amount")))


def _unsharp_op(radius: float, amount: Tensor | float):
    size = _gaussian_size(radius)
    amt = amount.reshape(-1, 1, 1, 1) if isinstance(amount, Tensor) and amount.dim() else amount

    def op(y: Tensor) -> Tensor:
        _require_size(y, size // 2, size // 2)
        blur = kornia.filters.gaussian_blur2d(y, (size, size), (radius, radius), border_type="reflect")
        return y + amt * (y - blur)

    return op


def denoise_median(rgb: Tensor, kernel_size: int = 3) -> Tensor:
    """Median filter on the luma (paper label ``me``).

    3x3 windows use an exact sorted-column formulation (faster on CPU); other sizes use
    :func:`kornia.filters.median_blur`. Gradients flow to the selected sample.

    Args:
        rgb: linear RGB, shape (*, 3, H, W).
        kernel_size: odd window side (3 in the paper). Borders: reflect padding.

    Returns:
        Denoised RGB, same shape.

    Example:
        >>> x = torch.zeros(1, 3, 5, 5); x[..., 2, 2] = 1.0  # an isolated hot pixel
        >>> denoise_median(x).abs().max().item() < 1e-6
        True
    """
    _check_image(rgb, 3, "rgb")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
    return _on_luma(rgb, _median_op(kernel_size))


def _median_op(kernel_size: int):
    if kernel_size == 3:
        return _median3x3
    def op(y: Tensor) -> Tensor:
        _require_size(y, kernel_size // 2, kernel_size // 2)
        return kornia.filters.median_blur(y, kernel_size, border_type="reflect")

    return op


def _median3x3(y: Tensor) -> Tensor:
    """Exact 3x3 median, reflect borders, from sorted columns (about half the min/max work of a
    9-input sorting network, shared between neighbouring windows): the median of a 3x3 window is
    ``med3(max of the column minima, med3 of the column medians, min of the column maxima)``.
    Tested equal to :func:`kornia.filters.median_blur` and ``scipy.ndimage.median_filter``.
    """
    h, w = y.shape[-2:]
    p = _pad_reflect(y, 1, 1)
    a, b, c = p[..., :-2, :], p[..., 1:-1, :], p[..., 2:, :]  # the three rows of each column
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    mid = torch.maximum(lo, torch.minimum(hi, c))
    lo, hi = torch.minimum(lo, c), torch.maximum(hi, c)
    lo = torch.maximum(torch.maximum(lo[..., :-2], lo[..., 1:-1]), lo[..., 2:])
    hi = torch.minimum(torch.minimum(hi[..., :-2], hi[..., 1:-1]), hi[..., 2:])
    m0, m1, m2 = mid[..., :-2], mid[..., 1:-1], mid[..., 2:]
    mid = torch.maximum(torch.minimum(m0, m1), torch.minimum(torch.maximum(m0, m1), m2))
    return torch.maximum(torch.minimum(lo, mid), torch.minimum(torch.maximum(lo, mid), hi))


def denoise_gaussian(rgb: Tensor, sigma: float = 0.5, kernel_size: int | None = None) -> Tensor:
    """Gaussian blur of the luma (paper label ``ga``), with :func:`kornia.filters.gaussian_blur2d`.

    The window is truncated at ``4 * sigma`` like ``scipy.ndimage.gaussian_filter``: for
    sigma 0.5 a 5x5 window (a 3x3 window would drop taps of weight 3.4e-4 and renormalise).
    Weights are normalised to sum 1 over the window. Borders: reflect padding.

    Args:
        rgb: linear RGB, shape (*, 3, H, W).
        sigma: standard deviation in pixels (> 0).
        kernel_size: odd window side; default ``2 * round(4 * sigma) + 1`` (5 for 0.5).

    Returns:
        Denoised RGB, same shape.

    Example:
        >>> denoise_gaussian(torch.full((1, 3, 6, 6), 0.5))[0, :, 3, 3]
        tensor([0.5000, 0.5000, 0.5000])
    """
    _check_image(rgb, 3, "rgb")
    sigma = float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    size = _gaussian_size(sigma) if kernel_size is None else kernel_size
    if not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
    return _on_luma(rgb, _gauss_op(sigma, size))


def _gauss_op(sigma: float, size: int):
    def op(y: Tensor) -> Tensor:
        _require_size(y, size // 2, size // 2)
        return kornia.filters.gaussian_blur2d(y, (size, size), (sigma, sigma), "reflect")

    return op


def _gaussian_kernel(sigma: float, size: int, like: Tensor) -> Tensor:
    r = torch.arange(size, dtype=like.dtype, device=like.device) - size // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


# --------------------------------------------------------------------------- stages 7-8: clip, gamma


def gamma_encode(rgb_lin: Tensor, gamma: float | Tensor = 2.2) -> Tensor:
    """Clip to [0, 1] and encode with the power law ``x ** (1 / gamma)``.

    The value is clamped before ``pow`` so gradients stay finite: below ``x = 1e-6`` the
    curve continues as the straight line through 0 (at most 1.9e-3 away from the pure power
    there, and exactly 0 at 0), which keeps the slope bounded. Gradients w.r.t. ``gamma``
    are finite everywhere.

    Args:
        rgb_lin: linear RGB, shape (*, 3, H, W) (any values; clipped first).
        gamma: a float > 0, or a tensor of shape () / (1,) or (*,) per image.

    Returns:
        Gamma-encoded RGB in [0, 1], same shape.

    Example:
        >>> gamma_encode(torch.tensor([0.0, 0.25, 4.0]).reshape(1, 3, 1, 1), 2.0).flatten()
        tensor([0.0000, 0.5000, 1.0000])
    """
    if not isinstance(rgb_lin, Tensor) or not rgb_lin.is_floating_point():
        raise TypeError("rgb_lin must be a floating-point torch.Tensor")
    g = _per_image(gamma, rgb_lin, "gamma")
    if not isinstance(gamma, Tensor) and not float(gamma) > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    inv = 1.0 / g
    # exp(log(x) / gamma) is the power law (3x faster than pow on CPU); the clamp keeps log
    # finite, and the factor min(1, x / eps) turns the curve into the line x * eps**(1/g - 1)
    # below eps. Both clamps also clip to [0, 1].
    power = torch.exp(torch.log(rgb_lin.clamp(_GAMMA_EPS, 1.0)) * inv)
    return power * (rgb_lin * (1.0 / _GAMMA_EPS)).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- camera values


@dataclass(frozen=True)
class CameraParams:
    """The fixed camera values a data model needs.

    Attributes:
        cfa: pattern string of the mosaic's top-left 2x2 cell.
        black_level: black level in DN per position (TL, TR, BL, BR).
        white_level: saturation level in DN.
        wb_gains: white-balance gains (R, G, B); ``(1, 1, 1)`` when unknown.
        ccm: camera-RGB to linear-sRGB matrix, nested tuples (3, 3); identity when unknown.
        gamma: display gamma, the encoding is ``x ** (1 / gamma)``.

    Example:
        >>> CameraParams("RGGB", (32.0,) * 4, 1023.0).ccm[0]
        (1.0, 0.0, 0.0)
    """

    cfa: str
    black_level: tuple[float, float, float, float]
    white_level: float
    wb_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ccm: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    gamma: float = 2.2

    def __post_init__(self):
        object.__setattr__(self, "cfa", _check_cfa(self.cfa))
        black = _floats(self.black_level, "black_level")
        if len(black) == 1:
            black = black * 4
        if len(black) != 4 or min(black) < 0:
            raise ValueError(f"black_level must be 4 values >= 0 (TL, TR, BL, BR), got {self.black_level}")
        object.__setattr__(self, "black_level", tuple(black))
        white = float(self.white_level)
        if not math.isfinite(white) or white <= max(black):
            raise ValueError(f"white_level must be finite and above every black_level {black}, got {white}")
        object.__setattr__(self, "white_level", white)
        gains = _floats(self.wb_gains, "wb_gains")
        if len(gains) != 3:
            raise ValueError(f"wb_gains must have 3 values (R, G, B), got {self.wb_gains}")
        object.__setattr__(self, "wb_gains", tuple(gains))
        rows = tuple(tuple(_floats(r, "ccm")) for r in self.ccm)
        if len(rows) != 3 or any(len(r) != 3 for r in rows):
            raise ValueError(f"ccm must be a 3x3 matrix, got {self.ccm}")
        object.__setattr__(self, "ccm", rows)
        gamma = float(self.gamma)
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a finite number > 0, got {self.gamma}")
        object.__setattr__(self, "gamma", gamma)

    @classmethod
    def from_dataset_camera(cls, camera, gamma: float = 2.2) -> CameraParams:
        """Camera values of a data set (``datasets.DatasetCamera``, or a dict with the same keys).

        Example:
            >>> CameraParams.from_dataset_camera({"cfa": "RGGB", "black_level": 64, "white_level": 1023,
            ...     "wb_gains": (2.0, 1.0, 1.5), "ccm": ((1, 0, 0), (0, 1, 0), (0, 0, 1))}).wb_gains
            (2.0, 1.0, 1.5)
        """
        get = camera.get if isinstance(camera, dict) else lambda k, d=None: getattr(camera, k, d)
        black = get("black_level")
        black = tuple(float(b) for b in np.broadcast_to(np.asarray(black, float), (4,)))
        wb = get("wb_gains")
        ccm = get("ccm")
        return cls(
            get("cfa"),
            black,
            float(get("white_level")),
            (1.0, 1.0, 1.0) if wb is None else tuple(float(g) for g in wb),
            ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)) if ccm is None else tuple(map(tuple, np.asarray(ccm, float))),
            gamma,
        )

    @classmethod
    def from_raw_image(cls, raw_image, gamma: float = 2.2) -> CameraParams:
        """Camera values of a :class:`drifthelpers.raw.RawImage`.

        A missing white balance becomes unit gains and a missing colour matrix the
        identity (the output then stays in camera RGB), as LibRaw does for such files.

        Example:
            >>> import numpy as np
            >>> from drifthelpers.raw import RawImage
            >>> ri = RawImage(np.zeros((4, 4), np.uint16), "GRBG", (0.0,) * 4, 255.0)
            >>> CameraParams.from_raw_image(ri).wb_gains
            (1.0, 1.0, 1.0)
        """
        wb = (1.0, 1.0, 1.0) if raw_image.wb_gains is None else tuple(raw_image.wb_gains)
        ccm = raw_image.ccm
        ccm = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)) if ccm is None else tuple(map(tuple, ccm))
        return cls(raw_image.cfa, tuple(raw_image.black_level), float(raw_image.white_level), wb, ccm, gamma)


def _floats(values, name: str) -> list[float]:
    try:
        out = [float(v) for v in (values.flatten().tolist() if hasattr(values, "flatten") else values)]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {values!r}")
    return out


# --------------------------------------------------------------------------- the twelve static views


def parse_preset(preset: str) -> tuple[str, str, str]:
    """Split a preset label into (demosaic, sharpen, denoise) codes.

    Example:
        >>> parse_preset("ma,u,ga")
        ('ma', 'u', 'ga')
    """
    if not isinstance(preset, str) or preset.replace(" ", "") not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    d, s, n = preset.replace(" ", "").split(",")
    return d, s, n


def describe_presets() -> list[dict]:
    """The twelve static data models in the paper's order, in words.

    Returns:
        One dict per preset: ``index``, ``label``, ``demosaic``, ``sharpen``, ``denoise``.

    Example:
        >>> describe_presets()[5]["label"], describe_presets()[5]["demosaic"]
        ('ma,s,ga', 'malvar2004')
    """
    out = []
    for i, label in enumerate(PRESETS):
        d, s, n = parse_preset(label)
        out.append({"index": i, "label": label, "demosaic": DEMOSAIC_METHODS[d],
                    "sharpen": _SHARPENERS[s], "denoise": _DENOISERS[n]})
    return out


def _check_camera(camera) -> CameraParams:
    if not isinstance(camera, CameraParams):
        raise TypeError(f"camera must be a CameraParams, got {type(camera).__name__}")
    return camera


STAGES: tuple[str, ...] = ("black_level", "demosaic", "white_balance", "colour_matrix", "sharpen", "denoise", "clip",
                           "gamma")


def _chain(raw: Tensor, cfa: str, black: Tensor, white: Tensor, gains: Tensor, ccm: Tensor, gamma,
           demosaic_fn, sharpen_op, denoise_op, return_stages: bool):
    """The data model. ``sharpen_op``/``denoise_op`` act on luma planes (N, 1, H, W).

    Without ``return_stages`` the same arithmetic runs fused: white balance folded into the
    colour matrix (``ccm @ diag(gains)``), luma computed once and both luma filters applied
    to it (the luma weights sum to 1, so the second stage sees exactly the first one's Y),
    and the clip folded into the gamma curve. The staged and fused paths agree to float
    rounding (tested).
    """
    x = subtract_black_level(raw, black, white)
    cam = demosaic_fn(x, cfa)
    if not return_stages:
        m = ccm * gains.unsqueeze(-2)  # ccm @ diag(gains)
        lin, shape = _flat(colour_correct(cam, m))
        y = _luma(lin)
        out = lin + (denoise_op(sharpen_op(y)) - y)
        return gamma_encode(out, gamma).reshape(shape)
    stages: OrderedDict[str, Tensor] = OrderedDict()
    stages["black_level"] = x
    stages["demosaic"] = cam
    x = white_balance(cam, gains)
    stages["white_balance"] = x
    x = colour_correct(x, ccm)
    stages["colour_matrix"] = x
    x = _on_luma(x, sharpen_op)
    stages["sharpen"] = x
    x = _on_luma(x, denoise_op)
    stages["denoise"] = x
    x = x.clamp(0.0, 1.0)
    stages["clip"] = x
    x = gamma_encode(x, gamma)
    stages["gamma"] = x
    return x, stages


class StaticDataModel(nn.Module):
    """One of the twelve static data models (fixed ISP) of the paper.

    Args:
        preset: a label of :data:`PRESETS`, e.g. ``"bi,s,ga"``.
        camera: the camera values (pattern, black/white level, WB, colour matrix, gamma).

    Shapes:
        forward: raw ``(*, 1, H, W)`` in DN -> sRGB-gamma ``(*, 3, H, W)`` in [0, 1].

    Example:
        >>> cam = CameraParams("RGGB", (0.0,) * 4, 1.0)
        >>> StaticDataModel("me,u,me", cam)(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, preset: str, camera: CameraParams):
        super().__init__()
        self.preset = ",".join(parse_preset(preset))
        self.camera = _check_camera(camera)

    def forward(self, raw: Tensor, return_stages: bool = False):
        """Render ``raw`` (DN); with ``return_stages`` also an OrderedDict of every stage's output.

        Camera constants are built in the input's dtype and device on each call.
        """
        return render(raw, self.preset, self.camera, return_stages)

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, cfa={self.camera.cfa!r}"


def _render(raw, preset, camera, black, white, gains, ccm, return_stages):
    d, s, n = parse_preset(preset)
    _check_image(raw, 1, "raw")
    demosaic_fn = _DEMOSAICERS[d]
    sharpen_op = _kernel_op(SHARPEN_KERNEL, raw) if s == "s" else _unsharp_op(1.0, 1.0)
    denoise_op = _median_op(3) if n == "me" else _gauss_op(0.5, _gaussian_size(0.5))
    return _chain(raw, camera.cfa, black, white, gains, ccm, camera.gamma, demosaic_fn, sharpen_op, denoise_op,
                  return_stages)


def render(raw: Tensor, preset: str, camera: CameraParams, return_stages: bool = False):
    """Render a batch of raw mosaics with one static data model.

    Args:
        raw: mosaics in DN, shape (*, 1, H, W), float.
        preset: a label of :data:`PRESETS`.
        camera: camera values.
        return_stages: also return an OrderedDict with every stage's output (keys
            ``black_level, demosaic, white_balance, colour_matrix, sharpen, denoise, clip, gamma``).

    Returns:
        sRGB-gamma images, shape (*, 3, H, W), in [0, 1] (and the stages if asked).

    Example:
        >>> cam = CameraParams("GRBG", (0.0,) * 4, 255.0)
        >>> render(torch.full((4, 1, 16, 16), 63.75), "bi,s,ga", cam)[0, :, 8, 8]  # 1/4 of full scale
        tensor([0.5325, 0.5325, 0.5325])
    """
    camera = _check_camera(camera)
    _check_image(raw, 1, "raw")
    like = raw
    return _render(raw, preset, camera, torch.tensor(camera.black_level, dtype=like.dtype, device=like.device),
                   torch.tensor(camera.white_level, dtype=like.dtype, device=like.device),
                   torch.tensor(camera.wb_gains, dtype=like.dtype, device=like.device),
                   torch.tensor(camera.ccm, dtype=like.dtype, device=like.device), return_stages)


# --------------------------------------------------------------------------- the parametrized data model


def _project_sum_box(w: Tensor, total: Tensor, lo: float, hi: float, iters: int = 60) -> Tensor:
    """Euclidean projection of each row of ``w`` (N, n) onto {sum = total, lo <= w <= hi}.

    The projection is ``clamp(w - tau, lo, hi)`` with ``tau`` found by bisection (the sum is
    monotone in ``tau``).
    """
    dtype = w.dtype
    w = w.double()
    total = total.reshape(-1, 1).to(device=w.device, dtype=torch.float64)
    lower = w.min(dim=-1, keepdim=True).values - hi  # every entry clamps to hi: sum = n * hi >= total
    upper = w.max(dim=-1, keepdim=True).values - lo  # every entry clamps to lo: sum = n * lo <= total
    for _ in range(iters):
        tau = 0.5 * (lower + upper)
        too_big = (w - tau).clamp(lo, hi).sum(dim=-1, keepdim=True) > total
        lower = torch.where(too_big, tau, lower)
        upper = torch.where(too_big, upper, tau)
    return (w - 0.5 * (lower + upper)).clamp(lo, hi).to(dtype)


class ParametrizedDataModel(nn.Module):
    """The differentiable data model: the static chain with learnable camera and filter values.

    Parameter groups (names as in :meth:`param_groups`) and how each stays physical: after
    every optimiser step call :meth:`project_`, which projects each group onto its set in
    :meth:`bounds` (a Euclidean projection; parameters are stored in natural units, so what
    you read is what the model uses).

    * ``black_level`` (4,): fraction of ``white_level`` per position, in [0, 0.5].
    * ``white_balance`` (3,): gains in [0.1, 10] (widened to hold the camera's values).
    * ``colour_matrix`` (3, 3): each row keeps its initial sum (1 for DNG-style matrices, so
      neutral stays neutral); entries in [-4, 4] (widened likewise).
    * ``sharpen`` (3, 3): sums to 1 (flat areas unchanged); entries in [-4, 8].
    * ``denoise`` (5, 5): non-negative and sums to 1 (a weighted mean); init Gaussian sigma 0.5.
    * ``gamma`` (1,): in [1, 4]; init the camera's gamma (2.2).
    * ``demosaic`` (4, 5, 5), only with ``learn_demosaic=True``: the four interpolation kernels
      of a linear demosaicer (G at R/B; R/B at G from row or from column neighbours; R at B and
      B at R), each summing to 1 with entries in [-2, 2]; init bilinear (``"bi"``) or Malvar
      (``"ma"``).

    That is 51 scalars, 151 with the demosaic kernels (the paper's model had 132, with 81
    debayering taps as a 3 -> 3 channel 3x3 convolution of the masked mosaic; the four 5x5
    kernels here cover both bilinear and Malvar initialisations, and "sums to 1" keeps flat
    grey flat).

    Projection rather than reparametrisation keeps values at the edge of their set (a black
    level of 0, a gain of exactly 1) representable and the stored numbers readable; the price
    is one call after each step. The black level is stored as a fraction of the white level so
    that every group has a scale of about 1 for the optimiser; :meth:`state_as_dict` reports it
    in DN too. A camera gain <= 0 (a fitted calibration can hold one) is folded into the
    matching colour-matrix column, which renders identically. Gains and matrix bounds widen
    to hold the camera's own values when those lie outside the defaults.

    At initialisation the model reproduces :class:`StaticDataModel` ``"bi,s,ga"`` (or the view
    of the chosen demosaicer) up to float rounding.

    Args:
        camera: camera values used for initialisation (pattern and white level stay fixed).
        demosaic: ``"bi"``, ``"ma"`` or ``"me"`` (fixed unless ``learn_demosaic``).
        learn_demosaic: learn the demosaicing kernels (linear demosaicers ``"bi"``/``"ma"`` only).

    Example:
        >>> cam = CameraParams("RGGB", (0.0,) * 4, 1.0)
        >>> model = ParametrizedDataModel(cam)
        >>> out, stages = model(torch.rand(1, 1, 8, 8), return_stages=True)
        >>> out.shape, list(stages)[:2]
        (torch.Size([1, 3, 8, 8]), ['black_level', 'demosaic'])
    """

    GROUPS: tuple[str, ...] = ("black_level", "demosaic", "white_balance", "colour_matrix", "sharpen", "denoise",
                               "gamma")

    def __init__(self, camera: CameraParams, demosaic: str = "bi", learn_demosaic: bool = False):
        super().__init__()
        self.camera = _check_camera(camera)
        key = _DEMOSAIC_ALIASES.get(demosaic) if isinstance(demosaic, str) else None
        if key is None:
            raise ValueError(f"demosaic must be one of {sorted(_DEMOSAIC_ALIASES)}, got {demosaic!r}")
        if learn_demosaic and key == "me":
            raise ValueError("learn_demosaic=True needs a linear demosaic ('bi' or 'ma'); 'me' is not linear")
        self.demosaic_method = key
        self.learn_demosaic = bool(learn_demosaic)
        self.cfa = camera.cfa
        self.white_level = float(camera.white_level)

        gains = torch.tensor(camera.wb_gains, dtype=torch.float64)
        ccm = torch.tensor(camera.ccm, dtype=torch.float64)
        if (gains == 0).any():
            raise ValueError(f"wb_gains must be non-zero, got {camera.wb_gains}")
        sign = torch.where(gains < 0, -1.0, 1.0).to(torch.float64)
        gains, ccm = gains.abs(), ccm * sign  # fold negative gains into the matrix columns
        wb_lo, wb_hi = min(0.1, float(gains.min())), max(10.0, float(gains.max()))
        cm_lo, cm_hi = min(-4.0, float(ccm.min())), max(4.0, float(ccm.max()))
        self._bounds = {
            "black_level": (0.0, 0.5), "white_balance": (wb_lo, wb_hi), "colour_matrix": (cm_lo, cm_hi),
            "sharpen": (-4.0, 8.0), "denoise": (0.0, 1.0), "gamma": (1.0, 4.0), "demosaic": (-2.0, 2.0),
        }
        if not 1.0 <= camera.gamma <= 4.0:
            raise ValueError(f"camera.gamma must lie in [1, 4] for the parametrized model, got {camera.gamma}")
        frac = torch.tensor(camera.black_level, dtype=torch.float64) / camera.white_level
        if float(frac.max()) > 0.5:
            raise ValueError(f"black_level must be at most half the white level, got {camera.black_level}")
        self._ccm_row_sums = ccm.sum(dim=1)
        # initial values in float64, so reset_parameters() is exact in any dtype
        self._init = {
            "black_level": frac, "white_balance": gains, "colour_matrix": ccm,
            "sharpen": torch.tensor(SHARPEN_KERNEL, dtype=torch.float64),
            "denoise": _gaussian_kernel(0.5, 5, frac), "gamma": torch.tensor([camera.gamma], dtype=torch.float64),
        }
        if self.learn_demosaic:
            if key == "bi":
                self._init["demosaic"] = F.pad(torch.tensor(_BILINEAR_KERNELS, dtype=torch.float64), (1, 1, 1, 1))
            else:
                self._init["demosaic"] = torch.tensor(_MALVAR_KERNELS, dtype=torch.float64)
        for name in self.GROUPS:
            if name in self._init:
                self.register_parameter(name, nn.Parameter(self._init[name].float()))
            else:
                self.register_parameter(name, None)

    @torch.no_grad()
    def reset_parameters(self) -> ParametrizedDataModel:
        """Set every parameter back to its initial value (exact in the parameters' dtype)."""
        for name, value in self._init.items():
            p = getattr(self, name)
            p.copy_(value.to(p))
        return self

    # -- groups and bounds

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by stage name (``demosaic`` only when learned).

        Example:
            >>> list(ParametrizedDataModel(CameraParams("RGGB", (0.0,) * 4, 1.0)).param_groups())
            ['black_level', 'white_balance', 'colour_matrix', 'sharpen', 'denoise', 'gamma']
        """
        return {name: [getattr(self, name)] for name in self.GROUPS if getattr(self, name) is not None}

    def freeze_all_but(self, *groups: str) -> ParametrizedDataModel:
        """Let only the named groups require gradients; returns ``self``.

        Raises:
            ValueError: a name that is not one of :meth:`param_groups`.
        """
        known = self.param_groups()
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise ValueError(f"groups must be among {list(known)}, got unknown {unknown}")
        for name, params in known.items():
            for p in params:
                p.requires_grad_(name in groups)
        return self

    def bounds(self) -> dict[str, dict]:
        """The set each group is projected onto, as a readable description."""
        b = self._bounds
        out = {
            "black_level": {"lower": b["black_level"][0], "upper": b["black_level"][1],
                            "unit": "fraction of white_level", "white_level": self.white_level},
            "white_balance": {"lower": b["white_balance"][0], "upper": b["white_balance"][1]},
            "colour_matrix": {"lower": b["colour_matrix"][0], "upper": b["colour_matrix"][1],
                              "row_sums": self._ccm_row_sums.tolist()},
            "sharpen": {"lower": b["sharpen"][0], "upper": b["sharpen"][1], "sum": 1.0},
            "denoise": {"lower": b["denoise"][0], "upper": b["denoise"][1], "sum": 1.0},
            "gamma": {"lower": b["gamma"][0], "upper": b["gamma"][1]},
        }
        if self.demosaic is not None:
            out["demosaic"] = {"lower": b["demosaic"][0], "upper": b["demosaic"][1], "sum": 1.0, "per": "kernel"}
        return out

    @torch.no_grad()
    def project_(self) -> ParametrizedDataModel:
        """Project every parameter onto its set (see :meth:`bounds`) in place; returns ``self``.

        Call it after each optimiser step. It is idempotent and leaves values inside their
        sets unchanged (up to float rounding for the sum constraints).
        """
        b = self._bounds
        self.black_level.clamp_(*b["black_level"])
        self.white_balance.clamp_(*b["white_balance"])
        self.gamma.clamp_(*b["gamma"])
        self.colour_matrix.copy_(_project_sum_box(self.colour_matrix, self._ccm_row_sums, *b["colour_matrix"]))
        one = self.sharpen.new_ones(1)
        self.sharpen.copy_(_project_sum_box(self.sharpen.reshape(1, -1), one, *b["sharpen"]).reshape(3, 3))
        self.denoise.copy_(_project_sum_box(self.denoise.reshape(1, -1), one, *b["denoise"]).reshape(5, 5))
        if self.demosaic is not None:
            k = self.demosaic
            ones = k.new_ones(k.shape[0])
            k.copy_(_project_sum_box(k.reshape(k.shape[0], -1), ones, *b["demosaic"]).reshape(k.shape))
        return self

    # -- forward

    def forward(self, raw: Tensor, return_stages: bool = False):
        """Render raw mosaics (DN) of shape (*, 1, H, W) to sRGB-gamma (*, 3, H, W) in [0, 1].

        With ``return_stages`` also returns an OrderedDict of every stage's output, keyed by
        stage (``black_level, demosaic, white_balance, colour_matrix, sharpen, denoise, clip,
        gamma``).
        """
        _check_image(raw, 1, "raw")
        white = torch.tensor(self.white_level, dtype=raw.dtype, device=raw.device)
        black = self.black_level.to(raw.dtype) * white
        if self.demosaic is not None:
            kernels = self.demosaic

            def demosaic_fn(x: Tensor, cfa: str) -> Tensor:
                return _demosaic_linear(x, cfa, kernels)
        else:
            demosaic_fn = _DEMOSAICERS[self.demosaic_method]
        sharpen_k, denoise_k = self.sharpen.to(raw.dtype), self.denoise.to(raw.dtype)
        return _chain(raw, self.cfa, black, white, self.white_balance.to(raw.dtype),
                      self.colour_matrix.to(raw.dtype), self.gamma.to(raw.dtype),
                      demosaic_fn, _kernel_op(sharpen_k, raw), _kernel_op(denoise_k, raw),
                      return_stages)

    def state_as_dict(self) -> dict:
        """Current values as plain Python numbers (black level also in DN)."""
        out = {name: p.detach().cpu().tolist() for name, (p,) in self.param_groups().items()}
        out["black_level_dn"] = (self.black_level.detach().cpu().double() * self.white_level).tolist()
        out["gamma"] = float(self.gamma.detach())
        return out

    def extra_repr(self) -> str:
        return f"cfa={self.cfa!r}, demosaic={self.demosaic_method!r}, learn_demosaic={self.learn_demosaic}"


def _find_camera_json(path: Path) -> Path | None:
    for parent in path.resolve().parents:
        candidate = parent / "camera.json"
        if candidate.is_file():
            return candidate
    return None


def load_raw_file(path) -> tuple[Tensor, CameraParams, float]:
    """A raw file as ``(raw (1, 1, H, W) float32 DN, camera, pixel_aspect)``.

    Camera raw files (DNG, CR2, NEF, ...) are read with :func:`drifthelpers.raw.read_raw`.
    A plain single-channel TIFF mosaic from a data set (mini or Zenodo layout) takes its
    camera values from the ``camera.json`` of the data set folder it lies in.
    """
    import json

    from .raw import NotARawFileError, RawFileNotFoundError, read_raw

    path = Path(path)
    if not path.is_file():
        raise RawFileNotFoundError(path, "no such file")
    try:
        image = read_raw(path)
        return image.to_tensor()[None], CameraParams.from_raw_image(image), image.pixel_aspect
    except NotARawFileError:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise
    import tifffile

    mosaic = tifffile.imread(path)
    if mosaic.ndim != 2:
        raise NotARawFileError(path, f"a TIFF with shape {mosaic.shape} is not a single-channel Bayer mosaic")
    camera_json = _find_camera_json(path)
    if camera_json is None:
        raise NotARawFileError(
            path, "a plain TIFF mosaic needs the camera.json of its data set folder (none found above the file)"
        )
    camera = CameraParams.from_dataset_camera(json.loads(camera_json.read_text()))
    return torch.from_numpy(mosaic.astype(np.float32))[None, None], camera, 1.0


def render_file(path, preset: str = "bi,s,ga", output=None) -> Path:
    """Render a raw file through a static preset and save it as an 8-bit PNG (or 16-bit TIFF).

    Non-square pixels are corrected by resampling the width (the mosaic itself is never
    resampled). Used by ``python -m drifthelpers render``.

    Returns:
        The written path.
    """
    parse_preset(preset)
    if output is None:
        raise ValueError("output path is required")
    output = Path(output)
    if output.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise ValueError(f"output must end in .png, .tif or .tiff, got {output.name!r}")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"{output}: folder {output.parent} does not exist")
    raw, camera, aspect = load_raw_file(path)
    with torch.no_grad():
        rgb = render(raw, preset, camera)[0]
    if aspect != 1.0:
        h, w = rgb.shape[-2:]
        rgb = torch.nn.functional.interpolate(rgb[None], size=(h, round(w * aspect)), mode="bilinear",
                                              align_corners=False)[0].clamp(0, 1)
    hwc = rgb.permute(1, 2, 0).numpy()
    tmp = output.with_name(f".{output.name}.part")
    try:
        if output.suffix.lower() == ".png":
            from PIL import Image

            Image.fromarray((hwc * 255 + 0.5).astype(np.uint8)).save(tmp, format="PNG")
        else:
            import tifffile

            tifffile.imwrite(tmp, (hwc * 65535 + 0.5).astype(np.uint16), photometric="rgb")
        tmp.replace(output)
    finally:
        if tmp.exists():
            tmp.unlink()
    return output
