"""The notebooks' figure helpers: display conversion, the CFA view of a mosaic, the superpixel
preview (hand-checked values), and each figure kind drawn headless."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from drifthelpers import plotting  # noqa: E402


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((3, 4, 5), (4, 5, 3)), ((1, 3, 4, 5), (4, 5, 3)), ((1, 4, 5), (4, 5)), ((4, 5, 3), (4, 5, 3)), ((4, 5), (4, 5))],
)
def test_to_display_shapes(shape, expected):
    out = plotting.to_display(torch.linspace(-1, 2, int(np.prod(shape))).reshape(shape))
    assert out.shape == expected and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0  # clipped


def test_to_display_rejects_other_shapes():
    with pytest.raises(ValueError, match="shape"):
        plotting.to_display(np.zeros((2, 2, 2, 2)))


def test_mosaic_as_colour_puts_each_pixel_in_its_filter_colour():
    raw = np.array([[10, 20], [30, 40]], dtype=np.uint16)  # RGGB: R=10, G=20, G=30, B=40
    out = plotting.mosaic_as_colour(raw, "RGGB", black=0, white=40)
    np.testing.assert_allclose(out[0, 0], [0.25, 0, 0])
    np.testing.assert_allclose(out[0, 1], [0, 0.5, 0])
    np.testing.assert_allclose(out[1, 0], [0, 0.75, 0])
    np.testing.assert_allclose(out[1, 1], [0, 0, 1.0])


def test_preview_rgb_hand_checked():
    raw = np.tile(np.array([[164, 100], [132, 68]], dtype=float), (2, 3))  # GRBG cells
    camera = {"cfa": "GRBG", "black_level": 4, "white_level": 260, "wb_gains": (2.0, 1.0, 0.5), "ccm": None}
    out = plotting.preview_rgb(raw, camera, gamma=1.0)
    assert out.shape == (2, 3, 3)
    # R = (100-4)/256 * 2 = 0.75; G = mean(160, 64)/256 = 0.4375; B = (132-4)/256 * 0.5 = 0.25
    np.testing.assert_allclose(out[0, 0], [0.75, 0.4375, 0.25])
    swap = {**camera, "wb_gains": None, "ccm": [[0, 0, 1], [0, 1, 0], [1, 0, 0]]}
    np.testing.assert_allclose(plotting.preview_rgb(raw, swap, gamma=1.0)[0, 0], [0.5, 0.4375, 0.375])
    with pytest.raises(ValueError, match="2-D mosaic"):
        plotting.preview_rgb(np.zeros((2, 4, 4)), camera)


def test_every_figure_kind_draws_headless():
    rng = np.random.default_rng(0)
    figures = [
        plotting.plot_cfa("BGGR"),
        plotting.plot_histogram(rng.integers(0, 1024, (16, 16)), (64, 64, 60, 60), 1023),
        plotting.image_grid([torch.rand(3, 8, 8), np.zeros((8, 8))], titles=["a", "b"], suptitle="grid"),
        plotting.plot_noise_curve([1, 10, 100], [2, 11, 101], [1, 100], [2, 101], labels=["1%", "10%", "100%"]),
        plotting.heatmap(rng.random((3, 4)), list("abc"), list("wxyz"), title="m"),
    ]
    try:
        for fig in figures:
            assert isinstance(fig, matplotlib.figure.Figure) and fig.axes
        _, ax = plt.subplots()
        assert plotting.plot_cfa("RGGB", ax=ax) is ax.figure  # draws into a given Axes
        assert [t.get_text() for t in ax.texts[:4]] == ["R", "G", "R", "G"]
        figures.append(ax.figure)
        with pytest.raises(ValueError, match="at least one image"):
            plotting.image_grid([])
    finally:
        for fig in figures:
            plt.close(fig)
