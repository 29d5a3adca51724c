"""Is a data set complete? ``data verify``, and a stand-in at the paper's sizes.

:func:`verify_dataset` checks a Raw-Microscopy or Raw-Drone folder (the Zenodo release,
a generated set, or files placed by hand) against what the paper documents: the number
of crops and tiles, the class counts, the 256x256 size, the pixel types, all seven
intensity folders, images without a label or mask and labels or masks without an
image, and the SHA-256 sums of a ``manifest.json`` when the folder has one. It returns
a :class:`Report` (a table and a list of named problems); ``python -m drifthelpers data
verify`` prints it and exits 1 when anything is wrong.

:func:`build_standin` writes simulated sets in the release's layout with the paper's
sizes (940 crops of 256x256 in the paper's class counts; 548 drone tiles of 256x256
from 12 frames, named ``NN_IIIII``), so the paper profile can run without the network.
It reuses :func:`drifthelpers.datasets.build_mini` and rearranges its output; ``scale``
builds a proportional slice (for tests) whose manifest records its own expectation.

Example:
    >>> report = verify_dataset(root, "microscopy")   # doctest: +SKIP
    >>> print(report.table()); report.ok               # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import tifffile

from ..scenes import CLASS_COUNTS_PAPER, LEUKOCYTE_CLASSES
from ..sensor import INTENSITY_FOLDERS
from .files import _atomic_replace_dir, _json_bytes, _sha256_file, _tmp_sibling, _write_png_mask
from .layout import (
    DRONE_MASK_TILES_PREFIX,
    DRONE_TILES_PREFIX,
    IMAGE_SUFFIXES,
    KINDS,
    KNOWN_INVALID_MICROSCOPY,
    LABEL_FILE,
    MANIFEST,
    MASK_SUFFIXES,
    DatasetLayoutError,
    _drone_layout,
    _resolve_dataset_dir,
    data_root,
    pair_masks,
)
from .loaders import _list_images
from .mini import build_mini, verify_mini

__all__ = ["PAPER_DRONE_TILES", "PAPER_SIZE", "Expected", "Report", "paper_expectation",
           "manifest_expectation", "verify_dataset", "build_standin", "STANDIN_DIR", "IncompleteDataError",
           "require_complete"]

PAPER_DRONE_TILES = 548
"""Drone tiles with a car pixel that the paper reports (12 frames, 256x256 tiles)."""
PAPER_SIZE = 256
PAPER_DRONE_FRAMES = 12
STANDIN_DIR = "standin"
"""Folder of the paper-sized stand-in inside the data root (``<data>/standin/<kind>``)."""
RAW_DTYPES = ("uint16", "float32")
MASK_DTYPES = ("bool", "uint8")


@dataclass(frozen=True)
class Expected:
    """What a complete data set holds.

    Attributes:
        kind: ``"microscopy"`` or ``"drone"``.
        n: crops (microscopy, labelled and loadable) or tiles (drone) per intensity.
        size: side of every crop or tile in pixels.
        class_counts: crops per class code (microscopy), else ``None``.
        source: where the numbers come from (``"paper"`` or the manifest's path).
    """

    kind: str
    n: int
    size: int = PAPER_SIZE
    class_counts: dict | None = None
    source: str = "paper"


def paper_expectation(kind: str) -> Expected:
    """The release as the paper describes it (940 crops in 9 classes; 548 tiles)."""
    if kind == "microscopy":
        return Expected(kind, sum(CLASS_COUNTS_PAPER.values()), PAPER_SIZE, dict(CLASS_COUNTS_PAPER))
    if kind == "drone":
        return Expected(kind, PAPER_DRONE_TILES, PAPER_SIZE)
    raise ValueError(f"unknown data set {kind!r}; expected 'microscopy' or 'drone'")


def manifest_expectation(ds_dir: str | os.PathLike) -> Expected | None:
    """The expectation a stand-in's ``manifest.json`` records (``None`` when it has none)."""
    path = Path(ds_dir) / MANIFEST
    try:
        exp = json.loads(path.read_text())["expected"]
        return Expected(exp["kind"], int(exp["n"]), int(exp["size"]), exp.get("class_counts"), str(path))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class Report:
    """Outcome of :func:`verify_dataset`: a table of checks and the problems found."""

    kind: str
    root: Path
    expected: Expected
    rows: list = field(default_factory=list)  # (check, expected, found, ok)
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, name: str, expected, found, ok: bool, problem: str = "") -> None:
        self.rows.append((name, str(expected), str(found), bool(ok)))
        if not ok:
            self.problems.append(problem or f"{name}: expected {expected}, found {found}")

    def table(self) -> str:
        """Markdown table of the checks, then the verdict."""
        lines = [f"{self.kind} at {self.root} (expected from {self.expected.source})", "",
                 "| check | expected | found | ok |", "|---|---|---|---|"]
        lines += [f"| {c} | {e} | {f} | {'yes' if ok else 'NO'} |" for c, e, f, ok in self.rows]
        verdict = "complete" if self.ok else f"{len(self.problems)} problem(s)"
        return "\n".join(lines + ["", f"{self.kind}: {verdict}"])


def _shape_dtype(path: Path) -> tuple[tuple, str]:
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as im:
            return (im.height, im.width), ("bool" if im.mode == "1" else "uint8")
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        return tuple(page.shape), str(page.dtype)


def _some(names, k: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _check_files(report: Report, label: str, files: list[Path], size: int, dtypes: tuple) -> None:
    """Size and pixel type of every file; problems name the files relative to the data set."""
    shapes, types = Counter(), Counter()
    bad_size, bad_type, unreadable = [], [], []
    for p in files:
        name = p.relative_to(report.root).as_posix() if p.is_relative_to(report.root) else str(p)
        try:
            shape, dtype = _shape_dtype(p)
        except (OSError, ValueError, SyntaxError, tifffile.TiffFileError) as exc:  # PIL raises SyntaxError too
            unreadable.append(f"{name} ({type(exc).__name__}: {exc})")
            continue
        shapes[shape] += 1
        types[dtype] += 1
        if shape != (size, size):
            bad_size.append(name)
        if dtype not in dtypes:
            bad_type.append(name)
    if unreadable:
        report.problems.append(f"{label}: {len(unreadable)} file(s) not readable: {_some(unreadable, 3)}")
    found = ", ".join(f"{h}x{w}" for (h, w, *_) in shapes) or "-"
    report.check(f"{label} size", f"{size}x{size}", found, not bad_size,
                 f"{label}: {len(bad_size)} file(s) not {size}x{size}, e.g. {_some(bad_size, 3)}")
    report.check(f"{label} dtype", "/".join(dtypes), ", ".join(sorted(types)) or "-", not bad_type,
                 f"{label}: {len(bad_type)} file(s) with pixel types {sorted(set(types) - set(dtypes))} "
                 f"(allowed {'/'.join(dtypes)}), e.g. {_some(bad_type, 3)}")


def _intensity_sets(report: Report, image_root: Path) -> dict[str, dict[str, Path]]:
    """Images per present intensity folder; missing folders and uneven name sets are problems."""
    present = {f: _list_images(image_root / f, IMAGE_SUFFIXES) for f in INTENSITY_FOLDERS
               if (image_root / f).is_dir()}
    missing = [f for f in INTENSITY_FOLDERS if f not in present]
    report.check("intensity folders", len(INTENSITY_FOLDERS), len(present), not missing,
                 f"missing intensity folder(s) under {image_root}: {', '.join(missing)}")
    union = set().union(*present.values()) if present else set()
    for folder, images in present.items():
        gap = union - set(images)
        if gap:
            report.problems.append(f"{folder}: {len(gap)} image(s) that other intensities have are missing: {_some(gap)}")
    return present


def _verify_microscopy(report: Report, ds_dir: Path) -> None:
    exp = report.expected
    present = _intensity_sets(report, ds_dir / "images")
    label_path = ds_dir / "labels" / LABEL_FILE
    if not label_path.is_file():
        report.check("label file", LABEL_FILE, "missing", False, f"missing label file {label_path}")
        return
    labels: dict[str, str] = {}
    for lineno, line in enumerate(label_path.read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) != 2:
            if parts:
                report.problems.append(f"{label_path}:{lineno}: expected '<stem> <class>', got {line!r}")
            continue
        stem = parts[0].rsplit(".", 1)[0] if parts[0].lower().endswith((".tif", ".tiff")) else parts[0]
        labels[stem] = parts[1]
    skipped = set(KNOWN_INVALID_MICROSCOPY)
    unknown = sorted(s for s, c in labels.items() if c not in LEUKOCYTE_CLASSES and s not in skipped)
    if unknown:
        report.problems.append(f"{len(unknown)} label(s) with an unknown class code: {_some(unknown)}")
    for folder, images in present.items():
        no_image = {s for s in labels if s not in images and s not in skipped}
        no_label = {s for s in images if s not in labels and s not in skipped}
        if no_image:
            report.problems.append(f"{folder}: {len(no_image)} label(s) without an image: {_some(no_image)}")
        if no_label:
            report.problems.append(f"{folder}: {len(no_label)} image(s) without a label: {_some(no_label)}")
    usable = {s: c for s, c in labels.items() if s not in skipped and c in LEUKOCYTE_CLASSES}
    report.check("labelled crops", exp.n, len(usable), len(usable) == exp.n)
    counts = Counter(usable.values())
    for c in LEUKOCYTE_CLASSES:
        want = (exp.class_counts or {}).get(c)
        if want is not None:
            report.check(f"class {c}", want, counts.get(c, 0), counts.get(c, 0) == want)
    for folder, images in present.items():
        report.check(f"{folder} images", exp.n, len(images), len(images) == exp.n)
    files = [p for images in present.values() for p in images.values()]
    _check_files(report, "images", files, exp.size, RAW_DTYPES)


def _verify_drone(report: Report, ds_dir: Path) -> None:
    exp = report.expected
    image_root, mask_dir = _drone_layout(ds_dir)
    present = _intensity_sets(report, image_root)
    masks = _list_images(mask_dir, MASK_SUFFIXES) if mask_dir.is_dir() else {}
    report.check("mask folder", mask_dir.name, mask_dir.name if mask_dir.is_dir() else "missing",
                 mask_dir.is_dir(), f"missing mask folder {mask_dir}")
    union = sorted(set().union(*present.values())) if present else []
    try:
        paired, no_mask = pair_masks(union, masks)
    except DatasetLayoutError as exc:
        report.problems.append(str(exc))
        paired, no_mask = {}, []
    if no_mask and masks:
        report.problems.append(f"{len(no_mask)} tile(s) without a mask in {mask_dir.name}: {_some(no_mask)}")
    used = {p.stem for p in paired.values()}
    no_tile = [m for m in masks if m not in used]
    if no_tile:
        report.problems.append(f"{len(no_tile)} mask(s) without a tile in {image_root.name}: {_some(no_tile)}")
    frames = {s.split("_", 1)[0] for s in union}
    report.rows.append(("frames (name prefix)", "-", str(len(frames)), True))
    for folder, images in present.items():
        report.check(f"{folder} tiles", exp.n, len(images), len(images) == exp.n)
    report.check("masks", exp.n, len(masks), len(masks) == exp.n)
    _check_files(report, "tiles", [p for images in present.values() for p in images.values()], exp.size, RAW_DTYPES)
    _check_files(report, "masks", list(masks.values()), exp.size, MASK_DTYPES)


def verify_dataset(root: str | os.PathLike, kind: str, expected: Expected | str | None = None,
                   checksums: bool = True) -> Report:
    """Check one data set for completeness.

    Args:
        root: the ``microscopy``/``drone`` folder or a folder containing it.
        kind: ``"microscopy"`` or ``"drone"``.
        expected: an :class:`Expected`, ``"paper"`` (the paper's sizes), ``"manifest"``
            (the expectation recorded in the folder's ``manifest.json``, as a stand-in
            slice has), or ``None``: the manifest's when there is one, else the paper's.
        checksums: also check the SHA-256 of every file a ``manifest.json`` lists.

    Returns:
        A :class:`Report`; ``report.ok`` is True when nothing is missing or wrong.

    Raises:
        DatasetLayoutError: ``root`` does not exist (a usage error rather than a problem
            of the data).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"the data root {root} does not exist (or is not a folder)")
    try:
        ds_dir = _resolve_dataset_dir(root, kind)
    except DatasetLayoutError as exc:
        report = Report(kind, root, paper_expectation(kind))
        report.problems.append(str(exc).splitlines()[0])
        return report
    if expected is None or expected == "manifest":
        exp = manifest_expectation(ds_dir)
        if exp is None and expected == "manifest":
            raise DatasetLayoutError(f"{ds_dir} has no manifest.json with an expectation")
        expected = exp or paper_expectation(kind)
    elif expected == "paper":
        expected = paper_expectation(kind)
    report = Report(kind, ds_dir, expected)
    (_verify_microscopy if kind == "microscopy" else _verify_drone)(report, ds_dir)
    if checksums and (ds_dir / MANIFEST).is_file():
        bad = verify_mini(ds_dir, "full")
        report.check("checksums (manifest.json)", "all match", f"{len(bad)} differ" if bad else "all match",
                     not bad, f"manifest.json: {len(bad)} file(s) missing or changed: {_some(bad)}")
    return report


# --------------------------------------------------------------------------------------
# the paper-sized stand-in


def _standin_sizes(kind: str, scale: float) -> dict:
    """build_mini arguments for a stand-in of ``scale`` times the paper's size."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if kind == "microscopy":
        full = sum(CLASS_COUNTS_PAPER.values())
        if scale == 1:  # no floor: exactly the paper's counts
            return {"n_microscopy": full, "min_per_class": 0}
        return {"n_microscopy": max(len(LEUKOCYTE_CLASSES), round(full * scale)), "min_per_class": 1}
    n = max(2, round(PAPER_DRONE_TILES * scale))
    return {"n_drone": n, "n_drone_frames": min(n, PAPER_DRONE_FRAMES)}


def _to_release_layout(ds_dir: Path, kind: str, size: int) -> None:
    """Move a mini drone set's files where the release keeps them (tiles .tif, bool PNG masks)."""
    if kind != "drone":
        return
    tiles = ds_dir / f"{DRONE_TILES_PREFIX}{size}"
    for folder in INTENSITY_FOLDERS:
        (tiles / folder).mkdir(parents=True)
        for p in sorted((ds_dir / "images" / folder).iterdir()):
            os.replace(p, tiles / folder / f"{p.stem}.tif")
    masks = ds_dir / f"{DRONE_MASK_TILES_PREFIX}{size}"
    masks.mkdir()
    for p in sorted((ds_dir / "masks").iterdir()):
        _write_png_mask(masks / f"{p.stem}.png", tifffile.imread(p) > 0)
    shutil.rmtree(ds_dir / "images")
    shutil.rmtree(ds_dir / "masks")


def _rewrite_manifest(ds_dir: Path, kind: str, size: int, scale: float) -> Expected:
    man = json.loads((ds_dir / MANIFEST).read_text())
    cfg = man["config"]
    exp = Expected(kind, int(cfg["n"]), size, cfg.get("class_counts"), "manifest.json")
    files = {}
    for p in sorted(ds_dir.rglob("*")):
        rel = p.relative_to(ds_dir).as_posix()
        if p.is_file() and rel != MANIFEST:
            files[rel] = {"size": p.stat().st_size, "sha256": _sha256_file(p)}
    man["files"] = files
    man["config"]["standin_scale"] = scale
    man["layout"] = "Zenodo release (drone: images_tiles_<size>/, masks_tiles_<size>/)"
    man["expected"] = {"kind": kind, "n": exp.n, "size": size, "class_counts": exp.class_counts}
    (ds_dir / MANIFEST).write_bytes(_json_bytes(man))  # inside the unpublished build folder
    return exp


def _intact(target: Path, scale: float, seed: int, size: int) -> bool:
    try:
        cfg = json.loads((target / MANIFEST).read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    same = (cfg.get("standin_scale"), cfg.get("seed"), cfg.get("size")) == (scale, seed, size)
    return same and not verify_mini(target, "quick")


def build_standin(root: str | os.PathLike | None = None, which=KINDS, scale: float | dict = 1.0, seed: int = 0,
                  size: int = PAPER_SIZE, progress: bool = True, workers: int | None = None,
                  force: bool = False) -> dict[str, Path]:
    """Simulated data sets at the paper's sizes, in the release's layout, under ``root``.

    ``root/microscopy``: 940 crops (the paper's class counts), ``root/drone``: 548 tiles
    from 12 frames named ``NN_IIIII`` in ``images_tiles_256/`` with bool PNG masks in
    ``masks_tiles_256/``; every image at the seven intensities, ``size`` x ``size`` px
    (about 3 minutes on one core, 1.4 GB). A ``manifest.json`` lists SHA-256 sums and the
    expectation :func:`verify_dataset` checks. Full frames (``images_full``) are not made.

    Args:
        root: where the sets go (default ``<data>/standin``).
        which: ``"microscopy"``, ``"drone"`` or both.
        scale: fraction of the paper's counts (1 = the paper's; smaller for tests), or
            ``{kind: fraction}``. A slice keeps at least one crop per class and two tiles
            (from up to 12 frames).
        seed: generator seed.
        size: crop and tile side in pixels.
        progress: progress bars and summary lines.
        workers: generator processes (see :func:`drifthelpers.datasets.build_mini`).
        force: rebuild a set that exists; without it an intact set with the same
            settings is reused and anything else is refused (never overwritten).

    Returns:
        ``{kind: folder}``.
    """
    root = Path(root).expanduser().resolve() if root is not None else data_root() / STANDIN_DIR
    which = (which,) if isinstance(which, str) else tuple(which)
    out = {}
    for kind in which:
        kind_scale = float(scale[kind]) if isinstance(scale, dict) else float(scale)
        sizes = _standin_sizes(kind, kind_scale)
        target = root / kind
        if target.exists() and not force:
            if _intact(target, kind_scale, seed, size):
                out[kind] = target
                if progress:
                    print(f"Reusing stand-in {kind}: {target}")
                continue
            raise FileExistsError(f"{target} exists and is not an intact stand-in built with these settings; "
                                  "pass force=True (--force) to replace it")
        work = _tmp_sibling(target, "tmp")
        try:
            built = build_mini(work, seed=seed, which=kind, size=size, progress=progress, workers=workers,
                                 **sizes)[kind]
            _to_release_layout(built, kind, size)
            exp = _rewrite_manifest(built, kind, size, kind_scale)
            _atomic_replace_dir(built, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if progress:
            print(f"Built stand-in {kind}: {exp.n} {'crops' if kind == 'microscopy' else 'tiles'}, "
                  f"{size}x{size} px, 7 intensities -> {target}")
        out[kind] = target
    return out


class IncompleteDataError(ValueError):
    """A data set failed :func:`verify_dataset`; the message lists every problem."""


def require_complete(root: str | os.PathLike, kind: str, expected: Expected | str | None = None) -> Report:
    """:func:`verify_dataset`, raising :class:`IncompleteDataError` unless the set is complete.

    Notebooks call it before training on downloaded data or on the stand-in.
    """
    report = verify_dataset(root, kind, expected)
    if not report.ok:
        raise IncompleteDataError(
            f"{kind} data at {report.root} is incomplete (expected from {report.expected.source}):\n  - "
            + "\n  - ".join(report.problems)
            + f"\nCheck it with: python -m drifthelpers data verify --root {report.root} {kind}"
        )
    print(f"{kind}: verified complete ({report.expected.n} images x {len(INTENSITY_FOLDERS)} intensities, "
          f"expected from {report.expected.source})")
    return report
