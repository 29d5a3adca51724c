"""Camera values of the two data sets: the built-in constants of the Zenodo release.

A data set's ``camera.json`` holds a :class:`drifthelpers.camera.Camera` (``DatasetCamera`` is
the same class under its data-set name); when a downloaded folder has none, the loaders use
:data:`REAL_CAMERAS`.

Example:
    >>> cam = REAL_CAMERAS["drone"]
    >>> cam.cfa, cam.black_level[0], cam.white_level
    ('RGGB', 4096.0, 65535.0)
    >>> DatasetCamera.from_dict(cam.to_dict()) == cam
    True
"""

from __future__ import annotations

from ..camera import Camera

__all__ = ["DatasetCamera", "REAL_CAMERAS"]

DatasetCamera = Camera
"""The camera description of a data set: :class:`drifthelpers.camera.Camera`."""

_FULL16 = 65535.0

REAL_CAMERAS: dict[str, Camera] = {
    "microscopy": Camera(
        cfa="RGGB",
        black_level=(9.834368023181512e-06 * _FULL16,) * 4,
        white_level=_FULL16,
        wb_gains=(-0.6567, 1.9673, 3.5304),
        ccm=((-2.0338, 0.0933, 0.4157), (-0.0286, 2.6464, -0.0574), (-0.5516, -0.0947, 2.9308)),
        notes=(
            "Raw-Microscopy (PCO edge 5.5, 16-bit). Values from the authors' public loader: "
            "black 9.834e-6 of full scale (= 0.645 DN), fitted WB and colour matrix "
            "(a negative R gain cancels negative matrix entries; not normalised to G=1). "
            "Approximate: white level assumed 65535 (full 16-bit scale)."
        ),
    ),
    "drone": Camera(
        cfa="RGGB",
        black_level=(4096.0,) * 4,
        white_level=_FULL16,
        wb_gains=(2.86653646, 1.0, 1.73079425),
        ccm=(
            (1.50768983, -0.33571374, -0.17197604),
            (-0.23048614, 1.70698738, -0.47650126),
            (-0.03119153, -0.32803956, 1.35923111),
        ),
        notes=(
            "Raw-Drone (DJI Mavic 2 Pro, Hasselblad L1D-20c, 12-bit left-justified in 16). "
            "WB and DNG-style colour matrix (rows sum to 1) from the authors' public loader. "
            "Approximate: black level 1/16 of full scale = 4096 DN at every site (the loader "
            "lists 0.0625/0.0626); white level taken as 65535 (the 12-bit maximum shifted "
            "is 65520)."
        ),
    ),
}
"""Built-in camera values for the real Zenodo release (used when no camera.json exists)."""
