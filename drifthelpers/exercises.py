"""Checked code exercises in the notebooks, and the student version of the collection.

Conventions in a notebook (``docs/teaching.md`` explains them for teachers):

* An exercise's solution is a code cell tagged ``solution``. Its first line names the
  exercise, ``# Exercise <label>: <task>``, and the lines the student writes sit between
  ``# BEGIN SOLUTION`` and ``# END SOLUTION`` (nbgrader's markers). The committed notebooks
  keep the solutions, so the whole collection runs headless and its checks pass.
* The cell after it, tagged ``exercise-check``, calls :func:`check`, which prints a clear
  pass or fail line and raises :class:`AssertionError` with the check's message on a fail.
* :func:`student_notebook` replaces each marked region by its stub, one line
  ``raise NotImplementedError("Exercise <label>: replace this line with your code")`` at the
  region's indentation, so the student version runs up to the first exercise and stops there
  with that message.
  ``python -m drifthelpers student OUT_DIR`` writes the student version of every notebook.

The stub is derived from the solution cell rather than stored beside it: one source of
truth, nothing hidden in cell metadata (the hygiene check allows only tags), and no stub
cell that would stop a headless run of the committed notebooks.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "SOLUTION_TAG",
    "CHECK_TAG",
    "ExerciseFormatError",
    "check",
    "install_cell",
    "stub_source",
    "student_notebook",
    "write_student_versions",
    "install_cell_source",
    "set_install_cell",
]

SOLUTION_TAG = "solution"
CHECK_TAG = "exercise-check"
_BEGIN, _END = "# BEGIN SOLUTION", "# END SOLUTION"
_HEADER = re.compile(r"^#\s*(Exercise\s+\S+?):.*\S\s*$")


class ExerciseFormatError(ValueError):
    """A ``solution`` cell that does not follow the conventions (names notebook and cell)."""


def _as_array(value: Any):
    import numpy as np

    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def check(name: str, value: Any, expected: Any, *, rtol: float = 1e-5, atol: float = 1e-8,
          hint: str = "") -> None:
    """Compare an exercise's answer with the expected one; print the verdict.

    Arrays, tensors and numbers are compared with ``numpy.testing.assert_allclose`` (shapes
    must match); anything else (strings, tuples of names) with ``==``.

    Args:
        name: what is checked, e.g. ``"Exercise 1: CFA sampling"``.
        value: the student's answer.
        expected: the reference answer (computed by the notebook, never typed in).
        rtol, atol: tolerances of the numeric comparison.
        hint: one sentence that helps when the answer is wrong.

    Raises:
        AssertionError: the answer is wrong; the message names the check, says how the
            answer differs and repeats the hint.

    Example:
        >>> check("sum of 1..4", sum(range(5)), 10)
        ✓ sum of 1..4: correct
    """
    import numpy as np

    numeric = not isinstance(expected, (str, bytes)) and _as_array(expected).dtype.kind in "biufc"
    try:
        if numeric:
            got, want = _as_array(value), _as_array(expected)
            if got.shape != want.shape:
                raise AssertionError(f"shape {got.shape}, expected {want.shape}")
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg="", verbose=True)
        elif value != expected:
            raise AssertionError(f"got {value!r}, expected {expected!r}")
    except AssertionError as exc:
        detail = " ".join(str(exc).split())[:300]
        message = f"{name}: not right yet ({detail})" + (f". Hint: {hint}" if hint else "")
        print(f"✗ {message}")
        raise AssertionError(message) from None
    print(f"✓ {name}: correct")


def stub_source(source: str, where: str = "cell") -> str:
    """The student's version of one ``solution`` cell: each marked region becomes a stub.

    Args:
        source: the solution cell's source.
        where: names the cell in error messages (e.g. ``"01_raw_acquisition.ipynb, cell 12"``).

    Returns:
        The source with every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` region replaced by
        ``raise NotImplementedError("Exercise <label>: replace this line with your code")`` at
        the marker's indentation.

    Raises:
        ExerciseFormatError: no ``# Exercise <label>: <task>`` first line, no region, or
            unbalanced markers.

    Example:
        >>> print(stub_source("# Exercise 1: add\\ndef f(a, b):\\n    # BEGIN SOLUTION\\n"
        ...                   "    return a + b\\n    # END SOLUTION"))
        # Exercise 1: add
        def f(a, b):
            raise NotImplementedError("Exercise 1: replace this line with your code")
    """
    lines = source.splitlines()
    header = _HEADER.match(lines[0]) if lines else None
    if header is None:
        raise ExerciseFormatError(f"{where}: a solution cell must start with '# Exercise <label>: <task>'")
    message = f"{header.group(1)}: replace this line with your code"
    out, inside, regions = [], False, 0
    for line in lines:
        stripped = line.strip()
        if stripped == _BEGIN:
            if inside:
                raise ExerciseFormatError(f"{where}: '{_BEGIN}' inside a solution region")
            inside, regions = True, regions + 1
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})")
        elif stripped == _END:
            if not inside:
                raise ExerciseFormatError(f"{where}: '{_END}' without '{_BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside or regions == 0:
        raise ExerciseFormatError(f"{where}: needs balanced '{_BEGIN}' / '{_END}' lines")
    return "\n".join(out)


def student_notebook(nb, name: str = "notebook"):
    """A copy of a notebook (``nbformat.NotebookNode``) with solutions stubbed, outputs cleared.

    Raises:
        ExerciseFormatError: a ``solution`` cell breaks the conventions.
    """
    import copy

    student = copy.deepcopy(nb)
    for i, cell in enumerate(student.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            cell.source = stub_source(cell.source, f"{name}, cell {i}")
            cell.metadata["tags"] = [t for t in cell.metadata["tags"] if t != SOLUTION_TAG] + ["exercise"]
    return student


def write_student_versions(out_dir: str | os.PathLike, notebook_dir: str | os.PathLike | None = None,
                           *, overwrite: bool = False) -> list[Path]:
    """Write the student version of every notebook of ``notebook_dir`` into ``out_dir``.

    Args:
        out_dir: destination folder (created); files already there are refused unless
            ``overwrite``.
        notebook_dir: the committed notebooks (default: the repository's ``notebooks/``).
        overwrite: replace existing student notebooks.

    Returns:
        The written paths, in notebook order.

    Raises:
        FileNotFoundError: no notebooks in ``notebook_dir``.
        FileExistsError: a destination exists and ``overwrite`` is False (nothing written).
        ExerciseFormatError: a ``solution`` cell breaks the conventions (nothing written).
    """
    import nbformat

    from .fileio import atomic_write_text

    src = Path(notebook_dir) if notebook_dir else Path(__file__).resolve().parent.parent / "notebooks"
    paths = sorted(src.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no notebooks (NN_name.ipynb) in {src}")
    out = Path(out_dir)
    targets = [out / p.name for p in paths]
    if not overwrite:
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} exist(s); pass --force to replace")
    texts = [nbformat.writes(student_notebook(nbformat.read(str(p), as_version=4), p.name)) for p in paths]
    out.mkdir(parents=True, exist_ok=True)
    for target, text in zip(targets, texts):
        atomic_write_text(target, text, overwrite=overwrite)
    return targets


def set_install_cell(path: str | os.PathLike, repository_url: str) -> bool:
    """Rewrite the ``install``-tagged cell of a notebook for ``repository_url``.

    Returns:
        True if the file changed.

    Raises:
        ValueError: the notebook has no cell tagged ``install``, or more than one.
    """
    import nbformat

    from .fileio import atomic_write_text

    nb, cell = install_cell(path)
    source = install_cell_source(repository_url)
    if cell.source == source:
        return False
    cell.source = source
    atomic_write_text(path, nbformat.writes(nb))
    return True


def install_cell(path: str | os.PathLike):
    """``(notebook, its install cell)`` of the notebook file ``path``.

    Raises:
        ValueError: the notebook has no cell tagged ``install``, or more than one.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "install" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: {len(cells)} cells tagged 'install' (exactly one expected)")
    return nb, cells[0]


def install_cell_source(repository_url: str = "") -> str:
    """The source of a notebook's ``install`` cell.

    A no-op where ``drifthelpers`` is importable (a checkout set up with ``./drift``);
    elsewhere (Colab, a bare Jupyter) it installs the package with pip from the git URL in
    the environment variable ``DRIFTHELPERS_GIT_URL``, else from ``repository_url``; with
    neither it stops with a message saying what to set.
    """
    return (
        "# Colab, Binder or a bare Jupyter: install drifthelpers if it is missing (else a no-op)\n"
        "import importlib.util, os, subprocess, sys\n"
        "if importlib.util.find_spec(\"drifthelpers\") is None:\n"
        f"    url = os.environ.get(\"DRIFTHELPERS_GIT_URL\", \"{repository_url}\")\n"
        "    if not url:\n"
        "        raise RuntimeError(\"drifthelpers is not installed: set DRIFTHELPERS_GIT_URL to \"\n"
        "                           \"the repository's git URL, or pip install the package\")\n"
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", f\"git+{url}\"],\n"
        "                   check=True)"
    )
