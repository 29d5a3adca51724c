"""The :class:`RawImage` value type, the CFA-pattern helpers and the colour-matrix conversions.

See :mod:`drifthelpers.raw` for the conventions (pattern strings, per-position black levels,
white balance normalised to green, ``xyz_to_cam`` as the DNG ``ColorMatrix1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from drifthelpers.camera import Camera

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from kornia.color import CFA

__all__ = [
    "CFA_PATTERNS",
    "RawImage",
    "cfa_to_kornia",
    "cfa_channel_indices",
    "shift_cfa",
    "crop_raw",
    "xyz_to_cam_to_ccm",
    "ccm_to_xyz_to_cam",
]

CFA_PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")

_COLOUR_INDEX = {"R": 0, "G": 1, "B": 2}

# sRGB (D65) primaries to CIE XYZ, IEC 61966-2-1.
_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)


# --------------------------------------------------------------------------- CFA helpers


def _check_cfa(cfa: str) -> str:
    if not isinstance(cfa, str) or cfa.upper() not in CFA_PATTERNS:
        raise ValueError(f"cfa must be one of {CFA_PATTERNS}, got {cfa!r}")
    return cfa.upper()


def cfa_channel_indices(cfa: str) -> tuple[int, int, int, int]:
    """Colour index (0 = R, 1 = G, 2 = B) at each position of the 2x2 cell.

    Args:
        cfa: pattern string, one of :data:`CFA_PATTERNS`.

    Returns:
        Indices at top-left, top-right, bottom-left, bottom-right.

    Example:
        >>> cfa_channel_indices("GRBG")
        (1, 0, 2, 1)
    """
    cfa = _check_cfa(cfa)
    return tuple(_COLOUR_INDEX[c] for c in cfa)  # type: ignore[return-value]


def shift_cfa(cfa: str, dy: int, dx: int) -> str:
    """The pattern seen by a crop whose top-left corner is at row ``dy``, column ``dx``.

    Args:
        cfa: pattern of the full mosaic.
        dy: row offset of the crop (any integer, negative allowed).
        dx: column offset of the crop.

    Example:
        >>> shift_cfa("RGGB", 0, 1), shift_cfa("RGGB", 1, 0), shift_cfa("RGGB", 1, 1)
        ('GRBG', 'GBRG', 'BGGR')
    """
    cfa = _check_cfa(cfa)
    if not (isinstance(dy, (int, np.integer)) and isinstance(dx, (int, np.integer))):
        raise TypeError(f"dy and dx must be integers, got {dy!r}, {dx!r}")
    cell = [[cfa[0], cfa[1]], [cfa[2], cfa[3]]]
    return "".join(cell[(dy + i) % 2][(dx + j) % 2] for i in (0, 1) for j in (0, 1))


def cfa_to_kornia(cfa: str) -> CFA:
    """kornia's ``CFA`` enum member for a pattern string.

    kornia names its patterns the way OpenCV does, after the colours of the
    second row's 2nd and 3rd pixels, so the names look "swapped": an RGGB
    sensor is ``CFA.BG``. This is the package's single mapping; it is tested
    against kornia's own demosaicing.

    Example:
        >>> cfa_to_kornia("RGGB").name
        'BG'
    """
    from kornia.color import CFA

    cfa = _check_cfa(cfa)
    return {"RGGB": CFA.BG, "BGGR": CFA.RG, "GRBG": CFA.GB, "GBRG": CFA.GR}[cfa]


def crop_raw(raw: np.ndarray, cfa: str, top: int, left: int, height: int, width: int):
    """Crop a mosaic and return the crop with the pattern it now starts with.

    Args:
        raw: mosaic, shape (..., H, W).
        cfa: its pattern.
        top, left: crop origin (any parity).
        height, width: crop size, > 0, inside the mosaic.

    Returns:
        ``(crop, cfa_of_crop)``.
    """
    cfa = _check_cfa(cfa)
    h, w = raw.shape[-2:]
    for name, value in (("top", top), ("left", left), ("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if height <= 0 or width <= 0:
        raise ValueError(f"crop height and width must be > 0, got {height}x{width}")
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(
            f"crop rows {top}:{top + height}, columns {left}:{left + width} "
            f"do not fit in a {h}x{w} mosaic"
        )
    return raw[..., top : top + height, left : left + width], shift_cfa(cfa, top, left)


def xyz_to_cam_to_ccm(xyz_to_cam: np.ndarray) -> np.ndarray:
    """Camera-RGB to linear-sRGB matrix from a DNG-style XYZ-to-camera matrix.

    Follows LibRaw/dcraw's construction: ``cam_rgb = xyz_to_cam @ srgb_to_xyz``,
    each row normalised to sum 1 (so the camera's white maps to sRGB white),
    then inverted.

    Args:
        xyz_to_cam: shape (3, 3).

    Returns:
        ``ccm`` of shape (3, 3); rows sum to 1.
    """
    m = np.asarray(xyz_to_cam, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"xyz_to_cam must have shape (3, 3), got {m.shape}")
    cam_rgb = m @ _SRGB_TO_XYZ
    sums = cam_rgb.sum(axis=1, keepdims=True)
    if np.any(np.abs(sums) < 1e-12):
        raise ValueError("xyz_to_cam maps white to zero in some channel; cannot normalise")
    cam_rgb = cam_rgb / sums
    return np.linalg.inv(cam_rgb)


def ccm_to_xyz_to_cam(ccm: np.ndarray) -> np.ndarray:
    """A DNG-style XYZ-to-camera matrix whose :func:`xyz_to_cam_to_ccm` is ``ccm``.

    The inverse construction is unique up to a scale per row, which the
    forward normalisation removes; rows are returned normalised so that the
    camera's response to D65 white is (1, 1, 1).
    """
    m = np.asarray(ccm, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"ccm must have shape (3, 3), got {m.shape}")
    cam_rgb = np.linalg.inv(m)
    cam_rgb = cam_rgb / cam_rgb.sum(axis=1, keepdims=True)
    return cam_rgb @ np.linalg.inv(_SRGB_TO_XYZ)


# --------------------------------------------------------------------------- RawImage


@dataclass(frozen=True, eq=False)
class RawImage:
    """A visible Bayer mosaic and the camera metadata a data model needs.

    Attributes:
        raw: mosaic in digital numbers (DN), shape (H, W), uint16, H and W even.
            The array is read-only.
        cfa: pattern string of the top-left 2x2 cell, e.g. ``"RGGB"``.
        black_level: black level per CFA site in DN, by position
            (top-left, top-right, bottom-left, bottom-right).
        white_level: saturation level in DN (> every black level).
        wb_gains: camera white-balance gains (R, G, B) with G = 1, or ``None``
            when the file has no usable white balance.
        ccm: camera-RGB to linear-sRGB matrix (3, 3), rows summing to 1, or
            ``None`` when the file has no colour matrix. Derived from
            ``xyz_to_cam`` when only that is given.
        xyz_to_cam: DNG-style XYZ-to-camera matrix (3, 3), when known
            (LibRaw reports it for proprietary formats; for DNG it reports
            only the derived ``ccm``).
        bit_depth: bits spanned by ``white_level``.
        pixel_aspect: pixel width / pixel height (1.0 for square pixels).
        source: the file this came from, if any.
        camera: "Make Model" when known.
    """

    raw: np.ndarray
    cfa: str
    black_level: tuple[float, float, float, float]
    white_level: float
    wb_gains: tuple[float, float, float] | None = None
    ccm: np.ndarray | None = None
    xyz_to_cam: np.ndarray | None = None
    bit_depth: int = 0
    pixel_aspect: float = 1.0
    source: str | None = None
    camera: str | None = None

    def __post_init__(self):
        raw = np.asarray(self.raw)
        if raw.ndim != 2:
            raise ValueError(f"raw must be a 2-D mosaic (H, W), got shape {raw.shape}")
        if raw.dtype != np.uint16:
            if not np.issubdtype(raw.dtype, np.integer):
                raise ValueError(f"raw must hold integers (uint16), got dtype {raw.dtype}")
            if raw.size and (raw.min() < 0 or raw.max() > 65535):
                raise ValueError("raw values must lie in [0, 65535] to be stored as uint16")
            raw = raw.astype(np.uint16)
        if raw.shape[0] < 2 or raw.shape[1] < 2 or raw.shape[0] % 2 or raw.shape[1] % 2:
            raise ValueError(f"raw must have even height and width >= 2, got {raw.shape}")
        raw = np.array(raw, copy=True) if raw.base is not None or raw.flags.writeable else raw
        raw.flags.writeable = False
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "cfa", _check_cfa(self.cfa))

        black_arr = np.asarray(self.black_level, dtype=float).ravel()
        if black_arr.size not in (1, 4):
            raise ValueError(f"black_level must be one value or 4 values (TL, TR, BL, BR), got {self.black_level}")
        black = tuple(float(b) for b in np.broadcast_to(black_arr, (4,)))
        if not all(math.isfinite(b) and b >= 0 for b in black):
            raise ValueError(f"black_level must be 4 finite values >= 0, got {self.black_level}")
        object.__setattr__(self, "black_level", black)
        white = float(self.white_level)
        if not math.isfinite(white) or white <= max(black):
            raise ValueError(
                f"white_level must be finite and above every black level {black}, got {self.white_level}"
            )
        object.__setattr__(self, "white_level", white)

        if self.wb_gains is not None:
            gains = tuple(float(g) for g in self.wb_gains)
            if len(gains) != 3 or not all(math.isfinite(g) and g > 0 for g in gains):
                raise ValueError(f"wb_gains must be 3 finite positive values or None, got {self.wb_gains}")
            gains = (gains[0] / gains[1], 1.0, gains[2] / gains[1])
            object.__setattr__(self, "wb_gains", gains)

        for name in ("xyz_to_cam", "ccm"):
            value = getattr(self, name)
            if value is None:
                continue
            m = np.array(value, dtype=np.float64)
            if m.shape != (3, 3) or not np.all(np.isfinite(m)):
                raise ValueError(f"{name} must be a finite (3, 3) matrix or None, got shape {m.shape}")
            m.flags.writeable = False
            object.__setattr__(self, name, m)
        if self.ccm is None and self.xyz_to_cam is not None:
            ccm = xyz_to_cam_to_ccm(self.xyz_to_cam)
            ccm.flags.writeable = False
            object.__setattr__(self, "ccm", ccm)

        if not self.bit_depth:
            object.__setattr__(self, "bit_depth", int(white).bit_length())
        if not (math.isfinite(self.pixel_aspect) and self.pixel_aspect > 0):
            raise ValueError(f"pixel_aspect must be a positive number, got {self.pixel_aspect}")

    # ---- derived values

    @property
    def height(self) -> int:
        return int(self.raw.shape[0])

    @property
    def width(self) -> int:
        return int(self.raw.shape[1])

    def crop(self, top: int, left: int, height: int, width: int) -> RawImage:
        """A crop with its pattern and per-position black levels shifted to match.

        Any offset is allowed; height and width must be even.
        """
        if height % 2 or width % 2:
            raise ValueError(f"crop height and width must be even, got {height}x{width}")
        data, cfa = crop_raw(self.raw, self.cfa, top, left, height, width)
        b = self.black_level
        cell = [[b[0], b[1]], [b[2], b[3]]]
        black = tuple(cell[(top + i) % 2][(left + j) % 2] for i in (0, 1) for j in (0, 1))
        return replace(self, raw=np.array(data), cfa=cfa, black_level=black)

    def to_tensor(self, dtype=None) -> torch.Tensor:
        """The mosaic as a float tensor of shape (1, H, W) in DN (float32 by default)."""
        import torch

        return torch.from_numpy(self.raw.astype(np.float32)).to(dtype or torch.float32)[None]

    def to_camera(self, gamma: float = 2.2) -> Camera:
        """The camera values a data model needs to render this mosaic.

        The same as :meth:`drifthelpers.camera.Camera.from_raw_image`: a missing white balance
        becomes unit gains, a missing colour matrix the identity. (The attribute ``camera``
        is the "Make Model" name read from the file.)

        Args:
            gamma: display gamma of the rendering, > 0.

        Example:
            >>> ri = RawImage(np.zeros((4, 4), np.uint16), "GRBG", 64, 4095, wb_gains=(2.0, 1.0, 1.5))
            >>> cam = ri.to_camera()
            >>> cam.cfa, cam.black_level, cam.white_level, cam.wb_gains, cam.gamma
            ('GRBG', (64.0, 64.0, 64.0, 64.0), 4095.0, (2.0, 1.0, 1.5), 2.2)
        """
        return Camera.from_raw_image(self, gamma)

    def summary(self) -> dict:
        """Plain-Python metadata, ready for printing or JSON."""
        return {
            "source": self.source,
            "camera": self.camera,
            "size": [self.height, self.width],
            "cfa": self.cfa,
            "black_level": list(self.black_level),
            "white_level": self.white_level,
            "bit_depth": self.bit_depth,
            "wb_gains": None if self.wb_gains is None else list(self.wb_gains),
            "colour_matrix": self.ccm is not None,
            "pixel_aspect": self.pixel_aspect,
        }
