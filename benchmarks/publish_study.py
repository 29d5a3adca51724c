"""Publish a finished ``study`` run under ``results/study/`` and regenerate the docs' claims tables.

``python benchmarks/publish_study.py RUN_DIR --bench BENCH_JSON`` checks that the run folder
``RUN_DIR`` (what ``python -m drifthelpers run 03 04 05 --profile study`` writes) is complete,
then writes ``results/study/`` in one step (a folder built beside it and renamed into place):

* ``<notebook>/results.json`` for notebooks 03, 04 and 05: the run's results, as compact JSON (the
  same values; the run folder's layout; notebooks and figures are not copied);
* ``provenance.json``: git commit and dirty flag, Python and package versions (from the run's
  ``summary.json``), the profile, the seconds per notebook, and the machine, wall time, peak
  memory and budget verdict from the benchmark record of ``benchmarks/bench_study.py`` (``null``
  with a reason when no record is given), the date the run finished and the date it was published.

``--trained-by MEASURED_RUN``: ``RUN_DIR`` evaluated again, with a newer version of the
package, the models that the measured run trained and cached (a run whose every model of
notebooks 03 and 05 came from the cache, with the same settings; checked). ``--bench`` is then the
measured run's record, and ``provenance.json`` holds both commits (``"training"``).

It then regenerates, from ``results/study/``, the marked blocks of ``README.md`` (the claims
the run decided, counts of the rest, one line of provenance) and ``docs/statistics.md`` (every
claim). ``--readme-only`` regenerates the blocks alone. When ``results/study/`` is absent the
blocks say that no study run is committed. ``tests/test_study_results.py`` fails when a block
disagrees with the files.

Usage:
    .venv/bin/python benchmarks/publish_study.py runs/study --bench benchmarks/results/study-run.json
    .venv/bin/python benchmarks/publish_study.py runs/again --trained-by runs/study --bench benchmarks/results/study-run.json
    .venv/bin/python benchmarks/publish_study.py --readme-only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drifthelpers.fileio import (  # noqa: E402
    atomic_write_bytes, atomic_write_json, atomic_write_text, default_file_mode)

NOTEBOOKS = ("03_drift_synthesis", "04_drift_forensics", "05_drift_optimisation")
PROFILE = "study"
RESULTS = REPO / "results" / "study"
BEGIN = "<!-- begin generated from results/study by benchmarks/publish_study.py -->"
END = "<!-- end generated -->"
BUDGET_SECONDS = 90 * 60  # the same budget benchmarks/bench_study.py checks
BUDGET_BYTES = 4 * 1024**3
README_ROWS = 6  # decided claims listed in the README; docs/statistics.md lists every claim
VERDICTS = ("supported", "contradicted", "undecided")


class PublishError(ValueError):
    """A run folder, benchmark record or document that cannot be published from."""


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PublishError(f"{path}: {what} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PublishError(f"{path}: {what} is not valid JSON ({err})") from None


def check_run(run_dir: Path, *, allow_profile: bool = False) -> dict:
    """The run's ``summary.json`` after checking that notebooks 03-05 all finished.

    Args:
        run_dir: a run folder with ``summary.json`` and ``<notebook>/results.json``.
        allow_profile: accept a run of another profile than ``study``.

    Returns:
        The parsed ``summary.json``.

    Raises:
        PublishError: naming the notebook that is missing, failed or has no results file,
            or the profile when it is not ``study``.
    """
    summary = _read_json(run_dir / "summary.json", "the run summary")
    profile = summary.get("profile")
    if profile != PROFILE and not allow_profile:
        raise PublishError(f"{run_dir}: profile is {profile!r}, not {PROFILE!r} (--allow-profile to publish it anyway)")
    statuses = {Path(nb.get("notebook", "")).stem: nb.get("status") for nb in summary.get("notebooks", [])}
    for name in NOTEBOOKS:
        if name not in statuses:
            raise PublishError(f"{run_dir}: notebook {name} did not run (not in summary.json)")
        if statuses[name] != "ok":
            raise PublishError(f"{run_dir}: notebook {name} did not finish (status {statuses[name]!r})")
        results = _read_json(run_dir / name / "results.json", f"the results of notebook {name}")
        if results.get("profile") != profile or not isinstance(results.get("claims"), list):
            raise PublishError(f"{run_dir / name / 'results.json'}: not a {profile} results file with a claims list")
    if summary.get("interrupted") or summary.get("status") != "ok":
        raise PublishError(f"{run_dir}: the run was interrupted or failed (status {summary.get('status')!r})")
    return summary


def check_bench(bench_path: Path, run_dir: Path) -> dict:
    """The benchmark record of ``bench_study.py``, checked to be a successful run of ``run_dir``."""
    bench = _read_json(bench_path, "the benchmark record")
    if bench.get("mode") != "run" or bench.get("returncode") != 0:
        raise PublishError(f"{bench_path}: not a successful measured run (mode {bench.get('mode')!r}, "
                           f"returncode {bench.get('returncode')!r})")
    measured, here = Path(bench.get("run_dir", "")), run_dir.resolve()
    # a relative run_dir was relative to wherever the benchmark ran: match its trailing parts
    same = measured.resolve() == here if measured.is_absolute() else here.parts[-len(measured.parts):] == measured.parts
    if not measured.parts or not same:
        raise PublishError(f"{bench_path}: measured the run folder {measured}, not {here}")
    return bench


def _models(run_dir: Path) -> tuple[dict, dict, int, int]:
    """Notebook 03's and 05's settings per data set, the models the run used, and how many of
    them came from the checkpoint cache (notebook 04 trains nothing)."""
    synthesis = _read_json(run_dir / NOTEBOOKS[0] / "results.json", "the results of notebook 03")
    optimisation = _read_json(run_dir / NOTEBOOKS[2] / "results.json", "the results of notebook 05")
    try:
        runs = synthesis["runs"]
        used = sum(len(r["units"]) * (len(r["presets"]) + bool(r.get("mixed"))) for r in runs.values())
        cached = sum(int(r["models_from_cache"]) for r in runs.values())
        arms = [a for s in optimisation["summaries"].values() for a in s["arms"].values()]
        used += sum(a["seeds"] for a in arms)
        cached += sum(a["seeds"] for a in arms if a["cached"])
        settings = {"03": {k: r["config"] for k, r in runs.items()}, "05": optimisation["configs"]}
        return settings, optimisation["seeds"], used, cached
    except (KeyError, TypeError, AttributeError) as err:
        raise PublishError(f"{run_dir}: the results of notebooks 03 and 05 do not say which models were "
                           f"trained and which came from the cache (missing {err})") from None


def check_reuse(run_dir: Path, trained_by: Path, *, allow_profile: bool = False) -> dict:
    """The ``summary.json`` of ``trained_by``, after checking that ``run_dir`` trained nothing
    itself: the same settings, and every model of notebooks 03 and 05 from the checkpoint cache
    (which ``trained_by`` filled: cache keys hold the settings, the data and the seed).

    Raises:
        PublishError: ``trained_by`` is incomplete, its settings differ, or ``run_dir`` trained
            a model.
    """
    summary = check_run(trained_by, allow_profile=allow_profile)
    mine, theirs = _models(run_dir), _models(trained_by)
    if mine[:2] != theirs[:2]:
        raise PublishError(f"{run_dir} and {trained_by} differ in the settings of notebook 03 or 05")
    if mine[3] != mine[2]:
        raise PublishError(f"{run_dir} trained {mine[2] - mine[3]} of its {mine[2]} models itself: "
                           "publish it on its own, with its own benchmark record")
    return summary


def provenance(summary: dict, run_dir: Path, bench: dict | None, trained: tuple[dict, Path] | None = None) -> dict:
    """What ``provenance.json`` records about the run (see the module docstring)."""
    env = summary.get("environment", {})
    finished = dt.datetime.fromtimestamp((run_dir / "summary.json").stat().st_mtime, dt.timezone.utc)
    record = {
        "profile": summary.get("profile"),
        "git": env.get("git"), "python": env.get("python"), "packages": env.get("packages"),
        "notebook_seconds": {Path(nb["notebook"]).stem: nb.get("seconds") for nb in summary["notebooks"]},
        "run_finished": finished.strftime("%Y-%m-%d %H:%M UTC"),
        "published": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "budget": {"seconds": BUDGET_SECONDS, "bytes": BUDGET_BYTES},
    }
    if trained is not None:
        theirs, folder = trained
        record["training"] = {
            "git": theirs.get("environment", {}).get("git"),
            "notebook_seconds": {Path(nb["notebook"]).stem: nb.get("seconds") for nb in theirs["notebooks"]},
            "run_finished": dt.datetime.fromtimestamp((folder / "summary.json").stat().st_mtime,
                                                      dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if bench is None:
        reason = "no benchmark record was given with --bench"
        return {**record, "machine": None, "wall_seconds": None, "peak_memory_bytes": None,
                "within_budget": None, "benchmark_started": None, "not_measured_reason": reason}
    return {**record, "machine": bench.get("machine"), "wall_seconds": bench.get("wall_seconds"),
            "peak_memory_bytes": bench.get("peak_tree_rss_bytes"), "within_budget": bench.get("within_budget"),
            "benchmark_started": bench.get("started"), "budget": bench.get("budget", record["budget"]),
            "not_measured_reason": None}


def publish(run_dir: Path, out: Path = RESULTS, *, bench_path: Path | None = None,
            allow_profile: bool = False, force: bool = False, trained_by: Path | None = None) -> Path:
    """Write ``out`` (results files and ``provenance.json``) from a complete run, all or nothing.

    ``trained_by``: the measured run whose cached models ``run_dir`` evaluated again (with a
    newer version of the statistics); the benchmark record is then that run's, and
    ``provenance.json`` records both runs (``"training"``).

    Raises:
        PublishError: the run is incomplete, of another profile, or the record does not fit it.
        FileExistsError: ``out`` exists and ``force`` is false.
    """
    run_dir, out = Path(run_dir), Path(out)
    summary = check_run(run_dir, allow_profile=allow_profile)
    trained = None
    if trained_by is not None:
        trained = (check_reuse(run_dir, Path(trained_by), allow_profile=allow_profile), Path(trained_by))
    bench = check_bench(Path(bench_path), Path(trained_by or run_dir)) if bench_path else None

    def fill(staging: Path) -> None:
        for name in NOTEBOOKS:
            (staging / name).mkdir()
            write_compact(staging / name / "results.json", run_dir / name / "results.json")
        atomic_write_json(staging / "provenance.json", provenance(summary, run_dir, bench, trained))

    return write_folder(out, fill, force=force)


def write_compact(dest: Path, source: Path) -> None:
    """``source``'s JSON written to ``dest`` compactly (the same values)."""
    data = json.loads(source.read_text(encoding="utf-8"))
    atomic_write_text(dest, json.dumps(data, separators=(",", ":")) + "\n")


def write_folder(out: Path, fill, *, force: bool = False) -> Path:
    """Build ``out`` all or nothing: ``fill(staging)`` writes a folder beside it, which is then
    renamed into place (replacing an old ``out`` only with ``force``).

    Raises:
        FileExistsError: ``out`` exists and ``force`` is false.
    """
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; refusing to overwrite it (--force replaces it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fill(staging)
        mode = default_file_mode()
        os.chmod(staging, mode | (mode & 0o444) >> 2)  # what mkdir would give, not mkdtemp's 0o700
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _swap_in(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` folder to ``out``, replacing an old ``out`` only then."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.rename(out, old / out.name)
    os.rename(staging, out)
    shutil.rmtree(old)


def load_results(results_dir: Path = RESULTS) -> dict | None:
    """``{"claims": [...], "provenance": {...}}`` from a published folder, or None when absent."""
    results_dir = Path(results_dir)
    if not results_dir.exists():
        return None
    claims = []
    for name in NOTEBOOKS:
        for c in _read_json(results_dir / name / "results.json", f"the results of notebook {name}")["claims"]:
            if c.get("verdict") not in VERDICTS:
                raise PublishError(f"{results_dir / name / 'results.json'}: claim {c.get('claim')!r} "
                                   f"has verdict {c.get('verdict')!r}, not one of {VERDICTS}")
            fields = {k: c.get(k) for k in ("claim", "value", "low", "high", "verdict")}
            claims.append({"notebook": name[:2], **fields})
    threads = results_dir / "thread-stability.json"
    return {"claims": claims, "provenance": _read_json(results_dir / "provenance.json", "the provenance record"),
            "threads": _read_json(threads, "the thread-stability record") if threads.exists() else None}


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def claim_row(c: dict) -> str:
    """One Markdown table row: notebook, claim, ``value [low, high]``, verdict."""
    text = str(c["claim"]).replace("|", "\\|")
    return f"| {c['notebook']} | {text} | {_num(c['value'])} [{_num(c['low'])}, {_num(c['high'])}] | {c['verdict']} |"


def provenance_line(p: dict) -> str:
    """The run in one line: commit, date, wall time against 90 minutes, peak memory against 4 GiB."""
    git = p.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" with uncommitted changes" if git.get("dirty") else "")
    budget = p["budget"]
    if p.get("wall_seconds") is None:
        measured = f"wall time and peak memory not measured: {p.get('not_measured_reason')}"
    else:
        measured = (f"wall time {p['wall_seconds'] / 60:.1f} min of the {budget['seconds'] / 60:.0f}-minute budget, "
                    f"peak memory {p['peak_memory_bytes'] / 1024**3:.2f} GiB of {budget['bytes'] / 1024**3:.0f} GiB "
                    f"({'within' if p.get('within_budget') else 'NOT within'} budget)")
    training = p.get("training")
    if training:
        by = ((training.get("git") or {}).get("commit") or "unknown")[:10]
        return (f"Run: profile {p['profile']}, commit {commit}, finished {p['run_finished']}, evaluating the models "
                f"that the run of commit {by} (finished {training['run_finished']}) trained and cached; that run's "
                f"{measured}.")
    return f"Run: profile {p['profile']}, commit {commit}, finished {p['run_finished']}; {measured}."


def threads_lines(t: dict | None, *, full: bool) -> list[str]:
    """The thread-count check of ``benchmarks/study_threads.py`` in one line (``full``: and a
    table of every estimate that moved by half its interval width or more)."""
    if t is None:
        return ["Thread count: no re-run with another thread count is committed "
                "(`benchmarks/study_threads.py` compares one)."]
    checked = t["stable"] + t["unstable"]
    line = (f"Thread count: a re-run with {t['rerun']['threads']} thread(s) instead of {t['reference']['threads']} "
            f"(commit {(t['rerun']['commit'] or 'unknown')[:10]}) ")
    if "identical" in t:
        line += (f"gave {t['identical']} of {len(t['estimates'])} claims the same value, interval and verdict to "
                 "the last digit, and ")
    line += (f"moved {t['stable']} of {checked} checkable point estimates by less than half their interval "
             "width")
    moved = [r for r in t["estimates"] if r["stable"] is False]
    line += (f"; {t['unstable']} moved more ({'; '.join(r['claim'] for r in moved)})" if t["unstable"] else "") + (
        f"; {t['not_checkable']} with an open or undefined interval not checkable." if t["not_checkable"] else ".")
    changed = [r for r in t["estimates"] if "verdict" in r and r["verdict"] != r["rerun_verdict"]]
    if changed:
        line += f" The verdict changed for {len(changed)} claim(s): " + "; ".join(
            f"{r['claim']} ({r['verdict']} -> {r['rerun_verdict']})" for r in changed) + "."
    lines = [line]
    if full and moved:
        lines += ["", "| nb | claim | value | re-run value | move | half width |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['notebook']} | {r['claim']} | {_num(r['value'])} | {_num(r['rerun_value'])} | "
                  f"{_num(r['move'])} | {_num(r['half_width'])} |" for r in moved]
    return lines


def _counts(claims: list[dict]) -> str:
    return ", ".join(f"{sum(c['verdict'] == v for c in claims)} {v}" for v in VERDICTS)


def render(results: dict | None, *, full: bool) -> str:
    """The generated block's text (between the markers) from :func:`load_results`' output.

    Args:
        results: the published claims and provenance, or None when nothing is published.
        full: every claim (docs/statistics.md) rather than the decided ones (README.md).
    """
    if results is None:
        return ("\nNo study run is committed yet (`results/study/` is absent): "
                "`benchmarks/publish_study.py` publishes a finished one.\n")
    claims = results["claims"]
    decided = [c for c in claims if c["verdict"] != "undecided"]
    shown = claims if full else decided[:README_ROWS]
    head = f"{len(claims)} claims: {_counts(claims)}."
    if not full:
        listed = ("the decided ones" if len(shown) == len(decided)
                  else f"{len(shown)} of the {len(decided)} decided ones")
        head += (f" Below {listed}; every claim in "
                 "[docs/statistics.md](docs/statistics.md#what-the-study-run-decided).")
    lines = [head]
    if shown:
        lines += ["", "| nb | claim | value [low, high] | verdict |", "|---|---|---|---|", *map(claim_row, shown)]
    lines += ["", provenance_line(results["provenance"]), "", *threads_lines(results.get("threads"), full=full)]
    return "\n" + "\n".join(lines) + "\n"


DOCS = {REPO / "README.md": False, REPO / "docs" / "statistics.md": True}


def block_of(text: str, path: Path, begin: str = BEGIN, end: str = END) -> str:
    """The text between the generated-block markers of ``path``; PublishError without exactly one."""
    if text.count(begin) != 1 or end not in text.split(begin, 1)[1]:
        raise PublishError(f"{path} needs exactly one generated block ({begin} ... {end})")
    return text.split(begin, 1)[1].split(end, 1)[0]


def replace_blocks(docs: dict[Path, bool], text_of, begin: str = BEGIN, end: str = END) -> list[Path]:
    """Rewrite the marked block of each document (``{path: full}``) with ``text_of(full)``; every
    document is checked for its markers before any is written."""
    texts = {path: Path(path).read_text(encoding="utf-8") for path in docs}
    olds = {path: block_of(text, path, begin, end) for path, text in texts.items()}
    for path, full in docs.items():
        new = texts[path].replace(begin + olds[path] + end, begin + text_of(full) + end)
        if new != texts[path]:
            atomic_write_text(path, new)
    return list(docs)


def write_blocks(results_dir: Path = RESULTS, docs: dict[Path, bool] | None = None) -> list[Path]:
    """Regenerate the marked block of each document (``{path: full}``) from ``results_dir``."""
    results = load_results(results_dir)
    return replace_blocks(DOCS if docs is None else docs, lambda full: render(results, full=full))


def publish_main(argv, description: str, publish_one, results: Path, write, show) -> int:
    """The command line both publishers share: RUN_DIR (publish, then regenerate the blocks) or
    --readme-only; ``publish_one(args)`` publishes and returns the folder, ``write(out)``
    regenerates the blocks, ``show(out)`` returns the text for a folder elsewhere than ``results``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("run_dir", nargs="?", type=Path, help="the finished run folder (runs/<name>)")
    p.add_argument("--out", type=Path, default=results, help=f"results folder (default {results.relative_to(REPO)})")
    p.add_argument("--force", action="store_true", help="replace an existing results folder")
    p.add_argument("--readme-only", action="store_true", help="only regenerate the blocks from --out")
    if publish_one is publish_study_run:
        p.add_argument("--bench", type=Path, help="benchmark record of bench_study.py for this run")
        p.add_argument("--allow-profile", action="store_true", help="publish a run of another profile than study")
        p.add_argument("--trained-by", type=Path, metavar="RUN_DIR",
                       help="the measured run whose cached models RUN_DIR evaluated again; --bench is its record")
    args = p.parse_args(argv)
    if args.readme_only == (args.run_dir is not None):
        p.error("give either RUN_DIR or --readme-only")
    try:
        if not args.readme_only:
            print(f"published {publish_one(args)}")
        if args.out.resolve() == results.resolve():
            print("regenerated " + ", ".join(str(d.relative_to(REPO)) for d in write(args.out)))
        else:
            print(show(args.out))
    except (PublishError, FileExistsError) as err:
        print(f"{p.prog}: {err}", file=sys.stderr)
        return 2
    return 0


def publish_study_run(args) -> Path:
    return publish(args.run_dir, args.out, bench_path=args.bench, allow_profile=args.allow_profile, force=args.force,
                   trained_by=args.trained_by)


def main(argv=None) -> int:
    return publish_main(argv, __doc__.split("\n\n")[0], publish_study_run, RESULTS, write_blocks,
                        lambda out: render(load_results(out), full=True))


if __name__ == "__main__":
    raise SystemExit(main())
