"""The ISP explorer: its pure renderer equals the static presets, the headless fallback is a
figure, the live widgets react to their controls, and bad arguments are named."""

from __future__ import annotations

import ipywidgets
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from drifthelpers import isp, widgets

CAM = isp.CameraParams(
    "GRBG",
    (64.0, 66.0, 63.0, 65.0),
    1023.0,
    (1.9, 1.0, 1.4),
    ((1.6, -0.4, -0.2), (-0.3, 1.5, -0.2), (0.0, -0.5, 1.5)),
)


@pytest.fixture(scope="module")
def mosaic() -> torch.Tensor:
    """A small textured mosaic in DN, (2, 1, 24, 32), with edges, noise and a few clipped pixels."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(32.0), indexing="ij")
    scene = 0.35 + 0.25 * torch.sin(xx / 3) * torch.cos(yy / 4) + 0.2 * (xx > 16)
    raw = 64 + 950 * (scene + 0.03 * torch.rand(2, 1, 24, 32, generator=g))
    raw[0, 0, 3, 5] = 1023.0
    return raw


@pytest.mark.parametrize("preset", isp.PRESETS)
def test_render_settings_equals_static_preset(mosaic, preset):
    d, s, n = isp.parse_preset(preset)
    got = widgets.render_settings(mosaic, CAM, d, s, n)
    want = isp.render(mosaic, preset, CAM)
    assert got.shape == want.shape == (2, 3, 24, 32)
    assert (got - want).abs().max() < 2e-5
    # zero offsets spelled out change nothing
    same = widgets.render_settings(mosaic, CAM, d, s, n, 0.0, CAM.wb_gains, CAM.gamma)
    assert torch.equal(same, got)


@pytest.mark.parametrize("preset", ["bi,s,ga", "ma,s,me", "me,s,ga"])
def test_render_settings_runs_the_chain_of_the_presets(mosaic, preset):
    """The explorer runs the one chain of the data models: the same stages in the same order,
    each output equal to the static preset's staged render bit for bit."""
    d, s, n = isp.parse_preset(preset)
    out, stages = widgets.render_settings(mosaic, CAM, d, s, n, return_stages=True)
    want, want_stages = isp.render(mosaic, preset, CAM, return_stages=True)
    assert list(stages) == list(want_stages) == list(isp.STAGES)
    assert all(torch.equal(stages[k], want_stages[k]) for k in isp.STAGES) and torch.equal(out, want)


def test_none_skips_the_stage(mosaic):
    out, stages = widgets.render_settings(mosaic, CAM, "bi", "none", "none", return_stages=True)
    assert "sharpen" not in stages and "denoise" not in stages
    lin = isp.colour_correct(isp.white_balance(isp.demosaic(isp.subtract_black_level(
        mosaic, torch.tensor(CAM.black_level), CAM.white_level), CAM.cfa, "bi"), CAM.wb_gains), CAM.ccm)
    assert torch.allclose(out, isp.gamma_encode(lin, CAM.gamma), atol=1e-6)
    only_sharp = widgets.render_settings(mosaic, CAM, "bi", "s", "none")
    assert torch.allclose(only_sharp, isp.gamma_encode(isp.sharpen(lin), CAM.gamma), atol=1e-6)
    assert not torch.allclose(only_sharp, out, atol=1e-3)


def test_offsets_act_as_documented(mosaic):
    ref = widgets.render_settings(mosaic, CAM)
    frac = widgets.render_settings(mosaic, CAM, black_offset=0.02, black_unit="fraction")
    dn = widgets.render_settings(mosaic, CAM, black_offset=0.02 * CAM.white_level)
    assert torch.allclose(frac, dn, atol=1e-6)
    assert frac.mean() < ref.mean()  # a higher black level darkens
    r, _, b = CAM.wb_gains
    two = widgets.render_settings(mosaic, CAM, wb_gains=(1.5 * r, b))
    three = widgets.render_settings(mosaic, CAM, wb_gains=(1.5 * r, CAM.wb_gains[1], b))
    assert torch.equal(two, three) and not torch.allclose(two, ref, atol=1e-3)
    brighter = widgets.render_settings(mosaic, CAM, gamma=3.0)
    assert brighter.mean() > ref.mean()  # x ** (1/3) >= x ** (1/2.2) on [0, 1]


def test_accepts_a_data_set_item_shape_and_dataset_camera(mosaic):
    item = mosaic[0]  # (1, H, W), as a data set returns it
    cam_dict = {"cfa": CAM.cfa, "black_level": CAM.black_level, "white_level": CAM.white_level,
                "wb_gains": CAM.wb_gains, "ccm": CAM.ccm}
    out = widgets.render_settings(item, cam_dict, "me", "u", "me")
    assert out.shape == (3, 24, 32)
    assert torch.allclose(out, isp.render(mosaic, "me,u,me", CAM)[0], atol=2e-5)


def test_static_fallback_is_a_figure_headless(mosaic, monkeypatch):
    assert widgets.frontend_available() is False  # pytest runs without a notebook front end
    fig = widgets.isp_explorer(mosaic[0], CAM, interactive=False)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * len(widgets.STATIC_SETTINGS) + 1  # images, difference maps, colour bar
    assert "(reference)" in fig.axes[0].get_title()
    monkeypatch.setenv("DRIFTHELPERS_STATIC_WIDGETS", "1")
    monkeypatch.setenv("JPY_SESSION_NAME", "fake.ipynb")
    assert widgets.frontend_available() is False
    auto = widgets.isp_explorer(mosaic[0], CAM, settings=[{}, {"gamma": 1.8}])
    assert isinstance(auto, Figure) and len(auto.axes) == 5


def test_interactive_controls_change_the_output(mosaic):
    # the optional panels off while the controls are exercised: each redraw costs a matplotlib draw
    ex = widgets.isp_explorer(mosaic[:1], CAM, interactive=True, show_diff=False, show_histogram=False)
    assert isinstance(ex, ipywidgets.VBox) and isinstance(ex, widgets.ISPExplorer)
    assert ex.mean_abs_diff == 0.0 and ex.image.value[:4] == b"\x89PNG"
    new_values = {"demosaic": "ma", "sharpen": "u", "denoise": "me", "black_offset": 1.0,
                  "wb_r": 1.3 * CAM.wb_gains[0], "wb_b": 0.7 * CAM.wb_gains[2], "gamma": 1.5}
    for name, value in new_values.items():
        before, png = ex.rgb.clone(), ex.image.value
        ex.controls[name].value = value  # the observer re-renders
        assert not torch.allclose(ex.rgb, before, atol=1e-4), name
        assert ex.image.value != png, name
    expected = widgets.render_settings(mosaic[0], CAM, "ma", "u", "me", 0.01, (new_values["wb_r"], 1.0,
                                       new_values["wb_b"]), 1.5, black_unit="fraction")
    assert torch.allclose(ex.rgb, expected, atol=1e-6)
    for name in ("show_diff", "show_histogram"):
        png = ex.image.value
        ex.controls[name].value = not ex.controls[name].value
        assert ex.image.value != png, name
    ex.reset()
    assert torch.allclose(ex.rgb, ex.reference, atol=1e-6) and ex.mean_abs_diff < 1e-6


def test_interactive_reports_an_impossible_setting_instead_of_raising():
    cam = isp.CameraParams("RGGB", (96.0,) * 4, 100.0)  # black level 4 % below white
    ex = widgets.isp_explorer(96 + 4 * torch.rand(1, 16, 16), cam, interactive=True, show_histogram=False)
    rgb, png = ex.rgb.clone(), ex.image.value
    ex.controls["black_offset"].value = 5.0  # +5 % of white: black 101 DN > white 100 DN
    assert "cannot render" in ex.status.value and "black_offset" in ex.status.value
    assert torch.equal(ex.rgb, rgb) and ex.image.value == png  # the last good view stays


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"demosaic": "nearest"}, "demosaic"),
        ({"sharpen": "strong"}, "sharpen"),
        ({"denoise": "bilateral"}, "denoise"),
        ({"black_offset": float("nan")}, "black_offset"),
        ({"black_offset": 5000.0}, "black_offset"),
        ({"black_offset": -100.0}, "black_offset"),
        ({"black_offset": 0.01, "black_unit": "percent"}, "black_unit"),
        ({"wb_gains": (1.0, 1.0, 1.0, 1.0)}, "wb_gains"),
        ({"wb_gains": "warm"}, "wb_gains"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": "2.2x"}, "gamma"),
    ],
)
def test_bad_arguments_are_named(mosaic, kwargs, name):
    with pytest.raises(ValueError, match=name):
        widgets.render_settings(mosaic, CAM, **kwargs)


def test_bad_explorer_arguments_are_named(mosaic):
    with pytest.raises(ValueError, match="interactive"):
        widgets.isp_explorer(mosaic[0], CAM, interactive="yes")
    with pytest.raises(ValueError, match="camera"):
        widgets.isp_explorer(mosaic[0], object())
    with pytest.raises(ValueError, match="raw"):
        widgets.isp_explorer(torch.rand(3, 8, 8), CAM)
    with pytest.raises(ValueError, match="raw"):
        widgets.isp_explorer(mosaic, CAM, interactive=False)  # a batch of two
    with pytest.raises(ValueError, match="settings"):
        widgets.static_explorer(mosaic[0], CAM, settings=[])
    with pytest.raises(ValueError, match="wb_gains"):
        widgets.static_explorer(mosaic[0], CAM, settings=[{"wb_gains": "Q x2"}])
    with pytest.raises(ValueError, match="raw"):
        widgets.render_settings([[1.0, 2.0]], CAM)


def test_numpy_mosaic_is_accepted(mosaic):
    arr = mosaic[0, 0].numpy().astype(np.uint16)
    out = widgets.render_settings(arr, CAM)
    assert out.shape == (3, 24, 32) and out.dtype == torch.float32


def test_stage_histograms_one_panel_per_stage(mosaic):
    import matplotlib.pyplot as plt

    with torch.no_grad():
        _, stages = isp.render(mosaic, "bi,s,ga", CAM, return_stages=True)
    fig = widgets.plot_stage_histograms(stages, ncols=3)
    try:
        used = [ax for ax in fig.axes if ax.axison]
        assert [ax.get_title().split("\n")[0] for ax in used] == list(isp.STAGES)
        share = float(((stages["sharpen"][0] < 0) | (stages["sharpen"][0] > 1)).float().mean())
        assert f"{share:.2%}" in used[isp.STAGES.index("sharpen")].get_title()
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="stages"):
        widgets.plot_stage_histograms({})


class _Shell:
    """A stand-in for an IPython shell (``get_ipython()``) outside any notebook server."""

    config: dict = {}
    user_ns: dict = {}


def _fake_colab(monkeypatch, with_manager: bool = True) -> list:
    """Pretend to run in Colab's kernel: ``google.colab.output`` imported, a shell present."""
    import sys
    import types

    import IPython

    calls = []
    output = types.ModuleType("google.colab.output")
    if with_manager:
        output.enable_custom_widget_manager = lambda: calls.append("enabled")
    colab = types.ModuleType("google.colab")
    colab.output = output
    google = types.ModuleType("google")
    google.colab = colab
    for name, module in (("google", google), ("google.colab", colab), ("google.colab.output", output)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(IPython, "get_ipython", lambda: _Shell())
    monkeypatch.delenv("DRIFTHELPERS_STATIC_WIDGETS", raising=False)
    return calls


def test_colab_gets_live_widgets_with_its_widget_manager(monkeypatch):
    calls = _fake_colab(monkeypatch)
    assert widgets.frontend_available() is True
    assert calls == ["enabled"]  # without it Colab draws no third-party widget


def test_colab_without_a_widget_manager_and_forced_static_fall_back(monkeypatch):
    calls = _fake_colab(monkeypatch, with_manager=False)
    assert widgets.frontend_available() is False
    calls = _fake_colab(monkeypatch)
    monkeypatch.setenv("DRIFTHELPERS_STATIC_WIDGETS", "1")
    assert widgets.frontend_available() is False and calls == []


def test_a_plain_shell_outside_colab_and_jupyter_is_headless(monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: _Shell())
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("DRIFTHELPERS_STATIC_WIDGETS", raising=False)
    assert widgets.frontend_available() is False
