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
