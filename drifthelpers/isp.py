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

Speed (``benchmarks/bench_isp.py`` measures it). A static preset rendered in float32 on the
CPU without autograd (the way experiments render their views) runs the fused compiled kernels
of :mod:`drifthelpers.fastisp`: the same chain in about ten passes over the pixels, 2-4x faster
than the eager torch path, equal to float32 rounding (tested). Everything else (float64, a GPU,
gradients, stage outputs, per-image values, odd or tiny sizes) runs the torch path, which is
the reference. Its own speed-ups below compute the same values as the plain formulation, to
float rounding, and are tested against it:

* Linear demosaicing (bilinear, Malvar) evaluates each missing colour only at its own sites,
  as sums of stride-2 views of the reflect-padded mosaic written straight into the output's
  sites (no ``pixel_unshuffle``/``stack``/``pixel_shuffle`` copies), with a hand-written
  adjoint as backward (:class:`_PlaneDemosaic`); at G sites Malvar's two estimates share
  their centre and diagonal taps, summed once. Without autograd the black-level
  normalisation is folded into the taps (one pass over the mosaic less).
* Menon's demosaicer, without autograd and for even sizes, evaluates every interpolation after
  the direction decision only at the sites it sets, from strided views of reflect-padded
  full-resolution inputs (:func:`_menon_on_sites`): about 1.8x faster, same arithmetic.
* The Gaussian windows (denoiser, unsharp mask) are separable row and column passes of
  shifted-view sums (:func:`_gaussian_blur`; faster than kornia's ``gaussian_blur2d`` here,
  same weights), and accumulations are in-place ``add_`` even under autograd (addition saves
  nothing for its backward).
* A single (3, 3) colour matrix is nine plane-wise multiply-adds (:func:`_mix_planes`), with
  a matching custom backward; the luma is three multiply-adds.
* Without autograd the tail of the chain runs in place (:func:`_fused_tail_`: luma change,
  gamma curve) and the 3x3 median writes into a few reused buffers (:func:`_median3x3_`).
* ``gamma_encode`` has a hand-written backward (:class:`_GammaEncode`), equal to autograd's
  through the formula but in fewer passes and without boolean masks; with the custom
  backwards of the colour matrix and of linear demosaicing it brings the parametrized
  model's forward + backward from about 3.5x to under 3x its forward.
* Large frames are rendered in overlapping bands of rows that fit the CPU caches
  (:func:`_render_in_bands`), bit-identical to rendering them whole.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drifthelpers import fastisp
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
    "parametrized_data_model",
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
_UNSHARP_RADIUS, _UNSHARP_AMOUNT = 1.0, 1.0  # the static sharpener 'u'
_DENOISE_SIGMA = 0.5  # the static denoiser 'ga'

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


def _grad_needed(*tensors) -> bool:
    """Whether autograd records operations on any of ``tensors``.

    When it does not, the fused paths may write into fresh intermediate tensors in place and
    into ``out=`` buffers (fewer allocations and memory passes, same arithmetic).
    """
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


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
    """Per position (TL, TR, BL, BR) the (R, G, B) planes (N, H/2, W/2) -> (*, 3, H, W).

    Without autograd each plane is copied straight into its strided sites of the output (one
    pass, about twice as fast as ``stack`` + ``pixel_shuffle``); with autograd the stacked form
    is kept, whose backward is a single ``pixel_unshuffle``.
    """
    n, h2, w2 = phases[0][0].shape
    if not _grad_needed(*(t for planes in phases for t in planes)):
        out = phases[0][0].new_empty((n, 3, h2, 2, w2, 2))
        for pos, planes in enumerate(phases):
            py, px = divmod(pos, 2)
            for c in range(3):
                out[:, c, :, py, :, px].copy_(planes[c])
        return out.reshape(shape[:-3] + (3, 2 * h2, 2 * w2))
    cells = torch.stack([phases[pos][c] for c in range(3) for pos in range(4)], dim=1)  # colour * 4 + position
    return F.pixel_shuffle(cells, 2).reshape(shape[:-3] + (3, 2 * h2, 2 * w2))


def _taps(kernel) -> dict[tuple[int, int], float]:
    c = len(kernel) // 2
    return {(i - c, j - c): float(v) for i, row in enumerate(kernel) for j, v in enumerate(row) if v}


def _demosaic_fixed(raw: Tensor, cfa: str, kernels: tuple, affine: tuple | None = None) -> Tensor:
    """:func:`_demosaic_linear` for constant kernels, on the four half-resolution planes.

    The mosaic is reflect padded; each needed value is then a weighted sum of shifted views of
    its four CFA planes, evaluated only at its own sites, which on CPU beats a convolution for
    these sparse 4- to 13-tap kernels (and its backward pass touches quarter-size planes only).
    ``affine``, four scales and four offsets by cell position, is a black-level normalisation
    folded into the taps (see :func:`_chain`); even H and W only.
    """
    flat, shape = _flat(raw)
    h, w = flat.shape[-2:]
    if h % 2 or w % 2:
        return _demosaic_linear(raw, cfa, torch.tensor(kernels, dtype=raw.dtype, device=raw.device))
    r = len(kernels[0]) // 2
    pad = 2 * ((r + 1) // 2)  # even, so the padded mosaic keeps the pattern
    plan = _phase_plan(cfa, kernels, pad // 2)
    padded = _pad_reflect(flat, pad, pad)
    return _PlaneDemosaic.apply(padded, plan, h // 2, w // 2, affine).reshape(shape[:-3] + (3, h, w))


@lru_cache(maxsize=None)
def _phase_plan(cfa: str, kernels: tuple, o: int) -> tuple[tuple, tuple]:
    """The taps of every output of a linear demosaicer with constant kernels, on the four
    half-resolution planes (plane = 2 * row parity + column parity) of a mosaic padded by
    ``2 * o``, as ``(steps, outputs)``.

    ``outputs``: per (cell position, colour) its taps ``(plane, row, column, weight)`` (the
    measured sample is one tap of weight 1). ``steps``: the same sums in fewer operations,
    each step ``(py, px, colour, base, taps)`` setting the output to
    ``output[base] + sum(taps)`` (``base`` None: just the sum; ``base == colour``: add to its
    current value). Where the two colours estimated at a site share taps of equal weights
    (Malvar's centre and diagonal taps at G sites), that common part is summed once, into the
    first, and copied into the second. (Taps shared with other weight ratios, as at R and B
    sites, are left alone: scaling the shared sum would add a rounding.)
    """
    taps = [_taps(k) for k in kernels]
    outputs, steps = [], []
    for pos, sources in enumerate(_phase_sources(cfa)):
        py, px = divmod(pos, 2)
        estimated = []
        for colour, src in enumerate(sources):
            offsets = {(0, 0): 1.0} if src == 0 else taps[src - 1]
            entry = {}
            for (dy, dx), wt in offsets.items():
                yy, xx = py + dy, px + dx
                entry[(2 * (yy % 2) + xx % 2, o + yy // 2, o + xx // 2)] = wt
            outputs.append((py, px, colour, tuple(k + (w,) for k, w in entry.items())))
            if src == 0:
                steps.append((py, px, colour, None, outputs[-1][3]))
            else:
                estimated.append((colour, entry))
        (colour_a, a), (colour_b, b) = estimated
        common = [t for t in a if b.get(t) == a[t]]
        if len(common) < 2:
            steps.append((py, px, colour_a, None, tuple(t + (w,) for t, w in a.items())))
            steps.append((py, px, colour_b, None, tuple(t + (w,) for t, w in b.items())))
            continue
        steps.append((py, px, colour_a, None, tuple(t + (a[t],) for t in common)))
        steps.append((py, px, colour_b, colour_a, tuple(t + (w,) for t, w in b.items() if t not in common)))
        steps.append((py, px, colour_a, colour_a, tuple(t + (w,) for t, w in a.items() if t not in common)))
    return tuple(steps), tuple(outputs)


class _PlaneDemosaic(torch.autograd.Function):
    """Linear demosaicing with constant kernels on the four CFA planes (see :func:`_demosaic_fixed`).

    Forward: each output plane (cell position x colour) is a weighted sum of shifted views of
    the planes (following the steps of :func:`_phase_plan`), read as stride-2 views of the
    padded (N, 1, H', W') mosaic (no ``pixel_unshuffle`` copy) and accumulated straight into
    its strided sites of the (N, 3, H, W) output (no ``stack``/``pixel_shuffle`` pass).
    ``affine`` (scales and offsets by cell position) folds a black-level normalisation into the
    taps: ``sum_k w_k (s_k raw_k + o_k) = sum_k (w_k s_k) raw_k + sum_k w_k o_k``. Backward: the
    adjoint, the same views scatter-added into one zero gradient (autograd's own backward would
    allocate a full-size zero tensor per tap for the slice and select views).
    """

    @staticmethod
    def forward(ctx, padded: Tensor, plan: tuple, h2: int, w2: int, affine: tuple | None = None) -> Tensor:
        steps, ctx.outputs = plan
        ctx.padded_shape = padded.shape
        plane = _plane_view(padded.contiguous(), h2, w2)
        out = padded.new_empty((padded.shape[0], 3, h2, 2, w2, 2))
        full_const: dict[tuple, float] = {}  # with affine: sum_k w_k o_k of each output
        if affine is not None:
            scale, offset = affine
            full_const = {(py, px, c): sum(wt * offset[ch] for ch, _, _, wt in entry)
                          for py, px, c, entry in ctx.outputs}
        for py, px, colour, base, entry in steps:
            site = out[:, colour, :, py, :, px]
            if affine is not None:
                entry = tuple((ch, y0, x0, wt * scale[ch]) for ch, y0, x0, wt in entry)
            parts = [(plane(ch, y0, x0), wt) for ch, y0, x0, wt in entry]
            if base == colour:  # add the rest to the shared part (whose step set the whole constant)
                for part, wt in parts:
                    site.add_(part, alpha=wt)
                continue
            const = full_const.get((py, px, colour), 0.0)
            if base is not None:  # the shared part (+ the base's constant) + the rest
                const -= full_const.get((py, px, base), 0.0)
                (source, alpha), rest = (out[:, base, :, py, :, px], 1.0), parts
            else:
                (source, alpha), rest = parts[0], parts[1:]
            if const:
                torch.add(padded.new_full((), const), source, alpha=alpha, out=site)
            elif alpha == 1.0:
                site.copy_(source)
            else:
                torch.mul(source, alpha, out=site)
            for part, wt in rest:
                site.add_(part, alpha=wt)
        return out.reshape(padded.shape[0], 3, 2 * h2, 2 * w2)

    @staticmethod
    def backward(ctx, grad: Tensor):
        n, _, h, w = grad.shape
        h2, w2 = h // 2, w // 2
        grad6 = grad.reshape(n, 3, h2, 2, w2, 2)
        grad_padded = grad.new_zeros(ctx.padded_shape)
        plane = _plane_view(grad_padded, h2, w2)
        for py, px, colour, entry in ctx.outputs:
            g = grad6[:, colour, :, py, :, px]
            for ch, y0, x0, wt in entry:
                plane(ch, y0, x0).add_(g, alpha=wt)
        return grad_padded, None, None, None, None


def _plane_view(mosaic: Tensor, h2: int, w2: int):
    """For a contiguous (N, 1, H, W) mosaic, even H and W: ``view(plane, y0, x0)``, the
    (N, h2, w2) window at (y0, x0) of CFA plane ``plane`` (= 2 * row parity + column parity),
    as a single strided view (cheaper to build than chained indexing)."""
    n, _, h, w = mosaic.shape
    size, stride, base = (n, h2, w2), (mosaic.stride(0), 2 * w, 2), mosaic.storage_offset()

    def view(plane: int, y0: int, x0: int) -> Tensor:
        return mosaic.as_strided(size, stride, base + (2 * y0 + plane // 2) * w + 2 * x0 + plane % 2)

    return view


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
        out = part * wt if out is None else out.add_(part, alpha=wt)  # add's backward needs no saved values
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
    if not _grad_needed(x) and h % 2 == 0 and w % 2 == 0 and h > 2 and w > 2:
        return _menon_on_sites(x, cfa, refining_step).reshape(shape[:-3] + (3, h, w))
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
    d_h = _abs_diff_ahead(c_h, vertical=False)  # |C(i, j) - C(i, j + 2)|
    d_v = _abs_diff_ahead(c_v, vertical=True)
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


def _sites_at(t: Tensor, pad: int, pos: int, dy: int = 0, dx: int = 0) -> Tensor:
    """Strided view (N, C, H/2, W/2) of ``t`` (N, C, H + 2 pad, W + 2 pad), padded by ``pad``:
    the samples at offset (dy, dx) from every site of one position of the 2x2 cell."""
    py, px = divmod(pos, 2)
    h, w = t.shape[-2] - 2 * pad, t.shape[-1] - 2 * pad
    y0, x0 = pad + py + dy, pad + px + dx
    return t[..., y0 : y0 + h : 2, x0 : x0 + w : 2]


def _line_at(padded: Tensor, pad: int, pos: int, taps: Sequence[float], vertical: bool,
             out: Tensor | None = None) -> Tensor:
    """:func:`_line` evaluated only at the sites of cell position ``pos``, from the reflect
    padded input (same taps in the same order); optionally written into ``out``."""
    c = len(taps) // 2
    first = True
    for i, wt in enumerate(taps):
        if not wt:
            continue
        part = _sites_at(padded, pad, pos, i - c, 0) if vertical else _sites_at(padded, pad, pos, 0, i - c)
        if first:
            out = part * wt if out is None else torch.mul(part, wt, out=out)
            first = False
        else:
            out.add_(part, alpha=wt)
    return out


def _padded_difference(a: Tensor, b: Tensor, pad: int = 1) -> Tensor:
    """``_pad_reflect(a - b, pad, pad)`` written straight into the padded buffer (no copy of
    the difference), the border then filled by reflection like ``F.pad(mode="reflect")``."""
    h, w = a.shape[-2:]
    _require_size(a, pad, pad)
    out = a.new_empty(a.shape[:-2] + (h + 2 * pad, w + 2 * pad))
    torch.sub(a, b, out=out[..., pad : pad + h, pad : pad + w])
    for k in range(1, pad + 1):  # rows first, then whole columns (which fills the corners)
        out[..., pad - k, pad : pad + w] = out[..., pad + k, pad : pad + w]
        out[..., pad + h - 1 + k, pad : pad + w] = out[..., pad + h - 1 - k, pad : pad + w]
    for k in range(1, pad + 1):
        out[..., :, pad - k] = out[..., :, pad + k]
        out[..., :, pad + w - 1 + k] = out[..., :, pad + w - 1 - k]
    return out


def _menon_on_sites(x: Tensor, cfa: str, refining_step: bool) -> Tensor:
    """:func:`demosaic_menon2007` without autograd for even H and W (N, 1, H, W) -> (N, 3, H, W).

    The same arithmetic, but every interpolation after the direction decision is evaluated
    only at the sites whose value it sets (a quarter of the pixels), through strided views
    of the reflect-padded full-resolution inputs (so the borders are the same), and written
    in place into the output. Tested equal to the general path to float rounding.
    """
    colours = cfa_channel_indices(cfa)
    r_pos, b_pos = colours.index(0), colours.index(2)
    gr_pos, gb_pos = r_pos ^ 1, b_pos ^ 1  # the G site in an R row, in a B row
    n, _, h, w = x.shape
    taps5, third, half = (-0.25, 0.5, 0.5, 0.5, -0.25), (1 / 3, 1 / 3, 1 / 3), (0.5, 0.0, 0.5)
    at = _sites_at

    # 1. directional green at R and B sites (G sites keep the mosaic)
    xp = _pad_reflect(x, 2, 2)
    g_h, g_v = x.clone(), x.clone()
    for pos in (r_pos, b_pos):
        _line_at(xp, 2, pos, taps5, False, out=at(g_h, 0, pos))
        _line_at(xp, 2, pos, taps5, True, out=at(g_v, 0, pos))

    # 2. decision (full resolution, as in the general path)
    d_h = _abs_diff_ahead(x - g_h, vertical=False)
    d_v = _abs_diff_ahead(x - g_v, vertical=True)
    horizontal = _menon_window(d_v, vertical=True) >= _menon_window(d_h, vertical=False)
    out = x.new_zeros((n, 3, h, w))
    r, g, b = out[:, 0:1], out[:, 1:2], out[:, 2:3]
    torch.where(horizontal, g_h, g_v, out=g)

    # 3. R and B at G sites along the row / column of their neighbours, then R at B and B at R
    at(r, 0, r_pos).copy_(at(x, 0, r_pos))
    at(b, 0, b_pos).copy_(at(x, 0, b_pos))
    r_diff, b_diff = _padded_difference(r, g), _padded_difference(b, g)
    for dst, diff, pos, vertical in ((r, r_diff, gr_pos, False), (r, r_diff, gb_pos, True),
                                     (b, b_diff, gr_pos, True), (b, b_diff, gb_pos, False)):
        _line_at(diff, 1, pos, half, vertical, out=at(dst, 0, pos)).add_(at(g, 0, pos))
    rb = _padded_difference(r, b)  # (B - R is its exact negative)
    for pos, sign, dst, other in ((b_pos, 1.0, r, b), (r_pos, -1.0, b, r)):
        along = torch.where(at(horizontal, 0, pos), _line_at(rb, 1, pos, half, False),
                            _line_at(rb, 1, pos, half, True))
        torch.add(at(other, 0, pos), along, alpha=sign, out=at(dst, 0, pos))

    if refining_step:
        # green at R and B sites from the smoothed colour difference along the chosen direction
        r_diff, b_diff = _padded_difference(r, g), _padded_difference(b, g)
        for pos, own, diff in ((r_pos, r, r_diff), (b_pos, b, b_diff)):
            along = torch.where(at(horizontal, 0, pos), _line_at(diff, 1, pos, third, False),
                                _line_at(diff, 1, pos, third, True))
            torch.sub(at(own, 0, pos), along, out=at(g, 0, pos))
        # R and B at G sites from the neighbouring colour differences
        r_diff, b_diff = _padded_difference(r, g), _padded_difference(b, g)
        for dst, diff, pos, vertical in ((r, r_diff, gr_pos, False), (r, r_diff, gb_pos, True),
                                         (b, b_diff, gb_pos, False), (b, b_diff, gr_pos, True)):
            torch.add(at(g, 0, pos), _line_at(diff, 1, pos, half, vertical), out=at(dst, 0, pos))
        # R at B sites and B at R sites from the smoothed R-B difference
        rb = _padded_difference(r, b)
        for pos, sign, dst, other in ((b_pos, 1.0, r, b), (r_pos, -1.0, b, r)):
            along = torch.where(at(horizontal, 0, pos), _line_at(rb, 1, pos, third, False),
                                _line_at(rb, 1, pos, third, True))
            torch.add(at(other, 0, pos), along, alpha=sign, out=at(dst, 0, pos))
    return out


def _abs_diff_ahead(c: Tensor, vertical: bool) -> Tensor:
    """``|C(i, j) - C(i, j + 2)|`` (or ``C(i + 2, j)``), reflect borders: the last two columns
    (rows) compare with ``C(W - 2)`` and ``C(W - 3)``. Without autograd no padded copy is made."""
    dim = -2 if vertical else -1
    size = c.shape[dim]
    if _grad_needed(c) or size < 3:
        pad = (0, 2, 0, 0) if not vertical else (0, 0, 0, 2)
        _require_size(c, *((2, 0) if vertical else (0, 2)))
        ahead = F.pad(c, pad, mode="reflect").narrow(dim, 2, size)
        return (c - ahead).abs()
    out = torch.empty_like(c)
    torch.sub(c.narrow(dim, 0, size - 2), c.narrow(dim, 2, size - 2), out=out.narrow(dim, 0, size - 2))
    torch.sub(c.narrow(dim, size - 2, 2), c.narrow(dim, size - 3, 2).flip(dim), out=out.narrow(dim, size - 2, 2))
    return out.abs_()


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
_FIXED_KERNELS = {demosaic_bilinear: _BILINEAR_KERNELS, demosaic_malvar2004: _MALVAR_KERNELS}
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
    if m.dim() == 2:
        return _ColourMix.apply(rgb, m)
    return torch.einsum("...ij,...jhw->...ihw", m, rgb)


def _mix_planes(rgb: Tensor, rows: list[list[float]]) -> Tensor:
    """``out_i = sum_j rows[i][j] * rgb_j`` for (*, 3, H, W) as nine plane-wise multiply-adds
    into one output, about 2.5x faster on CPU than ``einsum``'s batched matmul (inner dim 3)."""
    out = torch.empty_like(rgb)
    planes = rgb.unbind(-3)
    for i, row in enumerate(rows):
        plane = out.select(-3, i)
        torch.mul(planes[0], row[0], out=plane)
        plane.add_(planes[1], alpha=row[1]).add_(planes[2], alpha=row[2])
    return out


class _ColourMix(torch.autograd.Function):
    """A single (3, 3) colour matrix on (*, 3, H, W): :func:`_mix_planes` forward; backward
    ``grad_rgb = m^T grad`` the same way and ``grad_m`` as one (3, 3) reduction (a matmul
    over all pixels)."""

    @staticmethod
    def forward(ctx, rgb: Tensor, m: Tensor) -> Tensor:
        ctx.save_for_backward(rgb, m)
        return _mix_planes(rgb, m.tolist())

    @staticmethod
    def backward(ctx, grad: Tensor):
        rgb, m = ctx.saved_tensors
        grad_rgb = grad_m = None
        if ctx.needs_input_grad[0]:
            grad_rgb = _mix_planes(grad, m.T.tolist())
        if ctx.needs_input_grad[1]:
            g = grad.reshape(-1, 3, grad.shape[-2] * grad.shape[-1])
            x = rgb.expand_as(grad).reshape(-1, 3, grad.shape[-2] * grad.shape[-1])
            grad_m = torch.bmm(g, x.transpose(1, 2)).sum(0)
        return grad_rgb, grad_m


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
    r, g, b = rgb.split(1, dim=1)
    # three fused multiply-adds on the planes: half the memory traffic of (rgb * w).sum(1)
    return (r * _LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2])


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
        if isinstance(amt, Tensor):
            return y + amt * (y - _gaussian_blur(y, radius, size))
        # a constant amount: (1 + a) y - a G y, the blur's column pass weighted by -a and
        # accumulated onto (1 + a) y (two passes fewer than forming y - G y)
        taps, c = _gaussian_taps(radius, size), size // 2
        rows = _shifted_sum(y, {(0, i - c): t for i, t in enumerate(taps)})
        return _shifted_sum(rows, {(i - c, 0): -amt * t for i, t in enumerate(taps)}).add_(y, alpha=1.0 + amt)

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
    p = _pad_reflect(y, 1, 1)
    a, b, c = p[..., :-2, :], p[..., 1:-1, :], p[..., 2:, :]  # the three rows of each column
    if not _grad_needed(y):
        return _median3x3_(a, b, c)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    mid = torch.maximum(lo, torch.minimum(hi, c))
    lo, hi = torch.minimum(lo, c), torch.maximum(hi, c)
    lo = torch.maximum(torch.maximum(lo[..., :-2], lo[..., 1:-1]), lo[..., 2:])
    hi = torch.minimum(torch.minimum(hi[..., :-2], hi[..., 1:-1]), hi[..., 2:])
    m0, m1, m2 = mid[..., :-2], mid[..., 1:-1], mid[..., 2:]
    mid = torch.maximum(torch.minimum(m0, m1), torch.minimum(torch.maximum(m0, m1), m2))
    return torch.maximum(torch.minimum(lo, mid), torch.minimum(torch.maximum(lo, mid), hi))


def _median3x3_(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """:func:`_median3x3` from the three row views of the padded image, without autograd: the
    same 18 min/max operations, written into five buffers (``out=``) instead of 18 new tensors."""
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    mid = torch.minimum(hi, c)
    torch.maximum(lo, mid, out=mid)
    torch.minimum(lo, c, out=lo)
    torch.maximum(hi, c, out=hi)
    lo3 = torch.maximum(lo[..., :-2], lo[..., 1:-1])
    torch.maximum(lo3, lo[..., 2:], out=lo3)
    hi3 = torch.minimum(hi[..., :-2], hi[..., 1:-1])
    torch.minimum(hi3, hi[..., 2:], out=hi3)
    m0, m1, m2 = mid[..., :-2], mid[..., 1:-1], mid[..., 2:]
    low, high = torch.minimum(m0, m1), torch.maximum(m0, m1)
    torch.minimum(high, m2, out=high)
    torch.maximum(low, high, out=low)  # med3 of the column medians
    torch.maximum(lo3, low, out=high)
    torch.minimum(high, hi3, out=high)  # min(max(lo, mid), hi)
    torch.minimum(lo3, low, out=lo3)
    return torch.maximum(lo3, high, out=high)


def denoise_gaussian(rgb: Tensor, sigma: float = 0.5, kernel_size: int | None = None) -> Tensor:
    """Gaussian blur of the luma (paper label ``ga``), as :func:`kornia.filters.gaussian_blur2d`.

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
        return _gaussian_blur(y, sigma, size)

    return op


@lru_cache(maxsize=None)
def _gaussian_taps(sigma: float, size: int) -> tuple[float, ...]:
    """Normalised 1-D Gaussian weights of odd length ``size`` (kornia's ``get_gaussian_kernel1d``)."""
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return tuple((g / g.sum()).tolist())


def _gaussian_blur(y: Tensor, sigma: float, size: int) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W), reflect borders: a row pass, then a column pass.

    The same definition as :func:`kornia.filters.gaussian_blur2d` (tested equal to float
    rounding), computed as two sums of shifted views (:func:`_shifted_sum`), which on CPU is
    about 1.5x faster than kornia's implementation for these 5- and 9-tap windows.
    """
    taps = _gaussian_taps(sigma, size)
    c = size // 2
    rows = _shifted_sum(y, {(0, i - c): t for i, t in enumerate(taps)})
    return _shifted_sum(rows, {(i - c, 0): t for i, t in enumerate(taps)})


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
    if _grad_needed(rgb_lin, inv):
        return _GammaEncode.apply(rgb_lin, inv)
    power = torch.exp(torch.log(rgb_lin.clamp(_GAMMA_EPS, 1.0)) * inv)
    return power * (rgb_lin * (1.0 / _GAMMA_EPS)).clamp(0.0, 1.0)


class _GammaEncode(torch.autograd.Function):
    """:func:`gamma_encode`'s formula with a hand-written backward.

    The derivative is the one autograd takes through the composite (tested equal, the
    clamps' ends included, where autograd passes no gradient), but computed from saved
    forward values in fewer and cheaper passes: ``d out / d x`` is
    ``toe * power / gamma / xc`` on ``(eps, 1)`` plus ``power / eps`` on ``(0, eps)``, each
    masked by one fused ``hardtanh_backward`` (the backward of a clamp, without the boolean
    masks and ``where`` of autograd's), and ``d out / d (1/gamma) = out * log(xc)``.
    """

    @staticmethod
    def forward(ctx, rgb_lin: Tensor, inv: Tensor) -> Tensor:
        xc = rgb_lin.clamp(_GAMMA_EPS, 1.0)
        log_xc = torch.log(xc)
        power = torch.exp(log_xc * inv)
        scaled = rgb_lin * (1.0 / _GAMMA_EPS)
        out = power * scaled.clamp(0.0, 1.0)
        ctx.save_for_backward(rgb_lin, xc, log_xc, power, scaled, out, inv)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        rgb_lin, xc, log_xc, power, scaled, out, inv = ctx.saved_tensors
        grad_x = grad_inv = None
        grad_out = grad * out
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.hardtanh_backward((grad_out * inv).div_(xc), rgb_lin, _GAMMA_EPS, 1.0)
            grad_toe = (grad * power).mul_(1.0 / _GAMMA_EPS)
            grad_x.add_(torch.ops.aten.hardtanh_backward(grad_toe, scaled, 0.0, 1.0))
        if ctx.needs_input_grad[1]:
            if inv.numel() == 1:
                grad_inv = torch.vdot(grad_out.reshape(-1), log_xc.reshape(-1)).reshape(inv.shape)
            else:
                grad_inv = grad_out.mul_(log_xc).sum_to_size(inv.shape)
        return grad_x, grad_inv


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
    kernels = _FIXED_KERNELS.get(demosaic_fn)
    if (not return_stages and kernels is not None and raw.shape[-2] % 2 == 0 and raw.shape[-1] % 2 == 0
            and black.dim() <= 1 and white.dim() <= 1 and not _grad_needed(raw, black, white)):
        # black level folded into the demosaicing taps: one pass over the mosaic less
        scale = 1.0 / (white - black).expand(4)
        affine = (scale.tolist(), (-black.expand(4) * scale).tolist())
        cam = _demosaic_fixed(raw, cfa, kernels, affine)
    else:
        x = subtract_black_level(raw, black, white)
        cam = demosaic_fn(x, cfa)
    if not return_stages:
        m = ccm * gains.unsqueeze(-2)  # ccm @ diag(gains)
        if not _grad_needed(cam, m, gamma):
            return _fused_tail_(cam, m, sharpen_op, denoise_op, gamma)
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


def _fused_tail_(cam: Tensor, m: Tensor, sharpen_op, denoise_op, gamma) -> Tensor:
    """The fused chain after demosaicing, without autograd: colour matrix ``m`` (white balance
    folded in), both luma filters, clip and gamma, written into fresh tensors in place.

    Same arithmetic as the autograd path of :func:`_chain` (float rounding aside): a constant
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


def _gamma_encode_(rgb_lin: Tensor, gamma) -> Tensor:
    """:func:`gamma_encode` in place on a fresh tensor, for a single gamma and no autograd.

    Same formula and operations, written as one clamped copy and six in-place passes (one
    allocation instead of four). A per-image gamma falls back to :func:`gamma_encode`.
    """
    if isinstance(gamma, Tensor):
        if gamma.numel() != 1:
            return gamma_encode(rgb_lin, gamma)
        gamma = float(gamma)
    inv = 1.0 / gamma
    power = rgb_lin.clamp(_GAMMA_EPS, 1.0).log_().mul_(inv).exp_()
    toe = rgb_lin.mul_(1.0 / _GAMMA_EPS).clamp_(0.0, 1.0)  # min(1, x / eps), clipped at 0
    return power.mul_(toe)


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


# A large frame is rendered in bands of about this many pixels (see _render_in_bands), and
# the reach of each stage in pixels bounds the halo a band needs (Menon's: its chain of
# 5- and 3-tap filters and 5x5 windows, 11 rows, rounded up).
_BAND_PIXELS = 1 << 19
_REACH = {"bi": 1, "ma": 2, "me": 12, "s": 1, "u": 4, "ga": 2, "me_denoise": 1}


def _render_in_bands(raw: Tensor, preset: str, render_fn) -> Tensor:
    """``render_fn(raw)`` on overlapping bands of rows of a large frame (without autograd).

    Each band carries a halo of rows on both sides longer than the reach of all stages
    together, so its centre rows equal the whole-frame result exactly (tested bitwise); bands
    start on even rows (same CFA phase), and the frame's own first and last rows are still
    reflect-padded. Bands keep each stage's buffers small enough for the CPU caches: about
    1.3x faster on a 4-megapixel frame. Small inputs (a batch of tiles) run in one piece.
    """
    d, s, n = parse_preset(preset)
    halo = _REACH[d] + _REACH[s] + _REACH["ga" if n == "ga" else "me_denoise"] + 2
    halo += halo % 2
    flat, shape = _flat(raw)
    h, w = flat.shape[-2:]
    rows = max(4 * halo, _BAND_PIXELS // (flat.shape[0] * w) // 2 * 2)
    if h <= rows + 2 * halo or h % 2 or w % 2:  # (odd sizes take other code paths)
        return render_fn(raw)
    out = flat.new_empty(flat.shape[:-3] + (3, h, w))
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        lo, hi = max(0, top - halo), min(h, bottom + halo)
        out[..., top:bottom, :] = render_fn(flat[..., lo:hi, :])[..., top - lo : bottom - lo, :]
    return out.reshape(shape[:-3] + (3, h, w))


def _render(raw, preset, camera, black, white, gains, ccm, return_stages):
    _check_image(raw, 1, "raw")
    if return_stages or _grad_needed(raw, black, white, gains, ccm):
        return _render_whole(raw, preset, camera, black, white, gains, ccm, return_stages)
    if fastisp.applies(raw, black, white, gains, ccm, camera.gamma):
        # the fused kernels, on the whole frame (they stream rows; bands would only add copies)
        d, s, n = parse_preset(preset)
        flat, shape = _flat(raw)
        out = fastisp.render_static(flat.contiguous(), camera.cfa, d, s, n, black, white, gains, ccm, camera.gamma)
        return out.reshape(shape[:-3] + out.shape[-3:])
    return _render_in_bands(raw, preset,
                            lambda band: _render_whole(band, preset, camera, black, white, gains, ccm, False))


def _render_whole(raw, preset, camera, black, white, gains, ccm, return_stages):
    d, s, n = parse_preset(preset)
    demosaic_fn = _DEMOSAICERS[d]
    sharpen_op = _kernel_op(SHARPEN_KERNEL, raw) if s == "s" else _unsharp_op(_UNSHARP_RADIUS, _UNSHARP_AMOUNT)
    denoise_op = _median_op(3) if n == "me" else _gauss_op(_DENOISE_SIGMA, _gaussian_size(_DENOISE_SIGMA))
    return _chain(raw, camera.cfa, black, white, gains, ccm, camera.gamma, demosaic_fn, sharpen_op, denoise_op,
                  return_stages)


def render(raw: Tensor, preset: str, camera: CameraParams, return_stages: bool = False,
           fidelity: str = "corrected"):
    """Render a batch of raw mosaics with one static data model.

    Args:
        raw: mosaics in DN, shape (*, 1, H, W), float.
        preset: a label of :data:`PRESETS`.
        camera: camera values.
        return_stages: also return an OrderedDict with every stage's output (keys
            ``black_level, demosaic, white_balance, colour_matrix, sharpen, denoise, clip, gamma``).
        fidelity: ``"corrected"`` (this module's chain) or ``"raw2logit"``, the chain as the
            paper's public code computed it (:func:`drifthelpers.isp_raw2logit.render`): then
            ``raw`` is a (B, 1, H, W) float64 tensor of mosaics divided by their full scale,
            the camera's black levels are offsets in those units and its white level is unused.

    Returns:
        sRGB-gamma images, shape (*, 3, H, W), in [0, 1] (and the stages if asked).

    Example:
        >>> cam = CameraParams("GRBG", (0.0,) * 4, 255.0)
        >>> render(torch.full((4, 1, 16, 16), 63.75), "bi,s,ga", cam)[0, :, 8, 8]  # 1/4 of full scale
        tensor([0.5325, 0.5325, 0.5325])
    """
    from drifthelpers import isp_raw2logit

    if isp_raw2logit.check_fidelity(fidelity) == "raw2logit":
        return isp_raw2logit.render(raw, preset, camera, return_stages)
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


def parametrized_data_model(camera: CameraParams, fidelity: str = "corrected", **kwargs) -> nn.Module:
    """The parametrized data model of a fidelity.

    Args:
        camera: camera values used for initialisation.
        fidelity: ``"corrected"`` -> :class:`ParametrizedDataModel` (``kwargs`` are its
            ``demosaic``/``learn_demosaic``); ``"raw2logit"`` -> the public code's layout,
            :class:`drifthelpers.isp_raw2logit.Raw2LogitParametrizedDataModel` (132 unbounded
            scalars and an output BatchNorm; takes no further arguments; its input is the
            mosaic divided by its full scale, black levels in those units).

    Raises:
        ValueError: an unknown ``fidelity``, or ``kwargs`` with ``"raw2logit"``.

    Example:
        >>> type(parametrized_data_model(CameraParams("RGGB", (0.0,) * 4, 1.0), "raw2logit")).__name__
        'Raw2LogitParametrizedDataModel'
    """
    from drifthelpers import isp_raw2logit

    if isp_raw2logit.check_fidelity(fidelity) == "corrected":
        return ParametrizedDataModel(camera, **kwargs)
    if kwargs:
        raise ValueError(f"fidelity='raw2logit' takes no further arguments, got {sorted(kwargs)}")
    return isp_raw2logit.Raw2LogitParametrizedDataModel(camera)


def _find_camera_json(path: Path) -> Path | None:
    for parent in path.resolve().parents:
        candidate = parent / "camera.json"
        if candidate.is_file():
            return candidate
    return None


def load_raw_file(path) -> tuple[Tensor, CameraParams, float]:
    """A raw file as ``(raw (1, 1, H, W) float32 DN, camera, pixel_aspect)``.

    A TIFF mosaic of a data set (mini or Zenodo layout: a ``camera.json`` in a folder
    above it) takes its camera values from that ``camera.json``, checked as a
    :class:`drifthelpers.datasets.DatasetCamera` (LibRaw would open such a TIFF too, but
    with black 0, unit gains and no colour matrix). Other files (DNG, CR2, NEF, ...)
    are read with :func:`drifthelpers.raw.read_raw`.
    """
    from .raw import NotAMosaicError, NotARawFileError, check_readable, read_raw, read_tiff

    path = Path(path)
    check_readable(path)  # missing, a folder, unreadable, a link loop: each its own message
    camera_json = _find_camera_json(path) if path.suffix.lower() in (".tif", ".tiff") else None
    if camera_json is None:
        try:
            image = read_raw(path)
            return image.to_tensor()[None], CameraParams.from_raw_image(image), image.pixel_aspect
        except NotAMosaicError:  # an RGB image: no camera.json would help
            raise
        except NotARawFileError:
            if path.suffix.lower() not in (".tif", ".tiff"):
                raise
        raise NotARawFileError(
            path, "a plain TIFF mosaic needs the camera.json of its data set folder (none found above the file)"
        )
    from .datasets import DatasetCamera

    mosaic = read_tiff(path)  # size checked before reading; errors name the file
    if mosaic.ndim != 2:
        raise NotARawFileError(path, f"a TIFF with shape {mosaic.shape} is not a single-channel Bayer mosaic")
    try:
        camera = DatasetCamera.from_dict(json.loads(camera_json.read_text()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid camera metadata in {camera_json}: {exc}") from None
    return torch.from_numpy(mosaic.astype(np.float32))[None, None], CameraParams.from_dataset_camera(camera), 1.0


def render_file(path, preset: str = "bi,s,ga", output=None, *, overwrite: bool = True,
                fidelity: str = "corrected") -> Path:
    """Render a raw file through a static preset and save it as an 8-bit PNG (or 16-bit TIFF).

    Non-square pixels are corrected by resampling the width (the mosaic itself is never
    resampled). Used by ``python -m drifthelpers render``. Everything about the output
    is checked before rendering: it is never the input file, not a folder, its folder
    exists and is writable, and (with ``overwrite=False``) it does not exist. The image
    is written under a unique temporary name and renamed into place when complete.

    ``fidelity="raw2logit"`` renders as the paper's public code did (the mosaic and black
    level divided by the full scale ``2^bits - 1``: :func:`drifthelpers.isp_raw2logit.full_scale_input`).

    Raises:
        ValueError: a bad preset, fidelity or output name, or the output is the input file.
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        IsADirectoryError / FileNotFoundError / PermissionError: the output cannot be written.

    Returns:
        The written path.
    """
    import os

    from .fileio import atomic_output

    from drifthelpers import isp_raw2logit

    parse_preset(preset)
    isp_raw2logit.check_fidelity(fidelity)
    if output is None:
        raise ValueError("output path is required")
    output = Path(output)
    if output.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise ValueError(f"output must end in .png, .tif or .tiff, got {output.name!r}")
    if output.is_dir():
        raise IsADirectoryError(f"output {output} is a folder; give a file name such as image.png")
    if Path(path).exists() and output.exists() and os.path.samefile(path, output):
        raise ValueError(f"output {output} is the input file; refusing to overwrite the source")
    if not overwrite and output.exists():
        raise FileExistsError(f"output {output} exists; pass --force to replace it")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"{output}: folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{output}: folder {output.parent} is not writable")
    raw, camera, aspect = load_raw_file(path)
    if fidelity == "raw2logit":
        raw, camera = isp_raw2logit.full_scale_input(raw, camera)
    with torch.no_grad():
        rgb = render(raw, preset, camera, fidelity=fidelity)[0].float()
    if aspect != 1.0:
        h, w = rgb.shape[-2:]
        rgb = torch.nn.functional.interpolate(rgb[None], size=(h, round(w * aspect)), mode="bilinear",
                                              align_corners=False)[0].clamp(0, 1)
    hwc = rgb.permute(1, 2, 0).numpy()
    with atomic_output(output, overwrite=overwrite) as tmp:
        if output.suffix.lower() == ".png":
            from PIL import Image

            Image.fromarray((hwc * 255 + 0.5).astype(np.uint8)).save(tmp, format="PNG")
        else:
            import tifffile

            tifffile.imwrite(tmp, (hwc * 65535 + 0.5).astype(np.uint16), photometric="rgb")
    return output
