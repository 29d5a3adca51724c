"""Bad input and faults at the package's file boundaries: a corpus of cases every reader,
cache and extractor is tried against.

Checkpoint cache (checksums, scratch loading), the compiled-kernel cache folder (no planted
code runs, private folders only, stable names), archive extraction limits, TIFF headers that
declare more than the file holds, distinct messages for each way a file can be unreadable,
and the atomic writers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import marshal
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from drifthelpers import datasets, fastisp, isp
from drifthelpers.datasets import UnsafeArchiveError, loaders, safe_extract
from drifthelpers.fileio import default_file_mode
from drifthelpers.models import build_task_model
from drifthelpers.raw import (
    CorruptRawFileError,
    NotAMosaicError,
    NotARawFileError,
    RawError,
    RawFileNotFoundError,
    RawImage,
    RawImageTooLargeError,
    UnreadableRawFileError,
    read_raw,
    read_tiff,
    write_dng,
)
from drifthelpers.training import CheckpointCache

# ----------------------------------------------------------------------------- checkpoint cache


def _seeded_model(num_classes: int = 3, seed: int = 7):
    torch.manual_seed(seed)
    return build_task_model("small_cnn", num_classes)


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # in the middle: tensor data, not the zip directory
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _drop_checksum(path: Path) -> None:  # an entry written without a checksum
    js = path.with_suffix(".json")
    js.write_text(json.dumps(json.loads(js.read_text())["meta"]))


def _other_architecture(path: Path) -> None:  # a valid, checksummed entry of another model
    CheckpointCache(path.parent).save(path.stem, {"task": build_task_model("small_cnn", 5)}, {"n": 5})


def _missing_module(path: Path) -> None:
    CheckpointCache(path.parent).save(path.stem, {"other": build_task_model("small_cnn", 3)}, {})


DAMAGES = {
    "bit flip": (_flip_bit, "SHA-256"),
    "truncated": (_truncate, "SHA-256"),
    "no checksum": (_drop_checksum, "no checksum"),
    "another architecture": (_other_architecture, "does not fit"),
    "missing module": (_missing_module, "does not fit"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_checkpoint_is_a_reported_miss_and_leaves_the_model_untouched(tmp_path, damage):
    cache = CheckpointCache(tmp_path)
    trained = _seeded_model(seed=1)
    cache.save("k", {"task": trained}, {"history": [0.5]})
    spoil, reason = DAMAGES[damage]
    spoil(tmp_path / "k.pt")
    model = _seeded_model(seed=7)
    fresh = {k: v.clone() for k, v in _seeded_model(seed=7).state_dict().items()}
    with pytest.warns(RuntimeWarning, match=reason) as record:
        assert cache.load("k", {"task": model}) is None
    assert any(str(tmp_path / "k") in str(w.message) for w in record)  # names the file
    for name, value in model.state_dict().items():
        assert torch.equal(value, fresh[name]), f"{name} was changed by a refused checkpoint"


def test_checkpoint_records_its_checksum_and_loads_only_when_it_matches(tmp_path):
    cache = CheckpointCache(tmp_path)
    trained = _seeded_model(seed=1)
    cache.save("k", {"task": trained}, {"history": [0.5]})
    record = json.loads((tmp_path / "k.json").read_text())
    assert record["checkpoint_sha256"] == hashlib.sha256((tmp_path / "k.pt").read_bytes()).hexdigest()
    model = _seeded_model(seed=7)
    assert cache.load("k", {"task": model}) == {"history": [0.5]}
    for a, b in zip(trained.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    for f in tmp_path.iterdir():  # written through drifthelpers.fileio: no leftovers, usual mode
        assert not f.name.endswith(".part")
        assert f.stat().st_mode & 0o777 == default_file_mode()


# ----------------------------------------------------------------------------- kernel cache folder


@pytest.fixture
def kernel_folder(tmp_path, monkeypatch):
    folder = tmp_path / "kernels"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("DRIFTHELPERS_KERNEL_CACHE", str(folder))
    fastisp._demosaic_kernel.cache_clear()
    yield folder
    fastisp._demosaic_kernel.cache_clear()


needs_numba = pytest.mark.skipif(not fastisp.available(), reason="numba is not importable")


@needs_numba
def test_planted_bytecode_in_the_kernel_cache_is_not_executed(kernel_folder, tmp_path):
    kernel, outputs, _ = fastisp._demosaic_kernel("RGGB", isp.tables._BILINEAR_KERNELS)
    name = kernel.py_func.__module__
    source = kernel_folder / f"{name}.py"
    assert source.read_text() == fastisp._demosaic_source(outputs)
    marker = tmp_path / "planted-code-ran"
    evil = compile(f"open({str(marker)!r}, 'w').close()\ndef kernel(*a):\n    pass\n", str(source), "exec")
    # bytecode stamped with the source's time and size, as Python's import system expects
    st = source.stat()
    pyc = Path(importlib.util.cache_from_source(str(source)))
    pyc.parent.mkdir(mode=0o755, exist_ok=True)
    header = importlib.util.MAGIC_NUMBER + struct.pack("<III", 0, int(st.st_mtime) & 0xFFFFFFFF,
                                                       st.st_size & 0xFFFFFFFF)
    pyc.write_bytes(header + marshal.dumps(evil))
    fastisp._demosaic_kernel.cache_clear()
    sys.modules.pop(name, None)
    kernel2, _, _ = fastisp._demosaic_kernel("RGGB", isp.tables._BILINEAR_KERNELS)
    assert not marker.exists(), "bytecode planted in the kernel cache folder was executed"
    assert kernel2.py_func.__code__.co_filename == str(source)


def _chmod(mode):
    return lambda folder: folder.chmod(mode)


def _writable_pycache(folder):
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__").chmod(0o777)


def _foreign_owner(folder):
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    os.chown(folder, 65534, 65534)


@needs_numba
@pytest.mark.parametrize("make_unsafe, why", [
    (_chmod(0o777), "writable by group or others"),
    (_chmod(0o770), "writable by group or others"),
    (_writable_pycache, "__pycache__ is writable"),
    (_foreign_owner, "belongs to uid 65534"),
])
def test_kernel_cache_folder_not_private_to_the_user_is_refused(kernel_folder, make_unsafe, why):
    make_unsafe(kernel_folder)
    with pytest.warns(RuntimeWarning, match=why):
        assert fastisp._kernel_folder() is None
    with pytest.warns(RuntimeWarning, match="kernel cache folder refused"):
        kernel, _, _ = fastisp._demosaic_kernel("GRBG", isp.tables._BILINEAR_KERNELS)
    assert callable(kernel)
    assert not list(kernel_folder.glob("*.py")), "a module was written into a refused folder"


@needs_numba
def test_fresh_kernel_cache_folder_is_private_under_a_group_writable_umask(tmp_path, monkeypatch):
    folder = tmp_path / "new" / "kernels"
    monkeypatch.setenv("DRIFTHELPERS_KERNEL_CACHE", str(folder))
    previous = os.umask(0o002)
    try:
        assert fastisp._kernel_folder() == folder
    finally:
        os.umask(previous)
    for path in (folder, folder / "__pycache__"):  # where Numba keeps the compiled code
        assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)
    assert fastisp._kernel_folder() == folder  # and accepted again by the next process


@pytest.mark.slow
@needs_numba
def test_kernel_module_name_does_not_depend_on_the_hash_seed(tmp_path):
    code = textwrap.dedent("""
        from drifthelpers import fastisp, isp
        kernel = fastisp._demosaic_kernel("RGGB", isp.tables._BILINEAR_KERNELS)[0]
        print(kernel.py_func.__module__)
    """)
    names = set()
    for seed in ("0", "4"):  # two seeds under which a set of the fast-math flags iterates differently
        env = dict(os.environ, PYTHONHASHSEED=seed, DRIFTHELPERS_KERNEL_CACHE=str(tmp_path / f"k{seed}"))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        names.add(out.stdout.strip())
    assert len(names) == 1, f"module names differ between hash seeds: {names}"


# ----------------------------------------------------------------------------- archive limits


def _archive(tmp_path: Path, kind: str, members: dict[str, bytes]) -> Path:
    if kind == "zip":
        path = tmp_path / "a.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        path = tmp_path / "a.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


ARCHIVE_CASES = {
    # name: (members, keyword limits, expected message part, member named)
    "zip bomb (default ratio)": ({"ok.txt": b"fine", "data/bomb.bin": bytes(8 << 20)}, {}, "max_ratio", "bomb.bin"),
    "member too large": ({"ok.txt": b"fine", "big.bin": os.urandom(3000)}, {"max_member_bytes": 2000},
                         "max_member_bytes", "big.bin"),
    "total too large": ({"a.bin": os.urandom(700), "b.bin": os.urandom(800)}, {"max_total_bytes": 1000},
                        "max_total_bytes", "b.bin"),
    "ratio set low": ({"z.bin": bytes(4 << 20)}, {"max_ratio": 50}, "max_ratio", "z.bin"),
    "file and folder clash": ({"a": b"file", "a/b.txt": b"inside"}, {}, "is a file", "a/b.txt"),
}


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
@pytest.mark.parametrize("case", list(ARCHIVE_CASES))
def test_archive_beyond_the_limits_is_refused_before_writing(tmp_path, kind, case):
    members, limits, message, member = ARCHIVE_CASES[case]
    archive = _archive(tmp_path, kind, members)
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=message) as info:
        safe_extract(archive, dest, **limits)
    assert str(archive) in str(info.value) and member in str(info.value)
    assert not [p for p in dest.rglob("*") if p.is_file()], "something was written before the refusal"


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_refused_when_the_disk_would_be_full(tmp_path, kind, monkeypatch):
    archive = _archive(tmp_path, kind, {"x.bin": os.urandom(5000)})
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=4000))
    with pytest.raises(UnsafeArchiveError, match="free") as info:
        safe_extract(archive, tmp_path / "out", min_free_bytes=0)
    assert str(archive) in str(info.value)
    assert not (tmp_path / "out" / "x.bin").exists()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_within_the_limits_is_extracted(tmp_path, kind):
    data = os.urandom(3000)
    archive = _archive(tmp_path, kind, {"d/x.bin": data, "y.txt": b"y"})
    written = safe_extract(archive, tmp_path / "out", max_member_bytes=3000, max_total_bytes=3001)
    assert sorted(p.name for p in written) == ["x.bin", "y.txt"]
    assert (tmp_path / "out" / "d" / "x.bin").read_bytes() == data


def test_file_that_is_no_archive_is_named(tmp_path):
    path = tmp_path / "data.zip"
    path.write_bytes(b"not an archive")
    with pytest.raises(datasets.DownloadError, match="neither a zip nor a tar archive") as info:
        safe_extract(path, tmp_path / "out")
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- TIFF headers


def _tiff_claiming(path: Path, height: int, width: int, bigtiff: bool) -> Path:
    """A real 32x32 uint16 TIFF whose header is patched to declare ``height`` x ``width``."""
    tifffile.imwrite(path, np.zeros((32, 32), np.uint16), photometric="minisblack", bigtiff=bigtiff)
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        spots = [(tags[code].valueoffset, tags[code].dtype) for code in (256, 257)]
    data = bytearray(path.read_bytes())
    for (offset, dtype), value in zip(spots, (width, height)):
        fmt = {3: "<H", 4: "<I", 16: "<Q"}[int(dtype)]
        data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))
    return path


def _dataset_tiff(tmp_path: Path, name: str, height: int, width: int, bigtiff: bool) -> Path:
    """Such a TIFF as a mosaic of a data set (a camera.json above it)."""
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "camera.json").write_text(json.dumps(datasets.REAL_CAMERAS["microscopy"].to_dict()))
    return _tiff_claiming(tmp_path / "images" / name, height, width, bigtiff)


READERS = {
    "read_raw": read_raw,
    "read_tiff": read_tiff,
    "load_raw_file (data-set TIFF)": isp.load_raw_file,
    "data-set mosaic loader": loaders._read_mosaic,
    "data-set mask loader": loaders._read_mask,
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("bigtiff", [True, False], ids=["bigtiff", "tiff"])
@pytest.mark.parametrize("size, error, message", [
    (100_000, RawImageTooLargeError, "100000x100000 image"),
    (20_000, RawImageTooLargeError, "20000x20000 image"),
    (12_000, CorruptRawFileError, "declares a 12000x12000 image"),
])
def test_tiff_header_larger_than_the_file_is_refused_before_allocating(tmp_path, reader, bigtiff, size, error,
                                                                        message):
    path = _dataset_tiff(tmp_path, "m.tiff", size, size, bigtiff)
    tracemalloc.start()
    try:
        with pytest.raises(error, match=message) as info:
            READERS[reader](path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB allocated before the header was refused"


def test_max_pixels_is_a_parameter(tmp_path):
    path = tmp_path / "ok.tif"
    tifffile.imwrite(path, np.ones((40, 30), np.uint16))
    assert read_tiff(path).shape == (40, 30)
    with pytest.raises(RawImageTooLargeError, match="30x40 image"):
        read_tiff(path, max_pixels=1000)


# ----------------------------------------------------------------------------- distinct messages


def _dng(path: Path) -> Path:
    raw = np.random.default_rng(0).integers(64, 1000, (32, 48)).astype(np.uint16)
    return write_dng(RawImage(raw=raw, cfa="RGGB", black_level=(64,) * 4, white_level=1023.0), path)


def _truncated_dng(tmp_path):
    path = _dng(tmp_path / "cut.dng")
    path.write_bytes(path.read_bytes()[:-600])
    return path


def _rgb_tiff(tmp_path):
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    return path


def _too_large(tmp_path):
    return _dng(tmp_path / "big.dng"), {"max_pixels": 1000}


def _dangling_link(tmp_path):
    (tmp_path / "x.dng").symlink_to(tmp_path / "gone.dng")
    return tmp_path / "x.dng"


def _link_loop(tmp_path):
    (tmp_path / "a.dng").symlink_to(tmp_path / "b.dng")
    (tmp_path / "b.dng").symlink_to(tmp_path / "a.dng")
    return tmp_path / "a.dng"


MESSAGE_CASES = {
    # name: (make the file, expected error, message part, unexpected message parts)
    "truncated": (_truncated_dng, CorruptRawFileError, "truncated", ()),
    "valid RGB TIFF": (_rgb_tiff, NotAMosaicError, "an RGB TIFF image \\(32x32x3", ("corrupt", "truncated")),
    "too large": (_too_large, RawImageTooLargeError, "48x32 image", ("corrupt",)),
    "symbolic link loop": (_link_loop, UnreadableRawFileError, "symbolic link loop", ("no such file",)),
    "missing": (lambda d: d / "nope.dng", RawFileNotFoundError, "no such file", ()),
    "dangling link": (_dangling_link, RawFileNotFoundError, "symbolic link to a missing file", ()),
}


@pytest.mark.parametrize("case", list(MESSAGE_CASES))
def test_each_unreadable_file_gets_its_own_message(tmp_path, case):
    make, error, message, not_in = MESSAGE_CASES[case]
    made = make(tmp_path)
    path, kwargs = made if isinstance(made, tuple) else (made, {})
    with pytest.raises(error, match=message) as info:
        read_raw(path, **kwargs)
    text = str(info.value)
    assert text.startswith(str(path)) and not any(word in text for word in not_in)
    others = [e for e in (CorruptRawFileError, NotARawFileError, RawImageTooLargeError, UnreadableRawFileError,
                          RawFileNotFoundError) if not issubclass(error, e)]
    assert not isinstance(info.value, tuple(others))


def test_render_of_a_symbolic_link_loop_is_not_no_such_file(tmp_path):
    path = _link_loop(tmp_path)
    with pytest.raises(UnreadableRawFileError, match="symbolic link loop"):
        isp.load_raw_file(path)


def test_render_of_an_rgb_tiff_says_it_is_not_a_mosaic(tmp_path):
    with pytest.raises(NotAMosaicError, match="an RGB TIFF image") as info:
        isp.load_raw_file(_rgb_tiff(tmp_path))
    assert "camera.json" not in str(info.value) and "corrupt" not in str(info.value)


_AS_NOBODY = textwrap.dedent("""
    import os, sys
    import rawpy, tifffile  # imported while the interpreter's files are readable
    from drifthelpers import raw
    os.setgid(65534)
    os.setuid(65534)
    try:
        raw.read_raw(sys.argv[1])
    except raw.RawError as exc:
        print(type(exc).__name__, exc)
""")


def test_file_without_read_permission_is_not_called_corrupt():
    folder = Path(tempfile.mkdtemp(prefix="drifthelpers-perm-"))
    try:
        folder.chmod(0o755)
        path = _dng(folder / "secret.dng")
        path.chmod(0o000)
        if os.geteuid() != 0:
            with pytest.raises(UnreadableRawFileError, match="permission denied") as info:
                read_raw(path)
            text = f"{type(info.value).__name__} {info.value}"
        else:  # root reads everything: ask as an unprivileged user, in a child process
            out = subprocess.run([sys.executable, "-c", _AS_NOBODY, str(path)], capture_output=True, text=True,
                                 timeout=120)
            assert out.returncode == 0, out.stderr
            text = out.stdout.strip()
        assert text.startswith(f"UnreadableRawFileError {path}: permission denied"), text
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- data-set loaders name the file


def _bad_tiff(path: Path) -> Path:
    tifffile.imwrite(path, np.zeros((64, 64), np.uint16))
    path.write_bytes(path.read_bytes()[:-1000])
    return path


def _rgb_mosaic(tmp_path):
    return _rgb_tiff(tmp_path).rename(tmp_path / "m.tiff")


def _text_mosaic(tmp_path):
    (tmp_path / "m.tiff").write_text("hello")
    return tmp_path / "m.tiff"


def _folder_mosaic(tmp_path):
    (tmp_path / "m.tiff").mkdir()
    return tmp_path / "m.tiff"


def _corrupt_png(tmp_path):
    (tmp_path / "k.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    return tmp_path / "k.png"


LOADER_CASES = {
    "truncated mosaic": (loaders._read_mosaic, lambda d: _bad_tiff(d / "m.tiff")),
    "RGB mosaic": (loaders._read_mosaic, _rgb_mosaic),
    "not a TIFF mosaic": (loaders._read_mosaic, _text_mosaic),
    "a folder as mosaic": (loaders._read_mosaic, _folder_mosaic),
    "truncated TIFF mask": (loaders._read_mask, lambda d: _bad_tiff(d / "k.tif")),
    "corrupt PNG mask": (loaders._read_mask, _corrupt_png),
    "missing PNG mask": (loaders._read_mask, lambda d: d / "k.png"),
}


@pytest.mark.parametrize("case", list(LOADER_CASES))
def test_data_set_file_errors_name_the_file(tmp_path, case):
    loader, make = LOADER_CASES[case]
    path = make(tmp_path)
    with pytest.raises((RawError, ValueError)) as info:
        loader(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", ["[1, 2]", '{"cfa": "RGGB"}', "{not json"])
def test_bad_camera_json_names_the_file(tmp_path, content):
    (tmp_path / "camera.json").write_text(content)
    with pytest.raises(ValueError, match="camera.json"):
        loaders._read_camera(tmp_path, "microscopy")


def test_data_set_item_with_a_damaged_file_names_it(tiny_micro, tmp_path):
    root = tmp_path / "microscopy"
    shutil.copytree(tiny_micro.root, root)
    ds = datasets.RawMicroscopy(root)
    victim = ds.files[1]
    victim.write_bytes(victim.read_bytes()[:200])
    assert ds[0]["raw"].shape[-2:] == (64, 64)
    with pytest.raises(RawError, match="truncated") as info:
        ds[1]
    assert str(victim) in str(info.value)


# ----------------------------------------------------------------------------- atomic writers


def test_writers_leave_no_temporary_files_and_use_the_usual_mode(tmp_path):
    from drifthelpers import forensics, optimisation

    out = forensics.save_json({"a": 1.5}, tmp_path / "f" / "env.json")
    optimisation._write_json(tmp_path / "o" / "run.json", {"b": [1, 2]})
    (tmp_path / "d").mkdir()
    dng = _dng(tmp_path / "d" / "x.dng")
    with pytest.raises(FileExistsError):
        write_dng(read_raw(dng), dng, overwrite=False)
    assert json.loads(out.read_text()) == {"a": 1.5}
    assert json.loads((tmp_path / "o" / "run.json").read_text()) == {"b": [1, 2]}
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert not f.name.endswith(".part") and f.stat().st_mode & 0o777 == default_file_mode()
    with pytest.raises(TypeError):
        forensics.save_json({"a": object()}, out)  # unserialisable: the old file stays whole
    assert json.loads(out.read_text()) == {"a": 1.5}
