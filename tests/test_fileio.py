"""drifthelpers.fileio: atomic writes, no-overwrite, unique temporaries, file modes."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from drifthelpers import fileio


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_json_round_trip_and_newline(tmp_path):
    path = fileio.atomic_write_json(tmp_path / "r.json", {"a": [1, 2.5]})
    text = path.read_text()
    assert text.endswith("\n")
    assert json.loads(text) == {"a": [1, 2.5]}


def test_mode_matches_plain_open(tmp_path):
    plain = tmp_path / "plain"
    with open(plain, "w") as fh:
        fh.write("x")
    atomic = fileio.atomic_write_text(tmp_path / "atomic", "x")
    assert _mode(atomic) == _mode(plain) == fileio.default_file_mode()
    assert _mode(atomic) != 0o600 or fileio.default_file_mode() == 0o600


def test_overwrite_false_refuses_and_keeps_old(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")
    with pytest.raises(FileExistsError, match="keep.txt"):
        fileio.atomic_write_text(path, "new", overwrite=False)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_overwrite_false_loses_race_atomically(tmp_path):
    """The file appears while the block runs: the late writer fails, the first one wins."""
    path = tmp_path / "race.txt"
    with pytest.raises(FileExistsError):
        with fileio.atomic_output(path, overwrite=False) as tmp:
            tmp.write_text("late")
            path.write_text("first")
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["race.txt"]


def test_failure_leaves_nothing(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_output(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_unserialisable_json_keeps_old_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("{}")
    with pytest.raises(TypeError):
        fileio.atomic_write_json(path, {"x": object()})
    assert path.read_text() == "{}"


def test_concurrent_writers_use_distinct_temporaries(tmp_path):
    """Many threads write one target: every write completes, the result is one of them."""
    path = tmp_path / "shared.txt"
    payloads = [f"writer {i} " * 1000 for i in range(16)]
    errors: list[BaseException] = []

    def write(text):
        try:
            fileio.atomic_write_text(path, text)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert path.read_text() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]
