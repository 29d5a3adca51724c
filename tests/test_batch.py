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


# --------------------------------------------------------------------------- run folder: figures, summary.md

def _executed_with_figures(path):
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (0, 128, 255)).save(buf, format="PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    nb = nbformat.v4.new_notebook()
    both = nbformat.v4.new_output("display_data", data={"image/png": png, "image/svg+xml": "<svg>a</svg>"})
    only_png = nbformat.v4.new_output("display_data", data={"image/png": png})
    text = nbformat.v4.new_output("stream", name="stdout", text="no figure")
    nb.cells = [nbformat.v4.new_code_cell("a", execution_count=1, outputs=[text, both]),
                nbformat.v4.new_markdown_cell("# words"),
                nbformat.v4.new_code_cell("b", execution_count=2, outputs=[only_png])]
    nbformat.write(nb, str(path))
    return buf.getvalue()


def test_export_figures_writes_png_and_svg_per_figure(tmp_path):
    from drifthelpers.runreport import export_figures

    png = _executed_with_figures(tmp_path / "nb.ipynb")
    files = export_figures(tmp_path / "nb.ipynb", tmp_path / "figures")
    assert files.figures == 2
    assert [p.name for p in files.png] == ["figure-01.png", "figure-02.png"]
    assert [p.name for p in files.svg] == ["figure-01.svg"]  # no SVG made up for a PNG-only figure
    assert (tmp_path / "figures" / "figure-02.png").read_bytes() == png
    assert (tmp_path / "figures" / "figure-01.svg").read_text() == "<svg>a</svg>"


def test_headline_values_rule():
    from drifthelpers.runreport import headline_values

    results = {"profile": "quick", "n": 3, "ok": True, "long": "x" * 200, "curve": [1, 2, 3],
               "mini": {"drone": 48, "counts": {"A": 1}, "ratio": 0.25},
               "claims": [{"claim": "c1", "value": 1.5, "low": 1.0, "high": 2.0, "verdict": "supported"}]}
    scalars, claims = headline_values(results)
    assert scalars == [("profile", "quick"), ("n", 3), ("ok", True), ("mini.drone", 48), ("mini.ratio", 0.25)]
    assert [c["claim"] for c in claims] == ["c1"]


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   check=True, capture_output=True)


def test_environment_records_versions_commit_and_dirty_tree(tmp_path):
    from drifthelpers.runreport import environment

    env = environment(tmp_path)  # not a repository
    assert env["git"] == {"commit": "unknown", "dirty": None}
    assert env["packages"]["numpy"] and env["packages"]["drifthelpers"] and env["python"].count(".") == 2
    _git(tmp_path, "init", "-q")
    (tmp_path / "f.txt").write_text("1")
    _git(tmp_path, "add", "f.txt")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert environment(tmp_path)["git"] == {"commit": head.strip(), "dirty": False}
    (tmp_path / "f.txt").write_text("2")
    assert environment(tmp_path)["git"]["dirty"] is True


def test_summary_markdown_shows_values_figures_versions_and_commit(tmp_path):
    from drifthelpers.runreport import summary_markdown

    summary = {
        "profile": "quick", "status": "ok", "interrupted": False,
        "notebooks": [{"notebook": "01_a.ipynb", "status": "ok", "seconds": 2.0,
                       "results": {"results": {"accuracy": 0.83333, "claims": [
                           {"claim": "a beats b", "value": 0.1, "low": -0.05, "high": 0.2, "verdict": "undecided",
                            "paper": 0.2}]}},
                       "figures": {"folder": "01_a/figures", "figures": 2, "png": 2, "svg": 2}}],
        "environment": {"python": "3.11.7", "packages": {"torch": "2.9.0"},
                        "git": {"commit": "abc123", "dirty": True}},
    }
    text = summary_markdown(tmp_path / "myrun", summary)
    assert text.startswith("# Run myrun (profile: quick)")
    assert "| 01_a.ipynb | ok | 2.0 | 2 (2, 2) in 01_a/figures/ | results |" in text
    assert "| `accuracy` | 0.8333 |" in text
    assert "| a beats b | 0.1 [-0.05, 0.2] | undecided | 0.2 |" in text
    assert "| torch | 2.9.0 |" in text and "| python | 3.11.7 |" in text
    assert "git commit: `abc123`; uncommitted changes: yes" in text


def test_run_writes_figures_and_environment(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    make_notebook(d / "01_plot.ipynb", "n = 2", "import matplotlib.pyplot as plt\nplt.plot(range(n))\nplt.show()")
    run_notebooks(runs_dir=tmp_path / "runs", run_name="p", notebook_dir=d, progress=False, log=lambda m: None)
    run = tmp_path / "runs" / "p"
    assert sorted(p.name for p in (run / "01_plot" / "figures").iterdir()) == ["figure-01.png", "figure-01.svg"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["notebooks"][0]["figures"] == {"folder": "01_plot/figures", "figures": 1, "png": 1, "svg": 1}
    assert summary["environment"]["git"] == {"commit": "unknown", "dirty": None}  # tmp_path is no repository
    assert "git commit: `unknown`" in (run / "summary.md").read_text()
