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
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

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

#: Layer ids in the aerial ``info["layer"]`` map (topmost layer at each pixel).
AERIAL_LAYERS: dict[str, int] = {
    "ground": 0,
    "road": 1,
    "marking": 2,
    "roof": 3,
    "car": 4,
    "tree": 5,
}
#: Ground sampling distance of the aerial tiles, metres per pixel.
GSD_M: float = 0.06

_RBC_RADIUS_PX = (19.0, 24.0)


# =============================================================================================
# small helpers
# =============================================================================================


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise ValueError(f"size must be an integer >= 64 (pixels); got {size!r}")
    return int(size)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates as broadcastable (1, W) x and (H, 1) y, float32."""
    c = np.arange(size, dtype=np.float32)
    return c[None, :], c[:, None]


def _soft(sd: np.ndarray, edge: float = 1.0) -> np.ndarray:
    """Coverage from a signed distance (positive inside), linear ramp ``edge`` px wide."""
    return np.clip(0.5 + sd / edge, 0.0, 1.0)


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Band-limited Gaussian noise with unit standard deviation.

    Smooth fields (sigma >= 4 px) are drawn on a coarser grid and interpolated up, which is
    much cheaper than a wide Gaussian filter and looks the same.
    """
    f = int(sigma // 2) if sigma >= 4 else 1
    small = (shape[0] // f + 2, shape[1] // f + 2) if f > 1 else tuple(shape)
    n = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma / f)
    if f > 1:  # nearest-neighbour upsampling smoothed by a box = linear interpolation
        n = np.repeat(np.repeat(n, f, axis=0), f, axis=1)
        n = ndimage.uniform_filter(n, f)[: shape[0], : shape[1]]
    return n / (n.std() + 1e-8)


def _harmonics(rng: np.random.Generator, amp: float, kmax: int = 6) -> list:
    """Random boundary wobble: (k, amplitude, phase) for k = 2..kmax, amplitude ~ amp / k."""
    return [(k, amp * rng.uniform(0.3, 1.0) / (k - 1), rng.uniform(0, 2 * np.pi))
            for k in range(2, kmax + 1)]


def _rot(dx, dy, theta: float):
    c, s = math.cos(theta), math.sin(theta)
    return dx * c + dy * s, -dx * s + dy * c


def _ellipse_sd(x, y, cx, cy, a, b, theta=0.0, harm=()):
    """Approximate signed distance (px, positive inside) to a wobbly rotated ellipse."""
    u, v = _rot(x - cx, y - cy, theta)
    un, vn = u / a, v / b
    rho = np.sqrt(un * un + vn * vn)
    scale = 1.0
    if harm:
        # cos(k phi + ph) from powers of the unit vector (cheaper than arctan2 and cos)
        inv = 1.0 / np.maximum(rho, 1e-6)
        c1, s1 = un * inv, vn * inv
        ck, sk, k = c1, s1, 1
        for kk, amp, ph in sorted(harm):
            while k < kk:
                ck, sk, k = ck * c1 - sk * s1, sk * c1 + ck * s1, k + 1
            scale = scale + amp * (ck * math.cos(ph) - sk * math.sin(ph))
    return (scale - rho) * math.sqrt(a * b)


def _segment_sd(x, y, p0, p1, halfwidth):
    """Signed distance to a capsule (segment p0-p1 of half-width ``halfwidth``)."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    px, py = x - p0[0], y - p0[1]
    t = np.clip((px * dx + py * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return halfwidth - np.hypot(px - t * dx, py - t * dy)


def _arc_sd(x, y, cx, cy, rc, a0, span, hw, hw_amp=0.0, hw_phase=0.0):
    """Signed distance to a thick circular arc (a band nucleus), rounded ends.

    The arc starts at angle ``a0`` and runs ``span`` radians counter-clockwise; its half-width
    varies as ``hw * (1 + hw_amp * sin(2 pi t + hw_phase))`` along the arc (t in [0, 1]).
    """
    dx, dy = x - cx, y - cy
    r = np.hypot(dx, dy)
    rel = np.mod(np.arctan2(dy, dx) - a0, 2 * np.pi)
    on_arc = rel <= span
    e0 = (cx + rc * math.cos(a0), cy + rc * math.sin(a0))
    e1 = (cx + rc * math.cos(a0 + span), cy + rc * math.sin(a0 + span))
    d0 = np.hypot(x - e0[0], y - e0[1])
    d1 = np.hypot(x - e1[0], y - e1[1])
    d = np.where(on_arc, np.abs(r - rc), np.minimum(d0, d1))
    t = np.where(on_arc, rel / span, np.where(d0 < d1, 0.0, 1.0))
    width = hw * (1.0 + hw_amp * np.sin(2 * np.pi * t + hw_phase))
    return width - d


def _window(cx, cy, radius, size):
    """Integer bounding box (y0, y1, x0, x1) of a disc, clipped to the image; None if empty."""
    y0, y1 = max(0, int(cy - radius) - 1), min(size, int(cy + radius) + 2)
    x0, x1 = max(0, int(cx - radius) - 1), min(size, int(cx + radius) + 2)
    if y0 >= y1 or x0 >= x1:
        return None
    return y0, y1, x0, x1


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
    """Class-specific drawing on the window grid ``x`` (1, w), ``y`` (h, 1)."""
    size = shape  # noise fields are drawn at the window shape
    theta = rng.uniform(0, 2 * np.pi)
    ecc = rng.uniform(0.0, 0.08)
    info = {"center_xy": (cx, cy), "cell_radius_px": R, "n_lobes": 1}

    if cls == "KSC":
        # smudge cell: ruptured, no membrane; smeared pale chromatin with streaks ("basket")
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

    wobble = {"LYA": rng.uniform(0.08, 0.14), "MON": rng.uniform(0.04, 0.08)}.get(
        cls, rng.uniform(0.02, 0.05))
    cell_sd = _ellipse_sd(x, y, cx, cy, R * (1 + ecc), R * (1 - ecc), theta,
                          _harmonics(rng, wobble))
    indent = []
    if cls == "LYA":
        # reactive lymphocytes hug neighbouring red cells: indent the outline around 2-4 RBCs
        for _ in range(rng.integers(2, 5)):
            ang = rng.uniform(0, 2 * np.pi)
            r_rbc = rng.uniform(*_RBC_RADIUS_PX)
            dist = R + r_rbc * rng.uniform(0.55, 0.8)
            px, py = cx + dist * math.cos(ang), cy + dist * math.sin(ang)
            rbc_sd = _ellipse_sd(x, y, px, py, r_rbc, r_rbc * 0.95, ang)
            cell_sd = np.minimum(cell_sd, -(rbc_sd + 1.5))
            indent.append((px, py, r_rbc))
    cell = _soft(cell_sd, 1.2)

    # ---- nucleus
    n_lobes = 1
    dense = 1.0
    if cls == "LYT":
        off = R * rng.uniform(0.03, 0.1)
        ncx, ncy = cx + off * math.cos(theta), cy + off * math.sin(theta)
        k = rng.uniform(0.8, 0.88)
        nuc_sd = _ellipse_sd(x, y, ncx, ncy, R * k, R * k * rng.uniform(0.9, 1.0), theta,
                             _harmonics(rng, 0.03))
        dense = rng.uniform(1.6, 2.0)
        chroma = 0.8 + 0.2 * _noise(rng, size, 1.5)
    elif cls == "LYA":
        off = R * rng.uniform(0.05, 0.22)
        ncx, ncy = cx + off * math.cos(theta), cy + off * math.sin(theta)
        k = rng.uniform(0.45, 0.55)
        nuc_sd = _ellipse_sd(x, y, ncx, ncy, R * k, R * k * rng.uniform(0.75, 0.95),
                             theta + 1.0, _harmonics(rng, 0.06))
        dense = rng.uniform(1.0, 1.3)
        chroma = 0.85 + 0.15 * _noise(rng, size, 1.2)
    elif cls == "MON":
        # kidney / folded nucleus: an ellipse with a notch bitten out of one long side
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
    elif cls == "NGB":
        # band: a C/U-shaped sausage of near-constant width
        rc = R * rng.uniform(0.38, 0.48)
        span = math.radians(rng.uniform(190, 270))
        hw = R * rng.uniform(0.13, 0.17)
        a0 = theta - span / 2
        nuc_sd = _arc_sd(x, y, cx, cy, rc, a0, span, hw, rng.uniform(0.0, 0.15),
                         rng.uniform(0, 2 * np.pi))
        dense = rng.uniform(1.3, 1.6)
        chroma = 0.8 + 0.2 * _noise(rng, size, 1.2)
    elif cls in ("NGS", "EOS", "BAS"):
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
    else:  # pragma: no cover - guarded by _check_class
        raise ValueError(f"no renderer for class {cls!r}")

    nuc = _soft(nuc_sd, 1.2) * cell
    stains.add("chromatin", strength * dense * nuc * np.clip(chroma, 0.1, None))

    # ---- cytoplasm and granules
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

    cell_mask = cell_sd > 0
    nucleus_mask = (nuc_sd > 0) & cell_mask
    info.update(cell_mask=cell_mask, nucleus_mask=nucleus_mask, n_lobes=n_lobes,
                indenting_rbcs=indent)
    return info


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


# =============================================================================================
# aerial tile
# =============================================================================================

# linear reflectance-like radiance of materials under daylight (camera-independent scene RGB)
_GRASS = np.array([0.070, 0.115, 0.045], np.float32)
_SOIL = np.array([0.20, 0.165, 0.11], np.float32)
_ASPHALT = np.array([0.095, 0.095, 0.10], np.float32)
_PAVEMENT = np.array([0.28, 0.27, 0.25], np.float32)
_PAINT = np.array([0.60, 0.60, 0.57], np.float32)
_TREE = np.array([0.035, 0.075, 0.028], np.float32)
_ROOFS = [
    np.array([0.30, 0.085, 0.055], np.float32),  # red clay tiles
    np.array([0.20, 0.07, 0.05], np.float32),  # dark red
    np.array([0.13, 0.13, 0.14], np.float32),  # grey concrete tiles
    np.array([0.07, 0.07, 0.08], np.float32),  # slate
]
_CAR_COLOURS = [  # (colour, share of the fleet)
    ((0.62, 0.62, 0.60), 0.22),  # white
    ((0.025, 0.025, 0.03), 0.18),  # black
    ((0.16, 0.16, 0.17), 0.18),  # grey
    ((0.38, 0.39, 0.40), 0.15),  # silver
    ((0.03, 0.07, 0.25), 0.10),  # blue
    ((0.40, 0.03, 0.03), 0.08),  # red
    ((0.05, 0.12, 0.06), 0.03),  # green
    ((0.55, 0.42, 0.06), 0.03),  # yellow
    ((0.30, 0.24, 0.17), 0.03),  # beige / brown
]
_GLASS = np.array([0.025, 0.03, 0.038], np.float32)
_SHADOW = np.array([0.30, 0.33, 0.42], np.float32)  # shade is lit by the bluish sky only


def _rounded_box_sd(x, y, cx, cy, hl, hw, angle, radius):
    """Signed distance (positive inside) to a rounded rectangle, half-sizes hl x hw."""
    u, v = _rot(x - cx, y - cy, angle)
    qx = np.abs(u) - (hl - radius)
    qy = np.abs(v) - (hw - radius)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    inside = np.minimum(np.maximum(qx, qy), 0)
    return -(outside + inside - radius), u, v


def _car_paint(u, v, hl, hw, body):
    """Per-pixel car colour in car coordinates (u along, front at +hl; v across)."""
    t = u / hl  # -1 rear .. +1 front
    s = np.abs(v) / hw
    shade = 1.0 - 0.35 * s**4  # rounded flanks
    col = body[None, None, :] * shade[..., None]
    col = np.where(((t > -0.28) & (t < 0.18))[..., None], col * 1.04, col)  # roof
    col = np.where((t > 0.45)[..., None], col * 0.96, col)  # bonnet
    windscreen = (t > 0.18) & (t < 0.45) & (s < 0.84)
    rear = (t > -0.55) & (t < -0.28) & (s < 0.8)
    glass = (windscreen | rear)[..., None]
    sky = 0.03 * (1.0 - s)[..., None]  # faint reflection of the sky
    return np.where(glass, _GLASS + sky, col)


def aerial_tile(
    rng: np.random.Generator | int | None = None,
    size: int = 256,
    car_density: float = 0.35,
    min_cars: int = 0,
    return_info: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict]:
    """Nadir aerial view at ~6 cm ground sampling distance, with an exact car mask.

    A tile is one of three kinds: a road (two lanes, dashed centre line, edge lines, sometimes a
    parking strip), a parking lot (bays), or a residential street (road, roofs). Trees with
    shadows, grass and soil fill the rest. Cars (4.0-5.0 m x 1.7-1.95 m) are aligned with the
    lanes or bays; a car shadow darkens the ground next to it; tree crowns drawn later occlude
    cars, and the mask marks only the car pixels that stay visible.

    Args:
        rng: Generator (preferred) or int seed.
        size: tile side in pixels, >= 64.
        car_density: probability that a lane slot or parking bay holds a car, in [0, 1].
        min_cars: at least this many cars are visible (extra cars are placed if needed, on
            asphalt where there is some, preferably clear of tree crowns). Raises RuntimeError
            in the rare case that no room is found (only plausible for tiny tiles). The Raw-Drone tiles all contain a car: use 1.
        return_info: also return the geometry.

    Returns:
        ``(radiance, mask)``: radiance (size, size, 3) float32 linear in [0, 1]; mask
        (size, size) bool, True on visible car pixels. With ``return_info`` a third item, a
        dict: ``kind``, ``layer`` (uint8, ids in ``AERIAL_LAYERS``), ``car_id`` (int16, -1 off
        cars), ``cars`` (list of dicts: ``center_xy``, ``length_px``, ``width_px``,
        ``angle_rad``, ``corner_radius_px``, ``colour``), ``car_paint`` (size, size, 3)
        colour painted by the car layer, ``shade`` (size, size) multiplicative tree-shadow
        factor applied to the car pixels, ``sun_offset_px``.

    Example:
        >>> img, mask = aerial_tile(np.random.default_rng(3), min_cars=1)
        >>> img.shape, mask.dtype, bool(mask.any())
        ((256, 256, 3), dtype('bool'), True)
    """
    size = _check_size(size)
    if not (isinstance(car_density, (int, float, np.floating)) and 0 <= car_density <= 1):
        raise ValueError(f"car_density must be a number in [0, 1]; got {car_density!r}")
    if not isinstance(min_cars, (int, np.integer)) or not 0 <= min_cars <= 6:
        raise ValueError(f"min_cars must be an integer in 0..6; got {min_cars!r}")
    gen = _as_rng(rng)
    x, y = _grid(size)
    L = AERIAL_LAYERS
    layer = np.zeros((size, size), np.uint8)

    # ---- ground: grass with soil patches, multi-scale texture
    patch = _noise(gen, (size, size), gen.uniform(12, 25))
    soil_frac = np.clip(0.5 + 0.8 * (patch - gen.uniform(0.3, 1.2)), 0, 1)
    tex = 1.0 + 0.18 * _noise(gen, (size, size), 1.0) + 0.12 * _noise(gen, (size, size), 4.0)
    img = (_GRASS * (1 - soil_frac[..., None]) + _SOIL * soil_frac[..., None]) * tex[..., None]

    sun = gen.uniform(0, 2 * np.pi)
    sun_dir = np.array([math.cos(sun), math.sin(sun)], np.float32)  # shadow direction
    kind = str(gen.choice(["road", "parking", "residential"], p=[0.45, 0.25, 0.30]))
    theta = gen.uniform(0, np.pi)
    d_vec = np.array([math.cos(theta), math.sin(theta)], np.float32)  # road direction
    n_vec = np.array([-d_vec[1], d_vec[0]], np.float32)
    c0 = size / 2
    along = (x - c0) * d_vec[0] + (y - c0) * d_vec[1]
    across0 = (x - c0) * n_vec[0] + (y - c0) * n_vec[1]
    slots = []  # candidate car poses: (cx, cy, angle)
    asphalt_grain = 1.0 + 0.06 * _noise(gen, (size, size), 0.8) + 0.05 * _noise(
        gen, (size, size), 6.0)

    def paint(region, colour, layer_id):
        img[region] = colour * asphalt_grain[region][:, None]
        layer[region] = layer_id

    if kind in ("road", "residential"):
        lane = gen.uniform(3.0, 3.5) / GSD_M
        offset = gen.uniform(-0.3, 0.3) * size
        across = across0 - offset
        hw = lane  # two lanes
        paint(np.abs(across) < hw + 10, _PAVEMENT * 0.9, L["road"])  # kerb / gutter strip
        road = np.abs(across) < hw
        paint(road, _ASPHALT * gen.uniform(0.8, 1.3), L["road"])
        dash, gap = 3.0 / GSD_M, 6.0 / GSD_M
        phase = gen.uniform(0, dash + gap)
        centre = (np.abs(across) < 1.3) & (np.mod(along + phase, dash + gap) < dash)
        edges = np.abs(np.abs(across) - (hw - 5)) < 1.3
        paint(centre | edges, _PAINT, L["marking"])
        car_len = 4.6 / GSD_M
        for side in (-1, 1):  # one lane each way
            pos = -size + gen.uniform(0, car_len)
            while pos < size:
                if gen.random() < car_density:
                    cxy = c0 + pos * d_vec + (offset + side * lane / 2
                                              + gen.normal(0, 3)) * n_vec
                    ang = theta + (0 if side > 0 else np.pi) + gen.normal(0, 0.02)
                    slots.append((cxy[0], cxy[1], ang))
                pos += car_len + gen.uniform(2.0, 12.0) / GSD_M
        if kind == "road" and gen.random() < 0.6:  # parallel parking strip on one side
            side = gen.choice([-1, 1])
            strip = (side * across > hw + 10) & (side * across < hw + 10 + 2.3 / GSD_M)
            paint(strip, _ASPHALT * gen.uniform(0.9, 1.4), L["road"])
            pos = -size + gen.uniform(0, car_len)
            while pos < size:
                if gen.random() < car_density * 1.5:
                    cxy = c0 + pos * d_vec + (offset + side * (hw + 10 + 1.15 / GSD_M)) * n_vec
                    slots.append((cxy[0], cxy[1], theta + gen.choice([0, np.pi])
                                  + gen.normal(0, 0.03)))
                pos += car_len + gen.uniform(0.8, 4.0) / GSD_M
    else:  # parking lot: rows of bays either side of an aisle
        lot_off = gen.uniform(-0.2, 0.2) * size
        across = across0 - lot_off
        paint(np.ones((size, size), bool) & (np.abs(across) < 1.5 * size),
              _ASPHALT * gen.uniform(0.9, 1.5), L["road"])
        bay_w, bay_d, aisle = 2.5 / GSD_M, 5.0 / GSD_M, 6.0 / GSD_M
        phase = gen.uniform(0, bay_w)
        for row_side in (-1, 1):
            for k in range(2):
                inner = aisle / 2 + k * (2 * bay_d + aisle)
                band = (row_side * across > inner) & (row_side * across < inner + bay_d)
                lines = band & (np.mod(along + phase, bay_w) < 2.2)
                paint(lines, _PAINT, L["marking"])
                depth = inner + bay_d / 2
                for j in range(-int(size / bay_w) - 2, int(size / bay_w) + 2):
                    if gen.random() < car_density * 1.6:
                        pos = j * bay_w - phase + bay_w / 2 + gen.normal(0, 3)
                        cxy = c0 + pos * d_vec + (lot_off + row_side * depth
                                                  + gen.normal(0, 4)) * n_vec
                        ang = theta + row_side * np.pi / 2 + gen.choice([0, np.pi]) \
                            + gen.normal(0, 0.04)
                        slots.append((cxy[0], cxy[1], ang))

    # ---- roofs (residential): rotated rectangles with a ridge, ridge shading
    roof_shadow = np.ones((size, size), np.float32)
    if kind == "residential":
        for _ in range(gen.integers(1, 3)):
            side = gen.choice([-1, 1])
            hl_r, hw_r = gen.uniform(4.5, 7.0) / GSD_M, gen.uniform(3.5, 5.0) / GSD_M
            dist = offset + side * (hw + 10 + gen.uniform(2.0, 5.0) / GSD_M + hw_r)
            cxy = c0 + gen.uniform(-0.5, 0.5) * size * d_vec + dist * n_vec
            sd, u, v = _rounded_box_sd(x, y, cxy[0], cxy[1], hl_r, hw_r, theta, 1.0)
            roof = sd > 0
            colour = _ROOFS[gen.integers(len(_ROOFS))]
            lit = np.sign(v) * np.sign(n_vec @ sun_dir + 1e-6)  # slope facing away from sun
            ridge = 1.0 - 0.25 * lit + 0.05 * np.sin(2 * np.pi * np.abs(v) / 7.0)
            shade = ridge * (1.0 + 0.04 * _noise(gen, (size, size), 0.7))
            img = np.where(roof[..., None], colour * shade[..., None], img)
            layer[roof] = L["roof"]
            height = gen.uniform(50, 90)  # shadow length in px (about 3-5 m eaves)
            ssd, _, _ = _rounded_box_sd(x, y, cxy[0] + height * sun_dir[0],
                                        cxy[1] + height * sun_dir[1], hl_r, hw_r, theta, 1.0)
            roof_shadow = np.where((ssd > 0) & ~roof, np.float32(0.35), roof_shadow)
    img = img * roof_shadow[..., None]

    # ---- cars
    car_id = np.full((size, size), -1, np.int16)
    car_paint = np.zeros((size, size, 3), np.float32)
    occupied = np.zeros((size, size), bool)
    cars: list[dict] = []
    colours = np.array([c for c, _ in _CAR_COLOURS], np.float32)
    shares = np.array([p for _, p in _CAR_COLOURS])
    shares = shares / shares.sum()
    shadow_len = gen.uniform(6.0, 14.0)

    def try_car(cx, cy, ang, hidden=None, min_visible=1.0):
        """Place a car unless it hits another; ``hidden`` pixels (tree crowns) stay on top."""
        nonlocal img
        length = gen.uniform(4.0, 5.0) / GSD_M
        width = gen.uniform(1.7, 1.95) / GSD_M
        radius = gen.uniform(3.0, 6.0)
        win = _window(cx, cy, 0.5 * math.hypot(length, width) + 2, size)
        if win is None:
            return False
        y0, y1, x0, x1 = win
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        sd, u, v = _rounded_box_sd(xx, yy, cx, cy, length / 2, width / 2, ang, radius)
        inside = sd >= 0
        if not inside.any():
            return False
        if (sd > -4)[occupied[y0:y1, x0:x1]].any():  # keep a gap to other cars
            return False
        full = inside
        if hidden is not None:
            inside = inside & ~hidden[y0:y1, x0:x1]
            if inside.sum() < min_visible * full.sum() or not inside.any():
                return False
        body = colours[gen.choice(len(colours), p=shares)] * gen.uniform(0.9, 1.1)
        col = _car_paint(u, v, length / 2, width / 2, body)
        # the car's own shadow on the ground (not part of the car)
        swin = _window(cx + shadow_len * sun_dir[0], cy + shadow_len * sun_dir[1],
                       0.5 * math.hypot(length, width) + 2, size)
        if swin is not None:
            sy0, sy1, sx0, sx1 = swin
            sxx = np.arange(sx0, sx1, dtype=np.float32)[None, :]
            syy = np.arange(sy0, sy1, dtype=np.float32)[:, None]
            ssd, _, _ = _rounded_box_sd(sxx, syy, cx + shadow_len * sun_dir[0],
                                        cy + shadow_len * sun_dir[1], length / 2,
                                        width / 2 * 1.05, ang, radius)
            sh = (ssd > 0) & (car_id[sy0:sy1, sx0:sx1] < 0) & (
                layer[sy0:sy1, sx0:sx1] != L["tree"])
            img[sy0:sy1, sx0:sx1][sh] *= _SHADOW
        i = len(cars)
        img[y0:y1, x0:x1][inside] = col[inside]
        car_paint[y0:y1, x0:x1][inside] = col[inside]
        layer[y0:y1, x0:x1][inside] = L["car"]
        car_id[y0:y1, x0:x1][inside] = i
        occupied[y0:y1, x0:x1] |= full
        cars.append({"center_xy": (float(cx), float(cy)), "length_px": float(length),
                     "width_px": float(width), "angle_rad": float(ang),
                     "corner_radius_px": float(radius), "colour": tuple(map(float, body))})
        return True

    for cx, cy, ang in slots:
        try_car(cx, cy, ang)

    # ---- trees: lobed crowns with texture, lit from the sun side, casting shadows
    tree_shadow = np.ones((size, size), np.float32)
    n_trees = gen.integers(0, 4) if kind != "parking" else gen.integers(0, 2)
    for _ in range(n_trees):
        tr = min(gen.uniform(1.8, 4.0) / GSD_M, 0.3 * size)  # small tiles keep open ground
        tx, ty = gen.uniform(-0.1, 1.1, size=2) * size
        off = tr * gen.uniform(0.8, 1.4)
        win = _window(tx + 0.5 * off * sun_dir[0], ty + 0.5 * off * sun_dir[1],
                      1.6 * tr + 0.5 * off + 4, size)
        if win is None:
            continue
        y0, y1, x0, x1 = win
        xx, yy = x[:, x0:x1], y[y0:y1, :]
        crown_sd = _ellipse_sd(xx, yy, tx, ty, tr, tr * gen.uniform(0.85, 1.0),
                               gen.uniform(0, np.pi), _harmonics(gen, 0.12, 8))
        crown = crown_sd > 0
        shadow_sd = _ellipse_sd(xx, yy, tx + off * sun_dir[0], ty + off * sun_dir[1], tr, tr,
                                0.0, _harmonics(gen, 0.12, 8))
        n_crown = int(crown.sum())
        if n_crown == 0 or n_crown + int((layer == L["tree"]).sum()) > 0.5 * size * size:
            continue
        ts = tree_shadow[y0:y1, x0:x1]
        ts[(shadow_sd > 0) & ~crown] = 0.4
        shape = crown.shape
        leaf = 1.0 + 0.3 * _noise(gen, shape, 1.2) + 0.2 * _noise(gen, shape, 3.5)
        lit = 1.0 - 0.35 * (((xx - tx) * sun_dir[0] + (yy - ty) * sun_dir[1]) / tr)
        rgb = _TREE * np.clip(leaf * lit, 0.2, 2.5)[..., None]
        img[y0:y1, x0:x1][crown] = rgb[crown]
        layer[y0:y1, x0:x1][crown] = L["tree"]
        car_id[y0:y1, x0:x1][crown] = -1
        ts[crown] = 1.0

    # ---- guarantee min_cars visible cars (extra cars avoid tree crowns)
    crowns = layer == L["tree"]
    drivable = np.flatnonzero((layer == L["road"])[16:-16, 16:-16].ravel())
    attempts = 0
    while len(np.unique(car_id[car_id >= 0])) < min_cars and attempts < 1000:
        attempts += 1
        # first try fully visible cars, then accept cars partly under a tree crown
        min_visible = 1.0 if attempts < 300 else 0.3
        if drivable.size and attempts % 3:  # on asphalt, aligned with the road / aisle
            k = drivable[gen.integers(drivable.size)]
            cy, cx = 16 + k // (size - 32), 16 + k % (size - 32)
            turn = np.pi / 2 if kind == "parking" else 0.0
            ang = theta + turn + gen.choice([0.0, np.pi]) + gen.normal(0, 0.03)
        else:  # anywhere (a driveway or a field track)
            cx, cy = gen.uniform(0.05, 0.95, size=2) * size
            ang = theta + gen.choice([0.0, np.pi / 2, np.pi]) + gen.normal(0, 0.05)
        try_car(float(cx), float(cy), ang, crowns, min_visible)
    if len(np.unique(car_id[car_id >= 0])) < min_cars:  # pragma: no cover - never seen
        raise RuntimeError("could not place the requested number of cars")

    shade = tree_shadow
    radiance = img * np.where(layer == L["tree"], 1.0, shade)[..., None]
    radiance = np.clip(radiance, 0.0, 1.0).astype(np.float32)
    mask = layer == L["car"]
    if not return_info:
        return radiance, mask
    info = {
        "kind": kind,
        "layer": layer,
        "car_id": car_id,
        "cars": cars,
        "car_paint": car_paint,
        "shade": shade.astype(np.float32),
        "sun_offset_px": tuple(float(s) for s in shadow_len * sun_dir),
    }
    return radiance, mask, info
