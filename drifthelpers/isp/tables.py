"""Constants and tap tables of the ISP chain, in one place.

The torch stages (:mod:`drifthelpers.isp.stages`, :mod:`drifthelpers.isp.demosaicing`) and the
compiled CPU kernels (:mod:`drifthelpers.isp.fastisp`) both read their kernels, window sizes and
constants from here, so each demosaicer and filter is defined once. This module imports neither
of them.

* :data:`SHARPEN_KERNEL`, the luma weights, the gamma curve's linear toe, the Gaussian window
  truncation and the static presets' unsharp-mask and denoiser parameters;
* the source-form kernels of the linear demosaicers (bilinear, Malvar-He-Cutler) and
  :func:`_phase_plan`, the taps of every output of such a demosaicer on the four CFA planes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..raw import cfa_channel_indices

__all__ = ["SHARPEN_KERNEL", "DEMOSAIC_METHODS"]

#: The paper's sharpening kernel (label ``s``), applied to the luma.
SHARPEN_KERNEL: tuple[tuple[float, ...], ...] = ((0.0, -1.0, 0.0), (-1.0, 5.0, -1.0), (0.0, -1.0, 0.0))

#: Demosaicer short names (paper labels) and their long names.
DEMOSAIC_METHODS: dict[str, str] = {"bi": "bilinear", "ma": "malvar2004", "me": "menon2007"}

_LUMA = (0.299, 0.587, 0.114)  # Y row of kornia.color.rgb_to_yuv (BT.601)
_GAMMA_EPS = 1e-6  # below this linear value gamma_encode is a straight line through 0
_GAUSS_TRUNCATE = 4.0  # Gaussian windows reach round(truncate * sigma) pixels, like scipy
_UNSHARP_RADIUS, _UNSHARP_AMOUNT = 1.0, 1.0  # the static sharpener 'u'
_DENOISE_SIGMA = 0.5  # the static denoiser 'ga'

# Source-form kernels of the linear demosaicers (see demosaicing._demosaic_linear): each
# interpolates one missing colour at one kind of site directly from the mosaic. Order: G at R/B
# sites; R or B at a G site whose same-colour neighbours lie in its row; ... in its column; R at
# B / B at R.
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


def _gaussian_size(sigma: float) -> int:
    return 2 * max(1, int(_GAUSS_TRUNCATE * sigma + 0.5)) + 1


@lru_cache(maxsize=None)
def _gaussian_taps(sigma: float, size: int) -> tuple[float, ...]:
    """Normalised 1-D Gaussian weights of odd length ``size`` (kornia's ``get_gaussian_kernel1d``)."""
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return tuple((g / g.sum()).tolist())


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


def _taps(kernel) -> dict[tuple[int, int], float]:
    c = len(kernel) // 2
    return {(i - c, j - c): float(v) for i, row in enumerate(kernel) for j, v in enumerate(row) if v}


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
