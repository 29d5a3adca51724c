"""Camera raw files in and out: the :class:`RawImage` every later stage starts from.

A raw file holds the sensor's Bayer mosaic plus the camera metadata a data model
(ISP) needs to render it: the colour-filter-array (CFA) pattern, the black and
white levels, the camera's white-balance gains and a colour matrix. This module
reads any Bayer raw that LibRaw reads (through rawpy), writes DNG files that
LibRaw reads back bit-exactly (through tifffile), and owns the single mapping
between CFA pattern strings and kornia's ``CFA`` enum.

Conventions (used across the package):

* A pattern string such as ``"GRBG"`` lists the colours of the 2x2 cell at the
  mosaic's top-left corner, row-major: ``(0,0)=G, (0,1)=R, (1,0)=B, (1,1)=G``.
* Per-site values (``black_level``) are ordered by *position* in that cell:
  top-left, top-right, bottom-left, bottom-right. Never by LibRaw's colour index.
* White-balance gains are ``(R, G, B)`` normalised to ``G = 1``.
* ``xyz_to_cam`` is the DNG ``ColorMatrix1`` (CIE XYZ to camera RGB, D65 here);
  :attr:`RawImage.ccm` derives from it the camera-RGB to linear-sRGB matrix the
  data model applies, the way LibRaw builds its ``rgb_cam``.

Decisions for awkward real files (each is tested):

* Margins: only LibRaw's *visible* area is kept; the pattern is read from the
  visible area's own top-left cell, so margins of any parity keep the phase right.
  An odd visible height or width loses its last row or column (bottom/right, so
  the phase is unchanged) because every demosaicer here works on whole 2x2 cells.
* Camera white balance given as raw multipliers (e.g. Canon's ``[1687, 1036,
  1655, 1036]``) is normalised to green = 1. A file without a usable white
  balance (zeros, negatives, LibRaw's ``[0, 1, 0, 0]``) gets ``wb_gains=None``:
  absent, not invented. Downstream code decides what "absent" means (the data
  model uses unit gains and says so).
* A file without a colour matrix (all zeros) gets ``xyz_to_cam=None`` and
  ``ccm`` is then ``None``.
* Non-square pixels (e.g. Kodak DC120, aspect 1.53) are *not* resampled: the
  mosaic stays on the sensor grid, and ``pixel_aspect`` (pixel width / height,
  LibRaw's convention) records the shape so a renderer can correct the display.
* ``bit_depth`` is the number of bits spanned by the white level,
  ``int(white_level).bit_length()``: a 12-bit sensor left-justified in 16 bits
  reports 16, which is what the stored numbers span.
* Sizes are checked before anything is allocated: a TIFF-based file whose header
  declares more than :data:`MAX_PIXELS` pixels raises :class:`RawImageTooLargeError`,
  and one whose uncompressed pixel data cannot fit in the file raises
  :class:`CorruptRawFileError`. Every error names the file.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from kornia.color import CFA

__all__ = [
    "CFA_PATTERNS",
    "RawImage",
    "RawError",
    "RawFileNotFoundError",
    "NotARawFileError",
    "CorruptRawFileError",
    "UnsupportedSensorError",
    "NotAMosaicError",
    "UnreadableRawFileError",
    "RawImageTooLargeError",
    "MAX_PIXELS",
    "check_readable",
    "read_raw",
    "read_tiff",
    "write_dng",
    "cfa_to_kornia",
    "cfa_channel_indices",
    "shift_cfa",
    "crop_raw",
    "xyz_to_cam_to_ccm",
    "ccm_to_xyz_to_cam",
]

CFA_PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")

#: Most pixels a file may declare (268 Mpx, above every camera sensor); larger headers are
#: refused before anything is allocated.
MAX_PIXELS = 1 << 28

_COLOUR_INDEX = {"R": 0, "G": 1, "B": 2}

# sRGB (D65) primaries to CIE XYZ, IEC 61966-2-1.
_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)

# DNG tag codes used by write_dng (DNG specification 1.4).
_TAG_CFA_REPEAT_PATTERN_DIM = 33421
_TAG_CFA_PATTERN = 33422
_TAG_DNG_VERSION = 50706
_TAG_DNG_BACKWARD_VERSION = 50707
_TAG_UNIQUE_CAMERA_MODEL = 50708
_TAG_CFA_PLANE_COLOR = 50710
_TAG_CFA_LAYOUT = 50711
_TAG_BLACK_LEVEL_REPEAT_DIM = 50713
_TAG_BLACK_LEVEL = 50714
_TAG_WHITE_LEVEL = 50717
_TAG_DEFAULT_SCALE = 50718
_TAG_COLOR_MATRIX_1 = 50721
_TAG_AS_SHOT_NEUTRAL = 50728
_TAG_CALIBRATION_ILLUMINANT_1 = 50778
_ILLUMINANT_D65 = 21
_PHOTOMETRIC_CFA = 32803
_RATIONAL_DENOMINATOR = 1_000_000
_LIBRAW_MIN_SIZE = 22  # LibRaw (like dcraw) rejects frames narrower or shorter than this


# --------------------------------------------------------------------------- errors


class RawError(Exception):
    """Base class of every error raised while reading or writing a raw file.

    Attributes:
        path: the file concerned.
        cause: a short, human-readable reason.
    """

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = Path(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class RawFileNotFoundError(RawError, FileNotFoundError):
    """The path does not exist or is not a regular file."""


class NotARawFileError(RawError):
    """The file exists but LibRaw does not recognise it as a camera raw file."""


class CorruptRawFileError(RawError):
    """The file looks like a raw file but its data are truncated or corrupt."""


class UnsupportedSensorError(RawError):
    """A valid raw file whose sensor is not a 2x2 Bayer mosaic.

    X-Trans (6x6 CFA), Foveon and linear/"stacked" RGB raws (film scanners,
    linear DNGs) and four-colour sensors (CMYG, RGBE) fall here.
    """


class NotAMosaicError(NotARawFileError):
    """A valid image file with several colour samples per pixel (an RGB TIFF): already
    rendered, not a sensor mosaic, so no camera values can make it one."""


class UnreadableRawFileError(RawError, OSError):
    """The path exists but cannot be read: no permission, a symbolic-link loop, an I/O error."""


class RawImageTooLargeError(RawError):
    """The file declares an image with more pixels than the reader accepts (:data:`MAX_PIXELS`)."""


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


# --------------------------------------------------------------------------- reading


def _camera_name(path: Path) -> str | None:
    """Make and model from the file's TIFF/EXIF tags, when it is TIFF-based."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            make = tags.get(271)
            model = tags.get(272)
            parts = [str(t.value).strip("\x00 ") for t in (make, model) if t is not None]
    except Exception:  # not TIFF-based (CRW, KDC variants, ...): no name, not an error
        return None
    name = " ".join(p for p in parts if p)
    return name or None


def check_readable(path: str | os.PathLike) -> None:
    """Raise the :class:`RawError` that says why ``path`` cannot be read, if it cannot.

    Tells apart a missing file, a folder, a symbolic-link loop, a file this user may not
    read and an empty file (each is a different fix for the user).

    Raises:
        RawFileNotFoundError: no such file (or a dangling link), a folder, not a regular file.
        UnreadableRawFileError: no permission, a symbolic-link loop, an I/O error.
        NotARawFileError: an empty file.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        why = "a symbolic link to a missing file" if path.is_symlink() else "no such file"
        raise RawFileNotFoundError(path, why) from None
    except PermissionError:
        raise UnreadableRawFileError(path, "permission denied: a folder on its path cannot be searched") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableRawFileError(path, "a symbolic link loop (too many levels of symbolic links)") from None
        raise UnreadableRawFileError(path, f"cannot be accessed ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise RawFileNotFoundError(path, "not a regular file: a folder")
    if not stat.S_ISREG(info.st_mode):
        raise RawFileNotFoundError(path, "not a regular file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise UnreadableRawFileError(path, "permission denied: this user may not read the file") from None
    except OSError as exc:
        raise UnreadableRawFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if info.st_size == 0:
        raise NotARawFileError(path, "the file is empty (0 bytes)")


def _check_tiff_page(path: Path, page, size: int, max_pixels: int) -> None:
    """Check one TIFF page's declared size against ``max_pixels`` and the file's ``size``."""
    width, height = int(page.imagewidth), int(page.imagelength)
    depth, samples = max(int(page.imagedepth), 1), max(int(page.samplesperpixel), 1)
    pixels = width * height * depth
    if pixels > max_pixels:
        raise RawImageTooLargeError(
            path, f"the header declares a {width}x{height} image ({pixels / 1e6:.0f} Mpx), more than the "
                  f"{max_pixels / 1e6:.0f} Mpx accepted"
        )
    bits = page.bitspersample if isinstance(page.bitspersample, int) else max(page.bitspersample)
    needed = height * depth * math.ceil(width * samples * int(bits) / 8)
    if int(page.compression) == 1 and needed > size:
        raise CorruptRawFileError(
            path, f"truncated or corrupt: the header declares a {width}x{height} image ({needed} bytes of "
                  f"uncompressed pixel data) but the file has {size} bytes"
        )
    offsets = getattr(page, "dataoffsets", ()) or ()
    counts = getattr(page, "databytecounts", ()) or ()
    for off, cnt in zip(offsets, counts):
        if off + cnt > size:
            raise CorruptRawFileError(
                path, f"truncated: image data end at byte {off + cnt} but the file has {size} bytes"
            )


def _check_tiff_layout(path: Path, max_pixels: int) -> None:
    """Raise before anything is allocated when a TIFF-based file declares too many pixels
    (:class:`RawImageTooLargeError`) or pixel data that cannot fit in it
    (:class:`CorruptRawFileError`).

    LibRaw reads short files without complaint (the missing pixels come back as zeros),
    so truncation is checked here for every TIFF-based format. Files tifffile cannot
    parse are left to LibRaw.
    """
    try:
        import tifffile

        tif = tifffile.TiffFile(path)
    except Exception:
        return
    try:
        size = path.stat().st_size
        for page in tif.pages:
            _check_tiff_page(path, page, size, max_pixels)
    except RawError:
        raise
    except Exception:  # unusual TIFF variants: leave the decision to LibRaw
        return
    finally:
        tif.close()


def _plain_tiff_description(path: Path) -> tuple[str, int] | None:
    """``("an RGB TIFF image (32x32x3, uint8)", samples per pixel)`` for a TIFF whose first
    image is whole, else None."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            shape, dtype = tuple(page.shape), page.dtype
            kind = {2: "an RGB TIFF image", 1: "a grey-scale TIFF image", 0: "a grey-scale TIFF image"}.get(
                int(page.photometric), "a TIFF image")
            samples = int(page.samplesperpixel)
            _check_tiff_page(path, page, path.stat().st_size, MAX_PIXELS)
    except Exception:
        return None
    return f"{kind} ({'x'.join(map(str, shape))}, {dtype})", samples


def read_tiff(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The first image of a plain TIFF file, with its declared size checked before reading.

    For the single-channel mosaics and masks of the data sets, which carry their camera
    values elsewhere (``camera.json``).

    Args:
        path: the TIFF file.
        max_pixels: most pixels the header may declare.

    Returns:
        The image as stored: (H, W) or (H, W, S).

    Raises:
        RawFileNotFoundError: no such file (or a folder).
        UnreadableRawFileError: no permission, a symbolic-link loop.
        NotARawFileError: not a TIFF file.
        RawImageTooLargeError: the header declares more than ``max_pixels`` pixels.
        CorruptRawFileError: truncated or corrupt data.
    """
    import tifffile

    path = Path(path)
    check_readable(path)
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        if _looks_like_raw(path):
            raise CorruptRawFileError(path, f"a damaged TIFF file ({type(exc).__name__}: {exc})") from None
        raise NotARawFileError(path, "not a TIFF file") from None
    try:
        if not tif.pages:
            raise CorruptRawFileError(path, "a TIFF file without images")
        page = tif.pages[0]
        _check_tiff_page(path, page, path.stat().st_size, max_pixels)
        return page.asarray()
    except RawError:
        raise
    except Exception as exc:
        raise CorruptRawFileError(path, f"truncated or corrupt TIFF data ({type(exc).__name__}: {exc})") from None
    finally:
        tif.close()


# Messages LibRaw's data-error callback and libjpeg print on C-level stderr when
# a file ends early or its compressed stream is broken; LibRaw itself then
# returns success and fills the missing pixels, so they are the only signal.
_CORRUPTION_MESSAGES = (
    "unexpected end of file",
    "corrupt data near",
    "premature end of jpeg",
    "corrupt jpeg data",
    "bogus",
)

# File signatures of common raw containers: a file that starts like a raw file
# but that LibRaw cannot identify is corrupt or truncated, not "not raw".
_RAW_SIGNATURES = (
    (0, b"II*\x00"),
    (0, b"MM\x00*"),
    (0, b"IIRO"),  # Olympus ORF
    (0, b"IIRS"),
    (0, b"IIU\x00"),  # Panasonic RW2
    (6, b"HEAPCCDR"),  # Canon CRW (CIFF)
    (0, b"FUJIFILMCCD-RAW"),
    (0, b"\x00MRM"),  # Minolta MRW
    (0, b"FOVb"),  # Sigma X3F
)


def _looks_like_raw(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError:
        return False
    return any(head[off : off + len(sig)] == sig for off, sig in _RAW_SIGNATURES)


class _CaptureCStderr:
    """Capture what C libraries write to file descriptor 2 (not thread-safe)."""

    def __enter__(self):
        self.text = ""
        try:
            sys.stderr.flush()
        except Exception:
            pass
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode("utf-8", "replace")
        self._tmp.close()
        return False


def _normalise_wb(cam_mul) -> tuple[float, float, float] | None:
    mul = [float(v) for v in cam_mul]
    r, g, b = mul[0], mul[1], mul[2]
    if not all(math.isfinite(v) for v in (r, g, b)) or min(r, g, b) <= 0:
        return None
    return (r / g, 1.0, b / g)


def read_raw(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> RawImage:
    """Read a camera raw file into a :class:`RawImage` through rawpy/LibRaw.

    Every format LibRaw reads (DNG, CRW, CR2, NEF, ARW, KDC, ...) with a 2x2
    Bayer sensor is accepted. Arrays are copied out of the rawpy object, which
    is closed before returning. See the module docstring for the decisions on
    margins, white balance, colour matrix and non-square pixels.

    Args:
        path: the raw file.
        max_pixels: most pixels a TIFF-based file may declare (checked before reading).

    Returns:
        The visible mosaic and its metadata.

    Raises:
        RawFileNotFoundError: no such file, or a folder.
        UnreadableRawFileError: no permission to read it, a symbolic-link loop.
        NotAMosaicError: an image with several samples per pixel (an RGB TIFF).
        NotARawFileError: not a raw file LibRaw knows (a text file, ...).
        RawImageTooLargeError: the file declares more than ``max_pixels`` pixels.
        CorruptRawFileError: truncated or corrupt data.
        UnsupportedSensorError: not a 2x2 Bayer mosaic (X-Trans, Foveon, linear RGB, CMYG).
    """
    import rawpy

    path = Path(path)
    check_readable(path)
    _check_tiff_layout(path, max_pixels)

    capture = _CaptureCStderr()
    try:
        with warnings.catch_warnings(), capture:
            warnings.simplefilter("ignore", category=UserWarning)
            with rawpy.imread(str(path)) as rp:
                raw_type = rp.raw_type
                desc = rp.color_desc.decode("ascii", "replace")
                if raw_type != rawpy.RawType.Flat:
                    raise UnsupportedSensorError(
                        path,
                        "not a Bayer mosaic: the raw data are stacked/linear RGB "
                        "(a linear DNG, a film scanner or a Foveon sensor)",
                    )
                pattern = rp.raw_pattern
                if pattern is None or np.asarray(pattern).shape != (2, 2):
                    shape = None if pattern is None else np.asarray(pattern).shape
                    raise UnsupportedSensorError(
                        path, f"not a 2x2 Bayer mosaic: the CFA repeats every {shape} pixels (e.g. X-Trans)"
                    )
                visible = np.array(rp.raw_image_visible, dtype=np.uint16, copy=True)
                colors = np.array(rp.raw_colors_visible[:2, :2], copy=True)
                black_per_colour = [float(v) for v in rp.black_level_per_channel]
                white = float(rp.white_level)
                cam_mul = list(rp.camera_whitebalance)
                rgb_xyz = np.array(rp.rgb_xyz_matrix, dtype=np.float64, copy=True)
                rgb_cam = np.array(rp.color_matrix, dtype=np.float64, copy=True)
                sizes = rp.sizes
    except RawError:
        raise
    except rawpy.LibRawFileUnsupportedError as exc:
        plain = _plain_tiff_description(path)
        if plain is not None:
            error = NotAMosaicError if plain[1] > 1 else NotARawFileError
            raise error(path, f"{plain[0]}, not a camera raw file") from None
        if _looks_like_raw(path):
            raise CorruptRawFileError(
                path, "starts like a camera raw file but LibRaw cannot parse it: truncated or corrupt"
            ) from None
        raise NotARawFileError(path, f"not a camera raw file LibRaw can read ({exc})") from None
    except rawpy.LibRawTooBigError as exc:
        raise RawImageTooLargeError(path, f"the image is too large for LibRaw to read ({exc})") from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as exc:
        raise CorruptRawFileError(path, f"truncated or corrupt raw data ({type(exc).__name__}: {exc})") from None
    except rawpy.LibRawError as exc:
        raise CorruptRawFileError(path, f"LibRaw could not decode the file ({type(exc).__name__}: {exc})") from None
    except (OSError, MemoryError, ValueError) as exc:
        raise CorruptRawFileError(path, f"could not read the raw data ({type(exc).__name__}: {exc})") from None

    complaints = [
        line.strip() for line in capture.text.splitlines() if any(m in line.lower() for m in _CORRUPTION_MESSAGES)
    ]
    if complaints:
        raise CorruptRawFileError(path, f"truncated or corrupt raw data (decoder: {complaints[0]})")
    if visible.ndim != 2 or visible.shape[0] < 2 or visible.shape[1] < 2:
        raise UnsupportedSensorError(path, f"the visible raw area has an unusable shape {visible.shape}")
    letters = []
    for idx in colors.ravel():
        letter = desc[int(idx)] if int(idx) < len(desc) else "?"
        letters.append(letter)
    cfa = "".join(letters)
    if cfa not in CFA_PATTERNS:
        raise UnsupportedSensorError(
            path, f"the 2x2 colour cell is {cfa!r} (colours {desc!r}); only RGGB, BGGR, GRBG and GBRG are supported"
        )
    black = tuple(black_per_colour[int(i)] for i in colors.ravel())
    if white <= max(black):
        raise CorruptRawFileError(path, f"white level {white} is not above the black levels {black}")

    h, w = visible.shape
    visible = visible[: h - h % 2, : w - w % 2]
    if not visible.flags.c_contiguous:
        visible = np.ascontiguousarray(visible)

    # LibRaw fills cam_xyz (rawpy's rgb_xyz_matrix) from its built-in table for
    # proprietary formats, and only the derived rgb_cam (rawpy's color_matrix)
    # for DNG files; all zeros means "no matrix".
    xyz_to_cam = rgb_xyz[:3, :3]
    if not np.any(xyz_to_cam) or not np.all(np.isfinite(xyz_to_cam)):
        xyz_to_cam = None
    ccm = None
    if xyz_to_cam is None:
        ccm = rgb_cam[:3, :3]
        if not np.any(ccm) or not np.all(np.isfinite(ccm)):
            ccm = None

    return RawImage(
        raw=visible,
        cfa=cfa,
        black_level=black,
        white_level=white,
        wb_gains=_normalise_wb(cam_mul),
        ccm=ccm,
        xyz_to_cam=xyz_to_cam,
        pixel_aspect=float(sizes.pixel_aspect) if sizes.pixel_aspect else 1.0,
        source=str(path),
        camera=_camera_name(path),
    )


# --------------------------------------------------------------------------- writing


def _rational(values, signed: bool = False) -> list[int]:
    out: list[int] = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        num = int(round(float(v) * _RATIONAL_DENOMINATOR))
        if not signed and num < 0:
            raise ValueError(f"value {v} must be >= 0 for an unsigned rational tag")
        out += [num, _RATIONAL_DENOMINATOR]
    return out


def write_dng(raw_image: RawImage, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write a :class:`RawImage` as an uncompressed CFA DNG that LibRaw reads back.

    Stored: the mosaic (16-bit), pattern, black level per site, white level,
    white balance (as ``AsShotNeutral`` = 1 / gains), the colour matrix
    (``ColorMatrix1``, D65), make/model and, for non-square pixels, the
    ``DefaultScale`` tag. The file is written to a temporary sibling and
    renamed, so a failure never leaves a half-written DNG.

    Black levels must be whole numbers of DN (LibRaw stores integers), so that
    reading back is exact. The colour matrix is stored as rationals with
    denominator 10^6.

    Args:
        raw_image: what to write.
        path: destination; parent folders must exist.
        overwrite: allow replacing an existing file.

    Returns:
        The path written.
    """
    import tifffile

    if not isinstance(raw_image, RawImage):
        raise TypeError(f"raw_image must be a RawImage, got {type(raw_image).__name__}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists and overwrite=False")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: parent folder {path.parent} does not exist")
    if min(raw_image.raw.shape) < _LIBRAW_MIN_SIZE:
        raise ValueError(
            f"raw_image is {raw_image.height}x{raw_image.width}: LibRaw does not read images "
            f"smaller than {_LIBRAW_MIN_SIZE}x{_LIBRAW_MIN_SIZE} pixels, so such a DNG would be unreadable"
        )
    black = raw_image.black_level
    if any(b != round(b) for b in black):
        raise ValueError(f"black_level must be whole DN values to be stored in a DNG, got {black}")
    if raw_image.white_level != round(raw_image.white_level) or raw_image.white_level > 65535:
        raise ValueError(f"white_level must be a whole DN value <= 65535, got {raw_image.white_level}")

    cfa_codes = bytes(_COLOUR_INDEX[c] for c in raw_image.cfa)
    camera = raw_image.camera or "drifthelpers simulated camera"
    make, _, model = camera.partition(" ")
    model = model or make
    tags = [
        (271, 2, 0, make, True),
        (272, 2, 0, model, True),
        (_TAG_DNG_VERSION, 1, 4, bytes([1, 4, 0, 0]), True),
        (_TAG_DNG_BACKWARD_VERSION, 1, 4, bytes([1, 1, 0, 0]), True),
        (_TAG_UNIQUE_CAMERA_MODEL, 2, 0, camera, True),
        (_TAG_CFA_REPEAT_PATTERN_DIM, 3, 2, (2, 2), True),
        (_TAG_CFA_PATTERN, 1, 4, cfa_codes, True),
        (_TAG_CFA_PLANE_COLOR, 1, 3, bytes([0, 1, 2]), True),
        (_TAG_CFA_LAYOUT, 3, 1, 1, True),
        (_TAG_BLACK_LEVEL_REPEAT_DIM, 3, 2, (2, 2), True),
        (_TAG_BLACK_LEVEL, 4, 4, tuple(int(b) for b in black), True),
        (_TAG_WHITE_LEVEL, 4, 1, int(raw_image.white_level), True),
    ]
    if raw_image.ccm is not None:
        xyz_to_cam = raw_image.xyz_to_cam
        if xyz_to_cam is None:
            xyz_to_cam = ccm_to_xyz_to_cam(raw_image.ccm)
        tags.append((_TAG_COLOR_MATRIX_1, 10, 9, tuple(_rational(xyz_to_cam, signed=True)), True))
        tags.append((_TAG_CALIBRATION_ILLUMINANT_1, 3, 1, _ILLUMINANT_D65, True))
    if raw_image.wb_gains is not None:
        # AsShotNeutral = 1 / gain, stored as the exact fraction 10^6 / round(gain * 10^6)
        # so that LibRaw's reciprocal gives the gain back to 1e-6.
        neutral: list[int] = []
        for g in raw_image.wb_gains:
            neutral += [_RATIONAL_DENOMINATOR, max(1, int(round(g * _RATIONAL_DENOMINATOR)))]
        tags.append((_TAG_AS_SHOT_NEUTRAL, 5, 3, tuple(neutral), True))
    if raw_image.pixel_aspect != 1.0:
        tags.append((_TAG_DEFAULT_SCALE, 5, 2, tuple(_rational([raw_image.pixel_aspect, 1.0])), True))

    from .fileio import atomic_output

    with atomic_output(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(
            tmp,
            raw_image.raw,
            photometric=_PHOTOMETRIC_CFA,
            planarconfig="contig",
            compression=None,
            subfiletype=0,
            software="drifthelpers",
            extratags=tags,
            metadata=None,
        )
    return path
