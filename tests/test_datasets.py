"""Tests of the mini data sets, the loaders, the layout errors and the splits."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from drifthelpers import datasets as D
from drifthelpers.datasets import files as F
from drifthelpers.datasets import mini as M
from drifthelpers.datasets import (
    DatasetCamera,
    DatasetLayoutError,
    RawDrone,
    RawMicroscopy,
    build_mini,
    ensure_mini,
    stratified_split,
)
from drifthelpers.scenes import CLASS_COUNTS_PAPER, LEUKOCYTE_CLASSES
from drifthelpers.sensor import DRONE_CAMERA, INTENSITY_FOLDERS, INTENSITY_LEVELS, MICROSCOPE_CAMERA

# Tiny sets: 18 crops (2 per class) at 64x64 px; 6 tiles in 3 frames at 128x128 px (a car
# is 4-5 m long, 67-83 px at 6 cm: smaller drone tiles often have no room for one).
TINY = dict(n_microscopy=18, n_drone=6, min_per_class=2, n_drone_frames=3, progress=False, workers=1)
SIZES = {"microscopy": 64, "drone": 128}


def build_tiny(root, seed=0, which=("microscopy", "drone"), **kw):
    """build_mini with the tiny sizes (one size per data set)."""
    which = (which,) if isinstance(which, str) else which
    out = {}
    for kind in which:
        out.update(build_mini(root, seed=seed, which=kind, size=SIZES[kind], **{**TINY, **kw}))
    return out


def ensure_tiny(root, seed=0, which=("microscopy", "drone"), **kw):
    which = (which,) if isinstance(which, str) else which
    out = {}
    for kind in which:
        out.update(ensure_mini(root, seed=seed, which=kind, size=SIZES[kind], **{**TINY, **kw}))
    return out


def _read(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture(scope="session")
def mini(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mini-a")
    return build_tiny(root, seed=0)


@pytest.fixture()
def mini_copy(mini, tmp_path) -> Path:
    """A private, writable copy of the tiny sets (tests may damage it)."""
    dst = tmp_path / "root"
    shutil.copytree(mini["microscopy"].parent.parent, dst)
    return dst


# --------------------------------------------------------------------------------------
# generation: determinism, layout, manifest


@pytest.mark.slow
def test_same_seed_gives_identical_bytes(mini, tmp_path):
    again = build_tiny(tmp_path, seed=0, workers=2)  # also across worker counts
    for kind in ("microscopy", "drone"):
        a, b = mini[kind], again[kind]
        assert _read(a / "manifest.json") == _read(b / "manifest.json")
        files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        assert files_a == files_b
        assert all(_read(a / f) == _read(b / f) for f in files_a)


def test_other_seed_gives_other_data(mini, tmp_path):
    other = build_tiny(tmp_path, seed=1, which="drone")
    man_a = json.loads((mini["drone"] / "manifest.json").read_text())
    man_b = json.loads((other["drone"] / "manifest.json").read_text())
    assert man_a["config"]["seed"] == 0 and man_b["config"]["seed"] == 1
    shared = set(man_a["files"]) - {"camera.json"}
    assert shared == set(man_b["files"]) - {"camera.json"}
    assert all(man_a["files"][k]["sha256"] != man_b["files"][k]["sha256"] for k in shared)


def test_microscopy_layout(mini):
    root = mini["microscopy"]
    assert root == mini["microscopy"].parent / "microscopy" and root.parent.name == "mini"
    lines = (root / "labels" / D.LABEL_FILE).read_text().splitlines()
    assert len(lines) == 18
    stems = [ln.split()[0] for ln in lines]
    codes = [ln.split()[1] for ln in lines]
    assert sorted(set(codes)) == sorted(LEUKOCYTE_CLASSES) and all(codes.count(c) == 2 for c in LEUKOCYTE_CLASSES)
    for folder in INTENSITY_FOLDERS:
        files = sorted((root / "images" / folder).iterdir())
        assert [f.stem for f in files] == sorted(stems) and all(f.suffix == ".tiff" for f in files)
    with tifffile.TiffFile(root / "images" / "raw_scale100" / f"{stems[0]}.tiff") as tf:
        assert len(tf.pages) == 1
        page = tf.pages[0]
        assert page.shape == (64, 64) and page.dtype == np.uint16 and page.compression == 1


def test_drone_layout_and_masks(mini):
    root = mini["drone"]
    masks = sorted((root / "masks").iterdir())
    assert [m.name for m in masks] == [f"{f:02d}_{t:05d}.tif" for f in range(3) for t in range(2)]
    for m in masks:
        arr = tifffile.imread(m)
        assert arr.dtype == np.uint8 and set(np.unique(arr)) <= {0, 255} and arr.max() == 255
    for folder in INTENSITY_FOLDERS:
        assert sorted(p.stem for p in (root / "images" / folder).iterdir()) == [m.stem for m in masks]


def test_manifest_records_everything(mini):
    root = mini["microscopy"]
    man = json.loads((root / "manifest.json").read_text())
    cfg = man["config"]
    assert cfg["seed"] == 0 and cfg["size"] == 64 and cfg["n"] == 18
    assert cfg["generator_version"] == D.GENERATOR_VERSION
    assert man["sensor"]["electrons_at_full_scale"] == MICROSCOPE_CAMERA.electrons_at_full_scale
    listed = set(man["files"])
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk and len(listed) == 18 * 7 + 2
    for rel in list(listed)[:5]:
        assert F._sha256_file(root / rel) == man["files"][rel]["sha256"]
    assert man["camera"] == json.loads((root / "camera.json").read_text())


def test_camera_json_matches_sensor(mini):
    from drifthelpers.sensor import camera_metadata

    for kind, params in (("microscopy", MICROSCOPE_CAMERA), ("drone", DRONE_CAMERA)):
        stored = json.loads((mini[kind] / "camera.json").read_text())
        assert sorted(stored) == ["black_level", "ccm", "cfa", "notes", "wb_gains", "white_level"]
        cam = DatasetCamera.from_dict(stored)
        meta = camera_metadata(params)
        assert cam.cfa == meta["cfa"] and cam.white_level == meta["white_level"]
        np.testing.assert_allclose(cam.black_level, meta["black_level"])
        np.testing.assert_allclose(cam.wb_gains, meta["wb_gains"])
        np.testing.assert_allclose(cam.ccm, meta["ccm"])


def test_mini_class_counts_floor_and_paper_order():
    counts = D.mini_class_counts(144, 8)
    assert sum(counts.values()) == 144 and min(counts.values()) >= 8 and max(counts.values()) <= 27
    paper_order = sorted(LEUKOCYTE_CLASSES, key=lambda c: CLASS_COUNTS_PAPER[c])
    assert [counts[c] for c in paper_order] == sorted(counts[c] for c in paper_order)
    assert counts["LYT"] > counts["BAS"]
    with pytest.raises(ValueError, match="min_per_class"):
        D.mini_class_counts(10, 2)


def test_bad_build_arguments(tmp_path):
    with pytest.raises(ValueError, match="even"):
        build_mini(tmp_path, size=33, **TINY)
    with pytest.raises(ValueError, match="unknown data set"):
        build_mini(tmp_path, which="cats", size=64, **TINY)
    with pytest.raises(ValueError, match="seed"):
        build_mini(tmp_path, seed=-1, size=64, **TINY)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# --------------------------------------------------------------------------------------
# ensure_mini: reuse, verification, atomic rebuild


def test_ensure_reuses_an_intact_set(mini_copy, monkeypatch, capsys):
    def boom(*a, **k):
        raise AssertionError("should not rebuild")

    monkeypatch.setattr(M, "_build_one", boom)
    out = ensure_tiny(mini_copy, seed=0, progress=True)
    assert out["microscopy"] == mini_copy.resolve() / "mini" / "microscopy"
    assert "Reusing mini microscopy" in capsys.readouterr().out


@pytest.mark.parametrize("verify, rebuilt", [("full", True), ("quick", False)])
def test_ensure_detects_silent_corruption_with_full_verify(mini_copy, verify, rebuilt):
    victim = mini_copy / "mini" / "drone" / "images" / "raw_scale050" / "01_00001.tiff"
    good = victim.read_bytes()
    data = bytearray(good)
    data[-1] ^= 0xFF  # same size, different content
    victim.write_bytes(bytes(data))
    ensure_tiny(mini_copy, seed=0, which="drone", verify=verify)
    assert (victim.read_bytes() == good) is rebuilt


def test_ensure_rebuilds_missing_file_and_other_parameters(mini_copy):
    victim = mini_copy / "mini" / "microscopy" / "labels" / D.LABEL_FILE
    victim.unlink()
    ensure_tiny(mini_copy, seed=0, which="microscopy", verify="quick")
    assert victim.is_file()
    out = ensure_tiny(mini_copy, seed=5, which="microscopy")
    assert json.loads((out["microscopy"] / "manifest.json").read_text())["config"]["seed"] == 5


def test_interrupted_build_leaves_old_set_and_no_temp(mini_copy, monkeypatch):
    target = mini_copy / "mini" / "microscopy"
    before = (target / "manifest.json").read_bytes()
    calls = {"n": 0}
    real = M._make_microscopy_item

    def flaky(job):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # like Ctrl-C half way through
        return real(job)

    monkeypatch.setattr(M, "_make_microscopy_item", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_tiny(mini_copy, seed=9, which="microscopy")
    assert (target / "manifest.json").read_bytes() == before
    assert D.verify_mini(target) == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["drone", "microscopy"]


def test_stale_temp_folders_of_dead_processes_are_removed(mini_copy):
    pid = 2**22 + 12345
    while F._pid_alive(pid):  # pragma: no cover - practically never
        pid += 1
    stale = mini_copy / "mini" / f".drone.tmp-{pid}-0123abcd"
    (stale / "images").mkdir(parents=True)
    live = mini_copy / "mini" / f".drone.tmp-{os.getpid()}-0123abcd"
    live.mkdir()
    build_tiny(mini_copy, seed=0, which="drone")
    assert not stale.exists() and live.exists()


# --------------------------------------------------------------------------------------
# loaders


def test_microscopy_loader_items(mini):
    ds = RawMicroscopy(mini["microscopy"], intensity=1.0)
    assert len(ds) == 18 and ds.classes == tuple(LEUKOCYTE_CLASSES)
    assert ds.class_counts() == {c: 2 for c in LEUKOCYTE_CLASSES}
    item = ds[3]
    assert set(item) == {"raw", "label", "name"}
    assert item["raw"].dtype == torch.float32 and item["raw"].shape == (1, 64, 64)
    assert item["label"] == ds.targets[3] and item["name"] == ds.names[3]
    arr = tifffile.imread(ds.files[3])
    np.testing.assert_array_equal(item["raw"][0].numpy(), arr.astype(np.float32))
    assert isinstance(ds.camera, DatasetCamera) and ds.camera.cfa == MICROSCOPE_CAMERA.cfa
    assert "RawMicroscopy(18 items" in repr(ds)


def test_loaders_accept_parent_root_and_all_intensities(mini):
    parent = mini["microscopy"].parent  # <root>/mini
    means = []
    for level, folder in zip(INTENSITY_LEVELS, INTENSITY_FOLDERS):
        a = RawMicroscopy(parent, intensity=level)
        b = RawMicroscopy(mini["microscopy"], intensity=folder)
        assert a.folder == b.folder == folder and a.names == b.names
        means.append(float(torch.stack([a[i]["raw"] for i in range(3)]).mean()))
    assert means == sorted(means, reverse=True)  # less light, fewer DN
    d = RawDrone(parent, intensity="raw_scale005")
    assert d.intensity == 0.05 and len(d) == 6


def test_drone_loader_items_and_frames(mini):
    ds = RawDrone(mini["drone"], intensity=0.1)
    assert ds.frames == ["00", "00", "01", "01", "02", "02"] and ds.targets == [1] * 6
    item = ds[2]
    assert set(item) == {"raw", "mask", "name"} and item["name"] == "01_00000"
    assert item["mask"].dtype == torch.float32 and item["mask"].shape == (1, 128, 128)
    assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0} and item["mask"].sum() > 0
    assert ds.camera.black_level == (DRONE_CAMERA.black_level_stored_dn,) * 4


def test_same_loader_reads_a_layout_identical_copy(mini, tmp_path):
    copy = tmp_path / "elsewhere" / "my-data"
    shutil.copytree(mini["microscopy"].parent, copy)
    for cls, key in ((RawMicroscopy, "microscopy"), (RawDrone, "drone")):
        a, b = cls(mini[key], intensity=0.25), cls(copy, intensity=0.25)
        assert a.names == b.names and a.targets == b.targets and a.camera == b.camera
        for i in (0, len(a) - 1):
            x, y = a[i], b[i]
            assert all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)


def test_transform_and_dataloader(mini):
    def halve(sample):
        return {**sample, "raw": sample["raw"] / 2}

    plain = RawDrone(mini["drone"])
    ds = RawDrone(mini["drone"], transform=halve)
    assert torch.equal(ds[0]["raw"] * 2, plain[0]["raw"])
    batch = next(iter(torch.utils.data.DataLoader(RawMicroscopy(mini["microscopy"]), batch_size=4)))
    assert batch["raw"].shape == (4, 1, 64, 64) and batch["label"].shape == (4,) and len(batch["name"]) == 4


def test_camera_falls_back_to_real_constants(mini_copy):
    (mini_copy / "mini" / "drone" / "camera.json").unlink()
    assert RawDrone(mini_copy / "mini").camera == D.REAL_CAMERAS["drone"]


def test_labels_with_other_classes_are_skipped(mini_copy):
    root = mini_copy / "mini" / "microscopy"
    label = root / "labels" / D.LABEL_FILE
    first = sorted((root / "images" / "raw_scale100").iterdir())[0].stem
    label.write_text(label.read_text() + f"{first} EBO\n\n")
    ds = RawMicroscopy(root)
    assert len(ds) == 18 and ds.skipped == 1
    assert len(RawMicroscopy(root, classes=("BAS", "EOS"))) == 4


# --------------------------------------------------------------------------------------
# layout errors


def _assert_helpful(err: DatasetLayoutError, kind: str):
    msg = str(err)
    assert isinstance(err, FileNotFoundError)
    assert "python -m drifthelpers data mini" in msg and "data download" in msg
    assert D.expected_layout(kind).splitlines()[1].strip() in msg


def test_missing_root(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist") as info:
        RawMicroscopy(tmp_path / "nope")
    _assert_helpful(info.value, "microscopy")


def test_root_without_images(tmp_path):
    (tmp_path / "microscopy").mkdir()
    with pytest.raises(DatasetLayoutError, match="images") as info:
        RawDrone(tmp_path)
    _assert_helpful(info.value, "drone")


def test_missing_intensity_folder(mini_copy):
    shutil.rmtree(mini_copy / "mini" / "microscopy" / "images" / "raw_scale010")
    with pytest.raises(DatasetLayoutError, match="raw_scale010") as info:
        RawMicroscopy(mini_copy / "mini", intensity=0.1)
    _assert_helpful(info.value, "microscopy")
    RawMicroscopy(mini_copy / "mini", intensity=0.05)  # the others still load


def test_missing_label_file_and_missing_image(mini_copy):
    root = mini_copy / "mini" / "microscopy"
    victim = sorted((root / "images" / "raw_scale100").iterdir())[0]
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match=f"1 labelled image.*{victim.stem}"):
        RawMicroscopy(root)
    (root / "labels" / D.LABEL_FILE).unlink()
    with pytest.raises(DatasetLayoutError, match=D.LABEL_FILE):
        RawMicroscopy(root)


def test_missing_masks(mini_copy):
    root = mini_copy / "mini" / "drone"
    (root / "masks" / "02_00001.tif").unlink()
    with pytest.raises(DatasetLayoutError, match="02_00001"):
        RawDrone(root)
    shutil.rmtree(root / "masks")
    with pytest.raises(DatasetLayoutError, match="masks"):
        RawDrone(root)


@pytest.mark.parametrize("bad", [0.3, "raw_scale033", "bright", 2.0])
def test_bad_intensity(mini, bad):
    with pytest.raises(ValueError, match="intensit|level"):
        RawMicroscopy(mini["microscopy"], intensity=bad)


# --------------------------------------------------------------------------------------
# camera metadata and data root


def test_one_camera_class_and_every_public_name_exported():
    from drifthelpers.camera import Camera

    assert DatasetCamera is Camera
    assert all(type(cam) is Camera for cam in D.REAL_CAMERAS.values())
    assert [name for name in D.__all__ if not hasattr(D, name)] == []
    assert D.download.__module__ == "drifthelpers.datasets.zenodo"


def test_dataset_camera_roundtrip_and_validation():
    for cam in D.REAL_CAMERAS.values():
        assert DatasetCamera.from_dict(json.loads(json.dumps(cam.to_dict()))) == cam
    cam = D.REAL_CAMERAS["microscopy"]
    norm = cam.normalised()
    assert norm.wb_gains[1] == 1.0
    np.testing.assert_allclose(np.array(norm.ccm) @ np.diag(norm.wb_gains), np.array(cam.ccm) @ np.diag(cam.wb_gains))
    np.testing.assert_allclose(D.REAL_CAMERAS["drone"].ccm, D.REAL_CAMERAS["drone"].ccm)
    assert np.allclose(np.sum(D.REAL_CAMERAS["drone"].ccm, axis=1), 1.0, atol=1e-6)
    assert abs(cam.black_level[0] - 0.6445) < 1e-3
    with pytest.raises(ValueError, match="cfa must be one of"):
        DatasetCamera("RGBG", 0, 10, (1, 1, 1), np.eye(3))
    with pytest.raises(ValueError, match="3x3"):
        DatasetCamera("RGGB", 0, 10, (1, 1, 1), np.eye(2))
    with pytest.raises(ValueError, match="white_level"):
        DatasetCamera("RGGB", 10, 10, (1, 1, 1), np.eye(3))
    with pytest.raises(ValueError, match="cfa"):
        DatasetCamera.from_dict({"black_level": 0})


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert D.data_root() == repo / "data"
    monkeypatch.setenv(D.DATA_ENV_VAR, str(tmp_path / "env"))
    assert D.data_root() == (tmp_path / "env").resolve()
    assert D.data_root(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert D.dataset_dir("drone", tmp_path, source="zenodo") == tmp_path.resolve() / "zenodo" / "drone"
    assert D.dataset_dir("microscopy", tmp_path, source="standin") == tmp_path.resolve() / "standin" / "microscopy"
    with pytest.raises(ValueError, match="standin"):
        D.dataset_dir("drone", tmp_path, source="cloud")


# --------------------------------------------------------------------------------------
# splits


def test_split_sizes_and_stratification():
    y = [0] * 30 + [1] * 10 + [2] * 3
    tr, va, te = stratified_split(y, (0.6, 0.2, 0.2), seed=0)
    assert (len(tr), len(va), len(te)) == (25, 9, 9)  # 18+6+1, 6+2+1, 6+2+1
    for part in (tr, va, te):
        assert set(np.asarray(y)[part]) == {0, 1, 2}  # every class in every split
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(len(y)))


def test_split_seeds_reproducible_and_different():
    y = np.repeat(np.arange(4), 10)
    a = stratified_split(y, seed=3)
    b = stratified_split(y, seed=3)
    c = stratified_split(y, seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))
    tr, va = stratified_split(y, (0.8, 0.2), seed=0)  # the paper's 80/20 protocol
    assert len(tr) == 32 and len(va) == 8


def test_split_by_group_has_no_leakage(mini):
    ds = RawDrone(mini["drone"])
    frames = np.asarray(ds.frames)
    for seed in range(5):
        parts = stratified_split(ds.targets, (0.6, 0.2, 0.2), seed=seed, groups=ds.frames)
        sets = [set(frames[p]) for p in parts]
        assert all(sets) and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        assert sum(len(p) for p in parts) == len(ds)


@pytest.mark.parametrize("fractions", [(0.5, 0.6), (1.0,), (0.5, 0.25, 0.125, 0.125), (1.2, -0.2)])
def test_split_rejects_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        stratified_split([0, 1, 0, 1], fractions)


@settings(max_examples=60, deadline=None)
@given(
    y=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    seed=st.integers(0, 2**31),
    with_groups=st.booleans(),
)
def test_split_is_a_partition(y, seed, with_groups):
    groups = [i // 3 for i in range(len(y))] if with_groups else None
    parts = stratified_split(y, (0.6, 0.2, 0.2), seed=seed, groups=groups)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(len(y)))
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
    if with_groups:
        g = np.asarray(groups)
        assert sum(bool(set(g[a]) & set(g[b])) for i, a in enumerate(parts) for b in parts[i + 1 :]) == 0
    else:  # classes with at least 3 items appear in every split
        y = np.asarray(y)
        for cls in np.unique(y):
            if (y == cls).sum() >= 3:
                assert all((y[p] == cls).any() for p in parts)


@pytest.mark.slow
def test_concurrent_ensure_builds_once(tmp_path):
    """Parallel jobs (a sweep) that need the same missing set: one builds, the others wait and reuse."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from drifthelpers.datasets import ensure_mini\n"
        f"ensure_mini(sys.argv[1], seed=0, which='microscopy', size={SIZES['microscopy']}, "
        f"**{ {**TINY, 'progress': True}!r})\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    built = sum("building it" in out for out, _ in outs)
    reused = sum("Reusing mini microscopy" in out for out, _ in outs)
    assert (built, reused) == (1, 2), [o[0] for o in outs]
    assert D.verify_mini(tmp_path / "mini" / "microscopy") == []
    assert not [p.name for p in (tmp_path / "mini").iterdir() if ".tmp-" in p.name or ".old-" in p.name]
