"""Paper-profile training speed on this machine, and what the full paper sweep would cost.

Usage (one command, no network, nothing but the repository)::

    .venv/bin/python benchmarks/bench_gpu.py [--device auto] [--steps 30] [--concurrent 1,2,4] [--paper-path]

It writes a small slice of the paper-sized stand-in (simulated raw data in the Zenodo
layout, 256x256) to a temporary folder, renders it through the ``bi,s,ga`` data model,
and times the paper's two task models as the ``paper`` profile trains them: ResNet18
(cross-entropy) and U-Net++ with a ResNet34 encoder (Dice loss), Adam lr 1e-5, batch 4,
256x256 RGB inputs. Training is timed after warm-up steps (cuDNN picks its kernels
then), with the device synchronised before each clock read; evaluation likewise, at
batch 32 without gradients.

The table extrapolates the steps to the full experiments at the paper's sizes (940
crops, 548 tiles; 80/20 splits): notebook 03 trains 12 data models + 1 mixed model per
split for 5 splits x 100 epochs and evaluates each on 12 views and 10 corruptions;
notebook 05 trains 3 arms x 3 seeds x 100 epochs (the learned arm's data model adds a
little, not counted). On a GPU ``--concurrent`` also measures K training processes
sharing it (total images per second), which says whether several jobs per GPU pay off.
Without a GPU the script says so and times a few steps on the CPU. ``--paper-path`` also runs
the paper profile's experiments end to end on the device (notebook 03's ``run_synthesis`` and
each arm of notebook 05, on a stand-in slice, two epochs): a check that those paths run there,
with their seconds; the metrics of two epochs on a slice are not results.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import torch

from drifthelpers import dataverify, synthesis
from drifthelpers.datasets import RawDrone, RawMicroscopy
from drifthelpers.models import build_task_model
from drifthelpers.training import _loss_fn, resolve_device

BATCH = 4
PAPER = {"microscopy": {"n": 940, "model": "resnet18", "classes": 9, "task": "classification"},
         "drone": {"n": 548, "model": "unetplusplus", "classes": 1, "task": "segmentation"}}
EPOCHS, SPLITS, PRESETS, CORRUPTIONS, TRAIN_FRACTION = 100, 5, 12, 10, 0.8
RESULTS = Path(__file__).resolve().parent / "results" / "bench_gpu.json"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def stand_in_views(device: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{kind: (views (N, 3, 256, 256), targets)}`` rendered from a fresh stand-in slice."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = dataverify.build_standin(tmp, scale=0.02, progress=False)
        out = {}
        for kind, cls in (("microscopy", RawMicroscopy), ("drone", RawDrone)):
            ds = cls(paths[kind])
            views = synthesis.render_views(ds, ["bi,s,ga"], 0, device=device, progress=False)["bi,s,ga"]
            if kind == "microscopy":
                targets = torch.as_tensor(ds.targets)
            else:
                targets = torch.stack([ds[i]["mask"] for i in range(len(ds))])
            out[kind] = (views.cpu(), targets)
    return out


def time_model(kind: str, views: torch.Tensor, targets: torch.Tensor, device: str, steps: int,
               warmup: int) -> dict:
    """Seconds per training step (batch 4) and per evaluated image for one paper model."""
    spec = PAPER[kind]
    torch.manual_seed(0)
    model = build_task_model(spec["model"], num_classes=spec["classes"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    loss_fn = _loss_fn(spec["task"])
    n = len(views)
    model.train()
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        idx = torch.arange(step * BATCH, step * BATCH + BATCH) % n
        x, y = views[idx].to(device), targets[idx].to(device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    _sync(device)
    train_s = (time.perf_counter() - t0) / steps
    model.eval()
    with torch.no_grad():
        x = views[: min(n, 32)].to(device)
        model(x)
        _sync(device)
        t0 = time.perf_counter()
        reps = max(1, steps // 4)
        for _ in range(reps):
            model(x)
        _sync(device)
    eval_s = (time.perf_counter() - t0) / (reps * len(x))
    return {"train_s_per_step": train_s, "eval_s_per_image": eval_s}


def _concurrent_worker(args) -> float:
    kind, path, device, steps, warmup, start = args
    views, targets = torch.load(path)
    start.wait()
    t0 = time.perf_counter()
    time_model(kind, views, targets, device, steps, warmup)
    return time.perf_counter() - t0


def concurrent_throughput(kind: str, views, targets, device: str, steps: int, warmup: int, k: int) -> float:
    """Total training images per second of ``k`` processes sharing one device."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "views.pt"
        torch.save((views, targets), path)
        with ctx.Manager() as manager:
            start = manager.Barrier(k)
            with ctx.Pool(k) as pool:
                seconds = pool.map(_concurrent_worker, [(kind, path, device, steps, warmup, start)] * k)
    return k * (warmup + steps) * BATCH / max(seconds)


def sweep_hours(kind: str, timing: dict) -> dict:
    """Hours of the paper's notebook 03 and notebook 05 sweeps at the measured speed."""
    n = PAPER[kind]["n"]
    n_train = round(n * TRAIN_FRACTION)
    steps_per_epoch = math.ceil(n_train / BATCH)
    nb03_models = (PRESETS + 1) * SPLITS
    nb03_train = nb03_models * EPOCHS * steps_per_epoch * timing["train_s_per_step"]
    nb03_eval = nb03_models * (PRESETS + CORRUPTIONS) * (n - n_train) * timing["eval_s_per_image"]
    nb05 = 3 * 3 * EPOCHS * steps_per_epoch * timing["train_s_per_step"]
    return {"nb03_models": nb03_models, "nb03_hours": (nb03_train + nb03_eval) / 3600, "nb05_hours": nb05 / 3600}


def paper_path(device: str, epochs: int = 2) -> list[dict]:
    """The paper profile's experiments end to end on ``device``, in this process: notebook 03's
    ``run_synthesis`` (3 data models, 1 split) and each arm of notebook 05's ``train_arm`` (1 seed),
    for both data sets, on a fresh stand-in slice at 256 px with the paper's models. It checks that
    the training, evaluation and statistics paths run on the device; one slice and ``epochs``
    epochs learn nothing, so the metrics are not results."""
    from dataclasses import replace

    from drifthelpers import optimisation
    from drifthelpers.profiles import settings

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = dataverify.build_standin(tmp, scale={"microscopy": 0.05, "drone": 0.03}, progress=False)
        for kind, cls in (("microscopy", RawMicroscopy), ("drone", RawDrone)):
            cfg = synthesis.SynthesisConfig(dataset=kind, **settings("synthesis", "paper", kind))
            cfg = replace(cfg, epochs=epochs, n_splits=1, presets=("bi,s,ga", "ma,u,me", "me,s,me"))
            ds = cls(paths[kind])
            t0 = time.perf_counter()
            res = synthesis.run_synthesis(ds, cfg, cache_dir=False, progress=False, device=device, n_boot=200)
            rows.append({"data": kind, "experiment": "synthesis (nb 03)", "items": len(ds),
                         "seconds": round(time.perf_counter() - t0, 1),
                         "diagonal": [round(float(x), 3) for x in torch.tensor(res["matrix_mean"]).diagonal()]})
            jc = optimisation.config_for(kind, "paper", epochs=epochs)
            data = optimisation.prepare_data(cls(paths[kind], intensity=0.01), jc)
            for arm in optimisation.ARMS:
                t0 = time.perf_counter()
                run = optimisation.train_arm(arm, jc, data, 0, device=device)
                rows.append({"data": kind, "experiment": f"optimisation (nb 05), {arm}", "items": len(data.raw),
                             "seconds": round(time.perf_counter() - t0, 1), "final": round(run.final, 3)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    p.add_argument("--steps", type=int, help="timed training steps (default 30 on a GPU, 3 on the CPU)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 5 on a GPU, 1 on the CPU)")
    p.add_argument("--concurrent", default="1,2,4", help="GPU only: process counts to try (e.g. 1,2,4)")
    p.add_argument("--paper-path", action="store_true",
                   help="also run the paper profile's experiments end to end on the device (a stand-in slice)")
    p.add_argument("--out", default=str(RESULTS), help="JSON with every number")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    gpu = device != "cpu"
    steps = args.steps or (30 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
    if not gpu:
        print(f"No GPU here: timing {steps} steps per model on the CPU ({torch.get_num_threads()} threads); "
              "the hours below are for this CPU.")
    t0 = time.perf_counter()
    data = stand_in_views(device)
    print(f"stand-in slice built and rendered in {time.perf_counter() - t0:.0f} s; device: {name}")
    rows = []
    for kind, (views, targets) in data.items():
        timing = time_model(kind, views, targets, device, steps, warmup)
        row = {"data": kind, "model": PAPER[kind]["model"], "device": name, **timing, **sweep_hours(kind, timing)}
        if gpu:
            row["concurrent_img_per_s"] = {
                k: concurrent_throughput(kind, views, targets, device, steps, warmup, k)
                for k in (int(v) for v in args.concurrent.split(",") if v.strip())}
        rows.append(row)
    print()
    print("| data | model | device | train steps/s (batch 4) | train img/s | eval img/s "
          "| nb 03 sweep (13 models x 5 splits x 100 ep) | nb 05 sweep (3 arms x 3 seeds x 100 ep) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['data']} | {r['model']} | {r['device']} | {1 / r['train_s_per_step']:.2f} "
              f"| {BATCH / r['train_s_per_step']:.1f} | {1 / r['eval_s_per_image']:.1f} "
              f"| {r['nb03_hours']:.1f} h | {r['nb05_hours']:.1f} h |")
    for r in rows:
        if "concurrent_img_per_s" in r:
            c = r["concurrent_img_per_s"]
            print(f"{r['model']}: {', '.join(f'{k} process(es) {v:.0f} img/s' for k, v in c.items())} "
                  "(total training throughput on one device)")
    record = {"device": name, "torch": torch.__version__, "steps": steps, "warmup": warmup, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")  # the timings are kept if the paper path fails
    if args.paper_path:
        t0 = time.perf_counter()
        record["paper_path"] = paper_path(device)
        print(f"\npaper profile end to end on {name} ({time.perf_counter() - t0:.0f} s, a stand-in slice):")
        for r in record["paper_path"]:
            print(f"  {r['data']:<10} {r['experiment']:<32} {r['items']:>4} items  {r['seconds']:>6.1f} s  "
                  + (f"diagonal {r['diagonal']}" if "diagonal" in r else f"final {r['final']}"))
        out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nnumbers: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
