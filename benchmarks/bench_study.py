"""Budget of the study profile: notebooks 03-05 together within 90 minutes and 4 GB on 2 CPU cores.

Two modes:

* default (the measurement): runs ``python -m drifthelpers run 03 04 05 --profile study`` in a
  fresh run folder, pinned to 2 cores, and records its wall time and the peak memory of the
  whole process tree (the runner, the notebook kernels and any worker processes; the sum of
  their resident set sizes, sampled every 0.5 s, so shared pages count more than once: an
  upper bound);
* ``--calibrate`` (a projection, not a measurement of the budget): builds the study mini data
  when missing, trains and evaluates one reduced unit of notebook 03 per data set (``--presets``
  training views plus the mixed-view model, without the checkpoint cache) and one seed of each
  arm of notebook 05 per data set at the study sizes, and projects the time of the full run
  from the seconds per model. Notebook 04 (one search on a model notebook 03 cached), the
  bootstrap and kernel start-up are not in the projection.

Both print their figures and write them as JSON under ``benchmarks/results/``.

Usage:
    .venv/bin/python benchmarks/bench_study.py --calibrate
    .venv/bin/python benchmarks/bench_study.py            # the full run: about an hour or more
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drifthelpers.fileio import atomic_write_json  # noqa: E402
from drifthelpers.profiles import PROFILES, settings  # noqa: E402

PROFILE = "study"
BUDGET_SECONDS = 90 * 60
BUDGET_BYTES = 4 * 1024**3
RESULTS = REPO / "benchmarks" / "results"


def pin_cores(n: int) -> list[int]:
    """Restrict this process (and what it starts) to ``n`` cores; returns the cores used."""
    cores = sorted(os.sched_getaffinity(0))[:n]
    os.sched_setaffinity(0, cores)
    return cores


def machine(cores: list[int]) -> dict:
    """What the figures were measured on."""
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "cores_used": cores, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()]}


def tree_rss(proc) -> int:
    """Resident set size of ``proc`` and all its descendants, in bytes (0 for vanished ones)."""
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def measure_run(args) -> dict:
    """Run notebooks 03-05 in the study profile and record wall time and peak tree memory."""
    import psutil

    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="bench-study-"))
    cmd = [sys.executable, "-m", "drifthelpers", "run", "03", "04", "05", "--profile", PROFILE,
           "--runs-dir", str(runs_dir), "--name", args.name, "--no-progress", *sum(args.param, [])]
    start = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=REPO)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc))
        time.sleep(0.5)
    wall = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"mode": "run", "command": " ".join(cmd[1:]), "returncode": proc.returncode,
            "run_dir": str(runs_dir / args.name), "wall_seconds": round(wall, 1),
            "peak_tree_rss_bytes": peak, "max_child_rss_bytes": children,
            "within_budget": proc.returncode == 0 and wall <= BUDGET_SECONDS and peak <= BUDGET_BYTES}


def _timed(fn, *a, **kw):
    """``(result, wall seconds)``; the CPU seconds of this process (all threads) are added to
    :data:`CPU_SECONDS` under the function's name."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*a, **kw)
    CPU_SECONDS[fn.__name__] = CPU_SECONDS.get(fn.__name__, 0.0) + time.process_time() - cpu
    return out, time.perf_counter() - start


CPU_SECONDS: dict[str, float] = {}


def calibrate_synthesis(kind: str, path: Path, n_presets: int) -> dict:
    """One reduced unit of notebook 03 (``n_presets`` views + the mixed model), trained afresh."""
    from drifthelpers import datasets, synthesis

    loader = datasets.RawMicroscopy if kind == "microscopy" else datasets.RawDrone
    full = synthesis.SynthesisConfig(dataset=kind, **settings("synthesis", PROFILE, kind))
    data = loader(path, intensity=full.intensity)
    one = dataclasses.replace(full, n_splits=1, n_seeds=1, presets=tuple(full.presets[:n_presets]))
    _, render = _timed(synthesis.render_views, data, one.presets, one.image_size, progress=False)
    cpu = CPU_SECONDS.get("run_synthesis", 0.0)
    result, seconds = _timed(synthesis.run_synthesis, data, one, cache_dir=False, progress=False, n_boot=0)
    cpu = CPU_SECONDS["run_synthesis"] - cpu
    per_model = (seconds - render) / (n_presets + 1)
    units = full.n_splits * full.n_seeds
    models = units * (len(full.presets) + 1)
    projected = per_model * models + render / n_presets * len(full.presets)
    return {"data_set": kind, "items": len(data), "test_items": len(result["items"]["units"][0]["test_index"]),
            "image_side": int(data[0]["raw"].shape[-1]), "presets_timed": n_presets + 1,
            "unit_seconds": round(seconds, 1), "unit_cpu_seconds": round(cpu, 1),
            "render_seconds": round(render, 1),
            "seconds_per_model": round(per_model, 2), "units": units, "models": models,
            "projected_seconds": round(projected, 1)}


def calibrate_optimisation(kind: str, path: Path, seeds: int) -> dict:
    """One seed of each arm of notebook 05, trained afresh."""
    from drifthelpers import datasets, optimisation

    loader = datasets.RawMicroscopy if kind == "microscopy" else datasets.RawDrone
    config = optimisation.config_for(kind, PROFILE, intensity=0.01)
    data = optimisation.prepare_data(loader(path, intensity=0.01), config)
    arms, cpu = {}, CPU_SECONDS.get("train_arm", 0.0)
    for arm in optimisation.ARMS:
        _, arms[arm] = _timed(optimisation.train_arm, arm, config, data, 0)
    per_seed = sum(arms.values())
    return {"data_set": kind, "arm_seconds": {k: round(v, 1) for k, v in arms.items()},
            "seed_cpu_seconds": round(CPU_SECONDS["train_arm"] - cpu, 1),
            "seeds": seeds, "projected_seconds": round(per_seed * seeds, 1)}


def calibrate(args) -> dict:
    """Time one reduced unit per experiment at the study sizes and project the full run."""
    from drifthelpers import datasets

    spec = PROFILES[PROFILE]["data"]
    root = datasets.data_root(args.data_root or None) / spec["root"]
    paths, build = _timed(datasets.ensure_mini, root=root, progress=False, **spec["mini"])
    synth = [calibrate_synthesis(k, paths[k], args.presets) for k in ("microscopy", "drone")]
    opt = [calibrate_optimisation(k, paths[k], PROFILES[PROFILE]["optimisation_seeds"])
           for k in ("microscopy", "drone")]
    total = sum(r["projected_seconds"] for r in synth + opt)
    cores = len(os.sched_getaffinity(0))
    # the same projection from CPU seconds, as if every step kept all cores busy
    cpu_total = (sum(r["unit_cpu_seconds"] / r["unit_seconds"] * r["projected_seconds"] for r in synth)
                 + sum(r["seed_cpu_seconds"] * r["seeds"] for r in opt)) / cores
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"mode": "calibrate", "label": "PROJECTION from one reduced unit per experiment, not a measured run",
            "data_root": str(root), "mini": spec["mini"], "mini_seconds": round(build, 1),
            "synthesis": synth, "optimisation": opt,
            "projected_training_seconds": round(total, 1),
            "projected_training_seconds_from_cpu_time": round(cpu_total, 1),
            "projected_within_time_budget": total + build <= BUDGET_SECONDS,
            "peak_rss_bytes_of_calibration": peak,
            "not_projected": "notebook 04, bootstrap intervals, kernel start-up"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calibrate", action="store_true", help="time one reduced unit and project the full run")
    p.add_argument("--cores", type=int, default=2, help="cores to run on (default 2)")
    p.add_argument("--presets", type=int, default=3, help="--calibrate: training views timed (default 3)")
    p.add_argument("--data-root", default="", help="data root (default: <repo>/data or $DRIFTHELPERS_DATA)")
    p.add_argument("--runs-dir", default="", help="run mode: folder for the run (default: a temporary one)")
    p.add_argument("--name", default="study", help="run mode: run folder name")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="run mode: parameter override passed on to `run`")
    p.add_argument("--out", default="", help="JSON file (default benchmarks/results/study-<mode>.json)")
    args = p.parse_args(argv)
    if args.cores < 1 or args.presets < 1:
        p.error("--cores and --presets must be >= 1")
    cores = pin_cores(args.cores)
    import torch

    torch.set_num_threads(len(cores))
    start = time.time()
    report = calibrate(args) if args.calibrate else measure_run(args)
    report.update(profile=PROFILE, machine=machine(cores), budget={"seconds": BUDGET_SECONDS, "bytes": BUDGET_BYTES},
                  started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)))
    out = Path(args.out or RESULTS / f"study-{report['mode']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, report)
    import json

    print(json.dumps(report, indent=2))
    print(f"written to {out}")
    return 0 if report.get("returncode", 0) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
