"""Atomic file writes: a file is either absent, the old version, or complete.

Every writer of the package goes through these helpers, so that an interrupted run never
leaves a half-written result, two writers never share a temporary name, and every file
gets the mode an ordinary ``open(..., "w")`` would give it (``0o666`` less the umask),
also when the temporary file came from :func:`tempfile.mkstemp` (which creates ``0o600``).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = atomic_write_json(d / "r.json", {"a": 1})
    >>> atomic_write_text(d / "r.json", "x", overwrite=False)
    Traceback (most recent call last):
    ...
    FileExistsError: ...r.json exists; ...
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = [
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "default_file_mode",
]

_UMASK_LOCK = threading.Lock()
_UMASK: int | None = None


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file here: ``0o666`` less the umask."""
    global _UMASK
    with _UMASK_LOCK:
        if _UMASK is None:
            current = os.umask(0o022)
            os.umask(current)
            _UMASK = current
    return 0o666 & ~_UMASK


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    # A hard link creates the name only if it does not exist: exclusive and atomic.
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; refusing to overwrite it") from None
    except OSError:
        # File systems without hard links: check, then rename (a small race remains).
        if path.exists():
            raise FileExistsError(f"{path} exists; refusing to overwrite it") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; move it to ``path`` when the block ends.

    For writers that need a file name (PIL, tifffile, ``torch.save``). The temporary file
    is removed if the block raises; ``path`` is then untouched.

    Args:
        path: the final file.
        overwrite: if False, raise :class:`FileExistsError` when ``path`` exists (checked
            before the work and again, atomically, when the result is moved into place).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        _commit(tmp, path, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write_with(path: str | os.PathLike, write: Callable[[Any], None], mode: str,
                overwrite: bool) -> Path:
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a :class:`Path`."""
    return _write_with(path, lambda fh: fh.write(data), "wb", overwrite)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1,
                      overwrite: bool = True, default: Callable[[Any], Any] | None = None) -> Path:
    """Serialise ``obj`` as JSON (a trailing newline) and write it atomically.

    The object is serialised before the file is touched, so a value JSON cannot hold
    raises with the old file intact.
    """
    text = json.dumps(obj, indent=indent, default=default) + "\n"
    return atomic_write_text(path, text, overwrite=overwrite)
