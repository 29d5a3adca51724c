"""Writing a :class:`RawImage` as an uncompressed CFA DNG that LibRaw reads back bit-exactly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .image import _COLOUR_INDEX, RawImage, ccm_to_xyz_to_cam

__all__ = ["write_dng"]

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


def _rational(values, signed: bool = False) -> list[int]:
    out: list[int] = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        num = int(round(float(v) * _RATIONAL_DENOMINATOR))
        if not signed and num < 0:
            raise ValueError(f"value {v} must be >= 0 for an unsigned rational tag")
        out += [num, _RATIONAL_DENOMINATOR]
    return out


def _check_writable(raw_image: RawImage, path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse what cannot become a readable, exact DNG at ``path`` before anything is written;
    return ``path`` as a :class:`~pathlib.Path`."""
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
    return path


def _mosaic_tags(raw_image: RawImage) -> list[tuple]:
    """Camera name, DNG version, CFA layout, black and white level (tifffile ``extratags``)."""
    cfa_codes = bytes(_COLOUR_INDEX[c] for c in raw_image.cfa)
    camera = raw_image.camera or "drifthelpers simulated camera"
    make, _, model = camera.partition(" ")
    model = model or make
    return [
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
        (_TAG_BLACK_LEVEL, 4, 4, tuple(int(b) for b in raw_image.black_level), True),
        (_TAG_WHITE_LEVEL, 4, 1, int(raw_image.white_level), True),
    ]


def _colour_tags(raw_image: RawImage) -> list[tuple]:
    """Colour matrix (D65), as-shot neutral and pixel aspect, each only when known."""
    tags = []
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
    return tags


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

    from drifthelpers.fileio import atomic_output

    path = _check_writable(raw_image, path, overwrite)
    tags = _mosaic_tags(raw_image) + _colour_tags(raw_image)
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
