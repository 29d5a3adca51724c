"""Headless execution with papermill (drifthelpers.batch), on small notebooks made here."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest

from drifthelpers.batch import (
    NotebookFailed,
    ParameterError,
    check_parameters,
    list_notebooks,
    notebook_parameters,
    run_notebooks,
)


def make_notebook(path, params_src, body_src):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), p, nbformat.v4.new_code_cell(body_src)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def nb_dir(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    make_notebook(
        d / "01_first.ipynb",
        'seed = 1\nscale = 2.0\nlabel = "a"\noutput_dir = "."',
        "import json, pathlib\n"
        "pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)\n"
        "(pathlib.Path(output_dir) / 'results.json').write_text(json.dumps({'value': seed * scale, 'label': label}))",
    )
    make_notebook(d / "02_second.ipynb", "seed = 0", "x = seed + 1")
    return d


def test_list_and_select(nb_dir):
    assert [p.name for p in list_notebooks(nb_dir)] == ["01_first.ipynb", "02_second.ipynb"]
    assert [p.name for p in list_notebooks(nb_dir, ["02"])] == ["02_second.ipynb"]
    assert [p.name for p in list_notebooks(nb_dir, ["01_first"])] == ["01_first.ipynb"]
    with pytest.raises(FileNotFoundError, match="available: 01_first, 02_second"):
        list_notebooks(nb_dir, ["03"])


def test_parameters_read_from_tagged_cell(nb_dir):
    params = notebook_parameters(nb_dir / "01_first.ipynb")
    assert params == {
        "seed": {"default": 1, "type": "int"},
        "scale": {"default": 2.0, "type": "float"},
        "label": {"default": "a", "type": "str"},
        "output_dir": {"default": ".", "type": "str"},
    }


def test_non_literal_parameter_rejected(tmp_path):
    path = make_notebook(tmp_path / "x.ipynb", "seed = 1\nn = seed * 2", "pass")
    with pytest.raises(ParameterError, match="not a literal"):
        notebook_parameters(path)


def test_check_parameters_types(nb_dir):
    nbs = list_notebooks(nb_dir)
    per = check_parameters(nbs, {"seed": "3", "scale": "4"})
    assert per["01_first.ipynb"] == {"seed": 3, "scale": 4.0}
    assert per["02_second.ipynb"] == {"seed": 3}
    with pytest.raises(ParameterError, match="unknown parameter.*'epochs'.*valid parameters.*label, output_dir, scale, seed"):
        check_parameters(nbs, {"epochs": "3"})
    with pytest.raises(ParameterError, match="'seed'.*expects int"):
        check_parameters(nbs, {"seed": "abc"})


def test_run_collects_results(nb_dir, tmp_path):
    results = run_notebooks(
        parameters={"seed": "3"}, run_name="t", runs_dir=tmp_path / "runs", notebook_dir=nb_dir, progress=False
    )
    run = tmp_path / "runs" / "t"
    assert [r.status for r in results] == ["ok", "ok"]
    assert (run / "01_first.ipynb").is_file() and (run / "02_second.ipynb").is_file()
    assert json.loads((run / "01_first" / "results.json").read_text()) == {"value": 6.0, "label": "a"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["notebooks"][0]["results"]["results"]["value"] == 6.0
    assert "| 01_first.ipynb | ok |" in (run / "summary.md").read_text()


def test_failure_names_notebook_and_cell_and_keeps_output(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    make_notebook(d / "01_bad.ipynb", "seed = 0", "raise RuntimeError('deliberate failure')")
    make_notebook(d / "02_never.ipynb", "seed = 0", "pass")
    with pytest.raises(NotebookFailed, match=r"01_bad.ipynb failed in code cell 2: RuntimeError: deliberate failure") as info:
        run_notebooks(runs_dir=tmp_path / "runs", run_name="f", notebook_dir=d, progress=False)
    assert info.value.output.is_file()
    assert not (tmp_path / "runs" / "f" / "02_never.ipynb").exists()
    summary = json.loads((tmp_path / "runs" / "f" / "summary.json").read_text())
    assert summary["notebooks"][0]["status"] == "failed"


def test_cli_rejects_bad_parameter_before_running(nb_dir, tmp_path):
    runs = tmp_path / "runs"
    res = subprocess.run(
        [sys.executable, "-m", "drifthelpers", "run", "--notebook-dir", str(nb_dir), "--runs-dir", str(runs), "-p", "no_such_param", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "unknown parameter" in res.stderr and "valid parameters" in res.stderr
    assert not runs.exists()


def test_cli_run_prints_where_results_are(nb_dir, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "drifthelpers", "run", "--notebook-dir", str(nb_dir), "--runs-dir", str(tmp_path),
         "--name", "cli", "--no-progress", "02"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert f"Results: {tmp_path / 'cli'}" in res.stdout
    assert (tmp_path / "cli" / "02_second.ipynb").is_file()
