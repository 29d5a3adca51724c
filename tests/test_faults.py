"""Bad input and faults at the command line, in batch runs and in sweeps: a corpus of cases.

Every case is something a careful or a hostile user does. Each expects one ``error:`` line
that names the file or the parameter, exit status 2 (130 for Ctrl-C), no traceback, and
nothing lost, half-written or planted. A new sub-command or option should be added here
and tried against the same cases.

Most cases call :func:`drifthelpers.__main__.main` in this process (it returns the exit
status; an uncaught exception fails the test as a traceback would); Ctrl-C and the live
sweep run as real subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_batch import make_notebook

from drifthelpers.__main__ import main
from drifthelpers.batch import ParameterError, check_parameters, list_notebooks, make_run_dir, run_notebooks
from drifthelpers.fileio import default_file_mode
from drifthelpers.sweep import SweepLocked, load_manifest, rerun_failed, run_sweep

PARAMS = 'seed = 0\nscale = 1.0\nflag = False\nvalues = [0.5]\nlabel = "a"\noutput_dir = "."'
BODY = (
    "import json, pathlib\n"
    "out = pathlib.Path(output_dir); out.mkdir(parents=True, exist_ok=True)\n"
    "(out / 'results.json').write_text(json.dumps({'value': seed * scale}))\n"
)


def cli(argv, capsys):
    """Run the command line in this process: (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def nb_dir(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    make_notebook(d / "01_calc.ipynb", PARAMS, BODY)
    return d


@pytest.fixture(scope="module")
def mini_tiff(tmp_path_factory):
    """A TIFF mosaic of a (tiny) mini microscopy set, with the set's camera.json above it."""
    from drifthelpers import datasets

    root = tmp_path_factory.mktemp("faults_mini")
    path = datasets.build_mini(root=root, which="microscopy", n_microscopy=9, min_per_class=1, size=64,
                               progress=False, workers=1)["microscopy"]
    return path / "images" / "raw_scale100" / "mini_0000.tiff"


# --------------------------------------------------------------------------- run: names, parameters, folders

BAD_RUN_ARGS = [
    (["--name", ".."], "plain folder name"),
    (["--name", "../escape"], "plain folder name"),
    (["--name", "a/b"], "plain folder name"),
    (["--name", "a\\b"], "plain folder name"),
    (["--name", "ABSOLUTE"], "plain folder name"),  # replaced by an absolute path in tmp_path
    (["--name", ""], "non-empty folder name"),
    (["--name", " x"], "plain folder name"),
    (["-p", "seed", "True"], "'seed' of 01_calc.ipynb expects int"),
    (["-p", "flag", "1"], "'flag' of 01_calc.ipynb expects bool"),
    (["-p", "scale", "1e999"], "'scale' of 01_calc.ipynb must be finite"),
    (["-p", "scale", "inf"], "'scale' of 01_calc.ipynb expects float"),
    (["-p", "values", "[1.0, -1e999]"], "'values' of 01_calc.ipynb must be finite"),
    (["-p", "seed", str(2**70)], "'seed' of 01_calc.ipynb is out of the 64-bit integer range"),
    (["-p", "values", "(1.0,)"], "'values' of 01_calc.ipynb expects list"),
    (["-p", "seed", "1", "-p", "seed", "2"], "-p seed is given twice"),
    (["-p", "nope", "1"], "unknown parameter(s) 'nope'"),
]


@pytest.mark.parametrize("args,message", BAD_RUN_ARGS, ids=[" ".join(a) or "empty" for a, _ in BAD_RUN_ARGS])
def test_run_refuses_bad_names_and_values_before_writing(nb_dir, tmp_path, capsys, args, message):
    runs = tmp_path / "runs"
    args = [str(tmp_path / "absolute-run") if a == "ABSOLUTE" else a for a in args]
    code, _, err = cli(["run", "--notebook-dir", nb_dir, "--runs-dir", runs, "--no-progress", *args], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err, err
    assert not runs.exists()
    assert not (tmp_path / "escape").exists() and not (tmp_path / "absolute-run").exists()


def test_run_refuses_an_existing_run_folder(nb_dir, tmp_path, capsys):
    earlier = tmp_path / "runs" / "kept"
    earlier.mkdir(parents=True)
    (earlier / "summary.json").write_text('{"earlier": true}')
    code, _, err = cli(["run", "--notebook-dir", nb_dir, "--runs-dir", tmp_path / "runs", "--name", "kept",
                        "--no-progress"], capsys)
    assert code == 2 and f"{earlier} exists" in err
    assert files_under(earlier) == {"summary.json": b'{"earlier": true}'}


def test_two_runs_with_one_name_at_once_one_is_refused(tmp_path):
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def attempt():
        barrier.wait()
        try:
            make_run_dir(tmp_path, "same")
            outcomes.append("created")
        except FileExistsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] + ["refused"] * 5


def test_default_run_names_never_collide(tmp_path):
    names = {make_run_dir(tmp_path, None).name for _ in range(3)}  # within one second
    sweeps = {make_run_dir(tmp_path, None, prefix="sweep-").name for _ in range(3)}
    assert len(names) == 3 and len(sweeps) == 3 and all(n.startswith("sweep-") for n in sweeps)


@pytest.mark.parametrize("make", ["file", "file/below"])
def test_runs_dir_that_is_a_file(nb_dir, tmp_path, capsys, make):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    runs = tmp_path / make.replace("file", "blocker")
    code, _, err = cli(["run", "--notebook-dir", nb_dir, "--runs-dir", runs, "--no-progress"], capsys)
    assert code == 2 and err.startswith("error: ") and "blocker" in err
    assert blocker.read_text() == "not a folder"


def test_summary_stores_typed_values_with_ordinary_file_modes(nb_dir, tmp_path):
    run_notebooks(parameters={"seed": "3", "scale": "4", "flag": "True", "values": "[1, 2.5]", "label": "7"},
                  run_name="typed", runs_dir=tmp_path, notebook_dir=nb_dir, progress=False, log=lambda m: None)
    run = tmp_path / "typed"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parameters"] == {"seed": 3, "scale": 4.0, "flag": True, "values": [1, 2.5], "label": "7"}
    assert isinstance(summary["parameters"]["scale"], float) and summary["status"] == "ok"
    assert summary["interrupted"] is False
    assert summary["notebooks"][0]["results"]["results"] == {"value": 12.0}
    for name in ("summary.json", "summary.md"):
        assert (run / name).stat().st_mode & 0o777 == default_file_mode()
    assert not [p for p in run.iterdir() if p.name.endswith(".part")]


def test_strict_types_in_the_python_api(nb_dir):
    nbs = list_notebooks(nb_dir)
    assert check_parameters(nbs, {"seed": 2, "scale": 2, "flag": False}) == {
        "01_calc.ipynb": {"seed": 2, "scale": 2.0, "flag": False}}
    for bad in ({"seed": True}, {"seed": 2.0}, {"flag": 0}, {"scale": float("nan")}, {"scale": True},
                {"values": [float("inf")]}):
        with pytest.raises(ParameterError):
            check_parameters(nbs, bad)


def test_booleans_take_the_shells_spelling_and_nothing_else(nb_dir):
    """`-p flag true` (as the docs write it) and `-p flag True` are booleans; other words are not."""
    nbs = list_notebooks(nb_dir)
    for text, value in (("true", True), ("TRUE", True), ("True", True), ("false", False), ("False", False)):
        assert check_parameters(nbs, {"flag": text}) == {"01_calc.ipynb": {"flag": value}}
    for bad in ("yes", "1", "0", "on", "truthy"):
        with pytest.raises(ParameterError, match="expects bool"):
            check_parameters(nbs, {"flag": bad})


def test_ctrl_c_during_run_writes_an_interrupted_summary(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    make_notebook(nbs / "01_calc.ipynb", PARAMS, BODY)
    started = tmp_path / "started"
    make_notebook(nbs / "02_wait.ipynb", "marker = ''",
                  "import pathlib, time\npathlib.Path(marker).write_text('x')\ntime.sleep(120)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "drifthelpers", "run", "--notebook-dir", str(nbs), "--runs-dir", str(tmp_path / "runs"),
         "--name", "r", "--no-progress", "-p", "marker", str(started)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert started.exists(), proc.stderr.read() if proc.poll() is not None else "notebook 02 did not start"
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the foreground group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: the run stopped"), err
    run = tmp_path / "runs" / "r"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["status"] == "interrupted"
    assert [(n["notebook"], n["status"]) for n in summary["notebooks"]] == [("01_calc.ipynb", "ok"),
                                                                           ("02_wait.ipynb", "interrupted")]
    assert "INTERRUPTED" in (run / "summary.md").read_text()


# --------------------------------------------------------------------------- sweep

BAD_SWEEP_ARGS = [
    (["--grid", "seed=0,1", "--workers", "0"], "--workers: expected a whole number >= 1"),
    (["--grid", "seed=0,1", "--threads-per-job", "-3"], "--threads-per-job: expected a whole number >= 1"),
    (["--grid", "seed=0,1", "--workers", "two"], "--workers: expected a whole number >= 1"),
    (["--grid", "seed=0,1", "--name", "../x"], "plain folder name"),
    (["--grid", "seed=True,1"], "expects int"),
    (["--grid", "scale=1.0,1e999"], "must be finite"),
    (["--grid", "scale=1.0", "-p", "seed", "False"], "expects int"),
]


@pytest.mark.parametrize("args,message", BAD_SWEEP_ARGS, ids=[" ".join(a) for a, _ in BAD_SWEEP_ARGS])
def test_sweep_refuses_bad_input_before_writing(nb_dir, tmp_path, capsys, args, message):
    runs = tmp_path / "runs"
    code, _, err = cli(["sweep", "--notebook-dir", nb_dir, "--runs-dir", runs, *args], capsys)
    assert code == 2 and message in err, err
    assert "Traceback" not in err
    assert not runs.exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("kw,message", [({"workers": 0}, "--workers"), ({"threads_per_job": -3}, "--threads-per-job"),
                                         ({"workers": True}, "--workers"), ({"name": ".."}, "plain folder name")])
def test_sweep_api_refuses_counts_and_names_before_writing(nb_dir, tmp_path, kw, message):
    with pytest.raises(ParameterError, match=message):  # SweepError is a ParameterError
        run_sweep({"seed": ["0", "1"]}, notebook_dir=nb_dir, runs_dir=tmp_path / "runs", progress=False,
                  **{"name": "s", **kw})
    assert not (tmp_path / "runs").exists()


def test_sweep_refuses_an_existing_folder_without_manifest(nb_dir, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    code, _, err = cli(["sweep", "--notebook-dir", nb_dir, "--runs-dir", tmp_path, "--name", "taken",
                        "--grid", "seed=0"], capsys)
    assert code == 2 and "taken exists" in err
    assert files_under(tmp_path / "taken") == {"notes.txt": b"mine"}


WAIT_BODY = (
    "import json, pathlib, time\n"
    "pathlib.Path(started).write_text('x')\n"
    "deadline = time.time() + 120\n"
    "while not pathlib.Path(release).exists() and time.time() < deadline:\n"
    "    time.sleep(0.05)\n"
    "out = pathlib.Path(output_dir); out.mkdir(parents=True, exist_ok=True)\n"
    "(out / 'results.json').write_text(json.dumps({'value': seed}))\n"
)


def test_rerun_failed_refuses_a_sweep_that_is_still_running(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    started, release = tmp_path / "started", tmp_path / "release"
    make_notebook(nbs / "01_wait.ipynb", f"seed = 0\nstarted = {str(started)!r}\nrelease = {str(release)!r}\n"
                  "output_dir = '.'", WAIT_BODY)
    sweep = tmp_path / "runs" / "live"
    proc = subprocess.Popen(
        [sys.executable, "-m", "drifthelpers", "sweep", "--notebook-dir", str(nbs),
         "--runs-dir", str(tmp_path / "runs"), "--name", "live", "--grid", "seed=0", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert started.exists(), "the sweep's job did not start"
        job = sweep / "jobs" / "j000-seed=0"
        assert load_manifest(sweep)["jobs"]["j000-seed=0"]["status"] == "running" and job.is_dir()
        with pytest.raises(SweepLocked, match="in use by another process"):
            rerun_failed(sweep, progress=False)
        code, _, err = cli(["sweep", "--rerun-failed", sweep], capsys)
        assert code == 2 and "in use by another process" in err
        assert job.is_dir() and not (sweep / "attempts").exists()  # the live job was left alone
    finally:
        release.write_text("go")
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    manifest = load_manifest(sweep)
    assert manifest["jobs"]["j000-seed=0"]["attempts"] == 1
    for name in ("sweep.json", "results.csv", "results.json", "results.md", "records/j000-seed=0.json"):
        assert (sweep / name).stat().st_mode & 0o777 == default_file_mode(), name
    assert rerun_failed(sweep, progress=False).ran == []  # unlocked again once the sweep finished


# --------------------------------------------------------------------------- render


def test_render_refuses_to_overwrite_its_input(mini_tiff, tmp_path, capsys):
    before = mini_tiff.read_bytes()
    alias = mini_tiff.parent / ".." / mini_tiff.parent.name / mini_tiff.name
    for output, extra in ((mini_tiff, []), (mini_tiff, ["--force"]), (alias, ["--force"])):
        code, _, err = cli(["render", mini_tiff, "-o", output, *extra], capsys)
        assert code == 2 and "is the input file" in err
    assert mini_tiff.read_bytes() == before


def test_render_refuses_an_existing_output_without_force(mini_tiff, tmp_path, capsys):
    out = tmp_path / "view.png"
    out.write_bytes(b"earlier image")
    code, _, err = cli(["render", mini_tiff, "-o", out], capsys)
    assert code == 2 and f"{out} exists" in err and "--force" in err
    assert out.read_bytes() == b"earlier image"
    code, stdout, _ = cli(["render", mini_tiff, "-o", out, "--force"], capsys)
    assert code == 0 and f"wrote {out}" in stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case,message", [("folder.png", "is a folder"), ("missing/view.png", "does not exist"),
                                          ("view.jpg", "must end in .png")])
def test_render_bad_output_paths(mini_tiff, tmp_path, capsys, case, message):
    (tmp_path / "folder.png").mkdir()
    code, _, err = cli(["render", mini_tiff, "-o", tmp_path / case], capsys)
    assert code == 2 and message in err and err.startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.png"]


def test_render_checks_a_read_only_folder_before_rendering(mini_tiff, tmp_path, capsys, monkeypatch):
    from drifthelpers import isp

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == tmp_path else real_access(p, mode))

    def must_not_render(*a, **k):
        raise AssertionError("rendered before checking the output folder")

    monkeypatch.setattr(isp.files, "load_raw_file", must_not_render)
    code, _, err = cli(["render", mini_tiff, "-o", tmp_path / "v.png"], capsys)
    assert code == 2 and f"folder {tmp_path} is not writable" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into read-only folders")
def test_render_into_a_real_read_only_folder(mini_tiff, tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = cli(["render", mini_tiff, "-o", locked / "v.png"], capsys)
    finally:
        locked.chmod(0o755)
    assert code == 2 and "not writable" in err and not list(locked.iterdir())


def test_a_failing_image_write_leaves_nothing_and_exits_2(mini_tiff, tmp_path, capsys, monkeypatch):
    from PIL import Image

    def disk_full(self, fp, *a, **k):
        Path(fp).write_bytes(b"half an image")
        raise OSError(28, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", disk_full)
    code, _, err = cli(["render", mini_tiff, "-o", tmp_path / "v.png"], capsys)
    assert code == 2 and "No space left on device" in err
    assert list(tmp_path.iterdir()) == []


def test_concurrent_renders_to_one_output_do_not_share_a_temporary_file(mini_tiff, tmp_path):
    from drifthelpers import isp

    out = tmp_path / "same.png"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def render():
        barrier.wait()
        try:
            isp.render_file(mini_tiff, output=out)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=render) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["same.png"]
    assert out.stat().st_mode & 0o777 == default_file_mode()


# --------------------------------------------------------------------------- data


def test_data_mini_into_a_file_is_a_message(tmp_path, capsys):
    root = tmp_path / "afile"
    root.write_text("x")
    code, _, err = cli(["data", "mini", "--root", root, "--size", "64", "--n-microscopy", "9",
                        "--min-per-class", "1", "--n-drone", "2"], capsys)
    assert code == 2 and err.startswith("error: ") and str(root) in err
    assert root.read_text() == "x"


# Each sub-command, and the function inside it that touches the file system.
HANDLERS = [
    (["info", "x.dng"], "drifthelpers.raw", "read_raw"),
    (["run", "--no-progress"], "drifthelpers.batch", "run_notebooks"),
    (["sweep", "--grid", "seed=0"], "drifthelpers.sweep", "run_sweep"),
    (["sweep", "--rerun-failed", "somewhere"], "drifthelpers.sweep", "rerun_failed"),
    (["data", "mini"], "drifthelpers.datasets", "ensure_mini"),
    (["data", "mini", "--force"], "drifthelpers.datasets", "build_mini"),
    (["data", "download", "raw-drone"], "drifthelpers.datasets", "download"),
    (["render", "x.dng", "-o", "x.png"], "drifthelpers.isp", "render_file"),
    (["forensics"], "drifthelpers.cli_forensics", "run_cli"),
]


@pytest.mark.parametrize("argv,module,name", HANDLERS, ids=[" ".join(a[:2]) for a, _, _ in HANDLERS])
def test_every_handler_turns_os_errors_into_exit_2(tmp_path, capsys, monkeypatch, argv, module, name):
    """An ``OSError`` from deep inside any sub-command is one ``error:`` line and exit 2."""
    import importlib

    where = str(tmp_path / "mini")

    def unwritable(*a, **k):
        raise PermissionError(13, "Permission denied", where)

    monkeypatch.setattr(importlib.import_module(module), name, unwritable)
    code, _, err = cli(argv, capsys)
    assert code == 2 and err == f"error: [Errno 13] Permission denied: '{where}'\n"


@pytest.mark.parametrize("args, message", [
    (["--n-drone", "-1"], "n_drone must be an integer >= 1"),
    (["--seed", "-1"], "seed must be an integer >= 0"),
    (["--size", "63"], "size must be an even number"),
])
def test_data_mini_bad_sizes_are_refused_before_anything_is_made(tmp_path, capsys, args, message):
    root = tmp_path / "data"
    assert main(["data", "mini", "--root", str(root), *args]) == 2
    out, err = capsys.readouterr()
    assert message in err
    assert "building" not in out
    assert not root.exists() or not any(root.rglob("*"))


def test_mini_build_lock_excludes_a_second_builder(tmp_path):
    """The mini-set lock is a real inter-process lock (filelock), held while building."""
    from filelock import FileLock

    from drifthelpers.datasets.files import _exclusive_lock

    lock_path = tmp_path / "mini" / ".microscopy.lock"
    with _exclusive_lock(lock_path):
        probe = ("import sys; from filelock import FileLock, Timeout\n"
                 "try:\n    FileLock(sys.argv[1]).acquire(timeout=0.2)\nexcept Timeout:\n"
                 "    sys.exit(3)\n")
        held = subprocess.run([sys.executable, "-c", probe, str(lock_path)])
        assert held.returncode == 3
    with FileLock(str(lock_path)).acquire(timeout=1):  # released again
        pass
