"""The ``fidelity`` switch: the data model as the paper's public code computed it ("raw2logit").

The static chain is checked against reference outputs of the public numpy pipeline
(``../shared/testdata/raw2logit/raw2logit_micro.npz``, skipped when absent), its demosaicers
against colour-demosaicing (the package the public code called), and the public parametrized
model at initialisation against the static ``bi,s,ga`` view.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drifthelpers import isp
from drifthelpers.isp import raw2logit
from drifthelpers.isp import PRESETS, CameraParams
from drifthelpers.raw import CFA_PATTERNS, RawImage, write_dng

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "raw2logit" / "raw2logit_micro.npz"


@pytest.fixture(scope="module")
def reference():
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} is absent (../shared is optional)")
    with np.load(REFERENCE) as z:
        data = {k: z[k] for k in z.files}
    camera = CameraParams("RGGB", tuple(data["black_level"].tolist()), 1.0, tuple(data["white_balance"].tolist()),
                          tuple(map(tuple, np.asarray(data["colour_matrix"], float).reshape(3, 3))))
    raw = torch.from_numpy(data["mosaic_uint8"] / 255.0)[None, None]
    return data, raw, camera


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()


def _check_against_reference(ours: np.ndarray, theirs: np.ndarray, preset: str) -> None:
    assert ours.shape == theirs.shape
    if preset.startswith("me"):
        # Menon keeps the horizontal or the vertical G estimate by comparing two sums of
        # absolute colour differences. On quantised data (k / 255) exact ties are frequent,
        # and two implementations that sum in a different order round differently, so a
        # tie can fall the other way; on integer-valued mosaics the sums are exact and the
        # outputs equal colour-demosaicing bit for bit (test_menon_equals_oracle_on_integers).
        assert _psnr(ours, theirs) >= 55.0
    else:
        assert np.abs(ours - theirs).max() <= 1e-6  # whole frame, borders included


# --------------------------------------------------------------------------- static chain vs reference


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.split(",")[1] == "s"])
def test_sharpening_presets_match_public_pipeline(reference, preset):
    data, raw, camera = reference
    out = isp.render(raw, preset, camera, fidelity="raw2logit")
    assert out.shape == (1, 3, 96, 96) and out.dtype == torch.float64
    _check_against_reference(_hwc(out), data[preset], preset)


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.split(",")[1] == "u"])
def test_unsharp_presets_match_public_pipeline_with_row_blur(reference, preset):
    """The reference file was made on scikit-image 0.26, where the public call's
    ``multichannel=True`` had to be written ``channel_axis=-1``. With that argument the
    per-channel loop of ``unsharp_mask`` takes ``y[c, ...]``, a row of the 2-D luma, so the
    blur ran along rows (the second axis) there, on this square 96x96 crop. On the
    scikit-image the public code pinned (0.18.1), ``multichannel=True`` takes ``y[..., c]``,
    a column, which is this package's default (``unsharp_axis=0``, tested below). Both runs
    pass ``preserve_range=True``, so nothing is clipped there."""
    data, raw, camera = reference
    out = raw2logit.render(raw, preset, camera, unsharp_axis=1)
    _check_against_reference(_hwc(out), data[preset], preset)


@pytest.mark.parametrize("preset", ["bi,u,me", "ma,u,ga"])
def test_default_unsharp_blurs_the_first_axis(reference, preset):
    """The default (scikit-image 0.18.1, which the public code pinned: each column blurred) is
    the row-blur chain of the transposed mosaic, transposed back (RGGB is its own transpose
    and the linear demosaicers and other filters are symmetric), and not the reference."""
    data, raw, camera = reference
    first = _hwc(isp.render(raw, preset, camera, fidelity="raw2logit"))
    via_rows = _hwc(raw2logit.render(raw.transpose(-1, -2).contiguous(), preset, camera, unsharp_axis=1))
    np.testing.assert_allclose(first, via_rows.transpose(1, 0, 2), rtol=0, atol=1e-12)
    assert np.abs(first - data[preset]).max() > 1e-3


def test_black_level_is_an_offset_without_rescale_or_clip():
    raw = torch.full((1, 1, 8, 8), 0.001, dtype=torch.float64)
    camera = CameraParams("GRBG", (0.0005, 0.002, 0.001, 0.0), 1.0)
    _, stages = isp.render(raw, "bi,s,ga", camera, return_stages=True, fidelity="raw2logit")
    black = stages["black_level"][0, 0]
    assert torch.allclose(black[0::2, 0::2], torch.tensor(0.0005, dtype=torch.float64))
    assert torch.allclose(black[0::2, 1::2], torch.tensor(-0.001, dtype=torch.float64))  # negative kept
    assert torch.allclose(black[1::2, 0::2], torch.tensor(0.0, dtype=torch.float64), atol=1e-18)
    assert torch.allclose(black[1::2, 1::2], torch.tensor(0.001, dtype=torch.float64))


def test_white_balance_and_colour_matrix_as_public_code():
    rng = np.random.default_rng(1)
    mosaic = rng.random((6, 6))
    ccm = rng.normal(size=(3, 3))
    gains = np.array([-0.6, 2.0, 3.5])
    _, stages = raw2logit.render_image(mosaic, "bi,s,ga", "RGGB", (0.0,) * 4, gains, ccm, return_stages=True)
    demosaiced = stages["demosaic"]
    np.testing.assert_allclose(stages["white_balance"], demosaiced * gains, rtol=0, atol=1e-15)
    expected = np.stack([sum(ccm[l, k] * stages["white_balance"][..., k] for k in range(3)) for l in range(3)], -1)
    np.testing.assert_allclose(stages["colour_matrix"], expected, rtol=0, atol=1e-13)


def test_luma_transform_is_scikit_images_yuv():
    try:
        from skimage.color import colorconv
    except ImportError:  # the published matrix of skimage.color.rgb2yuv
        published = np.array([[0.299, 0.587, 0.114], [-0.14714119, -0.28886916, 0.43601035],
                              [0.61497538, -0.51496512, -0.10001026]])
        np.testing.assert_array_equal(raw2logit.YUV_FROM_RGB, published)
    else:
        np.testing.assert_array_equal(raw2logit.YUV_FROM_RGB, colorconv.yuv_from_rgb)
        np.testing.assert_allclose(raw2logit.RGB_FROM_YUV, colorconv.rgb_from_yuv, rtol=0, atol=1e-15)
    # the inverse the public torch model wrote out (inverted in float32 there: about 4e-8 off)
    printed = np.array([[1.0, -4.1827794561e-09, 1.1398830414], [1.0, -3.9464232326e-01, -5.8062183857e-01],
                        [1.0, 2.0320618153, -1.2232658220e-09]])
    np.testing.assert_allclose(raw2logit.RGB_FROM_YUV, printed, rtol=0, atol=5e-8)


def _flat_grey_stages(preset: str, value: float = 0.25, size: int = 12):
    raw = torch.full((1, 1, size, size), value, dtype=torch.float64)
    return isp.render(raw, preset, CameraParams("RGGB", (0.0,) * 4, 1.0), return_stages=True, fidelity="raw2logit")[1]


def test_sharpening_fills_with_zeros_a_bright_frame():
    """Flat grey: the interior is unchanged, but with zero fill an edge pixel loses one
    neighbour (5y - 3y) and a corner two (5y - 2y). Colour-demosaicing's bilinear already
    changes the border, so the luma is compared with the filter computed by hand."""
    stages = _flat_grey_stages("bi,s,me")
    before = torch.einsum("bchw,c->bhw", stages["colour_matrix"], torch.tensor([0.299, 0.587, 0.114],
                                                                                dtype=torch.float64))[0]
    after = torch.einsum("bchw,c->bhw", stages["sharpen"], torch.tensor([0.299, 0.587, 0.114],
                                                                         dtype=torch.float64))[0]
    y = before.numpy()
    padded = np.pad(y, 1)  # zero fill
    hand = 5 * y - padded[:-2, 1:-1] - padded[2:, 1:-1] - padded[1:-1, :-2] - padded[1:-1, 2:]
    np.testing.assert_allclose(after.numpy(), hand, rtol=0, atol=1e-12)
    assert after[0, 0] > 2 * before[0, 0] and abs(float(after[5, 5] - before[5, 5])) < 1e-12  # bright corner


def test_unsharp_blur_runs_along_one_axis_only():
    """A luma that varies only along the second axis is untouched by a blur along the first."""
    rng = np.random.default_rng(2)
    y = np.tile(rng.random(10), (8, 1))
    assert np.allclose(raw2logit._unsharp_one_axis(y, 0), y, atol=1e-15)
    assert not np.allclose(raw2logit._unsharp_one_axis(y, 1), y, atol=1e-3)


def test_bad_fidelity_and_inputs_raise():
    raw = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    camera = CameraParams("RGGB", (0.0,) * 4, 1.0)
    with pytest.raises(ValueError, match="fidelity"):
        isp.render(raw, "bi,s,ga", camera, fidelity="paper")
    with pytest.raises(TypeError, match="float64"):
        isp.render(raw.float(), "bi,s,ga", camera, fidelity="raw2logit")
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        isp.render(raw[0], "bi,s,ga", camera, fidelity="raw2logit")
    with pytest.raises(TypeError, match="CameraParams"):
        isp.render(raw, "bi,s,ga", {"cfa": "RGGB"}, fidelity="raw2logit")
    with pytest.raises(ValueError, match="unsharp_axis"):
        raw2logit.render(raw, "bi,u,ga", camera, unsharp_axis=2)
    with pytest.raises(ValueError, match="preset"):
        isp.render(raw, "xx", camera, fidelity="raw2logit")


def test_corrected_is_the_default_and_unchanged():
    raw = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    camera = CameraParams("GBRG", (0.04,) * 4, 1.0, (2.0, 1.0, 1.5))
    for preset in ("bi,s,ga", "me,u,me"):
        assert torch.equal(isp.render(raw, preset, camera), isp.render(raw, preset, camera, fidelity="corrected"))
    corrected = isp.render(raw.double(), "bi,u,ga", camera, fidelity="corrected")
    public = isp.render(raw.double(), "bi,u,ga", camera, fidelity="raw2logit")
    assert (corrected - public).abs().max() > 1e-2


# --------------------------------------------------------------------------- demosaicers vs colour-demosaicing


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_linear_demosaicers_equal_colour_demosaicing(cfa):
    cd = pytest.importorskip("colour_demosaicing")
    rng = np.random.default_rng(3)
    for shape in ((16, 20), (13, 10)):
        mosaic = rng.random(shape)
        np.testing.assert_allclose(raw2logit.demosaic_bilinear(mosaic, cfa),
                                   cd.demosaicing_CFA_Bayer_bilinear(mosaic, cfa), rtol=0, atol=1e-12)
        np.testing.assert_allclose(raw2logit.demosaic_malvar2004(mosaic, cfa),
                                   cd.demosaicing_CFA_Bayer_Malvar2004(mosaic, cfa), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_menon_equals_oracle_on_integers(cfa):
    """On an integer-valued mosaic every direction score is exact, so no tie can break
    differently: ours equals colour-demosaicing exactly, refining step included."""
    cd = pytest.importorskip("colour_demosaicing")
    rng = np.random.default_rng(4)
    for shape in ((24, 30), (17, 22)):
        mosaic = rng.integers(0, 256, shape).astype(np.float64)
        for refine in (True, False):
            ours = raw2logit.demosaic_menon2007(mosaic, cfa, refining_step=refine)
            np.testing.assert_array_equal(ours, cd.demosaicing_CFA_Bayer_Menon2007(mosaic, cfa, refine))


def test_menon_on_quantised_data_differs_only_at_ties(reference):
    """On k / 255 data a few exact ties break the other way (see _check_against_reference)."""
    cd = pytest.importorskip("colour_demosaicing")
    data, raw, _ = reference
    mosaic = raw[0, 0].numpy()
    ours, theirs = raw2logit.demosaic_menon2007(mosaic), cd.demosaicing_CFA_Bayer_Menon2007(mosaic)
    assert _psnr(ours, theirs) >= 55.0
    assert (np.abs(ours - theirs).max(-1) > 1e-9).mean() < 0.01


def test_demosaicers_reject_bad_mosaics():
    with pytest.raises(ValueError, match="mosaic"):
        raw2logit.demosaic_bilinear(np.zeros((3, 8)), "RGGB")
    with pytest.raises(ValueError, match="cfa"):
        raw2logit.demosaic_menon2007(np.zeros((8, 8)), "RGBW")


# --------------------------------------------------------------------------- parametrized model


def _public_model(camera):
    return isp.parametrized_data_model(camera, fidelity="raw2logit").double().reset_parameters()


def test_parametrized_layout_is_132_unbounded_scalars():
    model = _public_model(CameraParams("RGGB", (0.01,) * 4, 1.0, (-0.5, 2.0, 3.0)))
    groups = model.param_groups()
    assert {k: v[0].numel() for k, v in groups.items()} == {
        "black_level": 4, "demosaic": 81, "white_balance": 3, "colour_matrix": 9, "sharpen": 9, "denoise": 25,
        "gamma": 1}
    assert sum(p.numel() for p in model.parameters()) == 132
    assert all(b["lower"] == -np.inf and b["upper"] == np.inf for b in model.bounds().values())
    assert float(model.white_balance[0].detach()) == -0.5  # a negative gain stays as it is
    assert isinstance(model.batch_norm, torch.nn.BatchNorm2d) and not model.batch_norm.affine
    assert type(isp.parametrized_data_model(CameraParams("RGGB", (0.0,) * 4, 1.0))) is isp.ParametrizedDataModel
    with pytest.raises(ValueError, match="fidelity"):
        isp.parametrized_data_model(CameraParams("RGGB", (0.0,) * 4, 1.0), fidelity="exact")


def _init_vs_static(raw, camera, border=4):
    model = _public_model(camera)
    with torch.no_grad():
        ours, stages = model.forward_unnormalised(raw, return_stages=True)
    static = isp.render(raw, "bi,s,ga", camera, fidelity="raw2logit")
    diff = (ours - static).abs()
    return diff, diff[..., border:-border, border:-border], stages


def test_parametrized_init_reproduces_static_bi_s_ga(reference):
    """Within 1e-5 (the 5-digit blur table) away from the 4-pixel border, where the public
    model's convolutions pad with ``reflect`` and colour-demosaicing/scipy repeat the edge."""
    _, raw, camera = reference
    diff, inner, _ = _init_vs_static(raw, camera)
    assert inner.max() <= 1e-5
    assert diff.max() > 1e-3  # the border does differ


def test_parametrized_init_on_a_generated_frame():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:40, :48]
    scene = 0.45 + 0.2 * np.sin(yy / 5.0) * np.cos(xx / 7.0)  # smooth: no value reaches the 1e-5 clip floor
    raw = torch.from_numpy(scene + 0.02 * rng.random((2, 1, 40, 48)))
    camera = CameraParams("GBRG", (0.01, 0.02, 0.015, 0.01), 1.0, (1.8, 1.0, 1.4),
                          ((1.5, -0.3, -0.2), (-0.2, 1.4, -0.2), (0.0, -0.4, 1.4)))
    _, inner, stages = _init_vs_static(raw, camera)
    assert inner.max() <= 1e-5
    # the learnable debayer at initialisation is bilinear with mirror (reflect) padding, which
    # is the corrected chain's bilinear demosaicer over the whole frame
    corrected = isp.demosaic_bilinear(stages["black_level"].sum(1, keepdim=True), camera.cfa)
    torch.testing.assert_close(stages["demosaic"], corrected, rtol=0, atol=1e-12)


def test_parametrized_batch_norm_and_gradients():
    rng = np.random.default_rng(6)
    raw = torch.from_numpy(0.1 + 0.8 * rng.random((3, 1, 16, 16)))
    model = _public_model(CameraParams("RGGB", (0.0,) * 4, 1.0)).train()
    out = model(raw)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.freeze_all_but("gamma")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["gamma"]


def test_full_scale_input_divides_by_two_to_the_bits_minus_one():
    """``x / (2^bits - 1)`` as the public code normalised, not by the white level itself."""
    raw_dn = torch.tensor([[[[510.0, 64.0], [32.0, 0.0]]]])
    for white, full in ((510.0, 511.0), (1023.0, 1023.0), (15000.0, 16383.0)):
        camera = CameraParams("RGGB", (32.0, 64.0, 64.0, 32.0), white)
        raw, scaled = raw2logit.full_scale_input(raw_dn, camera)
        assert raw.dtype == torch.float64
        torch.testing.assert_close(raw, raw_dn.double() / full, rtol=0, atol=0)
        assert scaled.black_level == tuple(b / full for b in camera.black_level)
        assert scaled.white_level == white / full


# --------------------------------------------------------------------------- command line


def test_cli_renders_with_raw2logit_fidelity(tmp_path, capsys):
    from drifthelpers.__main__ import main

    image = RawImage(raw=(np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) % 900 + 64), cfa="RGGB",
                     black_level=(64, 64, 64, 64), white_level=1023, wb_gains=(2.0, 1.0, 1.5))
    dng = write_dng(image, tmp_path / "frame.dng")
    out = tmp_path / "out.png"
    code = main(["render", str(dng), "--preset", "ma,u,me", "--fidelity", "raw2logit", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    from PIL import Image

    written = np.asarray(Image.open(out))
    raw, camera, _ = isp.load_raw_file(dng)
    raw, camera = raw2logit.full_scale_input(raw, camera)
    expected = isp.render(raw, "ma,u,me", camera, fidelity="raw2logit")[0].permute(1, 2, 0).float().numpy()
    assert written.shape == expected.shape
    assert np.abs(written.astype(int) - (expected * 255 + 0.5).astype(np.uint8)).max() <= 1
    with pytest.raises(SystemExit) as bad:  # argparse refuses the value before anything runs
        main(["render", str(dng), "--fidelity", "paper", "-o", str(tmp_path / "x.png")])
    assert bad.value.code == 2 and "--fidelity" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- the synthesis experiment's switches


class _MosaicSet(torch.utils.data.Dataset):
    """A few 10-bit mosaics in DN with a camera, as drifthelpers.synthesis.render_views reads them."""

    camera = {"cfa": "RGGB", "black_level": 64, "white_level": 1023, "wb_gains": (2.0, 1.0, 1.5),
              "ccm": ((1.2, -0.1, -0.1), (-0.1, 1.2, -0.1), (-0.1, -0.1, 1.2))}

    def __init__(self, n=3, size=16, frames=None):
        g = torch.Generator().manual_seed(0)
        self.raws = torch.randint(64, 1024, (n, 1, size, size), generator=g).float()
        self.targets = [i % 3 for i in range(n)]
        if frames is not None:
            self.frames = frames

    def __len__(self):
        return len(self.raws)

    def __getitem__(self, i):
        return {"raw": self.raws[i], "label": self.targets[i]}


def test_synthesis_config_fidelity_and_corrections():
    from drifthelpers import synthesis, synthesis_fidelity as fid

    default = synthesis.SynthesisConfig()
    assert default.fidelity == "corrected" and default.corrections == ()
    assert fid.active(default) == frozenset(fid.CORRECTIONS)
    public = synthesis.SynthesisConfig(fidelity="raw2logit", corrections=("pooled_iou", "chain"))
    assert public.corrections == ("chain", "pooled_iou")  # sorted: one configuration, one cache key
    with pytest.raises(ValueError, match="fidelity must be one of"):
        synthesis.SynthesisConfig(fidelity="public")
    with pytest.raises(ValueError, match="unknown corrections"):
        synthesis.SynthesisConfig(fidelity="raw2logit", corrections=("bogus",))
    with pytest.raises(ValueError, match="on top of fidelity='raw2logit'"):
        synthesis.SynthesisConfig(corrections=("chain",))
    with pytest.raises(ValueError, match="tuple of names"):
        synthesis.SynthesisConfig(fidelity="raw2logit", corrections="chain")
    for name, text in fid.CORRECTIONS.items():  # every correction says why it is a fix
        assert len(text) > 80 and text.endswith("."), name


def test_default_cache_key_is_unchanged_and_fidelity_enters_it():
    from drifthelpers import synthesis
    from drifthelpers.training import TrainConfig, config_key

    cfg = synthesis.SynthesisConfig()
    fp = {"n": 5, "checksum": "abc"}
    before = TrainConfig(task=cfg.task, model=cfg.model, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                         weight_decay=cfg.weight_decay, seed=cfg.seed, augment=cfg.augment, data_model="bi,s,ga",
                         schedule=cfg.schedule,
                         extra={"split": 0, "fractions": list(cfg.fractions), "size": cfg.image_size, **fp})
    assert config_key(synthesis.train_config(cfg, "bi,s,ga", 0, fp)) == config_key(before)
    keys = {config_key(synthesis.train_config(synthesis.SynthesisConfig(fidelity="raw2logit", corrections=c),
                                              "bi,s,ga", 0, fp)) for c in [(), ("chain",), ("imagenet_c",)]}
    assert len(keys | {config_key(before)}) == 4


def test_fidelity_switches_each_select_one_choice():
    from drifthelpers import synthesis, synthesis_fidelity as fid

    ds = _MosaicSet(frames=[0, 0, 1])
    public = synthesis.SynthesisConfig(fidelity="raw2logit")
    default = synthesis.SynthesisConfig()
    choices = lambda c: (fid.chain(c), fid.corruption_table_name(c), fid.per_image_iou(c),  # noqa: E731
                         fid.standardises(c), fid.split_groups(ds, c))
    assert choices(default) == ("corrected", "imagenet_c", False, False, [0, 0, 1])
    assert choices(public) == ("raw2logit", "cifar10_c", True, True, None)
    expected = {"chain": 0, "unsharp_2d": 0, "imagenet_c": 1, "pooled_iou": 2, "no_standardisation": 3,
                "frame_splits": 4}
    assert set(expected) == set(fid.CORRECTIONS)
    for name, position in expected.items():  # each correction alone changes its own choice only
        one = choices(synthesis.SynthesisConfig(fidelity="raw2logit", corrections=(name,)))
        changed = [k for k in range(5) if one[k] != choices(public)[k]]
        assert changed == [position], name
        assert one[position] == (choices(default)[position] if name != "unsharp_2d" else "raw2logit_unsharp_2d")
    both = synthesis.SynthesisConfig(fidelity="raw2logit", corrections=("chain", "unsharp_2d"))
    assert fid.chain(both) == "corrected"  # the corrected chain's unsharp mask is 2-D already


def test_unsharp_2d_changes_only_the_unsharp_presets():
    from scipy import ndimage

    from drifthelpers import synthesis, synthesis_fidelity as fid

    ds = _MosaicSet()
    presets = ["bi,s,ga", "ma,u,me"]
    public = synthesis.render_views(ds, presets, progress=False, chain="raw2logit")
    two_d = synthesis.render_views(ds, presets, progress=False, chain="raw2logit_unsharp_2d")
    torch.testing.assert_close(two_d["bi,s,ga"], public["bi,s,ga"], rtol=0, atol=0)
    assert (two_d["ma,u,me"] - public["ma,u,me"]).abs().max() > 1e-3
    # by hand: luma y of the colour-corrected image -> 2 y - G_sigma1(y) in 2-D -> Gaussian denoise
    raw, cam = raw2logit.full_scale_input(ds.raws[:1], CameraParams.from_dataset_camera(ds.camera))
    _, stages = raw2logit.render_image(raw[0, 0].numpy(), "bi,u,ga", cam.cfa, cam.black_level, cam.wb_gains,
                                       cam.ccm, cam.gamma, return_stages=True)
    y = stages["colour_matrix"] @ raw2logit.YUV_FROM_RGB[0]
    want_y = 2 * y - ndimage.gaussian_filter(y, 1.0, mode="reflect", truncate=4.0)
    out = fid.render_unsharp_2d(raw, "bi,u,ga", cam)[0]
    got_pre_gamma = np.clip(out.numpy(), 0, 1) ** cam.gamma  # undo gamma (where not clipped)
    inside = (got_pre_gamma > 1e-3).all(0) & (got_pre_gamma < 0.999).all(0)
    denoised = ndimage.gaussian_filter(want_y, 0.5)
    assert inside.sum() > 30  # of 256 pixels
    np.testing.assert_allclose(np.moveaxis(got_pre_gamma, 0, -1)[inside] @ raw2logit.YUV_FROM_RGB[0],
                               denoised[inside], atol=1e-6)
    with pytest.raises(ValueError, match="chain must be one of"):
        synthesis.render_views(ds, presets, progress=False, chain="public")


def test_raw2logit_views_use_the_public_chain_on_full_scale_input():
    from drifthelpers import synthesis
    from drifthelpers.isp.raw2logit import full_scale_input

    ds = _MosaicSet()
    public = synthesis.render_views(ds, ["bi,s,ga", "ma,u,me"], image_size=8, progress=False, chain="raw2logit")
    corrected = synthesis.render_views(ds, ["bi,s,ga", "ma,u,me"], image_size=8, progress=False)
    camera = CameraParams.from_dataset_camera(ds.camera)
    raw, cam = full_scale_input(ds.raws, camera)
    assert cam.black_level[0] == pytest.approx(64 / 1023)
    for preset in ("bi,s,ga", "ma,u,me"):
        want = synthesis.resize_image(isp.render(raw, preset, cam, fidelity="raw2logit").float(), 8)
        assert public[preset].dtype == torch.float32 and public[preset].shape == (3, 3, 8, 8)
        torch.testing.assert_close(public[preset], want)
        assert (public[preset] - corrected[preset]).abs().max() > 0.01  # offset black level, zero-filled frame


class _Constant(torch.nn.Module):
    """A 'segmenter' whose mask is the first channel above 0.5: (B, 3, H, W) -> (B, 1, H, W) logits."""

    def forward(self, x):
        return x[:, :1] - 0.5


def test_per_image_iou_and_corruption_table_switches():
    from drifthelpers import stats, synthesis

    views = torch.zeros(2, 3, 4, 4)
    views[0, 0, :2] = 1.0  # image 0 predicts 8 pixels, image 1 nothing
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, :1] = 1.0  # image 0: 4 of the 8 right; image 1: empty target and prediction
    models, v = {"a": _Constant()}, {"a": views}
    pooled = synthesis.cross_evaluate(models, v, masks, [0, 1], "segmentation", 1)
    per_image = synthesis.cross_evaluate(models, v, masks, [0, 1], "segmentation", 1, per_image=True)
    assert pooled[0, 0] == pytest.approx(4 / 8)  # 4 / 8 pooled over both images
    assert per_image[0, 0] == pytest.approx((0.5 + 1.0) / 2)  # an empty union counts as 1
    assert stats.iou_pooled(np.array([4, 0]), np.array([8, 0])) == pytest.approx(0.5)
    dark = {"a": torch.full((2, 3, 8, 8), 0.3)}
    kw = dict(corruptions=["brightness"], severity=3)
    a, _ = synthesis.corruption_table(models, dark, torch.ones(2, 1, 8, 8), [0, 1], "segmentation", 1, **kw)
    b, _ = synthesis.corruption_table(models, dark, torch.ones(2, 1, 8, 8), [0, 1], "segmentation", 1,
                                      table="cifar10_c", **kw)
    # ImageNet-C brightness severity 3 adds 0.3 to V (0.3 -> 0.6 > 0.5); CIFAR-10-C adds 0.15 (0.45 < 0.5)
    assert a[0, 0] == 1.0 and b[0, 0] == 0.0


def test_standardisation_uses_the_training_split():
    from drifthelpers import synthesis_fidelity as fid

    views = torch.zeros(4, 3, 2, 2)
    views[:, 0] = torch.tensor([1.0, 3.0, 100.0, 100.0]).reshape(4, 1, 1)
    views[:, 1] = 0.5
    mean, std = fid.standardiser(views, [0, 1])  # items 2 and 3 (test) do not enter
    assert mean[0] == pytest.approx(2.0) and std[0] == pytest.approx(np.std([1, 1, 1, 1, 3, 3, 3, 3], ddof=1))
    assert mean[1] == pytest.approx(0.5) and std[1] == pytest.approx(1e-6)  # a flat channel: floored
    out = fid.Standardise(mean, std)(views[:2])
    assert out[:, 0].mean().item() == pytest.approx(0.0, abs=1e-6)
    pooled = fid.standardiser([views, views + 1], [0])
    assert pooled[0][0] == pytest.approx(1.5)


class _TileSet(_MosaicSet):
    """Drone-like tiles: a mask per tile, every tile of class 1, three tiles per frame."""

    def __init__(self, n=12, size=16):
        super().__init__(n, size, frames=[i // 3 for i in range(n)])
        self.targets = [1] * n
        self.mask_files = [f"{i}.png" for i in range(n)]
        self.masks = (self.raws > 600).float()

    def __getitem__(self, i):
        return {"raw": self.raws[i], "mask": self.masks[i]}


def test_segmentation_run_per_image_iou_and_standardised_model(tmp_path):
    from drifthelpers import stats, synthesis, synthesis_fidelity as fid

    ds = _TileSet()
    kw = dict(dataset="drone", model="small_unet", epochs=1, batch_size=4, n_splits=1, image_size=16,
              fractions=(0.5, 0.25, 0.25), presets=("me,u,me",))
    for extra, per_image in [({"fidelity": "raw2logit"}, True), ({}, False)]:
        run = synthesis.run_synthesis(ds, synthesis.SynthesisConfig(**kw, **extra), cache_dir=False,
                                      progress=False, mixed=False, workers=1, n_boot=0)
        rec = np.asarray(run["items"]["units"][0]["models"], float)  # (T, T+K, 2, I)
        want = (stats.iou_per_image(rec[:, :, 0], rec[:, :, 1]).mean(-1) if per_image
                else np.where(rec[:, :, 1].sum(-1) > 0, rec[:, :, 0].sum(-1) / rec[:, :, 1].sum(-1), 1.0))
        np.testing.assert_allclose(np.concatenate([run["matrices"][0], run["corruption_tables"][0]], 1), want)
    public = synthesis.SynthesisConfig(**kw, fidelity="raw2logit")
    model, _, parts = synthesis.trained_model(ds, public, "me,u,me", cache_dir=tmp_path)
    assert isinstance(model[0], fid.Standardise)
    views = synthesis.render_views(ds, ["me,u,me"], 16, progress=False, chain="raw2logit")["me,u,me"]
    mean, _ = fid.standardiser(views, parts[0])
    np.testing.assert_allclose(model[0].mean.flatten().numpy(), mean, rtol=1e-6)
    plain, _, _ = synthesis.trained_model(ds, synthesis.SynthesisConfig(**kw), "me,u,me", cache_dir=tmp_path)
    assert not isinstance(plain, torch.nn.Sequential)


def test_drone_splits_keep_frames_together_only_with_the_correction():
    from drifthelpers import synthesis

    ds = _TileSet(n=36)
    kw = dict(dataset="drone", n_splits=3, fractions=(0.5, 0.25, 0.25), presets=("me,u,me",))

    def frames_shared(cfg):
        jobs, _, _ = synthesis._plan_jobs(ds, cfg, False)
        shared = 0
        for job in jobs:
            test = {ds.frames[i] for i in job["test"]}
            shared += len(test & {ds.frames[i] for i in [*job["train"], *job["val"]]})
        return shared

    assert frames_shared(synthesis.SynthesisConfig(**kw)) == 0
    assert frames_shared(synthesis.SynthesisConfig(**kw, fidelity="raw2logit", corrections=("frame_splits",))) == 0
    assert frames_shared(synthesis.SynthesisConfig(**kw, fidelity="raw2logit")) > 0  # random tiles


# --------------------------------------------------------------------------- forensics and optimisation protocols


def test_forensics_sum_of_squares_closeness_and_public_lambdas():
    from drifthelpers import forensics

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = x + 0.1
    sse = float(forensics.dissimilarity(y, x, "sse"))
    assert sse == pytest.approx(2 * 3 * 8 * 8 * 0.01, rel=1e-5)  # summed over the batch, not averaged
    assert sse == pytest.approx(float(forensics.dissimilarity(y, x)) * x.numel(), rel=1e-5)
    assert forensics.PUBLIC_LAMBDAS == (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
    with pytest.raises(ValueError, match="'mse', 'sse' or 'ssim'"):
        forensics.dissimilarity(y, x, "l1")


def test_optimisation_one_learning_rate_switch_and_unchanged_default_key():
    from types import SimpleNamespace

    from drifthelpers import optimisation
    from drifthelpers.training import config_key

    camera = CameraParams.from_dataset_camera(_MosaicSet.camera)
    dm = isp.parametrized_data_model(camera)
    task = torch.nn.Linear(2, 2)
    lrs = lambda cfg: sorted({g["lr"] for g in optimisation._optimiser(task, dm, cfg, True).param_groups})  # noqa: E731
    default = optimisation.JointConfig(lr=1e-3, data_lr=1e-2, black_level_lr_scale=0.01)
    assert lrs(default) == pytest.approx([1e-4, 1e-3, 1e-2])  # black level, task model, data model
    assert lrs(optimisation.JointConfig(lr=1e-3, data_lr=1e-2, one_lr=True)) == pytest.approx([1e-3])
    data = SimpleNamespace(fingerprint={"n": 3})
    fields = {k: v for k, v in default.to_dict().items() if k != "one_lr"}
    before = config_key({"arm": "learned", "seed": 0, "config": fields, "data": data.fingerprint},
                        version="optimisation-2")
    assert optimisation._run_key("learned", default, data, 0) == before
    assert optimisation._run_key("learned", optimisation.JointConfig(one_lr=True), data, 0) != before
