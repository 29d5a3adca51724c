"""How long the book takes to build, and what the SVG figures cost a run.

Usage::

    .venv/bin/python benchmarks/bench_book.py --from runs/<an executed run> [--repeat 3]
    .venv/bin/python benchmarks/bench_book.py --from runs/<run> --svg-cost 01

The first form builds the book of an executed run ``--repeat`` times into a temporary
folder (nothing is executed) and prints the build times, the number of pages and figures
and the book's size. ``--svg-cost NOTEBOOK`` also executes that notebook twice, once as
the runner does (figures as PNG and SVG) and once with PNG only, and prints both times and
the executed notebooks' sizes. The numbers go to ``benchmarks/results/bench_book.json``
(``--output`` to change).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from drifthelpers import batch
from drifthelpers.book import build_book
from drifthelpers.fileio import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "bench_book.json"


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def time_builds(run_dir: Path, repeat: int) -> dict:
    """Build the book ``repeat`` times; seconds of each build, pages, figures, size."""
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            start = time.perf_counter()
            book = build_book(run_dir, Path(tmp) / "book")
            seconds.append(time.perf_counter() - start)
        size = _size(book.folder)
    return {"run": str(run_dir), "seconds": [round(s, 2) for s in seconds],
            "median_seconds": round(statistics.median(seconds), 2), "pages": len(book.pages),
            "figures": sum(book.figures.values()), "megabytes": round(size / 1e6, 1)}


def time_svg_cost(notebook: str) -> dict:
    """Execute one notebook with PNG+SVG figures (the runner's default) and with PNG only."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, options in (("png_and_svg", batch.KERNEL_OPTIONS), ("png_only", ())):
            saved, batch.KERNEL_OPTIONS = batch.KERNEL_OPTIONS, options
            try:
                result = batch.run_notebooks([notebook], run_name=label, runs_dir=tmp, progress=False,
                                             log=lambda message: None)[0]
            finally:
                batch.KERNEL_OPTIONS = saved
            out[label] = {"seconds": round(result.seconds, 1), "notebook_bytes": result.output.stat().st_size,
                          "figures": result.figures}
    return {"notebook": notebook, **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="run_dir", required=True, help="an executed run folder")
    parser.add_argument("--repeat", type=int, default=3, help="builds to time (default 3)")
    parser.add_argument("--svg-cost", metavar="NOTEBOOK", help="also time this notebook with and without SVG")
    parser.add_argument("--output", default=str(RESULTS), help=f"JSON record (default {RESULTS})")
    args = parser.parse_args()
    record = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average "
                         f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at start",
              "build": time_builds(Path(args.run_dir), args.repeat)}
    b = record["build"]
    print(f"book of {b['pages']} notebooks ({b['figures']} figures, {b['megabytes']} MB): "
          f"built in {b['median_seconds']} s (median of {len(b['seconds'])}: {b['seconds']})")
    if args.svg_cost:
        record["svg_cost"] = cost = time_svg_cost(args.svg_cost)
        for label in ("png_and_svg", "png_only"):
            print(f"{cost['notebook']} {label}: {cost[label]['seconds']} s, "
                  f"executed notebook {cost[label]['notebook_bytes'] / 1e6:.2f} MB")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps(record, indent=2) + "\n")
    print(f"record: {args.output}")


if __name__ == "__main__":
    main()
