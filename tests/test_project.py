"""The project's promises about itself: layout, dependency lists in step, CI = README test command,
clean notebooks."""

from __future__ import annotations

import re
import sys

import nbformat
import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# conda-forge names that differ from the PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_layout():
    for path in ("notebooks", "drifthelpers", "data/README.md", "tests", "environment.yml", "README.md", "pyproject.toml", ".ci/run"):
        assert (REPO / path).exists(), path


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
        else:
            conda.add(CONDA_TO_PYPI.get(_name(dep), _name(dep)))
    conda -= {"python", "pip"}
    listed = conda | pip
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject.toml: {wanted - listed}"
    assert not conda & pip, "a package is listed twice"
    assert "-e ." in next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == ["./drift test"]
    assert "./drift test" in readme and "./drift run" in readme


def _notebooks():
    return sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_is_clean(path):
    """Committed notebooks carry no stray outputs, execution counts or volatile metadata.

    A cell may keep its output on purpose only when tagged ``nbval-check`` (nbval compares it).
    """
    nb = nbformat.read(str(path), as_version=4)
    assert path.stat().st_size < 200_000, "notebook too large"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        keep = "nbval-check" in cell.metadata.get("tags", [])
        assert cell.get("execution_count") is None, f"cell {i} has an execution count"
        if not keep:
            assert not cell.get("outputs"), f"cell {i} has outputs"
        assert not set(cell.metadata) - {"tags", "nbval-ignore-output"}, f"cell {i} metadata {set(cell.metadata)}"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, f"notebook metadata {set(nb.metadata)}"
