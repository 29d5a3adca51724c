"""Pooling a sweep over seeds of notebook 03: the units of all jobs in one set of intervals."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from drifthelpers import synthesis
from drifthelpers.sweep import MANIFEST_VERSION, SweepError
from drifthelpers.sweep_pool import pool_synthesis, pooled_table

PRESETS = ("bi,s,me", "ma,u,ga", "me,s,ga")


@pytest.fixture(scope="module")
def job_runs(tiny_micro, tmp_path_factory):
    """Three real runs of the experiment (one split each): seeds 0 and 1 (distinct splits), and
    seed 0 again with another epoch count."""
    cache = tmp_path_factory.mktemp("pool_cache")
    cfg = synthesis.SynthesisConfig(dataset="microscopy", model="small_cnn", epochs=1, batch_size=8, n_splits=1,
                                    image_size=32, presets=PRESETS)
    run = lambda c: synthesis.run_synthesis(tiny_micro, c, cache_dir=cache, progress=False, n_boot=100)  # noqa: E731
    return {"a": run(cfg), "b": run(replace(cfg, seed=1)), "other": run(replace(cfg, epochs=2))}


def _sweep(tmp_path, runs: dict, failed: tuple = ()):
    """A sweep folder as ``run_sweep`` leaves it: sweep.json and one record per job."""
    (tmp_path / "records").mkdir()
    jobs = {}
    for jid, run in runs.items():
        ok = jid not in failed
        jobs[jid] = {"parameters": {"seed": run["config"]["seed"]}, "status": "ok" if ok else "failed"}
        record = {"job": jid, "status": jobs[jid]["status"],
                  "results": {"03_drift_synthesis": {"results": {"runs": {"microscopy": run}}}} if ok else {}}
        (tmp_path / "records" / f"{jid}.json").write_text(json.dumps(record))
    manifest = {"version": MANIFEST_VERSION, "name": "pool-test", "grid": {"seed": []}, "fixed": {}, "notebooks": ["03_drift_synthesis.ipynb"],
                "profile": "quick", "jobs": jobs}
    (tmp_path / "sweep.json").write_text(json.dumps(manifest))
    return tmp_path


def test_pooled_intervals_are_those_of_the_merged_units(job_runs, tmp_path):
    a, b = job_runs["a"], job_runs["b"]
    out = pool_synthesis(_sweep(tmp_path, {"j0": a, "j1": b}), n_boot=200)
    entry = out["data_sets"]["microscopy"]
    assert entry["pooled"] and entry["units"] == 2 and entry["seeds"] == [0, 1] and entry["jobs"] == ["j0", "j1"]
    want = synthesis.synthesis_statistics(synthesis.merge_results([a, b]), n_boot=200)
    for name, estimate in entry["statistics"].items():
        assert estimate == want["statistics"][name]
        assert estimate["n"]["units"] == 2
    assert entry["claims"] == want["claims"]
    # a pooled mean is the mean over both jobs' units, not one job's
    both = np.mean([a["statistics"]["mean_drop_faithful"]["value"], b["statistics"]["mean_drop_faithful"]["value"]])
    assert entry["statistics"]["mean_drop_faithful"]["value"] == pytest.approx(both)
    written = json.loads((tmp_path / "pooled_03.json").read_text())
    assert written["data_sets"]["microscopy"]["units"] == 2
    md = (tmp_path / "pooled_03.md").read_text()
    assert md == pooled_table(written) and "2 units from jobs with seeds [0, 1]" in md and "mean_drop_faithful" in md


def test_jobs_that_share_splits_are_not_pooled(job_runs, tmp_path):
    out = pool_synthesis(_sweep(tmp_path, {"j0": job_runs["a"], "j1": job_runs["a"]}), n_boot=50)
    entry = out["data_sets"]["microscopy"]
    assert not entry["pooled"] and "share split seed 0" in entry["reason"] and "statistics" not in entry
    assert "not pooled" in (tmp_path / "pooled_03.md").read_text()


def test_jobs_with_other_settings_are_not_pooled(job_runs, tmp_path):
    other = job_runs["other"]
    out = pool_synthesis(_sweep(tmp_path, {"j0": job_runs["b"], "j1": other}), n_boot=50, write=False)
    entry = out["data_sets"]["microscopy"]
    assert not entry["pooled"] and "differs" in entry["reason"] and "epochs" in entry["reason"]
    assert not (tmp_path / "pooled_03.json").exists()


def test_failed_jobs_are_left_out(job_runs, tmp_path):
    out = pool_synthesis(_sweep(tmp_path, {"j0": job_runs["a"], "j1": job_runs["b"]}, failed=("j1",)), n_boot=50)
    entry = out["data_sets"]["microscopy"]
    assert not entry["pooled"] and entry["jobs"] == ["j0"] and "nothing to pool" in entry["reason"]


def test_no_sweep_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SweepError, match="not a sweep folder"):
        pool_synthesis(tmp_path / "missing")


def test_a_record_that_cannot_be_pooled_is_reported_and_the_sweep_stands(job_runs, tmp_path, capsys):
    from drifthelpers.__main__ import _pool_sweep

    sweep = _sweep(tmp_path, {"j0": job_runs["a"], "j1": job_runs["b"]})
    record = json.loads((sweep / "records" / "j1.json").read_text())
    del record["results"]["03_drift_synthesis"]["results"]["runs"]["microscopy"]["units"]
    (sweep / "records" / "j1.json").write_text(json.dumps(record))
    _pool_sweep(sweep)  # no traceback
    err = capsys.readouterr().err
    assert "notebook 03's jobs were not pooled (KeyError" in err and str(sweep / "records") in err
    assert not (sweep / "pooled_03.json").exists()


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_a_sweep_of_notebook_03_pools_its_jobs_and_says_so(job_runs, tmp_path, capsys, engine):
    """``sweep 03 --grid seed=0,1`` end to end on both engines, with a small notebook 03 that reports
    a stored run under the job's seed: the sweep writes pooled_03.json and the command prints the
    pooled units."""
    from test_batch import make_notebook

    if engine == "dask":
        pytest.importorskip("distributed")

    from drifthelpers.__main__ import main

    source = tmp_path / "run.json"
    source.write_text(json.dumps(job_runs["a"]))
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    make_notebook(nb_dir / "03_drift_synthesis.ipynb", f'seed = 0\nsource = "{source}"\noutput_dir = "."',
                  "import json, pathlib\nrun = json.loads(pathlib.Path(source).read_text())\n"
                  "run['config']['seed'] = seed\nout = pathlib.Path(output_dir); out.mkdir(parents=True, exist_ok=True)\n"
                  "(out / 'results.json').write_text(json.dumps({'runs': {'microscopy': run}}))\n")
    code = main(["sweep", "03", "--grid", "seed=0,1", "--notebook-dir", str(nb_dir), "--runs-dir", str(tmp_path / "runs"),
                 "--name", "s", "--workers", "2", "--engine", engine])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Notebook 03, microscopy: 2 units pooled over the jobs" in printed
    pooled = json.loads((tmp_path / "runs" / "s" / "pooled_03.json").read_text())
    assert pooled["data_sets"]["microscopy"]["seeds"] == [0, 1]
