"""Checked code exercises: the check helper, the student version (solutions replaced by stubs)
and its command, the notebooks' exercise conventions, and the one-click install cell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from drifthelpers import exercises
from drifthelpers.exercises import ExerciseFormatError, check, stub_source, student_notebook

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"

#: Notebooks that follow the exercise conventions (>= 2 checked exercises, a from-scratch
#: ``check`` cell, the ``install`` cell).
EXERCISE_NOTEBOOKS = ["01_raw_acquisition.ipynb", "02_isp_data_model.ipynb", "03_drift_synthesis.ipynb",
                      "04_drift_forensics.ipynb", "05_drift_optimisation.ipynb"]

#: Parameters injected (like papermill's) into the student-version run up to the first exercise,
#: to keep it short: the lessons before it train their models for one epoch when the checkpoint
#: cache does not hold them, on one data set.
FAST_PARAMETERS = {
    "03_drift_synthesis.ipynb": {"epochs": 1, "which": "microscopy"},
    "04_drift_forensics.ipynb": {"epochs": 1},
    "05_drift_optimisation.ipynb": {"data_sets": ["microscopy"]},
}

SOLUTION = '''# Exercise 2a: add two numbers
def add(a, b):
    # BEGIN SOLUTION
    total = a + b
    return total
    # END SOLUTION


def twice(x):
    # BEGIN SOLUTION
    return 2 * x
    # END SOLUTION'''


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


# --------------------------------------------------------------------------- check()


def test_check_passes_and_says_so(capsys):
    check("numbers", np.arange(3.0), [0.0, 1.0, 2.0 + 1e-9])
    check("names", ["RGGB", "GRBG"], ["RGGB", "GRBG"])
    check("one string", "RGGB", "RGGB")
    assert capsys.readouterr().out.count("✓") == 3


def test_check_fails_with_its_message_and_hint(capsys):
    with pytest.raises(AssertionError, match=r"^Exercise 9: sums: not right yet .*Hint: add them") as info:
        check("Exercise 9: sums", np.array([1.0, 2.0]), np.array([1.0, 2.5]), hint="add them")
    assert "Mismatched elements: 1 / 2" in str(info.value)
    assert capsys.readouterr().out.startswith("✗ Exercise 9: sums")
    with pytest.raises(AssertionError, match=r"shape \(3,\), expected \(2,\)"):
        check("shape", np.zeros(3), np.zeros(2))
    with pytest.raises(AssertionError, match="got 'GRBG', expected 'RGGB'"):
        check("pattern", "GRBG", "RGGB")
    with pytest.raises(AssertionError, match="names"):
        check("names", ["RGGB", "BGGR"], ["RGGB", "GRBG"])


def test_check_accepts_tensors_and_honours_tolerances():
    torch = pytest.importorskip("torch")
    x = torch.linspace(0, 1, 5, requires_grad=True) * 1.0
    check("tensor", x, x.detach().numpy() + 1e-7, rtol=0, atol=1e-6)
    with pytest.raises(AssertionError):
        check("tensor", x, x.detach().numpy() + 1e-5, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- stubs


def test_stub_replaces_each_region_at_its_indentation():
    stub = stub_source(SOLUTION)
    assert stub.splitlines() == [
        "# Exercise 2a: add two numbers",
        "def add(a, b):",
        '    raise NotImplementedError("Exercise 2a: replace this line with your code")',
        "", "",
        "def twice(x):",
        '    raise NotImplementedError("Exercise 2a: replace this line with your code")',
    ]
    namespace: dict = {}
    exec(SOLUTION, namespace)
    assert namespace["add"](2, 3) == 5
    exec(stub, namespace)
    with pytest.raises(NotImplementedError, match="^Exercise 2a: replace this line with your code$"):
        namespace["add"](2, 3)


@pytest.mark.parametrize(
    "source, message",
    [
        ("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION", "must start with '# Exercise"),
        ("# Exercise 1: f\ndef f():\n    return 1", "balanced"),
        ("# Exercise 1: f\n# BEGIN SOLUTION\nx = 1", "balanced"),
        ("# Exercise 1: f\n# END SOLUTION", "without"),
        ("# Exercise 1: f\n# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside"),
    ],
)
def test_malformed_solution_cells_are_named(source, message):
    with pytest.raises(ExerciseFormatError, match=message) as info:
        stub_source(source, where="nb.ipynb, cell 7")
    assert "nb.ipynb, cell 7" in str(info.value)


def _tiny_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    solution = nbformat.v4.new_code_cell(SOLUTION, metadata={"tags": ["solution"]})
    solution.outputs = [nbformat.v4.new_output("stream", text="x\n")]
    solution.execution_count = 4
    checker = nbformat.v4.new_code_cell("check('add', add(2, 3), 5)", metadata={"tags": ["exercise-check"]})
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), solution, checker]
    return nb


def test_student_notebook_stubs_solutions_and_keeps_everything_else():
    nb = _tiny_notebook()
    student = student_notebook(nb, "tiny.ipynb")
    assert student.cells[1].source == stub_source(SOLUTION)
    assert _tags(student.cells[1]) == ["exercise"] and student.cells[1].outputs == []
    assert student.cells[1].execution_count is None
    assert [c.source for c in student.cells[::2]] == [c.source for c in nb.cells[::2]]
    assert nb.cells[1].source == SOLUTION  # the input is not modified
    nb.cells[1].source = "x = 1"
    with pytest.raises(ExerciseFormatError, match="tiny.ipynb, cell 1"):
        student_notebook(nb, "tiny.ipynb")


def test_student_command_writes_refuses_and_overwrites(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(_tiny_notebook(), str(src / "01_tiny.ipynb"))
    (src / "notes.ipynb").write_text("not a lesson")  # not NN_name.ipynb: ignored
    out = tmp_path / "student"
    run = [sys.executable, "-m", "drifthelpers", "student", str(out), "--notebook-dir", str(src)]
    res = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["01_tiny.ipynb"]
    written = nbformat.read(str(out / "01_tiny.ipynb"), as_version=4)
    assert "NotImplementedError" in written.cells[1].source and "total = a + b" not in written.cells[1].source
    before = (out / "01_tiny.ipynb").read_bytes()
    res = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "exist" in res.stderr and "--force" in res.stderr
    assert (out / "01_tiny.ipynb").read_bytes() == before
    res = subprocess.run(run + ["--force"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([*run[:4], str(tmp_path / "x"), "--notebook-dir", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no notebooks" in res.stderr


def test_student_help_imports_no_torch():
    code = ("import sys\nfrom drifthelpers.__main__ import main\ntry:\n    main(['student', '--help'])\n"
            "except SystemExit as exc:\n    assert exc.code == 0\n"
            "print('HEAVY:' + ','.join(m for m in ('torch', 'numba') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "OUT_DIR" in res.stdout and res.stdout.strip().splitlines()[-1] == "HEAVY:"


# --------------------------------------------------------------------------- the notebooks


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(str(NOTEBOOKS / name), as_version=4)


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_notebook_has_checked_exercises_and_a_from_scratch_check(name):
    cells = _read(name).cells
    solutions = [i for i, c in enumerate(cells) if "solution" in _tags(c)]
    assert len(solutions) >= 2, f"{name}: {len(solutions)} solution cell(s)"
    for i in solutions:
        stub_source(cells[i].source, f"{name}, cell {i}")  # follows the conventions
        assert "exercise-check" in _tags(cells[i + 1]), f"{name}, cell {i + 1}: no check after the solution"
        assert "check(" in cells[i + 1].source
    assert any("check" in _tags(c) and "assert" in c.source for c in cells), f"{name}: no from-scratch check"


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_notebook_states_its_equations(name):
    markdown = "\n".join(c.source for c in _read(name).cells if c.cell_type == "markdown")
    assert markdown.count("$$") >= 2 and markdown.count("$$") % 2 == 0, f"{name}: no display equation"


def _repository_url() -> str | None:
    urls = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("urls", {})
    keys = ("repository", "source", "source code", "code", "homepage")
    return next((u for k, u in urls.items() if k.lower() in keys), None)


def _install_cell(name: str):
    nb = _read(name)
    cells = [c for c in nb.cells if "install" in _tags(c)]
    assert len(cells) == 1 and nb.cells.index(cells[0]) <= 2, f"{name}: one install cell, at the top"
    return cells[0]


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_install_cell_is_a_no_op_here_and_installs_from_the_repository_elsewhere(name, monkeypatch):
    import importlib.util

    source = _install_cell(name).source
    default = source.split('os.environ.get("DRIFTHELPERS_GIT_URL", "', 1)[1].split('"', 1)[0]
    assert source == exercises.install_cell_source(default)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a[0]))
    exec(source, {})  # drifthelpers is importable here: nothing may run
    assert calls == []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    url = "https://example.org/drifthelpers.git"
    monkeypatch.setenv("DRIFTHELPERS_GIT_URL", url)
    exec(source, {})  # where it is missing (Colab, a bare Jupyter): pip from the repository
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", f"git+{url}"]]
    monkeypatch.delenv("DRIFTHELPERS_GIT_URL")
    if not default:  # no URL known: a message saying what to set, and no pip call
        with pytest.raises(RuntimeError, match="DRIFTHELPERS_GIT_URL"):
            exec(source, {})
        assert len(calls) == 1


@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_install_cell_names_the_repository_of_pyproject(name):
    url = _repository_url()
    if url is None:
        pytest.skip("pyproject.toml [project.urls] names no repository yet; once it does, run "
                    "exercises.set_install_cell(path, url) on each notebook")
    assert _install_cell(name).source == exercises.install_cell_source(url)


def test_set_install_cell_rewrites_only_that_cell(tmp_path):
    nb = _tiny_notebook()
    nb.cells.insert(0, nbformat.v4.new_code_cell("old", metadata={"tags": ["install"]}))
    path = tmp_path / "01_tiny.ipynb"
    nbformat.write(nb, str(path))
    assert exercises.set_install_cell(path, "https://example.org/r.git") is True
    cells = nbformat.read(str(path), as_version=4).cells
    assert cells[0].source == exercises.install_cell_source("https://example.org/r.git")
    assert [c.source for c in cells[1:]] == [c.source for c in nb.cells[1:]]
    assert exercises.set_install_cell(path, "https://example.org/r.git") is False
    nbformat.write(_tiny_notebook(), str(path))
    with pytest.raises(ValueError, match="0 cells tagged 'install'"):
        exercises.set_install_cell(path, "https://example.org/r.git")


def _slice_to_first_exercise_check(nb: nbformat.NotebookNode, output_dir: Path,
                                   overrides: dict | None = None) -> nbformat.NotebookNode:
    """The notebook up to its first exercise check, with ``output_dir`` and ``overrides``
    injected below the parameters cell like papermill."""
    first = next(i for i, c in enumerate(nb.cells) if "exercise-check" in _tags(c))
    nb.cells = nb.cells[: first + 1]
    return _inject_parameters(nb, output_dir, overrides)


def _inject_parameters(nb: nbformat.NotebookNode, output_dir: Path, overrides: dict | None) -> nbformat.NotebookNode:
    """``output_dir`` and ``overrides`` assigned in a cell below the parameters cell, like papermill."""
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in _tags(c))
    values = {**(overrides or {}), "output_dir": str(output_dir)}
    inject = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()))
    nb.cells = nb.cells[: params + 1] + [inject] + nb.cells[params + 1 :]
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_student_version_runs_up_to_the_first_exercise_and_stops_there(name, tmp_path):
    """The student notebook executes (install cell, setup, lesson) until the first exercise,
    and fails there with the stub's message, in the solution cell or its check, not earlier."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    student = _slice_to_first_exercise_check(student_notebook(_read(name), name), tmp_path / "out",
                                             FAST_PARAMETERS.get(name))
    label = next(c.source.split(":")[0][2:] for c in student.cells if "exercise" in _tags(c))
    client = NotebookClient(student, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(CellExecutionError) as info:
        client.execute()
    assert info.value.ename == "NotImplementedError" and info.value.evalue == f"{label}: replace this line with your code"
    ran = [c for c in student.cells if c.cell_type == "code" and c.execution_count is not None]
    failed = ran[-1]
    assert "exercise" in _tags(failed) or "exercise-check" in _tags(failed), failed.source[:80]
    assert all(o.get("output_type") != "error" for c in ran[:-1] for o in c.outputs)


_PROBE = """\
import json as _json
_outcome = ["passed", ""]
try:
    exec({stub!r}, globals())
    exec({check!r}, globals())
except (NotImplementedError, AssertionError) as _e:
    _outcome = [type(_e).__name__, str(_e)]
exec({solution!r}, globals())
exec({check!r}, globals())
print("STUB-PROBE " + _json.dumps({{"label": {label!r}, "outcome": _outcome}}))
"""


def _with_stub_probes(nb: nbformat.NotebookNode, name: str) -> tuple[nbformat.NotebookNode, list[str]]:
    """After each exercise check, a probe cell that runs the exercise's stub and its check
    (recording how the check fails), then the solution and its check again (the state the
    rest of the notebook expects). Returns the notebook and the exercise labels in order."""
    cells, labels = [], []
    for i, cell in enumerate(nb.cells):
        cells.append(cell)
        if "exercise-check" in _tags(cell):
            solution = nb.cells[i - 1]
            label = solution.source.split(":", 1)[0][2:]
            labels.append(label)
            stub = stub_source(solution.source, f"{name}, cell {i - 1}")
            cells.append(nbformat.v4.new_code_cell(_PROBE.format(stub=stub, check=cell.source,
                                                                 solution=solution.source, label=label)))
    nb.cells = cells
    return nb, labels


def _probe_outcome(check_source: str, capsys) -> list[str]:
    nb = _tiny_notebook()
    nb.cells[2].source = check_source
    probed, labels = _with_stub_probes(nb, "tiny.ipynb")
    assert labels == ["Exercise 2a"] and len(probed.cells) == 4
    namespace = {"check": check}
    for cell in probed.cells[1:]:
        exec(cell.source, namespace)
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("STUB-PROBE ")]
    assert len(line) == 1 and namespace["add"](1, 2) == 3  # the solution is back
    return json.loads(line[0].split(" ", 1)[1])["outcome"]


def test_stub_probe_records_the_stub_failure_and_restores_the_solution(capsys):
    assert _probe_outcome("check('add', add(2, 3), 5)", capsys) == [
        "NotImplementedError", "Exercise 2a: replace this line with your code"]
    # a check that does not exercise the student's code passes with the stub: the probe says so
    assert _probe_outcome("check('add', 2 + 3, 5)", capsys) == ["passed", ""]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_every_stub_fails_its_check_and_every_solution_passes(name, tmp_path):
    """Each exercise in turn, in one kernel: with the stub in place its check cell fails with the
    exercise's message (``Exercise <label>: replace this line with your code``); with the
    solution back it passes, and the notebook goes on to the next exercise."""
    from nbclient import NotebookClient

    nb, labels = _with_stub_probes(_read(name), name)
    last = max(i for i, c in enumerate(nb.cells) if c.source.startswith("import json as _json\n_outcome"))
    nb.cells = nb.cells[: last + 1]
    nb = _inject_parameters(nb, tmp_path / "out", FAST_PARAMETERS.get(name))
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    probes = [json.loads(line.split(" ", 1)[1]) for c in nb.cells if c.cell_type == "code"
              for o in c.outputs if o.get("name") == "stdout"
              for line in o.get("text", "").splitlines() if line.startswith("STUB-PROBE ")]
    assert [p["label"] for p in probes] == labels and len(labels) >= 2
    for p in probes:
        assert p["outcome"] == ["NotImplementedError", f"{p['label']}: replace this line with your code"], p


def test_binder_environment_installs_the_package_cpu_torch_and_the_kernel():
    binder = REPO / "binder"
    requirements = (binder / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    pinned = {line.split(">=")[0] for line in requirements if line and not line.startswith(("#", "-"))}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert pinned and pinned <= {d.split(">=")[0] for d in project["dependencies"]}
    post = binder / "postBuild"
    assert post.stat().st_mode & 0o111, "postBuild must be executable"
    text = post.read_text()
    kernel = _read(EXERCISE_NOTEBOOKS[0]).metadata["kernelspec"]["name"]
    assert "pip install --no-cache-dir -e ." in text and f"--name {kernel} " in text
    assert "drifthelpers data mini" in text
