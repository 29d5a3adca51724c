"""The committed study results and the claims tables generated from them.

``benchmarks/publish_study.py`` copies a finished ``study`` run's results files to
``results/study/`` with a provenance record and regenerates the marked blocks of README.md
and docs/statistics.md from that folder. These tests check that the blocks in the repository
are what the generator makes of the committed folder (or of its absence), that the generator
reports the verdicts the files hold, and that publishing refuses incomplete runs and runs of
another profile without leaving anything half-written.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location("publish_study", REPO / "benchmarks" / "publish_study.py")
ps = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ps)

CLAIMS = {  # notebook -> claims of a planted run, one per verdict and a missing bound
    "03_drift_synthesis": [
        {"claim": "microscopy: faithful drift less severe", "value": 2.5, "low": 1.25, "high": 4.0,
         "verdict": "supported"},
        {"claim": "drone: drop ratio ~4x", "value": 63.9, "low": None, "high": 2028.0, "verdict": "undecided"},
    ],
    "04_drift_forensics": [
        {"claim": "forensics: gamma alone does no real harm", "value": 0.5, "low": 0.25, "high": 0.75,
         "verdict": "contradicted"},
    ],
    "05_drift_optimisation": [
        {"claim": "microscopy: learned ISP beats frozen ISP", "value": 0.1, "low": -0.2, "high": 0.3,
         "verdict": "undecided"},
    ],
}


def plant_run(root: Path, profile: str = "study", statuses: dict | None = None) -> Path:
    """A run folder like ``python -m drifthelpers run 03 04 05`` leaves, with the planted claims."""
    statuses = statuses or {}
    run = root / "runs" / profile
    notebooks = []
    for name, claims in CLAIMS.items():
        (run / name / "figures").mkdir(parents=True)
        (run / name / "results.json").write_text(json.dumps({"profile": profile, "claims": claims}))
        (run / f"{name}.ipynb").write_text("{}")
        notebooks.append({"notebook": f"{name}.ipynb", "status": statuses.get(name, "ok"), "seconds": 60.0})
    status = "ok" if all(n["status"] == "ok" for n in notebooks) else "error"
    summary = {"profile": profile, "status": status, "interrupted": False, "notebooks": notebooks,
               "environment": {"python": "3.11.7", "packages": {"torch": "2.14.1"},
                               "git": {"commit": "0123456789abcdef", "dirty": False}}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def plant_bench(path: Path, run: Path, **changes) -> Path:
    """A benchmark record as ``benchmarks/bench_study.py`` writes it for ``run``."""
    record = {"mode": "run", "returncode": 0, "run_dir": str(run), "wall_seconds": 3000.0,
              "peak_tree_rss_bytes": 2 * 1024**3, "within_budget": True, "profile": "study",
              "machine": {"cpu_count": 2}, "budget": {"seconds": 5400, "bytes": 4 * 1024**3},
              "started": "2026-01-02T03:04:05Z", **changes}
    path.write_text(json.dumps(record))
    return path


def test_docs_show_the_committed_study_results():
    results = ps.load_results(ps.RESULTS)
    for doc, full in ps.DOCS.items():
        assert ps.block_of(doc.read_text(encoding="utf-8"), doc) == ps.render(results, full=full), (
            f"{doc.relative_to(REPO)} disagrees with results/study; "
            "run: python benchmarks/publish_study.py --readme-only")


def test_committed_results_are_complete_when_present():
    if not ps.RESULTS.exists():
        pytest.skip("no study run is committed")
    prov = json.loads((ps.RESULTS / "provenance.json").read_text())
    assert prov["profile"] == "study" and prov["git"]["commit"]
    assert sorted(p.parent.name for p in ps.RESULTS.glob("*/results.json")) == list(ps.NOTEBOOKS)


def test_publish_copies_the_results_and_records_provenance(tmp_path):
    run = plant_run(tmp_path)
    out = ps.publish(run, tmp_path / "results" / "study", bench_path=plant_bench(tmp_path / "b.json", run))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(
        [f"{name}/results.json" for name in ps.NOTEBOOKS] + ["provenance.json"])
    for name in ps.NOTEBOOKS:
        published = out / name / "results.json"
        assert json.loads(published.read_text()) == json.loads((run / name / "results.json").read_text())
        assert "\n " not in published.read_text()  # compact: the study's per-item records stay small
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["git"] == {"commit": "0123456789abcdef", "dirty": False}
    assert prov["packages"] == {"torch": "2.14.1"} and prov["profile"] == "study"
    assert (prov["wall_seconds"], prov["peak_memory_bytes"], prov["within_budget"]) == (3000.0, 2 * 1024**3, True)
    assert prov["machine"] == {"cpu_count": 2} and prov["not_measured_reason"] is None


def test_generated_tables_match_the_planted_verdicts(tmp_path):
    run = plant_run(tmp_path)
    out = ps.publish(run, tmp_path / "study", bench_path=plant_bench(tmp_path / "b.json", run))
    results = ps.load_results(out)
    full = ps.render(results, full=True)
    assert "4 claims: 1 supported, 1 contradicted, 2 undecided." in full
    rows = [line for line in full.splitlines() if line.startswith("| 0")]
    assert rows == [
        "| 03 | microscopy: faithful drift less severe | 2.5 [1.25, 4] | supported |",
        "| 03 | drone: drop ratio ~4x | 63.9 [n/a, 2.03e+03] | undecided |",
        "| 04 | forensics: gamma alone does no real harm | 0.5 [0.25, 0.75] | contradicted |",
        "| 05 | microscopy: learned ISP beats frozen ISP | 0.1 [-0.2, 0.3] | undecided |",
    ]
    short = ps.render(results, full=False)
    assert [line for line in short.splitlines() if line.startswith("| 0")] == [rows[0], rows[2]]
    line = "Run: profile study, commit 0123456789, finished "
    assert line in full
    assert "wall time 50.0 min of the 90-minute budget, peak memory 2.00 GiB of 4 GiB (within budget)" in full
    assert len(short.strip().splitlines()) <= 12


def test_write_blocks_regenerates_and_reports_absence(tmp_path):
    readme, stats = tmp_path / "README.md", tmp_path / "statistics.md"
    for doc in (readme, stats):
        doc.write_text(f"# Title\n\ntext\n{ps.BEGIN}\nstale\n{ps.END}\n\nmore\n")
    ps.write_blocks(tmp_path / "absent", {readme: False, stats: True})
    assert readme.read_text() == f"# Title\n\ntext\n{ps.BEGIN}{ps.render(None, full=False)}{ps.END}\n\nmore\n"
    assert "No study run is committed yet" in readme.read_text()
    run = plant_run(tmp_path)
    out = ps.publish(run, tmp_path / "study", allow_profile=False)
    ps.write_blocks(out, {readme: False, stats: True})
    assert ps.block_of(stats.read_text(), stats) == ps.render(ps.load_results(out), full=True)
    assert "not measured: no benchmark record was given with --bench" in stats.read_text()


def test_write_blocks_refuses_a_document_without_its_block(tmp_path):
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(f"{ps.BEGIN}\nstale\n{ps.END}\n")
    bad.write_text("no block here\n")
    with pytest.raises(ps.PublishError, match="bad.md needs exactly one generated block"):
        ps.write_blocks(tmp_path / "absent", {good: False, bad: True})
    assert good.read_text() == f"{ps.BEGIN}\nstale\n{ps.END}\n"  # nothing written when one doc is wrong


@pytest.mark.parametrize("status", ["error", "skipped"])
def test_publish_refuses_a_failed_notebook(tmp_path, status):
    run = plant_run(tmp_path, statuses={"04_drift_forensics": status})
    with pytest.raises(ps.PublishError, match=f"04_drift_forensics did not finish.*{status}"):
        ps.publish(run, tmp_path / "study")
    assert not (tmp_path / "study").exists() and list(tmp_path.glob(".study*")) == []


def test_publish_refuses_a_missing_notebook_or_results_file(tmp_path):
    run = plant_run(tmp_path)
    (run / "05_drift_optimisation" / "results.json").unlink()
    with pytest.raises(ps.PublishError, match="05_drift_optimisation.*results.json.*missing"):
        ps.publish(run, tmp_path / "study")
    summary = json.loads((run / "summary.json").read_text())
    summary["notebooks"] = summary["notebooks"][:1]
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ps.PublishError, match="04_drift_forensics did not run"):
        ps.publish(run, tmp_path / "study")
    assert list(tmp_path.glob("*study*")) == []


def test_publish_refuses_another_profile_unless_allowed(tmp_path):
    run = plant_run(tmp_path, profile="quick")
    with pytest.raises(ps.PublishError, match="profile is 'quick', not 'study'"):
        ps.publish(run, tmp_path / "study")
    assert not (tmp_path / "study").exists()
    out = ps.publish(run, tmp_path / "study", allow_profile=True)
    assert json.loads((out / "provenance.json").read_text())["profile"] == "quick"


def test_publish_refuses_a_benchmark_of_another_run_or_a_failed_one(tmp_path):
    run = plant_run(tmp_path)
    with pytest.raises(ps.PublishError, match="measured the run folder"):
        ps.publish(run, tmp_path / "study", bench_path=plant_bench(tmp_path / "b.json", tmp_path / "other"))
    with pytest.raises(ps.PublishError, match="measured the run folder other/study"):
        ps.publish(run, tmp_path / "study", bench_path=plant_bench(tmp_path / "b.json", Path("other/study")))
    assert ps.publish(run, tmp_path / "study", bench_path=plant_bench(tmp_path / "b.json", Path("runs/study")))
    with pytest.raises(ps.PublishError, match="not a successful measured run"):
        ps.publish(run, tmp_path / "other", bench_path=plant_bench(tmp_path / "b.json", run, returncode=1))
    assert not (tmp_path / "other").exists()


def test_publish_is_all_or_nothing(tmp_path, monkeypatch):
    run = plant_run(tmp_path)
    out = ps.publish(run, tmp_path / "study")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        ps.publish(run, out)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ps, "atomic_write_json", fail)  # provenance.json is written last
    with pytest.raises(OSError, match="disk full"):
        ps.publish(run, out, force=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "study"]  # no staging folder left
    monkeypatch.undo()
    (run / "03_drift_synthesis" / "results.json").write_text(json.dumps({"profile": "study", "claims": []}))
    ps.publish(run, out, force=True)
    assert json.loads((out / "03_drift_synthesis" / "results.json").read_text())["claims"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "study"]


def test_command_line(tmp_path, capsys):
    run = plant_run(tmp_path, profile="quick")
    assert ps.main([str(run), "--out", str(tmp_path / "study")]) == 2
    assert "profile is 'quick'" in capsys.readouterr().err
    assert ps.main([str(run), "--allow-profile", "--out", str(tmp_path / "study")]) == 0
    assert "| 05 | microscopy: learned ISP beats frozen ISP | 0.1 [-0.2, 0.3] | undecided |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ps.main([])  # neither a run folder nor --readme-only


def plant_models(run: Path, *, cached: bool, commit: str, epochs: int = 12) -> Path:
    """Notebook 03's and 05's model records in a planted run: 2 units x 3 presets + a mixed model,
    and 2 arms x 2 seeds, all from the checkpoint cache or all trained."""
    path = run / "03_drift_synthesis" / "results.json"
    data = json.loads(path.read_text())
    data["runs"] = {"microscopy": {"config": {"epochs": epochs}, "units": [{}, {}], "presets": ["a", "b", "c"],
                                   "mixed": {"row": []}, "models_from_cache": 8 if cached else 0}}
    path.write_text(json.dumps(data))
    path = run / "05_drift_optimisation" / "results.json"
    data = json.loads(path.read_text())
    data.update(seeds=[0, 1], configs={"microscopy": {"epochs": epochs}},
                summaries={"microscopy": {"arms": {arm: {"seeds": 2, "cached": cached} for arm in ("learned", "frozen")}}})
    path.write_text(json.dumps(data))
    summary = json.loads((run / "summary.json").read_text())
    summary["environment"]["git"]["commit"] = commit
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_a_re_evaluation_of_cached_models_is_published_with_the_training_run(tmp_path):
    trained = plant_models(plant_run(tmp_path / "t"), cached=False, commit="aaaaaaaaaaaa")
    again = plant_models(plant_run(tmp_path / "r"), cached=True, commit="bbbbbbbbbbbb")
    bench = plant_bench(tmp_path / "b.json", trained)
    with pytest.raises(ps.PublishError, match="measured the run folder"):  # the record is the training run's
        ps.publish(again, tmp_path / "study", bench_path=bench)
    out = ps.publish(again, tmp_path / "study", bench_path=bench, trained_by=trained)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["git"]["commit"] == "bbbbbbbbbbbb" and prov["training"]["git"]["commit"] == "aaaaaaaaaaaa"
    assert prov["wall_seconds"] == 3000.0 and prov["training"]["notebook_seconds"]["03_drift_synthesis"] == 60.0
    line = ps.provenance_line(prov)
    assert line.startswith("Run: profile study, commit bbbbbbbbbb, finished ")
    assert "evaluating the models that the run of commit aaaaaaaaaa" in line and "wall time 50.0 min" in line


def test_a_re_evaluation_that_trained_or_changed_settings_is_refused(tmp_path):
    trained = plant_models(plant_run(tmp_path / "t"), cached=False, commit="aaaaaaaaaaaa")
    bench = plant_bench(tmp_path / "b.json", trained)
    retrained = plant_models(plant_run(tmp_path / "r"), cached=False, commit="bbbbbbbbbbbb")
    with pytest.raises(ps.PublishError, match="trained 12 of its 12 models itself"):
        ps.publish(retrained, tmp_path / "study", bench_path=bench, trained_by=trained)
    bare = plant_run(tmp_path / "b")  # results without model records
    with pytest.raises(ps.PublishError, match="do not say which models were trained"):
        ps.publish(bare, tmp_path / "study", bench_path=bench, trained_by=trained)
    other = plant_models(plant_run(tmp_path / "o"), cached=True, commit="bbbbbbbbbbbb", epochs=3)
    with pytest.raises(ps.PublishError, match="differ in the settings"):
        ps.publish(other, tmp_path / "study", bench_path=bench, trained_by=trained)
    assert not (tmp_path / "study").exists()


def test_thread_rerun_may_be_a_re_evaluation_of_its_cached_models(tmp_path):
    st = _study_threads()
    ref = plant_models(plant_run(tmp_path / "ref"), cached=False, commit="aaaaaaaaaaaa")
    published = ps.publish(ref, tmp_path / "study", bench_path=plant_bench(tmp_path / "b.json", ref,
                                                                           machine={"torch_threads": 2}))
    one = plant_models(plant_run(tmp_path / "one"), cached=False, commit="aaaaaaaaaaaa")
    bench = plant_bench(tmp_path / "b1.json", one, machine={"torch_threads": 1})
    again = plant_models(plant_run(tmp_path / "again"), cached=True, commit="bbbbbbbbbbbb")
    with pytest.raises(st.ps.PublishError, match="measured the run folder"):
        st.record(again, bench, published)
    rec = st.record(again, bench, published, trained_by=one)
    assert rec["rerun"]["commit"] == "bbbbbbbbbbbb" and rec["rerun"]["trained_by"] == str(one)
    assert rec["rerun"]["threads"] == 1 and rec["unstable"] == 0
    with pytest.raises(st.ps.PublishError, match="trained 12 of its 12 models itself"):
        st.record(ref, bench, published, trained_by=one)  # ref trained its own models


def _study_threads():
    spec = importlib.util.spec_from_file_location("study_threads", REPO / "benchmarks" / "study_threads.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_thread_rerun_is_compared_claim_by_claim(tmp_path):
    st = _study_threads()
    ref_run = plant_run(tmp_path / "ref")
    published = ps.publish(ref_run, tmp_path / "study", bench_path=plant_bench(tmp_path / "b.json", ref_run,
                                                                               machine={"torch_threads": 2}))
    rerun = plant_run(tmp_path / "one")
    moved = {"03_drift_synthesis": [3.0, 70.0], "04_drift_forensics": [0.5], "05_drift_optimisation": [0.3]}
    for name, values in moved.items():  # 2.5 -> 3.0 (half width 1.375): stable; 0.1 -> 0.3 (0.25): stable
        path = rerun / name / "results.json"
        data = json.loads(path.read_text())
        for claim, value in zip(data["claims"], values):
            claim["value"] = value
        if name == "04_drift_forensics":
            data["claims"][0]["verdict"] = "undecided"
        path.write_text(json.dumps(data))
    bench = plant_bench(tmp_path / "b1.json", rerun, machine={"torch_threads": 1, "cores_used": [0]})
    rec = st.record(rerun, bench, published)
    assert rec["verdicts_changed"] == 1
    assert ps.threads_lines(rec, full=False)[0].endswith(
        "The verdict changed for 1 claim(s): forensics: gamma alone does no real harm (contradicted -> undecided).")
    rows = {r["claim"]: r for r in rec["estimates"]}
    assert rows["microscopy: faithful drift less severe"]["stable"] is True
    assert rows["microscopy: faithful drift less severe"]["half_width"] == pytest.approx(1.375)
    assert rows["drone: drop ratio ~4x"]["stable"] is None  # open interval
    assert rows["forensics: gamma alone does no real harm"]["stable"] is True  # no move
    assert (rec["stable"], rec["unstable"], rec["not_checkable"]) == (3, 0, 1)
    assert rec["rerun"]["threads"] == 1 and rec["reference"]["threads"] == 2
    assert rec["identical"] == len(rows) - 4 >= 0  # every claim but the four changed above
    assert not rows["forensics: gamma alone does no real harm"]["identical"]  # same value, new verdict
    assert f"gave {len(rows) - 4} of {len(rows)} claims the same value, interval and verdict" in (
        ps.threads_lines(rec, full=False)[0])
    # a move of half the width or more is unstable, and the full table lists it
    rec["estimates"][0].update(rerun_value=4.0, move=1.5, stable=False)
    rec.update(stable=2, unstable=1)
    lines = ps.threads_lines(rec, full=True)
    assert ("moved 2 of 3 checkable point estimates by less than half their interval width; 1 moved more "
            "(microscopy: faithful drift less severe)") in lines[0]
    assert lines[-1] == "| 03 | microscopy: faithful drift less severe | 2.5 | 4 | 1.5 | 1.38 |"
    assert len(ps.threads_lines(rec, full=False)) == 1


def test_a_thread_rerun_that_trained_the_same_models_is_identical_claim_by_claim(tmp_path):
    st = _study_threads()
    ref_run = plant_run(tmp_path / "ref")
    published = ps.publish(ref_run, tmp_path / "study", bench_path=plant_bench(tmp_path / "b.json", ref_run,
                                                                               machine={"torch_threads": 2}))
    rerun = plant_run(tmp_path / "one")  # the same numbers: what one thread per job gives on any core count
    rec = st.record(rerun, plant_bench(tmp_path / "b1.json", rerun, machine={"torch_threads": 1}), published)
    n = len(rec["estimates"])
    assert rec["identical"] == n and rec["unstable"] == 0 and rec["verdicts_changed"] == 0
    assert all(r["move"] in (0, None) for r in rec["estimates"])
    line = ps.threads_lines(rec, full=True)
    assert len(line) == 1 and f"gave {n} of {n} claims the same value, interval and verdict" in line[0]
    path = rerun / "05_drift_optimisation" / "results.json"  # one interval end differs: not identical
    data = json.loads(path.read_text())
    data["claims"][0]["high"] += 0.01
    path.write_text(json.dumps(data))
    rec = st.record(rerun, plant_bench(tmp_path / "b2.json", rerun, machine={"torch_threads": 1}), published)
    assert rec["identical"] == n - 1 and rec["unstable"] == 0


def test_thread_rerun_with_the_same_thread_count_is_refused(tmp_path):
    st = _study_threads()
    run = plant_run(tmp_path / "ref")
    published = ps.publish(run, tmp_path / "study", bench_path=plant_bench(tmp_path / "b.json", run,
                                                                           machine={"torch_threads": 2}))
    with pytest.raises(st.ps.PublishError, match="nothing to compare"):  # the module study_threads imports
        st.record(run, plant_bench(tmp_path / "b2.json", run, machine={"torch_threads": 2}), published)
