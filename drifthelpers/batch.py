"""Headless execution of the notebook collection with papermill.

``python -m drifthelpers run`` (and ``./drift run``) lands here: every notebook
in ``notebooks/`` (or a selection) runs in file-name order, with parameters
checked before anything runs, into ``runs/<name or timestamp>/``. Each
notebook receives ``output_dir`` (its own folder inside the run) when it
declares that parameter, and writes its key numbers there as JSON; the run
collects them into ``summary.json`` and ``summary.md`` (headline values, package
versions, git commit), and writes every figure of each executed notebook as PNG and
SVG files into ``<run>/<notebook>/figures/`` (see :mod:`drifthelpers.runreport`).

A failing notebook is named with the cell that failed; the partially executed
notebook is kept, the remaining notebooks are skipped, and the command exits
non-zero. A run folder is created exclusively (an existing one is refused, so two
runs never mix their files), and its name must be a plain folder name. Ctrl-C
stops the run with ``summary.json`` / ``summary.md`` written and marked
``interrupted``. The notebook kernels' own log lines go to ``<run>/kernel.log``.
"""

from __future__ import annotations

import ast
import datetime as _dt
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .fileio import atomic_write_json, atomic_write_text
from .profiles import NAMES as PROFILES
from .runreport import environment, export_figures, write_summary_markdown

__all__ = [
    "NOTEBOOK_DIR",
    "ParameterError",
    "NotebookFailed",
    "RunInterrupted",
    "NotebookResult",
    "check_name",
    "make_run_dir",
    "list_notebooks",
    "notebook_parameters",
    "check_parameters",
    "typed_parameters",
    "run_notebooks",
    "hygiene_problems",
    "clean_notebook",
]

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


class ParameterError(ValueError):
    """A parameter override is unknown to a notebook or has the wrong type."""


class NotebookFailed(RuntimeError):
    """A notebook raised while it ran; names the notebook, the cell and the kept output."""

    def __init__(self, notebook: str, cell: int | None, error: str, output: Path):
        self.notebook, self.cell, self.error, self.output = notebook, cell, error, output
        where = f"code cell {cell}" if cell is not None else "an unknown cell"
        super().__init__(f"{notebook} failed in {where}: {error}\n  partial output kept in {output}")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; ``summary.json`` in ``run_dir`` says which notebooks finished."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        super().__init__(f"run interrupted; partial results in {run_dir}")


@dataclass
class NotebookResult:
    notebook: str
    output: Path
    seconds: float
    status: str
    results: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)


def list_notebooks(notebook_dir: str | os.PathLike | None = None, select: list[str] | None = None) -> list[Path]:
    """Notebooks in teaching order (file-name order), optionally a selection.

    A selection item matches a notebook by file name, stem, or numeric prefix
    (``"01"``, ``"01_raw_acquisition"``, ``"01_raw_acquisition.ipynb"``).
    """
    root = Path(notebook_dir) if notebook_dir else NOTEBOOK_DIR
    if not root.is_dir():
        raise FileNotFoundError(f"notebook folder {root} does not exist")
    found = sorted(p for p in root.glob("*.ipynb") if not p.name.startswith("."))
    if not select:
        return found
    chosen = []
    for item in select:
        hits = [p for p in found if item in (p.name, p.stem) or p.stem.split("_", 1)[0] == item]
        if not hits:
            names = ", ".join(p.stem for p in found) or "(none)"
            raise FileNotFoundError(f"no notebook matches {item!r}; available: {names}")
        chosen += [h for h in hits if h not in chosen]
    return sorted(chosen)


def notebook_parameters(path: str | os.PathLike) -> dict[str, dict]:
    """The names, literal defaults and inferred types of a notebook's ``parameters`` cell."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) > 1:
        raise ParameterError(f"{Path(path).name} has {len(cells)} cells tagged 'parameters'; exactly one is allowed")
    if not cells:
        return {}
    params: dict[str, dict] = {}
    tree = ast.parse(cells[0].source)
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        else:
            raise ParameterError(f"{Path(path).name}: the parameters cell may only assign literals to names")
        try:
            default = ast.literal_eval(value)
        except ValueError:
            raise ParameterError(
                f"{Path(path).name}: parameter {target!r} is not a literal; derived values belong in the next cell"
            ) from None
        params[target] = {"default": default, "type": type(default).__name__}
    return params


INT64_RANGE = (-(2**63), 2**63 - 1)


def _check_value(name: str, value, notebook: str) -> None:
    """Refuse values no notebook can use: non-finite floats, integers beyond 64 bits."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(f"parameter {name!r} of {notebook} must be finite, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
        raise ParameterError(f"parameter {name!r} of {notebook} is out of the 64-bit integer range: {value!r}")
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _check_value(name, item, notebook)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_value(name, key, notebook)
            _check_value(name, item, notebook)


def _same_kind(raw, default) -> bool:
    """``raw`` has the type of ``default``; ``bool`` and ``int`` are different types here."""
    if isinstance(default, bool) or isinstance(raw, bool):
        return isinstance(raw, bool) and isinstance(default, bool)
    return isinstance(raw, type(default))


def _coerce(name: str, value, spec: dict, notebook: str):
    """Convert a command-line string to the type of the notebook's default, strictly.

    ``True`` is not an integer, ``1`` is not a boolean; floats must be finite and
    integers fit in 64 bits (also inside lists and dicts).
    """
    default = spec["default"]
    if not isinstance(value, str):
        raw = value
    else:
        try:
            raw = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raw = value  # a bare word is a string
        if isinstance(default, bool) and value.strip().lower() in ("true", "false"):
            raw = value.strip().lower() == "true"  # the shell's spelling, as in `-p allow_cpu true`
    if default is None or _same_kind(raw, default):
        _check_value(name, raw, notebook)
        return raw
    if isinstance(default, float) and isinstance(raw, int) and not isinstance(raw, bool):
        _check_value(name, raw, notebook)
        return float(raw)
    if isinstance(default, str) and isinstance(raw, (int, float)) and isinstance(value, str):
        return value
    raise ParameterError(
        f"parameter {name!r} of {notebook} expects {type(default).__name__} "
        f"(default {default!r}), got {value!r}"
    )


def check_parameters(notebooks: list[Path], overrides: dict[str, object]) -> dict[str, dict]:
    """Validate overrides against every selected notebook before anything runs.

    A name must be a parameter of at least one selected notebook; it is passed
    to those that declare it, converted to the type of their default.

    Returns:
        Per notebook name, the parameters to inject.
    """
    declared = {nb.name: notebook_parameters(nb) for nb in notebooks}
    valid = sorted({name for params in declared.values() for name in params})
    unknown = [name for name in overrides if name not in valid]
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))}; "
            f"valid parameters of the selected notebooks: {', '.join(valid) or '(none)'}"
        )
    per_nb: dict[str, dict] = {}
    for nb, params in declared.items():
        per_nb[nb] = {k: _coerce(k, v, params[k], nb) for k, v in overrides.items() if k in params}
    return per_nb


def _failed_cell(nb_path: Path) -> tuple[int | None, str]:
    """The number (1-based, among the source notebook's code cells) of the first cell with
    an error output, and its message."""
    import nbformat

    try:
        nb = nbformat.read(str(nb_path), as_version=4)
    except Exception:
        return None, "unknown error"
    code_index = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue  # count as in the source notebook, without papermill's injected cell
        code_index += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return code_index, f"{out.get('ename')}: {out.get('evalue')}"
    return None, "unknown error"


def check_name(name: str, what: str = "--name") -> str:
    """A run or sweep folder name: one plain path component (no separators, no ``..``).

    Raises:
        ParameterError: for an empty name, ``.`` or ``..``, a name with ``/`` or ``\\``
            (on every OS), a NUL byte, or surrounding spaces.
    """
    if not isinstance(name, str) or not name:
        raise ParameterError(f"{what} must be a non-empty folder name, got {name!r}")
    if name in (".", "..") or any(c in name for c in ("/", "\\", "\0")) or name != name.strip():
        raise ParameterError(
            f"{what} must be a plain folder name (no '/', '\\', '..' or surrounding spaces), got {name!r}"
        )
    return name


def make_run_dir(base: str | os.PathLike, name: str | None, what: str = "--name", prefix: str = "") -> Path:
    """Create ``base/name`` exclusively and return it.

    With ``name=None`` the name is ``prefix`` and a timestamp (``-2``, ``-3``, ...
    appended when a folder of that second exists); a given name that exists is refused.

    Raises:
        ParameterError: a bad name, or ``base`` is not a folder.
        FileExistsError: ``base/name`` exists.
    """
    base = Path(base)
    if name is not None:
        check_name(name, what)
    if base.exists() and not base.is_dir():
        raise ParameterError(f"runs folder {base} is not a folder")
    base.mkdir(parents=True, exist_ok=True)
    if name is not None:
        path = base / name
        try:
            path.mkdir()
        except FileExistsError:
            raise FileExistsError(
                f"{path} exists; choose another {what} (earlier results are never overwritten)") from None
        return path
    stamp = prefix + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        path = base / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run folder name for {stamp} in {base}")


def run_notebooks(
    select: list[str] | None = None,
    parameters: dict[str, object] | None = None,
    profile: str = "quick",
    run_name: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    notebook_dir: str | os.PathLike | None = None,
    progress: bool = True,
    kernel_name: str | None = None,
    log: Callable[[str], None] | None = None,
) -> list[NotebookResult]:
    """Execute notebooks headless, in order, into ``runs/<run_name>/``.

    Args:
        select: notebooks to run (see :func:`list_notebooks`); all when ``None``.
        parameters: overrides by name, validated against the notebooks first.
        profile: ``"quick"`` (default) or ``"paper"``; passed to notebooks that
            declare a ``profile`` parameter.
        run_name: folder name inside ``runs_dir`` (a plain name, created exclusively:
            an existing folder is refused); a timestamp when ``None``.
        runs_dir: where runs go; ``<repo>/runs`` by default.
        notebook_dir: where the notebooks are; ``<repo>/notebooks`` by default.
        progress: show papermill's per-cell progress bar.
        kernel_name: Jupyter kernel; the current Python environment by default.
        log: where the one-line start/finish messages go (default: standard output;
            pass ``lambda msg: None`` to silence them).

    Returns:
        One :class:`NotebookResult` per notebook run.

    Raises:
        ParameterError: before anything runs, for unknown or ill-typed parameters
            or a bad run name.
        FileExistsError: the run folder exists.
        NotebookFailed: when a notebook raises (after saving its partial output).
        RunInterrupted: on Ctrl-C, after writing the summary marked ``interrupted``.
    """
    import papermill as pm

    if profile not in PROFILES:
        raise ParameterError(f"profile must be one of {PROFILES}, got {profile!r}")
    notebooks = list_notebooks(notebook_dir, select)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks found in {notebook_dir or NOTEBOOK_DIR}")
    overrides = dict(parameters or {})
    per_nb = check_parameters(notebooks, overrides)
    declared = {nb.name: notebook_parameters(nb) for nb in notebooks}

    log = log or _say
    typed = typed_parameters(notebooks, per_nb, overrides)
    base = Path(runs_dir) if runs_dir else NOTEBOOK_DIR.parent / "runs"
    run_dir = make_run_dir(base, run_name).resolve()  # absolute: kernels run in the notebook folder
    repo = notebooks[0].parent

    results: list[NotebookResult] = []
    current, start = notebooks[0], time.perf_counter()
    try:
        for current in notebooks:
            params = dict(per_nb[current.name])
            for name, value in (("output_dir", str(run_dir / current.stem)), ("profile", profile)):
                if name in declared[current.name] and name not in params:
                    params[name] = value
            log(f"[drifthelpers run] {current.name} -> {run_dir / current.name}")
            start = time.perf_counter()
            results.append(_run_one(pm, current, run_dir, params, progress, kernel_name))
            log(f"[drifthelpers run] {current.name} done in {results[-1].seconds:.1f} s")
    except KeyboardInterrupt:
        results.append(NotebookResult(current.name, run_dir / current.name, time.perf_counter() - start,
                                      "interrupted"))
        _write_summary(run_dir, results, profile, typed, interrupted=True, repo=repo)
        raise RunInterrupted(run_dir) from None
    except NotebookFailed:
        results.append(NotebookResult(current.name, run_dir / current.name, time.perf_counter() - start, "failed"))
        _write_summary(run_dir, results, profile, typed, repo=repo)
        raise
    _write_summary(run_dir, results, profile, typed, repo=repo)
    return results


#: Options given to an IPython kernel: matplotlib's inline figures as PNG and as SVG.
KERNEL_OPTIONS = ("--InlineBackend.figure_formats=png", "--InlineBackend.figure_formats=svg")


def _kernel_manager(log_path: Path) -> type:
    """A Jupyter kernel manager whose kernel writes its own stderr to ``log_path``.

    The kernel's log lines (and its complaints while it is shut down on Ctrl-C) then
    stay in the run folder instead of interleaving with the command's messages. An
    IPython kernel also gets :data:`KERNEL_OPTIONS`, so that every figure reaches the
    executed notebook in both formats (the notebooks themselves stay unchanged).
    """
    from jupyter_client.manager import AsyncKernelManager

    class _LoggedKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if any("ipykernel" in str(part) for part in kernel_cmd):
                kernel_cmd = [*kernel_cmd, *KERNEL_OPTIONS]
            with open(log_path, "ab") as fh:
                kw["stderr"] = fh
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return _LoggedKernelManager


def _run_one(pm, nb: Path, run_dir: Path, params: dict, progress: bool, kernel_name: str | None) -> NotebookResult:
    """Execute one notebook into ``run_dir`` and collect the JSON files of its output folder.

    The kernel's own stderr goes to ``<run>/kernel.log``; the notebook's figures go to
    ``<run>/<notebook>/figures/`` as PNG and SVG files.
    """
    out_dir = run_dir / nb.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = run_dir / nb.name
    start = time.perf_counter()
    def execute():
        pm.execute_notebook(str(nb), str(out_nb), parameters=params, cwd=str(nb.parent),
                            kernel_name=kernel_name or "python3", progress_bar=progress, log_output=False,
                            kernel_manager_class=_kernel_manager(run_dir / "kernel.log"))

    try:
        try:
            execute()
        except RuntimeError as exc:  # a kernel that died while starting ran no cell: start it once more
            if "before replying to kernel_info" not in str(exc):
                raise
            execute()
    except Exception as exc:
        cell, error = _failed_cell(out_nb)
        if error == "unknown error":
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise NotebookFailed(nb.name, cell, error, out_nb) from None
    seconds = time.perf_counter() - start
    collected = {}
    for jf in sorted(out_dir.glob("*.json")):
        try:
            collected[jf.stem] = json.loads(jf.read_text())
        except json.JSONDecodeError:
            collected[jf.stem] = {"error": f"{jf.name} is not valid JSON"}
    files = export_figures(out_nb, out_dir / "figures")
    figures = {"folder": f"{nb.stem}/figures", "figures": files.figures, "png": len(files.png),
               "svg": len(files.svg)}
    return NotebookResult(nb.name, out_nb, seconds, "ok", collected, figures)


def typed_parameters(notebooks: list[Path], per_nb: dict[str, dict], overrides: dict) -> dict:
    """Each override as the typed value passed (from the first notebook declaring it).

    Args:
        notebooks: the notebooks run.
        per_nb: :func:`check_parameters`'s result for ``overrides``.
        overrides: the overrides by name, as given.
    """
    typed = {}
    for key in overrides:
        typed[key] = next(per_nb[nb.name][key] for nb in notebooks if key in per_nb[nb.name])
    return typed


def _say(message: str) -> None:
    print(message, flush=True)


def _write_summary(run_dir: Path, results: list[NotebookResult], profile: str, parameters: dict,
                   interrupted: bool = False, repo: Path | None = None) -> None:
    """``summary.json`` (typed parameter values) and ``summary.md``, each written atomically.

    Both record the package versions and the git state of the repository that holds
    the notebooks (``"unknown"`` without git).
    """
    summary = {
        "profile": profile,
        "parameters": dict(parameters),
        "status": "interrupted" if interrupted else (
            "failed" if any(r.status == "failed" for r in results) else "ok"),
        "interrupted": interrupted,
        "notebooks": [
            {
                "notebook": r.notebook,
                "status": r.status,
                "seconds": round(r.seconds, 2),
                "output": str(r.output),
                "results": r.results,
                "figures": r.figures,
            }
            for r in results
        ],
        "environment": environment(repo or NOTEBOOK_DIR.parent),
    }
    atomic_write_json(run_dir / "summary.json", summary, indent=2, default=str)
    write_summary_markdown(run_dir, summary)


# --------------------------------------------------------------------------- notebook hygiene

_CELL_METADATA = {"tags"}
_NB_METADATA = {"kernelspec", "language_info"}
MAX_NOTEBOOK_BYTES = 200_000


def hygiene_problems(path: str | os.PathLike) -> list[str]:
    """What keeps a committed notebook from being clean (empty list = clean).

    Clean means: no execution counts; no outputs; no cell metadata but tags; notebook
    metadata limited to kernelspec and language_info; exactly one ``parameters`` cell
    of literals; under 200 kB. (Deterministic facts are checked by cells tagged
    ``nbval-check`` that ``assert`` them, so a wrong fact fails the nbval run; nbval
    itself cannot compare stored outputs without execution counts.)
    """
    import nbformat

    path = Path(path)
    problems = []
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        problems.append(f"larger than {MAX_NOTEBOOK_BYTES // 1000} kB ({path.stat().st_size // 1000} kB)")
    nb = nbformat.read(str(path), as_version=4)
    try:
        notebook_parameters(path)
    except ParameterError as exc:
        problems.append(str(exc))
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{len(tagged)} cells tagged 'parameters' (exactly one expected)")
    for i, cell in enumerate(nb.cells):
        extra = set(cell.get("metadata", {})) - _CELL_METADATA
        if extra:
            problems.append(f"cell {i}: volatile metadata {sorted(extra)}")
        if cell.cell_type != "code":
            continue
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i}: execution count {cell.execution_count}")
        if cell.get("outputs"):
            problems.append(f"cell {i}: stray outputs")
    extra = set(nb.metadata) - _NB_METADATA
    if extra:
        problems.append(f"notebook metadata {sorted(extra)}")
    return problems


def clean_notebook(path: str | os.PathLike) -> bool:
    """Strip execution counts, outputs and volatile metadata in place; True if changed."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.get("metadata", {}).items() if k in _CELL_METADATA}
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.outputs = []
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in _NB_METADATA}
    after = nbformat.writes(nb)
    if after != before:
        atomic_write_text(path, after)
        return True
    return False

