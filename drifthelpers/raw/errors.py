"""The errors raised while reading or writing a raw file; each names the file."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "RawError",
    "RawFileNotFoundError",
    "NotARawFileError",
    "CorruptRawFileError",
    "UnsupportedSensorError",
    "NotAMosaicError",
    "UnreadableRawFileError",
    "RawImageTooLargeError",
]



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
