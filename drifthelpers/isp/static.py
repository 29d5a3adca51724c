"""The twelve static data models of the paper: :func:`render` and :class:`StaticDataModel`.

A static data model is the chain of :mod:`drifthelpers.isp.chain` with fixed camera values and
the components of a preset (:data:`drifthelpers.isp.PRESETS`): 3 demosaicers x 2 sharpeners x
2 denoisers. How a call is computed (the results agree to float rounding, all tested):

* float32 on the CPU without autograd or stage outputs (the way experiments render their
  views): the compiled kernels of :mod:`drifthelpers.isp.fastisp`, the same chain in about ten
  passes over the pixels, 2-4x faster than the torch path;
* otherwise (float64, a GPU, gradients, stage outputs, per-image values, odd or tiny sizes):
  :func:`drifthelpers.isp.chain.run_chain`, the torch reference path. Large frames are
  rendered in overlapping bands of rows that fit the CPU caches (:func:`_render_in_bands`),
  bit-identical to rendering them whole.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import drifthelpers.isp.fastisp as fastisp

from ..camera import Camera as CameraParams
from .chain import ChainValues, _check_camera, component_ops, run_chain
from .presets import parse_preset
from .tensors import _check_image, _flat, _grad_needed

__all__ = ["render", "StaticDataModel"]


class StaticDataModel(nn.Module):
    """One of the twelve static data models (fixed ISP) of the paper.

    Args:
        preset: a label of :data:`PRESETS`, e.g. ``"bi,s,ga"``.
        camera: the camera values (pattern, black/white level, WB, colour matrix, gamma).

    Shapes:
        forward: raw ``(*, 1, H, W)`` in DN -> sRGB-gamma ``(*, 3, H, W)`` in [0, 1].

    Example:
        >>> cam = CameraParams("RGGB", (0.0,) * 4, 1.0)
        >>> StaticDataModel("me,u,me", cam)(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, preset: str, camera: CameraParams):
        super().__init__()
        self.preset = ",".join(parse_preset(preset))
        self.camera = _check_camera(camera)

    def forward(self, raw: Tensor, return_stages: bool = False):
        """Render ``raw`` (DN); with ``return_stages`` also an OrderedDict of every stage's output.

        Camera constants are built in the input's dtype and device on each call.
        """
        return render(raw, self.preset, self.camera, return_stages)

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, cfa={self.camera.cfa!r}"


# A large frame is rendered in bands of about this many pixels (see _render_in_bands), and
# the reach of each stage in pixels bounds the halo a band needs (Menon's: its chain of
# 5- and 3-tap filters and 5x5 windows, 11 rows, rounded up).
_BAND_PIXELS = 1 << 19
_REACH = {"bi": 1, "ma": 2, "me": 12, "s": 1, "u": 4, "ga": 2, "me_denoise": 1}


def _render_in_bands(raw: Tensor, preset: str, render_fn) -> Tensor:
    """``render_fn(raw)`` on overlapping bands of rows of a large frame (without autograd).

    Each band carries a halo of rows on both sides longer than the reach of all stages
    together, so its centre rows equal the whole-frame result exactly (tested bitwise); bands
    start on even rows (same CFA phase), and the frame's own first and last rows are still
    reflect-padded. Bands keep each stage's buffers small enough for the CPU caches: about
    1.3x faster on a 4-megapixel frame. Small inputs (a batch of tiles) run in one piece.
    """
    d, s, n = parse_preset(preset)
    halo = _REACH[d] + _REACH[s] + _REACH["ga" if n == "ga" else "me_denoise"] + 2
    halo += halo % 2
    flat, shape = _flat(raw)
    h, w = flat.shape[-2:]
    rows = max(4 * halo, _BAND_PIXELS // (flat.shape[0] * w) // 2 * 2)
    if h <= rows + 2 * halo or h % 2 or w % 2:  # (odd sizes take other code paths)
        return render_fn(raw)
    out = flat.new_empty(flat.shape[:-3] + (3, h, w))
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        lo, hi = max(0, top - halo), min(h, bottom + halo)
        out[..., top:bottom, :] = render_fn(flat[..., lo:hi, :])[..., top - lo : bottom - lo, :]
    return out.reshape(shape[:-3] + (3, h, w))


def _render(raw, preset, camera, black, white, gains, ccm, return_stages):
    _check_image(raw, 1, "raw")
    if return_stages or _grad_needed(raw, black, white, gains, ccm):
        return _render_whole(raw, preset, camera, black, white, gains, ccm, return_stages)
    if fastisp.applies(raw, black, white, gains, ccm, camera.gamma):
        # the fused kernels, on the whole frame (they stream rows; bands would only add copies)
        d, s, n = parse_preset(preset)
        flat, shape = _flat(raw)
        out = fastisp.render_static(flat.contiguous(), camera.cfa, d, s, n, black, white, gains, ccm, camera.gamma)
        return out.reshape(shape[:-3] + out.shape[-3:])
    return _render_in_bands(raw, preset,
                            lambda band: _render_whole(band, preset, camera, black, white, gains, ccm, False))


def _render_whole(raw, preset, camera, black, white, gains, ccm, return_stages):
    d, s, n = parse_preset(preset)
    values = ChainValues(camera.cfa, black, white, gains, ccm, camera.gamma, *component_ops(d, s, n, raw))
    return run_chain(raw, values, return_stages)


def render(raw: Tensor, preset: str, camera: CameraParams, return_stages: bool = False,
           fidelity: str = "corrected"):
    """Render a batch of raw mosaics with one static data model.

    Args:
        raw: mosaics in DN, shape (*, 1, H, W), float.
        preset: a label of :data:`PRESETS`.
        camera: camera values.
        return_stages: also return an OrderedDict with every stage's output (keys
            ``black_level, demosaic, white_balance, colour_matrix, sharpen, denoise, clip, gamma``,
            :data:`STAGES`).
        fidelity: ``"corrected"`` (this module's chain) or ``"raw2logit"``, the chain as the
            paper's public code computed it (:func:`drifthelpers.isp.raw2logit.render`): then
            ``raw`` is a (B, 1, H, W) float64 tensor of mosaics divided by their full scale,
            the camera's black levels are offsets in those units and its white level is unused.

    Returns:
        sRGB-gamma images, shape (*, 3, H, W), in [0, 1] (and the stages if asked).

    Example:
        >>> cam = CameraParams("GRBG", (0.0,) * 4, 255.0)
        >>> render(torch.full((4, 1, 16, 16), 63.75), "bi,s,ga", cam)[0, :, 8, 8]  # 1/4 of full scale
        tensor([0.5325, 0.5325, 0.5325])
    """
    from .raw2logit import check_fidelity, render as render_raw2logit

    if check_fidelity(fidelity) == "raw2logit":
        return render_raw2logit(raw, preset, camera, return_stages)
    camera = _check_camera(camera)
    _check_image(raw, 1, "raw")
    like = raw
    return _render(raw, preset, camera, torch.tensor(camera.black_level, dtype=like.dtype, device=like.device),
                   torch.tensor(camera.white_level, dtype=like.dtype, device=like.device),
                   torch.tensor(camera.wb_gains, dtype=like.dtype, device=like.device),
                   torch.tensor(camera.ccm, dtype=like.dtype, device=like.device), return_stages)
