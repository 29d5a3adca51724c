"""Stages 1 and 3-8 of the chain, one pure function each: black level, white balance, colour
matrix, the luma filters (sharpen, unsharp mask, median, Gaussian) and clip + gamma.

Stage 2, demosaicing, is :mod:`drifthelpers.isp.demosaicing`; the order in which the stages run
is :mod:`drifthelpers.isp.chain`.

* Sharpening and denoising act on the luma only: Y of YUV (the Y row of
  :func:`kornia.color.rgb_to_yuv`, Y = 0.299 R + 0.587 G + 0.114 B) is filtered and U, V are
  kept. Since the Y column of kornia's (exact) inverse :func:`kornia.color.yuv_to_rgb` is
  (1, 1, 1), this is computed as ``rgb + (filtered Y - Y)``, tested equal to the round trip.
  Each luma filter is also available as a *luma operation* (``_kernel_op``, ``_unsharp_op``,
  ``_median_op``, ``_gauss_op``: a function of the (N, 1, H, W) luma), the form the chain runs.
* Filters are correlations; the fixed kernels used here are symmetric, so correlation and
  convolution agree. Gaussian windows are truncated at 4 sigma like
  ``scipy.ndimage.gaussian_filter``: 5x5 for the denoiser's sigma 0.5, 9x9 for the unsharp
  mask's radius 1. They run as separable row and column passes of shifted-view sums
  (:func:`_gaussian_blur`; faster than kornia's ``gaussian_blur2d`` here, same weights), and
  accumulations are in-place ``add_`` even under autograd (addition saves nothing for its
  backward).
* A single (3, 3) colour matrix is nine plane-wise multiply-adds (:func:`_mix_planes`), with a
  matching custom backward; the luma is three multiply-adds.
* Without autograd the 3x3 median writes into a few reused buffers (:func:`_median3x3_`) and
  the gamma curve can run in place (:func:`_gamma_encode_`).
* ``gamma_encode`` has a hand-written backward (:class:`_GammaEncode`), equal to autograd's
  through the formula but in fewer passes and without boolean masks.
"""

from __future__ import annotations

from typing import Sequence

import kornia
import torch
from torch import Tensor

from .tables import _GAMMA_EPS, _LUMA, SHARPEN_KERNEL, _gaussian_size, _gaussian_taps, _taps
from .tensors import (_check_image, _filter2d, _flat, _grad_needed, _kernel, _lead, _param, _per_image,
                      _require_size, _pad_reflect, _shifted_sum, _site_map, _site_param)

__all__ = [
    "subtract_black_level",
    "white_balance",
    "colour_correct",
    "luma_filter",
    "sharpen",
    "unsharp_mask",
    "denoise_median",
    "denoise_gaussian",
    "gamma_encode",
]


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
