"""Tests of the physical sensor model (drifthelpers.sensor)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from drifthelpers.camera import Camera
from drifthelpers.raw import CFA_PATTERNS, cfa_channel_indices
from drifthelpers.sensor import (
    DRONE_CAMERA,
    INTENSITY_FOLDERS,
    INTENSITY_LEVELS,
    MICROSCOPE_CAMERA,
    SensorParams,
    blur_psf,
    camera_metadata,
    expected_dn,
    flat_field,
    noise_model,
    psf_from_optics,
    simulate_intensity_series,
    simulate_raw,
)

CAMERAS = {"microscope": MICROSCOPE_CAMERA, "drone": DRONE_CAMERA}
SITES = ((0, 0), (0, 1), (1, 0), (1, 1))
Z_MAX = 4.5  # |z| bound; 112 z-tests at this bound fail by chance with probability < 1e-3


def _site_stats(raw: np.ndarray, dy: int, dx: int):
    """Mean, variance, and their standard errors of one CFA site over a flat field."""
    v = raw[dy::2, dx::2].astype(np.float64).ravel()
    n = v.size
    m = v.mean()
    s2 = v.var(ddof=1)
    m4 = np.mean((v - m) ** 4)
    se_var = np.sqrt(max(m4 - s2**2, 1e-12) / n)  # large-sample SE of the sample variance
    return m, s2, np.sqrt(s2 / n), se_var


def _flat_predictions(params: SensorParams, level: float, intensity: float):
    """Expected mean (stored DN) at each CFA site for a grey flat field."""
    camera = params.colour_response_matrix @ np.full(3, level)
    idx = cfa_channel_indices(params.cfa)
    return [float(expected_dn(camera[i], params, intensity)) for i in idx]


@pytest.fixture(scope="module")
def flat_series():
    """One 256x256 grey flat field through both cameras at all seven intensities."""
    out = {}
    for name, params in CAMERAS.items():
        rng = np.random.default_rng(2023)
        x = flat_field((256, 256), 0.5)
        out[name] = {lv: simulate_raw(x, params, lv, rng) for lv in INTENSITY_LEVELS}
    return out


# --------------------------------------------------------------------------- parameters


def test_presets_documented_values():
    assert DRONE_CAMERA.white_level_dn == 4095 * 16
    assert DRONE_CAMERA.black_level_stored_dn == 4096  # 1/16 of full scale
    assert DRONE_CAMERA.gain_dn_per_e == pytest.approx(0.528)
    assert MICROSCOPE_CAMERA.white_level_dn == 65535
    assert MICROSCOPE_CAMERA.psf_sigma_px == pytest.approx(0.75, abs=0.01)
    # full well of the sCMOS maps near the top of the 16-bit range
    top = MICROSCOPE_CAMERA.black_level_dn + MICROSCOPE_CAMERA.gain_dn_per_e * 30000
    assert 0.95 * 65535 < top <= 65535


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cfa", "RGBG"),
        ("electrons_at_full_scale", 0.0),
        ("read_noise_e", -1.0),
        ("gain_dn_per_e", 0.0),
        ("black_level_dn", 70000.0),
        ("bit_depth", 17),
        ("left_justify_bits", 8),
        ("psf_sigma_px", -0.5),
        ("colour_response", ((1, 0, 0), (1, 0, 0), (0, 0, 1))),
        ("full_well_e", -5.0),
        ("dark_current_e", float("nan")),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(DRONE_CAMERA, **{field: value})


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="radiance"):
        simulate_raw(np.zeros((4, 4)), DRONE_CAMERA, rng=0)
    with pytest.raises(ValueError, match="radiance"):
        simulate_raw(-np.ones((4, 4, 3)), DRONE_CAMERA, rng=0)
    with pytest.raises(ValueError, match="intensity"):
        simulate_raw(flat_field((4, 4), 0.5), DRONE_CAMERA, intensity=-0.1, rng=0)
    with pytest.raises(ValueError, match="na"):
        psf_from_optics(0.0, 550, 6.5, 40)
    with pytest.raises(ValueError, match="mode"):
        simulate_intensity_series(flat_field((4, 4), 0.5), DRONE_CAMERA, 0, mode="shared")


# --------------------------------------------------------------------------- photon transfer


@pytest.mark.parametrize("camera", list(CAMERAS))
@pytest.mark.parametrize("intensity", INTENSITY_LEVELS)
def test_flat_field_follows_poisson_gaussian_law(flat_series, camera, intensity):
    params = CAMERAS[camera]
    raw = flat_series[camera][intensity]
    for (dy, dx), mu in zip(SITES, _flat_predictions(params, 0.5, intensity)):
        m, s2, se_m, se_v = _site_stats(raw, dy, dx)
        var = float(noise_model(mu, params))
        assert abs(m - mu) / se_m < Z_MAX, (dy, dx, m, mu)
        assert abs(s2 - var) / se_v < Z_MAX, (dy, dx, s2, var)


@pytest.mark.parametrize("camera", list(CAMERAS))
@pytest.mark.parametrize("intensity", INTENSITY_LEVELS)
def test_wrong_gain_is_detected(flat_series, camera, intensity):
    """Negative control: the same check rejects a model with a 15 % wrong conversion gain."""
    params = CAMERAS[camera]
    wrong = dataclasses.replace(params, gain_dn_per_e=params.gain_dn_per_e * 1.15)
    raw = flat_series[camera][intensity]
    zs = []
    for (dy, dx), mu in zip(SITES, _flat_predictions(params, 0.5, intensity)):
        _, s2, _, se_v = _site_stats(raw, dy, dx)
        zs.append(abs(s2 - float(noise_model(mu, wrong))) / se_v)
    assert max(zs) > Z_MAX


def test_intensity_scales_photons_not_the_image():
    """At 1 % light the SNR is that of 1 % of the photons, not of a scaled bright image."""
    x = flat_field((128, 128), 0.5)
    p = dataclasses.replace(DRONE_CAMERA, read_noise_e=0.0)
    dim = simulate_raw(x, p, 0.01, np.random.default_rng(1)).astype(float)[0::2, 1::2]
    bright = simulate_raw(x, p, 1.0, np.random.default_rng(1)).astype(float)[0::2, 1::2]
    black = p.black_level_stored_dn
    snr_dim = (dim.mean() - black) / dim.std()
    snr_bright = (bright.mean() - black) / bright.std()
    assert snr_bright / snr_dim == pytest.approx(10.0, rel=0.15)  # sqrt(100)


def test_dark_frame_mean_is_black_level():
    for params in CAMERAS.values():
        raw = simulate_raw(flat_field((128, 128), 0.0), params, 1.0, np.random.default_rng(5))
        v = raw.astype(float).ravel()
        se = v.std(ddof=1) / np.sqrt(v.size)
        assert abs(v.mean() - params.black_level_stored_dn) < Z_MAX * se
        # predicted dark variance: read noise and quantisation only
        var = float(noise_model(params.black_level_stored_dn, params))
        assert v.var() == pytest.approx(var, rel=0.05)


def test_black_level_lands_where_set():
    p = dataclasses.replace(MICROSCOPE_CAMERA, black_level_dn=1234.0, read_noise_e=0.0)
    raw = simulate_raw(flat_field((8, 8), 0.0), p, rng=0)
    assert np.all(raw == 1234)
    assert camera_metadata(p)["black_level"].tolist() == [1234.0] * 4


def test_clipping_at_white_level():
    for params in CAMERAS.values():
        x = flat_field((64, 64), 0.5)
        x[:32] = 50.0  # heavily over-exposed half
        raw = simulate_raw(x, dataclasses.replace(params, full_well_e=None), rng=3)
        assert raw.max() <= params.white_level_dn
        assert np.all(raw[:32] == params.white_level_dn)
        assert np.all(raw[40:] < params.white_level_dn)


def test_full_well_saturates_before_adc():
    p = dataclasses.replace(DRONE_CAMERA, full_well_e=1000.0, read_noise_e=0.0)
    raw = simulate_raw(flat_field((8, 8), 1.0), p, rng=0, noise=False)
    expected = (p.black_level_dn + round(p.gain_dn_per_e * 1000.0)) * 16
    assert np.all(raw == expected)


def test_quantisation_integers_and_left_justification():
    st = simulate_raw(flat_field((32, 32), 0.3), DRONE_CAMERA, rng=1, return_stages=True)
    assert st["raw"].dtype == np.uint16
    assert np.all(st["raw"] % 16 == 0)
    assert np.all(st["dn_quantised"] == np.round(st["dn_quantised"]))
    assert np.all(np.abs(st["dn_quantised"] - st["dn_analog"]) <= 0.5)
    assert np.array_equal(st["raw"], st["dn_clipped"].astype(np.uint16) * 16)
    micro = simulate_raw(flat_field((32, 32), 0.3), MICROSCOPE_CAMERA, rng=1)
    assert np.any(micro % 16 != 0)  # no left justification on the 16-bit camera


def test_return_stages_chain_is_consistent():
    x = np.random.default_rng(0).random((16, 16, 3))
    st = simulate_raw(x, MICROSCOPE_CAMERA, 0.5, rng=2, return_stages=True)
    for key in ("blurred", "camera_rgb", "electrons_expected", "electrons",
                "electrons_with_read_noise", "dn_analog", "dn_quantised", "dn_clipped", "raw"):
        assert key in st
    assert st["blurred"].shape == (16, 16, 3)
    assert st["electrons_expected"].shape == (16, 16)
    assert np.all(st["electrons"] == np.round(st["electrons"]))  # photon counts
    assert np.array_equal(simulate_raw(x, MICROSCOPE_CAMERA, 0.5, rng=2), st["raw"])


# --------------------------------------------------------------------------- CFA sampling


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_cfa_sampling_puts_colours_where_pattern_says(cfa):
    p = SensorParams(cfa=cfa, electrons_at_full_scale=1000.0, read_noise_e=0.0,
                     gain_dn_per_e=1.0, black_level_dn=0.0, bit_depth=12)
    idx = np.array(cfa_channel_indices(cfa)).reshape(2, 2)
    for colour in range(3):
        rgb = np.zeros(3)
        rgb[colour] = 1.0
        raw = simulate_raw(flat_field((6, 8), tuple(rgb)), p, noise=False)
        lit = np.tile(idx == colour, (3, 4))
        assert np.all(raw[lit] == 1000)
        assert np.all(raw[~lit] == 0)


# --------------------------------------------------------------------------- optics


@pytest.mark.parametrize("sigma", [0.75, 1.5, 2.5])
def test_psf_preserves_energy_and_matches_sigma(sigma):
    x = np.zeros((65, 65))
    x[32, 32] = 1.0
    b = blur_psf(x, sigma)
    assert b.sum() == pytest.approx(1.0, abs=1e-9)
    yy, xx = np.mgrid[:65, :65] - 32
    assert (b * xx**2).sum() == pytest.approx(sigma**2, rel=0.02)
    assert (b * yy**2).sum() == pytest.approx(sigma**2, rel=0.02)
    assert (b * xx).sum() == pytest.approx(0.0, abs=1e-9)


def test_psf_from_optics_scales_with_wavelength_and_na():
    s = psf_from_optics(0.95, 550.0, 6.5, 40.0)
    assert psf_from_optics(0.95, 1100.0, 6.5, 40.0) == pytest.approx(2 * s)
    assert psf_from_optics(0.475, 550.0, 6.5, 40.0) == pytest.approx(2 * s)


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("camera", list(CAMERAS))
def test_metadata_renders_grey_as_grey(camera):
    params = CAMERAS[camera]
    md = camera_metadata(params)
    assert md["wb_gains"][1] == 1.0
    assert np.allclose(md["ccm"].sum(axis=1), 1.0)
    colour = np.array([0.2, 0.5, 0.3])
    for scene in (np.full(3, 0.4), colour):
        cam = params.colour_response_matrix @ scene
        rgb = md["ccm"] @ (md["wb_gains"] * cam)
        ref = scene * (params.colour_response_matrix @ np.ones(3))[1]
        assert np.allclose(rgb, ref)  # colours restored up to the green exposure scale


def test_drone_wb_matches_published_gains():
    assert np.allclose(camera_metadata(DRONE_CAMERA)["wb_gains"], [2.87, 1.0, 1.73], atol=0.02)


JUSTIFIED = SensorParams(cfa="GBRG", bit_depth=10, left_justify_bits=6, black_level_dn=50.0,
                         colour_response=((0.5, 0.1, 0.0), (0.1, 0.9, 0.1), (0.0, 0.2, 0.6)))


@pytest.mark.parametrize("params", [MICROSCOPE_CAMERA, DRONE_CAMERA, JUSTIFIED])
def test_camera_view_carries_the_metadata(params):
    md = camera_metadata(params)
    cam = params.camera(notes="simulated", gamma=2.4)
    assert isinstance(cam, Camera)
    assert cam.cfa == md["cfa"] == params.cfa
    assert cam.black_level == tuple(md["black_level"].tolist())
    assert cam.white_level == md["white_level"]
    assert cam.wb_gains == tuple(md["wb_gains"].tolist())
    assert cam.ccm == tuple(tuple(row) for row in md["ccm"].tolist())
    assert (cam.gamma, cam.notes) == (2.4, "simulated")
    assert params.camera().gamma == 2.2


def test_camera_view_levels_are_those_of_the_simulated_mosaics():
    cam = JUSTIFIED.camera()
    dark = simulate_raw(flat_field((4, 4), 0.0), JUSTIFIED, noise=False)
    bright = simulate_raw(flat_field((4, 4), 100.0), JUSTIFIED, noise=False)
    assert cam.black_level == (50.0 * 64,) * 4 and np.all(dark == cam.black_level[0])
    assert cam.white_level == 1023 * 64 and np.all(bright == cam.white_level)


# --------------------------------------------------------------------------- determinism / series


def test_determinism_for_a_seed():
    x = np.random.default_rng(0).random((32, 32, 3))
    a = simulate_raw(x, DRONE_CAMERA, 0.25, np.random.default_rng(7))
    b = simulate_raw(x, DRONE_CAMERA, 0.25, np.random.default_rng(7))
    c = simulate_raw(x, DRONE_CAMERA, 0.25, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("mode", ["independent", "thinned"])
def test_intensity_series(mode):
    x = flat_field((64, 64), 0.5)
    s = simulate_intensity_series(x, MICROSCOPE_CAMERA, np.random.default_rng(0), mode=mode)
    assert tuple(s) == INTENSITY_FOLDERS
    means = [s[f].astype(float).mean() for f in INTENSITY_FOLDERS]
    assert all(a > b for a, b in zip(means, means[1:]))
    for f, lv in zip(INTENSITY_FOLDERS, INTENSITY_LEVELS):
        mu = np.mean(_flat_predictions(MICROSCOPE_CAMERA, 0.5, lv))
        var = np.mean([noise_model(m, MICROSCOPE_CAMERA)
                       for m in _flat_predictions(MICROSCOPE_CAMERA, 0.5, lv)])
        assert abs(s[f].astype(float).mean() - mu) < Z_MAX * np.sqrt(var / x[..., 0].size)
    again = simulate_intensity_series(x, MICROSCOPE_CAMERA, np.random.default_rng(0), mode=mode)
    assert all(np.array_equal(s[f], again[f]) for f in INTENSITY_FOLDERS)


def test_thinned_series_is_nested():
    """Common random numbers: dimmer exposures hold a subset of the brighter one's photons."""
    p = dataclasses.replace(MICROSCOPE_CAMERA, read_noise_e=0.0, black_level_dn=0.0)
    x = flat_field((64, 64), 0.05)
    s = simulate_intensity_series(x, p, np.random.default_rng(0), mode="thinned")
    for a, b in zip(INTENSITY_FOLDERS, INTENSITY_FOLDERS[1:]):
        assert np.all(s[b] <= s[a])
    ind = simulate_intensity_series(x, p, np.random.default_rng(0), mode="independent")
    g = np.s_[0::2, 1::2]  # one CFA site, so that only noise varies
    corr_t = np.corrcoef(s["raw_scale100"][g].ravel(), s["raw_scale050"][g].ravel())[0, 1]
    corr_i = np.corrcoef(ind["raw_scale100"][g].ravel(), ind["raw_scale050"][g].ravel())[0, 1]
    assert corr_t > corr_i + 0.3
