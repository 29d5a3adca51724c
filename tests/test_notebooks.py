"""The notebooks, executed once with papermill as ``./drift run`` does (the ``executed_run``
fixture of conftest.py, which tests/test_book.py reuses to build the book).

What is checked per notebook: it ran to the end, every code cell ran without an error, and
every cell tagged ``nbval-check`` (the cells that ``assert`` the notebook's facts) ran. The
run folder holds the notebook's figures as PNG and SVG files and a ``summary.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from drifthelpers.runreport import figure_outputs

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted(p.name for p in (Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _statuses(run_dir: Path) -> dict[str, str]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {nb["notebook"]: nb["status"] for nb in summary["notebooks"]}


def _executed(executed_run, name: str):
    run_dir, failure = executed_run
    if failure is not None and failure.notebook == name:
        pytest.fail(str(failure))
    status = _statuses(run_dir)
    assert name in status, f"{name} did not run: {failure.notebook if failure else 'an earlier notebook'} failed first"
    assert status[name] == "ok"
    return nbformat.read(str(run_dir / name), as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_to_the_end_without_errors(executed_run, name):
    nb = _executed(executed_run, name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") is not None for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0]
    checks = [c for c in code if "nbval-check" in c.get("metadata", {}).get("tags", [])]
    assert all(c.get("execution_count") is not None for c in checks)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_run_folder_holds_each_figure_as_png_and_svg(executed_run, name):
    nb = _executed(executed_run, name)
    outputs = list(figure_outputs(nb))
    folder = executed_run[0] / Path(name).stem / "figures"
    pngs, svgs = sorted(folder.glob("figure-*.png")), sorted(folder.glob("figure-*.svg"))
    assert len(pngs) == sum("image/png" in d for d in outputs)
    assert len(svgs) == sum("image/svg+xml" in d for d in outputs)
    if outputs:  # matplotlib's figures reach the notebook as vector SVG too (the runner's kernel option)
        assert svgs and all(b"<svg" in p.read_bytes()[:2000] for p in svgs)
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_summary_shows_values_versions_and_commit(executed_run):
    run_dir, _ = executed_run
    text = (run_dir / "summary.md").read_text()
    assert "## Headline values" in text and "| python |" in text and "| torch |" in text
    assert "git commit: `" in text
    for name in _statuses(run_dir):
        assert f"| {name} |" in text
