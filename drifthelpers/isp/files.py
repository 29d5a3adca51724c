"""Raw files through the data model: :func:`load_raw_file` and :func:`render_file`
(``python -m drifthelpers render``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..camera import Camera
from .presets import parse_preset
from .static import render

__all__ = ["load_raw_file", "render_file"]


def _find_camera_json(path: Path) -> Path | None:
    for parent in path.resolve().parents:
        candidate = parent / "camera.json"
        if candidate.is_file():
            return candidate
    return None


def load_raw_file(path) -> tuple[Tensor, Camera, float]:
    """A raw file as ``(raw (1, 1, H, W) float32 DN, camera, pixel_aspect)``.

    A TIFF mosaic of a data set (mini or Zenodo layout: a ``camera.json`` in a folder
    above it) takes its camera values from that ``camera.json``
    (:meth:`drifthelpers.camera.Camera.from_json`; LibRaw would open such a TIFF too, but with
    black 0, unit gains and no colour matrix). Other files (DNG, CR2, NEF, ...) are read with
    :func:`drifthelpers.raw.read_raw`.

    Raises:
        drifthelpers.camera.CameraFileError: the data set's ``camera.json`` is unreadable or
            invalid (a ``ValueError``; the message names it).
        drifthelpers.raw.RawError: the file cannot be read as a mosaic (the message names it).
    """
    from ..raw import NotAMosaicError, NotARawFileError, check_readable, read_raw, read_tiff

    path = Path(path)
    check_readable(path)  # missing, a folder, unreadable, a link loop: each its own message
    camera_json = _find_camera_json(path) if path.suffix.lower() in (".tif", ".tiff") else None
    if camera_json is None:
        try:
            image = read_raw(path)
            return image.to_tensor()[None], Camera.from_raw_image(image), image.pixel_aspect
        except NotAMosaicError:  # an RGB image: no camera.json would help
            raise
        except NotARawFileError:
            if path.suffix.lower() not in (".tif", ".tiff"):
                raise
        raise NotARawFileError(
            path, "a plain TIFF mosaic needs the camera.json of its data set folder (none found above the file)"
        )
    mosaic = read_tiff(path)  # size checked before reading; errors name the file
    if mosaic.ndim != 2:
        raise NotARawFileError(path, f"a TIFF with shape {mosaic.shape} is not a single-channel Bayer mosaic")
    camera = Camera.from_json(camera_json)  # CameraFileError (a ValueError) names the file
    return torch.from_numpy(mosaic.astype(np.float32))[None, None], camera, 1.0


def render_file(path, preset: str = "bi,s,ga", output=None, *, overwrite: bool = True,
                fidelity: str = "corrected") -> Path:
    """Render a raw file through a static preset and save it as an 8-bit PNG (or 16-bit TIFF).

    Non-square pixels are corrected by resampling the width (the mosaic itself is never
    resampled). Used by ``python -m drifthelpers render``. Everything about the output
    is checked before rendering: it is never the input file, not a folder, its folder
    exists and is writable, and (with ``overwrite=False``) it does not exist. The image
    is written under a unique temporary name and renamed into place when complete.

    ``fidelity="raw2logit"`` renders as the paper's public code did (the mosaic and black
    level divided by the full scale ``2^bits - 1``: :func:`drifthelpers.isp.raw2logit.full_scale_input`).

    Raises:
        ValueError: a bad preset, fidelity or output name, or the output is the input file.
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        IsADirectoryError / FileNotFoundError / PermissionError: the output cannot be written.

    Returns:
        The written path.
    """
    import os

    from ..fileio import atomic_output
    from .raw2logit import check_fidelity, full_scale_input

    parse_preset(preset)
    check_fidelity(fidelity)
    if output is None:
        raise ValueError("output path is required")
    output = Path(output)
    if output.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise ValueError(f"output must end in .png, .tif or .tiff, got {output.name!r}")
    if output.is_dir():
        raise IsADirectoryError(f"output {output} is a folder; give a file name such as image.png")
    if Path(path).exists() and output.exists() and os.path.samefile(path, output):
        raise ValueError(f"output {output} is the input file; refusing to overwrite the source")
    if not overwrite and output.exists():
        raise FileExistsError(f"output {output} exists; pass --force to replace it")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"{output}: folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{output}: folder {output.parent} is not writable")
    raw, camera, aspect = load_raw_file(path)
    if fidelity == "raw2logit":
        raw, camera = full_scale_input(raw, camera)
    with torch.no_grad():
        rgb = render(raw, preset, camera, fidelity=fidelity)[0].float()
    if aspect != 1.0:
        h, w = rgb.shape[-2:]
        rgb = torch.nn.functional.interpolate(rgb[None], size=(h, round(w * aspect)), mode="bilinear",
                                              align_corners=False)[0].clamp(0, 1)
    hwc = rgb.permute(1, 2, 0).numpy()
    with atomic_output(output, overwrite=overwrite) as tmp:
        if output.suffix.lower() == ".png":
            from PIL import Image

            Image.fromarray((hwc * 255 + 0.5).astype(np.uint8)).save(tmp, format="PNG")
        else:
            import tifffile

            tifffile.imwrite(tmp, (hwc * 65535 + 0.5).astype(np.uint16), photometric="rgb")
    return output
