"""Independent training jobs on the CPU cores of one machine.

The quick profile trains many small task models (notebook 03: 13 per data set and
split; notebook 05: 3 arms x 3 seeds per data set). Small models on small batches use
many intra-op threads poorly, so whole jobs can go to worker processes instead, each
with ``threads // workers`` intra-op threads. Each worker imports PyTorch (5-10 s) and
holds its own copy (~0.4 GB). On a 2-core machine that start-up eats the gain: notebook
03's microscopy experiment takes the same time in two workers as in one process, with
more memory (``docs/performance.md``). ``benchmarks/bench_parallel.py`` measures the
trade-off on any machine.

:func:`run_jobs` is that pool: ``fn(job, shared)`` for every job, in worker processes
(``spawn``, so it is safe inside a Jupyter kernel and with OpenMP) or, with one worker,
in this process. ``shared`` (the rendered views, the raw data) is written once to a temporary
file that each worker reads when it starts (and that is removed when the pool ends), not sent
once per job. Results come back in job order. Jobs must be picklable and ``fn`` importable (a
module-level function); results should be plain Python/numpy.
A failing job raises :class:`JobError` naming it, after the jobs already running have
finished (what they cached is kept) and the queued ones are cancelled; Ctrl-C cancels
the queue the same way. A *script* that calls it with more than one worker needs Python's
usual ``if __name__ == "__main__":`` guard, because spawned workers import the main
module (notebooks and ``python -m drifthelpers`` need nothing).

``workers=0`` (auto) chooses:

* in this process (one worker) on a machine with at most :data:`IN_PROCESS_MAX_CORES`
  usable cores (:func:`usable_cores`), where worker processes bring no gain;
* otherwise one worker per thread of this process's budget (``torch.get_num_threads()``,
  which follows ``OMP_NUM_THREADS``; a sweep job limited to one thread therefore trains
  in-process), at most :data:`MAX_AUTO_WORKERS`, and never more than there are jobs.

Work on a GPU stays in this process.

Results depend on the thread count at floating-point rounding level (the order of
reductions), and training amplifies that into a different model: the same experiment on one
core and on two differs by a redraw of its training noise. ``job_threads=N`` fixes the
arithmetic instead: every job computes on exactly ``N`` intra-op threads, in this process or in
worker processes, so a machine's core count decides only how many jobs run side by side
(``budget // N`` workers when ``workers`` is auto), never a number. The ``study`` profile
trains that way with one thread per job (``drifthelpers.profiles``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["IN_PROCESS_MAX_CORES", "MAX_AUTO_WORKERS", "JobError", "intra_op_threads", "plan_workers", "run_jobs",
           "usable_cores"]

MAX_AUTO_WORKERS = 8  # each worker holds its own PyTorch (~0.3-0.5 GB resident)
IN_PROCESS_MAX_CORES = 2  # up to this many usable cores, auto runs every job in this process

_SHARED: Any = None


class JobError(RuntimeError):
    """A job of :func:`run_jobs` failed; the message names the job and the cause."""


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one).

    Returns:
        The number of usable cores, at least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def plan_workers(n_jobs: int, workers: int = 0, device="cpu", job_threads: int = 0) -> tuple[int, int]:
    """How many worker processes and intra-op threads each for ``n_jobs`` jobs.

    Args:
        n_jobs: number of jobs.
        workers: ``0`` = auto: in this process on a machine with at most
            :data:`IN_PROCESS_MAX_CORES` usable cores, else one process per thread of
            the budget (see the module docstring); ``1`` = in this process;
            ``N`` = at most N processes.
        device: where the jobs compute; anything but the CPU runs in this process.
        job_threads: ``0``: the budget's threads are shared out over the workers; ``N``:
            every job computes on exactly N threads, and auto runs ``budget // N`` workers
            (at least one), so the results do not depend on the machine's cores.

    Returns:
        ``(workers, threads_per_worker)``.

    Example:
        >>> plan_workers(10, workers=1, job_threads=1)
        (1, 1)
    """
    import torch

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0 = auto), got {workers!r}")
    if isinstance(job_threads, bool) or not isinstance(job_threads, int) or job_threads < 0:
        raise ValueError(f"job_threads must be an integer >= 0 (0 = share the budget), got {job_threads!r}")
    budget = max(1, torch.get_num_threads())
    if str(device) != "cpu":
        return 1, budget
    if workers:
        w = workers
    elif job_threads:
        w = min(max(1, min(budget, usable_cores()) // job_threads), MAX_AUTO_WORKERS)
    elif usable_cores() <= IN_PROCESS_MAX_CORES:
        w = 1
    else:
        w = min(budget, MAX_AUTO_WORKERS)
    w = max(1, min(w, n_jobs))
    return w, job_threads or max(1, budget // w)


@contextmanager
def intra_op_threads(n: int):
    """Run the ``with`` block on ``n`` PyTorch intra-op threads, then restore the count.

    ``n <= 0`` leaves the count as it is.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with intra_op_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker(threads: int, shared_path: str) -> None:
    global _SHARED
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (cannot happen in a fresh spawned process)
        pass
    with open(shared_path, "rb") as f:
        _SHARED = pickle.load(f)


def _call(fn: Callable, job: Any) -> Any:
    return fn(job, _SHARED)


def run_jobs(fn: Callable[[Any, Any], Any], jobs: Sequence, shared: Any = None, workers: int = 0, device="cpu",
             labels: Sequence[str] | None = None, desc: str = "jobs", progress: bool = True,
             job_threads: int = 0) -> list:
    """Run ``fn(job, shared)`` for every job, in parallel worker processes when that helps.

    Args:
        fn: a module-level function ``(job, shared) -> result``.
        jobs: the jobs (picklable).
        shared: data every job reads (picklable; written once, read once per worker).
        workers, job_threads: see :func:`plan_workers`.
        labels: a name per job for the progress bar and errors (default ``job <i>``).
        desc: progress-bar title.

    Returns:
        The results, in the order of ``jobs``.

    Raises:
        JobError: a job failed (the first failure; the message names the job).
    """
    jobs = list(jobs)
    labels = list(labels) if labels is not None else [f"job {i}" for i in range(len(jobs))]
    if len(labels) != len(jobs):
        raise ValueError(f"got {len(labels)} labels for {len(jobs)} jobs")
    n, threads = plan_workers(len(jobs), workers, device, job_threads)  # checks them even with no job left
    if not jobs:
        return []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"{desc} ({n} worker{'s' if n > 1 else ''})", leave=False)
    results: list = [None] * len(jobs)
    try:
        if n == 1:
            with intra_op_threads(job_threads if str(device) == "cpu" else 0):
                for i, job in enumerate(jobs):
                    try:
                        results[i] = fn(job, shared)
                    except Exception as exc:
                        raise JobError(f"{labels[i]} failed: {type(exc).__name__}: {exc}") from exc
                    if bar is not None:
                        bar.update()
            return results
        _run_pool(fn, jobs, shared, n, threads, labels, results, bar)
        return results
    finally:
        if bar is not None:
            bar.close()


def _run_pool(fn, jobs, shared, n, threads, labels, results, bar) -> None:
    # ``shared`` goes to the workers through a temporary file: a pickled copy handed over as an
    # argument would stay referenced in the caller and in every worker for the pool's lifetime
    import tempfile

    with tempfile.TemporaryDirectory(prefix="drifthelpers-jobs-") as tmp:
        path = os.path.join(tmp, "shared.pickle")
        with open(path, "wb") as f:
            pickle.dump(shared, f, protocol=pickle.HIGHEST_PROTOCOL)
        _run_pool_from(fn, jobs, path, n, threads, labels, results, bar)


def _run_pool_from(fn, jobs, shared_path, n, threads, labels, results, bar) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(threads, shared_path))
    futures = {}
    try:
        futures = {pool.submit(_call, fn, job): i for i, job in enumerate(jobs)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                i = futures[fut]
                exc = fut.exception()
                if exc is not None:
                    raise JobError(f"{labels[i]} failed: {type(exc).__name__}: {exc}") from exc
                results[i] = fut.result()
                if bar is not None:
                    bar.update()
    except BaseException:
        for fut in futures:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)  # running jobs finish: what they cache is kept
        raise
    pool.shutdown(wait=True)
