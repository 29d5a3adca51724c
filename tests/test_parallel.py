"""The job pool: worker planning, results in job order, errors that name the job, and the
experiments giving the same numbers in worker processes as in this process."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from drifthelpers import parallel


def _square_plus(job, shared):
    if job == "boom":
        raise ValueError("this job is broken on purpose")
    return {"value": job * job + shared["offset"], "pid": os.getpid(), "threads": torch.get_num_threads()}


@pytest.fixture
def threads():
    """Set this process's thread budget for a test and restore it afterwards."""
    before = torch.get_num_threads()

    def set_(n):
        torch.set_num_threads(n)

    yield set_
    torch.set_num_threads(before)


def test_plan_workers(threads, monkeypatch):
    monkeypatch.setattr(parallel, "usable_cores", lambda: 64)  # a machine where workers pay off
    threads(4)
    assert parallel.plan_workers(10) == (4, 1)
    assert parallel.plan_workers(3) == (3, 1)  # never more workers than jobs
    assert parallel.plan_workers(10, workers=2) == (2, 2)  # the budget is shared out
    assert parallel.plan_workers(10, workers=1) == (1, 4)
    assert parallel.plan_workers(10, device="cuda") == (1, 4)  # a GPU stays in this process
    threads(1)
    assert parallel.plan_workers(10) == (1, 1)  # e.g. a sweep job limited to one thread
    threads(64)
    assert parallel.plan_workers(100) == (parallel.MAX_AUTO_WORKERS, 64 // parallel.MAX_AUTO_WORKERS)
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="workers"):
            parallel.plan_workers(3, workers=bad)


@pytest.mark.parametrize("cores", [1, 2])
def test_auto_runs_in_process_on_two_cores_or_fewer(cores, threads, monkeypatch):
    """Worker processes gain nothing on <= 2 cores (their start-up eats it): auto stays here."""
    monkeypatch.setattr(parallel, "usable_cores", lambda: cores)
    threads(2)
    assert parallel.plan_workers(10) == (1, 2)
    assert parallel.plan_workers(10, workers=2) == (2, 1)  # an explicit choice is kept
    here = parallel.run_jobs(_square_plus, [1, 2, 3], {"offset": 0}, progress=False)
    assert {r["pid"] for r in here} == {os.getpid()}
    monkeypatch.setattr(parallel, "usable_cores", lambda: 3)  # one core more: worker processes
    assert parallel.plan_workers(10) == (2, 1)


def test_plan_workers_with_fixed_job_threads(threads, monkeypatch):
    """A fixed thread count per job: the cores decide how many jobs run side by side, not the threads."""
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    threads(2)
    assert parallel.plan_workers(10, job_threads=1) == (2, 1)  # two workers even on two cores
    assert parallel.plan_workers(10, job_threads=2) == (1, 2)
    assert parallel.plan_workers(10, job_threads=4) == (1, 4)  # more threads than cores: one job at a time
    assert parallel.plan_workers(1, job_threads=1) == (1, 1)
    assert parallel.plan_workers(10, workers=1, job_threads=1) == (1, 1)
    assert parallel.plan_workers(10, device="cuda", job_threads=1) == (1, 2)  # a GPU: unchanged
    threads(1)
    assert parallel.plan_workers(10, job_threads=1) == (1, 1)  # one core: in this process, same threads
    monkeypatch.setattr(parallel, "usable_cores", lambda: 1)
    threads(4)  # a budget larger than the cores (OMP_NUM_THREADS) does not start more workers
    assert parallel.plan_workers(10, job_threads=1) == (1, 1)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 64)
    threads(64)
    assert parallel.plan_workers(100, job_threads=1) == (parallel.MAX_AUTO_WORKERS, 1)
    assert parallel.plan_workers(100, job_threads=16) == (4, 16)
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ValueError, match="job_threads"):
            parallel.plan_workers(3, job_threads=bad)


def test_in_process_jobs_run_on_job_threads_and_the_count_is_restored(threads):
    threads(2)
    done = parallel.run_jobs(_square_plus, [1, 2], {"offset": 0}, workers=1, job_threads=1, progress=False)
    assert [r["threads"] for r in done] == [1, 1]
    assert torch.get_num_threads() == 2
    with pytest.raises(parallel.JobError):  # restored after a failing job too
        parallel.run_jobs(_square_plus, ["boom"], {"offset": 0}, workers=1, job_threads=1, progress=False)
    assert torch.get_num_threads() == 2
    pooled = parallel.run_jobs(_square_plus, [1, 2, 3], {"offset": 0}, workers=2, job_threads=1, progress=False)
    assert {r["threads"] for r in pooled} == {1}


def test_the_shared_data_file_is_removed_after_the_pool(threads, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    threads(2)
    big = {"offset": 1, "payload": np.zeros(10_000)}
    assert [r["value"] for r in parallel.run_jobs(_square_plus, [2, 3], big, workers=2, progress=False)] == [5, 10]
    with pytest.raises(parallel.JobError):
        parallel.run_jobs(_square_plus, [1, "boom"], big, workers=2, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_usable_cores_counts_this_process_cores():
    n = parallel.usable_cores()
    assert isinstance(n, int) and 1 <= n <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert n == len(os.sched_getaffinity(0))


def test_in_process_and_pool_give_the_same_results_in_job_order(threads):
    threads(2)
    jobs = [5, 1, 4, 2, 3]
    here = parallel.run_jobs(_square_plus, jobs, {"offset": 100}, workers=1, progress=False)
    pool = parallel.run_jobs(_square_plus, jobs, {"offset": 100}, workers=2, progress=False)
    assert [r["value"] for r in here] == [r["value"] for r in pool] == [125, 101, 116, 104, 109]
    assert {r["pid"] for r in here} == {os.getpid()}
    assert os.getpid() not in {r["pid"] for r in pool}  # really in other processes
    assert {r["threads"] for r in pool} == {1}  # 2 threads shared out over 2 workers
    assert parallel.run_jobs(_square_plus, [], None, progress=False) == []
    with pytest.raises(ValueError, match="workers"):  # checked even when every job was cached
        parallel.run_jobs(_square_plus, [], None, workers=-1, progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_is_named(workers, threads):
    threads(2)
    with pytest.raises(parallel.JobError, match=r"the broken one failed: ValueError: this job is broken on purpose"):
        parallel.run_jobs(_square_plus, [1, "boom", 3], {"offset": 0}, workers=workers,
                          labels=["first", "the broken one", "third"], progress=False)
    with pytest.raises(ValueError, match="labels"):
        parallel.run_jobs(_square_plus, [1, 2], {"offset": 0}, labels=["one"], progress=False)


@pytest.mark.slow
def test_synthesis_same_numbers_in_workers_and_in_process(tiny_micro, threads):
    from drifthelpers import synthesis

    ds = tiny_micro
    cfg = synthesis.SynthesisConfig(dataset="microscopy", model="small_cnn", epochs=2, batch_size=8, n_splits=1,
                                    image_size=32, presets=("bi,s,me", "me,u,ga"))
    threads(2)  # two workers with one thread each, against one thread here: same arithmetic
    pooled = synthesis.run_synthesis(ds, cfg, cache_dir=False, progress=False, workers=2)
    threads(1)
    here = synthesis.run_synthesis(ds, cfg, cache_dir=False, progress=False, workers=1)
    assert pooled["matrices"] == here["matrices"]
    assert pooled["corruption_tables"] == here["corruption_tables"]
    assert pooled["mixed"] == here["mixed"]
    assert np.array(here["matrices"]).shape == (1, 2, 2)


@pytest.mark.slow
def test_fixed_job_threads_give_the_same_numbers_on_one_core_and_two(tiny_micro, threads, monkeypatch):
    """The study profile's guarantee: ``job_threads=1`` plans two workers on two cores and none on
    one, and both give the same numbers to the last digit."""
    from drifthelpers import synthesis

    cfg = synthesis.SynthesisConfig(dataset="microscopy", model="small_cnn", epochs=2, batch_size=8, n_splits=1,
                                    image_size=32, presets=("bi,s,me", "me,u,ga"))
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    threads(2)
    assert parallel.plan_workers(3, job_threads=1) == (2, 1)
    two = synthesis.run_synthesis(tiny_micro, cfg, cache_dir=False, progress=False, job_threads=1, n_boot=0)
    threads(1)
    assert parallel.plan_workers(3, job_threads=1) == (1, 1)
    one = synthesis.run_synthesis(tiny_micro, cfg, cache_dir=False, progress=False, job_threads=1, n_boot=0)
    for key in ("matrices", "corruption_tables", "mixed", "items"):
        assert two[key] == one[key], key
