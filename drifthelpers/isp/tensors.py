"""Tensor helpers of the ISP stages: argument checks, parameter shapes, reflect padding and
sums of shifted views.

Conventions (shared by every stage of :mod:`drifthelpers.isp`): tensors are channel-first,
raw mosaics ``(*, 1, H, W)`` and images ``(*, 3, H, W)``; a per-image parameter has the leading
dimensions of its input; per-site values are ordered by position in the 2x2 cell (TL, TR, BL,
BR); every spatial filter pads with ``reflect`` (``d c b | a b c d``), which keeps the CFA phase
of the padded samples of a Bayer mosaic right.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..raw import CFA_PATTERNS


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
