"""The Zenodo release: download with checksums, safe extraction, the loader layout.

:func:`download` reads the record's file listing (names, URLs, MD5 sums), fetches the
files of one data set with pooch (each checked against the listed checksum), extracts
archives with :func:`safe_extract` (every member checked before anything is written),
sorts the files into the layout the loaders read and moves the finished folder into
place in one rename.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin

import numpy as np
import tifffile

from ..sensor import INTENSITY_FOLDERS
from .cameras import REAL_CAMERAS
from .files import _atomic_replace_dir, _clean_stale_siblings, _human, _json_bytes, _tmp_sibling
from .layout import (
    CAMERA_FILE,
    DRONE_FULL,
    DRONE_MASK_TILES_PREFIX,
    DRONE_MASKS_FULL,
    DRONE_TILES_PREFIX,
    IGNORED_FOLDERS,
    IMAGE_SUFFIXES,
    LABEL_FILE,
    ZENODO_BASE_URL,
    ZENODO_DOI,
    ZENODO_RECORD_ID,
    ZENODO_URL_ENV_VAR,
    DownloadError,
    UnsafeArchiveError,
    _drone_tile_dirs,
    data_root,
    expected_layout,
)
from .loaders import _list_images, _read_mosaic
from .tiling import tile_drone_frames

__all__ = ["EXTRACT_LIMITS", "ZENODO_FILE_PATTERNS", "download", "safe_extract"]

_TIMEOUT = 30.0


# safe extraction


def _safe_target(dest: Path, name: str) -> Path:
    norm = name.replace("\\", "/")
    if not norm or "\x00" in norm:
        raise UnsafeArchiveError(f"archive member with an empty or invalid name: {name!r}")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"archive member with an absolute path refused: {name!r}")
    parts = [p for p in PurePosixPath(norm).parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member leaving the target folder refused: {name!r}")
    target = dest.joinpath(*parts).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise UnsafeArchiveError(f"archive member leaving the target folder refused: {name!r}")
    return target


#: Default extraction limits, sized for the Zenodo release (archives of a few GB whose raw
#: data barely compress): expanded size in all and per member, expanded size over archive
#: size (checked once more than 1 MiB would be written), and space left free on the disk.
EXTRACT_LIMITS = {
    "max_total_bytes": 64 << 30,
    "max_member_bytes": 8 << 30,
    "max_ratio": 100.0,
    "min_free_bytes": 256 << 20,
}
_RATIO_EXEMPT_BYTES = 1 << 20


def _check_sizes(archive: Path, dest: Path, members: list[tuple[str, int]], limits: dict) -> None:
    """Refuse, before anything is written, an archive whose members would expand too far."""
    total = 0
    for name, size in members:
        if size > limits["max_member_bytes"]:
            raise UnsafeArchiveError(
                f"{archive}: member {name!r} would expand to {_human(size)}, more than the "
                f"{_human(limits['max_member_bytes'])} allowed per member (max_member_bytes)"
            )
        total += size
    if total > limits["max_total_bytes"]:
        raise UnsafeArchiveError(
            f"{archive}: would expand to {_human(total)}, more than the {_human(limits['max_total_bytes'])} "
            f"allowed (max_total_bytes); the largest member is {max(members, key=lambda m: m[1])[0]!r}"
        )
    packed = max(archive.stat().st_size, 1)
    if total > _RATIO_EXEMPT_BYTES and total > limits["max_ratio"] * packed:
        largest = max(members, key=lambda m: m[1])[0]
        raise UnsafeArchiveError(
            f"{archive}: would expand {total / packed:.0f}-fold ({_human(packed)} to {_human(total)}), more than "
            f"the {limits['max_ratio']:g}-fold allowed (max_ratio): a decompression bomb? largest member {largest!r}"
        )
    free = shutil.disk_usage(dest).free
    if total + limits["min_free_bytes"] > free:
        raise UnsafeArchiveError(
            f"{archive}: needs {_human(total)} but {dest} has {_human(free)} free (and "
            f"{_human(limits['min_free_bytes'])} must stay free, min_free_bytes)"
        )


def _check_clashes(archive: Path, entries: list[tuple[str, Path, bool]]) -> None:
    """Refuse members whose paths make one name both a file and a folder."""
    files = {target: name for name, target, is_dir in entries if not is_dir}
    for name, target, _ in entries:
        for parent in target.parents:
            if parent in files:
                raise UnsafeArchiveError(
                    f"{archive}: member {name!r} needs {files[parent]!r} to be a folder, but it is a file"
                )
    for name, target, is_dir in entries:
        if is_dir and target in files:
            raise UnsafeArchiveError(f"{archive}: {name!r} is both a file and a folder in the archive")


def _extract_zip(archive: Path, dest: Path, limits: dict) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        plan = []
        for info in zf.infolist():
            target = _safe_target(dest, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"symbolic link in zip archive refused: {info.filename!r}")
            plan.append((info, target))
        _check_clashes(archive, [(i.filename, t, i.is_dir()) for i, t in plan])
        _check_sizes(archive, dest, [(i.filename, i.file_size) for i, _ in plan if not i.is_dir()], limits)
        written = []
        for info, target in plan:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                # zipfile stops at the declared size (and checks the CRC), so the checks hold
                shutil.copyfileobj(src, out, 1 << 20)
            written.append(target)
    return written


def _extract_tar(archive: Path, dest: Path, limits: dict) -> list[Path]:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        entries = []
        for m in members:
            target = _safe_target(dest, m.name)
            if m.issym() or m.islnk():
                base = target.parent if m.issym() else dest
                link = m.linkname.replace("\\", "/")
                if link.startswith("/") or not (base / link).resolve().is_relative_to(dest.resolve()):
                    raise UnsafeArchiveError(f"link leaving the target folder refused: {m.name!r} -> {m.linkname!r}")
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"special file in archive refused: {m.name!r}")
            entries.append((m.name, target, m.isdir()))
        _check_clashes(archive, entries)
        _check_sizes(archive, dest, [(m.name, m.size) for m in members if m.isfile()], limits)
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tf.extractall(dest, members=members)
    return [dest / m.name for m in members if m.isfile()]


def safe_extract(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_total_bytes: int = EXTRACT_LIMITS["max_total_bytes"],
    max_member_bytes: int = EXTRACT_LIMITS["max_member_bytes"],
    max_ratio: float = EXTRACT_LIMITS["max_ratio"],
    min_free_bytes: int = EXTRACT_LIMITS["min_free_bytes"],
) -> list[Path]:
    """Extract a zip or tar archive into ``dest``, refusing anything unsafe.

    Every member is checked before anything is written: absolute paths, ``..``
    components, members resolving outside ``dest``, links whose target leaves ``dest``,
    devices and FIFOs, a name that is both a file and a folder, and sizes: the expanded
    size of a member and of the whole archive, the expansion ratio (expanded size over
    archive size, once more than 1 MiB would be written) and the space left free on the
    disk. Zip symlinks are refused.

    Args:
        archive: a ``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or ``.tar.xz``.
        dest: existing or new folder (use a temporary one and move afterwards).
        max_total_bytes: most bytes the archive may expand to (default 64 GiB).
        max_member_bytes: most bytes one member may expand to (default 8 GiB).
        max_ratio: most the archive may expand relative to its own size (default 100).
        min_free_bytes: bytes that must stay free on ``dest``'s disk afterwards (256 MiB).

    Returns:
        Paths of the extracted regular files.

    Raises:
        UnsafeArchiveError: a refused member or limit; the message names the archive and,
            where one is to blame, the member.
        DownloadError: neither a zip nor a tar archive.
    """
    archive, dest = Path(archive), Path(dest)
    limits = {"max_total_bytes": max_total_bytes, "max_member_bytes": max_member_bytes, "max_ratio": max_ratio,
              "min_free_bytes": min_free_bytes}
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, dest, limits)
        if tarfile.is_tarfile(archive):
            return _extract_tar(archive, dest, limits)
    except UnsafeArchiveError as exc:
        if str(exc).startswith(f"{archive}:"):
            raise
        raise UnsafeArchiveError(f"{archive}: {exc}") from None
    raise DownloadError(f"{archive} is neither a zip nor a tar archive")


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def _archive_stem(path: Path) -> str:
    name = path.name
    for ext in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


# --------------------------------------------------------------------------------------
# download

ZENODO_FILE_PATTERNS: dict[str, tuple[str, ...]] = {
    "raw-microscopy": ("*microscop*", "*Ma190c*", "*WhiteCells*"),
    "raw-drone": ("*drone*",),
}
"""Glob patterns (case-insensitive) selecting a data set's files in the record listing."""

_NAME_TO_KIND = {"raw-microscopy": "microscopy", "raw-drone": "drone"}


def _manual_instructions(kind: str, root: Path, patterns: Sequence[str]) -> str:
    tree = "\n".join("      " + line for line in expected_layout(kind).splitlines())
    return (
        "To place the files by hand:\n"
        f"  1. Open https://doi.org/{ZENODO_DOI} (https://zenodo.org/records/{ZENODO_RECORD_ID})\n"
        f"     and download the files matching {', '.join(patterns)}.\n"
        f"  2. Extract them so that {root / 'zenodo'} holds:\n{tree}\n"
        "     (drone: full frames may go to drone/frames/raw_scaleXXX/ and drone/frames/masks/;\n"
        "     then run drifthelpers.datasets.tile_drone_frames on the drone folder.)\n"
        "  3. Load with RawMicroscopy(<data>/zenodo) or RawDrone(<data>/zenodo).\n"
        "Offline, `python -m drifthelpers data mini` generates look-alike sets instead."
    )


def _record_files(record: Mapping[str, Any], record_url: str) -> list[dict[str, Any]]:
    files = record.get("files")
    if isinstance(files, Mapping):  # InvenioRDM style {"entries": {...}}
        files = list((files.get("entries") or {}).values())
    if not isinstance(files, list):
        raise DownloadError(f"the record at {record_url} has no file listing")
    out = []
    for f in files:
        key = f.get("key") or f.get("filename")
        links = f.get("links") or {}
        url = links.get("self") or links.get("content") or links.get("download")
        checksum = f.get("checksum", "")
        if not key or not url:
            continue
        out.append(
            {
                "key": key,
                "size": f.get("size") or f.get("filesize"),
                "checksum": checksum,
                "url": urljoin(record_url, url),
            }
        )
    return out


def _known_hash(checksum: str, key: str) -> str:
    if not checksum or ":" not in checksum:
        raise DownloadError(f"the record lists no checksum for {key}; refusing an unverified file")
    algo, value = checksum.split(":", 1)
    if algo.lower() not in ("md5", "sha1", "sha256", "sha512") or not value:
        raise DownloadError(f"unsupported checksum {checksum!r} for {key}")
    return f"{algo.lower()}:{value}"


def _move_tree_contents(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        target = dst / p.name
        if target.exists() and p.is_dir() and target.is_dir():
            _move_tree_contents(p, target)
        else:
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(p, target)


def _scope(src: Path, word: str) -> list[Path]:
    """Top-most folders whose name contains ``word`` (an archive holding both sets), else src."""
    hits = sorted(p for p in src.rglob("*") if p.is_dir() and word in p.name.lower())
    top = [p for p in hits if not any(q != p and p.is_relative_to(q) for q in hits)]
    return top or [src]


def _ignored(path: Path) -> bool:
    return any(part.lower() in IGNORED_FOLDERS for part in path.parts)


def _rglob_dirs(roots: Sequence[Path], name: str) -> list[Path]:
    """Folders called ``name`` under ``roots``, outside :data:`IGNORED_FOLDERS`."""
    return sorted(p for r in roots for p in r.rglob(name) if p.is_dir() and not _ignored(p.relative_to(r)))


def _normalise_microscopy(src: Path, out: Path) -> None:
    roots = _scope(src, "microscop")
    labels = sorted(p for r in roots for p in r.rglob(LABEL_FILE) if p.is_file())
    labels = labels or sorted(p for p in src.rglob(LABEL_FILE) if p.is_file())
    if not labels:
        raise DownloadError(f"no {LABEL_FILE} in the downloaded microscopy files")
    (out / "labels").mkdir(parents=True, exist_ok=True)
    os.replace(labels[0], out / "labels" / LABEL_FILE)
    found = 0
    for folder in INTENSITY_FOLDERS:
        for d in _rglob_dirs(roots, folder):
            _move_tree_contents(d, out / "images" / folder)
            found += 1
    if not found:
        raise DownloadError("no raw_scaleXXX image folders in the downloaded microscopy files")


def _normalise_drone_release(roots: Sequence[Path], out: Path, tile: int, progress: bool) -> bool:
    """Move the release's drone folders (tiles and full frames) into ``out`` as they are.

    Returns False when ``roots`` hold neither ``images_tiles_*`` nor ``images_full``. The
    authors' tiles are kept with their names; the full frames are tiled only when the
    release holds no tiles.
    """
    names = [DRONE_FULL, DRONE_MASKS_FULL]
    found = {}
    for r in roots:
        for p in sorted(r.rglob("*")):
            rel = p.relative_to(r)
            if p.is_dir() and not _ignored(rel) and (
                p.name in names or p.name.startswith((DRONE_TILES_PREFIX, DRONE_MASK_TILES_PREFIX))
            ):
                found.setdefault(p.name, []).append(p)
    if not any(n.startswith(DRONE_TILES_PREFIX) or n == DRONE_FULL for n in found):
        return False
    for name, dirs in found.items():
        for d in dirs:
            _move_tree_contents(d, out / name)
    if not _drone_tile_dirs(out):
        tile_drone_frames(out, tile, progress=progress)
    return True


def _normalise_drone(src: Path, out: Path, tile: int, progress: bool) -> None:
    roots = _scope(src, "drone")
    if _normalise_drone_release(roots, out, tile, progress):
        return
    mask_dirs = [p for r in roots for p in r.rglob("*")
                 if p.is_dir() and "mask" in p.name.lower() and not _ignored(p.relative_to(r))]
    int_dirs = {f: _rglob_dirs(roots, f) for f in INTENSITY_FOLDERS}
    if not mask_dirs or not any(int_dirs.values()):
        raise DownloadError("no raw_scaleXXX and mask folders in the downloaded drone files")
    first = next(p for ps in int_dirs.values() for p in ps)
    sample = next(iter(_list_images(first, IMAGE_SUFFIXES).values()), None)
    is_frames = sample is not None and max(_image_shape(sample)) > 2 * tile
    base = out / "frames" if is_frames else out
    for d in mask_dirs:
        _move_tree_contents(d, base / "masks")
    for folder, dirs in int_dirs.items():
        for d in dirs:
            _move_tree_contents(d, (out / "frames" / folder) if is_frames else (out / "images" / folder))
    if is_frames:
        tile_drone_frames(out, tile, progress=progress)


def _image_shape(path: Path) -> tuple[int, ...]:
    if path.suffix.lower() in (".tif", ".tiff", ".dng"):
        with tifffile.TiffFile(path) as tf:
            return max((p.shape for p in tf.pages), key=lambda s: int(np.prod(s)))
    return _read_mosaic(path).shape  # pragma: no cover


def download(
    name: str,
    root: str | os.PathLike | None = None,
    record_url: str | None = None,
    progress: bool = True,
    *,
    timeout: float = _TIMEOUT,
    patterns: Sequence[str] | None = None,
    keep_archives: bool = False,
    tile: int = 256,
) -> Path:
    """Download one data set of the Zenodo release into ``<root>/zenodo/<kind>``.

    The record's JSON listing gives the file names, URLs and MD5 sums; files whose
    name matches ``patterns`` (default :data:`ZENODO_FILE_PATTERNS`) are fetched with
    pooch (checked against the listed checksum; a mismatch or broken transfer removes
    the partial file), archives are extracted safely into a temporary folder, sorted
    into the loader layout (for the drone set full frames are tiled) and moved into
    place in one rename. ``camera.json`` (built-in :data:`REAL_CAMERAS`) and
    ``download.json`` (the record's file list) are written alongside.

    Args:
        name: ``"raw-microscopy"`` or ``"raw-drone"``.
        root: data root (see :func:`data_root`).
        record_url: URL of the record JSON. Default: ``$DRIFTHELPERS_ZENODO_URL`` (a
            base URL such as ``https://zenodo.org``) + ``/api/records/5235536``.
        progress: progress bars and a summary line.
        timeout: seconds for connecting and for each read.
        patterns: glob patterns selecting the record's files for this data set.
        keep_archives: keep the downloaded archives in ``<root>/zenodo/.downloads``.
        tile: drone tile size when full frames are tiled.

    Returns:
        The data set folder.

    Raises:
        DownloadError: no network, HTTP error, checksum mismatch, broken transfer,
            unexpected archive contents; the message explains how to place the files
            by hand. :class:`UnsafeArchiveError` for a malicious archive.
    """
    if name not in _NAME_TO_KIND:
        raise ValueError(f"unknown data set {name!r}; expected one of {tuple(_NAME_TO_KIND)}")
    kind = _NAME_TO_KIND[name]
    root_path = data_root(root)
    patterns = tuple(patterns) if patterns is not None else ZENODO_FILE_PATTERNS[name]
    if record_url is None:
        base = os.environ.get(ZENODO_URL_ENV_VAR, ZENODO_BASE_URL).rstrip("/")
        record_url = f"{base}/api/records/{ZENODO_RECORD_ID}"
    help_text = _manual_instructions(kind, root_path, patterns)
    chosen = _choose_files(name, record_url, patterns, timeout, help_text)
    zen = root_path / "zenodo"
    target = zen / kind
    downloads = zen / ".downloads"
    _clean_stale_siblings(target)
    zen.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target, "extract")
    fetched: list[Path] = []
    try:
        _fetch_files(chosen, downloads, timeout, progress, help_text, fetched)
        out = _unpack(fetched, tmp, kind, tile, progress)
        (out / "download.json").write_bytes(_json_bytes({"doi": ZENODO_DOI, "record_url": record_url,
                                                          "files": chosen}))
        _atomic_replace_dir(out, target)
    except UnsafeArchiveError:
        for p in fetched:
            p.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not keep_archives:
            for p in fetched:
                p.unlink(missing_ok=True)
        if downloads.is_dir() and not any(downloads.iterdir()):
            downloads.rmdir()
    if progress:
        n = sum(1 for _ in target.rglob("*") if _.is_file())
        print(f"Downloaded {name} ({len(chosen)} file(s) from {record_url}): {n} files -> {target}")
    return target


def _choose_files(name: str, record_url: str, patterns: Sequence[str], timeout: float,
                  help_text: str) -> list[dict[str, Any]]:
    """The record's files (key, size, checksum, url) whose names match ``patterns``."""
    import requests

    try:
        resp = requests.get(record_url, timeout=timeout, headers={"Accept": "application/json"})
        resp.raise_for_status()
        record = resp.json()
    except (requests.RequestException, ValueError) as err:
        raise DownloadError(
            f"Could not read the Zenodo record {record_url}: {err}\n{help_text}"
        ) from err
    listing = _record_files(record, record_url)
    chosen = [f for f in listing if any(fnmatch.fnmatch(f["key"].lower(), p.lower()) for p in patterns)]
    if not chosen:
        raise DownloadError(
            f"No file of the record matches {patterns} for {name}; the record lists "
            f"{[f['key'] for f in listing]}. Pass patterns=... to choose.\n{help_text}"
        )
    return chosen


def _fetch_files(chosen: list[dict[str, Any]], downloads: Path, timeout: float, progress: bool,
                 help_text: str, fetched: list[Path]) -> None:
    """Download each chosen file into ``downloads`` with pooch, checked against its checksum.

    Each finished file is appended to ``fetched`` at once, so the caller can remove the
    files of a download that fails half way.
    """
    import pooch
    import requests

    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)
    for f in chosen:
        known = _known_hash(f["checksum"], f["key"])
        try:
            local = pooch.retrieve(
                f["url"],
                known_hash=known,
                fname=Path(f["key"]).name,
                path=downloads,
                downloader=downloader,
                progressbar=progress,
            )
        except (requests.RequestException, ValueError, OSError) as err:
            raise DownloadError(f"Download of {f['key']} from {f['url']} failed: {err}\n{help_text}") from err
        fetched.append(Path(local))


def _unpack(fetched: Sequence[Path], tmp: Path, kind: str, tile: int, progress: bool) -> Path:
    """Extract the fetched files under ``tmp`` and sort them into ``tmp/out`` (the loader
    layout, with the release's ``camera.json``); returns ``tmp/out``."""
    staging = tmp / "staging"
    for local in fetched:
        if _is_archive(local):
            safe_extract(local, staging / _archive_stem(local))
        else:
            (staging / "files").mkdir(parents=True, exist_ok=True)
            shutil.copy2(local, staging / "files" / local.name)
    out = tmp / "out"
    out.mkdir()
    if kind == "microscopy":
        _normalise_microscopy(staging, out)
    else:
        _normalise_drone(staging, out, tile, progress)
    (out / CAMERA_FILE).write_bytes(_json_bytes(REAL_CAMERAS[kind].to_dict()))
    shutil.rmtree(staging)
    return out
