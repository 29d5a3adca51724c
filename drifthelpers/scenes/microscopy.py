"""Blood smears: one stained leukocyte of a Raw-Microscopy class among red cells.

Bright-field (Romanowsky / May-Gruenwald-Giemsa stain): the generator paints stain
*concentrations* with signed-distance shapes and converts them to colour by Beer-Lambert's law
only at the end (see :mod:`drifthelpers.scenes`). 0.1625 um per pixel (40x objective, 6.5 um
pixels).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .shapes import (
    _arc_sd,
    _as_rng,
    _check_size,
    _ellipse_sd,
    _grid,
    _harmonics,
    _noise,
    _rot,
    _segment_sd,
    _soft,
    _window,
)

__all__ = [
    "LEUKOCYTE_CLASSES",
    "CLASS_COUNTS_PAPER",
    "STAIN_ABSORBANCE",
    "class_frequencies",
    "sample_classes",
    "blood_smear",
]

#: Leukocyte class codes of Raw-Microscopy, in the order used for labels.
LEUKOCYTE_CLASSES: tuple[str, ...] = ("BAS", "EOS", "KSC", "LYA", "LYT", "MON", "NGB", "NGS", "UNC")
#: Number of crops per class in the published Raw-Microscopy data set (940 in total).
CLASS_COUNTS_PAPER: dict[str, int] = {
    "BAS": 18,
    "EOS": 54,
    "KSC": 163,
    "LYA": 30,
    "LYT": 230,
    "MON": 191,
    "NGB": 8,
    "NGS": 216,
    "UNC": 30,
}

#: Absorbance (natural-log optical density per unit concentration) of each stain in the camera's
#: linear R, G, B. Hand-tuned so that the transmitted colours look like MGG smears: purple
#: chromatin, sky-blue basophilic cytoplasm, lilac neutrophil cytoplasm, orange-red eosinophil
#: granules, blue-black basophil granules, salmon-pink haemoglobin.
STAIN_ABSORBANCE: dict[str, tuple[float, float, float]] = {
    "chromatin": (1.10, 1.45, 0.55),
    "basophilic": (0.62, 0.34, 0.10),
    "monocytic": (0.34, 0.27, 0.15),
    "neutrophilic": (0.12, 0.30, 0.15),
    "eosinophilic": (0.05, 0.85, 1.15),
    "basophil_granule": (1.45, 1.80, 0.85),
    "haemoglobin": (0.10, 0.62, 0.42),
}

_RBC_RADIUS_PX = (19.0, 24.0)


def _granules(rng, weight, n, sigma, amplitude=(0.6, 1.4)):
    """Stain concentration of ``n`` Gaussian granules placed with probability ~ ``weight``.

    Each granule has peak concentration ~1 (times a random amplitude).
    """
    shape = weight.shape
    if n <= 0 or weight.sum() <= 0:
        return np.zeros(shape, np.float32)
    p = weight.ravel().astype(np.float64)
    p /= p.sum()
    idx = rng.choice(p.size, size=int(n), p=p)
    imp = np.zeros(p.size, np.float32)
    np.add.at(imp, idx, rng.uniform(*amplitude, size=int(n)).astype(np.float32))
    field = ndimage.gaussian_filter(imp.reshape(shape), sigma)
    return field * np.float32(2 * np.pi * sigma * sigma)


# =============================================================================================
# classes and sampling
# =============================================================================================


def _check_class(cls: str) -> str:
    if cls not in LEUKOCYTE_CLASSES:
        raise ValueError(f"unknown leukocyte class {cls!r}; valid classes: {LEUKOCYTE_CLASSES}")
    return cls


def class_frequencies() -> dict[str, float]:
    """Class frequencies of the published data set (sum to 1).

    Example:
        >>> round(class_frequencies()["LYT"], 4)
        0.2447
    """
    total = sum(CLASS_COUNTS_PAPER.values())
    return {c: CLASS_COUNTS_PAPER[c] / total for c in LEUKOCYTE_CLASSES}


def sample_classes(
    n: int,
    rng: np.random.Generator | int | None = None,
    imbalance: str = "paper",
    min_per_class: int = 1,
) -> list[str]:
    """A shuffled list of ``n`` class labels for a generated data set.

    Args:
        n: number of labels, >= ``9 * min_per_class``.
        rng: Generator or seed.
        imbalance: "paper" (the published class imbalance) or "balanced" (equal shares).
        min_per_class: every class appears at least this many times, so that small mini data
            sets still contain the rare classes (NGB, BAS). >= 0.

    Returns:
        list of class codes. Counts are ``min_per_class`` plus the remaining labels shared in
        proportion to the target frequencies (largest-remainder rounding), then shuffled.

    Example:
        >>> labels = sample_classes(45, np.random.default_rng(0), min_per_class=2)
        >>> len(labels), min(labels.count(c) for c in LEUKOCYTE_CLASSES)
        (45, 2)
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    if not isinstance(min_per_class, (int, np.integer)) or min_per_class < 0:
        raise ValueError(f"min_per_class must be a non-negative integer; got {min_per_class!r}")
    k = len(LEUKOCYTE_CLASSES)
    if n < k * min_per_class:
        raise ValueError(
            f"n must be >= {k} * min_per_class = {k * min_per_class}; got n={n}"
        )
    if imbalance == "paper":
        freq = np.array([class_frequencies()[c] for c in LEUKOCYTE_CLASSES])
    elif imbalance == "balanced":
        freq = np.full(k, 1.0 / k)
    else:
        raise ValueError(f"imbalance must be 'paper' or 'balanced'; got {imbalance!r}")
    rest = n - k * min_per_class
    quota = freq * rest
    counts = np.floor(quota).astype(int)
    remainder = quota - counts
    # largest remainder; ties broken at random so no class is systematically favoured
    order = np.lexsort((_as_rng(rng).random(k), -remainder))
    counts[order[: rest - counts.sum()]] += 1
    counts += min_per_class
    gen = _as_rng(rng)
    labels = np.repeat(np.array(LEUKOCYTE_CLASSES), counts)
    gen.shuffle(labels)
    return [str(c) for c in labels]


# =============================================================================================
# blood smear
# =============================================================================================

# cell radius range (px) per class at 0.1625 um / px
_CELL_RADIUS = {
    "BAS": (30.0, 37.0),
    "EOS": (36.0, 43.0),
    "KSC": (38.0, 62.0),
    "LYA": (38.0, 50.0),
    "LYT": (21.0, 27.0),
    "MON": (44.0, 56.0),
    "NGB": (34.0, 40.0),
    "NGS": (35.0, 41.0),
}


class _Stains:
    """Stain concentration maps (float32, H x W), one per entry of STAIN_ABSORBANCE."""

    def __init__(self, size: int | tuple[int, int]):
        shape = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        self.maps = {k: np.zeros(shape, np.float32) for k in STAIN_ABSORBANCE}

    def add(self, name: str, conc) -> None:
        self.maps[name] += conc

    def optical_density(self) -> np.ndarray:
        size = next(iter(self.maps.values())).shape
        od = np.zeros((*size, 3), np.float32)
        for name, conc in self.maps.items():
            if conc.any():
                od += conc[..., None] * np.asarray(STAIN_ABSORBANCE[name], np.float32)
        return od


def _lobed_nucleus(rng, x, y, cx, cy, R, n_lobes, theta, lobe_a, lobe_b, strand_hw):
    """Lobes along an arc around the cell centre, linked by thin chromatin strands.

    Returns (signed distance, lobe centres).
    """
    rp = 0.45 * R
    step = math.radians(min(70.0, 300.0 / max(n_lobes - 1, 1)))
    start = theta - 0.5 * step * (n_lobes - 1)
    centres = []
    for i in range(n_lobes):
        ang = start + i * step + rng.uniform(-0.12, 0.12)
        rr = rp * rng.uniform(0.9, 1.1)
        centres.append((cx + rr * math.cos(ang), cy + rr * math.sin(ang), ang))
    sd = None
    for px, py, ang in centres:
        a = lobe_a * R * rng.uniform(0.9, 1.1)
        b = lobe_b * R * rng.uniform(0.9, 1.1)
        lobe = _ellipse_sd(x, y, px, py, a, b, ang + rng.uniform(-0.25, 0.25),
                           _harmonics(rng, 0.07, 4))
        sd = lobe if sd is None else np.maximum(sd, lobe)
    for (x0, y0, _), (x1, y1, _) in zip(centres[:-1], centres[1:]):
        sd = np.maximum(sd, _segment_sd(x, y, (x0, y0), (x1, y1), strand_hw))
    return sd, [(px, py) for px, py, _ in centres]


def _render_leukocyte(cls, rng, x_full, y_full, size, stains_full, strength=1.0):
    """Paint one leukocyte of class ``cls`` into ``stains_full``; return its geometry.

    Work is done in a window around the cell and pasted into the full-size maps and masks.
    """
    cx = size / 2 + rng.uniform(-0.07, 0.07) * size
    cy = size / 2 + rng.uniform(-0.07, 0.07) * size
    R = rng.uniform(*_CELL_RADIUS[cls])
    y0, y1, x0, x1 = _window(cx, cy, (2.4 if cls == "KSC" else 1.6) * R + 6, size)
    x, y = x_full[:, x0:x1], y_full[y0:y1, :]
    shape = (y1 - y0, x1 - x0)
    stains = _Stains(shape)
    info = _draw_leukocyte(cls, rng, x, y, shape, stains, strength, cx, cy, R)
    for name, conc in stains.maps.items():
        if conc.any():
            stains_full.maps[name][y0:y1, x0:x1] += conc
    for key in ("cell_mask", "nucleus_mask"):
        full = np.zeros((size, size), bool)
        full[y0:y1, x0:x1] = info[key]
        info[key] = full
    return info


def _draw_leukocyte(cls, rng, x, y, shape, stains, strength, cx, cy, R):
    """Class-specific drawing on the window grid ``x`` (1, w), ``y`` (h, 1).

    Steps, in the order they draw random numbers: the outline, the nucleus (whose shape and
    chromatin texture depend on the class), then cytoplasm and granules.
    """
    size = shape  # noise fields are drawn at the window shape
    theta = rng.uniform(0, 2 * np.pi)
    ecc = rng.uniform(0.0, 0.08)
    info = {"center_xy": (cx, cy), "cell_radius_px": R, "n_lobes": 1}
    if cls == "KSC":
        return _draw_smudge_cell(rng, x, y, size, stains, strength, cx, cy, R, theta, info)

    cell_sd, indent = _cell_outline(cls, rng, x, y, cx, cy, R, theta, ecc)
    cell = _soft(cell_sd, 1.2)
    draw_nucleus = _NUCLEI.get(cls)
    if draw_nucleus is None:  # pragma: no cover - guarded by _check_class
        raise ValueError(f"no renderer for class {cls!r}")
    nuc_sd, n_lobes, dense, chroma = draw_nucleus(cls, rng, x, y, size, cx, cy, R, theta)
    nuc = _soft(nuc_sd, 1.2) * cell
    stains.add("chromatin", strength * dense * nuc * np.clip(chroma, 0.1, None))
    _draw_cytoplasm(cls, rng, x, y, size, stains, strength, cx, cy, R, cell_sd, cell, nuc)

    cell_mask = cell_sd > 0
    nucleus_mask = (nuc_sd > 0) & cell_mask
    info.update(cell_mask=cell_mask, nucleus_mask=nucleus_mask, n_lobes=n_lobes,
                indenting_rbcs=indent)
    return info


def _draw_smudge_cell(rng, x, y, size, stains, strength, cx, cy, R, theta, info):
    """KSC smudge cell: ruptured, no membrane; smeared pale chromatin with streaks ("basket")."""
    a, b = R * rng.uniform(1.0, 1.35), R * rng.uniform(0.65, 0.95)
    sd = _ellipse_sd(x, y, cx, cy, a, b, theta, _harmonics(rng, 0.22, 7))
    edge = rng.uniform(6.0, 12.0)
    cover = _soft(sd, edge)
    # streaks along the smear direction: 1D noise across, looked up at rotated coords
    u, v = _rot(x - cx, y - cy, theta)
    n_line = 4 * max(size)
    line = ndimage.gaussian_filter1d(rng.standard_normal(n_line), rng.uniform(1.5, 3.0))
    line /= line.std() + 1e-8
    streak = np.interp(v, np.arange(n_line) - n_line / 2, line).astype(np.float32)
    texture = 0.55 + 0.25 * streak + 0.2 * _noise(rng, size, 1.5)
    conc = rng.uniform(0.35, 0.6) * cover * np.clip(texture, 0.05, None)
    # a few dark chromatin threads of the ruptured nucleus
    for _ in range(rng.integers(2, 7)):
        ang = theta + rng.normal(0, 0.5)
        p0 = (cx + rng.normal(0, 0.3 * a), cy + rng.normal(0, 0.3 * b))
        ln = rng.uniform(0.4, 1.0) * a
        p1 = (p0[0] + ln * math.cos(ang), p0[1] + ln * math.sin(ang))
        conc += 0.5 * cover * _soft(_segment_sd(x, y, p0, p1, rng.uniform(0.6, 1.2)), 1.5)
    if rng.random() < 0.5:  # remnant of the nuclear core
        core = _ellipse_sd(x, y, cx + rng.normal(0, 5), cy + rng.normal(0, 5),
                           0.35 * a, 0.3 * b, theta, _harmonics(rng, 0.15))
        conc += rng.uniform(0.2, 0.45) * _soft(core, 5.0)
    stains.add("chromatin", strength * conc)
    mask = sd > 0
    info.update(cell_mask=mask, nucleus_mask=mask, cell_radius_px=math.sqrt(a * b))
    return info


def _cell_outline(cls, rng, x, y, cx, cy, R, theta, ecc):
    """Signed distance to the cell's wobbly outline, and the red cells that indent it.

    Reactive lymphocytes (LYA) hug 2-4 neighbouring red cells; those are returned as
    ``(x, y, radius)`` so that the red cells are drawn where they indent the outline.
    """
    # every wobble amplitude is drawn (the dict's values and the default alike)
    wobble = {"LYA": rng.uniform(0.08, 0.14), "MON": rng.uniform(0.04, 0.08)}.get(
        cls, rng.uniform(0.02, 0.05))
    cell_sd = _ellipse_sd(x, y, cx, cy, R * (1 + ecc), R * (1 - ecc), theta,
                          _harmonics(rng, wobble))
    indent = []
    if cls == "LYA":
        for _ in range(rng.integers(2, 5)):
            ang = rng.uniform(0, 2 * np.pi)
            r_rbc = rng.uniform(*_RBC_RADIUS_PX)
            dist = R + r_rbc * rng.uniform(0.55, 0.8)
            px, py = cx + dist * math.cos(ang), cy + dist * math.sin(ang)
            rbc_sd = _ellipse_sd(x, y, px, py, r_rbc, r_rbc * 0.95, ang)
            cell_sd = np.minimum(cell_sd, -(rbc_sd + 1.5))
            indent.append((px, py, r_rbc))
    return cell_sd, indent


# Nucleus drawers: (cls, rng, x, y, size, cx, cy, R, theta) ->
# (signed distance, number of lobes, chromatin density, chromatin texture).


def _nucleus_small_lymphocyte(cls, rng, x, y, size, cx, cy, R, theta):
    """LYT: a round, dense nucleus filling most of the cell."""
    off = R * rng.uniform(0.03, 0.1)
    ncx, ncy = cx + off * math.cos(theta), cy + off * math.sin(theta)
    k = rng.uniform(0.8, 0.88)
    nuc_sd = _ellipse_sd(x, y, ncx, ncy, R * k, R * k * rng.uniform(0.9, 1.0), theta,
                         _harmonics(rng, 0.03))
    dense = rng.uniform(1.6, 2.0)
    chroma = 0.8 + 0.2 * _noise(rng, size, 1.5)
    return nuc_sd, 1, dense, chroma


def _nucleus_reactive_lymphocyte(cls, rng, x, y, size, cx, cy, R, theta):
    """LYA: an eccentric oval nucleus with less dense chromatin."""
    off = R * rng.uniform(0.05, 0.22)
    ncx, ncy = cx + off * math.cos(theta), cy + off * math.sin(theta)
    k = rng.uniform(0.45, 0.55)
    nuc_sd = _ellipse_sd(x, y, ncx, ncy, R * k, R * k * rng.uniform(0.75, 0.95),
                         theta + 1.0, _harmonics(rng, 0.06))
    dense = rng.uniform(1.0, 1.3)
    chroma = 0.85 + 0.15 * _noise(rng, size, 1.2)
    return nuc_sd, 1, dense, chroma


def _nucleus_monocyte(cls, rng, x, y, size, cx, cy, R, theta):
    """MON: a kidney / folded nucleus (an ellipse with a notch bitten out of one long side)
    with lacy, open chromatin."""
    off = R * rng.uniform(0.05, 0.15)
    ncx, ncy = cx - off * math.cos(theta), cy - off * math.sin(theta)
    a, b = R * rng.uniform(0.6, 0.7), R * rng.uniform(0.44, 0.52)
    nuc_sd = _ellipse_sd(x, y, ncx, ncy, a, b, theta, _harmonics(rng, 0.07))
    nx, ny = -math.sin(theta), math.cos(theta)
    depth = b * rng.uniform(0.8, 1.15)
    notch = _ellipse_sd(x, y, ncx + depth * nx, ncy + depth * ny,
                        a * rng.uniform(0.35, 0.5), b * rng.uniform(0.5, 0.7), theta)
    nuc_sd = np.minimum(nuc_sd, -notch)
    if rng.random() < 0.5:  # a fold: extra small lobe
        fx, fy = ncx + 0.7 * a * math.cos(theta), ncy + 0.7 * a * math.sin(theta)
        nuc_sd = np.maximum(nuc_sd, _ellipse_sd(x, y, fx, fy, 0.35 * b, 0.3 * b, theta))
    dense = rng.uniform(0.75, 0.95)
    lace = _noise(rng, size, 1.0)
    chroma = 0.75 + 0.3 * np.tanh(1.5 * lace)  # lacy, open chromatin
    return nuc_sd, 1, dense, chroma


def _nucleus_band(cls, rng, x, y, size, cx, cy, R, theta):
    """NGB: a C/U-shaped band of near-constant width."""
    rc = R * rng.uniform(0.38, 0.48)
    span = math.radians(rng.uniform(190, 270))
    hw = R * rng.uniform(0.13, 0.17)
    a0 = theta - span / 2
    nuc_sd = _arc_sd(x, y, cx, cy, rc, a0, span, hw, rng.uniform(0.0, 0.15),
                     rng.uniform(0, 2 * np.pi))
    dense = rng.uniform(1.3, 1.6)
    chroma = 0.8 + 0.2 * _noise(rng, size, 1.2)
    return nuc_sd, 1, dense, chroma


def _nucleus_lobed(cls, rng, x, y, size, cx, cy, R, theta):
    """NGS (3-5 lobes), EOS and BAS (two lobes, for BAS largely hidden under granules)."""
    if cls == "NGS":
        n_lobes = int(rng.choice([3, 4, 5], p=[0.45, 0.4, 0.15]))
        lobe_a, lobe_b, hw = 0.24, 0.17, rng.uniform(0.7, 1.1)
        dense = rng.uniform(1.35, 1.65)
    elif cls == "EOS":
        n_lobes = 2
        lobe_a, lobe_b, hw = 0.30, 0.22, rng.uniform(1.0, 1.5)
        dense = rng.uniform(1.1, 1.4)
    else:  # BAS: bilobed, largely hidden under granules
        n_lobes = 2
        lobe_a, lobe_b, hw = 0.30, 0.24, rng.uniform(1.5, 2.5)
        dense = rng.uniform(0.7, 0.95)
    if n_lobes == 2:
        # two lobes ("spectacles") either side of the centre, joined by a strand
        d = 0.42 * R
        p0 = (cx + d * math.cos(theta), cy + d * math.sin(theta))
        p1 = (cx - d * math.cos(theta), cy - d * math.sin(theta))
        nuc_sd = _segment_sd(x, y, p0, p1, hw)
        for p in (p0, p1):
            nuc_sd = np.maximum(nuc_sd, _ellipse_sd(
                x, y, *p, lobe_a * R, lobe_b * R,
                theta + np.pi / 2 + rng.uniform(-0.3, 0.3), _harmonics(rng, 0.06, 4)))
    else:
        nuc_sd, _ = _lobed_nucleus(rng, x, y, cx, cy, R, n_lobes, theta, lobe_a, lobe_b,
                                   hw)
    chroma = 0.8 + 0.2 * _noise(rng, size, 1.2)
    return nuc_sd, n_lobes, dense, chroma


_NUCLEI = {
    "LYT": _nucleus_small_lymphocyte,
    "LYA": _nucleus_reactive_lymphocyte,
    "MON": _nucleus_monocyte,
    "NGB": _nucleus_band,
    "NGS": _nucleus_lobed,
    "EOS": _nucleus_lobed,
    "BAS": _nucleus_lobed,
}


def _draw_cytoplasm(cls, rng, x, y, size, stains, strength, cx, cy, R, cell_sd, cell, nuc):
    """Cytoplasm stain and granules of a class (LYT pale blue, LYA deep blue rim, MON grey-blue
    ground glass with vacuoles, NGS/NGB fine lilac granules, EOS orange-red and BAS blue-black
    coarse granules)."""
    cyto_only = cell * (1.0 - nuc)
    if cls == "LYT":
        stains.add("basophilic", strength * rng.uniform(0.45, 0.7) * cell)
    elif cls == "LYA":
        # deep blue, darker towards the periphery ("skirt" staining of reactive lymphocytes)
        rim = np.clip(1.0 - cell_sd / R, 0.0, 1.0)
        stains.add("basophilic", strength * rng.uniform(0.8, 1.05) * cell * (0.55 + 0.6 * rim))
    elif cls == "MON":
        ground = 1.0 + 0.08 * _noise(rng, size, 0.8)  # ground-glass
        vac = np.zeros(size, np.float32)
        for _ in range(rng.integers(0, 7)):
            ang, rr = rng.uniform(0, 2 * np.pi), R * rng.uniform(0.3, 0.85)
            vac = np.maximum(vac, _soft(_ellipse_sd(
                x, y, cx + rr * math.cos(ang), cy + rr * math.sin(ang),
                rng.uniform(2.0, 5.0), rng.uniform(2.0, 5.0)), 1.0))
        conc = rng.uniform(0.8, 1.05) * cell * ground * (1.0 - 0.8 * vac * (1 - nuc))
        stains.add("monocytic", strength * conc)
    elif cls in ("NGS", "NGB"):
        stains.add("neutrophilic", strength * rng.uniform(0.7, 1.0) * cell)
        area = float(cyto_only.sum())
        fine = _granules(rng, cyto_only, int(area * 0.25), 0.6, (0.3, 0.8))
        stains.add("neutrophilic", strength * 0.6 * fine * cell)
    elif cls == "EOS":
        stains.add("neutrophilic", strength * 0.3 * cell)
        area = float(cell.sum())
        weight = cyto_only + 0.25 * nuc
        coarse = _granules(rng, weight, int(area / 9.0), rng.uniform(1.05, 1.3), (0.7, 1.2))
        stains.add("eosinophilic", strength * rng.uniform(0.85, 1.1) * np.minimum(coarse, 1.6)
                   * cell)
    elif cls == "BAS":
        stains.add("neutrophilic", strength * 0.4 * cell)
        area = float(cell.sum())
        coarse = _granules(rng, cell, int(area / rng.uniform(9.0, 14.0)),
                           rng.uniform(1.1, 1.6), (0.5, 1.5))
        stains.add("basophil_granule", strength * rng.uniform(0.8, 1.1)
                   * np.minimum(coarse, 1.8) * cell)


def _render_rbcs(rng, size, stains, avoid_xy, avoid_r, extra):
    """Scatter red cells (biconcave discs with central pallor) around the leukocyte."""
    density = rng.uniform(0.2, 0.55)  # area fraction covered by red cells
    r_mean = 0.5 * sum(_RBC_RADIUS_PX)
    target = int(density * size * size / (np.pi * r_mean**2))
    n_try = 6 * target + 10
    cand_r = rng.uniform(*_RBC_RADIUS_PX, size=n_try)
    cand = rng.uniform(-1.0, 1.0, size=(n_try, 2)) * (size / 2 + cand_r[:, None]) + size / 2
    far = np.hypot(cand[:, 0] - avoid_xy[0], cand[:, 1] - avoid_xy[1]) >= avoid_r + 0.85 * cand_r
    placed = np.zeros((n_try + len(extra), 3))
    for j, e in enumerate(extra):
        placed[j] = e
    n_placed = len(extra)
    out = []
    for (px, py), r in zip(cand[far], cand_r[far]):
        if len(out) >= target:
            break
        q = placed[:n_placed]
        # red cells may overlap a little, as in a real smear, but not pile up
        if np.any(np.hypot(q[:, 0] - px, q[:, 1] - py) < 1.45 * np.minimum(q[:, 2], r)):
            continue
        placed[n_placed] = (px, py, r)
        n_placed += 1
        out.append((float(px), float(py), float(r)))
    for px, py, r in out + list(extra):
        win = _window(px, py, r * 1.15 + 2, size)
        if win is None:
            continue
        y0, y1, x0, x1 = win
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        ang = rng.uniform(0, np.pi)
        sd = _ellipse_sd(xx, yy, px, py, r, r * rng.uniform(0.88, 1.0), ang,
                         _harmonics(rng, 0.025, 4))
        rho = np.clip(1.0 - sd / r, 0.0, 1.0)  # 0 at centre, 1 at the rim
        pallor = rng.uniform(0.5, 0.7)
        profile = 1.0 - pallor * np.exp(-((rho / rng.uniform(0.45, 0.6)) ** 2))
        conc = rng.uniform(0.65, 0.9) * profile * _soft(sd, 1.3)
        stains.maps["haemoglobin"][y0:y1, x0:x1] += conc
    return len(out) + len(extra)


def blood_smear(
    cls: str,
    rng: np.random.Generator | int | None = None,
    size: int = 256,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Bright-field image of one stained leukocyte among red cells.

    Morphology per class (May-Gruenwald-Giemsa): BAS dark granules hiding a bilobed nucleus;
    EOS bilobed nucleus and coarse orange-red granules; KSC smudge cell (smeared pale chromatin,
    no cytoplasm border); LYA large irregular reactive lymphocyte with deep-blue cytoplasm
    indented by red cells; LYT small round cell, dense nucleus, thin pale-blue rim; MON large
    cell, folded/kidney nucleus with lacy chromatin, grey-blue cytoplasm, vacuoles; NGB C/U band
    nucleus; NGS 3-5 lobes joined by thin strands, lilac finely granular cytoplasm; UNC a
    degraded, out-of-focus cell of a random other type.

    Args:
        cls: class code, one of ``LEUKOCYTE_CLASSES``.
        rng: Generator (preferred) or int seed; None draws fresh entropy.
        size: image side in pixels (0.1625 um / px), >= 64.
        return_info: also return the ground-truth geometry.

    Returns:
        radiance (size, size, 3) float32 linear in [0, 1]; with ``return_info`` also a dict:
        ``cls``, ``center_xy``, ``cell_radius_px``, ``cell_mask`` and ``nucleus_mask``
        (bool, size x size), ``n_lobes`` (nuclear lobes drawn), ``nc_ratio`` (nucleus / cell
        area), ``n_rbc``, ``base_class`` (UNC only: the class it degrades), ``stains``
        (name -> concentration map).

    Example:
        >>> img = blood_smear("NGS", np.random.default_rng(0))
        >>> img.shape, img.dtype, float(img.min()) >= 0.0, float(img.max()) <= 1.0
        ((256, 256, 3), dtype('float32'), True, True)
    """
    cls = _check_class(cls)
    size = _check_size(size)
    gen = _as_rng(rng)
    x, y = _grid(size)
    stains = _Stains(size)
    base = cls
    strength, blur = 1.0, 0.0
    if cls == "UNC":
        base = str(gen.choice(["BAS", "EOS", "KSC", "LYA", "LYT", "MON", "NGB", "NGS"]))
        strength = gen.uniform(0.35, 0.75)  # poorly stained
        blur = gen.uniform(2.0, 4.0)  # out of focus (the cell is thicker than the red cells)
    info = _render_leukocyte(base, gen, x, y, size, stains, strength)
    if cls == "UNC":
        for name in STAIN_ABSORBANCE:
            if name != "haemoglobin":
                stains.maps[name] = ndimage.gaussian_filter(stains.maps[name], blur)
        if gen.random() < 0.5:  # ambiguous mix: add a faint cytoplasm stain of another type
            other = str(gen.choice(["basophilic", "monocytic", "neutrophilic"]))
            stains.add(other, gen.uniform(0.2, 0.5) * ndimage.gaussian_filter(
                info["cell_mask"].astype(np.float32), 2.0))
    n_rbc = _render_rbcs(gen, size, stains, info["center_xy"], info["cell_radius_px"],
                         info.get("indenting_rbcs", []))
    if cls == "UNC":
        stains.maps["haemoglobin"] = ndimage.gaussian_filter(stains.maps["haemoglobin"],
                                                             0.5 * blur)

    # Koehler illumination: slightly warm, with a gentle vignette and a random tilt
    lamp = np.array([0.93, 0.915, 0.89], np.float32) * gen.uniform(0.95, 1.02)
    tilt = gen.normal(0, 0.02, 2)
    r2 = ((x - size / 2) ** 2 + (y - size / 2) ** 2) / (size / 2) ** 2
    field = (1.0 - 0.04 * r2 + tilt[0] * (x / size - 0.5) + tilt[1] * (y / size - 0.5))
    od = stains.optical_density()
    radiance = lamp * field[..., None] * np.exp(-od)
    radiance = np.clip(radiance, 0.0, 1.0).astype(np.float32)
    if not return_info:
        return radiance
    cell_area = max(int(info["cell_mask"].sum()), 1)
    info.pop("indenting_rbcs", None)
    info.update(
        cls=cls,
        base_class=base if cls == "UNC" else None,
        nc_ratio=float(info["nucleus_mask"].sum()) / cell_area,
        n_rbc=n_rbc,
        stains=stains.maps,
    )
    return radiance, info
