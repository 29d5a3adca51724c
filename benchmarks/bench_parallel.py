"""Training throughput: all jobs in one process (all threads) vs one worker process per core.

Usage::

    .venv/bin/python benchmarks/bench_parallel.py [--jobs 4] [--steps 30]

Each job trains a fresh quick-profile task model (``small_cnn`` on 16 images of 64x64,
``small_unet`` on 8 of 48x48, the quick profile's shapes) for ``--steps`` Adam steps
on random data. The same jobs run through :func:`drifthelpers.parallel.run_jobs` with
``workers=1`` (in this process, with every thread) and with one worker process per
thread (at least two, at most ``MAX_AUTO_WORKERS``, one thread each), side by side in one
run; the script prints seconds per job with worker start-up (importing PyTorch, as users
pay it) and without it (the steps alone: the steady-state throughput a long run of many
jobs approaches), and the ratios. It also prints what ``workers=0`` (auto) chooses on this
machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from drifthelpers.models import build_task_model
from drifthelpers.parallel import MAX_AUTO_WORKERS, plan_workers, run_jobs, usable_cores

SHAPES = {"small_cnn": (9, 16, 64), "small_unet": (1, 8, 48)}


def train_job(job: tuple, shared: int) -> float:
    """Train one model for ``shared`` steps; returns the seconds the steps took."""
    name, seed = job
    classes, batch, size = SHAPES[name]
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_task_model(name, num_classes=classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, size, size, generator=g)
    if classes > 1:
        y = torch.randint(0, classes, (batch,), generator=g)
        loss_fn = F.cross_entropy
    else:
        y = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
        loss_fn = F.binary_cross_entropy_with_logits
    t0 = time.perf_counter()
    for _ in range(shared):
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=4, help="jobs per model and mode (default 4)")
    ap.add_argument("--steps", type=int, default=30, help="training steps per job (default 30)")
    args = ap.parse_args()
    budget = torch.get_num_threads()
    print(f"{usable_cores()} usable cores, thread budget {budget}; auto plan for {args.jobs} jobs: "
          f"{plan_workers(args.jobs)} (workers, threads each)")
    n_workers = plan_workers(args.jobs, workers=max(2, min(budget, MAX_AUTO_WORKERS)))[0]
    print("wall: seconds per job, start-up included; steady: the training steps alone, per job and")
    print(f"divided by the {n_workers} workers running side by side (throughput without start-up)")
    print(f"{'model':<11} {'in-process wall':>16} {'workers wall':>13} {'speed-up':>9} | "
          f"{'in-process steady':>18} {'workers steady':>15} {'speed-up':>9}")
    for name in SHAPES:
        jobs = [(name, i) for i in range(args.jobs)]
        wall, steady = {}, {}
        for workers in (1, n_workers):
            t0 = time.perf_counter()
            step_seconds = run_jobs(train_job, jobs, args.steps, workers=workers, progress=False)
            wall[workers] = (time.perf_counter() - t0) / len(jobs)
            steady[workers] = sum(step_seconds) / len(jobs) / workers
        w = n_workers
        print(f"{name:<11} {wall[1]:>16.2f} {wall[w]:>13.2f} {wall[1] / wall[w]:>8.2f}x | "
              f"{steady[1]:>18.2f} {steady[w]:>15.2f} {steady[1] / steady[w]:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
