"""Aerial tiles: a nadir view at ~6 cm ground sampling distance (as Raw-Drone), with an exact
car mask.

A tile is painted in steps, each drawing its random numbers in a fixed order: the ground, the
scene's layout (sun, kind, road direction), a road or a parking lot with the car poses it
offers, roofs (residential streets), the cars, the trees that occlude them, and extra cars when
a minimum number must be visible.
"""

from __future__ import annotations

import math

import numpy as np

from .shapes import _as_rng, _check_size, _ellipse_sd, _grid, _harmonics, _noise, _rot, _window

__all__ = ["AERIAL_LAYERS", "GSD_M", "aerial_tile"]

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
_CAR_RGB = np.array([c for c, _ in _CAR_COLOURS], np.float32)
_CAR_SHARES = np.array([p for _, p in _CAR_COLOURS])
_CAR_SHARES = _CAR_SHARES / _CAR_SHARES.sum()


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
            in the rare case that no room is found (only plausible for tiny tiles). The
            Raw-Drone tiles all contain a car: use 1.
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
    t = _Tile(_as_rng(rng), size)
    if t.kind in ("road", "residential"):
        offset, hw = _lay_road(t, car_density)
        if t.kind == "residential":
            _add_roofs(t, offset, hw)
    else:
        _lay_parking_lot(t, car_density)
    t.start_cars()
    for cx, cy, ang in t.slots:
        _try_car(t, cx, cy, ang)
    shade = _add_trees(t)  # tree shadows
    _guarantee_cars(t, min_cars)

    L = AERIAL_LAYERS
    radiance = t.img * np.where(t.layer == L["tree"], 1.0, shade)[..., None]
    radiance = np.clip(radiance, 0.0, 1.0).astype(np.float32)
    mask = t.layer == L["car"]
    if not return_info:
        return radiance, mask
    info = {
        "kind": t.kind,
        "layer": t.layer,
        "car_id": t.car_id,
        "cars": t.cars,
        "car_paint": t.car_paint,
        "shade": shade.astype(np.float32),
        "sun_offset_px": tuple(float(s) for s in t.shadow_len * t.sun_dir),
    }
    return radiance, mask, info


def _ground(gen: np.random.Generator, size: int) -> np.ndarray:
    """Grass with soil patches and a multi-scale texture, (size, size, 3) float32."""
    patch = _noise(gen, (size, size), gen.uniform(12, 25))
    soil_frac = np.clip(0.5 + 0.8 * (patch - gen.uniform(0.3, 1.2)), 0, 1)
    tex = 1.0 + 0.18 * _noise(gen, (size, size), 1.0) + 0.12 * _noise(gen, (size, size), 4.0)
    return (_GRASS * (1 - soil_frac[..., None]) + _SOIL * soil_frac[..., None]) * tex[..., None]


class _Tile:
    """An aerial tile being painted: the image and its layer map, the scene's geometry (sun,
    kind, road direction), the candidate car poses and, once :meth:`start_cars` ran, the car
    maps. The steps of :func:`aerial_tile` draw random numbers from ``gen`` in a fixed order."""

    def __init__(self, gen: np.random.Generator, size: int):
        self.gen, self.size = gen, size
        self.x, self.y = _grid(size)
        self.layer = np.zeros((size, size), np.uint8)
        self.img = _ground(gen, size)
        sun = gen.uniform(0, 2 * np.pi)
        self.sun_dir = np.array([math.cos(sun), math.sin(sun)], np.float32)  # shadow direction
        self.kind = str(gen.choice(["road", "parking", "residential"], p=[0.45, 0.25, 0.30]))
        self.theta = gen.uniform(0, np.pi)
        self.d_vec = np.array([math.cos(self.theta), math.sin(self.theta)], np.float32)  # road direction
        self.n_vec = np.array([-self.d_vec[1], self.d_vec[0]], np.float32)
        self.c0 = c0 = size / 2
        self.along = (self.x - c0) * self.d_vec[0] + (self.y - c0) * self.d_vec[1]
        self.across0 = (self.x - c0) * self.n_vec[0] + (self.y - c0) * self.n_vec[1]
        self.slots: list[tuple] = []  # candidate car poses: (cx, cy, angle)
        self.asphalt_grain = 1.0 + 0.06 * _noise(gen, (size, size), 0.8) + 0.05 * _noise(
            gen, (size, size), 6.0)

    def paint(self, region: np.ndarray, colour: np.ndarray, layer_id: int) -> None:
        """Paint a flat material with the asphalt grain over ``region`` (bool mask)."""
        self.img[region] = colour * self.asphalt_grain[region][:, None]
        self.layer[region] = layer_id

    def start_cars(self) -> None:
        """Empty car maps, and the car shadows' length (one per tile, like the sun)."""
        size = self.size
        self.car_id = np.full((size, size), -1, np.int16)
        self.car_paint = np.zeros((size, size, 3), np.float32)
        self.occupied = np.zeros((size, size), bool)
        self.cars: list[dict] = []
        self.shadow_len = self.gen.uniform(6.0, 14.0)


def _lay_road(t: _Tile, car_density: float) -> tuple[float, float]:
    """Two lanes with a kerb strip, a dashed centre line and edge lines, cars queued in each
    lane and, on a plain road, sometimes a parallel parking strip. Returns the road's offset
    from the tile centre and its half-width in pixels."""
    gen, L = t.gen, AERIAL_LAYERS
    lane = gen.uniform(3.0, 3.5) / GSD_M
    offset = gen.uniform(-0.3, 0.3) * t.size
    across = t.across0 - offset
    hw = lane  # two lanes
    t.paint(np.abs(across) < hw + 10, _PAVEMENT * 0.9, L["road"])  # kerb / gutter strip
    road = np.abs(across) < hw
    t.paint(road, _ASPHALT * gen.uniform(0.8, 1.3), L["road"])
    dash, gap = 3.0 / GSD_M, 6.0 / GSD_M
    phase = gen.uniform(0, dash + gap)
    centre = (np.abs(across) < 1.3) & (np.mod(t.along + phase, dash + gap) < dash)
    edges = np.abs(np.abs(across) - (hw - 5)) < 1.3
    t.paint(centre | edges, _PAINT, L["marking"])
    car_len = 4.6 / GSD_M
    for side in (-1, 1):  # one lane each way
        pos = -t.size + gen.uniform(0, car_len)
        while pos < t.size:
            if gen.random() < car_density:
                cxy = t.c0 + pos * t.d_vec + (offset + side * lane / 2
                                              + gen.normal(0, 3)) * t.n_vec
                ang = t.theta + (0 if side > 0 else np.pi) + gen.normal(0, 0.02)
                t.slots.append((cxy[0], cxy[1], ang))
            pos += car_len + gen.uniform(2.0, 12.0) / GSD_M
    if t.kind == "road" and gen.random() < 0.6:
        _lay_parking_strip(t, car_density, across, offset, hw, car_len)
    return offset, hw


def _lay_parking_strip(t: _Tile, car_density: float, across, offset, hw, car_len) -> None:
    """A parallel parking strip along one side of the road, with parked cars."""
    gen = t.gen
    side = gen.choice([-1, 1])
    strip = (side * across > hw + 10) & (side * across < hw + 10 + 2.3 / GSD_M)
    t.paint(strip, _ASPHALT * gen.uniform(0.9, 1.4), AERIAL_LAYERS["road"])
    pos = -t.size + gen.uniform(0, car_len)
    while pos < t.size:
        if gen.random() < car_density * 1.5:
            cxy = t.c0 + pos * t.d_vec + (offset + side * (hw + 10 + 1.15 / GSD_M)) * t.n_vec
            t.slots.append((cxy[0], cxy[1], t.theta + gen.choice([0, np.pi])
                            + gen.normal(0, 0.03)))
        pos += car_len + gen.uniform(0.8, 4.0) / GSD_M


def _lay_parking_lot(t: _Tile, car_density: float) -> None:
    """Asphalt with rows of marked bays either side of the aisles, cars parked in the bays."""
    gen, L, size = t.gen, AERIAL_LAYERS, t.size
    lot_off = gen.uniform(-0.2, 0.2) * size
    across = t.across0 - lot_off
    t.paint(np.ones((size, size), bool) & (np.abs(across) < 1.5 * size),
            _ASPHALT * gen.uniform(0.9, 1.5), L["road"])
    bay_w, bay_d, aisle = 2.5 / GSD_M, 5.0 / GSD_M, 6.0 / GSD_M
    phase = gen.uniform(0, bay_w)
    for row_side in (-1, 1):
        for k in range(2):
            inner = aisle / 2 + k * (2 * bay_d + aisle)
            band = (row_side * across > inner) & (row_side * across < inner + bay_d)
            lines = band & (np.mod(t.along + phase, bay_w) < 2.2)
            t.paint(lines, _PAINT, L["marking"])
            depth = inner + bay_d / 2
            for j in range(-int(size / bay_w) - 2, int(size / bay_w) + 2):
                if gen.random() < car_density * 1.6:
                    pos = j * bay_w - phase + bay_w / 2 + gen.normal(0, 3)
                    cxy = t.c0 + pos * t.d_vec + (lot_off + row_side * depth
                                                  + gen.normal(0, 4)) * t.n_vec
                    ang = t.theta + row_side * np.pi / 2 + gen.choice([0, np.pi]) \
                        + gen.normal(0, 0.04)
                    t.slots.append((cxy[0], cxy[1], ang))


def _add_roofs(t: _Tile, offset: float, hw: float) -> None:
    """One or two houses beside the road: rotated rectangles with a ridge, the slope facing
    away from the sun shaded, and the shadows they cast."""
    gen, x, y, size = t.gen, t.x, t.y, t.size
    roof_shadow = np.ones((size, size), np.float32)
    for _ in range(gen.integers(1, 3)):
        side = gen.choice([-1, 1])
        hl_r, hw_r = gen.uniform(4.5, 7.0) / GSD_M, gen.uniform(3.5, 5.0) / GSD_M
        dist = offset + side * (hw + 10 + gen.uniform(2.0, 5.0) / GSD_M + hw_r)
        cxy = t.c0 + gen.uniform(-0.5, 0.5) * size * t.d_vec + dist * t.n_vec
        sd, u, v = _rounded_box_sd(x, y, cxy[0], cxy[1], hl_r, hw_r, t.theta, 1.0)
        roof = sd > 0
        colour = _ROOFS[gen.integers(len(_ROOFS))]
        lit = np.sign(v) * np.sign(t.n_vec @ t.sun_dir + 1e-6)  # slope facing away from sun
        ridge = 1.0 - 0.25 * lit + 0.05 * np.sin(2 * np.pi * np.abs(v) / 7.0)
        shade = ridge * (1.0 + 0.04 * _noise(gen, (size, size), 0.7))
        t.img = np.where(roof[..., None], colour * shade[..., None], t.img)
        t.layer[roof] = AERIAL_LAYERS["roof"]
        height = gen.uniform(50, 90)  # shadow length in px (about 3-5 m eaves)
        ssd, _, _ = _rounded_box_sd(x, y, cxy[0] + height * t.sun_dir[0],
                                    cxy[1] + height * t.sun_dir[1], hl_r, hw_r, t.theta, 1.0)
        roof_shadow = np.where((ssd > 0) & ~roof, np.float32(0.35), roof_shadow)
    t.img = t.img * roof_shadow[..., None]


def _try_car(t: _Tile, cx, cy, ang, hidden=None, min_visible=1.0) -> bool:
    """Place a car unless it hits another; ``hidden`` pixels (tree crowns) stay on top."""
    gen, size, L = t.gen, t.size, AERIAL_LAYERS
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
    if (sd > -4)[t.occupied[y0:y1, x0:x1]].any():  # keep a gap to other cars
        return False
    full = inside
    if hidden is not None:
        inside = inside & ~hidden[y0:y1, x0:x1]
        if inside.sum() < min_visible * full.sum() or not inside.any():
            return False
    body = _CAR_RGB[gen.choice(len(_CAR_RGB), p=_CAR_SHARES)] * gen.uniform(0.9, 1.1)
    col = _car_paint(u, v, length / 2, width / 2, body)
    _car_shadow(t, cx, cy, length, width, ang, radius)
    i = len(t.cars)
    t.img[y0:y1, x0:x1][inside] = col[inside]
    t.car_paint[y0:y1, x0:x1][inside] = col[inside]
    t.layer[y0:y1, x0:x1][inside] = L["car"]
    t.car_id[y0:y1, x0:x1][inside] = i
    t.occupied[y0:y1, x0:x1] |= full
    t.cars.append({"center_xy": (float(cx), float(cy)), "length_px": float(length),
                   "width_px": float(width), "angle_rad": float(ang),
                   "corner_radius_px": float(radius), "colour": tuple(map(float, body))})
    return True


def _car_shadow(t: _Tile, cx, cy, length, width, ang, radius) -> None:
    """Darken the ground next to a car (its shadow is not part of the car, nor drawn on other
    cars or tree crowns)."""
    sx, sy = cx + t.shadow_len * t.sun_dir[0], cy + t.shadow_len * t.sun_dir[1]
    swin = _window(sx, sy, 0.5 * math.hypot(length, width) + 2, t.size)
    if swin is None:
        return
    sy0, sy1, sx0, sx1 = swin
    sxx = np.arange(sx0, sx1, dtype=np.float32)[None, :]
    syy = np.arange(sy0, sy1, dtype=np.float32)[:, None]
    ssd, _, _ = _rounded_box_sd(sxx, syy, sx, sy, length / 2, width / 2 * 1.05, ang, radius)
    sh = (ssd > 0) & (t.car_id[sy0:sy1, sx0:sx1] < 0) & (
        t.layer[sy0:sy1, sx0:sx1] != AERIAL_LAYERS["tree"])
    t.img[sy0:sy1, sx0:sx1][sh] *= _SHADOW


def _add_trees(t: _Tile) -> np.ndarray:
    """Lobed tree crowns with leaf texture, lit from the sun side; they occlude cars. Returns
    the multiplicative tree-shadow map (size, size) float32."""
    gen, x, y, size, sun_dir, L = t.gen, t.x, t.y, t.size, t.sun_dir, AERIAL_LAYERS
    tree_shadow = np.ones((size, size), np.float32)
    n_trees = gen.integers(0, 4) if t.kind != "parking" else gen.integers(0, 2)
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
        if n_crown == 0 or n_crown + int((t.layer == L["tree"]).sum()) > 0.5 * size * size:
            continue
        ts = tree_shadow[y0:y1, x0:x1]
        ts[(shadow_sd > 0) & ~crown] = 0.4
        shape = crown.shape
        leaf = 1.0 + 0.3 * _noise(gen, shape, 1.2) + 0.2 * _noise(gen, shape, 3.5)
        lit = 1.0 - 0.35 * (((xx - tx) * sun_dir[0] + (yy - ty) * sun_dir[1]) / tr)
        rgb = _TREE * np.clip(leaf * lit, 0.2, 2.5)[..., None]
        t.img[y0:y1, x0:x1][crown] = rgb[crown]
        t.layer[y0:y1, x0:x1][crown] = L["tree"]
        t.car_id[y0:y1, x0:x1][crown] = -1
        ts[crown] = 1.0
    return tree_shadow


def _guarantee_cars(t: _Tile, min_cars: int) -> None:
    """Add cars until ``min_cars`` are visible: on asphalt aligned with the road or aisle, else
    anywhere; fully visible ones first, then cars partly under a tree crown."""
    gen, size, L = t.gen, t.size, AERIAL_LAYERS
    crowns = t.layer == L["tree"]
    drivable = np.flatnonzero((t.layer == L["road"])[16:-16, 16:-16].ravel())
    attempts = 0
    while len(np.unique(t.car_id[t.car_id >= 0])) < min_cars and attempts < 1000:
        attempts += 1
        min_visible = 1.0 if attempts < 300 else 0.3
        if drivable.size and attempts % 3:  # on asphalt, aligned with the road / aisle
            k = drivable[gen.integers(drivable.size)]
            cy, cx = 16 + k // (size - 32), 16 + k % (size - 32)
            turn = np.pi / 2 if t.kind == "parking" else 0.0
            ang = t.theta + turn + gen.choice([0.0, np.pi]) + gen.normal(0, 0.03)
        else:  # anywhere (a driveway or a field track)
            cx, cy = gen.uniform(0.05, 0.95, size=2) * size
            ang = t.theta + gen.choice([0.0, np.pi / 2, np.pi]) + gen.normal(0, 0.05)
        _try_car(t, float(cx), float(cy), ang, crowns, min_visible)
    if len(np.unique(t.car_id[t.car_id >= 0])) < min_cars:  # pragma: no cover - never seen
        raise RuntimeError("could not place the requested number of cars")
