"""Raw data sets: generated mini sets, the Zenodo release, torch loaders and splits.

The paper's two data sets (Raw-Microscopy, Raw-Drone; Zenodo DOI 10.5281/zenodo.5235536)
are single-channel 16-bit Bayer mosaics at seven light intensities. This package gives one
folder layout for them and three ways to fill it:

* :func:`build_mini` / :func:`ensure_mini` generate small look-alike sets from a seed
  (procedural scenes from :mod:`drifthelpers.scenes` through the sensor model of
  :mod:`drifthelpers.sensor`), byte-identical for the same seed and parameters, with a
  ``manifest.json`` of SHA-256 sums so a damaged set is detected and rebuilt;
* :func:`download` fetches the real release from Zenodo with checksums from the
  record's own file listing (through pooch), extracts archives safely and normalises
  them into the same layout;
* files placed by hand in the same layout work too.

One module per step of the data path:

==========  ====================================================================
layout      data root, folder layout, mask pairing, intensity folders, errors
cameras     the camera values of the release (:data:`REAL_CAMERAS`)
mini        the generated mini sets (:func:`build_mini`, :func:`ensure_mini`)
loaders     the torch loaders (:class:`RawMicroscopy`, :class:`RawDrone`)
splits      reproducible stratified splits (:func:`stratified_split`)
tiling      full drone frames cut into tiles (:func:`tile_drone_frames`)
zenodo      the Zenodo download and safe extraction (:func:`download`)
verify      completeness checks and the paper-sized stand-in (``data verify``)
files       hashes, deterministic file bytes, atomic folder swaps (internal)
==========  ====================================================================

Layout (``<data>`` is :func:`data_root`; mini sets live in ``<data>/mini``, the real
release in ``<data>/zenodo``, so the two never collide)::

    <data>/mini/microscopy/                 <data>/mini/drone/
      camera.json                             camera.json
      manifest.json       (mini only)         manifest.json        (mini only)
      images/raw_scale100/<stem>.tiff         images/raw_scale100/<FF>_<TTTTT>.tiff
      images/raw_scale075/<stem>.tiff         images/raw_scale075/...
      ... raw_scale050, 025, 010, 005, 001    ... raw_scale050, 025, 010, 005, 001
      labels/Ma190c_annotations.dat           masks/<FF>_<TTTTT>.tif

Microscopy follows the Zenodo release (``"<stem> <class code>"`` per label line). For
the drone set the release ships the authors' 256x256 car tiles
(``drone/images_tiles_256/raw_scaleXXX/``, bool PNG masks in ``drone/masks_tiles_256/``)
and the full 3648x5472 frames (``drone/images_full/``, ``drone/masks_full/``); the
loader reads the tiles, named ``<frame>_<tile>`` (``FF_TTTTT``), so the frame id of every
tile is known and splits can keep all tiles of one frame together (the layout above,
``images/`` and ``masks/``, is read as well). :func:`tile_drone_frames` cuts full frames
into tiles when no tiles exist (``images_full/`` into ``images_tiles_256/``, or
``drone/frames/`` into ``images/`` and ``masks/``); :func:`download` calls it.

Generated images are uint16 mosaics (TIFF, uncompressed, one page) with uint8 0/255
masks; the release's float32 tiles and bool PNG masks are read as well.
``camera.json`` holds the :class:`drifthelpers.camera.Camera` values (CFA, black and
white level in DN, white-balance gains, colour matrix) that a data model needs
(``DatasetCamera`` is the same class); loaders fall back to the built-in
:data:`REAL_CAMERAS` constants for the real release when it is absent.

Example:
    >>> paths = ensure_mini(root=tmp, n_microscopy=18, n_drone=4, size=64)  # doctest: +SKIP
    >>> ds = RawMicroscopy(paths["microscopy"], intensity=0.25)              # doctest: +SKIP
    >>> ds[0]["raw"].shape                                                  # doctest: +SKIP
    torch.Size([1, 64, 64])
"""

from __future__ import annotations

from ..sensor import INTENSITY_FOLDERS, INTENSITY_LEVELS
from .cameras import REAL_CAMERAS, DatasetCamera
from .layout import (
    CAMERA_FILE,
    DATA_ENV_VAR,
    DRONE_FULL,
    DRONE_MASK_TILES_PREFIX,
    DRONE_MASKS_FULL,
    DRONE_TILES_PREFIX,
    IGNORED_FOLDERS,
    IMAGE_SUFFIXES,
    KINDS,
    KNOWN_INVALID_MICROSCOPY,
    LABEL_FILE,
    MANIFEST,
    MASK_SUFFIXES,
    ZENODO_BASE_URL,
    ZENODO_DOI,
    ZENODO_RECORD_ID,
    ZENODO_RECORD_URL,
    ZENODO_URL_ENV_VAR,
    DatasetLayoutError,
    DownloadError,
    UnsafeArchiveError,
    data_root,
    dataset_dir,
    expected_layout,
    intensity_folder,
    pair_masks,
)
from .loaders import RawDrone, RawMicroscopy
from .mini import GENERATOR_VERSION, MINI_DEFAULTS, build_mini, ensure_mini, mini_class_counts, verify_mini
from .splits import stratified_split
from .tiling import tile_drone_frames
from .verify import (
    PAPER_DRONE_TILES,
    PAPER_SIZE,
    STANDIN_DIR,
    Expected,
    IncompleteDataError,
    Report,
    build_standin,
    manifest_expectation,
    paper_expectation,
    require_complete,
    verify_dataset,
)
from .zenodo import EXTRACT_LIMITS, ZENODO_FILE_PATTERNS, download, safe_extract

__all__ = [
    "DATA_ENV_VAR",
    "ZENODO_URL_ENV_VAR",
    "ZENODO_DOI",
    "ZENODO_RECORD_ID",
    "ZENODO_RECORD_URL",
    "GENERATOR_VERSION",
    "MINI_DEFAULTS",
    "LABEL_FILE",
    "REAL_CAMERAS",
    "ZENODO_FILE_PATTERNS",
    "DatasetCamera",
    "DatasetLayoutError",
    "DownloadError",
    "UnsafeArchiveError",
    "data_root",
    "dataset_dir",
    "expected_layout",
    "intensity_folder",
    "mini_class_counts",
    "build_mini",
    "ensure_mini",
    "verify_mini",
    "RawMicroscopy",
    "RawDrone",
    "stratified_split",
    "download",
    "safe_extract",
    "tile_drone_frames",
    # completeness checks and the paper-sized stand-in (drifthelpers.datasets.verify)
    "STANDIN_DIR",
    "Expected",
    "Report",
    "IncompleteDataError",
    "verify_dataset",
    "require_complete",
    "build_standin",
    "paper_expectation",
    "manifest_expectation",
]

