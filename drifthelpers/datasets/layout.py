"""Where the data sets live and how their folders are laid out; the errors of this package.

:func:`data_root` finds the folder that holds ``mini/``, ``zenodo/`` and ``standin/``;
:func:`expected_layout` describes the folder tree the loaders read;
:func:`pair_masks` pairs drone tiles with masks as the authors' loader does;
:func:`intensity_folder` maps a light level to its ``raw_scaleXXX`` folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..sensor import INTENSITY_FOLDERS, INTENSITY_LEVELS

__all__ = [
    "DATA_ENV_VAR",
    "ZENODO_URL_ENV_VAR",
    "ZENODO_DOI",
    "ZENODO_RECORD_ID",
    "ZENODO_RECORD_URL",
    "LABEL_FILE",
    "DatasetLayoutError",
    "DownloadError",
    "UnsafeArchiveError",
    "data_root",
    "dataset_dir",
    "expected_layout",
    "intensity_folder",
    "pair_masks",
]

DATA_ENV_VAR = "DRIFTHELPERS_DATA"
"""Environment variable that overrides the default data root."""

ZENODO_URL_ENV_VAR = "DRIFTHELPERS_ZENODO_URL"
"""Environment variable with the Zenodo base URL (e.g. ``https://zenodo.org``)."""

ZENODO_DOI = "10.5281/zenodo.5235536"
ZENODO_RECORD_ID = 5235536
ZENODO_BASE_URL = "https://zenodo.org"
ZENODO_RECORD_URL = f"{ZENODO_BASE_URL}/api/records/{ZENODO_RECORD_ID}"
"""REST endpoint whose JSON lists the release's files with their MD5 sums."""

LABEL_FILE = "Ma190c_annotations.dat"
KINDS = ("microscopy", "drone")
MANIFEST = "manifest.json"
CAMERA_FILE = "camera.json"
IMAGE_SUFFIXES = (".tiff", ".tif", ".dng")
MASK_SUFFIXES = (".tif", ".tiff", ".png")
IGNORED_FOLDERS = ("processed_views",)
"""Folders of the release that hold no raw data (rendered views); never read or moved."""
DRONE_TILES_PREFIX = "images_tiles_"
DRONE_MASK_TILES_PREFIX = "masks_tiles_"
DRONE_FULL = "images_full"
DRONE_MASKS_FULL = "masks_full"

# Files in the real release that the authors' own loader skips.
KNOWN_INVALID_MICROSCOPY = ("Ma190c_lame3_zone13_composite_Mcropped_2",)


# --------------------------------------------------------------------------------------
# errors


class DatasetLayoutError(FileNotFoundError):
    """A data root is missing, or does not have the expected folder layout."""


class DownloadError(RuntimeError):
    """Fetching or unpacking the Zenodo release failed; the message says how to proceed."""


class UnsafeArchiveError(DownloadError):
    """An archive member would land outside the extraction folder (or is a link/device), or
    the archive would expand beyond the extraction limits (sizes, ratio, free space)."""


# --------------------------------------------------------------------------------------
# paths and layout


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Folder that holds ``mini/`` and ``zenodo/``.

    Resolution order: the ``root`` argument, the ``DRIFTHELPERS_DATA`` environment
    variable, ``<repository>/data`` when the package runs from a source checkout,
    and otherwise the user cache folder (``pooch.os_cache("drifthelpers")``).
    """
    if root is not None:
        return Path(root).expanduser().resolve()
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "data"
    import pooch

    return Path(pooch.os_cache("drifthelpers"))


def dataset_dir(kind: str, root: str | os.PathLike | None = None, *, source: str = "mini") -> Path:
    """Folder of one data set: ``<data>/<source>/<kind>``.

    Args:
        kind: ``"microscopy"`` or ``"drone"``.
        root: data root (see :func:`data_root`).
        source: ``"mini"`` (generated), ``"zenodo"`` (downloaded) or ``"standin"`` (the
            paper-sized simulated stand-in of :func:`drifthelpers.datasets.verify.build_standin`).
    """
    _check_kind(kind)
    if source not in ("mini", "zenodo", "standin"):
        raise ValueError(f"source must be 'mini', 'zenodo' or 'standin', got {source!r}")
    return data_root(root) / source / kind


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown data set {kind!r}; expected one of {KINDS}")


def expected_layout(kind: str) -> str:
    """The folder tree a loader expects, as text (used in error messages)."""
    _check_kind(kind)
    if kind == "microscopy":
        return (
            "microscopy/\n"
            "  camera.json                      (optional; built-in values otherwise)\n"
            "  images/raw_scale100/<stem>.tiff  (and raw_scale075 ... raw_scale001)\n"
            f"  labels/{LABEL_FILE}  ('<stem> <class code>' per line)"
        )
    return (
        "drone/\n"
        "  camera.json                                   (optional; built-in values otherwise)\n"
        "  images_tiles_256/raw_scale100/<NN>_<IIIII>.tif (and raw_scale075 ... raw_scale001; the release)\n"
        "  masks_tiles_256/<NN>_<IIIII>.png              (bool; a mask's name contains its tile's stem)\n"
        "  images_full/raw_scale100/, masks_full/         (full frames: tiled only when no tiles exist)\n"
        "or\n"
        "  images/raw_scale100/<frame>_<tile>.tiff       (and raw_scale075 ... raw_scale001)\n"
        "  masks/<frame>_<tile>.tif                      (uint8, car > 0; .png also read)"
    )


def _how_to_get(kind: str) -> str:
    name = "raw-microscopy" if kind == "microscopy" else "raw-drone"
    return (
        "Get the data with `python -m drifthelpers data mini` (generated mini sets, offline, "
        f"in <data>/mini) or `python -m drifthelpers data download {name}` (the Zenodo "
        f"release, DOI {ZENODO_DOI}, in <data>/zenodo). <data> is {data_root()}."
    )


def _layout_error(kind: str, root: Path, problem: str) -> DatasetLayoutError:
    tree = "\n".join("    " + line for line in expected_layout(kind).splitlines())
    return DatasetLayoutError(
        f"{problem}\nData root given: {root}\nExpected (the root may be the '{kind}' folder "
        f"itself or a folder containing it):\n{tree}\n{_how_to_get(kind)}"
    )


def _resolve_dataset_dir(root: str | os.PathLike, kind: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _layout_error(kind, root, f"The data root {root} does not exist (or is not a folder).")
    for cand in (root / kind, root):
        if (cand / "images").is_dir() or (kind == "drone" and _drone_tile_dirs(cand)):
            return cand
    if kind == "drone" and any((c / DRONE_FULL).is_dir() for c in (root / kind, root)):
        where = root / kind if (root / kind / DRONE_FULL).is_dir() else root
        raise _layout_error(
            kind, root, f"Only full frames under {where / DRONE_FULL}: cut them into tiles first with "
            f"drifthelpers.datasets.tile_drone_frames({str(where)!r})."
        )
    raise _layout_error(kind, root, f"No '{kind}/images' or 'images' folder under {root}.")


def _drone_tile_dirs(ds_dir: Path) -> list[Path]:
    """The authors' tile folders (``images_tiles_<N>``) of a drone folder, 256 first."""
    if not ds_dir.is_dir():
        return []
    found = [p for p in ds_dir.glob(DRONE_TILES_PREFIX + "*") if p.is_dir()]
    return sorted(found, key=lambda p: (p.name != DRONE_TILES_PREFIX + "256", p.name))


def _drone_layout(ds_dir: Path) -> tuple[Path, Path]:
    """``(image root holding raw_scaleXXX/, mask folder)`` of a drone folder.

    The release's layout (``images_tiles_256/`` with ``masks_tiles_256/``) wins over the
    plain one (``images/`` with ``masks/``); full frames (``images_full/``) are never read
    as tiles.
    """
    tiles = _drone_tile_dirs(ds_dir)
    if tiles:
        suffix = tiles[0].name[len(DRONE_TILES_PREFIX):]
        return tiles[0], ds_dir / (DRONE_MASK_TILES_PREFIX + suffix)
    return ds_dir / "images", ds_dir / "masks"


def pair_masks(stems: Iterable[str], masks: Mapping[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """Pair images with masks as the public loader does: the mask's name contains the image stem.

    An exact stem match wins; otherwise a mask whose stem contains the image stem, and,
    among several, the one where the stem is not followed by a letter or digit
    (``DJI_0001`` pairs with ``DJI_0001_mask``, not ``DJI_00012``).

    Returns:
        ``({image stem: mask path}, [image stems without a mask])``.

    Raises:
        DatasetLayoutError: an image stem matches several masks equally well.
    """
    paired: dict[str, Path] = {}
    missing: list[str] = []
    for stem in stems:
        if stem in masks:
            paired[stem] = masks[stem]
            continue
        hits = [m for m in masks if stem in m]
        if len(hits) > 1:
            bounded = [m for m in hits if not m[m.index(stem) + len(stem):][:1].isalnum()]
            hits = bounded if bounded else hits
        if len(hits) > 1:
            raise DatasetLayoutError(f"image {stem!r} matches several masks: {', '.join(sorted(hits)[:4])}")
        if hits:
            paired[stem] = masks[hits[0]]
        else:
            missing.append(stem)
    return paired, missing


def intensity_folder(intensity: float | str) -> tuple[float, str]:
    """Map an intensity (fraction of the light, or a folder name) to ``(level, folder)``.

    Example:
        >>> intensity_folder(0.25)
        (0.25, 'raw_scale025')
        >>> intensity_folder("raw_scale001")
        (0.01, 'raw_scale001')
    """
    if isinstance(intensity, str):
        key = intensity.strip().lower()
        for level, folder in zip(INTENSITY_LEVELS, INTENSITY_FOLDERS):
            if key == folder:
                return float(level), folder
        try:
            intensity = float(key)
        except ValueError:
            raise ValueError(
                f"unknown intensity {intensity!r}; expected one of {INTENSITY_FOLDERS} "
                f"or a level in {INTENSITY_LEVELS}"
            ) from None
    value = float(intensity)
    for level, folder in zip(INTENSITY_LEVELS, INTENSITY_FOLDERS):
        if math.isclose(value, level, rel_tol=1e-6, abs_tol=1e-9):
            return float(level), folder
    raise ValueError(f"intensity {intensity!r} is not one of the levels {INTENSITY_LEVELS}")
