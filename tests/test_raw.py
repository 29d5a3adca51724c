"""Tests of drifthelpers.raw: CFA helpers, RawImage, read_raw, write_dng."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rawpy
import tifffile
import torch

from drifthelpers.camera import IDENTITY_CCM, Camera
from drifthelpers.raw import (
    CFA_PATTERNS,
    CorruptRawFileError,
    NotARawFileError,
    RawError,
    RawFileNotFoundError,
    RawImage,
    UnsupportedSensorError,
    ccm_to_xyz_to_cam,
    cfa_channel_indices,
    cfa_to_kornia,
    crop_raw,
    read_raw,
    shift_cfa,
    write_dng,
    xyz_to_cam_to_ccm,
)

# A plausible camera matrix (XYZ -> camera), the Canon G2's from LibRaw's table.
XYZ_TO_CAM = np.array([[0.9194, -0.2787, -0.1059], [-0.8098, 1.5657, 0.2608], [-0.2610, 0.3064, 0.7867]])


def make_image(cfa="RGGB", shape=(64, 96), seed=0, **kw) -> RawImage:
    rng = np.random.default_rng(seed)
    defaults = dict(
        raw=rng.integers(0, 4096, shape).astype(np.uint16),
        cfa=cfa,
        black_level=(256, 250, 260, 255),
        white_level=4095,
        wb_gains=(2.0, 1.0, 1.5),
        xyz_to_cam=XYZ_TO_CAM,
        camera="Acme Cam1",
    )
    defaults.update(kw)
    return RawImage(**defaults)


def mosaic_colours(cfa: str, h: int, w: int) -> np.ndarray:
    """Colour index of every pixel of an (h, w) mosaic, from first principles."""
    cell = np.array(cfa_channel_indices(cfa)).reshape(2, 2)
    return np.tile(cell, (h // 2 + 1, w // 2 + 1))[:h, :w]


# ----------------------------------------------------------------------------- CFA helpers


class TestCfa:
    def test_channel_indices_hand_checked(self):
        assert cfa_channel_indices("RGGB") == (0, 1, 1, 2)
        assert cfa_channel_indices("BGGR") == (2, 1, 1, 0)
        assert cfa_channel_indices("GRBG") == (1, 0, 2, 1)
        assert cfa_channel_indices("GBRG") == (1, 2, 0, 1)

    @pytest.mark.parametrize("bad", ["RGBG", "rggbx", "", None, 3, "XTRANS"])
    def test_bad_pattern(self, bad):
        with pytest.raises(ValueError, match="cfa must be one of"):
            cfa_channel_indices(bad)

    def test_lower_case_accepted(self):
        assert cfa_channel_indices("rggb") == (0, 1, 1, 2)

    @pytest.mark.parametrize("cfa", CFA_PATTERNS)
    @pytest.mark.parametrize("dy", range(-3, 4))
    @pytest.mark.parametrize("dx", range(-3, 4))
    def test_shift_matches_crop_of_colour_map(self, cfa, dy, dx):
        colours = mosaic_colours(cfa, 12, 12)
        top, left = dy % 2 + 4, dx % 2 + 4  # same phase, inside the map
        expected = colours[top : top + 2, left : left + 2].ravel()
        assert cfa_channel_indices(shift_cfa(cfa, dy, dx)) == tuple(expected)

    def test_shift_needs_integers(self):
        with pytest.raises(TypeError):
            shift_cfa("RGGB", 0.5, 0)

    @pytest.mark.parametrize("cfa", CFA_PATTERNS)
    @pytest.mark.parametrize("top,left", [(0, 0), (1, 0), (0, 1), (3, 5), (2, 2)])
    def test_crop_keeps_pattern(self, cfa, top, left):
        colours = mosaic_colours(cfa, 16, 16)
        crop, crop_cfa = crop_raw(colours, cfa, top, left, 8, 6)
        np.testing.assert_array_equal(crop, mosaic_colours(crop_cfa, 8, 6))

    @pytest.mark.parametrize(
        "args,err",
        [((0, 0, 0, 4), ValueError), ((-1, 0, 4, 4), ValueError), ((0, 0, 20, 4), ValueError), ((0.0, 0, 4, 4), TypeError)],
    )
    def test_crop_bad_arguments(self, args, err):
        with pytest.raises(err):
            crop_raw(np.zeros((16, 16)), "RGGB", *args)

    def test_kornia_mapping_hand_checked(self):
        from kornia.color import CFA

        assert cfa_to_kornia("RGGB") is CFA.BG
        assert cfa_to_kornia("BGGR") is CFA.RG
        assert cfa_to_kornia("GRBG") is CFA.GB
        assert cfa_to_kornia("GBRG") is CFA.GR

    @pytest.mark.parametrize("cfa", CFA_PATTERNS)
    def test_kornia_mapping_against_kornia_demosaic(self, cfa):
        """kornia's own demosaicer, told our mapping, puts each colour where our pattern says.

        A mosaic sampled from a flat colour (R=0.2, G=0.5, B=0.8) must come back as that
        colour in the interior; a wrong mapping swaps R and B or mixes in G.
        """
        from kornia.color import raw_to_rgb

        colour = np.array([0.2, 0.5, 0.8])
        mosaic = colour[mosaic_colours(cfa, 16, 16)]
        rgb = raw_to_rgb(torch.from_numpy(mosaic).float()[None, None], cfa_to_kornia(cfa))
        interior = rgb[0, :, 4:-4, 4:-4].reshape(3, -1)
        torch.testing.assert_close(interior.mean(1), torch.tensor(colour, dtype=torch.float32), atol=1e-5, rtol=0)
        assert float(interior.std(1).max()) < 1e-5


# ----------------------------------------------------------------------------- RawImage


class TestRawImage:
    def test_smoke_and_values(self):
        img = make_image()
        assert img.raw.dtype == np.uint16 and img.raw.shape == (64, 96)
        assert (img.height, img.width) == (64, 96)
        assert img.black_level == (256.0, 250.0, 260.0, 255.0)
        assert img.bit_depth == 12
        assert img.ccm is not None and img.ccm.shape == (3, 3)
        np.testing.assert_allclose(img.ccm.sum(1), 1.0, atol=1e-9)

    def test_frozen_and_read_only(self):
        img = make_image()
        with pytest.raises(Exception):
            img.cfa = "BGGR"
        with pytest.raises(ValueError):
            img.raw[0, 0] = 1

    def test_does_not_alias_caller_array(self):
        arr = np.zeros((4, 4), np.uint16)
        img = RawImage(raw=arr, cfa="RGGB", black_level=0, white_level=100)
        arr[0, 0] = 7
        assert img.raw[0, 0] == 0

    def test_wb_normalised_to_green(self):
        img = make_image(wb_gains=(1687.0, 1036.0, 1655.0))
        assert img.wb_gains[1] == 1.0
        assert img.wb_gains[0] == pytest.approx(1687 / 1036)

    def test_black_broadcast(self):
        assert make_image(black_level=64).black_level == (64.0,) * 4

    @pytest.mark.parametrize(
        "kw,match",
        [
            (dict(raw=np.zeros((3, 4), np.uint16)), "even height and width"),
            (dict(raw=np.zeros((2, 2, 3), np.uint16)), "2-D mosaic"),
            (dict(raw=np.zeros((4, 4), np.float32)), "integers"),
            (dict(raw=np.full((4, 4), 70000)), r"\[0, 65535\]"),
            (dict(cfa="XYZW"), "cfa must be one of"),
            (dict(black_level=(1, 2, 3)), "one value or 4 values"),
            (dict(black_level=(-1, 0, 0, 0)), "black_level"),
            (dict(white_level=200), "white_level"),
            (dict(wb_gains=(1.0, 0.0, 1.0)), "wb_gains"),
            (dict(wb_gains=(1.0, 2.0)), "wb_gains"),
            (dict(xyz_to_cam=np.eye(2)), "xyz_to_cam"),
            (dict(ccm=np.full((3, 3), np.nan)), "ccm"),
            (dict(pixel_aspect=0.0), "pixel_aspect"),
        ],
    )
    def test_bad_values(self, kw, match):
        with pytest.raises(ValueError, match=match):
            make_image(**kw)

    @pytest.mark.parametrize("cfa", CFA_PATTERNS)
    @pytest.mark.parametrize("top,left", [(0, 0), (1, 0), (0, 1), (1, 1), (3, 2)])
    def test_crop_shifts_pattern_and_black(self, cfa, top, left):
        img = make_image(cfa)
        crop = img.crop(top, left, 8, 10)
        np.testing.assert_array_equal(crop.raw, img.raw[top : top + 8, left : left + 10])
        assert crop.cfa == shift_cfa(cfa, top, left)
        # the black level follows the pixel, not the position label
        cell = np.array(img.black_level).reshape(2, 2)
        expected = tuple(cell[(top + i) % 2, (left + j) % 2] for i in (0, 1) for j in (0, 1))
        assert crop.black_level == expected

    def test_crop_odd_size_rejected(self):
        with pytest.raises(ValueError, match="even"):
            make_image().crop(0, 0, 3, 4)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_to_tensor(self, dtype):
        img = make_image()
        t = img.to_tensor(dtype)
        assert t.shape == (1, 64, 96) and t.dtype == dtype
        assert float(t[0, 5, 7]) == float(img.raw[5, 7])

    def test_ccm_round_trip_of_matrix_conversions(self):
        ccm = xyz_to_cam_to_ccm(XYZ_TO_CAM)
        np.testing.assert_allclose(xyz_to_cam_to_ccm(ccm_to_xyz_to_cam(ccm)), ccm, atol=1e-12)

    def test_ccm_maps_camera_white_to_srgb_white(self):
        """Rows of a ccm sum to one: a camera-neutral pixel stays neutral."""
        ccm = xyz_to_cam_to_ccm(XYZ_TO_CAM)
        np.testing.assert_allclose(ccm @ np.ones(3), np.ones(3), atol=1e-12)

    def test_to_camera_carries_the_rendering_values(self):
        img = make_image(cfa="GBRG", wb_gains=(2.0, 1.0, 1.5))
        cam = img.to_camera(gamma=2.4)
        assert cam == Camera.from_raw_image(img, 2.4)
        assert (cam.cfa, cam.black_level, cam.white_level) == ("GBRG", img.black_level, img.white_level)
        assert cam.wb_gains == (2.0, 1.0, 1.5) and cam.gamma == 2.4
        np.testing.assert_array_equal(np.array(cam.ccm), img.ccm)

    def test_to_camera_without_wb_and_matrix_uses_unit_gains_and_identity(self):
        cam = make_image(wb_gains=None, xyz_to_cam=None).to_camera()
        assert cam.wb_gains == (1.0, 1.0, 1.0) and cam.ccm == IDENTITY_CCM and cam.gamma == 2.2

    def test_summary_is_json_ready(self):
        import json

        meta = make_image().summary()
        assert json.loads(json.dumps(meta))["cfa"] == "RGGB"
        assert meta["colour_matrix"] is True


# ----------------------------------------------------------------------------- DNG round trip


class TestWriteDng:
    @pytest.mark.parametrize("cfa", CFA_PATTERNS)
    def test_round_trip_through_rawpy(self, cfa, tmp_path):
        """rawpy (LibRaw) reads back the mosaic bit-exactly and every piece of metadata."""
        img = make_image(cfa, seed=CFA_PATTERNS.index(cfa))
        path = write_dng(img, tmp_path / f"{cfa}.dng")
        with rawpy.imread(str(path)) as rp:
            np.testing.assert_array_equal(rp.raw_image_visible, img.raw)
            letters = "".join(rp.color_desc.decode()[i] for i in rp.raw_colors_visible[:2, :2].ravel())
            assert letters == cfa
            colours = rp.raw_colors_visible[:2, :2].ravel()
            black = tuple(float(rp.black_level_per_channel[c]) for c in colours)
            assert black == img.black_level
            assert rp.white_level == img.white_level
            mul = rp.camera_whitebalance
            np.testing.assert_allclose([mul[0] / mul[1], mul[2] / mul[1]], [2.0, 1.5], rtol=1e-6)
            np.testing.assert_allclose(np.array(rp.color_matrix)[:, :3], img.ccm, atol=1e-5)
        back = read_raw(path)
        np.testing.assert_array_equal(back.raw, img.raw)
        assert back.cfa == cfa and back.black_level == img.black_level and back.white_level == img.white_level
        np.testing.assert_allclose(back.wb_gains, img.wb_gains, rtol=1e-6)
        np.testing.assert_allclose(back.ccm, img.ccm, atol=1e-5)
        assert back.camera == "Acme Cam1"

    def test_without_wb_and_matrix(self, tmp_path):
        img = make_image(wb_gains=None, xyz_to_cam=None, camera=None)
        back = read_raw(write_dng(img, tmp_path / "plain.dng"))
        assert back.wb_gains is None and back.ccm is None
        np.testing.assert_array_equal(back.raw, img.raw)

    def test_ccm_only_image_round_trips(self, tmp_path):
        """A RawImage that knows only its ccm (as read from a DNG) is written and read back."""
        ccm = xyz_to_cam_to_ccm(XYZ_TO_CAM)
        img = make_image(xyz_to_cam=None, ccm=ccm)
        back = read_raw(write_dng(img, tmp_path / "ccm.dng"))
        np.testing.assert_allclose(back.ccm, ccm, atol=1e-5)

    def test_non_square_pixels_recorded(self, tmp_path):
        back = read_raw(write_dng(make_image(pixel_aspect=1.5), tmp_path / "aspect.dng"))
        assert back.pixel_aspect == pytest.approx(1.5)

    def test_sixteen_bit_full_range(self, tmp_path):
        rng = np.random.default_rng(3)
        img = make_image(raw=rng.integers(0, 65536, (32, 32)).astype(np.uint16), white_level=65535, black_level=4096)
        back = read_raw(write_dng(img, tmp_path / "full.dng"))
        np.testing.assert_array_equal(back.raw, img.raw)
        assert back.bit_depth == 16

    def test_fractional_black_rejected(self, tmp_path):
        with pytest.raises(ValueError, match="black_level"):
            write_dng(make_image(black_level=0.5), tmp_path / "x.dng")
        assert not list(tmp_path.iterdir())

    def test_too_small_for_libraw_rejected(self, tmp_path):
        with pytest.raises(ValueError, match="smaller than 22x22"):
            write_dng(make_image(shape=(20, 24)), tmp_path / "small.dng")
        read_raw(write_dng(make_image(shape=(22, 22)), tmp_path / "ok.dng"))

    def test_no_overwrite(self, tmp_path):
        path = write_dng(make_image(), tmp_path / "a.dng")
        with pytest.raises(FileExistsError):
            write_dng(make_image(), path, overwrite=False)

    def test_missing_parent(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="parent folder"):
            write_dng(make_image(), tmp_path / "nope" / "a.dng")

    def test_wrong_type(self, tmp_path):
        with pytest.raises(TypeError, match="RawImage"):
            write_dng(np.zeros((4, 4)), tmp_path / "a.dng")

    def test_failure_leaves_nothing(self, tmp_path, monkeypatch):
        """An error while writing leaves neither the target nor a temporary file."""
        import tifffile as tf

        def boom(*a, **k):
            raise OSError("disk full")

        monkeypatch.setattr(tf, "imwrite", boom)
        with pytest.raises(OSError, match="disk full"):
            write_dng(make_image(), tmp_path / "a.dng")
        assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- bad files


def _dng_bytes(tmp_path) -> bytes:
    return write_dng(make_image(), tmp_path / "good.dng").read_bytes()


def _write_tiff_dng(path, data, photometric, extra):
    tags = [
        (50706, 1, 4, bytes([1, 4, 0, 0]), True),
        (50708, 2, 0, "Test Camera", True),
        (50717, 4, 1, 4095, True),
        (271, 2, 0, "Test", True),
        (272, 2, 0, "Camera", True),
    ] + extra
    tifffile.imwrite(path, data, photometric=photometric, planarconfig="contig", extratags=tags)
    return path


BAD_FILES = {
    "zero_bytes.dng": (NotARawFileError, "empty"),
    "random_bytes.cr2": (NotARawFileError, "not a camera raw file"),
    "truncated.dng": (CorruptRawFileError, "truncated"),
    "header_only.dng": (CorruptRawFileError, "corrupt"),
    "png_named.CR2": (NotARawFileError, "not a camera raw file"),
    "linear_rgb.dng": (UnsupportedSensorError, "linear RGB"),
    "xtrans_like.dng": (UnsupportedSensorError, "6, 6"),
    "cmyg.dng": (UnsupportedSensorError, "only RGGB"),
}


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = _dng_bytes(d)
    rng = np.random.default_rng(0)
    (d / "zero_bytes.dng").write_bytes(b"")
    (d / "random_bytes.cr2").write_bytes(rng.bytes(100_000))
    (d / "truncated.dng").write_bytes(good[: len(good) // 2])
    (d / "header_only.dng").write_bytes(good[:300])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(d / "img.png", np.zeros((8, 8)))
    (d / "img.png").rename(d / "png_named.CR2")
    _write_tiff_dng(d / "linear_rgb.dng", rng.integers(0, 4095, (32, 32, 3)).astype(np.uint16), 34892, [])
    xtrans = bytes([1, 1, 0, 1, 1, 2, 1, 1, 2, 1, 1, 0, 2, 0, 1, 0, 2, 1] * 2)
    _write_tiff_dng(
        d / "xtrans_like.dng",
        rng.integers(0, 4095, (60, 60)).astype(np.uint16),
        32803,
        [(33421, 3, 2, (6, 6), True), (33422, 1, 36, xtrans, True), (50710, 1, 3, bytes([0, 1, 2]), True)],
    )
    _write_tiff_dng(
        d / "cmyg.dng",
        rng.integers(0, 4095, (32, 32)).astype(np.uint16),
        32803,
        [(33421, 3, 2, (2, 2), True), (33422, 1, 4, bytes([0, 1, 2, 3]), True), (50710, 1, 4, bytes([3, 4, 5, 1]), True)],
    )
    return d


class TestBadFiles:
    @pytest.mark.parametrize("name", sorted(BAD_FILES))
    def test_typed_error_naming_the_file(self, bad_corpus, name):
        err, match = BAD_FILES[name]
        path = bad_corpus / name
        start = time.perf_counter()
        with pytest.raises(err, match=match) as info:
            read_raw(path)
        assert time.perf_counter() - start < 1.0
        assert isinstance(info.value, RawError)
        assert info.value.path == path and str(path) in str(info.value)

    def test_missing_file(self, tmp_path):
        with pytest.raises(RawFileNotFoundError, match="no such file") as info:
            read_raw(tmp_path / "nope.dng")
        assert isinstance(info.value, FileNotFoundError)

    def test_directory(self, tmp_path):
        with pytest.raises(RawFileNotFoundError, match="not a regular file"):
            read_raw(tmp_path)

    def test_valid_dng_with_wrong_extension_is_read(self, tmp_path):
        """LibRaw identifies files by content: a DNG named .png is still that DNG."""
        img = make_image()
        path = tmp_path / "really_a_dng.png"
        path.write_bytes(write_dng(img, tmp_path / "x.dng").read_bytes())
        np.testing.assert_array_equal(read_raw(path).raw, img.raw)


# ----------------------------------------------------------------------------- real files


@pytest.mark.realdata
class TestRealFiles:
    def test_matches_rawpy(self, real_raw_file):
        start = time.perf_counter()
        img = read_raw(real_raw_file)
        assert time.perf_counter() - start < 1.0
        with rawpy.imread(str(real_raw_file)) as rp:
            vis = rp.raw_image_visible
            h, w = vis.shape
            np.testing.assert_array_equal(img.raw, vis[: h - h % 2, : w - w % 2])
            colours = rp.raw_colors_visible[:2, :2].ravel()
            desc = rp.color_desc.decode()
            assert img.cfa == "".join(desc[c] for c in colours)
            assert img.black_level == tuple(float(rp.black_level_per_channel[c]) for c in colours)
            assert img.white_level == rp.white_level

    def test_canon(self, canon_crw):
        """Canon G2: RGGB after margins (top 6, left 12); raw WB counts normalised to green."""
        img = read_raw(canon_crw)
        assert img.cfa == "RGGB"
        assert img.raw.shape == (1720, 2312)
        assert img.black_level == (32.0,) * 4 and img.white_level == 1023.0 and img.bit_depth == 10
        assert img.wb_gains == pytest.approx((1687 / 1036, 1.0, 1655 / 1036))
        assert img.xyz_to_cam is not None and img.ccm is not None
        np.testing.assert_allclose(img.ccm.sum(1), 1.0, atol=1e-9)
        with rawpy.imread(str(canon_crw)) as rp:
            s = rp.sizes
            # the visible area starts at the margins LibRaw reports
            np.testing.assert_array_equal(img.raw[:4, :4], rp.raw_image[s.top_margin : s.top_margin + 4, s.left_margin : s.left_margin + 4])

    def test_kodak_decisions(self, kodak_kdc):
        """Kodak DC120: no WB -> None, no matrix -> None, non-square pixels recorded, not resampled."""
        img = read_raw(kodak_kdc)
        assert img.cfa == "GRBG"
        assert img.wb_gains is None
        assert img.ccm is None and img.xyz_to_cam is None
        assert img.pixel_aspect == pytest.approx(1.5346, rel=1e-3)
        assert img.raw.shape == (976, 848)  # sensor grid kept

    def test_camera_view_of_real_files(self, canon_crw, kodak_kdc):
        """The Kodak file lacks WB and matrix: its camera renders in camera RGB (unit gains,
        identity); the Canon file's camera carries the normalised WB and LibRaw's matrix."""
        kodak = read_raw(kodak_kdc).to_camera()
        assert (kodak.cfa, kodak.wb_gains, kodak.ccm) == ("GRBG", (1.0, 1.0, 1.0), IDENTITY_CCM)
        canon_img = read_raw(canon_crw)
        canon = canon_img.to_camera()
        assert (canon.black_level, canon.white_level) == ((32.0,) * 4, 1023.0)
        assert canon.wb_gains == canon_img.wb_gains
        np.testing.assert_array_equal(np.array(canon.ccm), canon_img.ccm)

    @pytest.mark.parametrize("fraction", [0.9, 0.5, 0.05])
    def test_truncated_real_files(self, real_raw_file, tmp_path, fraction):
        data = real_raw_file.read_bytes()
        path = tmp_path / real_raw_file.name
        path.write_bytes(data[: int(len(data) * fraction)])
        start = time.perf_counter()
        with pytest.raises(CorruptRawFileError) as info:
            read_raw(path)
        assert time.perf_counter() - start < 1.0
        assert str(path) in str(info.value)

    def test_corrupt_middle(self, real_raw_file, tmp_path):
        data = bytearray(real_raw_file.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 2000] = bytes(2000)
        path = tmp_path / real_raw_file.name
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptRawFileError):
            read_raw(path)

    def test_real_file_survives_dng_round_trip(self, real_raw_file, tmp_path):
        img = read_raw(real_raw_file)
        back = read_raw(write_dng(img, tmp_path / "copy.dng"))
        np.testing.assert_array_equal(back.raw, img.raw)
        assert back.cfa == img.cfa and back.black_level == img.black_level
        assert back.pixel_aspect == pytest.approx(img.pixel_aspect, rel=1e-6)
        if img.ccm is not None:
            np.testing.assert_allclose(back.ccm, img.ccm, atol=1e-5)
