"""Small file helpers of the data-set builders: hashes, deterministic file bytes, folder swaps.

Generated files must be byte-identical for the same seed, so TIFF and JSON bytes are made
here without timestamps or other metadata. A data set is built in a hidden sibling folder
(:func:`_tmp_sibling`, named with the builder's pid so a dead builder's leftovers are
found) and moved into place in one rename (:func:`_atomic_replace_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import tifffile


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _tiff_bytes(array: np.ndarray) -> bytes:
    """Deterministic single-page, uncompressed, metadata-free TIFF bytes."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, photometric="minisblack", metadata=None, compression=None)
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data), hashlib.sha256(data).hexdigest()


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tmp_sibling(target: Path, tag: str) -> Path:
    """A fresh hidden folder next to ``target`` whose name records our pid."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _clean_stale_siblings(target: Path) -> None:
    """Remove temp folders next to ``target`` left by processes that no longer run."""
    if not target.parent.is_dir():
        return
    pat = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old|extract)-(\d+)-[0-9a-f]{{8}}$")
    for p in target.parent.iterdir():
        m = pat.match(p.name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


def _atomic_replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished ``tmp`` folder to ``target``, replacing an old one safely."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path):
    """Hold an exclusive lock on ``lock_path`` (the ``filelock`` package: every OS).

    Serialises concurrent builders of the same mini set (parallel sweep jobs start
    at the same moment): the second waits, then finds the set intact and reuses it.
    """
    from filelock import FileLock

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        yield


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"  # pragma: no cover


def _write_png_mask(path: Path, mask: np.ndarray) -> None:
    """A bool mask as a 1-bit PNG (as the release stores its tile masks)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
