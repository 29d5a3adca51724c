"""What the drift-synthesis experiment computes in each data-model fidelity, correction by correction.

:class:`drifthelpers.synthesis.SynthesisConfig` has a ``fidelity`` field: ``"corrected"`` (the
default: every correction of :data:`CORRECTIONS` applied) or ``"raw2logit"`` (what the paper's
public code computed). In ``"raw2logit"`` its ``corrections`` field names the corrections applied
on top of the public behaviour, so that each can be measured alone
(:func:`drifthelpers.ablation.ablation`). This module turns a configuration into the concrete
choices: which static chain renders the views, which corruption constants, which IoU, whether
inputs are standardised, and how drone tiles are split.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["FIDELITIES", "CORRECTIONS", "CORRECTION_CHANGES", "CHAINS", "check", "active", "chain",
           "corruption_table_name", "per_image_iou", "standardises", "split_groups", "cache_extra", "render_raw2logit_views", "render_unsharp_2d", "Standardise",
           "standardiser"]

FIDELITIES = ("corrected", "raw2logit")

#: Every correction of the public code's protocol that ``fidelity="corrected"`` applies, with one
#: or two sentences on why it is a fix (printed by the ablation).
CORRECTIONS = {
    "chain": (
        "Static chain: the black level is rescaled to [0, 1] per 2x2 site instead of subtracted as an "
        "offset, every filter pads with the CFA-phase-preserving mirror border instead of repeating the "
        "edge or filling zeros (no bright frame), and the unsharp mask blurs in 2-D instead of along one "
        "image axis; the public chain's artefacts are not properties of any real camera pipeline."),
    "unsharp_2d": (
        "Unsharp mask alone: the public chain with its unsharp mask blurring the luma in 2-D (Gaussian "
        "sigma 1) instead of along one image axis, a misuse of scikit-image's per-channel flag; an "
        "unsharp mask sharpens edges of every orientation, not only the horizontal ones."),
    "imagenet_c": (
        "Corruption constants: ImageNet-C's tables with the elastic lengths scaled to the image size, "
        "instead of the CIFAR-10-C tables made for 32-pixel images; the corruptions then have the "
        "severity their benchmark defines at the images' actual size."),
    "pooled_iou": (
        "Segmentation metric: IoU pooled over the test set (all intersections over all unions) instead "
        "of the mean of per-image IoU; small or nearly empty masks no longer weigh as much as large ones."),
    "no_standardisation": (
        "Inputs: the task model sees the rendered views in [0, 1] instead of views standardised with "
        "the training set's mean and standard deviation, which are those of the training view and so "
        "shift every other test view; a data-model swap is then measured on the views themselves."),
    "frame_splits": (
        "Drone splits: tiles of one full frame stay in the same split instead of being split at random; "
        "random tiles put overlapping content of a frame in both training and test sets, so test scores "
        "were partly in-sample."),
}

#: Each correction in two short phrases: what the public code did, what ``"corrected"`` does
#: (the columns of the README's fidelity table).
CORRECTION_CHANGES = {
    "chain": ("black level an offset; edge-repeat and zero-fill borders (a bright frame); 1-D unsharp blur",
              "black level rescaled per 2x2 site; CFA-phase mirror borders; 2-D unsharp mask"),
    "unsharp_2d": ("unsharp mask blurs the luma along the first image axis only",
                   "the public chain with a 2-D Gaussian blur (sigma 1) in its unsharp mask"),
    "imagenet_c": ("CIFAR-10-C corruption constants (made for 32-pixel images)",
                   "ImageNet-C constants, elastic lengths scaled to the image size"),
    "pooled_iou": ("IoU as the mean of per-image IoU", "IoU pooled over the test set"),
    "no_standardisation": ("inputs standardised with the training view's mean and std",
                           "the rendered views in [0, 1]"),
    "frame_splits": ("drone tiles split at random", "the tiles of one frame in the same split"),
}


def check(fidelity: str, corrections: Iterable[str]) -> tuple[str, ...]:
    """Validate a fidelity and its corrections; returns the corrections, sorted.

    Raises:
        ValueError: an unknown fidelity or correction, or corrections with ``"corrected"``
            (every correction is applied there already).
    """
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
    if isinstance(corrections, str):
        raise ValueError(f"corrections must be a tuple of names, got the string {corrections!r}")
    out = tuple(sorted(set(corrections)))
    unknown = [c for c in out if c not in CORRECTIONS]
    if unknown:
        raise ValueError(f"unknown corrections {unknown}; known: {sorted(CORRECTIONS)}")
    if out and fidelity == "corrected":
        raise ValueError("corrections apply on top of fidelity='raw2logit'; 'corrected' applies all of them")
    return out


def active(config) -> frozenset:
    """The corrections a configuration applies: all for ``"corrected"``, its ``corrections`` otherwise."""
    return frozenset(CORRECTIONS) if config.fidelity == "corrected" else frozenset(config.corrections)


CHAINS = ("corrected", "raw2logit", "raw2logit_unsharp_2d")


def chain(config) -> str:
    """The static chain of the views, one of :data:`CHAINS` (the last: the public chain with a
    2-D unsharp mask)."""
    on = active(config)
    return "corrected" if "chain" in on else "raw2logit_unsharp_2d" if "unsharp_2d" in on else "raw2logit"


def corruption_table_name(config) -> str:
    """The corruption constants (:func:`drifthelpers.corruptions.corrupt`'s ``table``)."""
    from .corruptions import table_for_fidelity

    return table_for_fidelity("corrected" if "imagenet_c" in active(config) else "raw2logit")


def per_image_iou(config) -> bool:
    """Whether the segmentation metric is the mean of per-image IoU (else pooled IoU)."""
    return "pooled_iou" not in active(config)


def standardises(config) -> bool:
    """Whether task-model inputs are standardised with the training split's mean and std."""
    return "no_standardisation" not in active(config)


def split_groups(dataset, config):
    """The groups kept together by the splits: the drone frames, or ``None`` (random tiles)."""
    return getattr(dataset, "frames", None) if "frame_splits" in active(config) else None


def cache_extra(config) -> dict:
    """What the fidelity adds to a trained model's cache key: nothing for the default, so that
    models cached before the field existed stay valid."""
    if config.fidelity == "corrected":
        return {}
    return {"fidelity": config.fidelity, "corrections": list(config.corrections)}


def render_raw2logit_views(raws: torch.Tensor, camera, presets: Sequence[str], resize, progress: bool = False,
                           unsharp_2d: bool = False) -> dict[str, torch.Tensor]:
    """Render mosaics in DN with the public code's static chain.

    Args:
        raws: (N, 1, H, W) mosaics in DN.
        camera: their :class:`drifthelpers.isp.CameraParams` (levels in DN).
        presets: static preset labels.
        resize: ``f((B, 3, H, W)) -> (B, 3, S, S)`` applied to each rendered batch.
        unsharp_2d: the unsharp mask blurs in 2-D (:func:`render_unsharp_2d`).

    Returns:
        ``{preset: (N, 3, S, S) float32 in [0, 1]}``: the input is the mosaic over its full scale
        and the black level an offset in those units
        (:func:`drifthelpers.isp.raw2logit.full_scale_input`).
    """
    from .isp import render
    from .isp.raw2logit import full_scale_input

    raw, cam = full_scale_input(raws, camera)
    it = presets
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(presets, desc="render views (raw2logit)", leave=False)
    views = {}
    for preset in it:
        draw = (lambda r: render_unsharp_2d(r, preset, cam)) if unsharp_2d else (  # noqa: E731
            lambda r: render(r, preset, cam, fidelity="raw2logit"))
        chunks = [resize(draw(raw[s : s + 32]).float()) for s in range(0, len(raw), 32)]
        views[preset] = torch.cat(chunks)
    return views


def render_unsharp_2d(raw: torch.Tensor, preset: str, camera) -> torch.Tensor:
    """The public static chain with its unsharp mask's blur in 2-D.

    Args:
        raw, preset, camera: as :func:`drifthelpers.isp.render` with ``fidelity="raw2logit"``.

    Returns:
        (B, 3, H, W) float64 in [0, 1]: the public chain's output for the ``s`` presets; for the
        ``u`` presets the luma ``y`` of the colour-corrected image becomes ``2 y - G(y)``, ``G``
        the 2-D Gaussian blur (sigma 1, 9x9, scipy's ``reflect`` border), then the public
        denoiser, clip and gamma.
    """
    from scipy import ndimage

    from .isp import parse_preset
    from .isp import raw2logit as r2l

    _, sharpen, denoise = parse_preset(preset)
    out = []
    for mosaic in raw[:, 0].cpu().numpy():
        x, stages = r2l.render_image(mosaic, preset, camera.cfa, camera.black_level, camera.wb_gains, camera.ccm,
                                     camera.gamma, return_stages=True)
        if sharpen == "u":
            x = r2l._on_luma(stages["colour_matrix"],
                             lambda y: 2 * y - ndimage.gaussian_filter(y, 1.0, mode="reflect", truncate=4.0))
            x = np.clip(r2l._on_luma(x, r2l._DENOISERS[denoise]), 0.0, 1.0) ** (1.0 / camera.gamma)
        out.append(np.moveaxis(x, -1, 0))
    return torch.from_numpy(np.stack(out))


class Standardise(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are buffers (saved with the model)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def standardiser(views: torch.Tensor | Sequence[torch.Tensor], train_idx) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training items of one view (or of several views pooled).

    Args:
        views: (N, 3, H, W) tensor, or a list of them (a mixed-preset model's views).
        train_idx: indices of the training split.

    Returns:
        ``(mean, std)``, 3 floats each (std floored at 1e-6).
    """
    stack = [views] if isinstance(views, torch.Tensor) else list(views)
    idx = torch.as_tensor(np.asarray(train_idx), dtype=torch.long)
    x = torch.cat([v[idx] for v in stack]).double().transpose(0, 1).reshape(stack[0].shape[1], -1)
    return x.mean(1).tolist(), x.std(1).clamp_min(1e-6).tolist()
