"""Reading camera raw files (rawpy/LibRaw) and plain TIFF mosaics, with every size checked
before anything is allocated and every failure turned into a :class:`RawError` naming the file.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

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
from .image import CFA_PATTERNS, RawImage

__all__ = ["MAX_PIXELS", "check_readable", "read_raw", "read_tiff"]

#: Most pixels a file may declare (268 Mpx, above every camera sensor); larger headers are
#: refused before anything is allocated.
MAX_PIXELS = 1 << 28


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


def _libraw_fields(path: Path, rp, rawpy) -> dict:
    """Copy out of an open rawpy object what :func:`read_raw` needs; refuse non-Bayer sensors."""
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
    return {
        "desc": desc,
        "visible": np.array(rp.raw_image_visible, dtype=np.uint16, copy=True),
        "colors": np.array(rp.raw_colors_visible[:2, :2], copy=True),
        "black_per_colour": [float(v) for v in rp.black_level_per_channel],
        "white": float(rp.white_level),
        "cam_mul": list(rp.camera_whitebalance),
        "rgb_xyz": np.array(rp.rgb_xyz_matrix, dtype=np.float64, copy=True),
        "rgb_cam": np.array(rp.color_matrix, dtype=np.float64, copy=True),
        "sizes": rp.sizes,
    }


def _decode(path: Path) -> tuple[dict, str]:
    """Decode ``path`` with LibRaw: its fields and what the decoder printed on C-level stderr.

    Every LibRaw failure becomes the :class:`RawError` that says what is wrong with the file.
    """
    import rawpy

    capture = _CaptureCStderr()
    try:
        with warnings.catch_warnings(), capture:
            warnings.simplefilter("ignore", category=UserWarning)
            with rawpy.imread(str(path)) as rp:
                fields = _libraw_fields(path, rp, rawpy)
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
    return fields, capture.text


def _check_decoded(path: Path, fields: dict, decoder_text: str) -> tuple[str, tuple[float, ...]]:
    """Refuse data the decoder complained about or that are no usable Bayer mosaic; return the
    pattern string and the black level per position."""
    complaints = [
        line.strip() for line in decoder_text.splitlines() if any(m in line.lower() for m in _CORRUPTION_MESSAGES)
    ]
    if complaints:
        raise CorruptRawFileError(path, f"truncated or corrupt raw data (decoder: {complaints[0]})")
    visible, colors, desc = fields["visible"], fields["colors"], fields["desc"]
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
    black = tuple(fields["black_per_colour"][int(i)] for i in colors.ravel())
    if fields["white"] <= max(black):
        raise CorruptRawFileError(path, f"white level {fields['white']} is not above the black levels {black}")
    return cfa, black


def _colour_matrices(rgb_xyz: np.ndarray, rgb_cam: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(xyz_to_cam, ccm)`` from LibRaw's matrices; None for a matrix the file does not have.

    LibRaw fills cam_xyz (rawpy's rgb_xyz_matrix) from its built-in table for proprietary
    formats, and only the derived rgb_cam (rawpy's color_matrix) for DNG files; all zeros
    means "no matrix".
    """
    xyz_to_cam = rgb_xyz[:3, :3]
    if not np.any(xyz_to_cam) or not np.all(np.isfinite(xyz_to_cam)):
        xyz_to_cam = None
    ccm = None
    if xyz_to_cam is None:
        ccm = rgb_cam[:3, :3]
        if not np.any(ccm) or not np.all(np.isfinite(ccm)):
            ccm = None
    return xyz_to_cam, ccm


def read_raw(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> RawImage:
    """Read a camera raw file into a :class:`RawImage` through rawpy/LibRaw.

    Every format LibRaw reads (DNG, CRW, CR2, NEF, ARW, KDC, ...) with a 2x2
    Bayer sensor is accepted. Arrays are copied out of the rawpy object, which
    is closed before returning. See :mod:`drifthelpers.raw` for the decisions on
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
    import rawpy  # noqa: F401 - fail here, before any check, when rawpy is missing

    path = Path(path)
    check_readable(path)
    _check_tiff_layout(path, max_pixels)
    fields, decoder_text = _decode(path)
    cfa, black = _check_decoded(path, fields, decoder_text)

    visible = fields["visible"]
    h, w = visible.shape
    visible = visible[: h - h % 2, : w - w % 2]  # whole 2x2 cells; the phase stays
    if not visible.flags.c_contiguous:
        visible = np.ascontiguousarray(visible)
    xyz_to_cam, ccm = _colour_matrices(fields["rgb_xyz"], fields["rgb_cam"])
    sizes = fields["sizes"]
    return RawImage(
        raw=visible,
        cfa=cfa,
        black_level=black,
        white_level=fields["white"],
        wb_gains=_normalise_wb(fields["cam_mul"]),
        ccm=ccm,
        xyz_to_cam=xyz_to_cam,
        pixel_aspect=float(sizes.pixel_aspect) if sizes.pixel_aspect else 1.0,
        source=str(path),
        camera=_camera_name(path),
    )
