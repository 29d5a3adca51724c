"""Torch loaders of the raw data sets: :class:`RawMicroscopy` and :class:`RawDrone`.

Both read a data set folder (the Zenodo release, a generated set, or files placed by
hand; see :func:`drifthelpers.datasets.expected_layout`) at one light intensity and
return dict items with the mosaic as a float32 tensor in DN. The folder's
``camera.json`` (a :class:`drifthelpers.camera.Camera`) says how to render it; the
release's built-in values (:data:`drifthelpers.datasets.REAL_CAMERAS`) are used when it
is absent.

Example:
    >>> ds = RawMicroscopy(paths["microscopy"], intensity=0.25)  # doctest: +SKIP
    >>> ds[0]["raw"].shape                                      # doctest: +SKIP
    torch.Size([1, 64, 64])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..camera import Camera
from .cameras import REAL_CAMERAS
from .layout import (
    CAMERA_FILE,
    IMAGE_SUFFIXES,
    KNOWN_INVALID_MICROSCOPY,
    LABEL_FILE,
    MASK_SUFFIXES,
    _drone_layout,
    _layout_error,
    _resolve_dataset_dir,
    intensity_folder,
    pair_masks,
)

__all__ = ["RawMicroscopy", "RawDrone"]


def _read_camera(ds_dir: Path, kind: str) -> Camera:
    """The folder's ``camera.json``, else the release's built-in values.

    Raises:
        drifthelpers.camera.CameraFileError: the file is unreadable or invalid (a
            ``ValueError`` that names the file).
    """
    p = ds_dir / CAMERA_FILE
    if p.is_file():
        return Camera.from_json(p)
    return REAL_CAMERAS[kind]


def _read_mosaic(path: Path) -> np.ndarray:
    """A data set's mosaic (H, W); every error names the file (see :mod:`drifthelpers.raw`)."""
    from ..raw import read_raw, read_tiff

    if path.suffix.lower() == ".dng":
        return np.asarray(read_raw(path).raw)
    arr = read_tiff(path)  # declared size checked before reading
    if arr.ndim != 2:
        raise ValueError(f"{path} is not a single-channel mosaic (shape {arr.shape})")
    return arr


def _read_mask(path: Path) -> np.ndarray:
    """A data set's mask (H, W); every error names the file."""
    from ..raw import check_readable, read_tiff

    if path.suffix.lower() == ".png":
        from PIL import Image

        check_readable(path)
        try:
            with Image.open(path) as im:
                arr = np.array(im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ValueError(f"{path}: not a readable PNG mask ({type(exc).__name__}: {exc})") from None
    else:
        arr = read_tiff(path)
    if arr.ndim == 3:  # RGB(A) mask drawn by hand: any non-zero colour is car
        arr = arr[..., :3].max(axis=-1)
    if arr.ndim != 2:
        raise ValueError(f"{path} is not a 2-D mask (shape {arr.shape})")
    return arr


def _list_images(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            out.setdefault(p.stem, p)
    return out


class _RawDataset(Dataset):
    kind = ""

    def __init__(self, root: str | os.PathLike, intensity: float | str, transform: Callable | None):
        self.root = _resolve_dataset_dir(root, self.kind)
        self.intensity, self.folder = intensity_folder(intensity)
        image_root = self._image_root()
        self.image_dir = image_root / self.folder
        if not self.image_dir.is_dir():
            present = sorted(p.name for p in image_root.iterdir() if p.is_dir()) if image_root.is_dir() else []
            raise _layout_error(
                self.kind,
                Path(root),
                f"Missing intensity folder {self.image_dir} (intensity {self.intensity}); "
                f"present: {present or 'none'}.",
            )
        self.camera = _read_camera(self.root, self.kind)
        self.transform = transform
        self.names: list[str] = []
        self.files: list[Path] = []

    def __len__(self) -> int:
        return len(self.files)

    def _image_root(self) -> Path:
        return self.root / "images"

    def _raw(self, idx: int) -> torch.Tensor:
        arr = _read_mosaic(self.files[idx]).astype(np.float32)
        return torch.from_numpy(arr)[None]

    def _finish(self, sample: dict[str, Any]) -> dict[str, Any]:
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} items, intensity={self.intensity} "
            f"[{self.folder}], cfa={self.camera.cfa}, root={str(self.root)!r})"
        )


class RawMicroscopy(_RawDataset):
    """Raw-Microscopy (real or mini): white-blood-cell crops as Bayer mosaics.

    Args:
        root: the ``microscopy`` folder or a folder containing it (e.g. ``<data>/mini``,
            ``<data>/zenodo``).
        intensity: fraction of the light (1.0, 0.75, ..., 0.01) or a folder name
            such as ``"raw_scale100"``.
        transform: optional callable on the sample dict, returning a dict. Geometric
            transforms of a mosaic change its CFA phase: flip/rotate after demosaicing
            or by whole 2x2 cells.
        classes: class codes to keep, in label order (default: the paper's nine,
            :data:`drifthelpers.scenes.LEUKOCYTE_CLASSES`); label lines with other
            codes are skipped and counted in ``skipped``.
        exclude: file stems to skip (default: the one file the authors' loader drops).

    Items are dicts: ``raw`` float32 tensor (1, H, W) in DN, ``label`` int index into
    ``classes``, ``name`` file stem. Attributes: ``camera`` (:class:`drifthelpers.camera.Camera`),
    ``classes``, ``targets`` (labels of all items), ``names``, ``files``.

    Raises:
        DatasetLayoutError: root, intensity folder, label file or a listed image missing.
    """

    kind = "microscopy"

    def __init__(
        self,
        root: str | os.PathLike,
        intensity: float | str = 1.0,
        transform: Callable[[dict], dict] | None = None,
        *,
        classes: Sequence[str] | None = None,
        exclude: Iterable[str] = KNOWN_INVALID_MICROSCOPY,
    ) -> None:
        super().__init__(root, intensity, transform)
        if classes is None:
            from ..scenes import LEUKOCYTE_CLASSES

            classes = LEUKOCYTE_CLASSES
        self.classes: tuple[str, ...] = tuple(classes)
        label_path = self.root / "labels" / LABEL_FILE
        if not label_path.is_file():
            raise _layout_error(self.kind, Path(root), f"Missing label file {label_path}.")
        images = _list_images(self.image_dir, IMAGE_SUFFIXES)
        exclude = set(exclude)
        index = {c: i for i, c in enumerate(self.classes)}
        self.targets: list[int] = []
        self.skipped = 0
        missing = []
        for lineno, line in enumerate(label_path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{label_path}:{lineno}: expected '<stem> <class>', got {line!r}")
            stem, code = parts
            stem = stem.rsplit(".", 1)[0] if stem.lower().endswith((".tif", ".tiff")) else stem
            if code not in index or stem in exclude:
                self.skipped += 1
                continue
            if stem not in images:
                missing.append(stem)
                continue
            self.names.append(stem)
            self.files.append(images[stem])
            self.targets.append(index[code])
        if missing:
            raise _layout_error(
                self.kind,
                Path(root),
                f"{len(missing)} labelled image(s) missing from {self.image_dir}, e.g. "
                f"{', '.join(missing[:3])}.",
            )
        if not self.files:
            raise _layout_error(self.kind, Path(root), f"No labelled images in {self.image_dir}.")

    def class_counts(self) -> dict[str, int]:
        """Number of items per class code."""
        counts = np.bincount(self.targets, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, counts)}

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self._finish({"raw": self._raw(idx), "label": self.targets[idx], "name": self.names[idx]})


class RawDrone(_RawDataset):
    """Raw-Drone (real tiles or mini): aerial Bayer mosaics with binary car masks.

    Two layouts are read: the release's (``drone/images_tiles_256/raw_scaleXXX/`` with
    ``drone/masks_tiles_256/``; the full frames in ``images_full/`` are not tiles and are
    left alone) and the plain one (``drone/images/raw_scaleXXX/`` with ``drone/masks/``).
    Tiles are float32 or uint16 TIFF files, masks PNG or TIFF (bool or 0/255); a mask
    belongs to the tile whose stem its name contains (:func:`pair_masks`).

    Args:
        root: the ``drone`` folder or a folder containing it.
        intensity: fraction of the light or a folder name such as ``"raw_scale010"``.
        transform: optional callable on the sample dict, returning a dict (see
            :class:`RawMicroscopy` about the CFA phase).

    Items are dicts: ``raw`` float32 tensor (1, H, W) in DN, ``mask`` float32 tensor
    (1, H, W) with 1 on car pixels, ``name`` tile stem ``<frame>_<tile>``. Attributes:
    ``camera``, ``classes`` (``("background", "car")``), ``targets`` (1 for every tile:
    each tile holds a car, as in the paper), ``frames`` (frame id of every tile, for
    :func:`stratified_split` ``groups``), ``names``, ``files``, ``mask_files``.

    Raises:
        DatasetLayoutError: root, intensity folder, masks folder or a tile's mask missing.
    """

    kind = "drone"
    classes = ("background", "car")

    def __init__(
        self,
        root: str | os.PathLike,
        intensity: float | str = 1.0,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        super().__init__(root, intensity, transform)
        mask_dir = _drone_layout(self.root)[1]
        if not mask_dir.is_dir():
            hint = (
                " Full frames found in drone/frames: run tile_drone_frames() first."
                if (self.root / "frames").is_dir()
                else ""
            )
            raise _layout_error(self.kind, Path(root), f"Missing masks folder {mask_dir}.{hint}")
        images = _list_images(self.image_dir, IMAGE_SUFFIXES)
        paired, missing = pair_masks(images, _list_images(mask_dir, MASK_SUFFIXES))
        if missing:
            raise _layout_error(
                self.kind,
                Path(root),
                f"{len(missing)} tile(s) without a mask in {mask_dir}, e.g. {', '.join(missing[:3])}.",
            )
        if not images:
            raise _layout_error(self.kind, Path(root), f"No tiles in {self.image_dir}.")
        self.names = list(images)
        self.files = [images[s] for s in self.names]
        self.mask_files = [paired[s] for s in self.names]
        self.frames = [s.split("_", 1)[0] if "_" in s else s for s in self.names]
        self.targets = [1] * len(self.names)

    def _image_root(self) -> Path:
        return _drone_layout(self.root)[0]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        mask = torch.from_numpy((_read_mask(self.mask_files[idx]) > 0).astype(np.float32))[None]
        return self._finish({"raw": self._raw(idx), "mask": mask, "name": self.names[idx]})
