"""Tests of the ISP data model (drifthelpers.isp): stages, presets, parametrized model.

References: colour-demosaicing for the three demosaicers, kornia's raw_to_rgb for bilinear,
and an independent NumPy/SciPy implementation of the whole static chain (tests/isp_reference.py).
"""

from __future__ import annotations

import math

import kornia
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import isp_reference as ref
from drifthelpers import isp
from drifthelpers.isp import fastisp, static
from drifthelpers.isp.chain import ChainValues, component_ops, run_chain
from drifthelpers.isp.demosaicing import _abs_diff_ahead, _padded_difference
from drifthelpers.isp.stages import _gaussian_blur, _median3x3, _on_luma
from drifthelpers.isp.tables import _GAMMA_EPS
from drifthelpers.isp.tensors import _pad_reflect
from drifthelpers.raw import CFA_PATTERNS, RawImage, cfa_to_kornia

PAPER_LABELS = "bi,s,me bi,s,ga bi,u,me bi,u,ga ma,s,me ma,s,ga ma,u,me ma,u,ga me,s,me me,s,ga me,u,me me,u,ga"
CAMERA = isp.CameraParams(
    "RGGB",
    (64.0, 60.0, 62.0, 66.0),
    1023.0,
    (1.9, 1.0, 1.5),
    ((1.6, -0.4, -0.2), (-0.3, 1.5, -0.2), (0.0, -0.5, 1.5)),
)


def scene(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth + edgy float64 RGB test image in about [0, 1]: gradients, a disc, a line, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    yy, xx = yy / h, xx / w
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx + 2 * yy), 0.5 + 0.3 * np.cos(5 * yy - 3 * xx),
                    0.3 + 0.2 * xx + 0.3 * yy], axis=-1)
    img[(xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.08] *= 0.3
    img[:, w // 3] = 0.95
    img[h // 4, :] = 0.05
    return np.clip(img + 0.02 * rng.standard_normal(img.shape), 0.0, 1.0)


def mosaic_t(cfa: str, h: int = 48, w: int = 64, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(ref.mosaic(scene(h, w, seed), cfa)).to(dtype)[None, None]


def raw_dn(cfa: str, cam: isp.CameraParams = CAMERA, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A mosaic in DN for ``cam``: the scene scaled between black and half of white (so that
    after white balance only the brightest parts clip)."""
    m = ref.mosaic(scene(h, w, seed), cfa)
    black = np.tile(np.asarray(cam.black_level).reshape(2, 2), (h // 2, w // 2))
    return black + m * 0.5 * (cam.white_level - black)


def camera(cfa: str) -> isp.CameraParams:
    return isp.CameraParams(cfa, CAMERA.black_level, CAMERA.white_level, CAMERA.wb_gains, CAMERA.ccm)


# --------------------------------------------------------------------------- presets


def test_presets_are_the_papers_twelve_in_order():
    assert isp.PRESETS == tuple(PAPER_LABELS.split())
    desc = isp.describe_presets()
    assert [d["label"] for d in desc] == list(isp.PRESETS)
    codes = {"bilinear": 0, "malvar2004": 1, "menon2007": 2}
    for d in desc:
        dm, s, n = d["label"].split(",")
        assert d["index"] == 4 * codes[d["demosaic"]] + 2 * (s == "u") + (n == "ga")
        assert ("unsharp" in d["sharpen"]) == (s == "u")
        assert ("median" in d["denoise"]) == (n == "me")


@pytest.mark.parametrize("bad", ["bi,s", "xx,s,me", "bi,s,median", 3, ""])
def test_unknown_preset_is_rejected(bad):
    with pytest.raises(ValueError, match="preset"):
        isp.parse_preset(bad)
    with pytest.raises((ValueError, TypeError), match="preset"):
        isp.StaticDataModel(bad, CAMERA)


# --------------------------------------------------------------------------- demosaicing


DEMOSAICERS = {
    "bi": (isp.demosaic_bilinear, 1),  # (function, border in px that the reference pads differently)
    "ma": (isp.demosaic_malvar2004, 2),
    "me": (isp.demosaic_menon2007, 10),
}


@pytest.mark.parametrize("codes", [("xx", "s", "me"), ("bi", "median", "me"), ("bi", "s", "gauss")])
def test_unknown_component_code_is_rejected(codes):
    with pytest.raises(ValueError, match="must be one of"):
        component_ops(*codes, torch.zeros(1))


def test_skipped_luma_stages_leave_the_fused_and_staged_chains_equal():
    raw = torch.rand(2, 1, 16, 16, dtype=torch.float64) * 900 + 60
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    values = ChainValues(CAMERA.cfa, t(CAMERA.black_level), t(CAMERA.white_level), t(CAMERA.wb_gains),
                         t(CAMERA.ccm), CAMERA.gamma, *component_ops("ma", "none", "none", raw))
    staged, stages = run_chain(raw, values, return_stages=True)
    assert "sharpen" not in stages and "denoise" not in stages and list(stages)[-2:] == ["clip", "gamma"]
    torch.testing.assert_close(run_chain(raw, values), staged, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("method", ["bi", "ma", "me"])
def test_demosaic_matches_colour_demosaicing_interior(method, cfa):
    """Float64, every pattern: interior pixels equal colour-demosaicing to 1e-12.

    The border differs by design: colour-demosaicing pads with SciPy's half-sample 'reflect',
    which puts the wrong colour next to the edge; we mirror (keeping the CFA phase).
    """
    fn, border = DEMOSAICERS[method]
    raw = mosaic_t(cfa)
    ours = fn(raw, cfa)[0].permute(1, 2, 0).numpy()
    oracle = ref.DEMOSAICERS[method](raw[0, 0].numpy(), cfa)
    b = border
    np.testing.assert_allclose(ours[b:-b, b:-b], oracle[b:-b, b:-b], rtol=0, atol=1e-12)
    # and the border really differs (the test can see a difference where one exists)
    if method != "me":
        assert np.abs(ours - oracle).max() > 1e-3


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("method", ["bi", "ma"])
def test_linear_demosaic_matches_reference_everywhere_with_phase_preserving_pad(method, cfa):
    raw = mosaic_t(cfa)
    ours = DEMOSAICERS[method][0](raw, cfa)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, ref.demosaic(raw[0, 0].numpy(), cfa, method), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_demosaic_float32_close_to_reference(cfa):
    """Float32: bilinear and Malvar within 1e-6; Menon within 1e-5 on 99.9 % of interior pixels
    (its direction decision may flip where the two directions tie to float32 rounding)."""
    raw64 = mosaic_t(cfa)
    raw32 = raw64.float()
    for method, (fn, b) in DEMOSAICERS.items():
        d = (fn(raw32, cfa).double() - fn(raw64, cfa))[..., b:-b, b:-b].abs()
        if method == "me":
            assert (d > 1e-5).double().mean() < 1e-3
        else:
            assert d.max() < 1e-6


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_bilinear_equals_kornia_raw_to_rgb_everywhere(cfa):
    raw = mosaic_t(cfa, dtype=torch.float32)
    ours = isp.demosaic_bilinear(raw, cfa)
    theirs = kornia.color.raw_to_rgb(raw, cfa_to_kornia(cfa))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("method", ["bi", "ma"])
def test_odd_sized_mosaic_uses_the_same_interpolation(method, cfa):
    raw = mosaic_t(cfa, 48, 64)
    fn = DEMOSAICERS[method][0]
    full = fn(raw, cfa)
    odd = fn(raw[..., :47, :63], cfa)
    torch.testing.assert_close(odd[..., 3:-3, 3:-3], full[..., 3:44, 3:60], rtol=0, atol=1e-12)


def test_bilinear_hand_checked_values():
    # RGGB 4x4: R at (0,0),(0,2),(2,0),(2,2); B at odd/odd; G elsewhere.
    raw = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    out = isp.demosaic_bilinear(raw, "RGGB")[0]
    # pixel (1,1) is B = 5: R = mean of diagonals 0,2,8,10 = 5; G = mean of 1,4,6,9 = 5
    assert out[:, 1, 1].tolist() == [5.0, 5.0, 5.0]
    # pixel (1,2) is G = 6 in a B row: R from above/below (2, 10) = 6, B from left/right (5, 7) = 6
    assert out[:, 1, 2].tolist() == [6.0, 6.0, 6.0]
    # measured samples are kept
    assert out[0, 0, 0] == 0 and out[2, 3, 3] == 15 and out[1, 0, 1] == 1


@pytest.mark.parametrize("method", ["bi", "ma", "me"])
def test_demosaic_flat_field_is_flat(method):
    raw = torch.full((2, 1, 16, 16), 0.37)
    out = isp.demosaic(raw, "GBRG", method)
    torch.testing.assert_close(out, torch.full((2, 3, 16, 16), 0.37), rtol=0, atol=1e-6)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("method", ["bi", "ma", "me"])
def test_demosaic_shapes_and_batch_independence(method, batch, cfa):
    raw = torch.rand(batch, 1, 12, 16)
    out = isp.demosaic(raw, cfa, method)
    assert out.shape == (batch, 3, 12, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out[-1:], isp.demosaic(raw[-1:], cfa, method))
    assert isp.demosaic(raw[None], cfa, method).shape == (1, batch, 3, 12, 16)  # extra leading dim


def test_demosaic_bad_input():
    with pytest.raises(ValueError, match="cfa"):
        isp.demosaic_bilinear(torch.rand(1, 1, 8, 8), "RGBG")
    with pytest.raises(ValueError, match="method"):
        isp.demosaic(torch.rand(1, 1, 8, 8), "RGGB", "ahd")
    with pytest.raises(ValueError, match=r"raw must have shape \(\*, 1, H, W\)"):
        isp.demosaic_malvar2004(torch.rand(1, 3, 8, 8), "RGGB")
    with pytest.raises(TypeError, match="floating-point"):
        isp.demosaic_menon2007(torch.ones(1, 1, 8, 8, dtype=torch.int64), "RGGB")
    with pytest.raises(ValueError, match="too small"):
        isp.demosaic_malvar2004(torch.rand(1, 1, 2, 2), "RGGB")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bi", "ma", "me"])
def test_demosaic_gradcheck(method):
    raw = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: isp.demosaic(x, "GRBG", method), (raw,))


# --------------------------------------------------------------------------- black level, colour


def test_black_level_per_site_hand_checked():
    raw = torch.tensor([[[[110.0, 120.0], [130.0, 140.0]]]])
    out = isp.subtract_black_level(raw, (10.0, 20.0, 30.0, 40.0), 1010.0)
    torch.testing.assert_close(out, torch.tensor([[[[0.1, 100 / 990], [100 / 980, 100 / 970]]]]))
    # per-image black levels (B, 4) and per-site white levels
    raw2 = torch.full((2, 1, 4, 4), 100.0)
    black = torch.tensor([[0.0, 0.0, 0.0, 0.0], [50.0, 50.0, 50.0, 50.0]])
    out2 = isp.subtract_black_level(raw2, black, torch.full((4,), 200.0))
    assert out2[0].unique().tolist() == [0.5] and out2[1].unique().tolist() == [pytest.approx(1 / 3)]
    # odd sizes take the same values
    odd = isp.subtract_black_level(torch.full((1, 1, 3, 5), 50.0), (0.0, 10.0, 20.0, 30.0), 100.0)[0, 0]
    assert odd[2, 4] == 0.5 and odd[0, 1] == pytest.approx(40 / 90)
    assert odd[1, 4] == pytest.approx(30 / 80) and odd[1, 1] == pytest.approx(20 / 70)


def test_black_level_bad_input():
    raw = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="black_level"):
        isp.subtract_black_level(raw, (1.0, 2.0, 3.0), 10.0)
    with pytest.raises(ValueError, match="white_level"):
        isp.subtract_black_level(raw, 5.0, 5.0)
    with pytest.raises(ValueError, match="black_level"):
        isp.subtract_black_level(raw, torch.zeros(2, 2, 2, 4), 1.0)


def test_white_balance_and_colour_matrix():
    rgb = torch.rand(2, 3, 4, 5)
    g = torch.tensor([2.0, 1.0, 0.5])
    torch.testing.assert_close(isp.white_balance(rgb, g), rgb * g.view(1, 3, 1, 1))
    g2 = torch.stack([g, g * 2])
    torch.testing.assert_close(isp.white_balance(rgb, g2), rgb * g2[..., None, None])
    m = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1.0, -1.0, 1.0]])
    out = isp.colour_correct(rgb, m)
    torch.testing.assert_close(out[:, 0], 0.5 * rgb[:, 0] + 0.5 * rgb[:, 1])
    torch.testing.assert_close(out[:, 2], rgb[:, 0] - rgb[:, 1] + rgb[:, 2])
    with pytest.raises(ValueError, match="wb_gains"):
        isp.white_balance(rgb, torch.ones(4))
    with pytest.raises(ValueError, match="ccm"):
        isp.colour_correct(rgb, torch.eye(4))
    with pytest.raises(ValueError, match="rgb"):
        isp.white_balance(torch.rand(1, 4, 2, 2), g)


# --------------------------------------------------------------------------- luma filters


def test_luma_filtering_equals_kornia_yuv_round_trip():
    rgb = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    k = torch.rand(3, 3, dtype=torch.float64)
    yuv = kornia.color.rgb_to_yuv(rgb)
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(yuv[:, :1], (1, 1, 1, 1), mode="reflect"), k[None, None])
    expected = kornia.color.yuv_to_rgb(torch.cat([y, yuv[:, 1:]], dim=1))
    torch.testing.assert_close(isp.luma_filter(rgb, k), expected, rtol=0, atol=1e-12)
    # chroma (U, V) untouched
    torch.testing.assert_close(kornia.color.rgb_to_yuv(isp.sharpen(rgb))[:, 1:], yuv[:, 1:], rtol=0, atol=1e-12)


def test_sharpen_point_response_is_the_kernel():
    rgb = torch.zeros(1, 3, 7, 7, dtype=torch.float64)
    rgb[..., 3, 3] = 1.0  # a white point: luma 1
    out = isp.sharpen(rgb)[0, 0]
    expected = torch.zeros(7, 7, dtype=torch.float64)
    expected[2:5, 2:5] = torch.tensor(isp.SHARPEN_KERNEL, dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    # constant and tensor kernels take the same path result
    torch.testing.assert_close(isp.sharpen(rgb, torch.tensor(isp.SHARPEN_KERNEL, dtype=torch.float64)), isp.sharpen(rgb))


def _unsharp_one_axis(rgb: torch.Tensor) -> torch.Tensor:
    """The public code's defect: Gaussian along one axis only (kept here to show the test bites)."""
    def op(y):
        g = kornia.filters.get_gaussian_kernel1d(9, 1.0).to(y)
        blur = torch.nn.functional.conv2d(torch.nn.functional.pad(y, (4, 4, 0, 0), mode="reflect"), g.view(1, 1, 1, 9))
        return 2 * y - blur
    return _on_luma(rgb, op)


def test_unsharp_mask_is_isotropic_2d():
    rgb = torch.zeros(1, 3, 15, 15, dtype=torch.float64)
    rgb[..., 7, 7] = 1.0
    resp = isp.unsharp_mask(rgb)[0, 1]
    torch.testing.assert_close(resp, resp.T)
    torch.testing.assert_close(resp, torch.rot90(resp, 1))
    # the point spreads along both axes (an axis-only filter leaves the column untouched)
    assert resp[6, 7] < 0 and resp[7, 6] < 0 and resp[6, 6] < 0
    # a horizontal edge and a vertical edge are sharpened alike
    edge = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    edge[..., :, 8:] = 1.0
    torch.testing.assert_close(isp.unsharp_mask(edge)[0, 0], isp.unsharp_mask(edge.transpose(-1, -2))[0, 0].T)
    one_axis = _unsharp_one_axis(rgb)[0, 1]
    assert (one_axis - one_axis.T).abs().max() > 1e-2  # the defect would fail the symmetry check
    assert not torch.allclose(_unsharp_one_axis(edge)[0, 0], _unsharp_one_axis(edge.transpose(-1, -2))[0, 0].T)


def test_unsharp_mask_matches_scipy_definition():
    from scipy import ndimage

    rgb = torch.from_numpy(scene(24, 24)).permute(2, 0, 1)[None]
    y = (rgb[0].permute(1, 2, 0).numpy() @ ref.LUMA)
    expected_y = y + 0.7 * (y - ndimage.gaussian_filter(y, 1.5, mode="mirror", truncate=4.0))
    out = isp.unsharp_mask(rgb, radius=1.5, amount=0.7)[0].permute(1, 2, 0).numpy() @ ref.LUMA
    np.testing.assert_allclose(out, expected_y, rtol=0, atol=1e-12)


def test_median3x3_equals_kornia_and_scipy():
    from scipy import ndimage

    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 5, (3, 1, 17, 23), generator=g).double() / 4  # many ties
    y = torch.cat([y, torch.rand(2, 1, 17, 23, dtype=torch.float64, generator=g)])
    ours = _median3x3(y)
    torch.testing.assert_close(ours, kornia.filters.median_blur(y, 3, border_type="reflect"), rtol=0, atol=0)
    for i in range(y.shape[0]):
        np.testing.assert_array_equal(ours[i, 0].numpy(), ndimage.median_filter(y[i, 0].numpy(), 3, mode="mirror"))
    assert isp.denoise_median(torch.rand(1, 3, 9, 9), 5).shape == (1, 3, 9, 9)  # other sizes: kornia


def test_median_and_gaussian_denoise():
    rgb = torch.full((1, 3, 9, 9), 0.2, dtype=torch.float64)
    rgb[..., 4, 4] = 1.0
    torch.testing.assert_close(isp.denoise_median(rgb), torch.full_like(rgb, 0.2))
    out = isp.denoise_gaussian(rgb)  # 5x5 window, sigma 0.5: taps at distance 2 are 3.4e-4 of the centre
    g1 = np.exp(-np.arange(-2, 3) ** 2 / (2 * 0.25))
    g1 /= g1.sum()
    expected = 0.2 + 0.8 * np.outer(g1, g1)
    np.testing.assert_allclose(out[0, 0, 2:7, 2:7].numpy(), expected, rtol=0, atol=1e-12)
    assert out[0, 0, 2, 2] > 0.2  # the 5x5 corners are non-zero: not a truncated 3x3 window
    with pytest.raises(ValueError, match="kernel_size"):
        isp.denoise_median(rgb, 4)
    with pytest.raises(ValueError, match="sigma"):
        isp.denoise_gaussian(rgb, 0.0)


# --------------------------------------------------------------------------- gamma


def test_gamma_values_and_finite_gradients():
    out = isp.gamma_encode(torch.tensor([0.0, 0.25, 4.0]).view(1, 3, 1, 1), 2.0).flatten()
    torch.testing.assert_close(out, torch.tensor([0.0, 0.5, 1.0]))
    v = torch.tensor([-0.5, 0.0, 1e-9, 1e-6, 0.3, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    g = torch.tensor(2.2, dtype=torch.float64, requires_grad=True)
    y = isp.gamma_encode(v.view(1, 1, 1, 7).expand(1, 3, 1, 7), g)
    y.sum().backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(g.grad)
    y = y.detach()
    assert abs(float(y[0, 0, 0, 4]) - 0.3 ** (1 / 2.2)) < 1e-12
    assert y[0, 0, 0, :2].tolist() == [0.0, 0.0] and float(y[0, 0, 0, 6]) == 1.0
    assert 0 < float(y[0, 0, 0, 2]) < 1e-6 ** (1 / 2.2)  # the linear toe: 0 at 0, continuous at eps


def test_gamma_gradcheck():
    x = (torch.rand(1, 3, 4, 4, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    g = torch.tensor([2.2, 1.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: isp.gamma_encode(a.expand(2, -1, -1, -1), b), (x, g))


# --------------------------------------------------------------------------- the static chain


@pytest.mark.parametrize("cfa", ["RGGB", "GBRG"])
@pytest.mark.parametrize("preset", isp.PRESETS)
def test_static_chain_matches_numpy_reference(preset, cfa):
    """Float64 against tests/isp_reference.py (colour-demosaicing + scipy.ndimage): 1e-10 on
    every pixel for bi/ma (reference padded to keep the CFA phase), on pixels 16 px from the
    border for Menon (whose multi-stage border handling differs)."""
    cam = camera(cfa)
    raw = raw_dn(cfa, cam)
    ours = isp.render(torch.from_numpy(raw)[None, None], preset, cam)[0].permute(1, 2, 0).numpy()
    expected = ref.render(raw, preset, cfa, cam.black_level, cam.white_level, cam.wb_gains, cam.ccm)
    b = 16 if preset.startswith("me") else 0
    sl = np.s_[b : raw.shape[0] - b, b : raw.shape[1] - b]
    np.testing.assert_allclose(ours[sl], expected[sl], rtol=0, atol=1e-10)
    assert 0.05 < expected.mean() < 0.95  # a non-trivial image (not clipped away)


@pytest.mark.parametrize("preset", isp.PRESETS)
def test_static_model_equals_function_and_staged_path(preset):
    """Module == function; the fused path (no stages) == the staged path: 1e-12 in float64,
    and in float32 1e-6 before gamma (the power law's slope near black, up to ~10^3, magnifies
    float32 rounding, so the final float32 images, fused (in float32 the kernels of
    drifthelpers.isp.fastisp) and staged, are each compared with float64 at 5e-5)."""
    cam = camera("GRBG")
    raw = torch.from_numpy(raw_dn("GRBG")).float()[None, None].repeat(2, 1, 1, 1)
    model = isp.StaticDataModel(preset, cam)
    out = model(raw)
    assert out.shape == (2, 3, 48, 64) and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, isp.render(raw, preset, cam), rtol=0, atol=0)
    staged, stages = isp.render(raw, preset, cam, return_stages=True)
    assert list(stages) == list(isp.STAGES)
    assert all(t.shape[-2:] == (48, 64) for t in stages.values())
    torch.testing.assert_close(stages["gamma"], staged)
    out64, stages64 = isp.render(raw.double(), preset, cam), isp.render(raw.double(), preset, cam, True)[1]
    torch.testing.assert_close(out.double(), out64, rtol=0, atol=5e-5)
    torch.testing.assert_close(staged.double(), out64, rtol=0, atol=5e-5)
    torch.testing.assert_close(out64, stages64["gamma"], rtol=0, atol=1e-12)
    torch.testing.assert_close(stages["denoise"].double(), stages64["denoise"], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.double()(raw.double()), out64, rtol=0, atol=0)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_render_batch_equals_one_by_one(cfa):
    cam = camera(cfa)
    raw = torch.stack([torch.from_numpy(raw_dn(cfa, cam, 32, 32, seed=s)) for s in range(3)])[:, None]
    batched = isp.render(raw, "ma,u,me", cam)
    single = torch.cat([isp.render(r[None], "ma,u,me", cam) for r in raw])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)


def test_render_bad_input():
    with pytest.raises(ValueError, match="raw"):
        isp.render(torch.rand(1, 3, 16, 16), "bi,s,me", CAMERA)
    with pytest.raises(TypeError, match="camera"):
        isp.render(torch.rand(1, 1, 16, 16), "bi,s,me", {"cfa": "RGGB"})
    with pytest.raises(ValueError, match="too small"):  # the 9x9 unsharp window needs > 4 px
        isp.render(torch.rand(1, 1, 4, 4), "bi,u,me", CAMERA)
    assert isp.render(torch.rand(1, 1, 4, 4), "me,s,ga", CAMERA).shape == (1, 3, 4, 4)
    for preset in ("bi,s,ga", "ma,s,me", "me,s,me"):
        with pytest.raises(ValueError, match="too small"):
            isp.render(torch.rand(1, 1, 2, 2), preset, CAMERA)
    with pytest.raises(ValueError, match="cfa"):
        isp.CameraParams("RGBX", (0.0,) * 4, 1.0)
    with pytest.raises(ValueError, match="white_level"):
        isp.CameraParams("RGGB", (10.0,) * 4, 10.0)
    with pytest.raises(ValueError, match="wb_gains"):
        isp.CameraParams("RGGB", (0.0,) * 4, 1.0, (1.0, 1.0))
    with pytest.raises(ValueError, match="ccm"):
        isp.CameraParams("RGGB", (0.0,) * 4, 1.0, ccm=((1.0, 0.0), (0.0, 1.0)))


def test_camera_params_from_raw_image():
    ri = RawImage(np.full((4, 6), 100, np.uint16), "GBRG", (10.0, 11.0, 12.0, 13.0), 1023.0)
    cam = isp.CameraParams.from_raw_image(ri)
    assert cam.cfa == "GBRG" and cam.black_level == (10.0, 11.0, 12.0, 13.0) and cam.white_level == 1023.0
    assert cam.wb_gains == (1.0, 1.0, 1.0)  # missing white balance -> unit gains
    assert cam.ccm == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))  # missing matrix -> identity
    ri2 = RawImage(np.full((4, 6), 100, np.uint16), "RGGB", (0.0,) * 4, 255.0, wb_gains=(2.0, 1.0, 1.5),
                   ccm=np.array([[1.2, -0.1, -0.1], [0.0, 1.0, 0.0], [-0.2, 0.0, 1.2]]))
    cam2 = isp.CameraParams.from_raw_image(ri2, gamma=2.4)
    assert cam2.wb_gains == (2.0, 1.0, 1.5) and cam2.ccm[2] == (-0.2, 0.0, 1.2) and cam2.gamma == 2.4
    out = isp.render(ri2.to_tensor()[None], "bi,s,ga", cam2)
    assert out.shape == (1, 3, 4, 6)


# --------------------------------------------------------------------------- the parametrized model


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_parametrized_at_init_reproduces_static_bi_s_ga(cfa):
    """At initialisation the parametrized model is the static view: max abs diff < 1e-5 on the
    final float32 image (measured 2-3e-6: the two paths round differently, e.g. a 5x5 vs a
    separable Gaussian, and the power law magnifies that near black), < 1e-6 on the float32
    linear image before clip and gamma, and < 1e-10 in float64 (same arithmetic)."""
    cam = camera(cfa)
    raw = torch.from_numpy(raw_dn(cfa, cam))[None, None]
    static64, stages64 = isp.render(raw, "bi,s,ga", cam, return_stages=True)
    static32, stages32 = isp.render(raw.float(), "bi,s,ga", cam, return_stages=True)
    for learn in (False, True):
        model = isp.ParametrizedDataModel(cam, learn_demosaic=learn)
        out32, st32 = model(raw.float(), return_stages=True)
        assert (st32["denoise"] - stages32["denoise"]).abs().max() < 1e-6
        assert (out32 - static32).abs().max() < 1e-5
        assert (model.double().reset_parameters()(raw) - static64).abs().max() < 1e-10
    for method in ("ma", "me"):
        model = isp.ParametrizedDataModel(cam, demosaic=method, learn_demosaic=method == "ma")
        model = model.double().reset_parameters()
        assert (model(raw) - isp.render(raw, f"{method},s,ga", cam)).abs().max() < 1e-10


def test_parametrized_groups_bounds_and_stages():
    model = isp.ParametrizedDataModel(CAMERA, learn_demosaic=True)
    groups = model.param_groups()
    assert list(groups) == ["black_level", "demosaic", "white_balance", "colour_matrix", "sharpen", "denoise", "gamma"]
    shapes = {k: tuple(v[0].shape) for k, v in groups.items()}
    assert shapes == {"black_level": (4,), "demosaic": (4, 5, 5), "white_balance": (3,), "colour_matrix": (3, 3),
                      "sharpen": (3, 3), "denoise": (5, 5), "gamma": (1,)}
    assert set(model.bounds()) == set(groups)
    assert model.bounds()["gamma"] == {"lower": 1.0, "upper": 4.0}
    state = model.state_as_dict()
    assert state["gamma"] == pytest.approx(2.2) and state["black_level_dn"] == pytest.approx(list(CAMERA.black_level))
    out, stages = model(torch.rand(2, 1, 16, 16) * 1000, return_stages=True)
    assert list(stages) == list(isp.STAGES) and out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(stages["gamma"], out)
    assert "demosaic" not in isp.ParametrizedDataModel(CAMERA).param_groups()


def test_freeze_all_but():
    model = isp.ParametrizedDataModel(CAMERA).freeze_all_but("black_level", "gamma")
    model(torch.rand(1, 1, 16, 16) * 1000).mean().backward()
    for name, (p,) in model.param_groups().items():
        assert p.requires_grad == (name in ("black_level", "gamma"))
        assert (p.grad is not None) == (name in ("black_level", "gamma"))
    with pytest.raises(ValueError, match="groups"):
        model.freeze_all_but("colour_correction")


def test_parametrized_bad_construction():
    with pytest.raises(ValueError, match="learn_demosaic"):
        isp.ParametrizedDataModel(CAMERA, demosaic="me", learn_demosaic=True)
    with pytest.raises(ValueError, match="demosaic"):
        isp.ParametrizedDataModel(CAMERA, demosaic="vng")
    with pytest.raises(ValueError, match="gamma"):
        isp.ParametrizedDataModel(isp.CameraParams("RGGB", (0.0,) * 4, 1.0, gamma=5.0))
    with pytest.raises(ValueError, match="black_level"):
        isp.ParametrizedDataModel(isp.CameraParams("RGGB", (600.0,) * 4, 1000.0))


def test_negative_gain_is_folded_into_the_matrix():
    cam = isp.CameraParams("RGGB", (0.0,) * 4, 1.0, (-1.5, 1.0, 2.0),
                           ((-0.8, 0.1, 0.1), (0.2, 0.9, -0.1), (0.1, 0.1, 0.8)))
    raw = torch.rand(1, 1, 16, 16) * 0.3
    model = isp.ParametrizedDataModel(cam)
    assert (model.white_balance > 0).all()
    torch.testing.assert_close(model(raw), isp.render(raw, "bi,s,ga", cam), rtol=0, atol=1e-5)


def test_project_puts_parameters_in_their_sets_and_is_idempotent():
    model = isp.ParametrizedDataModel(CAMERA, learn_demosaic=True)
    before = {k: v[0].detach().clone() for k, v in model.param_groups().items()}
    model.project_()
    for k, (p,) in model.param_groups().items():  # the initial values are inside their sets
        torch.testing.assert_close(p.detach(), before[k], rtol=0, atol=1e-6)
    with torch.no_grad():
        for (p,) in model.param_groups().values():
            p.add_(torch.randn_like(p) * 20)
    model.project_()
    b = model.bounds()
    for k, (p,) in model.param_groups().items():
        assert p.min() >= b[k]["lower"] - 1e-6 and p.max() <= b[k]["upper"] + 1e-6, k
    torch.testing.assert_close(model.colour_matrix.sum(1), torch.tensor(CAMERA.ccm).sum(1), rtol=0, atol=1e-5)
    assert model.denoise.min() >= 0 and float(model.denoise.detach().sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(model.sharpen.detach().sum()) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(model.demosaic.sum((1, 2)), torch.ones(4), rtol=0, atol=1e-5)
    again = {k: v[0].detach().clone() for k, v in model.param_groups().items()}
    model.project_()
    for k, (p,) in model.param_groups().items():
        torch.testing.assert_close(p.detach(), again[k], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_parametrized_gradcheck_float64():
    """Gradients w.r.t. the raw input and all 151 parameters (51 + 100 learned demosaic taps)."""
    cam = isp.CameraParams("GRBG", (0.02, 0.03, 0.01, 0.02), 1.0, (1.3, 1.0, 1.2),
                           ((0.9, 0.05, 0.05), (0.05, 0.9, 0.05), (0.05, 0.05, 0.9)))
    model = isp.ParametrizedDataModel(cam, learn_demosaic=True).double().reset_parameters()
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in model.named_parameters())
    assert sum(p.numel() for p in params) == 4 + 100 + 3 + 9 + 9 + 25 + 1
    g = torch.Generator().manual_seed(0)
    raw = (0.25 + 0.3 * torch.rand(1, 1, 8, 8, dtype=torch.float64, generator=g)).requires_grad_()

    def f(x, *ps):
        return torch.func.functional_call(model, dict(zip(names, ps)), (x,))

    assert 0 < f(raw, *params).min() and f(raw, *params).max() < 1  # away from the clip kinks
    assert torch.autograd.gradcheck(f, (raw, *params), eps=1e-6, atol=1e-5)


def _bounded_params(draw, model):
    b = model.bounds()
    floats = lambda lo, hi, n: draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n))  # noqa: E731
    return {
        "black_level": floats(0.0, 0.5, 4),
        "white_balance": floats(b["white_balance"]["lower"], b["white_balance"]["upper"], 3),
        "colour_matrix": floats(-4.0, 4.0, 9),
        "sharpen": floats(-4.0, 8.0, 9),
        "denoise": floats(0.0, 1.0, 25),
        "gamma": floats(1.0, 4.0, 1),
    }


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_parameters_within_bounds_give_finite_outputs_and_gradients(data):
    model = isp.ParametrizedDataModel(CAMERA)
    values = _bounded_params(data.draw, model)
    with torch.no_grad():
        for name, v in values.items():
            p = getattr(model, name)
            p.copy_(torch.tensor(v).reshape(p.shape))
    model.project_()  # sums (matrix rows, kernels) onto their constraint; boxes already hold
    raw = torch.rand(2, 1, 8, 8) * CAMERA.white_level
    out = model(raw)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    out.square().mean().backward()
    for name, (p,) in model.param_groups().items():
        assert torch.isfinite(p.grad).all(), name


def test_parametrized_matches_static_after_parameter_edit():
    """Changing a parameter changes the output the way the matching static function does."""
    model = isp.ParametrizedDataModel(CAMERA)
    with torch.no_grad():
        model.white_balance.copy_(torch.tensor([1.0, 1.2, 0.8]))
        model.gamma.fill_(1.8)
    cam = isp.CameraParams("RGGB", CAMERA.black_level, CAMERA.white_level, (1.0, 1.2, 0.8), CAMERA.ccm, 1.8)
    raw = torch.from_numpy(raw_dn("RGGB")).float()[None, None]
    assert (model(raw) - isp.render(raw, "bi,s,ga", cam)).abs().max() < 1e-5


def test_module_moves_dtype():
    model = isp.StaticDataModel("me,s,me", CAMERA).double()
    out = model(torch.rand(1, 1, 16, 16, dtype=torch.float64) * 1000)
    assert out.dtype == torch.float64 and math.isfinite(float(out.sum()))


# --------------------------------------------------------------------------- fast paths (no autograd)
# Without autograd the chain runs faster code (in place, on CFA sites only, in row bands); each
# must give what the general path gives. Passing an input that requires grad forces the general
# path, so the two are compared directly.


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("preset", isp.PRESETS)
def test_fast_render_path_equals_autograd_path(preset, cfa):
    cam = camera(cfa)
    raw = torch.from_numpy(raw_dn(cfa, cam, 24, 30)).repeat(2, 1, 1, 1)
    fast = isp.render(raw, preset, cam)
    general = isp.render(raw.clone().requires_grad_(), preset, cam).detach()
    torch.testing.assert_close(fast, general, rtol=0, atol=1e-12)
    with torch.inference_mode():
        torch.testing.assert_close(isp.render(raw.float(), preset, cam).double(), general, rtol=0, atol=2e-4)


@pytest.mark.parametrize("refining_step", [True, False])
@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_menon_on_sites_equals_general_path(cfa, refining_step):
    """The site-wise Menon (even sizes, no autograd) is the same arithmetic as the full-image one."""
    g = torch.Generator().manual_seed(3)
    for shape in [(2, 1, 20, 26), (1, 1, 4, 6), (2, 2, 1, 12, 10)]:
        x = torch.rand(shape, dtype=torch.float64, generator=g)
        fast = isp.demosaic_menon2007(x, cfa, refining_step)
        general = isp.demosaic_menon2007(x.clone().requires_grad_(), cfa, refining_step).detach()
        torch.testing.assert_close(fast, general, rtol=0, atol=1e-14)


def test_render_in_row_bands_equals_whole_frame(monkeypatch):
    """Large frames are rendered in overlapping bands of rows: bit-identical to one piece.
    (The torch path; the fused kernels of drifthelpers.isp.fastisp render whole frames.)"""
    monkeypatch.setattr(fastisp, "_ENABLED", False)
    cam = camera("GBRG")
    raw = torch.from_numpy(raw_dn("GBRG", cam, 130, 40, seed=2)).float()[None, None]
    whole = {p: isp.render(raw, p, cam) for p in isp.PRESETS}
    monkeypatch.setattr(static, "_BAND_PIXELS", 40 * 20)  # bands of 20 rows + halos
    for p in isp.PRESETS:
        assert torch.equal(isp.render(raw, p, cam), whole[p]), p


def test_pad_free_helpers_equal_padding():
    g = torch.Generator().manual_seed(4)
    for shape in [(2, 1, 9, 9), (1, 3, 20, 13), (1, 1, 4, 5)]:
        x, y = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
        for pad in (1, 2):
            assert torch.equal(_padded_difference(x, y, pad), _pad_reflect(x - y, pad, pad))
        for vertical, dim in ((False, -1), (True, -2)):
            padding = (0, 0, 0, 2) if vertical else (0, 2, 0, 0)
            ahead = torch.nn.functional.pad(x, padding, mode="reflect").narrow(dim, 2, x.shape[dim])
            assert torch.equal(_abs_diff_ahead(x, vertical), (x - ahead).abs())


def test_gaussian_blur_equals_kornia():
    g = torch.Generator().manual_seed(5)
    y = torch.rand(2, 1, 17, 23, dtype=torch.float64, generator=g)
    for sigma, size in [(0.5, 5), (1.0, 9), (1.5, 13)]:
        expected = kornia.filters.gaussian_blur2d(y, (size, size), (sigma, sigma), border_type="reflect")
        torch.testing.assert_close(_gaussian_blur(y, sigma, size), expected, rtol=0, atol=1e-14)


def test_gamma_backward_equals_autograd_through_the_formula():
    """The hand-written backward gives autograd's derivative of the composite formula, clamp
    ends included (values exactly at 0, eps and 1), for a shared and a per-image gamma."""
    eps = _GAMMA_EPS
    for dtype in (torch.float32, torch.float64):
        v = torch.tensor([-0.5, 0.0, 1e-9, eps, 2e-6, 0.3, 1.0, 2.0], dtype=dtype)
        v = torch.cat([v, torch.rand(100, dtype=dtype) * 1.4 - 0.2]).view(1, 1, 1, -1).expand(2, 3, 1, -1)
        for gamma in (torch.tensor(2.2, dtype=dtype), torch.tensor([2.2, 1.7], dtype=dtype)):
            x1, g1 = v.clone().requires_grad_(), gamma.clone().requires_grad_()
            x2, g2 = v.clone().requires_grad_(), gamma.clone().requires_grad_()
            weights = torch.rand(v.shape, dtype=dtype)
            (isp.gamma_encode(x1, g1) * weights).sum().backward()
            inv = 1.0 / (g2.reshape(-1, 1, 1, 1) if g2.dim() else g2)
            ref_out = torch.exp(torch.log(x2.clamp(eps, 1.0)) * inv) * (x2 * (1.0 / eps)).clamp(0.0, 1.0)
            (ref_out * weights).sum().backward()
            assert torch.equal(x1.grad, x2.grad)
            torch.testing.assert_close(g1.grad, g2.grad)


@pytest.mark.slow
def test_colour_matrix_and_plane_demosaic_gradcheck():
    g = torch.Generator().manual_seed(6)
    rgb = torch.rand(2, 3, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    m = torch.randn(3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(isp.colour_correct, (rgb, m))
    torch.testing.assert_close(isp.colour_correct(rgb, m), torch.einsum("ij,njhw->nihw", m, rgb))
    raw = torch.rand(2, 1, 6, 8, dtype=torch.float64, generator=g, requires_grad=True)
    for method in ("bi", "ma"):
        assert torch.autograd.gradcheck(lambda x: isp.demosaic(x, "BGGR", method), (raw,))
