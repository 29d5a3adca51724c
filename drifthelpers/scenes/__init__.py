"""Procedural scenes in linear radiance: blood smears with one leukocyte, and aerial tiles.

Both generators are seeded through an explicit :class:`numpy.random.Generator`, return
``(H, W, 3)`` float32 radiance in ``[0, 1]`` (linear, before any sensor), and can return the
ground-truth geometry they drew (``return_info=True``) for tests and teaching figures.

Blood smear (bright-field, Romanowsky / May-Gruenwald-Giemsa stain). Light passes through a
thin specimen, so each stain attenuates it by Beer-Lambert's law::

    radiance_c = illumination_c * exp(-sum_s absorbance_{s,c} * concentration_s(x, y))

The generator paints stain *concentrations* (chromatin, basophilic RNA, neutrophilic and
eosinophilic granules, haemoglobin, ...) with signed-distance shapes, and converts them to
colour only at the end. The scale is that of a 40x objective on 6.5 um pixels: 0.1625 um per
pixel, so a 7.5 um red cell is ~46 px wide and a 256 px crop is ~42 um.

Aerial tile (nadir view, ~6 cm ground sampling distance, as Raw-Drone): grass and soil, asphalt
roads with lane markings or a parking lot, roofs with ridge shading, trees with shadows and cars
(~4.5 m x 1.8 m -> ~75 x 30 px) aligned with the roads. The car mask comes from the same
rasterised geometry that paints the car pixels, and trees drawn later occlude both.

The package has one module per generator, ``microscopy`` (:func:`blood_smear`) and ``drone``
(:func:`aerial_tile`), and ``shapes``, the signed-distance shapes and noise both draw with;
every public name is re-exported here.
"""

from __future__ import annotations

from .drone import AERIAL_LAYERS, GSD_M, aerial_tile
from .microscopy import (
    CLASS_COUNTS_PAPER,
    LEUKOCYTE_CLASSES,
    STAIN_ABSORBANCE,
    blood_smear,
    class_frequencies,
    sample_classes,
)

__all__ = [
    "LEUKOCYTE_CLASSES",
    "CLASS_COUNTS_PAPER",
    "STAIN_ABSORBANCE",
    "AERIAL_LAYERS",
    "GSD_M",
    "class_frequencies",
    "sample_classes",
    "blood_smear",
    "aerial_tile",
]
