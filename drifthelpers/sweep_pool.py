"""Pooling a sweep over seeds of the drift-synthesis notebook into one set of intervals.

Each job of ``python -m drifthelpers sweep 03 --grid seed=0,16,32`` trains its own splits and
seeds and reports intervals over its own units. :func:`pool_synthesis` puts the units of every
finished job together (:func:`drifthelpers.synthesis.merge_results`) and recomputes the
statistics and verdicts over all of them (:func:`drifthelpers.synthesis.synthesis_statistics`),
so that a sweep's claims table is as if one run had trained all its units. The ``sweep``
command calls it when a sweep of notebook 03 ends (also after ``--rerun-failed``) and it writes
``pooled_03.json`` and ``pooled_03.md`` in the sweep folder; from Python, call it after
:func:`drifthelpers.sweep.run_sweep`.

Units may be pooled only when they are distinct experiments: job ``j`` draws split ``k`` with
seed ``seed_j + k`` and trains with seed ``seed_j + r``, so two jobs whose seeds are closer than
their number of splits share splits (``seed=0,1,2`` with 16 splits reuse 15 of them) and their
units are not independent. Such a data set is reported as not pooled, with the shared split
seeds, rather than given intervals that are too narrow. Jobs must also agree on every other
setting of the experiment (presets, sizes, epochs, fidelity, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .fileio import atomic_write_json, atomic_write_text

__all__ = ["NOTEBOOK", "pool_synthesis", "pooled_table"]

#: The notebook whose results are pooled.
NOTEBOOK = "03_drift_synthesis"

#: Headline statistics reported for a pooled data set (those present in its statistics).
_HEADLINE = ("diagonal_mean", "mean_drop_faithful", "mean_drop_corruption", "log_ratio", "ratio", "spearman_rho",
             "top1_agreement", "selection_regret", "mixed_minus_single_off_view")


def _job_runs(sweep_dir: Path, manifest: dict) -> dict[str, list[tuple[str, dict]]]:
    """``{data set: [(job id, run result of notebook 03), ...]}`` over the finished jobs."""
    out: dict[str, list[tuple[str, dict]]] = {}
    for jid, job in manifest["jobs"].items():
        path = sweep_dir / "records" / f"{jid}.json"
        if job.get("status") != "ok" or not path.exists():
            continue
        # a record holds each notebook's JSON files by name: results.json -> "results"
        results = (json.loads(path.read_text()).get("results", {}).get(NOTEBOOK) or {}).get("results") or {}
        for kind, run in (results.get("runs") or {}).items():
            out.setdefault(kind, []).append((jid, run))
    return out


def _seeds(run: dict) -> tuple[set[int], set[int]]:
    """The split seeds and training seeds of one run's units."""
    base = int(run["config"]["seed"])
    return ({base + int(u["split"]) for u in run["units"]}, {base + int(u["seed"]) for u in run["units"]})


def _why_not(runs: list[tuple[str, dict]]) -> str | None:
    """Why these runs cannot be pooled, or None."""
    if len(runs) < 2:
        return f"{len(runs)} finished job(s): nothing to pool"
    if any("items" not in run or "statistics" not in run for _, run in runs):
        return "a job's results hold no per-item records (the statistics need at least three presets)"
    first = {k: v for k, v in runs[0][1]["config"].items() if k != "seed"}
    for jid, run in runs[1:]:
        other = {k: v for k, v in run["config"].items() if k != "seed"}
        differ = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if differ:
            return f"job {jid} differs from job {runs[0][0]} in {', '.join(differ)}"
    seen: dict[int, str] = {}
    for jid, run in runs:
        for s in sorted(_seeds(run)[0]):
            if s in seen:
                return (f"jobs {seen[s]} and {jid} share split seed {s}: give the jobs seeds at least "
                        f"{first['n_splits']} apart (the number of splits per job)")
            seen[s] = jid
    return None


def _pool_kind(runs: list[tuple[str, dict]], n_boot: int, seed: int) -> dict[str, Any]:
    from .synthesis import merge_results, synthesis_statistics

    jobs = [jid for jid, _ in runs]
    reason = _why_not(runs)
    if reason is not None:
        return {"pooled": False, "reason": reason, "jobs": jobs}
    merged = merge_results([run for _, run in runs])
    st = synthesis_statistics(merged, n_boot=n_boot, seed=seed)
    headline = {k: st["statistics"][k] for k in _HEADLINE if k in st["statistics"]}
    seeds = sorted(int(r["config"]["seed"]) for _, r in runs)
    return {"pooled": True, "jobs": jobs, "units": len(merged["units"]), "seeds": seeds, "metric": merged["metric"],
            "statistics": headline, "tests": st["tests"], "claims": st["claims"]}


def pool_synthesis(sweep_dir: str | os.PathLike, n_boot: int = 2000, seed: int = 0, write: bool = True) -> dict:
    """Pool the units of every finished job of a sweep of notebook 03, per data set.

    Args:
        sweep_dir: the sweep folder (``sweep.json``, ``records/``).
        n_boot, seed: bootstrap resamples and seed of the pooled intervals.
        write: write ``pooled_03.json`` and ``pooled_03.md`` into the sweep folder.

    Returns:
        ``{"sweep", "notebook", "data_sets": {kind: {...}}}``; a data set's entry has
        ``pooled: True`` with ``units``, ``seeds``, ``statistics`` (headline estimates),
        ``tests`` and ``claims``, or ``pooled: False`` with the ``reason``.

    Raises:
        drifthelpers.sweep.SweepError: no readable ``sweep.json`` in ``sweep_dir``.
    """
    from .sweep import load_manifest

    sweep_dir = Path(sweep_dir)
    manifest = load_manifest(sweep_dir)
    by_kind = _job_runs(sweep_dir, manifest)
    out = {"sweep": manifest["name"], "notebook": NOTEBOOK, "n_boot": int(n_boot),
           "data_sets": {kind: _pool_kind(runs, n_boot, seed) for kind, runs in sorted(by_kind.items())}}
    if write:
        atomic_write_json(sweep_dir / "pooled_03.json", out)
        atomic_write_text(sweep_dir / "pooled_03.md", pooled_table(out))
    return out


def pooled_table(pooled: dict) -> str:
    """Markdown: per data set, the pooled headline estimates and the claims table (or why not pooled)."""
    from . import stats

    lines = [f"# Sweep {pooled['sweep']}: notebook 03 pooled over its jobs", ""]
    for kind, entry in pooled["data_sets"].items():
        if not entry["pooled"]:
            lines += [f"## {kind}: not pooled", "", entry["reason"], ""]
            continue
        lines += [f"## {kind}: {entry['units']} units from jobs with seeds {entry['seeds']}", "",
                  "| statistic | value [95 % interval] |", "|---|---|"]
        lines += [f"| {name} | {stats.format_estimate(e)} |" for name, e in entry["statistics"].items()]
        lines += ["", "```", stats.claims_table(entry["claims"]), "```", ""]
    return "\n".join(lines) + "\n"
