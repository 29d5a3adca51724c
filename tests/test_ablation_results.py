"""The committed ablation of notebook 03 and the fidelity tables generated from it.

``benchmarks/publish_ablation.py`` copies a finished run's ablation files to
``results/ablation/`` with a provenance record and regenerates the marked blocks of README.md
and docs/fidelity.md. These tests check that the blocks in the repository are what the
generator makes of the committed folder (or of its absence), that the tables report the
values the files hold, and that publishing refuses incomplete runs without leaving anything
half-written.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
_SPEC = importlib.util.spec_from_file_location("publish_ablation", REPO / "benchmarks" / "publish_ablation.py")
pa = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pa)

from drifthelpers.ablation import HEADLINE  # noqa: E402


def _est(value, low, high):
    return {"value": value, "low": low, "high": high}


def _ablation(kind: str, shift: float) -> dict:
    rows = []
    for k, name in enumerate(["chain", "imagenet_c", "all"]):
        change = _est(0.01 * (k + 1) + shift, 0.005 * (k + 1) + shift, 0.02 * (k + 1) + shift)
        numbers = {h: {"baseline": _est(0.5, 0.4, 0.6), "corrected": _est(0.6, 0.5, 0.7),
                       "change": change if h == "mean_drop_faithful" else _est(-0.1, -0.3, 0.1)} for h in HEADLINE}
        rows.append({"correction": name, "explanation": "x", "paired": name != "all", "numbers": numbers})
    return {"dataset": kind, "config": {}, "presets": [], "rows": rows,
            "baseline": {h: _est(0.5, 0.4, 0.6) for h in HEADLINE}}


def plant_run(root: Path, status: str = "ok", kinds=pa.DATA_SETS) -> Path:
    run = root / "runs" / "abl"
    (run / pa.NOTEBOOK).mkdir(parents=True)
    for i, kind in enumerate(kinds):
        (run / pa.NOTEBOOK / f"ablation_{kind}.json").write_text(json.dumps(_ablation(kind, 0.1 * i)))
    summary = {"profile": "quick", "parameters": {"ablation": True}, "status": status,
               "notebooks": [{"notebook": f"{pa.NOTEBOOK}.ipynb", "status": status, "seconds": 600.0}],
               "environment": {"python": "3.11.7", "packages": {"torch": "2.14.1"},
                               "git": {"commit": "0123456789abcdef", "dirty": False}}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_docs_show_the_committed_ablation():
    results = pa.load_results(pa.RESULTS)
    for doc, full in pa.DOCS.items():
        text = doc.read_text(encoding="utf-8")
        assert pa.block_of(text, doc, pa.BEGIN, pa.END) == pa.render(results, full=full), (
            f"{doc.relative_to(REPO)} disagrees with results/ablation; "
            "run: python benchmarks/publish_ablation.py --readme-only")


def test_committed_ablation_is_complete_when_present():
    if not pa.RESULTS.exists():
        pytest.skip("no ablation run is committed")
    results = pa.load_results(pa.RESULTS)
    prov = results["provenance"]
    assert prov["profile"] and prov["git"]["commit"] and prov["parameters"].get("ablation") is True
    for kind, result in results["ablations"].items():
        assert result["dataset"] == kind and result["rows"][-1]["correction"] == "all"
        for row in result["rows"]:
            for e in (row["numbers"][h]["change"] for h in HEADLINE):
                if e["value"] is not None and e["low"] is not None and e["high"] is not None:
                    assert e["low"] <= e["value"] <= e["high"]


def test_publish_writes_compact_files_and_the_tables_read_them(tmp_path):
    out = pa.publish(plant_run(tmp_path), tmp_path / "results" / "ablation")
    assert sorted(p.name for p in out.iterdir()) == ["ablation_drone.json", "ablation_microscopy.json",
                                                      "provenance.json"]
    assert "\n" not in (out / "ablation_drone.json").read_text().rstrip("\n")  # compact
    results = pa.load_results(out)
    assert results["ablations"]["drone"] == _ablation("drone", 0.1)
    assert results["provenance"]["git"]["commit"] == "0123456789abcdef"
    short = pa.render(results, full=False)
    # the README row of a correction: its two phrases, then per data set the change of the faithful
    # drop and of the corruption drop
    chain_row = next(line for line in short.splitlines() if line.startswith("| chain |"))
    cells = [c.strip() for c in chain_row.strip("|").split("|")]
    assert "black level an offset" in cells[1] and "mirror borders" in cells[2]
    assert cells[3:] == ["+0.01 [+0.005, +0.02] *", "-0.1 [-0.3, +0.1]", "+0.11 [+0.105, +0.12] *",
                         "-0.1 [-0.3, +0.1]"]
    assert "microscopy: Δ faithful drop | microscopy: Δ corruption drop | drone: Δ faithful drop" in short
    assert next(line for line in short.splitlines() if line.startswith("| all |")).count("*") == 2
    full = pa.render(results, full=True)
    assert "**microscopy**, public protocol" in full and "| all (unpaired) |" in full
    assert full.count("-0.1 [-0.3, +0.1]") == 2 * 3 * (len(HEADLINE) - 1)  # intervals over 0: no star
    assert "Run: profile quick, commit 0123456789, finished " in full


def test_publish_refuses_incomplete_runs_and_overwrites_only_with_force(tmp_path):
    out = tmp_path / "results" / "ablation"
    with pytest.raises(pa.PublishError, match="did not finish"):
        pa.publish(plant_run(tmp_path / "a", status="error"), out)
    with pytest.raises(pa.PublishError, match="drone ablation is missing"):
        pa.publish(plant_run(tmp_path / "b", kinds=("microscopy",)), out)
    assert not out.exists() and not list(out.parent.glob(".ablation.*"))  # nothing half-written
    run = plant_run(tmp_path / "c")
    pa.publish(run, out)
    with pytest.raises(FileExistsError, match="--force"):
        pa.publish(run, out)
    pa.publish(run, out, force=True)
    assert (out / "provenance.json").exists()


def test_write_blocks_rewrites_only_the_block(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{pa.BEGIN}\nold\n{pa.END}\nafter\n")
    out = pa.publish(plant_run(tmp_path), tmp_path / "results" / "ablation")
    pa.write_blocks(out, {doc: False})
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "| chain |" in text
    doc.write_text("no markers\n")
    with pytest.raises(pa.PublishError, match="exactly one generated block"):
        pa.write_blocks(out, {doc: False})
