"""The paper profile end to end on the CPU: notebooks 03-05 on a slice of the paper-sized stand-in.

``profile=paper`` selects the published models and sizes (ResNet18 and U-Net++ with a
ResNet34 encoder on 256x256 inputs, batch 4, lr 1e-5, 80/20 splits); the overrides cut
only the amount of work: one epoch, one split, three of the twelve data models, one
training seed, a short forensics search. The data are a slice of the stand-in that
``data mini --paper-size`` writes, in the Zenodo release's layout, checked by ``data
verify`` inside the notebooks. What catches: shape, loader and configuration errors of
the paper path, before anyone pays for a GPU. What it does not: any number the paper
reports (one epoch on a few dozen images learns nothing).

Each run records itself in ``runs/paper-smoke/paper_smoke.json`` (what ran, with which
sizes, how long; ``runs/`` is not tracked). ``python tests/test_paper_smoke.py`` publishes
the last record: it copies it to the tracked ``results/paper-smoke.json`` and regenerates,
from that file, the marked blocks of ``docs/paper-path.md`` and ``README.md``;
:func:`test_docs_show_the_committed_record` (fast) fails when either disagrees with it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECORD = REPO / "runs" / "paper-smoke" / "paper_smoke.json"
COMMITTED = REPO / "results" / "paper-smoke.json"
DOCS = {REPO / "docs" / "paper-path.md": "record_markdown", REPO / "README.md": "summary_markdown"}
BEGIN = "<!-- begin generated from results/paper-smoke.json by tests/test_paper_smoke.py -->"
END = "<!-- end generated -->"
SCALE = {"microscopy": 0.02, "drone": 0.01}  # 19 crops in 9 classes; 5 tiles from 5 frames
PRESETS = ["bi,s,ga", "ma,u,me", "me,s,me"]
OVERRIDES = {
    "data_source": "standin", "device": "cpu", "allow_cpu": True, "workers": 1,
    "epochs": 1, "n_splits": 1, "presets": PRESETS, "seeds": 1,
    # notebook 04: a short search on the paper-profile classifier
    "lambdas": [0.0, 100.0], "steps": 2, "compare_groups": ["black_level"], "compare_evaluations": 3,
    "envelope_points": 2, "envelope_refine": 1, "random_seeds": [0],
}


@pytest.mark.slow
def test_paper_profile_runs_on_the_standin(tmp_path, monkeypatch):
    import torch

    from drifthelpers import synthesis
    from drifthelpers.datasets import verify as dataverify
    from drifthelpers.batch import run_notebooks
    from drifthelpers.fileio import atomic_write_json, atomic_write_text

    monkeypatch.setenv("DRIFTHELPERS_DATA", str(tmp_path))  # checkpoint caches go here too
    t0 = time.perf_counter()
    paths = dataverify.build_standin(tmp_path / dataverify.STANDIN_DIR, scale=SCALE, progress=False, workers=2)
    build_s = time.perf_counter() - t0
    sizes = {k: {"n": dataverify.verify_dataset(p, k).expected.n, "size": dataverify.PAPER_SIZE}
             for k, p in paths.items()}
    results = run_notebooks(["03", "04", "05"], parameters={**OVERRIDES, "data_root": str(tmp_path)},
                            profile="paper", runs_dir=tmp_path / "runs", run_name="smoke", progress=False,
                            log=lambda msg: None)
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    by_nb = {r.notebook[:2]: r for r in results}
    r03 = by_nb["03"].results["results"]
    assert r03["profile"] == "paper" and r03["source"] == "standin"
    r04 = by_nb["04"].results["results"]
    assert r04["profile"] == "paper" and r04["n_images"] >= 1
    r05 = by_nb["05"].results["results"]
    assert r05["profile"] == "paper"
    models = {k: synthesis.PROFILES["paper"][k]["model"] for k in ("microscopy", "drone")}
    assert r05["configs"]["microscopy"]["model"] == models["microscopy"]
    assert r05["configs"]["drone"]["model"] == models["drone"]

    record = {
        "what": "notebooks 03, 04, 05 with profile=paper on the CPU (tests/test_paper_smoke.py)",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
                   f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the end",
        "data": {"source": "paper-sized stand-in (simulated), a slice", "scale": SCALE, **sizes},
        "models": models,
        "overrides": OVERRIDES,
        "seconds": {"build stand-in": round(build_s, 1),
                    **{r.notebook: round(r.seconds, 1) for r in results}},
        "status": {r.notebook: r.status for r in results},
        "not_run": ["100 epochs", "5 splits", "all twelve data models", "the real Zenodo data", "a GPU"],
    }
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RECORD, record)
    atomic_write_text(RECORD.with_suffix(".md"), record_markdown(record))


def record_markdown(record: dict) -> str:
    """The smoke run as the Markdown table docs/paper-path.md shows."""
    d = record["data"]
    rows = [f"| {nb} | {record['status'][nb]} | {sec:.0f} |" for nb, sec in record["seconds"].items()
            if nb in record["status"]]
    return "\n".join([
        f"Ran on {record['date']} ({record['machine']}): {record['what']}, models "
        f"{record['models']['microscopy']} / {record['models']['drone']}, on {d['source']} "
        f"(scale {d['scale']['microscopy']} / {d['scale']['drone']}: {d['microscopy']['n']} microscopy crops and {d['drone']['n']} drone tiles of "
        f"{d['microscopy']['size']}x{d['microscopy']['size']}, 7 intensities), overrides "
        f"epochs {record['overrides']['epochs']}, n_splits {record['overrides']['n_splits']}, presets "
        f"{', '.join(record['overrides']['presets'])}, seeds {record['overrides']['seeds']}. "
        f"Building the stand-in took {record['seconds']['build stand-in']:.0f} s; in all "
        f"{sum(record['seconds'].values()) / 60:.1f} minutes.",
        "", "| notebook | status | seconds |", "|---|---|---|", *rows, "",
        "Not run by it: " + ", ".join(record["not_run"]) + ".", ""])


def summary_markdown(record: dict) -> str:
    """The smoke run in two sentences, for the README's real-data section."""
    ran = ", ".join(f"{nb[:2]} {st}" for nb, st in record["status"].items())
    return (f"What has run of the paper profile (last record, {record['date']}): notebooks {ran} on the "
            f"CPU with the paper's models and sizes on a slice of the simulated stand-in, "
            f"{record['overrides']['epochs']} epoch, {record['overrides']['n_splits']} split, "
            f"{len(record['overrides']['presets'])} data models. Not run: "
            + ", ".join(record["not_run"]) + ".\n")


def _block(text: str, path: Path) -> str:
    """The generated block of ``text`` (between BEGIN and END), or an error naming ``path``."""
    if text.count(BEGIN) != 1 or text.count(END) < 1:
        raise ValueError(f"{path} needs exactly one generated block ({BEGIN} ... {END})")
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def test_docs_show_the_committed_record():
    record = json.loads(COMMITTED.read_text())
    assert set(record["status"].values()) == {"ok"}, record["status"]
    for doc, render in DOCS.items():
        expected = "\n" + globals()[render](record)
        assert _block(doc.read_text(), doc) == expected, (
            f"{doc.relative_to(REPO)} disagrees with {COMMITTED.relative_to(REPO)}; "
            "run: python tests/test_paper_smoke.py")


def publish(source: Path = RECORD) -> None:
    """Copy the last smoke record to results/ and regenerate the docs' blocks from it."""
    from drifthelpers.fileio import atomic_write_json, atomic_write_text

    record = json.loads(source.read_text())
    COMMITTED.parent.mkdir(exist_ok=True)
    atomic_write_json(COMMITTED, record)
    for doc, render in DOCS.items():
        text = doc.read_text()
        old = _block(text, doc)
        atomic_write_text(doc, text.replace(BEGIN + old + END, BEGIN + "\n" + globals()[render](record) + END))


@pytest.mark.slow
def test_paper_profile_refuses_the_cpu(tmp_path):
    from drifthelpers.batch import NotebookFailed, run_notebooks

    with pytest.raises(NotebookFailed, match="allow_cpu"):
        run_notebooks(["04"], parameters={"device": "cpu", "data_source": "standin", "data_root": str(tmp_path)},
                      profile="paper", runs_dir=tmp_path / "runs", progress=False, log=lambda msg: None)


if __name__ == "__main__":
    publish()
