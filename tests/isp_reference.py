"""An independent NumPy/SciPy reference of the static data model (test oracle and benchmark baseline).

Written from the stage definitions, not from :mod:`drifthelpers.isp`: demosaicing comes from
the ``colour-demosaicing`` package (what the paper's public code used), the filters from
``scipy.ndimage``, and the luma-only filtering uses the identity that changing Y in YUV and
converting back adds the same ``dY`` to R, G and B (the Y column of the YUV-to-RGB matrix is
all ones), instead of converting to YUV and back.

Borders: SciPy's ``mode="mirror"`` (``d c b | a b c d``) is PyTorch's ``"reflect"``. The
colour-demosaicing functions pad with SciPy's ``"reflect"`` (``d c b a | a b c d``), which
breaks the CFA phase at the border; with ``phase_preserving_border=True`` the mosaic is first
mirror-padded (keeping the phase) and the result cropped, which makes bilinear and Malvar equal
to ours on every pixel. Menon's multi-stage filter still differs within ~10 px of the border.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

with warnings.catch_warnings():  # colour-demosaicing 0.2.x imports from scipy.ndimage.filters
    warnings.simplefilter("ignore", DeprecationWarning)
    from colour_demosaicing import (
        demosaicing_CFA_Bayer_bilinear,
        demosaicing_CFA_Bayer_Malvar2004,
        demosaicing_CFA_Bayer_Menon2007,
    )

DEMOSAICERS = {
    "bi": demosaicing_CFA_Bayer_bilinear,
    "ma": demosaicing_CFA_Bayer_Malvar2004,
    "me": demosaicing_CFA_Bayer_Menon2007,
}
LUMA = np.array([0.299, 0.587, 0.114])
SHARPEN = np.array([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])
PAD = 4  # even, so the padded mosaic starts with the same pattern


def mosaic(rgb: np.ndarray, cfa: str) -> np.ndarray:
    """Sample an (H, W, 3) image through a Bayer pattern -> (H, W)."""
    out = np.zeros(rgb.shape[:2], dtype=rgb.dtype)
    for pos, colour in enumerate(cfa):
        y, x = divmod(pos, 2)
        out[y::2, x::2] = rgb[y::2, x::2, "RGB".index(colour)]
    return out


def normalise(raw_dn: np.ndarray, black_level, white_level) -> np.ndarray:
    """(raw - black) / (white - black) with black per position of the 2x2 cell."""
    h, w = raw_dn.shape
    black = np.tile(np.asarray(black_level, dtype=np.float64).reshape(2, 2), ((h + 1) // 2, (w + 1) // 2))[:h, :w]
    return (raw_dn.astype(np.float64) - black) / (float(white_level) - black)


def demosaic(raw: np.ndarray, cfa: str, method: str, phase_preserving_border: bool = True) -> np.ndarray:
    fn = DEMOSAICERS[method]
    if not phase_preserving_border:
        return np.asarray(fn(raw, cfa), dtype=np.float64)
    out = fn(np.pad(raw, PAD, mode="reflect"), cfa)
    return np.asarray(out[PAD:-PAD, PAD:-PAD], dtype=np.float64)


def on_luma(rgb: np.ndarray, op) -> np.ndarray:
    y = rgb @ LUMA
    return rgb + (op(y) - y)[..., None]


def render(
    raw_dn: np.ndarray,
    preset: str,
    cfa: str,
    black_level,
    white_level: float,
    wb_gains=(1.0, 1.0, 1.0),
    ccm=np.eye(3),
    gamma: float = 2.2,
    phase_preserving_border: bool = True,
) -> np.ndarray:
    """Render an (H, W) mosaic in DN with a static preset -> (H, W, 3) sRGB-gamma in [0, 1]."""
    d, s, n = preset.split(",")
    x = normalise(raw_dn, black_level, white_level)
    rgb = demosaic(x, cfa, d, phase_preserving_border)
    rgb = rgb * np.asarray(wb_gains, dtype=np.float64)
    rgb = rgb @ np.asarray(ccm, dtype=np.float64).T
    if s == "s":
        rgb = on_luma(rgb, lambda y: ndimage.correlate(y, SHARPEN, mode="mirror"))
    else:
        rgb = on_luma(rgb, lambda y: y + 1.0 * (y - ndimage.gaussian_filter(y, 1.0, mode="mirror", truncate=4.0)))
    if n == "me":
        rgb = on_luma(rgb, lambda y: ndimage.median_filter(y, size=3, mode="mirror"))
    else:
        rgb = on_luma(rgb, lambda y: ndimage.gaussian_filter(y, 0.5, mode="mirror", truncate=4.0))
    return np.clip(rgb, 0.0, 1.0) ** (1.0 / gamma)
