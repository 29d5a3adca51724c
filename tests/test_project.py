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
    """Committed notebooks carry no stray outputs, execution counts or volatile metadata."""
    from drifthelpers.batch import hygiene_problems

    assert hygiene_problems(path) == []


def test_hygiene_check_catches_a_dirty_notebook(tmp_path):
    """The check can fail: outputs, counts and metadata of an executed notebook are caught, and cleaned."""
    from drifthelpers.batch import clean_notebook, hygiene_problems

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seed = 0")
    params.metadata["tags"] = ["parameters"]
    dirty = nbformat.v4.new_code_cell("print(1)", execution_count=3)
    dirty.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    dirty.metadata["collapsed"] = True
    nb.cells = [params, dirty]
    nb.metadata["widgets"] = {"state": {}}
    path = tmp_path / "dirty.ipynb"
    nbformat.write(nb, str(path))
    problems = " | ".join(hygiene_problems(path))
    assert "execution count 3" in problems and "stray outputs" in problems
    assert "collapsed" in problems and "widgets" in problems
    assert clean_notebook(path) is True
    assert hygiene_problems(path) == []
    assert clean_notebook(path) is False


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_papermill_sees_every_parameter(path):
    """papermill's own inspector (``papermill --help-notebook``) skips a line it cannot read,
    e.g. one whose comment holds a second '=': every parameter must be visible to it."""
    import papermill

    from drifthelpers.batch import notebook_parameters

    assert set(papermill.inspect_notebook(str(path))) == set(notebook_parameters(path))
