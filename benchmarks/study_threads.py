"""Is the committed study run stable under a change of thread count?

The study run in ``results/study/`` ran on 2 cores. Float reductions depend on the thread
count; the study profile therefore trains every task model on one thread (``job_threads`` 1:
two single-threaded workers on 2 cores, the kernel alone on one core), so a re-run on one core
should train the same models. A headline number that means something must not move by more
than its own uncertainty. This script compares a re-run (``bench_study.py --cores 1``, one core
and one thread) with the committed run, claim by claim: a point estimate is *stable* when it
moves by less than half the width of the committed run's 95 % interval (or not at all); an
estimate whose committed interval has an open end cannot be checked this way and is reported
as such.

It writes ``results/study/thread-stability.json`` (every estimate, both values, the move, half
the width, the verdict, both runs' commits and thread counts) and regenerates the README and
docs/statistics.md blocks (``publish_study.py``), which then state the result.

Usage:
    .venv/bin/python benchmarks/bench_study.py --cores 1 --name study-1thread --out /tmp/study-1thread.json
    .venv/bin/python benchmarks/study_threads.py runs/study-1thread --bench /tmp/study-1thread.json

``--trained-by runs/study-1thread`` compares a run that evaluated that run's cached models again
(with newer code; see ``publish_study.py --trained-by``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import publish_study as ps  # noqa: E402

from drifthelpers.fileio import atomic_write_json  # noqa: E402

OUT_NAME = "thread-stability.json"


def _claims(folder: Path) -> dict[tuple[str, str], dict]:
    """``{(notebook, claim): claim}`` of a run folder or a published folder (same layout)."""
    out = {}
    for name in ps.NOTEBOOKS:
        for c in ps._read_json(folder / name / "results.json", f"the results of notebook {name}")["claims"]:
            out[(name[:2], c["claim"])] = c
    return out


def compare(reference: dict, rerun: dict) -> list[dict]:
    """One row per claim of ``reference``: both values, intervals and verdicts, the move, half the
    interval width, and whether value, interval and verdict are ``identical``.

    Raises:
        PublishError: a claim of the reference is missing from the re-run.
    """
    rows = []
    for key, ref in reference.items():
        if key not in rerun:
            raise ps.PublishError(f"claim {key[1]!r} of notebook {key[0]} is missing from the re-run")
        v1, v2 = ref.get("value"), rerun[key].get("value")
        row = {"notebook": key[0], "claim": key[1], "value": v1, "rerun_value": v2,
               "low": ref.get("low"), "high": ref.get("high"),
               "rerun_low": rerun[key].get("low"), "rerun_high": rerun[key].get("high"),
               "verdict": ref.get("verdict"), "rerun_verdict": rerun[key].get("verdict")}
        row["identical"] = all(row[a] == row[b] for a, b in (("value", "rerun_value"), ("low", "rerun_low"),
                                                              ("high", "rerun_high"), ("verdict", "rerun_verdict")))
        if v1 is None or v2 is None:
            row.update(move=None, half_width=None, stable=None, reason="a value is undefined")
        elif ref.get("low") is None or ref.get("high") is None:
            row.update(move=abs(v2 - v1), half_width=None, stable=None, reason="the interval has an open end")
        else:
            move, half = abs(v2 - v1), (ref["high"] - ref["low"]) / 2
            row.update(move=move, half_width=half, stable=move == 0 or move < half, reason=None)
        rows.append(row)
    return rows


def _threads(bench: dict) -> int | None:
    return (bench.get("machine") or {}).get("torch_threads")


def record(run_dir: Path, bench_path: Path, results_dir: Path = ps.RESULTS, trained_by: Path | None = None) -> dict:
    """The thread-stability record of a 1-thread re-run against the published study run.

    ``trained_by``: the measured 1-thread run whose cached models ``run_dir`` evaluated again
    (as ``publish_study.py --trained-by``); ``bench_path`` is then that run's record.

    Raises:
        PublishError: the re-run is incomplete or not a study run, its benchmark record is not a
            successful measurement of it, or it used the same thread count as the reference.
    """
    summary = ps.check_run(run_dir)
    if trained_by is not None:
        ps.check_reuse(run_dir, Path(trained_by))
    bench = ps.check_bench(bench_path, Path(trained_by or run_dir))
    prov = ps._read_json(results_dir / "provenance.json", "the provenance record")
    ref_threads, threads = _threads(prov), _threads(bench)
    if threads is None or threads == ref_threads:
        raise ps.PublishError(f"{bench_path}: the re-run used {threads} thread(s), the reference {ref_threads}: "
                              "nothing to compare")
    rows = compare(_claims(results_dir), _claims(run_dir))
    checked = [r for r in rows if r["stable"] is not None]
    return {
        "reference": {"commit": (prov.get("git") or {}).get("commit"), "threads": ref_threads},
        "rerun": {"commit": (summary.get("environment", {}).get("git") or {}).get("commit"), "threads": threads,
                  "trained_by": None if trained_by is None else str(trained_by),
                  "cores": (bench.get("machine") or {}).get("cores_used"), "wall_seconds": bench.get("wall_seconds"),
                  "started": bench.get("started")},
        "rule": "stable: the point estimate moves by less than half the width of the reference's 95 % interval",
        "stable": sum(r["stable"] for r in checked), "unstable": sum(not r["stable"] for r in checked),
        "not_checkable": len(rows) - len(checked), "identical": sum(r["identical"] for r in rows),
        "verdicts_changed": sum(r["verdict"] != r["rerun_verdict"] for r in rows), "estimates": rows,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="the re-run's folder (runs/<name>)")
    p.add_argument("--bench", type=Path, required=True, help="bench_study.py's record of the re-run")
    p.add_argument("--trained-by", type=Path, metavar="RUN_DIR",
                   help="the measured re-run whose cached models RUN_DIR evaluated again; --bench is its record")
    args = p.parse_args(argv)
    try:
        rec = record(args.run_dir, args.bench, trained_by=args.trained_by)
        atomic_write_json(ps.RESULTS / OUT_NAME, rec)
        print(f"{rec['stable']} stable, {rec['unstable']} unstable, {rec['not_checkable']} not checkable; "
              f"written to {ps.RESULTS / OUT_NAME}")
        print("regenerated " + ", ".join(str(d.relative_to(REPO)) for d in ps.write_blocks()))
    except ps.PublishError as err:
        print(f"study_threads: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
