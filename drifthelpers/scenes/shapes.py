"""Shared drawing helpers of the scene generators: seeding, pixel grids, smooth noise and
signed-distance shapes (positive inside, in pixels) with soft coverage.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


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
