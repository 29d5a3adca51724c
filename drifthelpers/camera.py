"""The camera description shared by the whole data path.

One frozen value type, :class:`Camera`, carries what a data model needs to turn a mosaic into
an image: the CFA pattern, black and white level, white-balance gains, the colour matrix and
the display gamma. A raw file (:meth:`Camera.from_raw_image`), a data set's ``camera.json``
(:meth:`Camera.from_json`), the simulated sensor (``SensorParams.camera()``) and the data
models (``isp.CameraParams`` is this class) all produce or consume the same object.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["Camera", "CameraFileError", "CFA_PATTERNS", "IDENTITY_CCM"]

CFA_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
IDENTITY_CCM = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
DEFAULT_GAMMA = 2.2


class CameraFileError(ValueError):
    """A ``camera.json`` file is unreadable or its values are invalid; the message names it."""


def _floats(values, name: str) -> list[float]:
    try:
        flat = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from None
    out = [float(v) for v in flat]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {values!r}")
    return out


@dataclass(frozen=True)
class Camera:
    """The fixed camera values a data model needs.

    Attributes:
        cfa: Bayer pattern of the mosaic's top-left 2x2 cell, e.g. ``"RGGB"``.
        black_level: black level in DN per position (TL, TR, BL, BR); one value is repeated.
        white_level: saturation level in DN.
        wb_gains: white-balance gains (R, G, B) applied after demosaicing; ``(1, 1, 1)`` when
            unknown.
        ccm: camera-RGB to linear-sRGB matrix (rows are output channels); identity when unknown.
        gamma: display gamma, the encoding is ``x ** (1 / gamma)``.
        notes: provenance, and which numbers are approximate.

    Example:
        >>> cam = Camera("RGGB", (32.0,) * 4, 1023.0)
        >>> cam.ccm[0], cam.gamma
        ((1.0, 0.0, 0.0), 2.2)
        >>> Camera.from_dict(cam.to_dict()) == cam
        True
    """

    cfa: str
    black_level: tuple[float, float, float, float]
    white_level: float
    wb_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ccm: tuple[tuple[float, float, float], ...] = IDENTITY_CCM
    gamma: float = DEFAULT_GAMMA
    notes: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.cfa, str) or self.cfa.upper() not in CFA_PATTERNS:
            raise ValueError(f"cfa must be one of {CFA_PATTERNS}, got {self.cfa!r}")
        object.__setattr__(self, "cfa", self.cfa.upper())
        black = _floats(self.black_level, "black_level")
        if len(black) == 1:
            black = black * 4
        if len(black) != 4 or min(black) < 0:
            raise ValueError(f"black_level must be 4 values >= 0 (TL, TR, BL, BR), got {self.black_level}")
        object.__setattr__(self, "black_level", tuple(black))
        white = float(self.white_level)
        if not math.isfinite(white) or white <= max(black):
            raise ValueError(f"white_level must be finite and above every black_level {black}, got {white}")
        object.__setattr__(self, "white_level", white)
        gains = _floats(self.wb_gains, "wb_gains")
        if len(gains) != 3:
            raise ValueError(f"wb_gains must have 3 values (R, G, B), got {self.wb_gains}")
        object.__setattr__(self, "wb_gains", tuple(gains))
        try:
            rows = tuple(tuple(_floats(r, "ccm")) for r in self.ccm)
        except TypeError:
            raise ValueError(f"ccm must be a 3x3 matrix, got {self.ccm!r}") from None
        if len(rows) != 3 or any(len(r) != 3 for r in rows):
            raise ValueError(f"ccm must be a 3x3 matrix, got {self.ccm}")
        object.__setattr__(self, "ccm", rows)
        gamma = float(self.gamma)
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a finite number > 0, got {self.gamma}")
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "notes", str(self.notes))

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (lists instead of tuples); ``gamma`` only when it is
        not the display default 2.2."""
        d: dict[str, Any] = {
            "cfa": self.cfa,
            "black_level": list(self.black_level),
            "white_level": self.white_level,
            "wb_gains": list(self.wb_gains),
            "ccm": [list(row) for row in self.ccm],
            "notes": self.notes,
        }
        if self.gamma != DEFAULT_GAMMA:
            d["gamma"] = self.gamma
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Camera:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, ``wb_gains``/``ccm``/``gamma``
        may be missing (unit gains, identity, 2.2).

        Raises:
            ValueError: a required key (``cfa``, ``black_level``, ``white_level``) is missing
                or a value is invalid.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"camera metadata must be a JSON object, got {type(d).__name__}")
        try:
            cfa, black, white = d["cfa"], d["black_level"], d["white_level"]
        except KeyError as err:
            raise ValueError(f"camera metadata lacks the key {err}") from None
        wb = d.get("wb_gains")
        ccm = d.get("ccm")
        return cls(cfa, black, white, (1.0, 1.0, 1.0) if wb is None else wb,
                   IDENTITY_CCM if ccm is None else ccm,
                   float(d.get("gamma", DEFAULT_GAMMA)), str(d.get("notes", "")))

    @classmethod
    def from_json(cls, path) -> Camera:
        """Read a data set's ``camera.json``.

        Raises:
            CameraFileError: the file cannot be read, is not JSON, or holds invalid values
                (the message names the file).
        """
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as exc:
            raise CameraFileError(f"invalid camera metadata in {path}: {exc}") from None

    # ------------------------------------------------------------------ constructors and views

    @classmethod
    def from_dataset_camera(cls, camera, gamma: float = DEFAULT_GAMMA) -> Camera:
        """The camera values of a data set: a :class:`Camera`, or a dict with the same keys.

        Example:
            >>> Camera.from_dataset_camera({"cfa": "RGGB", "black_level": 64, "white_level": 1023,
            ...     "wb_gains": (2.0, 1.0, 1.5), "ccm": ((1, 0, 0), (0, 1, 0), (0, 0, 1))}).wb_gains
            (2.0, 1.0, 1.5)
        """
        if isinstance(camera, Camera):
            return camera if camera.gamma == gamma else camera.with_gamma(gamma)
        if isinstance(camera, Mapping):
            return cls.from_dict({**camera, "gamma": gamma})
        get = lambda k, default=None: getattr(camera, k, default)  # noqa: E731 - any object with the fields
        return cls.from_dict({"cfa": get("cfa"), "black_level": get("black_level"),
                              "white_level": get("white_level"), "wb_gains": get("wb_gains"),
                              "ccm": get("ccm"), "gamma": gamma, "notes": get("notes", "") or ""})

    @classmethod
    def from_raw_image(cls, raw_image, gamma: float = DEFAULT_GAMMA) -> Camera:
        """The camera values of a :class:`drifthelpers.raw.RawImage`.

        A missing white balance becomes unit gains and a missing colour matrix the identity
        (the output then stays in camera RGB), as LibRaw does for such files.

        Example:
            >>> import numpy as np
            >>> from drifthelpers.raw import RawImage
            >>> ri = RawImage(np.zeros((4, 4), np.uint16), "GRBG", (0.0,) * 4, 255.0)
            >>> Camera.from_raw_image(ri).wb_gains
            (1.0, 1.0, 1.0)
        """
        wb = (1.0, 1.0, 1.0) if raw_image.wb_gains is None else tuple(raw_image.wb_gains)
        ccm = IDENTITY_CCM if raw_image.ccm is None else tuple(map(tuple, raw_image.ccm))
        return cls(raw_image.cfa, tuple(raw_image.black_level), float(raw_image.white_level), wb, ccm, gamma)

    def with_gamma(self, gamma: float) -> Camera:
        """The same camera with another display gamma."""
        return Camera(self.cfa, self.black_level, self.white_level, self.wb_gains, self.ccm, gamma, self.notes)

    def normalised(self) -> Camera:
        """Same rendering with ``wb_gains`` scaled to ``G = 1`` and the CCM scaled back.

        ``ccm @ diag(wb)`` is unchanged, so a linear chain renders identically (the published
        microscopy fit has ``G != 1``).

        Example:
            >>> Camera("RGGB", 0.0, 1.0, (4.0, 2.0, 3.0)).normalised().wb_gains
            (2.0, 1.0, 1.5)
        """
        g = self.wb_gains[1]
        if g == 0:
            raise ValueError("green gain is zero; cannot normalise")
        return Camera(self.cfa, self.black_level, self.white_level, tuple(w / g for w in self.wb_gains),
                      tuple(tuple(v * g for v in row) for row in self.ccm), self.gamma,
                      (self.notes + " [normalised to G=1]").strip())
