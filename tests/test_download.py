"""End-to-end tests of the Zenodo download against a real HTTP server on loopback.

The server (``http.server.ThreadingHTTPServer`` on 127.0.0.1, port 0) serves a fake
Zenodo record: a JSON listing with MD5 checksums plus the files. Nothing else on the
network is touched; every request has a bounded timeout.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from drifthelpers import datasets as D
from drifthelpers.datasets import (
    DownloadError,
    RawDrone,
    RawMicroscopy,
    UnsafeArchiveError,
    download,
    safe_extract,
)

TIMEOUT = 5.0


# --------------------------------------------------------------------------------------
# the fake Zenodo server


class FakeZenodo:
    """Serves ``/api/records/5235536`` and ``/files/<key>/content``.

    ``files`` maps key -> bytes that are listed (checksummed) in the record;
    ``served`` optionally maps key -> different bytes to send instead;
    ``truncate`` holds keys whose transfer is cut short (Content-Length too large).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.served: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 (http.server API)
                fake.requests.append(self.path)
                if self.path == f"/api/records/{D.ZENODO_RECORD_ID}":
                    return self._send(json.dumps(fake.record()).encode(), "application/json")
                prefix = "/files/"
                if self.path.startswith(prefix) and self.path.endswith("/content"):
                    key = self.path[len(prefix) : -len("/content")]
                    if key in fake.files:
                        body = fake.served.get(key, fake.files[key])
                        if key in fake.truncate:
                            self.send_response(200)
                            self.send_header("Content-Type", "application/octet-stream")
                            self.send_header("Content-Length", str(len(body) + 100_000))
                            self.end_headers()
                            self.wfile.write(body[: len(body) // 2])
                            self.wfile.flush()
                            self.close_connection = True
                            return None
                        return self._send(body, "application/octet-stream")
                self.send_error(404)
                return None

            def _send(self, body: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def record_url(self) -> str:
        return f"{self.base}/api/records/{D.ZENODO_RECORD_ID}"

    def record(self) -> dict:
        return {
            "id": D.ZENODO_RECORD_ID,
            "doi": D.ZENODO_DOI,
            "files": [
                {
                    "key": key,
                    "size": len(data),
                    "checksum": "md5:" + hashlib.md5(data).hexdigest(),
                    "links": {"self": f"{self.base}/files/{key}/content"},
                }
                for key, data in self.files.items()
            ],
        }


@pytest.fixture()
def zenodo():
    fake = FakeZenodo()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        fake.thread.join(timeout=TIMEOUT)


# --------------------------------------------------------------------------------------
# tiny data to serve


def _zip_dir(folder: Path, prefix: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{prefix}/{p.relative_to(folder).as_posix()}")
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_microscopy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-mini")
    paths = D.build_mini(
        root, seed=3, which="microscopy", n_microscopy=9, size=64, progress=False, workers=1, min_per_class=1
    )
    return paths["microscopy"]


@pytest.fixture(scope="session")
def microscopy_zip(tiny_microscopy) -> bytes:
    return _zip_dir(tiny_microscopy, "microscopy")


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------------------
# tests


def test_success_microscopy_lands_in_layout_and_loads(zenodo, microscopy_zip, tiny_microscopy, tmp_path):
    zenodo.files["Raw-Microscopy.zip"] = microscopy_zip
    zenodo.files["unrelated-notes.pdf"] = b"not ours"
    target = download("raw-microscopy", root=tmp_path, record_url=zenodo.record_url, progress=False, timeout=TIMEOUT)
    assert target == tmp_path.resolve() / "zenodo" / "microscopy"
    assert (target / "labels" / D.LABEL_FILE).is_file()
    for folder in D.INTENSITY_FOLDERS:
        assert len(list((target / "images" / folder).glob("*.tiff"))) == 9
    # only the matching file was fetched, and archives are not kept by default
    assert not any("unrelated" in r for r in zenodo.requests)
    assert not (tmp_path / "zenodo" / ".downloads").exists()
    # the camera metadata of the real release is written for the loaders
    cam = json.loads((target / "camera.json").read_text())
    assert cam["black_level"] == list(D.REAL_CAMERAS["microscopy"].black_level)
    assert json.loads((target / "download.json").read_text())["doi"] == D.ZENODO_DOI

    ds = RawMicroscopy(tmp_path / "zenodo", intensity="raw_scale050")
    ref = RawMicroscopy(tiny_microscopy, intensity=0.5)
    assert ds.names == ref.names and ds.targets == ref.targets
    assert ds.camera == D.REAL_CAMERAS["microscopy"]
    np.testing.assert_array_equal(ds[0]["raw"].numpy(), ref[0]["raw"].numpy())


def test_base_url_from_environment(zenodo, microscopy_zip, tmp_path, monkeypatch):
    zenodo.files["raw_microscopy.zip"] = microscopy_zip
    monkeypatch.setenv(D.ZENODO_URL_ENV_VAR, zenodo.base)
    monkeypatch.setenv(D.DATA_ENV_VAR, str(tmp_path / "envroot"))
    target = download("raw-microscopy", progress=False, timeout=TIMEOUT)
    assert target == (tmp_path / "envroot").resolve() / "zenodo" / "microscopy"
    assert len(RawMicroscopy(target)) == 9


def test_checksum_mismatch_leaves_nothing(zenodo, microscopy_zip, tmp_path):
    zenodo.files["Raw-Microscopy.zip"] = microscopy_zip
    zenodo.served["Raw-Microscopy.zip"] = microscopy_zip[:-10] + b"0123456789"
    with pytest.raises(DownloadError, match="(?i)hash|checksum"):
        download("raw-microscopy", root=tmp_path, record_url=zenodo.record_url, progress=False, timeout=TIMEOUT)
    assert _files_under(tmp_path) == []
    assert not (tmp_path / "zenodo" / "microscopy").exists()


def test_interrupted_transfer_leaves_no_partial_file(zenodo, microscopy_zip, tmp_path):
    zenodo.files["Raw-Microscopy.zip"] = microscopy_zip
    zenodo.truncate.add("Raw-Microscopy.zip")
    with pytest.raises(DownloadError, match="Raw-Microscopy.zip"):
        download("raw-microscopy", root=tmp_path, record_url=zenodo.record_url, progress=False, timeout=TIMEOUT)
    assert _files_under(tmp_path) == []
    assert not (tmp_path / "zenodo" / "microscopy").exists()


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/drifthelpers-evil.txt", "a/../../evil.txt"])
def test_malicious_zip_is_refused(zenodo, microscopy_zip, tmp_path, member):
    buf = io.BytesIO(microscopy_zip)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(member, "pwned")
    zenodo.files["Raw-Microscopy.zip"] = buf.getvalue()
    root = tmp_path / "root"
    with pytest.raises(UnsafeArchiveError, match="refused"):
        download("raw-microscopy", root=root, record_url=zenodo.record_url, progress=False, timeout=TIMEOUT)
    assert not (tmp_path / "evil.txt").exists() and not (root / "evil.txt").exists()
    assert not Path("/tmp/drifthelpers-evil.txt").exists()
    assert _files_under(root) == []
    assert [p.name for p in tmp_path.iterdir()] == ["root"]


def test_offline_gives_manual_instructions(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/records/{D.ZENODO_RECORD_ID}"
    with pytest.raises(DownloadError) as info:
        download("raw-drone", root=tmp_path, record_url=url, progress=False, timeout=TIMEOUT)
    msg = str(info.value)
    assert "by hand" in msg and "zenodo.org/records/5235536" in msg and D.ZENODO_DOI in msg
    assert str(tmp_path.resolve() / "zenodo") in msg and "masks/<frame>_<tile>.tif" in msg
    assert _files_under(tmp_path) == []


def test_no_matching_file_lists_the_record(zenodo, tmp_path):
    zenodo.files["readme.txt"] = b"hello"
    with pytest.raises(DownloadError, match="readme.txt"):
        download("raw-drone", root=tmp_path, record_url=zenodo.record_url, progress=False, timeout=TIMEOUT)


def test_combined_archive_with_custom_patterns(zenodo, microscopy_zip, tmp_path):
    """One archive holding both sets: only the microscopy part lands in microscopy/."""
    buf = io.BytesIO(microscopy_zip)
    with zipfile.ZipFile(buf, "a") as zf:
        for folder in D.INTENSITY_FOLDERS:
            zf.writestr(f"drone/images/{folder}/00_00000.tiff", b"not a microscopy crop")
    zenodo.files["everything.zip"] = buf.getvalue()
    target = download(
        "raw-microscopy", root=tmp_path, record_url=zenodo.record_url, progress=False,
        timeout=TIMEOUT, patterns=["EVERYTHING.*"],
    )
    assert sorted(p.name for p in (target / "images" / "raw_scale100").iterdir()) == [
        f"mini_{i:04d}.tiff" for i in range(9)
    ]
    assert len(RawMicroscopy(target)) == 9


def test_unknown_name():
    with pytest.raises(ValueError, match="raw-microscopy"):
        download("raw-cats")


def test_drone_full_frames_are_tiled(zenodo, tmp_path):
    """Full frames (any archive structure) are sorted into frames/ and cut into car tiles."""
    rng = np.random.default_rng(0)
    h, w = 520, 780  # 2 x 3 whole 256-tiles; the remainder is dropped
    mask = np.zeros((h, w), np.uint8)
    mask[10:40, 300:340] = 255  # a car in tile (0, 1)
    mask[300:310, 600:620] = 255  # a car in tile (1, 2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for folder in D.INTENSITY_FOLDERS:
            frame = (rng.integers(0, 4096, (h, w)) * 16).astype(np.uint16)
            b = io.BytesIO()
            tifffile.imwrite(b, frame)
            zf.writestr(f"Raw-Drone/images/{folder}/DJI_0001.tif", b.getvalue())
        b = io.BytesIO()
        tifffile.imwrite(b, mask)
        zf.writestr("Raw-Drone/masks/DJI_0001.tif", b.getvalue())
    zenodo.files["raw_drone.zip"] = buf.getvalue()
    target = download("raw-drone", root=tmp_path, record_url=zenodo.record_url, progress=False, timeout=TIMEOUT)
    ds = RawDrone(target, intensity=0.01)
    assert ds.names == ["00_00001", "00_00005"] and ds.frames == ["00", "00"]
    item = ds[1]
    assert item["raw"].shape == (1, 256, 256) and item["mask"].sum() == 200
    assert ds.camera == D.REAL_CAMERAS["drone"]
    frame = tifffile.imread(target / "frames" / "raw_scale001" / "DJI_0001.tif")
    np.testing.assert_array_equal(item["raw"][0].numpy(), frame[256:512, 512:768])


# --------------------------------------------------------------------------------------
# safe_extract on its own (tar links, zip symlinks, well-formed archives)


def _tar_with(tmp_path: Path, add) -> Path:
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        add(tf)
    return path


def _tar_add_bytes(tf, name, data=b"x", **kw):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    "make",
    [
        lambda tf: _tar_add_bytes(tf, "../evil.txt"),
        lambda tf: _tar_add_bytes(tf, "/evil.txt"),
        lambda tf: _tar_add_bytes(tf, "link", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
        lambda tf: _tar_add_bytes(tf, "d/link", b"", type=tarfile.SYMTYPE, linkname="../../outside"),
        lambda tf: _tar_add_bytes(tf, "hard", b"", type=tarfile.LNKTYPE, linkname="../outside"),
        lambda tf: _tar_add_bytes(tf, "dev", b"", type=tarfile.CHRTYPE),
    ],
    ids=["dotdot", "absolute", "symlink-abs", "symlink-rel", "hardlink", "device"],
)
def test_safe_extract_refuses_bad_tar(tmp_path, make):
    archive = _tar_with(tmp_path, make)
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, dest)
    assert _files_under(dest) == [] and not (tmp_path / "evil.txt").exists()


def test_safe_extract_refuses_zip_symlink(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")
    assert _files_under(tmp_path / "out") == []  # checked before anything is written


def test_safe_extract_good_archives(tmp_path):
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("top/sub/file.txt", "zip")
        zf.writestr("./top/dot.txt", "dot")
    t = _tar_with(tmp_path, lambda tf: (_tar_add_bytes(tf, "top/t.txt", b"tar"),
                                        _tar_add_bytes(tf, "top/l", b"", type=tarfile.SYMTYPE, linkname="t.txt")))
    safe_extract(z, tmp_path / "z")
    safe_extract(t, tmp_path / "t")
    assert (tmp_path / "z/top/sub/file.txt").read_text() == "zip"
    assert (tmp_path / "z/top/dot.txt").read_text() == "dot"
    assert (tmp_path / "t/top/t.txt").read_bytes() == b"tar"
    with pytest.raises(DownloadError, match="neither"):
        safe_extract(tmp_path / "z/top/dot.txt", tmp_path / "n")
