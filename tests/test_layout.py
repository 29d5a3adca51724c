"""The Zenodo release's folder layout: loaders and download normalisers on generated trees.

Each tree is written the way the release documents it::

    drone/images_tiles_256/raw_scale{100,...,001}/NN_IIIII.tif   float32 or uint16 tiles
    drone/masks_tiles_256/NN_IIIII[_suffix].png                  bool masks
    drone/images_full/raw_scale100/<frame>.tif                   full frames
    drone/masks_full/<frame>_<suffix>.png                        their masks
    microscopy/images/raw_scale{...}/<stem>.tiff
    microscopy/images/processed_views/...                        not raw data
    microscopy/labels/Ma190c_annotations.dat

Downloads go through a real HTTP server on loopback serving a fake record.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from drifthelpers import datasets as D
from drifthelpers.datasets import DatasetLayoutError, RawDrone, RawMicroscopy, pair_masks, tile_drone_frames

TILE = 256
FRAME_SHAPE = (2 * TILE + 8, 3 * TILE + 12)  # 2 x 3 whole tiles and a remainder
# cars per frame, as (row, col) of the grid tiles that hold one
CARS = {"DJI_0007": [(0, 1), (1, 2)], "DJI_0012": [(1, 0)]}
TILE_NAMES = ["00_00000", "00_00001", "01_00000"]  # kept-tile index per frame, as the authors name them
MICRO = {"Ma190c_lame1_zone1_a": "BAS", "Ma190c_lame1_zone2_b": "LYT", "Ma190c_lame2_zone7_c": "NGS"}


def _png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(bool)).save(path)


def _tif(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array)


def _frame_masks() -> dict[str, np.ndarray]:
    out = {}
    for stem, cars in CARS.items():
        m = np.zeros(FRAME_SHAPE, bool)
        for r, c in cars:
            m[r * TILE + 20 : r * TILE + 40, c * TILE + 100 : c * TILE + 130] = True
        out[stem] = m
    return out


def _tile_value(level_index: int, tile_index: int) -> float:
    return 4096.0 + 1000.0 * tile_index + 7.0 * level_index


def make_drone_tree(root: Path, tiles: bool = True, full: bool = True) -> Path:
    """A drone folder in the release's layout; returns it."""
    drone = root / "drone"
    masks = _frame_masks()
    if full:
        rng = np.random.default_rng(1)
        for stem, m in masks.items():
            frame = (rng.integers(256, 4096, FRAME_SHAPE) * 16).astype(np.uint16)
            _tif(drone / D.DRONE_FULL / "raw_scale100" / f"{stem}.tif", frame)
            _png(drone / D.DRONE_MASKS_FULL / f"{stem}_carmask.png", m)  # suffixed, as the public loader allows
    if tiles:
        for li, folder in enumerate(D.INTENSITY_FOLDERS):
            for ti, name in enumerate(TILE_NAMES):
                dtype = np.float32 if li % 2 == 0 else np.uint16  # both kinds of tile files
                _tif(drone / "images_tiles_256" / folder / f"{name}.tif",
                     np.full((TILE, TILE), _tile_value(li, ti), dtype))
        for ti, name in enumerate(TILE_NAMES):
            m = np.zeros((TILE, TILE), bool)
            m[: ti + 1, :5] = True  # tile ti holds 5 * (ti + 1) car pixels
            suffix = "_mask" if ti == 1 else ""
            _png(drone / "masks_tiles_256" / f"{name}{suffix}.png", m)
    return drone


def make_microscopy_tree(root: Path) -> Path:
    micro = root / "microscopy"
    for li, folder in enumerate(D.INTENSITY_FOLDERS):
        for k, stem in enumerate(MICRO):
            _tif(micro / "images" / folder / f"{stem}.tiff", np.full((TILE, TILE), 100 * k + li, np.uint16))
        # rendered views: not raw data, and named like raw data on purpose
        _tif(micro / "images" / "processed_views" / "bi_s_ga" / folder / "Ma190c_extra_view.tiff",
             np.zeros((TILE, TILE, 3), np.uint8))
    (micro / "labels").mkdir(parents=True)
    (micro / "labels" / D.LABEL_FILE).write_text("".join(f"{s}.tiff {c}\n" for s, c in MICRO.items()))
    return micro


# --------------------------------------------------------------------------------------
# loaders on the release's layout


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("release")
    make_drone_tree(root)
    make_microscopy_tree(root)
    return root


def test_drone_reads_the_authors_tiles_only(release):
    for root in (release, release / "drone"):
        for folder in D.INTENSITY_FOLDERS:
            ds = RawDrone(root, intensity=folder)
            assert ds.names == TILE_NAMES  # the exact tile set: no frame, no duplicate
            assert len(ds) == 3 and len(set(ds.names)) == 3
            assert ds.frames == ["00", "00", "01"]
            assert all(f.parent.parent.name == "images_tiles_256" for f in ds.files)


def test_drone_tiles_values_dtypes_and_suffixed_masks(release):
    for li, folder in enumerate(D.INTENSITY_FOLDERS):
        ds = RawDrone(release, intensity=folder)
        for ti in range(3):
            item = ds[ti]
            assert item["raw"].dtype.is_floating_point and item["raw"].shape == (1, TILE, TILE)
            assert float(item["raw"][0, 0, 0]) == _tile_value(li, ti)
            assert float(item["mask"].sum()) == 5 * (ti + 1)
    assert RawDrone(release).mask_files[1].name == "00_00001_mask.png"


def test_microscopy_ignores_processed_views(release):
    for root in (release, release / "microscopy"):
        for folder in D.INTENSITY_FOLDERS:
            ds = RawMicroscopy(root, intensity=folder)
            assert ds.names == list(MICRO)
            assert [ds.classes[t] for t in ds.targets] == list(MICRO.values())


def test_full_frames_only_name_the_tiling_step(tmp_path):
    drone = make_drone_tree(tmp_path, tiles=False)
    with pytest.raises(DatasetLayoutError, match="tile_drone_frames"):
        RawDrone(tmp_path)
    assert tile_drone_frames(drone, progress=False) == 3
    ds = RawDrone(tmp_path, intensity=1.0)
    assert ds.names == TILE_NAMES and ds.frames == ["00", "00", "01"]
    frame = tifffile.imread(drone / D.DRONE_FULL / "raw_scale100" / "DJI_0007.tif")
    np.testing.assert_array_equal(ds[1]["raw"][0].numpy(), frame[TILE : 2 * TILE, 2 * TILE : 3 * TILE])
    assert float(ds[1]["mask"].sum()) == 20 * 30
    with pytest.raises(DatasetLayoutError, match="raw_scale050"):
        RawDrone(tmp_path, intensity=0.5)  # the release's full frames exist at full light only
    with pytest.raises(DatasetLayoutError, match="duplicate"):
        tile_drone_frames(drone, progress=False)


def test_pair_masks_contains_the_stem():
    masks = {"DJI_0001_mask": Path("a"), "DJI_00012_mask": Path("b"), "x": Path("c")}
    paired, missing = pair_masks(["DJI_0001", "DJI_00012", "DJI_0099"], masks)
    assert paired == {"DJI_0001": Path("a"), "DJI_00012": Path("b")} and missing == ["DJI_0099"]
    with pytest.raises(DatasetLayoutError, match="several masks"):
        pair_masks(["F"], {"F_a": Path("a"), "F_b": Path("b")})


# --------------------------------------------------------------------------------------
# download normalisers, through a loopback server


class _Record:
    def __init__(self, files: dict[str, bytes]):
        record = self
        self.files = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 (http.server API)
                if self.path.endswith(f"/records/{D.ZENODO_RECORD_ID}"):
                    body = json.dumps({"files": [
                        {"key": k, "size": len(v), "checksum": "md5:" + hashlib.md5(v).hexdigest(),
                         "links": {"self": f"/files/{k}/content"}} for k, v in record.files.items()]}).encode()
                else:
                    body = record.files.get(self.path.split("/")[2], b"") if self.path.startswith("/files/") else b""
                    if not body:
                        self.send_error(404)
                        return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/records/{D.ZENODO_RECORD_ID}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _zip(folder: Path, prefix: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{prefix}/{p.relative_to(folder).as_posix()}")
    return buf.getvalue()


@pytest.mark.parametrize("with_tiles", [True, False])
def test_download_drone_release(tmp_path, with_tiles):
    drone = make_drone_tree(tmp_path / "src", tiles=with_tiles)
    with _Record({"Raw-Drone.zip": _zip(drone, "Raw-Drone/drone")}) as rec:
        target = D.download("raw-drone", root=tmp_path / "data", record_url=rec.url, progress=False, timeout=5)
    levels = D.INTENSITY_FOLDERS if with_tiles else ("raw_scale100",)
    for folder in levels:
        ds = RawDrone(target, intensity=folder)
        assert ds.names == TILE_NAMES and ds.frames == ["00", "00", "01"]
    files = sorted(p.name for p in (target / "images_tiles_256" / "raw_scale100").iterdir())
    assert files == [f"{n}.tif" for n in TILE_NAMES]  # nothing re-tiled next to the authors' tiles
    assert sorted(p.name for p in (target / D.DRONE_FULL / "raw_scale100").iterdir()) == ["DJI_0007.tif", "DJI_0012.tif"]
    assert not (target / "images").exists()


def test_download_microscopy_skips_processed_views(tmp_path):
    micro = make_microscopy_tree(tmp_path / "src")
    with _Record({"Raw-Microscopy.zip": _zip(micro, "microscopy")}) as rec:
        target = D.download("raw-microscopy", root=tmp_path / "data", record_url=rec.url, progress=False, timeout=5)
    for folder in D.INTENSITY_FOLDERS:
        assert sorted(p.stem for p in (target / "images" / folder).iterdir()) == sorted(MICRO)
        assert RawMicroscopy(target, intensity=folder).names == list(MICRO)
