"""Physical sensor model: from scene radiance to a raw Bayer mosaic.

The chain follows the photon-transfer (EMVA 1288) view of a camera pixel::

    radiance (H, W, 3), linear, nominally [0, 1]
      -> optics blur (Gaussian PSF, sigma in pixels)
      -> camera colour response (3x3: scene RGB -> camera R, G, B)
      -> CFA sampling (one camera channel per pixel)
      -> exposure: expected photo-electrons = intensity * electrons_at_full_scale * response
      -> shot noise (Poisson) + dark signal (Poisson), optional full-well saturation
      -> read noise (Gaussian, electrons rms)
      -> conversion gain (DN per electron) + black pedestal (DN)
      -> ADC quantisation (round to integer codes) and clipping to [0, 2**bit_depth - 1]
      -> left justification (codes multiplied by 2**left_justify_bits), stored as uint16

Reduced-light variants (``INTENSITY_LEVELS``) scale the *expected photo-electrons* before the
Poisson draw, so that a 1 % image has 1 % of the photons and the signal-to-noise ratio of a real
dim exposure; a finished image is never multiplied.

All DN parameters of :class:`SensorParams` are in **ADC units** (the native ``bit_depth`` codes);
values in *stored* DN (what a raw file holds) are ADC values times ``2**left_justify_bits``.
:func:`camera_metadata`, :meth:`SensorParams.camera` and :func:`noise_model` report stored DN.

Everything here is numpy float64 (data generation, not differentiated) and seeded through an
explicit :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage

from drifthelpers.camera import Camera
from drifthelpers.raw import CFA_PATTERNS, cfa_channel_indices

__all__ = [
    "INTENSITY_LEVELS",
    "INTENSITY_FOLDERS",
    "SensorParams",
    "MICROSCOPE_CAMERA",
    "DRONE_CAMERA",
    "psf_from_optics",
    "blur_psf",
    "colour_to_cfa",
    "camera_metadata",
    "expected_dn",
    "noise_model",
    "simulate_raw",
    "simulate_intensity_series",
    "flat_field",
]

#: Relative light levels of the published data sets (fraction of the full exposure).
INTENSITY_LEVELS: tuple[float, ...] = (1.00, 0.75, 0.50, 0.25, 0.10, 0.05, 0.01)
#: Folder names of the Zenodo release, in the same order as ``INTENSITY_LEVELS``.
INTENSITY_FOLDERS: tuple[str, ...] = (
    "raw_scale100",
    "raw_scale075",
    "raw_scale050",
    "raw_scale025",
    "raw_scale010",
    "raw_scale005",
    "raw_scale001",
)



@dataclass(frozen=True)
class SensorParams:
    """Parameters of the physical sensor model (frozen, validated on construction).

    Attributes:
        cfa: Bayer pattern read row-major over the top-left 2x2 cell: "RGGB", "BGGR", "GRBG"
            or "GBRG".
        electrons_at_full_scale: expected photo-electrons (e-) collected by a pixel whose
            camera channel response is 1.0 at scene radiance 1.0 and intensity 1.0. Sets the
            exposure; the shot-noise SNR at full scale is sqrt of it. Must be > 0.
        read_noise_e: read noise, Gaussian, electrons rms (e-). >= 0.
        gain_dn_per_e: conversion gain in ADC DN per electron (before left justification). > 0.
        black_level_dn: black pedestal (offset) in ADC DN. 0 <= value < 2**bit_depth - 1.
        bit_depth: ADC resolution in bits, 1..16.
        left_justify_bits: stored value = ADC code * 2**left_justify_bits (a 12-bit ADC
            left-justified in 16 bits uses 4). bit_depth + left_justify_bits <= 16.
        psf_sigma_px: standard deviation of the Gaussian optics PSF in pixels (0 = no blur).
        colour_response: 3x3 matrix, rows = camera R, G, B channel, columns = scene linear
            R, G, B radiance: ``camera = colour_response @ scene``. Non-negative, invertible.
        full_well_e: saturation capacity in electrons (None = the ADC clips first).
        dark_current_e: mean dark signal per exposure in electrons (Poisson, independent of
            intensity). >= 0.

    Example:
        >>> p = SensorParams(bit_depth=12, left_justify_bits=4)
        >>> p.white_level_dn
        65520
    """

    cfa: str = "RGGB"
    electrons_at_full_scale: float = 10000.0
    read_noise_e: float = 2.0
    gain_dn_per_e: float = 1.0
    black_level_dn: float = 64.0
    bit_depth: int = 16
    left_justify_bits: int = 0
    psf_sigma_px: float = 0.0
    colour_response: tuple[tuple[float, float, float], ...] = field(
        default=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    )
    full_well_e: float | None = None
    dark_current_e: float = 0.0

    def __post_init__(self) -> None:
        if self.cfa not in CFA_PATTERNS:
            raise ValueError(f"cfa must be one of {CFA_PATTERNS}; got {self.cfa!r}")

        def _num(name: str, lo: float | None = None, strict: bool = False) -> None:
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number; got {v!r}")
            if lo is not None and (v <= lo if strict else v < lo):
                op = ">" if strict else ">="
                raise ValueError(f"{name} must be {op} {lo}; got {v!r}")

        _num("electrons_at_full_scale", 0.0, strict=True)
        _num("read_noise_e", 0.0)
        _num("gain_dn_per_e", 0.0, strict=True)
        _num("psf_sigma_px", 0.0)
        _num("dark_current_e", 0.0)
        if not isinstance(self.bit_depth, (int, np.integer)) or not 1 <= self.bit_depth <= 16:
            raise ValueError(f"bit_depth must be an integer in 1..16; got {self.bit_depth!r}")
        if (
            not isinstance(self.left_justify_bits, (int, np.integer))
            or self.left_justify_bits < 0
            or self.bit_depth + self.left_justify_bits > 16
        ):
            raise ValueError(
                "left_justify_bits must be an integer >= 0 with bit_depth + left_justify_bits"
                f" <= 16; got {self.left_justify_bits!r} (bit_depth={self.bit_depth})"
            )
        _num("black_level_dn", 0.0)
        if self.black_level_dn >= 2**self.bit_depth - 1:
            raise ValueError(
                f"black_level_dn must be below the ADC maximum {2**self.bit_depth - 1}; "
                f"got {self.black_level_dn!r}"
            )
        if self.full_well_e is not None:
            _num("full_well_e", 0.0, strict=True)
        m = np.asarray(self.colour_response, dtype=np.float64)
        if m.shape != (3, 3) or not np.all(np.isfinite(m)):
            raise ValueError(f"colour_response must be a finite 3x3 matrix; got shape {m.shape}")
        if np.any(m < 0):
            raise ValueError("colour_response must be non-negative (a camera cannot absorb light)")
        if abs(np.linalg.det(m)) < 1e-9:
            raise ValueError("colour_response must be invertible (det is ~0)")
        # store as nested tuples so the dataclass stays hashable and immutable
        object.__setattr__(self, "colour_response", tuple(tuple(float(x) for x in r) for r in m))

    @property
    def justify_factor(self) -> int:
        """Multiplier from ADC codes to stored DN, ``2**left_justify_bits``."""
        return 2**self.left_justify_bits

    @property
    def adc_max(self) -> int:
        """Largest ADC code, ``2**bit_depth - 1`` (ADC units)."""
        return 2**self.bit_depth - 1

    @property
    def white_level_dn(self) -> int:
        """Clip level in stored DN: ``(2**bit_depth - 1) * 2**left_justify_bits``."""
        return self.adc_max * self.justify_factor

    @property
    def black_level_stored_dn(self) -> float:
        """Black pedestal in stored DN."""
        return float(self.black_level_dn) * self.justify_factor

    @property
    def colour_response_matrix(self) -> np.ndarray:
        """``colour_response`` as a (3, 3) float64 array."""
        return np.asarray(self.colour_response, dtype=np.float64)

    def camera(self, notes: str = "", gamma: float = 2.2) -> Camera:
        """The camera values a data model needs to render this sensor's mosaics.

        The values of :func:`camera_metadata` as a :class:`drifthelpers.camera.Camera`: the
        pattern, the black pedestal in stored DN at every site, the white (clip) level in stored
        DN, white-balance gains that make a grey scene grey (G = 1) and the colour matrix that
        undoes the cross-talk of ``colour_response``.

        Args:
            notes: provenance recorded with the values.
            gamma: display gamma of the rendering, > 0.

        Example:
            >>> cam = DRONE_CAMERA.camera()
            >>> cam.cfa, cam.black_level, cam.white_level
            ('RGGB', (4096.0, 4096.0, 4096.0, 4096.0), 65520.0)
            >>> [round(g, 2) for g in cam.wb_gains]
            [2.87, 1.0, 1.73]
        """
        md = camera_metadata(self)
        return Camera(md["cfa"], md["black_level"], md["white_level"], md["wb_gains"], md["ccm"],
                      gamma, notes)


def psf_from_optics(
    na: float, wavelength_nm: float, pixel_pitch_um: float, magnification: float
) -> float:
    """Gaussian sigma (pixels) approximating a diffraction-limited widefield PSF.

    The Airy pattern of an aberration-free objective is well fitted by a Gaussian with
    sigma ~= 0.21 * lambda / NA in object space (Zhang, Zerubia & Olivo-Marin 2007). Multiplied
    by the magnification it lands on the sensor, and divided by the pixel pitch it is in pixels.

    Args:
        na: numerical aperture of the objective, (0, 1.6].
        wavelength_nm: wavelength in nanometres, > 0.
        pixel_pitch_um: sensor pixel pitch in micrometres, > 0.
        magnification: total magnification from object to sensor, > 0.

    Returns:
        sigma of the Gaussian PSF in sensor pixels.

    Example:
        >>> round(psf_from_optics(0.95, 550.0, 6.5, 40.0), 3)
        0.748
    """
    for name, v in (
        ("na", na),
        ("wavelength_nm", wavelength_nm),
        ("pixel_pitch_um", pixel_pitch_um),
        ("magnification", magnification),
    ):
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0; got {v!r}")
    if na > 1.6:
        raise ValueError(f"na must be <= 1.6 (oil immersion limit); got {na!r}")
    sigma_object_um = 0.21 * (wavelength_nm * 1e-3) / na
    return float(sigma_object_um * magnification / pixel_pitch_um)


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

# Microscope: PCO edge 5.5 sCMOS (public datasheet: 6.5 um pixels, full well ~30000 e-,
# read noise ~1-2 e- rms, 16-bit readout, conversion factor ~0.46 e-/count, i.e. ~2.17 DN/e-,
# so that the full well fills the 16-bit range above the ~100 count offset). Raw-Microscopy
# used a 40x / 0.95 NA objective; at 550 nm the diffraction PSF sigma on the sensor is
# 0.21 * 0.55 um / 0.95 * 40 / 6.5 um ~ 0.75 px. The paper's Bayer mosaic was synthesised from
# 450/525/620 nm band exposures, so the colour response is nearly diagonal with a little
# cross-talk; the lamp is yellowish, so blue collects fewer electrons (WB gains > 1 for B).
# electrons_at_full_scale = 26000 e- puts a radiance-1.0 green pixel at ~56500 DN, below the
# 65535 white level with headroom, and a 0.9 bright-field background at ~87 % of full scale.
MICROSCOPE_CAMERA = SensorParams(
    cfa="RGGB",
    electrons_at_full_scale=26000.0,
    read_noise_e=1.5,
    gain_dn_per_e=2.17,
    black_level_dn=100.0,
    bit_depth=16,
    left_justify_bits=0,
    psf_sigma_px=psf_from_optics(0.95, 550.0, 6.5, 40.0),
    colour_response=(
        (0.80, 0.06, 0.00),
        (0.05, 0.90, 0.05),
        (0.00, 0.08, 0.62),
    ),
    full_well_e=30000.0,
    dark_current_e=0.0,
)

# Drone: Hasselblad L1D-20c on the DJI Mavic 2 Pro, a Sony IMX183 1" sensor (2.4 um pixels)
# with a 12-bit ADC whose codes are left-justified in 16-bit DNG values (stored = code * 16).
# At ISO 200 the conversion gain is 0.528 DN/e- in 12-bit units, so the 4095 - 256 = 3839 DN
# above black hold ~7270 e- (less than the ~15000 e- pixel full well: the ADC clips first).
# Black level is 1/16 of full scale: 256 DN (12 bit) = 4096 stored. IMX183 read noise at this
# gain is ~2-3 e- rms; we use 2.5. The data set's optics give PSF sigma ~2.5 px (f/8 at
# 2.4 um pixels plus lens blur). The colour response is green-dominant like the real sensor:
# its row sums (0.348, 1, 0.578) reproduce the published daylight WB gains ~ [2.87, 1, 1.73].
# electrons_at_full_scale = 7000 e- maps radiance 1.0 in green to ~3952 DN (just under clip).
DRONE_CAMERA = SensorParams(
    cfa="RGGB",
    electrons_at_full_scale=7000.0,
    read_noise_e=2.5,
    gain_dn_per_e=0.528,
    black_level_dn=256.0,
    bit_depth=12,
    left_justify_bits=4,
    psf_sigma_px=2.5,
    colour_response=(
        (0.280, 0.060, 0.008),
        (0.120, 0.780, 0.100),
        (0.010, 0.128, 0.440),
    ),
    full_well_e=15000.0,
    dark_current_e=0.0,
)


# ---------------------------------------------------------------------------------------------
# Metadata and noise prediction
# ---------------------------------------------------------------------------------------------


def camera_metadata(params: SensorParams) -> dict:
    """What the data model (ISP) needs to render a simulated raw mosaic correctly.

    Args:
        params: the sensor.

    Returns:
        dict with
            ``cfa`` (str),
            ``black_level`` (4,) float64, per CFA position TL, TR, BL, BR, stored DN,
            ``white_level`` (int, stored DN),
            ``wb_gains`` (3,) float64, normalised so G = 1; they make a grey scene grey,
            ``ccm`` (3, 3) float64, white-balanced camera RGB -> linear sRGB, rows sum to 1,
            ``bit_depth``, ``left_justify_bits`` (int).
        For a grey scene s*(1,1,1) the chain (raw - black) / (white - black) -> wb -> ccm gives
        a neutral pixel; the ccm undoes the colour cross-talk of ``colour_response``.

    Example:
        >>> md = camera_metadata(DRONE_CAMERA)
        >>> md["black_level"].tolist(), md["white_level"]
        ([4096.0, 4096.0, 4096.0, 4096.0], 65520)
        >>> np.round(md["wb_gains"], 2).tolist()
        [2.87, 1.0, 1.73]
    """
    m = params.colour_response_matrix
    white = m @ np.ones(3)  # camera response to scene white
    wb = white[1] / white
    ccm = np.linalg.inv(np.diag(wb) @ m)
    ccm = ccm / ccm.sum(axis=1, keepdims=True)
    return {
        "cfa": params.cfa,
        "black_level": np.full(4, params.black_level_stored_dn, dtype=np.float64),
        "white_level": int(params.white_level_dn),
        "wb_gains": wb.astype(np.float64),
        "ccm": ccm.astype(np.float64),
        "bit_depth": int(params.bit_depth),
        "left_justify_bits": int(params.left_justify_bits),
    }


def expected_dn(
    radiance_channel: float | np.ndarray, params: SensorParams, intensity: float = 1.0
) -> np.ndarray:
    """Expected stored DN of a pixel whose camera-channel response is ``radiance_channel``.

    Ignores clipping and quantisation bias (exact for rounding when the noise exceeds ~0.5 DN).

    Args:
        radiance_channel: camera-channel response (after ``colour_response``), any shape.
        params: the sensor.
        intensity: relative light level (fraction of the full exposure), >= 0.

    Returns:
        mean stored DN, float64, same shape.

    Example:
        >>> float(expected_dn(0.0, DRONE_CAMERA))
        4096.0
    """
    e = intensity * params.electrons_at_full_scale * np.asarray(radiance_channel, np.float64)
    e = e + params.dark_current_e
    adc = params.black_level_dn + params.gain_dn_per_e * e
    return adc * params.justify_factor


def noise_model(mean_dn: float | np.ndarray, params: SensorParams) -> np.ndarray:
    """Poisson-Gaussian variance predicted for a mean signal, in stored DN squared.

    In ADC units with conversion gain g (DN/e-), black b and read noise sigma (e-)::

        Var_adc = g * (mu_adc - b) + (g * sigma)**2 + 1/12

    (shot + dark noise, read noise, uniform quantisation). Stored values are ADC codes times
    ``k = 2**left_justify_bits``, so ``Var_stored = k**2 * Var_adc`` with ``mu_adc = mean/k``.
    Valid away from the clip levels.

    Args:
        mean_dn: mean signal in stored DN (including the black pedestal), any shape.
        params: the sensor.

    Returns:
        predicted variance in stored DN^2, float64, same shape.

    Example:
        >>> p = SensorParams(gain_dn_per_e=2.0, read_noise_e=1.0, black_level_dn=100)
        >>> float(noise_model(300.0, p))  # 2*200 + 4 + 1/12
        404.0833333333333
    """
    k = params.justify_factor
    mu_adc = np.asarray(mean_dn, dtype=np.float64) / k
    g = params.gain_dn_per_e
    var_adc = g * (mu_adc - params.black_level_dn) + (g * params.read_noise_e) ** 2 + 1.0 / 12.0
    return var_adc * k**2


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def _check_radiance(radiance: np.ndarray) -> np.ndarray:
    x = np.asarray(radiance)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"radiance must have shape (H, W, 3); got {x.shape}")
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError("radiance must be finite")
    if np.any(x < 0):
        raise ValueError("radiance must be non-negative (linear radiance)")
    return x


def blur_psf(radiance: np.ndarray, sigma_px: float) -> np.ndarray:
    """Blur each channel with a normalised Gaussian PSF (energy preserving).

    Args:
        radiance: (H, W) or (H, W, C) linear image.
        sigma_px: PSF standard deviation in pixels, >= 0 (0 returns a float64 copy).

    Returns:
        blurred image, float64, same shape. Reflective borders keep the mean of flat images.

    Example:
        >>> x = np.zeros((9, 9)); x[4, 4] = 1.0
        >>> round(float(blur_psf(x, 1.0).sum()), 6)
        1.0
    """
    if not math.isfinite(sigma_px) or sigma_px < 0:
        raise ValueError(f"sigma_px must be a finite number >= 0; got {sigma_px!r}")
    x = np.asarray(radiance, dtype=np.float64)
    if sigma_px == 0:
        return x.copy()
    sig = (sigma_px, sigma_px) + (0.0,) * (x.ndim - 2)
    return ndimage.gaussian_filter(x, sigma=sig, mode="reflect", truncate=4.0)


def colour_to_cfa(camera_rgb: np.ndarray, cfa: str) -> np.ndarray:
    """Sample a 3-channel image onto a Bayer mosaic.

    Args:
        camera_rgb: (H, W, 3) camera channel responses.
        cfa: pattern string, e.g. "RGGB" (top-left 2x2 cell, row-major).

    Returns:
        (H, W) mosaic where each pixel keeps the channel the pattern assigns to it.

    Example:
        >>> colour_to_cfa(np.stack([np.full((2, 2), v) for v in (1., 2., 3.)], -1), "RGGB")
        array([[1., 2.],
               [2., 3.]])
    """
    x = np.asarray(camera_rgb)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"camera_rgb must have shape (H, W, 3); got {x.shape}")
    tl, tr, bl, br = cfa_channel_indices(cfa)
    out = np.empty(x.shape[:2], dtype=x.dtype)
    out[0::2, 0::2] = x[0::2, 0::2, tl]
    out[0::2, 1::2] = x[0::2, 1::2, tr]
    out[1::2, 0::2] = x[1::2, 0::2, bl]
    out[1::2, 1::2] = x[1::2, 1::2, br]
    return out


def flat_field(shape: tuple[int, int], level: float | tuple[float, float, float]) -> np.ndarray:
    """A uniform scene (photon-transfer target).

    Args:
        shape: (H, W) in pixels.
        level: radiance, one value (grey) or three (R, G, B), >= 0.

    Returns:
        (H, W, 3) float64 array filled with ``level``.

    Example:
        >>> flat_field((2, 4), 0.5).shape
        (2, 4, 3)
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) with H, W >= 1; got {shape!r}")
    lv = np.broadcast_to(np.asarray(level, dtype=np.float64), (3,))
    if not np.all(np.isfinite(lv)) or np.any(lv < 0):
        raise ValueError(f"level must be finite and >= 0; got {level!r}")
    return np.broadcast_to(lv, (*shape, 3)).copy()


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_intensity(intensity: float) -> float:
    if not isinstance(intensity, (int, float, np.integer, np.floating)) or not (
        math.isfinite(intensity) and intensity >= 0
    ):
        raise ValueError(f"intensity must be a finite number >= 0; got {intensity!r}")
    return float(intensity)


def _camera_mosaic(radiance: np.ndarray, params: SensorParams) -> tuple[np.ndarray, ...]:
    """Optics blur, colour response and CFA sampling (deterministic front end)."""
    blurred = blur_psf(radiance, params.psf_sigma_px)
    camera_rgb = blurred @ params.colour_response_matrix.T
    return blurred, camera_rgb, colour_to_cfa(camera_rgb, params.cfa)


def _back_end(electrons: np.ndarray, read_e: np.ndarray, params: SensorParams) -> dict:
    """Full well, read noise, gain + pedestal, quantisation, clipping, left justification."""
    if params.full_well_e is not None:
        electrons = np.minimum(electrons, params.full_well_e)
    with_read = electrons + read_e
    dn_analog = params.black_level_dn + params.gain_dn_per_e * with_read
    quantised = np.rint(dn_analog)
    clipped = np.clip(quantised, 0, params.adc_max)
    raw = (clipped.astype(np.uint32) * params.justify_factor).astype(np.uint16)
    return {
        "electrons_saturated": electrons,
        "electrons_with_read_noise": with_read,
        "dn_analog": dn_analog,
        "dn_quantised": quantised,
        "dn_clipped": clipped,
        "raw": raw,
    }


def simulate_raw(
    radiance: np.ndarray,
    params: SensorParams,
    intensity: float = 1.0,
    rng: np.random.Generator | int | None = None,
    return_stages: bool = False,
    noise: bool = True,
) -> np.ndarray | dict:
    """Simulate one raw exposure of a scene.

    Args:
        radiance: (H, W, 3) linear scene radiance, nominally in [0, 1] (values above 1 are
            allowed and model over-exposure); non-negative, finite.
        params: the sensor (see :class:`SensorParams`, presets ``MICROSCOPE_CAMERA`` and
            ``DRONE_CAMERA``).
        intensity: relative light level, e.g. one of ``INTENSITY_LEVELS``; scales the expected
            photo-electrons before the Poisson draw.
        rng: a :class:`numpy.random.Generator` (preferred), an int seed, or None for fresh OS
            entropy (not reproducible).
        return_stages: if True, return a dict with every intermediate (for teaching figures).
        noise: if False, skip the Poisson, dark and read-noise draws (electrons = their
            expectation); quantisation and clipping still apply. Useful for tests and figures.

    Returns:
        (H, W) uint16 mosaic in stored DN; or, with ``return_stages``, a dict with keys
        ``radiance``, ``blurred`` (H, W, 3), ``camera_rgb`` (H, W, 3), ``camera_mosaic``,
        ``electrons_expected``, ``electrons`` (after Poisson), ``electrons_saturated``,
        ``electrons_with_read_noise``, ``dn_analog``, ``dn_quantised``, ``dn_clipped`` (ADC
        units, float64) and ``raw`` (uint16, stored DN).

    Example:
        >>> raw = simulate_raw(flat_field((4, 4), 0.5), DRONE_CAMERA, rng=np.random.default_rng(0))
        >>> raw.shape, raw.dtype, bool(np.all(raw % 16 == 0))
        ((4, 4), dtype('uint16'), True)
    """
    x = _check_radiance(radiance)
    intensity = _check_intensity(intensity)
    if not isinstance(params, SensorParams):
        raise ValueError(f"params must be a SensorParams; got {type(params).__name__}")
    blurred, camera_rgb, mosaic = _camera_mosaic(x, params)
    e_expected = intensity * params.electrons_at_full_scale * mosaic
    if noise:
        gen = _as_rng(rng)
        electrons = gen.poisson(e_expected).astype(np.float64)
        if params.dark_current_e > 0:
            electrons = electrons + gen.poisson(params.dark_current_e, size=mosaic.shape)
        read_e = gen.normal(0.0, params.read_noise_e, size=mosaic.shape) if (
            params.read_noise_e > 0
        ) else np.zeros_like(mosaic)
    else:
        electrons = e_expected + params.dark_current_e
        read_e = np.zeros_like(mosaic)
    out = _back_end(electrons, read_e, params)
    if not return_stages:
        return out["raw"]
    return {
        "radiance": x,
        "blurred": blurred,
        "camera_rgb": camera_rgb,
        "camera_mosaic": mosaic,
        "electrons_expected": e_expected,
        "electrons": electrons,
        **out,
    }


def simulate_intensity_series(
    radiance: np.ndarray,
    params: SensorParams,
    rng: np.random.Generator | int | None = None,
    mode: Literal["independent", "thinned"] = "independent",
    levels: tuple[float, ...] = INTENSITY_LEVELS,
) -> dict[str, np.ndarray]:
    """Simulate the seven reduced-light exposures of one scene.

    Two noise couplings are offered:

    * ``"independent"`` (default): each level is a separate exposure with its own shot- and
      read-noise draws, like re-acquiring the scene with less light.
    * ``"thinned"``: common random numbers. Photo-electrons of the brightest level are drawn
      once and binomially thinned to each dimmer level (a Poisson count thinned with
      probability p is exactly Poisson with mean p * lambda, so each level is still correctly
      distributed), and one read-noise field is shared. Thinning runs from bright to dim, so
      each dimmer image holds a subset of the photons of the brighter ones, which makes
      differences between levels less noisy (paired designs).

    Args:
        radiance: (H, W, 3) linear scene radiance.
        params: the sensor.
        rng: Generator, int seed or None (see :func:`simulate_raw`).
        mode: "independent" or "thinned".
        levels: relative light levels, default ``INTENSITY_LEVELS``. Folder names are used as
            keys when ``levels`` is the default; otherwise keys are ``f"raw_scale{round(100*l):03d}"``.

    Returns:
        dict folder name -> (H, W) uint16 mosaic, ordered like ``levels`` (brightest first for
        the default), e.g. ``series["raw_scale010"]`` is the 10 % exposure.

    Example:
        >>> s = simulate_intensity_series(flat_field((4, 4), 0.5), DRONE_CAMERA, rng=1)
        >>> list(s)[:2], bool(s["raw_scale001"].mean() < s["raw_scale100"].mean())
        (['raw_scale100', 'raw_scale075'], True)
    """
    levels = tuple(_check_intensity(v) for v in levels)
    if not levels:
        raise ValueError("levels must not be empty")
    names = [f"raw_scale{round(100 * v):03d}" for v in levels]
    if len(set(names)) != len(names):
        raise ValueError(f"levels must map to distinct folder names; got {levels!r}")
    gen = _as_rng(rng)
    if mode == "independent":
        return {n: simulate_raw(radiance, params, v, rng=gen) for n, v in zip(names, levels)}
    if mode != "thinned":
        raise ValueError(f"mode must be 'independent' or 'thinned'; got {mode!r}")
    x = _check_radiance(radiance)
    _, _, mosaic = _camera_mosaic(x, params)
    top = max(levels)
    base = gen.poisson(top * params.electrons_at_full_scale * mosaic)
    dark = (
        gen.poisson(params.dark_current_e, size=mosaic.shape)
        if params.dark_current_e > 0
        else np.zeros(mosaic.shape, dtype=np.int64)
    )
    read_e = gen.normal(0.0, params.read_noise_e, size=mosaic.shape)
    # thin sequentially from bright to dim so that the photon sets are nested
    photo, current = base, top
    results = {}
    for i in sorted(range(len(levels)), key=lambda j: -levels[j]):
        v = levels[i]
        if v < current:
            photo = gen.binomial(photo, v / current) if current > 0 else photo
            current = v
        results[names[i]] = _back_end(photo.astype(np.float64) + dark, read_e, params)["raw"]
    return {n: results[n] for n in names}
