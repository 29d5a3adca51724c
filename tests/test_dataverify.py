"""``data verify`` and the paper-sized stand-in (``data mini --paper-size``)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from drifthelpers import datasets as D
from drifthelpers.datasets import verify as V
from drifthelpers.__main__ import main

SCALE = 0.02  # 19 crops in 9 classes, 11 drone tiles from 11 frames


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standin")
    assert main(["data", "mini", "--paper-size", "--scale", str(SCALE), "--root", str(root), "--workers", "1"]) == 0
    return root


def test_standin_layout_and_loaders(standin):
    micro = D.RawMicroscopy(standin, intensity=0.01)
    assert len(micro) == 19 and micro[0]["raw"].shape == (1, 256, 256)
    assert all(v >= 1 for v in micro.class_counts().values())
    drone = D.RawDrone(standin / "drone", intensity=1.0)
    assert len(drone) == 11 and len(set(drone.frames)) == 11
    assert all(f.parent.parent.name == "images_tiles_256" and f.suffix == ".tif" for f in drone.files)
    assert all(f.parent.name == "masks_tiles_256" and f.suffix == ".png" for f in drone.mask_files)
    assert float(drone[0]["mask"].sum()) > 0


def test_verify_passes_on_the_standin(standin, capsys):
    assert main(["data", "verify", "--root", str(standin)]) == 0
    out = capsys.readouterr().out
    assert "microscopy: complete" in out and "drone: complete" in out
    assert "| checksums (manifest.json) | all match | all match | yes |" in out


def test_verify_against_the_paper_names_the_counts(standin, capsys):
    assert main(["data", "verify", "--root", str(standin), "microscopy", "--expect", "paper"]) == 1
    err = capsys.readouterr().err
    assert "labelled crops: expected 940, found 19" in err and "class NGB: expected 8, found" in err


def test_verify_names_every_problem(standin, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(standin, broken)
    micro = broken / "microscopy"
    gone_image = sorted((micro / "images" / "raw_scale050").iterdir())[3]
    gone_image.unlink()
    labels = micro / "labels" / D.LABEL_FILE
    lines = labels.read_text().splitlines(keepends=True)
    gone_label = lines[5].split()[0]
    labels.write_text("".join(lines[:5] + lines[6:]))
    shutil.rmtree(micro / "images" / "raw_scale010")
    drone_mask = sorted((broken / "drone" / "masks_tiles_256").iterdir())[2]
    drone_mask.unlink()

    assert main(["data", "verify", "--root", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"raw_scale050: 1 label(s) without an image: {gone_image.stem}" in err
    assert f"raw_scale100: 1 image(s) without a label: {gone_label}" in err
    assert "missing intensity folder(s) under" in err and "raw_scale010" in err
    assert f"1 tile(s) without a mask in masks_tiles_256: {drone_mask.stem}" in err
    assert "manifest.json:" in err and "file(s) missing or changed" in err

    report = V.verify_dataset(broken, "microscopy", checksums=False)
    assert not report.ok and not any("manifest" in p for p in report.problems)


def test_verify_names_unreadable_and_wrong_type_files(standin, tmp_path):
    broken = tmp_path / "drone"
    shutil.copytree(standin / "drone", broken)
    tiles = sorted((broken / "images_tiles_256" / "raw_scale100").iterdir())
    tiles[0].write_bytes(b"not a tiff")
    tifffile.imwrite(tiles[1], np.zeros((256, 256), np.int32))
    problems = "\n".join(V.verify_dataset(broken, "drone", checksums=False).problems)
    assert f"not readable: images_tiles_256/raw_scale100/{tiles[0].name} (" in problems
    assert f"pixel types ['int32'] (allowed uint16/float32), e.g. images_tiles_256/raw_scale100/{tiles[1].name}" in problems


def test_verify_usage_errors(tmp_path, capsys):
    assert main(["data", "verify", "--root", str(tmp_path / "absent")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["data", "verify", "cats"])
    assert exc.value.code == 2
    assert main(["data", "mini", "--paper-size", "--size", "64", "--root", str(tmp_path)]) == 2
    assert "--size" in capsys.readouterr().err


def test_verify_reports_a_missing_data_set(tmp_path):
    report = V.verify_dataset(tmp_path, "drone")
    assert not report.ok and "drone" in report.problems[0]


def test_standin_refuses_to_overwrite(standin, tmp_path):
    other = tmp_path / "o"
    shutil.copytree(standin / "drone", other / "drone")
    (other / "drone" / "note.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="force"):
        V.build_standin(other, which="drone", scale=0.5, progress=False)
    assert (other / "drone" / "note.txt").read_text() == "mine"
    assert V.build_standin(standin, which="drone", scale=SCALE, progress=False) == {"drone": standin / "drone"}


@pytest.mark.slow
def test_full_count_standin_passes_the_paper_expectation(tmp_path):
    """The paper's counts in full (940 crops in the paper's classes, 548 tiles from 12 frames, 7
    intensities) at 64 px instead of 256, so it costs seconds instead of minutes; the 256-px files
    are checked on the slices above and in tests/test_paper_smoke.py."""
    paths = V.build_standin(tmp_path, size=64, progress=False)
    for kind in D.KINDS:
        report = V.verify_dataset(tmp_path, kind, expected=dataclasses.replace(V.paper_expectation(kind), size=64))
        assert report.ok, report.problems
        at_256 = V.verify_dataset(tmp_path, kind, expected="paper", checksums=False)
        assert at_256.problems and all("256" in p for p in at_256.problems), at_256.problems
    assert D.RawMicroscopy(paths["microscopy"]).class_counts() == V.paper_expectation("microscopy").class_counts
    assert len(D.RawDrone(paths["drone"], intensity=0.05)) == V.PAPER_DRONE_TILES
