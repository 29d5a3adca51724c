"""Parameter sweeps: a grid of notebook runs as independent jobs, collected into one table.

``python -m drifthelpers sweep`` lands here. A sweep is the Cartesian product of
parameter values (``--grid seed=0,1 --grid data_source=mini``); every point of the
grid is one *job*: a :func:`drifthelpers.batch.run_notebooks` run of the selected
notebooks with those parameters, in its own folder. Jobs run in parallel on an
*engine*:

``local``
    worker processes on this machine (:class:`concurrent.futures.ProcessPoolExecutor`);
``dask``
    a `Dask.distributed <https://distributed.dask.org>`_ cluster: an existing one
    (``--address tcp://scheduler:8786``, e.g. started with ``dask scheduler`` /
    ``dask worker`` or by dask-jobqueue on a SLURM/PBS cluster) or, without an
    address, a ``LocalCluster`` started for the sweep.

Why Dask and not Ray: the jobs are independent, long, file-producing notebook runs,
so the only engine features needed are "run this function on some worker and give
back its small result" and "connect to a cluster a lab already runs". Dask.distributed
is pure Python (one ``pip install distributed`` on any platform and Python version
pip reaches), its ``LocalCluster`` starts in seconds inside a test, and it has
maintained launchers for the HPC schedulers labs use. Ray would add a large native
runtime for actor and object-store features these jobs do not use.

Layout of a sweep folder ``runs/<name>/``::

    sweep.json          the plan and the state of every job (rewritten atomically
                        after each job, so an interrupted sweep loses nothing)
    jobs/<job>/         each job's executed notebooks, their JSON and summary
    records/<job>.json  what each job returned (status, error, collected results)
    results.csv         the collected table: one row per job, grid values, status,
    results.json        every scalar result of every notebook (deterministic: no
    results.md          timings or host names, so two engines give the same table)

Jobs that failed (or never finished) run again, alone, with
``python -m drifthelpers sweep --rerun-failed runs/<name>``; the earlier attempt's
folder is kept under ``attempts/``.

A sweep folder is created exclusively (an existing name is refused), and while a
sweep or a re-run works in it, it holds ``.sweep.lock`` (:mod:`filelock`): a second
``--rerun-failed`` of a sweep that is still running is refused instead of running
its live jobs twice. Every check (grid, parameters, engine, ``workers``,
``threads_per_job``, name) runs before the folder is created.

On a remote cluster the workers must see the same file system as the sweep folder
(as on any shared-storage HPC cluster) and have drifthelpers installed.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import fnmatch
import io
import itertools
import json
import math
import os
import re
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import (
    NOTEBOOK_DIR,
    PROFILES,
    NotebookFailed,
    ParameterError,
    check_name,
    check_parameters,
    list_notebooks,
    make_run_dir,
    notebook_parameters,
    typed_parameters,
)
from .fileio import atomic_write_json, atomic_write_text

__all__ = [
    "ENGINES",
    "SweepError",
    "SweepLocked",
    "SweepJob",
    "SweepResult",
    "parse_grid",
    "expand_grid",
    "plan_jobs",
    "run_job",
    "run_sweep",
    "rerun_failed",
    "collect",
    "load_manifest",
]

ENGINES = ("local", "dask")
MANIFEST = "sweep.json"
MANIFEST_VERSION = 1
LOCK_FILE = ".sweep.lock"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class SweepError(ParameterError):
    """A sweep cannot start: a bad grid, an existing sweep folder, an unknown engine, ..."""


class SweepLocked(SweepError):
    """Another process is running this sweep (or re-running its jobs) right now."""


@dataclass(frozen=True)
class SweepJob:
    """One point of the grid: its stable id and its parameter values."""

    job_id: str
    parameters: dict[str, Any]


@dataclass
class SweepResult:
    """What :func:`run_sweep` and :func:`rerun_failed` return."""

    sweep_dir: Path
    jobs: list[SweepJob]
    statuses: dict[str, str]
    ran: list[str]
    seconds: float
    table: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [j for j, s in self.statuses.items() if s != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------- the grid


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """Parse ``NAME=V1,V2,...`` items (from ``--grid``) into ``{name: [values]}``.

    Values stay strings here; they are converted to the type of each notebook's
    default by :func:`plan_jobs`. A value that is itself a list or contains commas can
    be given as a JSON/Python list: ``--grid 'lambdas=[[0.0, 10.0], [100.0]]'``.
    """
    import ast

    grid: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise SweepError(f"--grid expects NAME=V1,V2,... (got {item!r})")
        if name in grid:
            raise SweepError(f"--grid {name} is given twice; list all its values in one --grid")
        values = values.strip()
        parsed: list
        if values.startswith("["):
            try:
                literal = ast.literal_eval(values)
            except (ValueError, SyntaxError):
                raise SweepError(f"--grid {name}: {values!r} is not a valid list literal") from None
            parsed = [v if isinstance(v, str) else repr(v) for v in literal]
        else:
            parsed = [v.strip() for v in values.split(",")]
        if not parsed or any(v == "" for v in parsed):
            raise SweepError(f"--grid {name}: empty value in {values!r}")
        grid[name] = parsed
    return grid


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of a grid, in order: the first name varies slowest."""
    if not grid:
        raise SweepError("a sweep needs at least one --grid NAME=V1,V2,...")
    for name, values in grid.items():
        if len(values) == 0:
            raise SweepError(f"grid parameter {name!r} has no values")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise SweepError(f"grid parameter {name!r} repeats a value: {list(values)!r}")
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")
    return text[:40] or "_"


def _job_id(index: int, params: Mapping[str, Any]) -> str:
    """``j003-seed=1-data_source=mini``: ordered, readable, safe as a folder name."""
    return "-".join([f"j{index:03d}"] + [f"{k}={_slug(v)}" for k, v in params.items()])


def plan_jobs(
    notebooks: Sequence[Path],
    grid: Mapping[str, Sequence[Any]],
    fixed: Mapping[str, Any] | None = None,
) -> list[SweepJob]:
    """Validate a sweep against the notebooks and list its jobs, before anything runs.

    Every grid name must be a parameter of at least one selected notebook, must not
    also be fixed with ``-p``, and every value must convert to the type of the
    notebooks' defaults; errors name the parameter and list the valid ones.
    """
    fixed = dict(fixed or {})
    both = sorted(set(grid) & set(fixed))
    if both:
        raise SweepError(f"{', '.join(both)} given both as a grid and as a fixed parameter (-p)")
    points = expand_grid(grid)
    check_parameters(list(notebooks), fixed)  # a bad fixed parameter is named once, first
    declared = {nb.name: notebook_parameters(nb) for nb in notebooks}
    jobs = []
    for i, point in enumerate(points):
        per_nb = check_parameters(list(notebooks), point)
        typed: dict[str, Any] = {}
        for name in point:  # the converted value, from the first notebook declaring it
            for nb in notebooks:
                if name in declared[nb.name]:
                    typed[name] = per_nb[nb.name][name]
                    break
        jobs.append(SweepJob(_job_id(i, typed), typed))
    return jobs


# --------------------------------------------------------------------------- one job


def run_job(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run one job (in a worker process or on a Dask worker) and return its record.

    Never raises for a failing notebook: the record says ``status: "failed"`` with the
    notebook, the cell and the error, and the partial output stays in the job folder.
    """
    from .batch import run_notebooks

    threads = spec.get("threads")
    if threads:
        for var in THREAD_VARIABLES:  # inherited by the notebook kernels this job starts
            os.environ[var] = str(threads)
    record: dict[str, Any] = {
        "job": spec["job_id"],
        "parameters": dict(spec["parameters"]),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _now(),
    }
    start = time.perf_counter()
    try:
        results = run_notebooks(
            select=list(spec["notebooks"]),
            parameters={**spec["fixed"], **spec["parameters"]},
            profile=spec["profile"],
            run_name=spec["job_id"],
            runs_dir=spec["jobs_dir"],
            notebook_dir=spec["notebook_dir"],
            progress=False,
            log=lambda message: None,
        )
    except NotebookFailed as exc:
        record.update(status="failed", notebook=exc.notebook, cell=exc.cell, error=exc.error, results={})
    except Exception as exc:  # a job must report, not take the sweep down
        record.update(
            status="failed",
            notebook=None,
            cell=None,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=8),
            results={},
        )
    else:
        record.update(
            status="ok",
            results={Path(r.notebook).stem: r.results for r in results},
            notebook_seconds={Path(r.notebook).stem: round(r.seconds, 2) for r in results},
        )
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def _failed_record(spec: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
    """The record of a job whose worker died or could not run it at all."""
    return {
        "job": spec["job_id"],
        "parameters": dict(spec["parameters"]),
        "status": "failed",
        "notebook": None,
        "cell": None,
        "error": f"{type(exc).__name__}: {exc}".strip(),
        "results": {},
        "seconds": None,
    }


# --------------------------------------------------------------------------- engines


def _local_engine(specs: list[dict], workers: int, address: str | None) -> Iterator[dict]:
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    finished = False
    try:
        futures = {pool.submit(run_job, spec): spec for spec in specs}
        for fut in concurrent.futures.as_completed(futures):
            try:
                yield fut.result()
            except Exception as exc:  # e.g. BrokenProcessPool when a worker is killed
                yield _failed_record(futures[fut], exc)
        finished = True
    finally:
        # On Ctrl-C (or any error in the caller) do not wait for queued jobs: cancel them.
        pool.shutdown(wait=finished, cancel_futures=not finished)


def _dask_engine(specs: list[dict], workers: int, address: str | None) -> Iterator[dict]:
    import logging

    from distributed import Client, LocalCluster, as_completed  # presence checked by _check_engine

    cluster = None
    # Dask's nannies apply their "pre-spawn" environment (OMP_NUM_THREADS=1, ...) to the process
    # they run in, which for a LocalCluster is this one: put the environment back afterwards, or
    # everything this process starts later (notebook kernels) would run single-threaded.
    environ = dict(os.environ)
    try:
        if address:
            try:
                client = Client(address, timeout="20s")
            except OSError as exc:
                raise SweepError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        else:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            client = Client(cluster)
        with client:
            futures = {
                client.submit(run_job, spec, key=f"drifthelpers-{spec['sweep']}-{spec['job_id']}-{spec['attempt']}",
                              pure=False): spec
                for spec in specs
            }
            for fut in as_completed(list(futures)):
                try:
                    yield fut.result()
                except Exception as exc:  # worker lost, killed, or the job could not be unpickled
                    yield _failed_record(futures[fut], exc)
    finally:
        if cluster is not None:
            cluster.close()
            _restore_environ(environ)


def _restore_environ(saved: dict[str, str]) -> None:
    for key in [k for k in os.environ if k not in saved]:
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


_ENGINES: dict[str, Callable[[list[dict], int, str | None], Iterator[dict]]] = {
    "local": _local_engine,
    "dask": _dask_engine,
}


# --------------------------------------------------------------------------- the sweep


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj, indent=1, default=str)


@contextlib.contextmanager
def _sweep_lock(sweep_dir: Path) -> Iterator[None]:
    """Hold the sweep folder's lock, or raise :class:`SweepLocked` at once."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(sweep_dir / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SweepLocked(
            f"sweep {sweep_dir} is in use by another process (a sweep or --rerun-failed is running); "
            "wait until it finishes"
        ) from None
    try:
        yield
    finally:
        lock.release()


def load_manifest(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a sweep folder's ``sweep.json`` (raises :class:`SweepError` with the reason)."""
    path = Path(sweep_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{sweep_dir} is not a sweep folder (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise SweepError(f"cannot read {path}: {exc}") from None
    if manifest.get("version") != MANIFEST_VERSION:
        raise SweepError(f"{path} has version {manifest.get('version')!r}; this drifthelpers reads {MANIFEST_VERSION}")
    return manifest


def _check_engine(engine: str, address: str | None) -> None:
    if engine not in ENGINES:
        raise SweepError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if address and engine != "dask":
        raise SweepError("--address is for --engine dask; the local engine runs on this machine")
    if engine == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise SweepError(
                "--engine dask needs Dask.distributed: pip install 'drifthelpers[cluster]' (or pip install distributed)"
            ) from None


def _check_counts(workers: int | None, threads_per_job: int | None) -> None:
    """``--workers`` and ``--threads-per-job``: whole numbers >= 1 (or unset)."""
    for flag, value in (("--workers", workers), ("--threads-per-job", threads_per_job)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SweepError(f"{flag} must be a whole number >= 1, got {value!r}")


def _default_workers(n_jobs: int, workers: int | None) -> int:
    _check_counts(workers, None)
    if workers is not None:
        return workers
    return max(1, min(n_jobs, os.cpu_count() or 1))


def run_sweep(
    grid: Mapping[str, Sequence[Any]],
    select: Sequence[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    profile: str = "quick",
    name: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    notebook_dir: str | os.PathLike | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    threads_per_job: int | None = None,
    progress: bool = True,
    columns: Sequence[str] | None = None,
) -> SweepResult:
    """Run every point of ``grid`` as an independent job and collect one table.

    Args:
        grid: ``{parameter: [values]}``; values may be strings (converted to the
            notebooks' types) or already typed.
        select: notebooks each job runs (see :func:`drifthelpers.batch.list_notebooks`).
        parameters: fixed overrides for every job (``-p NAME VALUE``).
        profile: ``"quick"`` or ``"paper"``, as for ``run``.
        name: sweep folder name inside ``runs_dir``, one plain folder name (default
            ``sweep-<timestamp>``); the folder is created exclusively, so an existing
            one is refused (see :func:`rerun_failed` for an earlier sweep).
        engine: ``"local"`` (processes here) or ``"dask"``.
        address: Dask scheduler address; without it a ``LocalCluster`` is started.
        workers: parallel jobs (local processes or LocalCluster workers); default
            ``min(jobs, CPU cores)``. Ignored with an ``address``.
        threads_per_job: math threads per job's kernel (``OMP_NUM_THREADS`` ...);
            default ``cores // workers`` so parallel jobs do not oversubscribe.
        columns: glob patterns choosing the result columns shown in ``results.md``
            (all columns are always in ``results.csv``).

    Raises:
        SweepError / ParameterError: before anything is written, for a bad grid,
            parameter, name, ``workers`` or ``threads_per_job``.
        FileExistsError: the sweep folder exists.
    """
    _check_engine(engine, address)
    _check_counts(workers, threads_per_job)
    if profile not in PROFILES:
        raise SweepError(f"profile must be one of {PROFILES}, got {profile!r}")
    if name is not None:
        check_name(name)
    notebooks = list_notebooks(notebook_dir, list(select) if select else None)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks found in {notebook_dir or NOTEBOOK_DIR}")
    fixed = dict(parameters or {})
    jobs = plan_jobs(notebooks, grid, fixed)
    fixed_typed = typed_parameters(notebooks, check_parameters(notebooks, fixed), fixed)

    base = Path(runs_dir) if runs_dir else NOTEBOOK_DIR.parent / "runs"
    if name is not None and (base / name / MANIFEST).exists():
        existing = (base / name).resolve()
        raise SweepError(
            f"sweep {existing} already exists; re-run its failed jobs with "
            f"'python -m drifthelpers sweep --rerun-failed {existing}', or choose another --name"
        )
    sweep_dir = make_run_dir(base, name, prefix="sweep-").resolve()
    manifest = {
        "version": MANIFEST_VERSION,
        "name": sweep_dir.name,
        "created": _now(),
        "notebooks": [nb.name for nb in notebooks],
        "notebook_dir": str(Path(notebooks[0]).parent.resolve()),
        "profile": profile,
        "fixed": fixed_typed,
        "grid": _grid_values(jobs, list(grid)),
        "columns": list(columns) if columns else None,
        "jobs": {
            job.job_id: {"parameters": job.parameters, "status": "pending", "attempts": 0}
            for job in jobs
        },
    }
    with _sweep_lock(sweep_dir):
        _write_json_atomic(sweep_dir / MANIFEST, manifest)
        return _execute(sweep_dir, manifest, [j.job_id for j in jobs], engine, address, workers, threads_per_job,
                        progress)


def _grid_values(jobs: list[SweepJob], names: list[str]) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in names:
        seen: list = []
        for job in jobs:
            if job.parameters[n] not in seen:
                seen.append(job.parameters[n])
        out[n] = seen
    return out


def rerun_failed(
    sweep_dir: str | os.PathLike,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    threads_per_job: int | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run again, alone, the jobs of a sweep that failed or never finished.

    Jobs that succeeded are kept as they are; each re-run job's earlier folder moves
    to ``attempts/<job>-<n>/``. The collected table is rebuilt from all jobs.

    Raises:
        SweepLocked: the sweep (or another re-run of it) is still running; nothing
            was moved or started.
        SweepError: not a sweep folder, or bad ``workers`` / ``threads_per_job``.
    """
    _check_engine(engine, address)
    _check_counts(workers, threads_per_job)
    sweep_dir = Path(sweep_dir).resolve()
    load_manifest(sweep_dir)  # a clear error for a folder that is not a sweep, before locking
    with _sweep_lock(sweep_dir):
        manifest = load_manifest(sweep_dir)  # read again under the lock: the state is now stable
        todo = [jid for jid, job in manifest["jobs"].items() if job.get("status") != "ok"]
        for jid in todo:
            old = sweep_dir / "jobs" / jid
            if old.exists():
                attempts = sweep_dir / "attempts"
                attempts.mkdir(exist_ok=True)
                shutil.move(str(old), str(attempts / f"{jid}-{manifest['jobs'][jid].get('attempts', 0)}"))
        return _execute(sweep_dir, manifest, todo, engine, address, workers, threads_per_job, progress)


def _execute(
    sweep_dir: Path,
    manifest: dict,
    todo: list[str],
    engine: str,
    address: str | None,
    workers: int | None,
    threads_per_job: int | None,
    progress: bool,
) -> SweepResult:
    from tqdm.auto import tqdm

    jobs = [SweepJob(jid, job["parameters"]) for jid, job in manifest["jobs"].items()]
    n_workers = _default_workers(len(todo), workers)
    threads = threads_per_job or max(1, (os.cpu_count() or 1) // n_workers)
    specs = []
    for jid in todo:
        entry = manifest["jobs"][jid]
        entry["attempts"] = entry.get("attempts", 0) + 1
        entry["status"] = "running"
        entry["engine"] = engine
        specs.append(
            {
                "sweep": manifest["name"],
                "job_id": jid,
                "attempt": entry["attempts"],
                "parameters": entry["parameters"],
                "fixed": manifest["fixed"],
                "notebooks": manifest["notebooks"],
                "notebook_dir": manifest["notebook_dir"],
                "profile": manifest["profile"],
                "jobs_dir": str(sweep_dir / "jobs"),
                "threads": threads,
            }
        )
    _write_json_atomic(sweep_dir / MANIFEST, manifest)
    where = f"Dask scheduler {address}" if address else (
        f"a Dask LocalCluster of {n_workers} worker(s)" if engine == "dask" else f"{n_workers} local process(es)")
    say = print if progress else (lambda *a, **k: None)
    say(f"[drifthelpers sweep] {len(todo)} job(s) of {len(jobs)} on {where}, {threads} thread(s) each -> {sweep_dir}",
        flush=True)
    start = time.perf_counter()
    counts = {"ok": 0, "failed": 0}
    bar = tqdm(total=len(specs), desc="sweep", unit="job", disable=not progress or not specs)
    try:
        for record in _ENGINES[engine](specs, n_workers, address) if specs else ():
            jid = record["job"]
            _write_json_atomic(sweep_dir / "records" / f"{jid}.json", record)
            entry = manifest["jobs"][jid]
            entry.update(status=record["status"], seconds=record.get("seconds"), host=record.get("host"),
                         finished=_now())
            if record["status"] == "ok":
                entry.pop("error", None)
            else:
                entry["error"] = record.get("error")
                entry["notebook"] = record.get("notebook")
                entry["cell"] = record.get("cell")
            _write_json_atomic(sweep_dir / MANIFEST, manifest)
            counts["ok" if record["status"] == "ok" else "failed"] += 1
            bar.update(1)
            bar.set_postfix(counts)
            if record["status"] == "ok":
                bar.write(f"  {jid}: ok in {record.get('seconds')} s")
            else:
                where_failed = f" ({record.get('notebook')}, code cell {record.get('cell')})" if record.get("notebook") else ""
                bar.write(f"  {jid}: FAILED{where_failed}: {record.get('error')}")
    finally:
        bar.close()
        for jid in todo:  # interrupted: what did not finish is marked so --rerun-failed picks it up
            if manifest["jobs"][jid]["status"] == "running":
                manifest["jobs"][jid]["status"] = "interrupted"
        _write_json_atomic(sweep_dir / MANIFEST, manifest)
    seconds = time.perf_counter() - start
    rows, table = collect(sweep_dir, manifest.get("columns"))
    statuses = {jid: job["status"] for jid, job in manifest["jobs"].items()}
    return SweepResult(sweep_dir, jobs, statuses, list(todo), seconds, table, rows)


# --------------------------------------------------------------------------- collection


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    """Scalar leaves of nested dicts as ``prefix/key/key`` (lists are left out)."""
    if isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            _flatten(f"{prefix}/{key}" if prefix else str(key), obj[key], out)
    elif isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        out[prefix] = obj
    elif isinstance(obj, float):
        out[prefix] = obj if math.isfinite(obj) else str(obj)


def _short(notebook_stem: str) -> str:
    head = notebook_stem.split("_", 1)[0]
    return head if head.isdigit() else notebook_stem


def collect(sweep_dir: str | os.PathLike, columns: Sequence[str] | None = None) -> tuple[list[dict], Path]:
    """Build ``results.csv``, ``results.json`` and ``results.md`` from a sweep's records.

    One row per job in grid order: ``job``, the grid parameters, ``status``,
    ``error``, then every scalar in every notebook's JSON results as
    ``<notebook number>/<json file>/<key>/...``. Timings and hosts are left out so
    that the table depends only on what the notebooks computed.

    Returns:
        The rows and the path of ``results.csv``.
    """
    sweep_dir = Path(sweep_dir)
    manifest = load_manifest(sweep_dir)
    grid_names = list(manifest["grid"])
    rows: list[dict[str, Any]] = []
    metric_names: set[str] = set()
    for jid, job in manifest["jobs"].items():
        row: dict[str, Any] = {"job": jid, **{k: job["parameters"].get(k) for k in grid_names}}
        row["status"] = job.get("status", "pending")
        row["error"] = job.get("error") or ""
        record_path = sweep_dir / "records" / f"{jid}.json"
        if row["status"] == "ok" and record_path.exists():
            record = json.loads(record_path.read_text())
            metrics: dict[str, Any] = {}
            for nb_stem in sorted(record.get("results", {})):
                _flatten(_short(nb_stem), record["results"][nb_stem], metrics)
            row.update(metrics)
            metric_names |= set(metrics)
        rows.append(row)
    head = ["job", *grid_names, "status", "error"]
    metric_cols = sorted(metric_names)
    all_cols = head + metric_cols
    for row in rows:
        for col in all_cols:
            row.setdefault(col, None)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=all_cols, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in all_cols})
    atomic_write_text(sweep_dir / "results.csv", buf.getvalue())
    _write_json_atomic(sweep_dir / "results.json", {"columns": all_cols, "rows": [{k: r[k] for k in all_cols} for r in rows]})

    if columns:
        shown = [c for c in metric_cols if any(fnmatch.fnmatchcase(c, pat) for pat in columns)]
    else:
        shown = metric_cols[:8]
    lines = [
        f"# Sweep {manifest['name']} (profile {manifest['profile']}; notebooks {', '.join(manifest['notebooks'])})",
        "",
    ]
    if manifest.get("fixed"):
        lines += ["Fixed parameters: " + ", ".join(f"`{k}={v!r}`" for k, v in manifest["fixed"].items()), ""]
    md_cols = ["job", *grid_names, "status", *shown]
    lines.append("| " + " | ".join(md_cols) + " |")
    lines.append("|" + "---|" * len(md_cols))
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(row[c]) for c in md_cols) + " |")
    hidden = len(metric_cols) - len(shown)
    if hidden:
        lines += ["", f"{hidden} more result column(s) in results.csv (choose with --columns PATTERN)."]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed or unfinished jobs:", ""]
        lines += [f"- {r['job']}: {r['status']} {r['error']}".rstrip() for r in failed]
    atomic_write_text(sweep_dir / "results.md", "\n".join(lines) + "\n")
    return rows, sweep_dir / "results.csv"


def _md_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")
