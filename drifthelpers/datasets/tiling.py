"""Full drone frames cut into the tiles the loader reads: :func:`tile_drone_frames`.

The release ships the authors' 256x256 tiles; full frames are tiled only when no tiles
exist (a hand-placed download, or frames without the tile folders).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..sensor import INTENSITY_FOLDERS
from .files import _tiff_bytes, _write_png_mask
from .layout import (
    DRONE_FULL,
    DRONE_MASK_TILES_PREFIX,
    DRONE_MASKS_FULL,
    DRONE_TILES_PREFIX,
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    DatasetLayoutError,
    _drone_tile_dirs,
    _layout_error,
    pair_masks,
)
from .loaders import _list_images, _read_mask, _read_mosaic

__all__ = ["tile_drone_frames"]


def tile_drone_frames(
    drone_dir: str | os.PathLike, tile: int = 256, *, progress: bool = True, keep_empty: bool = False
) -> int:
    """Cut full drone frames into the tile layout the loader reads.

    Two layouts of full frames are read:

    * the release's: ``drone/images_full/raw_scaleXXX/<frame>.{dng,tif,tiff}`` with masks in
      ``drone/masks_full/`` (a mask's name contains its frame's stem); tiles go to
      ``drone/images_tiles_<tile>/raw_scaleXXX/<FF>_<IIIII>.tif`` and masks (bool PNG) to
      ``drone/masks_tiles_<tile>/``, with ``IIIII`` the index among the kept tiles of the
      frame, as the authors name theirs. Refused when tiles exist already (no duplicates).
    * ``drone/frames/raw_scaleXXX/`` with ``drone/frames/masks/``; tiles go to
      ``drone/images/raw_scaleXXX/<FF>_<TTTTT>.tiff`` (``TTTTT`` the row-major grid index)
      and masks (uint8 0/255 TIFF) to ``drone/masks/``.

    Tiles are non-overlapping, at even offsets (the CFA phase is kept); ``FF`` is the frame
    index in sorted order. Only tiles with a car pixel are kept unless ``keep_empty``
    (the paper keeps 548 tiles from 12 frames this way).

    Returns:
        Number of tiles per intensity.
    """
    drone_dir = Path(drone_dir)
    if tile % 2:
        raise ValueError("tile must be even to keep the CFA phase")
    release = (drone_dir / DRONE_FULL).is_dir()
    if release:
        frames_dir, mask_src = drone_dir / DRONE_FULL, drone_dir / DRONE_MASKS_FULL
        img_out = drone_dir / f"{DRONE_TILES_PREFIX}{tile}"
        mask_out = drone_dir / f"{DRONE_MASK_TILES_PREFIX}{tile}"
        if _drone_tile_dirs(drone_dir):
            raise DatasetLayoutError(
                f"{drone_dir} holds tiles already ({_drone_tile_dirs(drone_dir)[0].name}); "
                "the loader reads those, re-tiling the full frames would duplicate them"
            )
    else:
        frames_dir, mask_src = drone_dir / "frames", drone_dir / "frames" / "masks"
        img_out, mask_out = drone_dir / "images", drone_dir / "masks"
    masks = _list_images(mask_src, MASK_SUFFIXES) if mask_src.is_dir() else {}
    ref = next((frames_dir / d for d in INTENSITY_FOLDERS if (frames_dir / d).is_dir()), None)
    if ref is None or not masks:
        raise _layout_error("drone", drone_dir, f"No full frames with masks under {frames_dir}.")
    paired, _ = pair_masks(_list_images(ref, IMAGE_SUFFIXES), masks)
    keep = {stem: _frame_tiles(_read_mask(paired[stem]) > 0, tile, f, release, keep_empty)
            for f, stem in enumerate(paired)}
    mask_out.mkdir(parents=True, exist_ok=True)
    for stem, sel in keep.items():
        m = _read_mask(paired[stem]) > 0
        for y, x, name in sel:
            crop = m[y : y + tile, x : x + tile]
            if release:
                _write_png_mask(mask_out / f"{name}.png", crop)
            else:
                (mask_out / f"{name}.tif").write_bytes(_tiff_bytes(np.where(crop, 255, 0).astype(np.uint8)))
    folders = [d for d in INTENSITY_FOLDERS if (frames_dir / d).is_dir()]
    ext = ".tif" if release else ".tiff"
    for folder in tqdm(folders, desc="tiling drone frames", disable=not progress, leave=False):
        frames = _list_images(frames_dir / folder, IMAGE_SUFFIXES)
        out = img_out / folder
        out.mkdir(parents=True, exist_ok=True)
        for stem in paired:
            if stem not in frames:
                continue
            raw = _read_mosaic(frames[stem])
            for y, x, name in keep[stem]:
                (out / f"{name}{ext}").write_bytes(_tiff_bytes(np.ascontiguousarray(raw[y : y + tile, x : x + tile])))
    return sum(len(v) for v in keep.values())


def _frame_tiles(mask: np.ndarray, tile: int, frame: int, kept_index: bool,
                 keep_empty: bool) -> list[tuple[int, int, str]]:
    """``(y, x, name)`` of the tiles of one frame to keep (see :func:`tile_drone_frames`)."""
    rows, cols = mask.shape[0] // tile, mask.shape[1] // tile
    sel = []
    for r in range(rows):
        for c in range(cols):
            if keep_empty or mask[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile].any():
                index = len(sel) if kept_index else r * cols + c
                sel.append((r * tile, c * tile, f"{frame:02d}_{index:05d}"))
    return sel
