"""Our bilinear data model against LibRaw's own rendering (rawpy.postprocess) of real raw files.

Skipped when ../shared/testdata/raw (next to the repository) is absent.

What ``postprocess`` does with the settings below (demosaic LINEAR, no auto-brightness,
``gamma=(2.2, 0)`` i.e. the pure power x^(1/2.2), ``adjust_maximum_thr=0`` so the white level
is the file's and not the image maximum, 16-bit output, no flip), and how each step is matched:

* black subtraction and scaling by ``65535 / (white - black)`` in 16-bit integers, with the
  white-balance multipliers normalised so that the smallest is 1 (for these files that is
  green, so they equal our G = 1 gains) -- same arithmetic as ours up to integer rounding;
* highlight mode 0 clips each *white-balanced* site at full scale *before* demosaicing; our
  chain clips after the colour matrix, so the test first clips the normalised mosaic at
  ``1 / gain`` of each site's colour (without that, the few saturated highlights of the Canon
  frame cost ~10 dB of PSNR);
* bilinear interpolation of the 3x3 neighbourhood (dcraw's ``lin_interpolate``), the same
  weights as ours; the outermost pixel ring uses a different border rule, so 2 px are cropped;
* ``rgb_cam`` (from the camera's XYZ matrix, rows normalised, inverted) then a clip: our ``ccm``
  is built the same way by :mod:`drifthelpers.raw`;
* non-square pixels (Kodak DC120, aspect 1.53): ``postprocess`` widens the image; with this
  LibRaw each output column copies source column ``int(rc)``, ``rc`` accumulating
  ``1 / aspect`` in double precision (a least-squares fit of an interpolation weight between
  neighbouring columns gives 0.000), which the test reproduces on our linear image.

Tolerance: LibRaw rounds or truncates to 16-bit integers at each of those steps, and the power
law magnifies such errors near black (slope ~20 at 1e-3); measured PSNR is ~92 dB in camera
RGB and ~87 dB after the colour matrix, with max abs errors of 1e-4 and 6e-3 (a handful of
pixels next to clipped highlights). We require PSNR >= 80 dB and the 99.9th percentile of the
abs error <= 5e-4 (8 steps of 8-bit output would be 3e-2): any mistake in CFA phase, black
level, white balance or matrix costs tens of dB (checked below with a wrong pattern).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from drifthelpers import isp
from drifthelpers.isp.tensors import _site_map

DATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "raw"
CANON = DATA / "canon_powershot_g2_CRW_0304.CRW"
KODAK = DATA / "kodak_dc120_P003911.KDC"

pytestmark = [pytest.mark.realdata]

rawpy = pytest.importorskip("rawpy")


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real raw test data not found at {path}")


@functools.lru_cache(maxsize=4)
def _libraw(path: Path, colour: str, camera_wb: bool) -> np.ndarray:
    wb = {"use_camera_wb": True} if camera_wb else {"user_wb": [1.0, 1.0, 1.0, 1.0]}
    with rawpy.imread(str(path)) as rp:
        out = rp.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR, no_auto_bright=True,
                             gamma=(2.2, 0.0), output_bps=16, user_flip=0, adjust_maximum_thr=0.0,
                             highlight_mode=rawpy.HighlightMode.Clip, output_color=getattr(rawpy.ColorSpace, colour),
                             **wb)
    out = out.astype(np.float64) / 65535.0
    out.flags.writeable = False
    return out


def _linear(raw_image, cam: isp.CameraParams, cfa: str | None = None, matrix: bool = True) -> torch.Tensor:
    """Our chain without sharpening/denoising, in float64, up to the colour matrix (linear)."""
    cfa = cfa or cam.cfa
    raw = raw_image.to_tensor(torch.float64)[None]
    x = isp.subtract_black_level(raw, cam.black_level, cam.white_level)
    gains = torch.tensor(cam.wb_gains, dtype=torch.float64)
    from drifthelpers.raw import cfa_channel_indices

    per_site = 1.0 / gains[list(cfa_channel_indices(cfa))]
    x = torch.minimum(x, _site_map(per_site, *x.shape[-2:]))  # LibRaw's pre-demosaic highlight clip
    rgb = isp.white_balance(isp.demosaic_bilinear(x, cfa), gains)
    if matrix:
        rgb = isp.colour_correct(rgb, cam.ccm)
    return rgb.clamp(0.0, 1.0)[0].permute(1, 2, 0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


@pytest.fixture(scope="module")
def canon():
    _need(CANON)
    from drifthelpers.raw import read_raw

    ri = read_raw(CANON)
    return ri, isp.CameraParams.from_raw_image(ri)


@pytest.mark.parametrize("colour", ["raw", "sRGB"])
def test_canon_bilinear_chain_matches_libraw(canon, colour):
    ri, cam = canon
    assert cam.cfa == "RGGB" and cam.black_level == (32.0,) * 4 and cam.white_level == 1023.0
    ours = isp.gamma_encode(_linear(ri, cam, matrix=colour == "sRGB").permute(2, 0, 1)[None], 2.2)
    ours = ours[0].permute(1, 2, 0).numpy()
    theirs = _libraw(CANON, colour, True)
    assert ours.shape == theirs.shape == (1720, 2312, 3)
    b = 2
    ours, theirs = ours[b:-b, b:-b], theirs[b:-b, b:-b]
    assert _psnr(ours, theirs) >= 80.0
    assert np.percentile(np.abs(ours - theirs), 99.9) <= 5e-4


def test_canon_static_preset_path_matches_libraw(canon):
    """The public entry point (render without sharpening/denoising is not a preset, so check
    the staged outputs of the ``bi`` presets: up to the colour matrix they are LibRaw's)."""
    ri, cam = canon
    crop = ri.crop(400, 600, 256, 320)
    _, stages = isp.render(crop.to_tensor(torch.float64)[None], "bi,s,ga", cam, return_stages=True)
    lin = stages["colour_matrix"].clamp(0, 1)
    ours = isp.gamma_encode(lin, 2.2)[0].permute(1, 2, 0).numpy()
    theirs = _libraw(CANON, "sRGB", True)[400:656, 600:920]
    b = 2
    # this crop holds no clipped highlight, so no pre-clip is needed
    assert _psnr(ours[b:-b, b:-b], theirs[b:-b, b:-b]) >= 80.0


def test_wrong_pattern_is_detected(canon):
    """The comparison can fail: a one-pixel phase error drops PSNR far below the threshold."""
    ri, cam = canon
    ours = isp.gamma_encode(_linear(ri, cam, cfa="GRBG", matrix=False).permute(2, 0, 1)[None], 2.2)
    theirs = _libraw(CANON, "raw", True)
    assert _psnr(ours[0].permute(1, 2, 0).numpy()[2:-2, 2:-2], theirs[2:-2, 2:-2]) < 40.0


def test_kodak_no_wb_no_matrix_non_square_pixels_matches_libraw():
    _need(KODAK)
    from drifthelpers.raw import read_raw

    ri = read_raw(KODAK)
    cam = isp.CameraParams.from_raw_image(ri)
    assert cam.cfa == "GRBG" and cam.wb_gains == (1.0, 1.0, 1.0)  # no camera WB -> unit gains
    assert cam.ccm == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))  # no matrix -> identity
    lin = _linear(ri, cam, matrix=False).numpy()
    h, w, _ = lin.shape
    aspect = ri.pixel_aspect
    n_out = int(w * aspect + 0.5)
    src, rc = [], 0.0
    for _ in range(n_out):  # LibRaw's stretch(): column int(rc), rc += 1 / aspect
        src.append(int(rc))
        rc += 1.0 / aspect
    src = np.array(src)
    ours = np.clip(lin[:, src], 0, 1) ** (1 / 2.2)
    theirs = _libraw(KODAK, "raw", False)
    assert theirs.shape == ours.shape == (h, n_out, 3)
    keep = (src >= 2) & (src <= w - 3)  # drop LibRaw's border-rule columns
    o, t = ours[2:-2][:, keep], theirs[2:-2][:, keep]
    assert _psnr(o, t) >= 80.0
    assert np.percentile(np.abs(o - t), 99.9) <= 5e-4
