"""Camera raw files in and out: the :class:`RawImage` every later stage starts from.

A raw file holds the sensor's Bayer mosaic plus the camera metadata a data model
(ISP) needs to render it: the colour-filter-array (CFA) pattern, the black and
white levels, the camera's white-balance gains and a colour matrix. This package
reads any Bayer raw that LibRaw reads (through rawpy), writes DNG files that
LibRaw reads back bit-exactly (through tifffile), and owns the single mapping
between CFA pattern strings and kornia's ``CFA`` enum. Its modules, all re-exported here:

* ``image``: :class:`RawImage`, the CFA-pattern helpers and the colour-matrix conversions;
* ``read``: :func:`read_raw` (camera raw files) and :func:`read_tiff` (plain TIFF mosaics);
* ``dng``: :func:`write_dng`;
* ``errors``: :class:`RawError` and its subclasses.

:meth:`RawImage.to_camera` gives the :class:`drifthelpers.camera.Camera` a data model
renders the mosaic with.

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

from .dng import write_dng
from .errors import (
    CorruptRawFileError,
    NotAMosaicError,
    NotARawFileError,
    RawError,
    RawFileNotFoundError,
    RawImageTooLargeError,
    UnreadableRawFileError,
    UnsupportedSensorError,
)
from .image import (
    CFA_PATTERNS,
    RawImage,
    ccm_to_xyz_to_cam,
    cfa_channel_indices,
    cfa_to_kornia,
    crop_raw,
    shift_cfa,
    xyz_to_cam_to_ccm,
)
from .read import MAX_PIXELS, check_readable, read_raw, read_tiff

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
