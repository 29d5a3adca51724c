"""The command line, run as users run it: ``python -m drifthelpers ...`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from drifthelpers.raw import RawImage, write_dng


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "drifthelpers", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def dng(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    img = RawImage(
        raw=np.arange(24 * 32, dtype=np.uint16).reshape(24, 32),
        cfa="GBRG",
        black_level=(64, 64, 60, 60),
        white_level=1023,
        wb_gains=(2.5, 1.0, 1.25),
        camera="Acme Cam2",
    )
    return write_dng(img, d / "frame.dng")


def test_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("info", "run", "data", "render"):
        assert cmd in res.stdout


def test_info_prints_metadata(dng):
    res = run_cli("info", dng)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "GBRG" in out and "64, 64, 60, 60" in out and "1023" in out
    assert "2.5000, 1.0000, 1.2500" in out and "colour matrix absent" in out
    assert "24 x 32" in out and "Acme Cam2" in out


def test_info_json(dng):
    res = run_cli("info", "--json", dng)
    assert res.returncode == 0
    meta = json.loads(res.stdout)
    assert meta["cfa"] == "GBRG" and meta["size"] == [24, 32] and meta["wb_gains"] == [2.5, 1.0, 1.25]


@pytest.mark.parametrize("content,expected", [(None, "no such file"), (b"", "empty"), (b"hello" * 100, "not a camera raw file")])
def test_info_bad_input_exits_nonzero_with_message(tmp_path, content, expected):
    path = tmp_path / "bad.dng"
    if content is not None:
        path.write_bytes(content)
    res = run_cli("info", path)
    assert res.returncode == 2
    assert expected in res.stderr and str(path) in res.stderr
    assert "Traceback" not in res.stderr


def test_info_real_file(canon_crw):
    res = run_cli("info", canon_crw)
    assert res.returncode == 0
    assert "RGGB" in res.stdout and "1720 x 2312" in res.stdout and "present" in res.stdout


def test_unknown_command():
    res = run_cli("frobnicate")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_version_is_the_package_version():
    import drifthelpers

    res = run_cli("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"drifthelpers {drifthelpers.__version__}"


HELP_PROBE = """
import sys
from drifthelpers.__main__ import main
for argv in {argvs!r}:
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
heavy = sorted(m for m in ("torch", "numba", "papermill", "rawpy") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""

SUBCOMMAND_HELP = [["--help"], ["info", "--help"], ["run", "--help"], ["sweep", "--help"], ["data", "--help"],
                   ["data", "mini", "--help"], ["data", "download", "--help"], ["forensics", "--help"],
                   ["render", "--help"], ["--version"]]


def test_help_of_every_subcommand_imports_no_torch_or_numba():
    code = HELP_PROBE.format(argvs=SUBCOMMAND_HELP)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--tolerance" in res.stdout and "--force" in res.stdout  # the forensics and render options
    assert res.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_module_help_import_trace_has_no_torch():
    """``python -X importtime -m drifthelpers forensics --help``, as a user runs it."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "drifthelpers", "forensics", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--checkpoint" in res.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "drifthelpers.__main__" in imported or "drifthelpers" in imported
    assert not {m for m in imported if m.split(".")[0] in ("torch", "numba")}


def test_every_profile_option_offers_the_profiles_table():
    """``run``, ``sweep`` and ``forensics`` take their ``--profile`` choices from one table."""
    from drifthelpers import batch, profiles
    from drifthelpers.__main__ import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("run", "sweep", "forensics"):
        (option,) = [a for a in commands[name]._actions if "--profile" in a.option_strings]
        assert tuple(option.choices) == profiles.NAMES == batch.PROFILES, name
    for bad in (["run", "--profile", "huge"], ["forensics", "--profile", "huge"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


MINI_ARGS = ("--seed", "0", "--size", "64", "--n-microscopy", "9", "--min-per-class", "1", "--n-drone", "2",
             "--workers", "1")


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_data_mini_twice_gives_identical_trees_and_a_third_run_reuses(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        res = run_cli("data", "mini", "--root", root, *MINI_ARGS)
        assert res.returncode == 0, res.stderr
        assert f"microscopy: {root / 'mini' / 'microscopy'}" in res.stdout
        assert f"drone: {root / 'mini' / 'drone'}" in res.stdout
    first, second = tree_bytes(a), tree_bytes(b)
    assert len(first) > 70 and any(k.endswith("camera.json") for k in first)
    assert first == second
    stamps = {p: p.stat().st_mtime_ns for p in a.rglob("*") if p.is_file()}
    res = run_cli("data", "mini", "--root", a, *MINI_ARGS)
    assert res.returncode == 0, res.stderr
    assert "Reusing mini microscopy" in res.stdout and "Reusing mini drone" in res.stdout
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*") if p.is_file()} == stamps


def test_data_mini_force_rebuilds_the_same_bytes(tmp_path, capsys):
    from drifthelpers.__main__ import main

    assert main(["data", "mini", "--root", str(tmp_path), *MINI_ARGS, "--which", "drone"]) == 0
    before = {p: (p.read_bytes(), p.stat().st_ino) for p in (tmp_path / "mini" / "drone").rglob("*.tiff")}
    assert main(["data", "mini", "--root", str(tmp_path), *MINI_ARGS, "--which", "drone", "--force"]) == 0
    assert "Built mini drone" in capsys.readouterr().out
    after = {p: (p.read_bytes(), p.stat().st_ino) for p in (tmp_path / "mini" / "drone").rglob("*.tiff")}
    assert {p: v[0] for p, v in after.items()} == {p: v[0] for p, v in before.items()}
    assert all(after[p][1] != before[p][1] for p in before)  # new files, not the old ones kept
    assert not (tmp_path / "mini" / "microscopy").exists()


def test_data_mini_bad_size_is_a_message(tmp_path):
    res = run_cli("data", "mini", "--root", tmp_path, "--size", "63")
    assert res.returncode == 2 and "size must be an even number" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "mini" / "microscopy").exists()


def test_render_of_a_data_set_tiff_uses_its_camera_json(tmp_path, capsys):
    """A mini-data TIFF renders with the set's black level, white balance and colour matrix."""
    import tifffile
    import torch
    from PIL import Image

    from drifthelpers import datasets, isp
    from drifthelpers.__main__ import main

    ds = datasets.build_mini(root=tmp_path, which="microscopy", n_microscopy=9, min_per_class=1, size=64,
                             progress=False, workers=1)["microscopy"]
    tiff = ds / "images" / "raw_scale100" / "mini_0003.tiff"
    out = tmp_path / "view.png"
    assert main(["render", str(tiff), "-o", str(out)]) == 0, capsys.readouterr().err
    with Image.open(out) as im:
        got = np.asarray(im)
    camera = datasets.DatasetCamera.from_dict(json.loads((ds / "camera.json").read_text()))
    assert camera.black_level[0] > 0 and camera.wb_gains != (1.0, 1.0, 1.0)
    mosaic = torch.from_numpy(tifffile.imread(tiff).astype(np.float32))[None, None]

    def rendered(cam):
        with torch.no_grad():
            rgb = isp.render(mosaic, "bi,s,ga", cam)[0]
        return (rgb.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)

    assert np.array_equal(got, rendered(isp.CameraParams.from_dataset_camera(camera)))
    # what LibRaw makes of the TIFF on its own: black 0, unit gains, no colour matrix
    libraw_view = rendered(isp.CameraParams(camera.cfa, (0.0,) * 4, camera.white_level))
    assert np.abs(got.astype(int) - libraw_view.astype(int)).mean() > 2
