"""Tests of drifthelpers.corruptions against the published ImageNet-C definitions.

References are computed here from the definitions with numpy, scipy and colorsys (never with
the module under test): contrast in numpy, brightness and saturate with colorsys' HSV,
gaussian_blur with scipy.ndimage.gaussian_filter, zoom_blur with scipy.ndimage.zoom, the
noise families from the moments of their distributions (scipy.stats), the elastic smoothing
with scipy.ndimage.gaussian_filter.
"""

from __future__ import annotations

import colorsys
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage, stats

from drifthelpers import corruptions as C
from drifthelpers.corruptions import (
    CORRUPTIONS,
    brightness,
    contrast,
    corrupt,
    describe,
    elastic_transform,
    gaussian_blur,
    gaussian_noise,
    impulse_noise,
    saturate,
    severity_constants,
    shot_noise,
    speckle_noise,
    zoom_blur,
)

STOCHASTIC = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "elastic_transform")
DETERMINISTIC = tuple(n for n in CORRUPTIONS if n not in STOCHASTIC)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def texture(b: int = 2, h: int = 48, w: int = 48, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A natural-ish colour image: smooth colour regions plus blocky edges, values in [0.05, 0.95]."""
    g = gen(seed)
    coarse = torch.rand(b, 3, 6, 6, generator=g, dtype=torch.float64)
    smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    blocks = torch.rand(b, 3, max(h // 6, 1), max(w // 6, 1), generator=g, dtype=torch.float64)
    edges = F.interpolate(blocks, size=(h, w), mode="nearest")
    return (0.7 * smooth + 0.3 * edges).clamp(0.05, 0.95).to(dtype)


def to_hwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().transpose(1, 2, 0)


def censored_normal(lo: float, hi: float) -> tuple[float, float]:
    """Mean and standard deviation of clip(Z, lo, hi) for Z ~ N(0, 1)."""
    p_lo, p_hi = stats.norm.cdf(lo), stats.norm.sf(hi)
    f_lo, f_hi = stats.norm.pdf(lo), stats.norm.pdf(hi)
    mean = f_lo - f_hi + lo * p_lo + hi * p_hi
    second = (stats.norm.cdf(hi) - stats.norm.cdf(lo)) + lo * f_lo - hi * f_hi + lo**2 * p_lo + hi**2 * p_hi
    return mean, math.sqrt(second - mean**2)


# ----------------------------------------------------------------------------- API and constants


class TestApi:
    def test_corruptions_in_paper_order(self):
        assert CORRUPTIONS == (
            "gaussian_noise",
            "shot_noise",
            "impulse_noise",
            "speckle_noise",
            "gaussian_blur",
            "zoom_blur",
            "contrast",
            "brightness",
            "saturate",
            "elastic_transform",
        )

    def test_published_constants(self):
        # ImageNet-C, make_imagenet_c.py (github.com/hendrycks/robustness)
        assert severity_constants("gaussian_noise") == (0.08, 0.12, 0.18, 0.26, 0.38)
        assert severity_constants("shot_noise") == (60, 25, 12, 5, 3)
        assert severity_constants("impulse_noise") == (0.03, 0.06, 0.09, 0.17, 0.27)
        assert severity_constants("speckle_noise") == (0.15, 0.2, 0.35, 0.45, 0.6)
        assert severity_constants("gaussian_blur") == (1, 2, 3, 4, 6)
        assert severity_constants("contrast") == (0.4, 0.3, 0.2, 0.1, 0.05)
        assert severity_constants("brightness") == (0.1, 0.2, 0.3, 0.4, 0.5)
        assert severity_constants("saturate") == ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))
        published = [(2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02)]
        np.testing.assert_allclose(severity_constants("elastic_transform"), 244 * np.array(published), rtol=1e-12)

    def test_zoom_factors_are_the_reference_aranges(self):
        reference = [
            np.arange(1, 1.11, 0.01),
            np.arange(1, 1.16, 0.01),
            np.arange(1, 1.21, 0.02),
            np.arange(1, 1.26, 0.02),
            np.arange(1, 1.31, 0.03),
        ]
        factors = severity_constants("zoom_blur")
        assert [len(f) for f in factors] == [12, 16, 11, 13, 11]  # arange's float artefact: 1.11 included
        for mine, ref in zip(factors, reference):
            np.testing.assert_allclose(mine, ref, atol=1e-12)

    def test_describe_rows(self):
        rows = describe()
        assert [r["name"] for r in rows] == list(CORRUPTIONS)
        for row in rows:
            assert set(row) == {"name", "group", "held_out", "stochastic", "parameter", "severity_3", "constants"}
            assert row["constants"] == severity_constants(row["name"])
            assert row["severity_3"] == row["constants"][2]
            assert row["group"] in {"noise", "blur", "weather", "digital"}
            assert row["stochastic"] == (row["name"] in STOCHASTIC)
        held_out = {r["name"] for r in rows if r["held_out"]}
        assert held_out == {"speckle_noise", "gaussian_blur", "saturate"}

    @pytest.mark.parametrize("name", CORRUPTIONS)
    def test_corrupt_equals_function(self, name):
        x = texture(2, 24, 24)
        expected = getattr(C, name)(x, 3, gen(5))
        torch.testing.assert_close(corrupt(x, name, 3, generator=gen(5)), expected, rtol=0, atol=0)

    def test_numpy_integer_severity_accepted(self):
        x = texture(1, 16, 16)
        assert torch.equal(corrupt(x, "contrast", np.int64(2)), corrupt(x, "contrast", 2))

    def test_no_import_side_effects(self):
        state = torch.get_rng_state()
        import importlib

        importlib.reload(C)
        assert torch.equal(state, torch.get_rng_state())


# ----------------------------------------------------------------------------- exceptions


class TestExceptions:
    x = torch.full((1, 3, 16, 16), 0.5)

    def test_bad_name_lists_valid(self):
        with pytest.raises(ValueError, match=r"name must be one of gaussian_noise, .*elastic_transform; got 'fog'"):
            corrupt(self.x, "fog", 3)
        with pytest.raises(ValueError, match="name must be one of"):
            severity_constants("Gaussian_Noise")

    @pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True, "3", None])
    def test_bad_severity(self, severity):
        with pytest.raises(ValueError, match=r"severity must be one of the integers 1, 2, 3, 4, 5"):
            corrupt(self.x, "contrast", severity)
        with pytest.raises(ValueError, match="severity"):
            gaussian_noise(self.x, severity)

    @pytest.mark.parametrize("shape", [(16, 16), (1, 16, 16), (1, 1, 16, 16), (1, 4, 16, 16), (2, 16, 16, 3)])
    def test_bad_shape(self, shape):
        with pytest.raises(ValueError, match=r"images must have shape \(\*, 3, H, W\)"):
            corrupt(torch.full(shape, 0.5), "brightness", 1)

    def test_too_small(self):
        with pytest.raises(ValueError, match="at least 8x8"):
            corrupt(torch.full((1, 3, 7, 16), 0.5), "zoom_blur", 1)

    @pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf")])
    def test_bad_range(self, bad):
        x = self.x.clone()
        x[0, 1, 3, 4] = bad
        with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
            corrupt(x, "saturate", 2)

    def test_bad_dtype_and_type(self):
        with pytest.raises(ValueError, match="floating-point"):
            corrupt(torch.full((1, 3, 16, 16), 128, dtype=torch.uint8), "contrast", 1)
        with pytest.raises(ValueError, match="torch.Tensor"):
            corrupt(np.full((1, 3, 16, 16), 0.5), "contrast", 1)

    def test_bad_generator(self):
        with pytest.raises(ValueError, match="generator must be a torch.Generator"):
            corrupt(self.x, "gaussian_noise", 1, generator=np.random.default_rng(0))


# ----------------------------------------------------------------------------- shapes, dtypes, determinism


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (3, 3, 20, 28), (3, 17, 12), (2, 2, 3, 16, 16)])
def test_shape_and_range(name, shape):
    x = torch.rand(shape, generator=gen(1))
    out = corrupt(x, name, 4, generator=gen(2))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert bool(torch.isfinite(out).all()) and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtype_kept(name, dtype):
    x = texture(1, 16, 16, dtype=dtype)
    out = corrupt(x, name, 2, generator=gen(0))
    assert out.dtype == dtype and out.shape == x.shape


@pytest.mark.parametrize("name", STOCHASTIC)
def test_seeded_generator_is_deterministic(name):
    x = texture(2, 24, 24)
    a = corrupt(x, name, 3, generator=gen(7))
    b = corrupt(x, name, 3, generator=gen(7))
    c = corrupt(x, name, 3, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_families_ignore_generator(name):
    x = texture(2, 24, 24)
    assert torch.equal(corrupt(x, name, 3), corrupt(x, name, 3, generator=gen(1)))


def test_images_not_modified_in_place():
    x = texture(2, 24, 24)
    before = x.clone()
    for name in CORRUPTIONS:
        corrupt(x, name, 5, generator=gen(0))
    assert torch.equal(x, before)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(CORRUPTIONS),
    severity=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(8, 24),
    w=st.integers(8, 24),
)
def test_property_output_in_unit_range(name, severity, seed, h, w):
    x = torch.rand(2, 3, h, w, generator=gen(seed))
    out = corrupt(x, name, severity, generator=gen(seed + 1))
    assert out.shape == x.shape
    assert bool(torch.isfinite(out).all()) and out.min() >= 0 and out.max() <= 1


# ----------------------------------------------------------------------------- noise: distributions


NOISE_SHAPE = (4, 3, 64, 64)  # 49152 values


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_gaussian_noise_moments(severity):
    c = severity_constants("gaussian_noise")[severity - 1]
    x = torch.full(NOISE_SHAPE, 0.5, dtype=torch.float64)
    residual = (gaussian_noise(x, severity, gen(severity)) - 0.5).flatten().numpy()
    _, z_std = censored_normal(-0.5 / c, 0.5 / c)  # clipping to [0, 1] is symmetric about 0.5
    n = residual.size
    assert abs(residual.mean()) < 5 * c * z_std / math.sqrt(n)
    assert residual.std() == pytest.approx(c * z_std, rel=0.02)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_shot_noise_distribution(severity):
    c = severity_constants("shot_noise")[severity - 1]
    level = 0.3
    out = shot_noise(torch.full(NOISE_SHAPE, level, dtype=torch.float64), severity, gen(severity))
    values = out.flatten().numpy()
    # lattice of photon counts: Poisson(x c) / c
    np.testing.assert_allclose(values * c, np.round(values * c), atol=1e-9)
    k = np.arange(0, 200)
    pmf = stats.poisson.pmf(k, level * c)
    v = np.minimum(k / c, 1.0)
    mean = (pmf * v).sum()
    var = (pmf * (v - mean) ** 2).sum()
    if severity == 1:  # clipping is negligible: variance x / c
        assert var == pytest.approx(level / c, rel=1e-6)
    assert abs(values.mean() - mean) < 5 * math.sqrt(var / values.size)
    assert values.var() == pytest.approx(var, rel=0.04)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_impulse_noise_salt_and_pepper(severity):
    c = severity_constants("impulse_noise")[severity - 1]
    out = impulse_noise(torch.full(NOISE_SHAPE, 0.5, dtype=torch.float64), severity, gen(severity))
    changed = out != 0.5
    n = changed.numel()
    fraction = changed.double().mean().item()
    assert abs(fraction - c) < 5 * math.sqrt(c * (1 - c) / n)
    replaced = out[changed]
    assert set(replaced.unique().tolist()) <= {0.0, 1.0}
    n_changed = replaced.numel()
    assert abs((replaced == 1).double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / n_changed)
    # per channel, independently: both R and G replaced with probability c^2 (not c)
    both = (changed[:, 0] & changed[:, 1]).double().mean().item()
    pixels = changed[:, 0].numel()
    assert abs(both - c**2) < 5 * math.sqrt(c**2 * (1 - c**2) / pixels)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("level", [0.2, 0.4])
def test_speckle_noise_relative_moments(severity, level):
    c = severity_constants("speckle_noise")[severity - 1]
    out = speckle_noise(torch.full(NOISE_SHAPE, level, dtype=torch.float64), severity, gen(severity))
    z = ((out / level - 1.0) / c).flatten().numpy()  # clip(Z, lo, hi) by the definition
    z_mean, z_std = censored_normal(-1.0 / c, (1.0 / level - 1.0) / c)
    assert abs(z.mean() - z_mean) < 5 * z_std / math.sqrt(z.size)
    assert z.std() == pytest.approx(z_std, rel=0.02)


def test_speckle_keeps_black():
    x = texture(2, 16, 16)
    x[:, :, :4] = 0.0
    out = speckle_noise(x, 5, gen(0))
    assert bool((out[:, :, :4] == 0).all())


# ----------------------------------------------------------------------------- blur: scipy references


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_gaussian_blur_matches_scipy(severity):
    sigma = severity_constants("gaussian_blur")[severity - 1]
    x = texture(2, 40, 48)
    # skimage.filters.gaussian defaults: mode="nearest", truncate=4.0; no blur across channels
    expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(gaussian_blur(x, severity).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("name", ["gaussian_blur", "zoom_blur", "elastic_transform"])
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_spatial_ops_preserve_constant_image(name, severity):
    x = torch.full((2, 3, 24, 32), 0.3, dtype=torch.float64)
    x[1] = 0.8
    torch.testing.assert_close(corrupt(x, name, severity, generator=gen(0)), x, rtol=0, atol=1e-12)


def zoom_blur_reference(img: np.ndarray, factors) -> np.ndarray:
    """ImageNet-C zoom blur of one (H, W, 3) image: centre crop ceil(H/z), scipy zoom (order 1),
    centre trim, mean with the original; each axis cropped by its own length.

    ``mode="nearest"``: the zoom samples only inside the crop, but scipy's default "constant"
    mode turns a float overshoot of the last coordinate (e.g. 35 * 29 / 35 = 29.000000000000004)
    into the fill value 0, a rounding artefact of the reference, not part of the definition.
    """
    h, w = img.shape[:2]
    total = img.copy()
    for z in factors:
        ch, cw = math.ceil(h / z), math.ceil(w / z)
        top, left = (h - ch) // 2, (w - cw) // 2
        zoomed = ndimage.zoom(img[top : top + ch, left : left + cw], (z, z, 1), order=1, mode="nearest")
        th, tw = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
        total += zoomed[th : th + h, tw : tw + w]
    return np.clip(total / (len(factors) + 1), 0, 1)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [(40, 40), (36, 50)])
def test_zoom_blur_matches_scipy_zoom(severity, size):
    x = texture(2, *size)
    out = zoom_blur(x, severity)
    factors = severity_constants("zoom_blur")[severity - 1]
    for b in range(2):
        expected = zoom_blur_reference(to_hwc(x[b]), factors)
        np.testing.assert_allclose(to_hwc(out[b]), expected, atol=1e-10)


# ----------------------------------------------------------------------------- digital / colour


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_contrast_definition(severity):
    c = severity_constants("contrast")[severity - 1]
    x = texture(3, 20, 24)
    arr = x.numpy()
    means = arr.mean(axis=(2, 3), keepdims=True)  # per image and channel
    expected = np.clip((arr - means) * c + means, 0, 1)
    np.testing.assert_allclose(contrast(x, severity).numpy(), expected, atol=1e-12)


def test_contrast_hand_value():
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    x[..., :2] = 1.0  # mean 0.25
    out = contrast(x, 3)  # c = 0.2: 0.25 + 0.75 * 0.2 = 0.4 and 0.25 - 0.25 * 0.2 = 0.2
    assert out[0, 0, 0, 0].item() == pytest.approx(0.4)
    assert out[0, 0, 0, 5].item() == pytest.approx(0.2)


COLOURS = [
    (0.4, 0.2, 0.1),
    (0.3, 0.3, 0.3),  # grey: hue 0
    (0.0, 0.0, 0.0),  # black
    (1.0, 1.0, 1.0),  # white
    (0.9, 0.05, 0.5),
    (0.2, 0.7, 0.65),
    (0.95, 0.95, 0.1),
    (0.1, 0.2, 0.9),
    (0.55, 0.5, 0.52),
]


def pixel_positions():
    return [(0, i) for i in range(8)] + [(1, 0)]


def colour_image() -> torch.Tensor:
    x = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    for (row, col), rgb in zip(pixel_positions(), COLOURS):
        x[0, :, row, col] = torch.tensor(rgb, dtype=torch.float64)
    return x


def hsv_reference(rgb, fn):
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    h, s, v = fn(h, s, v)
    return np.clip(colorsys.hsv_to_rgb(h, s, v), 0, 1)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_brightness_matches_colorsys(severity):
    c = severity_constants("brightness")[severity - 1]
    x = colour_image()
    out = brightness(x, severity)
    for rgb, (r, col) in zip(COLOURS, pixel_positions()):
        expected = hsv_reference(rgb, lambda h, s, v: (h, s, min(max(v + c, 0.0), 1.0)))
        np.testing.assert_allclose(out[0, :, r, col].numpy(), expected, atol=1e-12, err_msg=str(rgb))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_saturate_matches_colorsys(severity):
    scale, offset = severity_constants("saturate")[severity - 1]
    x = colour_image()
    out = saturate(x, severity)
    for rgb, (r, col) in zip(COLOURS, pixel_positions()):
        expected = hsv_reference(rgb, lambda h, s, v: (h, min(max(s * scale + offset, 0.0), 1.0), v))
        np.testing.assert_allclose(out[0, :, r, col].numpy(), expected, atol=1e-12, err_msg=str(rgb))


def test_saturate_tints_grey_red_at_high_severity():
    grey = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    assert torch.equal(saturate(grey, 3), grey)  # offset 0: grey stays grey
    out = saturate(grey, 5)[0, :, 0, 0]  # S = 0.2 at hue 0: (V, 0.8 V, 0.8 V)
    np.testing.assert_allclose(out.numpy(), [0.5, 0.4, 0.4], atol=1e-12)


# ----------------------------------------------------------------------------- elastic


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.44, 7.5, 40.0])
def test_elastic_smoothing_matches_scipy_reflect(sigma):
    # sigma 40 on a 20 x 28 field: the kernel is longer than the image (as at severity 1)
    field = torch.rand(2, 20, 28, generator=gen(3), dtype=torch.float64) * 2 - 1
    mine = C._gaussian_filter_reflect(field, sigma, truncate=3.0).numpy()
    for b in range(2):
        expected = ndimage.gaussian_filter(field[b].numpy(), sigma, mode="reflect", truncate=3.0)
        np.testing.assert_allclose(mine[b], expected, atol=1e-12)


@pytest.mark.parametrize(("border", "scipy_mode"), [("mirror", "mirror"), ("reflect", "reflect")])
def test_elastic_resampling_matches_scipy_map_coordinates(border, scipy_mode):
    # affine step: cv2.warpAffine(BORDER_REFLECT_101) = scipy "mirror"; elastic step:
    # scipy map_coordinates(order=1, mode="reflect"); coordinates reach 6 px outside the image
    x = texture(2, 20, 26)
    g = gen(9)
    src_x = torch.rand(2, 20, 26, generator=g, dtype=torch.float64) * 38 - 6
    src_y = torch.rand(2, 20, 26, generator=g, dtype=torch.float64) * 32 - 6
    out = C._resample(x, src_x, src_y, border=border).numpy()
    for b in range(2):
        for ch in range(3):
            expected = ndimage.map_coordinates(
                x[b, ch].numpy(), [src_y[b].numpy(), src_x[b].numpy()], order=1, mode=scipy_mode
            )
            np.testing.assert_allclose(out[b, ch], expected, atol=1e-12)


def test_elastic_lengths_scale_with_image_size():
    for severity in range(1, 6):
        published = severity_constants("elastic_transform")[severity - 1]
        np.testing.assert_allclose(C._elastic_lengths(severity, 224, 224), published, rtol=1e-12)
        np.testing.assert_allclose(C._elastic_lengths(severity, 448, 512), 2 * np.array(published), rtol=1e-12)


def ramp_image(b: int, h: int, w: int) -> torch.Tensor:
    """Channel 0: column index / (W - 1); channel 1: row index / (H - 1); channel 2: 0.5."""
    cols = torch.arange(w, dtype=torch.float64).view(1, w).expand(h, w) / (w - 1)
    rows = torch.arange(h, dtype=torch.float64).view(h, 1).expand(h, w) / (h - 1)
    return torch.stack((cols, rows, torch.full((h, w), 0.5, dtype=torch.float64))).expand(b, 3, h, w).clone()


def mean_displacement(severity: int, b: int = 8, size: int = 64, seed: int = 0) -> float:
    """Mean |displacement| (px) in the interior, read off a linear ramp (bilinear sampling of a
    ramp is exact, so the output value is the source coordinate)."""
    x = ramp_image(b, size, size)
    out = elastic_transform(x, severity, gen(seed))
    m = size // 4
    dx = (out[:, 0] - x[:, 0])[:, m:-m, m:-m] * (size - 1)
    dy = (out[:, 1] - x[:, 1])[:, m:-m, m:-m] * (size - 1)
    return torch.hypot(dx, dy).mean().item()


@pytest.mark.parametrize("severity", [3, 4, 5])
def test_elastic_displacement_variance_matches_definition(severity):
    """Mean squared displacement in the interior vs the definition, to first order:
    affine part: each control-point coordinate moves by U(-a, a) (variance a^2 / 3) and a pixel
    moves by the barycentric mix of the three; elastic part: U(-1, 1) noise (variance 1/3)
    smoothed by a separable Gaussian (variance gain (sum w^2)^2) times alpha."""
    size, b = 96, 128
    alpha, sigma, a = C._elastic_lengths(severity, size, size)
    x = ramp_image(b, size, size)
    out = elastic_transform(x, severity, gen(severity))
    m = size // 4
    dx = (out[:, 0] - x[:, 0])[:, m:-m, m:-m] * (size - 1)
    dy = (out[:, 1] - x[:, 1])[:, m:-m, m:-m] * (size - 1)
    measured = (dx**2 + dy**2).mean().item()
    radius = int(3 * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    w /= w.sum()
    elastic_var = alpha**2 / 3 * (w**2).sum() ** 2
    c, s = size // 2, size // 3
    corners = np.array([[c + s, c + s, 1], [c + s, c - s, 1], [c - s, c - s, 1]], dtype=float)
    ys, xs = np.mgrid[m : size - m, m : size - m]
    barycentric = np.linalg.solve(corners.T, np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]))
    affine_var = a**2 / 3 * (barycentric**2).sum(axis=0).mean()
    assert measured == pytest.approx(2 * (affine_var + elastic_var), rel=0.12)


def test_elastic_displacement_grows_with_severity_3_to_5():
    # severities 3-5 share sigma and affine jitter; alpha grows 12.2 -> 17.08 -> 29.28 px
    d3, d4, d5 = (mean_displacement(s) for s in (3, 4, 5))
    assert 0 < d3 < d4 < d5


def test_elastic_published_severities_are_not_monotone():
    # severities 1-2 (affine jitter 24.4 / 48.8 px at 224) move pixels further than 3-5
    assert mean_displacement(2) > mean_displacement(5)
    assert mean_displacement(1) > mean_displacement(3)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_elastic_is_a_resampling(severity):
    x = texture(3, 32, 40)
    out = elastic_transform(x, severity, gen(severity))
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    assert bool((out >= lo - 1e-12).all()) and bool((out <= hi + 1e-12).all())
    assert not torch.allclose(out, x)


# ----------------------------------------------------------------------------- damage vs severity

# Severity ranges over which the published constants imply growing damage; saturate
# desaturates at 1-2 and over-saturates at 3-5, elastic is checked above.
MONOTONE = [(n, (1, 2, 3, 4, 5)) for n in CORRUPTIONS if n not in ("saturate", "elastic_transform")]
MONOTONE += [("saturate", (1, 2)), ("saturate", (3, 4, 5)), ("elastic_transform", (3, 4, 5))]


@pytest.mark.parametrize(("name", "severities"), MONOTONE, ids=[f"{n}-{s}" for n, s in MONOTONE])
def test_damage_grows_with_severity(name, severities):
    x = texture(2, 48, 48, seed=11)
    damage = [(corrupt(x, name, s, generator=gen(0)) - x).abs().mean().item() for s in severities]
    assert all(a < b for a, b in zip(damage, damage[1:])), damage


# ----------------------------------------------------------------------------- gradients


DIFFERENTIABLE = [n for n in CORRUPTIONS if n not in ("shot_noise", "impulse_noise")]


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradcheck(name):
    x = (0.25 + 0.5 * torch.rand(1, 3, 8, 8, generator=gen(4), dtype=torch.float64)).requires_grad_()
    # severity 1 and a fresh seed per call keep the function deterministic and away from the clip
    def fn(t):
        return corrupt(t, name, 1, generator=gen(0))

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6, fast_mode=True)


# ----------------------------------------------------------------------------- speed


@pytest.mark.slow
def test_speed_batch_of_32():
    x = torch.rand(32, 3, 128, 128, generator=gen(0))
    start = time.perf_counter()
    for name in CORRUPTIONS:
        corrupt(x, name, 3, generator=gen(1))
    assert time.perf_counter() - start < 10.0


# ----------------------------------------------------------------------------- CIFAR-10-C table

CIFAR = "cifar10_c"


def test_cifar_published_constants_every_family_and_severity():
    """CIFAR-10-C (make_cifar_c.py), the tables the paper's public code applied."""
    assert severity_constants("gaussian_noise", CIFAR) == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert severity_constants("shot_noise", CIFAR) == (500, 250, 100, 75, 50)
    assert severity_constants("impulse_noise", CIFAR) == (0.01, 0.02, 0.03, 0.05, 0.07)
    assert severity_constants("speckle_noise", CIFAR) == (0.06, 0.1, 0.12, 0.16, 0.2)
    assert severity_constants("gaussian_blur", CIFAR) == (0.4, 0.6, 0.7, 0.8, 1)
    assert severity_constants("contrast", CIFAR) == (0.75, 0.5, 0.4, 0.3, 0.15)
    assert severity_constants("brightness", CIFAR) == (0.05, 0.1, 0.15, 0.2, 0.3)
    assert severity_constants("saturate", CIFAR) == ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))
    imsize = 32  # written there as IMSIZE * k
    published = [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)]
    np.testing.assert_allclose(severity_constants("elastic_transform", CIFAR), imsize * np.array(published),
                               rtol=1e-12)
    reference = [np.arange(1, stop, 0.01) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)]
    factors = severity_constants("zoom_blur", CIFAR)
    assert [len(f) for f in factors] == [7, 12, 16, 21, 26]  # arange's float artefact: 1.06, 1.11 included
    for mine, ref in zip(factors, reference):
        np.testing.assert_allclose(mine, ref, atol=1e-12)


def test_tables_and_fidelity_mapping():
    assert C.TABLES == ("imagenet_c", "cifar10_c")
    assert C.table_for_fidelity("corrected") == "imagenet_c" and C.table_for_fidelity("raw2logit") == CIFAR
    assert severity_constants("contrast") == severity_constants("contrast", "imagenet_c")
    rows = describe(CIFAR)
    assert [r["severity_3"] for r in rows][:4] == [0.08, 100, 0.03, 0.12]
    with pytest.raises(ValueError, match="table"):
        severity_constants("contrast", "cifar100_c")
    with pytest.raises(ValueError, match="table"):
        corrupt(texture(1, 16, 16), "contrast", 3, table="tiny")
    with pytest.raises(ValueError, match="fidelity"):
        C.table_for_fidelity("paper")


def test_cifar_contrast_hand_value():
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    x[..., :2] = 1.0  # mean 0.25
    out = contrast(x, 3, table=CIFAR)  # c = 0.4: 0.25 + 0.75 * 0.4 = 0.55 and 0.25 - 0.25 * 0.4 = 0.15
    assert out[0, 0, 0, 0].item() == pytest.approx(0.55, abs=1e-12)
    assert out[0, 0, 0, 5].item() == pytest.approx(0.15, abs=1e-12)
    out = corrupt(x, "contrast", 1, table=CIFAR)  # c = 0.75: 0.25 + 0.75 * 0.75 = 0.8125
    assert out[0, 1, 3, 1].item() == pytest.approx(0.8125, abs=1e-12)


def test_cifar_brightness_hand_value():
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    x[0, :, 0, 0] = torch.tensor([0.4, 0.2, 0.1], dtype=torch.float64)  # V 0.4, S 0.75, H 1/18
    out = brightness(x, 3, table=CIFAR)  # V + 0.15 = 0.55; S, H kept: (0.55, 0.275, 0.1375)
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [0.55, 0.275, 0.1375], atol=1e-12)
    assert out[0, :, 1, 1].tolist() == pytest.approx([0.15, 0.15, 0.15], abs=1e-12)  # black: V = 0.15
    top = brightness(torch.full((1, 3, 8, 8), 0.9, dtype=torch.float64), 5, table=CIFAR)  # 0.9 + 0.3 -> 1
    assert torch.allclose(top, torch.ones_like(top))


def test_cifar_saturate_hand_value():
    x = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    x[0, :, 0, 0] = torch.tensor([0.8, 0.6, 0.4], dtype=torch.float64)  # V 0.8, S 0.5
    out = saturate(x, 3, table=CIFAR)  # S * 1.5 = 0.75: min = 0.8 * 0.25 = 0.2, G halfway: 0.5
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [0.8, 0.5, 0.2], atol=1e-12)
    out = saturate(x, 4, table=CIFAR)  # S * 2 + 0.1 = 1.1 -> 1: (0.8, 0.4, 0)
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), [0.8, 0.4, 0.0], atol=1e-12)
    np.testing.assert_allclose(out[0, :, 3, 3].numpy(), [0.5, 0.45, 0.45], atol=1e-12)  # grey: S 0.1, hue 0


def test_cifar_elastic_lengths_are_not_rescaled():
    assert C._elastic_lengths(3, 256, 256, CIFAR) == (2.56, 1.92, 1.92)
    assert C._elastic_lengths(3, 256, 256) == pytest.approx(tuple(v * 256 / 224 for v in (12.2, 2.44, 4.88)))
    x = texture(1, 32, 32)
    # severity 1: alpha 0 and sigma 0, only the random affine (up to 2.56 px) moves the image
    out = elastic_transform(x, 1, generator=gen(1), table=CIFAR)
    assert torch.isfinite(out).all() and not torch.equal(out, x)
    assert (out - x).abs().mean() < 0.1


@pytest.mark.parametrize("name", STOCHASTIC[:4] + ("gaussian_blur", "zoom_blur"))
def test_cifar_table_is_milder_at_severity_3(name):
    x = texture(2, 32, 32)
    imagenet = (corrupt(x, name, 3, generator=gen(2)) - x).abs().mean()
    cifar = (corrupt(x, name, 3, generator=gen(2), table=CIFAR) - x).abs().mean()
    assert 0 < cifar < imagenet
