"""Wall time and peak memory of the whole notebook collection (``python -m drifthelpers run``).

Runs the README's main job in a child process and samples the memory of its whole
process tree (the runner and every notebook kernel it starts) every 0.5 s (reading
``/proc/<pid>/smaps`` costs about 7 ms of one core per process and sample):

* peak PSS, summed over the tree: the memory the run really occupies (shared
  library pages are split between the processes that map them);
* peak RSS, summed over the tree: an upper bound (shared pages counted once per
  process);
* the largest single process.

By default the run starts cold, like a fresh clone: a new, empty data folder
(``DRIFTHELPERS_DATA``), so the mini data sets are generated and every task model is
trained. ``--warm`` uses the project's data folder and checkpoint cache as they are.

Targets: the quick profile in <= 10 minutes on 2 CPU cores with peak memory
<= 4 GB.

Usage:
    python benchmarks/bench_collection.py                  # cold, all notebooks
    python benchmarks/bench_collection.py --warm 03 04     # warm, a selection
    python benchmarks/bench_collection.py -p workers 2     # a notebook parameter for every notebook
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
GB = 1024**3


class TreeSampler(threading.Thread):
    """Samples the summed PSS and RSS of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_pss = self.peak_rss = self.peak_single = 0
        self.peak_processes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            pss = rss = 0
            for p in procs:
                try:
                    info = p.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                pss += getattr(info, "pss", info.rss)
                rss += info.rss
                self.peak_single = max(self.peak_single, info.rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_processes = max(self.peak_processes, len(procs))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="a selection (default: all)")
    ap.add_argument("--warm", action="store_true", help="reuse the project's data folder and checkpoint cache")
    ap.add_argument("--profile", default="quick", choices=("quick", "paper"))
    ap.add_argument("--keep", action="store_true", help="keep the cold run's temporary data folder")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a notebook parameter override, passed to `run` (e.g. -p workers 2)")
    args = ap.parse_args(argv)

    env = dict(os.environ)
    tmp = None
    if not args.warm:
        tmp = tempfile.mkdtemp(prefix="drift-bench-data-")
        env["DRIFTHELPERS_DATA"] = tmp
    runs = Path(tempfile.mkdtemp(prefix="drift-bench-runs-"))
    cmd = [sys.executable, "-m", "drifthelpers", "run", "--no-progress", "--profile", args.profile,
           "--runs-dir", str(runs), "--name", "bench", *args.notebooks]
    for name, value in args.param:
        cmd += ["-p", name, value]
    print(f"{'cold' if tmp else 'warm'} run on {psutil.cpu_count()} CPU(s), "
          f"{psutil.virtual_memory().total / GB:.0f} GiB: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - start
    sampler.stop()

    summary_path = runs / "bench" / "summary.json"
    per_nb = []
    if summary_path.exists():
        per_nb = [(n["notebook"], n["status"], n["seconds"]) for n in json.loads(summary_path.read_text())["notebooks"]]
    print("\nnotebook                          status   seconds")
    for name, status, sec in per_nb:
        print(f"{name:33s} {status:8s} {sec:7.1f}")
    print(f"\nwall time          {wall:7.1f} s  ({wall / 60:.1f} min; target <= 10 min) "
          f"{'ok' if wall <= 600 else 'MISSED'}")
    print(f"peak memory (PSS)  {sampler.peak_pss / GB:7.2f} GB summed over {sampler.peak_processes} process(es) "
          f"(target <= 4 GB) {'ok' if sampler.peak_pss <= 4 * GB else 'MISSED'}")
    print(f"peak memory (RSS)  {sampler.peak_rss / GB:7.2f} GB summed (upper bound: shared pages counted per process)")
    print(f"largest process    {sampler.peak_single / GB:7.2f} GB RSS")
    print(f"exit status        {rc}; executed notebooks in {runs / 'bench'}")
    if tmp and not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
