"""Headless execution of the notebook collection with papermill.

``python -m drifthelpers run`` (and ``./drift run``) lands here: every notebook
in ``notebooks/`` (or a selection) runs in file-name order, with parameters
checked before anything runs, into ``runs/<name or timestamp>/``. Each
notebook receives ``output_dir`` (its own folder inside the run) when it
declares that parameter, and writes its key numbers there as JSON; the run
collects them into ``summary.json`` and ``summary.md``.

A failing notebook is named with the cell that failed; the partially executed
notebook is kept, the remaining notebooks are skipped, and the command exits
non-zero.
"""

from __future__ import annotations

import ast
import datetime as _dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "NOTEBOOK_DIR",
    "ParameterError",
    "NotebookFailed",
    "NotebookResult",
    "list_notebooks",
    "notebook_parameters",
    "check_parameters",
    "run_notebooks",
    "hygiene_problems",
    "clean_notebook",
]

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
PROFILES = ("quick", "paper")


class ParameterError(ValueError):
    """A parameter override is unknown to a notebook or has the wrong type."""


class NotebookFailed(RuntimeError):
    """A notebook raised while it ran; names the notebook, the cell and the kept output."""

    def __init__(self, notebook: str, cell: int | None, error: str, output: Path):
        self.notebook, self.cell, self.error, self.output = notebook, cell, error, output
        where = f"code cell {cell}" if cell is not None else "an unknown cell"
        super().__init__(f"{notebook} failed in {where}: {error}\n  partial output kept in {output}")


@dataclass
class NotebookResult:
    notebook: str
    output: Path
    seconds: float
    status: str
    results: dict = field(default_factory=dict)


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


def _coerce(name: str, value, spec: dict, notebook: str):
    """Convert a command-line string to the type of the notebook's default."""
    default = spec["default"]
    if not isinstance(value, str):
        raw = value
    else:
        try:
            raw = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raw = value  # a bare word is a string
    if default is None or isinstance(raw, type(default)):
        return raw
    if isinstance(default, float) and isinstance(raw, int) and not isinstance(raw, bool):
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
        run_name: folder name inside ``runs_dir``; a timestamp when ``None``.
        runs_dir: where runs go; ``<repo>/runs`` by default.
        notebook_dir: where the notebooks are; ``<repo>/notebooks`` by default.
        progress: show papermill's per-cell progress bar.
        kernel_name: Jupyter kernel; the current Python environment by default.
        log: where the one-line start/finish messages go (default: standard output;
            pass ``lambda msg: None`` to silence them).

    Returns:
        One :class:`NotebookResult` per notebook run.

    Raises:
        ParameterError: before anything runs, for unknown or ill-typed parameters.
        NotebookFailed: when a notebook raises (after saving its partial output).
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
    run_name = run_name or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(runs_dir) if runs_dir else NOTEBOOK_DIR.parent / "runs"
    run_dir = run_dir / run_name
    run_dir.mkdir(parents=True, exist_ok=True)

    results: list[NotebookResult] = []
    for nb in notebooks:
        out_dir = run_dir / nb.stem
        out_dir.mkdir(parents=True, exist_ok=True)
        params = dict(per_nb[nb.name])
        if "output_dir" in declared[nb.name] and "output_dir" not in params:
            params["output_dir"] = str(out_dir)
        if "profile" in declared[nb.name] and "profile" not in params:
            params["profile"] = profile
        out_nb = run_dir / nb.name
        log(f"[drifthelpers run] {nb.name} -> {out_nb}")
        start = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb),
                str(out_nb),
                parameters=params,
                cwd=str(nb.parent),
                kernel_name=kernel_name or "python3",
                progress_bar=progress,
                log_output=False,
            )
        except Exception as exc:
            cell, error = _failed_cell(out_nb)
            if error == "unknown error":
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            results.append(NotebookResult(nb.name, out_nb, time.perf_counter() - start, "failed"))
            _write_summary(run_dir, results, profile, overrides)
            raise NotebookFailed(nb.name, cell, error, out_nb) from None
        seconds = time.perf_counter() - start
        collected = {}
        for jf in sorted(out_dir.glob("*.json")):
            try:
                collected[jf.stem] = json.loads(jf.read_text())
            except json.JSONDecodeError:
                collected[jf.stem] = {"error": f"{jf.name} is not valid JSON"}
        results.append(NotebookResult(nb.name, out_nb, seconds, "ok", collected))
        log(f"[drifthelpers run] {nb.name} done in {seconds:.1f} s")
    _write_summary(run_dir, results, profile, overrides)
    return results


def _say(message: str) -> None:
    print(message, flush=True)


def _write_summary(run_dir: Path, results: list[NotebookResult], profile: str, overrides: dict) -> None:
    summary = {
        "profile": profile,
        "parameters": {k: v for k, v in overrides.items()},
        "notebooks": [
            {
                "notebook": r.notebook,
                "status": r.status,
                "seconds": round(r.seconds, 2),
                "output": str(r.output),
                "results": r.results,
            }
            for r in results
        ],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [
        f"# Run {run_dir.name} (profile: {profile})",
        "",
        "| notebook | status | seconds | results |",
        "|---|---|---|---|",
    ]
    for r in results:
        keys = ", ".join(sorted(r.results)) or "-"
        lines.append(f"| {r.notebook} | {r.status} | {r.seconds:.1f} | {keys} |")
    (run_dir / "summary.md").write_text("\n".join(lines) + "\n")


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
        path.write_text(after)
        return True
    return False

