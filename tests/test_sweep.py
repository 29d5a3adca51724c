"""Parameter sweeps (drifthelpers.sweep): local processes and a Dask LocalCluster.

The sweeps run small notebooks made here (a few seconds per job); one test sweeps the
project's notebook 01 for real through both engines.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_batch import make_notebook

from drifthelpers.batch import ParameterError, list_notebooks
from drifthelpers.sweep import (
    SweepError,
    collect,
    expand_grid,
    load_manifest,
    parse_grid,
    plan_jobs,
    rerun_failed,
    run_sweep,
)

REPO = Path(__file__).resolve().parents[1]

BODY = (
    "import json, os, pathlib\n"
    "if fail_marker and os.path.exists(fail_marker) and seed == 1:\n"
    "    raise RuntimeError('planned failure for seed 1')\n"
    "out = pathlib.Path(output_dir); out.mkdir(parents=True, exist_ok=True)\n"
    "res = {'value': seed * scale, 'nested': {'label': label, 'ok': True}, 'curve': [1, 2, 3],\n"
    "       'threads': os.environ.get('OMP_NUM_THREADS')}\n"
    "(out / 'results.json').write_text(json.dumps(res))\n"
)


@pytest.fixture
def nb_dir(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    make_notebook(
        d / "01_calc.ipynb",
        'seed = 0\nscale = 1.0\nlabel = "x"\nfail_marker = ""\noutput_dir = "."',
        BODY,
    )
    make_notebook(d / "02_other.ipynb", "seed = 0\noutput_dir = '.'", "y = seed")
    return d


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- planning


def test_parse_grid_forms():
    assert parse_grid(["seed=0,1,2", "label=a"]) == {"seed": ["0", "1", "2"], "label": ["a"]}
    assert parse_grid(["lambdas=[[0.0, 1.0], [2.0]]"]) == {"lambdas": ["[0.0, 1.0]", "[2.0]"]}
    assert parse_grid(["name=['a,b', 'c']"]) == {"name": ["a,b", "c"]}
    for bad, msg in [("seed", "NAME=V1"), ("1x=2", "NAME=V1"), ("seed=0,,1", "empty value"), ("seed=[0,", "list literal")]:
        with pytest.raises(SweepError, match=msg):
            parse_grid([bad])
    with pytest.raises(SweepError, match="given twice"):
        parse_grid(["seed=0", "seed=1"])


def test_expand_grid_order_and_errors():
    assert expand_grid({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}
    ]
    with pytest.raises(SweepError, match="at least one --grid"):
        expand_grid({})
    with pytest.raises(SweepError, match="repeats a value"):
        expand_grid({"a": [1, 1]})
    with pytest.raises(SweepError, match="no values"):
        expand_grid({"a": []})


def test_plan_jobs_validates_before_running(nb_dir):
    nbs = list_notebooks(nb_dir)
    jobs = plan_jobs(nbs, {"seed": ["0", "1"], "scale": ["2", "0.5"]})
    assert [j.parameters for j in jobs] == [
        {"seed": 0, "scale": 2.0}, {"seed": 0, "scale": 0.5}, {"seed": 1, "scale": 2.0}, {"seed": 1, "scale": 0.5}
    ]
    assert jobs[0].job_id == "j000-seed=0-scale=2.0" and len({j.job_id for j in jobs}) == 4
    with pytest.raises(ParameterError, match="unknown parameter.*'epochs'.*valid parameters.*seed"):
        plan_jobs(nbs, {"epochs": ["1", "2"]})
    with pytest.raises(ParameterError, match="'seed'.*expects int"):
        plan_jobs(nbs, {"seed": ["0", "one"]})
    with pytest.raises(SweepError, match="both as a grid and as a fixed"):
        plan_jobs(nbs, {"seed": ["0"]}, {"seed": "1"})
    with pytest.raises(ParameterError, match="unknown parameter.*'nope'"):
        plan_jobs(nbs, {"seed": ["0"]}, {"nope": "1"})


# --------------------------------------------------------------------------- running

GRID = {"seed": ["0", "1"], "scale": ["2", "0.5"]}


def test_local_sweep_collects_one_table(nb_dir, tmp_path):
    res = run_sweep(GRID, select=["01"], parameters={"label": "t"}, name="s", runs_dir=tmp_path / "runs",
                    notebook_dir=nb_dir, engine="local", workers=2, progress=False)
    assert res.ok and len(res.ran) == 4
    rows = read_csv(res.table)
    assert [r["job"] for r in rows] == [j.job_id for j in res.jobs]
    assert [(r["seed"], r["scale"], r["status"]) for r in rows] == [
        ("0", "2.0", "ok"), ("0", "0.5", "ok"), ("1", "2.0", "ok"), ("1", "0.5", "ok")
    ]
    # each notebook's scalars become columns (lists are left out); values are what the notebooks computed
    assert [float(r["01/results/value"]) for r in rows] == [0.0, 0.0, 2.0, 0.5]
    assert {r["01/results/nested/label"] for r in rows} == {"t"}
    assert not any("curve" in c for c in rows[0])
    # 2 workers on this machine share its cores: each job's kernel got its share of threads
    import os

    assert {r["01/results/threads"] for r in rows} == {str(max(1, (os.cpu_count() or 1) // 2))}
    sweep = tmp_path / "runs" / "s"
    for job in res.jobs:
        assert (sweep / "jobs" / job.job_id / "01_calc.ipynb").is_file()
        assert (sweep / "records" / f"{job.job_id}.json").is_file()
    manifest = load_manifest(sweep)
    assert manifest["fixed"] == {"label": "t"} and manifest["grid"] == {"seed": [0, 1], "scale": [2.0, 0.5]}
    assert all(j["status"] == "ok" and j["attempts"] == 1 for j in manifest["jobs"].values())
    md = (sweep / "results.md").read_text()
    assert "| j002-seed=1-scale=2.0 | 1 | 2 | ok |" in md
    assert json.loads((sweep / "results.json").read_text())["rows"][2]["01/results/value"] == 2.0
    with pytest.raises(SweepError, match="already exists.*--rerun-failed"):
        run_sweep(GRID, select=["01"], name="s", runs_dir=tmp_path / "runs", notebook_dir=nb_dir, progress=False)


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_table(nb_dir, tmp_path):
    pytest.importorskip("distributed")
    kw = dict(select=["01"], parameters={"label": "t"}, name="s", notebook_dir=nb_dir, workers=2, progress=False)
    local = run_sweep(GRID, runs_dir=tmp_path / "local", engine="local", **kw)
    environ = dict(os.environ)
    dask = run_sweep(GRID, runs_dir=tmp_path / "dask", engine="dask", **kw)
    # Dask's nannies set OMP_NUM_THREADS=1 (and more) in the process that starts a LocalCluster;
    # the sweep puts the environment back, so later notebook kernels keep their threads
    assert dict(os.environ) == environ
    assert local.ok and dask.ok
    assert local.table.read_bytes() == dask.table.read_bytes()
    assert (tmp_path / "local/s/results.json").read_bytes() == (tmp_path / "dask/s/results.json").read_bytes()
    assert load_manifest(tmp_path / "dask" / "s")["jobs"]["j000-seed=0-scale=2.0"]["engine"] == "dask"


@pytest.mark.slow
def test_failed_jobs_rerun_alone(nb_dir, tmp_path):
    marker = tmp_path / "fail-now"
    marker.write_text("")
    runs = tmp_path / "runs"
    first = run_sweep(GRID, select=["01"], parameters={"fail_marker": str(marker)}, name="f", runs_dir=runs,
                      notebook_dir=nb_dir, workers=2, progress=False)
    assert sorted(first.failed) == ["j002-seed=1-scale=2.0", "j003-seed=1-scale=0.5"]
    rows = read_csv(first.table)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert "planned failure for seed 1" in rows[2]["error"] and rows[2]["01/results/value"] == ""
    manifest = load_manifest(runs / "f")
    assert manifest["jobs"]["j002-seed=1-scale=2.0"]["notebook"] == "01_calc.ipynb"
    assert manifest["jobs"]["j002-seed=1-scale=2.0"]["cell"] == 2
    # the partial output of the failed notebook is kept
    assert (runs / "f" / "jobs" / "j002-seed=1-scale=2.0" / "01_calc.ipynb").is_file()
    ok_record = (runs / "f" / "records" / "j000-seed=0-scale=2.0.json").stat().st_mtime_ns

    marker.unlink()  # the cause is fixed; only the failed jobs run again
    second = rerun_failed(runs / "f", workers=2, progress=False)
    assert second.ok and sorted(second.ran) == sorted(first.failed)
    assert (runs / "f" / "records" / "j000-seed=0-scale=2.0.json").stat().st_mtime_ns == ok_record
    assert (runs / "f" / "attempts" / "j002-seed=1-scale=2.0-1" / "01_calc.ipynb").is_file()
    manifest = load_manifest(runs / "f")
    assert manifest["jobs"]["j002-seed=1-scale=2.0"]["attempts"] == 2
    assert manifest["jobs"]["j000-seed=0-scale=2.0"]["attempts"] == 1
    assert [float(r["01/results/value"]) for r in read_csv(second.table)] == [0.0, 0.0, 2.0, 0.5]
    nothing = rerun_failed(runs / "f", progress=False)  # nothing left to do
    assert nothing.ran == [] and nothing.ok


def test_collect_rebuilds_table_and_filters_markdown(nb_dir, tmp_path):
    res = run_sweep({"seed": ["0", "1"]}, select=["01", "02"], name="c", runs_dir=tmp_path, notebook_dir=nb_dir,
                    workers=1, progress=False, columns=["*value"])
    md = (tmp_path / "c" / "results.md").read_text()
    assert "01/results/value" in md and "nested" not in md.split("\n")[2]
    assert "more result column(s) in results.csv" in md
    before = res.table.read_bytes()
    res.table.unlink()
    rows, table = collect(tmp_path / "c")
    assert table.read_bytes() == before and len(rows) == 2


def test_cli_sweep_errors_before_running(nb_dir, tmp_path):
    base = [sys.executable, "-m", "drifthelpers", "sweep", "--notebook-dir", str(nb_dir), "--runs-dir", str(tmp_path / "r")]
    res = subprocess.run(base + ["--grid", "epochs=1,2"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "unknown parameter" in res.stderr and "valid parameters" in res.stderr
    res = subprocess.run(base + ["--grid", "seed=0,x"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "expects int" in res.stderr
    res = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "at least one --grid" in res.stderr
    res = subprocess.run(base + ["--grid", "seed=0", "--address", "tcp://127.0.0.1:1"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "--address is for --engine dask" in res.stderr
    res = subprocess.run(base[:4] + ["--rerun-failed", str(tmp_path / "nowhere")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "is not a sweep folder" in res.stderr
    assert not (tmp_path / "r").exists()


def test_cli_sweep_exit_status_and_rerun_hint(nb_dir, tmp_path):
    marker = tmp_path / "m"
    marker.write_text("")
    cmd = [sys.executable, "-m", "drifthelpers", "sweep", "01", "--notebook-dir", str(nb_dir), "--runs-dir",
           str(tmp_path), "--name", "cli", "--grid", "seed=0,1", "-p", "fail_marker", str(marker), "--workers", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    assert "1 of 2 job(s) ok" in res.stdout
    assert f"--rerun-failed {tmp_path / 'cli'}" in res.stderr
    marker.unlink()
    res = subprocess.run([sys.executable, "-m", "drifthelpers", "sweep", "--rerun-failed", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "2 of 2 job(s) ok; ran 1" in res.stdout


@pytest.mark.slow
def test_real_notebook_sweep_local_and_dask_agree(tmp_path):
    """A 2x2 sweep of notebook 01 through both engines collects the same table."""
    pytest.importorskip("distributed")
    grid = {"seed": ["0", "1"], "flat_pixels": ["64", "128"]}
    tables = []
    for engine in ("local", "dask"):
        res = run_sweep(grid, select=["01"], name="nb01", runs_dir=tmp_path / engine, engine=engine, workers=2,
                        progress=False)
        assert res.ok, {j: load_manifest(res.sweep_dir)["jobs"][j].get("error") for j in res.failed}
        tables.append(res.table.read_bytes())
    assert tables[0] == tables[1]
    rows = read_csv(tmp_path / "local" / "nb01" / "results.csv")
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert len(rows[0]) > 10  # notebook 01's scalar results became columns
