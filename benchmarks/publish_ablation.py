"""Publish notebook 03's ablation under ``results/ablation/`` and regenerate the fidelity tables.

``python benchmarks/publish_ablation.py RUN_DIR`` checks that ``RUN_DIR`` (a run folder of
``python -m drifthelpers run 03 -p ablation true``) finished notebook 03 with an ablation of
both data sets, then writes ``results/ablation/`` in one step (a folder built beside it and
renamed into place):

* ``ablation_<data set>.json``: the ablation results (``drifthelpers.ablation.ablation``), as
  compact JSON (the same values);
* ``provenance.json``: git commit and dirty flag, Python and package versions, profile and
  parameters (from the run's ``summary.json``), the notebook's seconds, the date the run
  finished and the date it was published.

It then regenerates, from ``results/ablation/``, the marked blocks of ``README.md`` (per
correction: what the public code did, what this package does, and the change of the mean
faithful drop and of the mean corruption drop on each data set, with 95 % intervals) and ``docs/fidelity.md`` (every headline
number of every row). ``--readme-only`` regenerates the blocks alone. ``tests/test_ablation_results.py``
fails when a block disagrees with the files.

Usage:
    .venv/bin/python benchmarks/publish_ablation.py runs/ablation-quick
    .venv/bin/python benchmarks/publish_ablation.py --readme-only
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from publish_study import (  # noqa: E402
    PublishError, _read_json, block_of, publish_main, replace_blocks, write_compact, write_folder)

from drifthelpers.fileio import atomic_write_json  # noqa: E402

NOTEBOOK = "03_drift_synthesis"
DATA_SETS = ("microscopy", "drone")
RESULTS = REPO / "results" / "ablation"
BEGIN = "<!-- begin generated from results/ablation by benchmarks/publish_ablation.py -->"
END = "<!-- end generated -->"
#: The headline numbers the README's table shows per data set (docs/fidelity.md shows all of them).
README_NUMBERS = {"mean_drop_faithful": "faithful drop", "mean_drop_corruption": "corruption drop"}


def check_run(run_dir: Path) -> dict:
    """The run's ``summary.json`` after checking notebook 03 finished with both ablation files.

    Raises:
        PublishError: naming what is missing (the notebook, its status, an ablation file).
    """
    summary = _read_json(run_dir / "summary.json", "the run summary")
    statuses = {Path(nb.get("notebook", "")).stem: nb.get("status") for nb in summary.get("notebooks", [])}
    if statuses.get(NOTEBOOK) != "ok":
        raise PublishError(f"{run_dir}: notebook {NOTEBOOK} did not finish (status {statuses.get(NOTEBOOK)!r})")
    for kind in DATA_SETS:
        result = _read_json(run_dir / NOTEBOOK / f"ablation_{kind}.json", f"the {kind} ablation")
        if not isinstance(result.get("rows"), list) or not result["rows"] or "baseline" not in result:
            raise PublishError(f"{run_dir / NOTEBOOK / f'ablation_{kind}.json'}: not an ablation result with rows")
    return summary


def provenance(summary: dict, run_dir: Path) -> dict:
    """What ``provenance.json`` records about the run (see the module docstring)."""
    env = summary.get("environment", {})
    finished = dt.datetime.fromtimestamp((run_dir / "summary.json").stat().st_mtime, dt.timezone.utc)
    seconds = {Path(nb["notebook"]).stem: nb.get("seconds") for nb in summary["notebooks"]}
    return {"profile": summary.get("profile"), "parameters": summary.get("parameters", {}),
            "git": env.get("git"), "python": env.get("python"), "packages": env.get("packages"),
            "notebook_seconds": seconds, "run_finished": finished.strftime("%Y-%m-%d %H:%M UTC"),
            "published": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def publish(run_dir: Path, out: Path = RESULTS, *, force: bool = False) -> Path:
    """Write ``out`` (the ablation files and ``provenance.json``) from a finished run, all or nothing.

    Raises:
        PublishError: the run is incomplete.
        FileExistsError: ``out`` exists and ``force`` is false.
    """
    run_dir, out = Path(run_dir), Path(out)
    summary = check_run(run_dir)

    def fill(staging: Path) -> None:
        for kind in DATA_SETS:
            write_compact(staging / f"ablation_{kind}.json", run_dir / NOTEBOOK / f"ablation_{kind}.json")
        atomic_write_json(staging / "provenance.json", provenance(summary, run_dir))

    return write_folder(out, fill, force=force)


def load_results(results_dir: Path = RESULTS) -> dict | None:
    """``{"ablations": {kind: result}, "provenance": {...}}`` from a published folder, or None."""
    results_dir = Path(results_dir)
    if not results_dir.exists():
        return None
    ablations = {kind: _read_json(results_dir / f"ablation_{kind}.json", f"the {kind} ablation") for kind in DATA_SETS}
    return {"ablations": ablations, "provenance": _read_json(results_dir / "provenance.json", "the provenance record")}


def _estimate(e: dict | None) -> str:
    """``value [low, high]`` with 3 significant digits, ``n/a`` for a missing bound; ``-`` when absent."""
    if e is None:
        return "-"
    num = lambda x: "n/a" if x is None else f"{x:+.3g}"  # noqa: E731
    text = f"{num(e.get('value'))} [{num(e.get('low'))}, {num(e.get('high'))}]"
    return text + (" *" if e.get("low") is not None and e.get("high") is not None
                   and (e["low"] > 0 or e["high"] < 0) else "")


def _change(result: dict, correction: str, number: str) -> dict | None:
    row = next((r for r in result["rows"] if r["correction"] == correction), None)
    return None if row is None else row["numbers"][number]["change"]


def _corrections(ablations: dict) -> list[str]:
    """Every row of any data set, in the order the ablation ran them (``all`` last)."""
    names = []
    for result in ablations.values():
        names += [r["correction"] for r in result["rows"] if r["correction"] not in names]
    return sorted(names, key=lambda n: n == "all")


def provenance_line(p: dict) -> str:
    git = p.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" with uncommitted changes" if git.get("dirty") else "")
    # the notebook's wall time is in provenance.json; it is not shown, since an ablation run is no benchmark
    return f"Run: profile {p['profile']}, commit {commit}, finished {p['run_finished']}."


def render(results: dict | None, *, full: bool) -> str:
    """The generated block's text from :func:`load_results`' output (``full``: docs/fidelity.md)."""
    from drifthelpers.ablation import HEADLINE
    from drifthelpers.synthesis_fidelity import CORRECTION_CHANGES

    if results is None:
        return ("\nNo ablation run is committed yet (`results/ablation/` is absent): "
                "`benchmarks/publish_ablation.py` publishes one.\n")
    abl = results["ablations"]
    names = _corrections(abl)
    note = ("Change from the public protocol when the correction alone is applied, with its 95 % "
            "interval; `*`: the interval excludes 0; `-`: the correction does not apply to that data set.")
    if not full:
        heads = [f"{k}: Δ {label}" for k in DATA_SETS for label in README_NUMBERS.values()]
        lines = ["Measured effect: the change of the mean faithful drop and of the mean corruption drop. " + note,
                 "", "| correction | public code | this package | " + " | ".join(heads) + " |",
                 "|---|---|---|" + "---|" * len(heads)]
        for name in names:
            public, ours = CORRECTION_CHANGES.get(name, ("all of the above", "every correction together"))
            cells = [_estimate(_change(abl[k], name, number)) for k in DATA_SETS for number in README_NUMBERS]
            lines.append(f"| {name} | {public} | {ours} | " + " | ".join(cells) + " |")
    else:
        lines = [note]
        for kind in DATA_SETS:
            base = abl[kind]["baseline"]
            lines += ["", f"**{kind}**, public protocol: "
                      + ", ".join(f"{k} {_estimate(base[k]).replace(' *', '')}" for k in HEADLINE), "",
                      "| correction | " + " | ".join(HEADLINE) + " |", "|---|" + "---|" * len(HEADLINE)]
            for row in abl[kind]["rows"]:
                paired = "" if row["paired"] else " (unpaired)"
                lines.append(f"| {row['correction']}{paired} | "
                             + " | ".join(_estimate(row["numbers"][k]["change"]) for k in HEADLINE) + " |")
    return "\n" + "\n".join([*lines, "", provenance_line(results["provenance"])]) + "\n"


DOCS = {REPO / "README.md": False, REPO / "docs" / "fidelity.md": True}


def write_blocks(results_dir: Path = RESULTS, docs: dict[Path, bool] | None = None) -> list[Path]:
    """Regenerate the marked block of each document (``{path: full}``) from ``results_dir``."""
    results = load_results(results_dir)
    return replace_blocks(DOCS if docs is None else docs, lambda full: render(results, full=full), BEGIN, END)


def main(argv=None) -> int:
    return publish_main(argv, __doc__.split("\n\n")[0], lambda args: publish(args.run_dir, args.out, force=args.force),
                        RESULTS, write_blocks, lambda out: render(load_results(out), full=True))


if __name__ == "__main__":
    raise SystemExit(main())
