"""Drift synthesis: swap the data model, measure what changes, compare with corruption testing.

The first drift control of the paper. One task model is trained per static data model
(the twelve presets of :mod:`drifthelpers.isp`), each is evaluated on all twelve → a 12x12
matrix (rows: the preset a model was trained on; columns: the preset it is tested on). The
same models are tested under the ten post-hoc corruptions of :mod:`drifthelpers.corruptions`
applied to their own view, and the two protocols are compared: mean drop, the ratio of the
drops, and the model selection each would make (rank correlation of the training presets,
the preset each would pick, and the faithful score lost by following the corruptions).
A model trained on a mix of all presets measures targeted generalisation.

Splits and training seeds are separate axes: ``n_splits`` data splits x ``n_seeds`` training
seeds give the *units* of the experiment, and every model keeps its per-item results (class
predictions, or per-image intersection and union), so that :func:`synthesis_statistics` can
put a hierarchical-bootstrap interval (:mod:`drifthelpers.stats`) on every headline number
and judge the paper's claims (:data:`PAPER_CLAIMS`).

Static views are deterministic, so each preset's view of the data set is rendered once
(batched, on the training device) and reused for every epoch and model; this is exactly
what on-the-fly rendering would produce, without repeating the work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import synthesis_fidelity as fid
from .claims import SYNTHESIS_CLAIMS, SYNTHESIS_NUMBERS
from .profiles import section
from .training import CheckpointCache, TrainConfig, config_key, fit, predict, seed_everything

__all__ = [
    "SynthesisConfig",
    "PROFILES",
    "render_views",
    "ViewDataset",
    "MixedViewDataset",
    "train_task_model",
    "cross_evaluate",
    "drop_matrix",
    "corruption_table",
    "compare_protocols",
    "run_synthesis",
    "synthesis_statistics",
    "unit_scores",
    "merge_results",
    "PAPER_CLAIMS",
    "resize_image",
    "train_config",
    "data_fingerprint",
    "trained_model",
    "default_cache_dir",
    "save_json",
]


@dataclass(frozen=True)
class SynthesisConfig:
    """What a drift-synthesis experiment trains and measures.

    Attributes:
        dataset: ``"microscopy"`` (classification) or ``"drone"`` (segmentation).
        model: task model name (see :func:`drifthelpers.models.build_task_model`).
        epochs, batch_size, lr, weight_decay: Adam training settings.
        n_splits: random stratified splits; split k is drawn with seed ``seed + k``.
        n_seeds: training seeds per split; seed r trains with seed ``seed + r`` on every split,
            so splits and seeds are crossed. Each (split, seed) is one unit of the experiment.
        fractions: train/validation/test fractions of each split.
        image_size: side of the images the task model sees (views are area-downsampled
            after the data model when smaller than the data; ``0`` keeps the data size).
        intensity: light level of the raw data (1.0 … 0.01).
        severity: corruption severity for the baseline (the paper used 3).
        seed: base seed of the splits and of the training seeds.
        augment: ``"weak"`` or ``"none"``.
        presets: the static data models to train and test (all twelve by default).
        fidelity: ``"corrected"`` (default) or ``"raw2logit"``, the public code's protocol.
        corrections: with ``"raw2logit"``, the corrections of
            :data:`drifthelpers.synthesis_fidelity.CORRECTIONS` applied on top (each alone
            measures its effect); ``"corrected"`` applies all of them.
    """

    dataset: str = "microscopy"
    model: str = "small_cnn"
    epochs: int = 12
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0
    n_splits: int = 2
    n_seeds: int = 1
    fractions: tuple = (0.6, 0.2, 0.2)
    image_size: int = 64
    intensity: float = 1.0
    severity: int = 3
    seed: int = 0
    augment: str = "weak"
    schedule: str = "constant"
    presets: tuple = ()
    fidelity: str = "corrected"
    corrections: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "corrections", fid.check(self.fidelity, self.corrections))
        if self.dataset not in ("microscopy", "drone"):
            raise ValueError(f"dataset must be 'microscopy' or 'drone', got {self.dataset!r}")
        if self.n_splits < 1 or self.n_seeds < 1:
            raise ValueError(f"n_splits and n_seeds must be >= 1, got {self.n_splits}, {self.n_seeds}")
        if not 1 <= self.severity <= 5:
            raise ValueError(f"severity must be 1..5, got {self.severity}")
        if not self.presets:
            from .isp import PRESETS

            object.__setattr__(self, "presets", tuple(PRESETS))

    @property
    def task(self) -> str:
        return "classification" if self.dataset == "microscopy" else "segmentation"

    def units(self) -> list[tuple[int, int]]:
        """The (split, seed index) pairs of the experiment, splits outer."""
        return [(k, r) for k in range(self.n_splits) for r in range(self.n_seeds)]


#: Each profile's settings of this experiment (the ``"synthesis"`` section of
#: :data:`drifthelpers.profiles.PROFILES`): ``{profile: {dataset: SynthesisConfig fields}}``.
PROFILES = section("synthesis")


# --------------------------------------------------------------------------- views


def resize_image(x: torch.Tensor, size: int, mask: bool = False) -> torch.Tensor:
    """Area-downsample (B, C, H, W) images to (size, size); masks are re-binarised. 0 = keep."""
    if not size or x.shape[-1] == size:
        return x
    out = F.interpolate(x, size=(size, size), mode="area")
    return (out > 0.5).to(x.dtype) if mask else out


def render_views(dataset, presets: Sequence[str], image_size: int = 0, batch_size: int = 32, device="cpu",
                 progress: bool = True, chain: str = "corrected") -> dict[str, torch.Tensor]:
    """Render every sample of a raw dataset under each static preset.

    Args:
        dataset: a raw dataset (items with ``raw`` (1, H, W) in DN) with a ``camera``.
        presets: static data model labels.
        image_size: downsample views to this side (area averaging); 0 keeps the size.
        chain: ``"corrected"``, ``"raw2logit"`` (the public code's static chain, on the CPU) or
            ``"raw2logit_unsharp_2d"`` (that chain with a 2-D unsharp mask).

    Returns:
        ``{preset: (N, 3, S, S) float tensor in [0, 1]}`` on the CPU.
    """
    from .isp import CameraParams, StaticDataModel

    camera = CameraParams.from_dataset_camera(dataset.camera)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    raws = torch.cat([b["raw"] for b in loader])
    if chain not in fid.CHAINS:
        raise ValueError(f"chain must be one of {fid.CHAINS}, got {chain!r}")
    if chain != "corrected":
        return fid.render_raw2logit_views(raws, camera, presets, lambda x: resize_image(x, image_size), progress,
                                          unsharp_2d=chain == "raw2logit_unsharp_2d")
    views = {}
    it = presets
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(presets, desc="render views", leave=False)
    for preset in it:
        dm = StaticDataModel(preset, camera).to(device).eval()
        chunks = []
        with torch.no_grad():
            for start in range(0, len(raws), batch_size):
                rgb = dm(raws[start : start + batch_size].to(device))
                chunks.append(resize_image(rgb, image_size).cpu())
        views[preset] = torch.cat(chunks)
    return views


def _targets(dataset, image_size: int) -> torch.Tensor:
    if hasattr(dataset, "mask_files"):
        masks = torch.stack([dataset[i]["mask"] for i in range(len(dataset))])
        return resize_image(masks, image_size, mask=True)
    return torch.as_tensor(np.asarray(dataset.targets), dtype=torch.long)


class ViewDataset(torch.utils.data.Dataset):
    """Rendered RGB views and their targets: items ``{"rgb", "label"}`` or ``{"rgb", "mask"}``."""

    def __init__(self, views: torch.Tensor, targets: torch.Tensor, indices: Sequence[int] | None = None):
        self.views, self.targets = views, targets
        self.indices = np.arange(len(views)) if indices is None else np.asarray(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        key = "label" if self.targets.ndim == 1 else "mask"
        return {"rgb": self.views[j], key: self.targets[j]}


class MixedViewDataset(torch.utils.data.Dataset):
    """Every (sample, preset) pair; sampled uniformly, each item shows one preset's view."""

    def __init__(self, views: dict[str, torch.Tensor], targets: torch.Tensor, indices: Sequence[int]):
        self.stack = [views[p] for p in views]
        self.targets = targets
        self.indices = np.asarray(indices)

    def __len__(self):
        return len(self.indices) * len(self.stack)

    def __getitem__(self, i):
        k, s = divmod(i, len(self.indices))
        j = int(self.indices[s])
        key = "label" if self.targets.ndim == 1 else "mask"
        return {"rgb": self.stack[k][j], key: self.targets[j]}


# --------------------------------------------------------------------------- training


def _loader(ds, batch_size, shuffle, seed, num_samples=None):
    if shuffle:
        g = torch.Generator().manual_seed(seed)
        sampler = torch.utils.data.RandomSampler(ds, num_samples=num_samples, generator=g)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)


def train_task_model(train_ds, val_ds, config: TrainConfig, num_classes: int, cache: CheckpointCache | None = None,
                     progress: bool = False, num_samples: int | None = None, val_every: int = 1, device="cpu",
                     standardise: tuple | None = None):
    """Train (or load from the cache) one task model on a view dataset.

    ``val_every``: score ``val_ds`` every that many epochs (and after the last one); the
    history records those scores, the trained weights do not depend on it. ``standardise``:
    ``(mean, std)`` per channel, put in front of the model (:class:`~drifthelpers.synthesis_fidelity.Standardise`).

    Returns:
        ``(model, meta)`` where meta holds the history and whether it came from the cache.
    """
    from .models import build_task_model

    out_classes = num_classes if config.task == "classification" else 1
    seed_everything(config.seed)
    model = build_task_model(config.model, num_classes=out_classes)
    if standardise is not None:
        model = nn.Sequential(fid.Standardise(*standardise), model)
    key = config_key(config)
    if cache is not None:
        meta = cache.load(key, {"task": model})
        if meta is not None:
            model.to(device).eval()
            return model, {**meta, "cached": True, "key": key}
    train = _loader(train_ds, config.batch_size, True, config.seed, num_samples)
    val = _loader(val_ds, 64, False, 0) if val_ds is not None and len(val_ds) else None
    history = fit(model, nn.Identity(), train, val, config, num_classes=out_classes, progress=progress,
                  val_every=val_every, device=device)
    meta = {"config": config.to_dict(), "history": history.to_dict()}
    if cache is not None:
        cache.save(key, {"task": model}, meta)
    return model, {**meta, "cached": False, "key": key}


def _metric_name(task: str) -> str:
    return "accuracy" if task == "classification" else "iou"


def _scored(model, loader, task: str, device, transform=None, per_image: bool = False) -> tuple[float, np.ndarray]:
    """The metric of a model on a loader and its per-item record: class predictions (I,)
    for a classifier, per-image intersection and union pixel counts (2, I) for a segmenter.
    The metric is accuracy, or IoU pooled over the set (an empty union counts as 1), or with
    ``per_image`` the mean of per-image IoU."""
    from . import stats

    pred, target = predict(model, nn.Identity(), loader, device=device, transform=transform)
    if task == "classification":
        pred = pred.numpy().astype(np.int64)
        return float(np.mean(pred == target.numpy())), pred
    inter, union = stats.iou_counts(pred.numpy(), target.numpy())
    value = float(stats.iou_per_image(inter, union).mean()) if per_image else stats.iou_pooled(inter, union)
    return value, np.stack([inter, union]).astype(np.int64)


def cross_evaluate(models: dict[str, nn.Module], views: dict[str, torch.Tensor], targets: torch.Tensor,
                   test_idx: Sequence[int], task: str, num_classes: int, device="cpu", items: bool = False,
                   per_image: bool = False):
    """Metric of every trained model (rows) on every test view (columns).

    With ``items=True`` also the per-item records (``[model][view]``, see :func:`_scored`)."""
    rows, records = [], []
    for train_preset, model in models.items():
        row, rec = [], []
        for test_preset, v in views.items():
            loader = _loader(ViewDataset(v, targets, test_idx), 64, False, 0)
            value, record = _scored(model, loader, task, device, per_image=per_image)
            row.append(value)
            rec.append(record)
        rows.append(row)
        records.append(rec)
    return (np.array(rows), records) if items else np.array(rows)


def drop_matrix(matrix: np.ndarray) -> np.ndarray:
    """Drop of each model's metric relative to its own (diagonal) view: ``M[i, i] - M[i, j]``."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square, got shape {m.shape}")
    return np.diag(m)[:, None] - m


def corruption_table(models: dict[str, nn.Module], views: dict[str, torch.Tensor], targets: torch.Tensor,
                     test_idx: Sequence[int], task: str, num_classes: int, severity: int = 3, seed: int = 0,
                     corruptions: Sequence[str] | None = None, device="cpu", items: bool = False,
                     table: str = "imagenet_c", per_image: bool = False):
    """Metric of each model on its own view corrupted by each corruption (rows: models).

    Corruptions are computed on the CPU (their random draws then do not depend on the device),
    with the constants ``table``; ``per_image``: see :func:`_scored`.

    Returns:
        ``(table, names)``, and with ``items=True`` also the per-item records ``[model][corruption]``.
    """
    from . import corruptions as C

    names = list(corruptions or C.CORRUPTIONS)
    out = np.zeros((len(models), len(names)))
    records = []
    for i, (preset, model) in enumerate(models.items()):
        loader = _loader(ViewDataset(views[preset], targets, test_idx), 64, False, 0)
        rec = []
        for j, name in enumerate(names):
            g = torch.Generator().manual_seed(seed * 1000 + j)

            def transform(rgb, name=name, g=g):
                return C.corrupt(rgb.cpu(), name, severity, generator=g, table=table).to(rgb.device)

            out[i, j], record = _scored(model, loader, task, device, transform, per_image)
            rec.append(record)
        records.append(rec)
    return (out, names, records) if items else (out, names)


def compare_protocols(matrix: np.ndarray, corrupted: np.ndarray, presets: Sequence[str]) -> dict:
    """Faithful drift versus corruption testing: severity and model selection.

    Args:
        matrix: cross-evaluation (train x test) of one split or the mean.
        corrupted: corruption table (train x corruption).
        presets: row labels.

    Returns:
        ``mean_drop_faithful`` (mean off-diagonal drop), ``mean_drop_corruption`` (mean of
        clean diagonal minus corrupted), ``ratio`` (corruption / faithful; ``None`` when the
        faithful drop is <= 0, where it is unbounded or meaningless), the two
        rankings' Spearman correlation (a training preset's score under each protocol is its
        mean metric under that protocol's test conditions; ``None`` when undefined), and the
        preset each would pick.
    """
    from scipy.stats import spearmanr

    m = np.asarray(matrix, float)
    n = m.shape[0]
    if n < 2:
        raise ValueError("comparing protocols needs at least two presets (a 2x2 matrix or larger)")
    off = ~np.eye(n, dtype=bool)
    diag = np.diag(m)
    drops = drop_matrix(m)
    faithful_score = np.array([m[i, off[i]].mean() for i in range(n)])
    corruption_score = np.asarray(corrupted, float).mean(1)
    mean_faithful = float(drops[off].mean())
    mean_corr = float((diag[:, None] - np.asarray(corrupted, float)).mean())
    rho = None  # undefined for two presets, or when a protocol scores every preset alike
    if n > 2 and np.ptp(faithful_score) > 0 and np.ptp(corruption_score) > 0:
        rho = float(spearmanr(faithful_score, corruption_score).statistic)
    return {
        "mean_drop_faithful": mean_faithful,
        "mean_drop_corruption": mean_corr,
        "ratio": mean_corr / mean_faithful if mean_faithful > 0 else None,
        "spearman_rho": rho,
        "pick_faithful": presets[int(np.argmax(faithful_score))],
        "pick_corruption": presets[int(np.argmax(corruption_score))],
        "worst_test_view": presets[int(np.argmax(drops.mean(0)))],
    }


# --------------------------------------------------------------------------- the experiment


def _plan_jobs(dataset, config: SynthesisConfig, mixed: bool) -> tuple[list[dict], list[str], dict]:
    """The training jobs (one per unit and model), their labels, and each split's test indices."""
    from .datasets import stratified_split

    strat = np.asarray(dataset.targets)
    groups = fid.split_groups(dataset, config)
    fingerprint = data_fingerprint(dataset, config)
    jobs, labels, tests = [], [], {}
    for k in range(config.n_splits):
        parts = stratified_split(strat, config.fractions, seed=config.seed + k, groups=groups)
        train_idx, val_idx = parts[0], parts[1]
        tests[k] = np.asarray(parts[2] if len(parts) > 2 else parts[1])
        for r in range(config.n_seeds):
            for preset in [*config.presets, *(["mixed"] if mixed else [])]:
                jobs.append({"preset": preset, "split": k, "seed_index": r,
                             "config": train_config(config, preset, k, fingerprint, seed_index=r),
                             "train": np.asarray(train_idx), "val": np.asarray(val_idx), "test": tests[k]})
                labels.append(f"{config.dataset} split {k} seed {r} model {preset}")
    return jobs, labels, tests


def _mixed_summary(matrices: list[np.ndarray], mixed_rows: list[np.ndarray]) -> dict:
    """The mixed-preset model against the single-preset models, from per-unit (T, T) matrices and
    the mixed model's (T,) row of each unit."""
    mixed_arr = np.stack(mixed_rows)
    single_off = np.array([[m[i, j] for i in range(len(m)) for j in range(len(m)) if i != j] for m in matrices])
    return {
        "per_test_view": mixed_arr.mean(0).tolist(),
        "mean": float(mixed_arr.mean()),
        "single_preset_mean_on_own_view": float(np.mean([np.diag(m).mean() for m in matrices])),
        "single_preset_mean_off_view": float(single_off.mean()),
        "single_preset_worst_off_view": float(np.min([m.min() for m in matrices])),
        "mixed_worst_view": float(mixed_arr.mean(0).min()),
    }


def run_synthesis(dataset, config: SynthesisConfig, cache_dir: str | Path | bool | None = None, progress: bool = True,
                  mixed: bool = True, workers: int = 0, device="cpu", n_boot: int = 2000, boot_seed: int = 0,
                  job_threads: int = 0) -> dict:
    """The whole drift-synthesis experiment on one data set.

    Every task model (one per preset and unit, plus the mixed-preset model per unit; a unit is
    one (split, training seed) pair of ``config.units()``) is an independent job: trained (or
    loaded from the checkpoint cache), then evaluated on every view and under every
    corruption. Jobs run in parallel worker processes (:func:`drifthelpers.parallel.run_jobs`;
    ``workers=0`` runs them here on a machine with at most two usable cores and in worker
    processes above that, ``1`` runs them here; ``job_threads=N``: every job on N threads, so
    the numbers do not depend on the cores); each job seeds itself, so the
    result does not depend on the order. On a GPU (``device="cuda"``) the jobs run one after
    the other in this process.

    Args:
        n_boot: bootstrap resamples for the intervals (0: no statistics, only point values).
        boot_seed: seed of the bootstrap.

    Returns a JSON-ready dict: presets, units, per-unit and mean matrices with the standard
    deviation across units, drop matrix, corruption tables, protocol comparison (per unit and
    on the means), targeted generalisation (mixed-preset model), the per-item records
    (``"items"``), and with ``n_boot > 0`` the ``"statistics"`` and ``"claims"`` of
    :func:`synthesis_statistics`.
    """
    from .parallel import run_jobs

    task = config.task
    num_classes = len(getattr(dataset, "classes", [])) or 1
    cache = CheckpointCache(cache_dir or default_cache_dir()) if cache_dir is not False else None
    views = render_views(dataset, config.presets, config.image_size, progress=progress, device=device,
                         chain=fid.chain(config))
    targets = _targets(dataset, config.image_size)
    jobs, labels, tests = _plan_jobs(dataset, config, mixed)
    shared = {"views": views, "targets": targets, "task": task, "num_classes": num_classes,
              "severity": config.severity, "cache": str(cache.root) if cache is not None else None,
              "device": str(device), "table": fid.corruption_table_name(config),
              "per_image": fid.per_image_iou(config), "standardise": fid.standardises(config)}
    done = run_jobs(_synthesis_job, jobs, shared, workers=workers, device=device, labels=labels,
                    desc=f"{config.dataset}: train and test", progress=progress, job_threads=job_threads)

    units = _collect_units(config, jobs, done, targets, tests, mixed)
    result = _result(config, units, num_classes, cached=sum(int(out["cached"]) for out in done))
    if n_boot and len(config.presets) > 2:
        result.update(synthesis_statistics(result, n_boot=n_boot, seed=boot_seed))
    return result


def _collect_units(config: SynthesisConfig, jobs: list[dict], done: list[dict], targets: torch.Tensor,
                   tests: dict, mixed: bool) -> dict:
    """Per unit of the experiment: its (T, T) matrix, (T, C) corruption table, protocol
    comparison, the mixed model's row, and the per-item record, from the finished jobs."""
    task = config.task
    out = {"names": list(done[0]["corruptions"]) if done and "corruptions" in done[0] else [],
           "matrices": [], "corruption_tables": [], "mixed_rows": [], "comparisons": [], "records": []}
    for k, r in config.units():
        rows = {j["preset"]: o for j, o in zip(jobs, done) if (j["split"], j["seed_index"]) == (k, r)}
        m = np.array([rows[p]["row"] for p in config.presets])
        c = np.array([rows[p]["corruption"] for p in config.presets])
        out["matrices"].append(m)
        out["corruption_tables"].append(c)
        if len(config.presets) > 1:
            out["comparisons"].append(compare_protocols(m, c, list(config.presets)))
        if mixed:
            out["mixed_rows"].append(np.array(rows["mixed"]["row"]))
        out["records"].append({"split": k, "seed": r, "test_index": tests[k].tolist(),
                               "targets": targets[tests[k]].tolist() if task == "classification" else None,
                               "models": [rows[p]["items"] + rows[p]["corruption_items"] for p in config.presets],
                               "mixed": rows["mixed"]["items"] if mixed else None})
    return out


def _result(config: SynthesisConfig, units: dict, num_classes: int, cached: int) -> dict:
    """The JSON-ready result of :func:`run_synthesis` (before statistics) from :func:`_collect_units`."""
    names = units["names"]
    mats = np.stack(units["matrices"])
    corr = np.stack(units["corruption_tables"])
    mean_m, mean_c = mats.mean(0), corr.mean(0)
    result = {
        "dataset": config.dataset,
        "metric": _metric_name(config.task),
        "config": asdict(config),
        "presets": list(config.presets),
        "corruptions": names,
        "units": [{"split": k, "seed": r} for k, r in config.units()],
        "matrices": mats.tolist(),
        "matrix_mean": mean_m.tolist(),
        "matrix_std": mats.std(0, ddof=1).tolist() if len(mats) > 1 else np.zeros_like(mean_m).tolist(),
        "drop_mean": drop_matrix(mean_m).tolist(),
        "corruption_tables": corr.tolist(),
        "corruption_mean": mean_c.tolist(),
        "comparison_per_unit": units["comparisons"],
        "comparison": compare_protocols(mean_m, mean_c, list(config.presets)) if len(config.presets) > 1 else {},
        "models_from_cache": cached,
        "items": {"kind": "predictions" if config.task == "classification" else "intersection_union",
                  "num_classes": num_classes, "conditions": list(config.presets) + names,
                  "units": units["records"]},
    }
    if units["mixed_rows"]:
        result["mixed"] = _mixed_summary(units["matrices"], units["mixed_rows"])
    return result


def _synthesis_job(job: dict, shared: dict) -> dict:
    """One model of :func:`run_synthesis`: train (or load) it, test it on every view and
    (single-preset models) under every corruption of its own view, keeping per-item records.
    Runs in a worker."""
    views, targets, task, nc = shared["views"], shared["targets"], shared["task"], shared["num_classes"]
    device = shared.get("device", "cpu")
    cache = CheckpointCache(shared["cache"]) if shared["cache"] else None
    preset, split = job["preset"], job["split"]
    own = list(views.values()) if preset == "mixed" else views[preset]
    std = fid.standardiser(own, job["train"]) if shared.get("standardise") else None
    if preset == "mixed":
        model, meta = train_task_model(MixedViewDataset(views, targets, job["train"]), None, job["config"], nc, cache,
                                       num_samples=len(job["train"]), device=device, standardise=std)
    else:
        # the experiment reports test metrics only: validate after the last epoch (same weights, less work)
        model, meta = train_task_model(ViewDataset(views[preset], targets, job["train"]),
                                       ViewDataset(views[preset], targets, job["val"]), job["config"], nc, cache,
                                       val_every=job["config"].epochs, device=device, standardise=std)
    per_image = shared.get("per_image", False)
    row, rec = cross_evaluate({preset: model}, views, targets, job["test"], task, nc, device, items=True,
                              per_image=per_image)
    out = {"cached": bool(meta["cached"]), "row": row[0].tolist(), "items": [r.tolist() for r in rec[0]]}
    if preset != "mixed":
        # corruption draws depend on the split only: every seed of a split sees the same corrupted items
        table, names, crec = corruption_table({preset: model}, views, targets, job["test"], task, nc,
                                              shared["severity"], seed=split, device=device, items=True,
                                              table=shared.get("table", "imagenet_c"), per_image=per_image)
        out.update(corruption=table[0].tolist(), corruptions=names, corruption_items=[r.tolist() for r in crec[0]])
    return out


# --------------------------------------------------------------------------- statistics and claims

#: The paper's drift-synthesis numbers (mean drop under ISP drift, under corruptions) and its
#: claims per data set (:mod:`drifthelpers.claims`).
PAPER_NUMBERS = SYNTHESIS_NUMBERS
PAPER_CLAIMS = SYNTHESIS_CLAIMS


def unit_scores(result: dict) -> dict:
    """Per-unit, per-item scores of a :func:`run_synthesis` result, for the bootstrap.

    Returns:
        ``{"views": [U x (T, T, I_u)], "corruptions": [U x (T, K, I_u)], "mixed": [U x (T, I_u)]
        or None, "metric": str}``; a score is 1/0 correctness for a classifier and the
        per-image IoU (the paper's definition) for a segmenter. Also ``"inter"``/``"union"``
        (classifier: ``None``) and ``"correct_by_class"`` helpers for pooled IoU and balanced
        accuracy.
    """
    from . import stats

    items = result["items"]
    T = len(result["presets"])
    views, corrs, mixed, inter, union = [], [], [], [], []
    for unit in items["units"]:
        rec = np.asarray(unit["models"])  # (T, T+K, I) predictions or (T, T+K, 2, I) counts
        mix = np.asarray(unit["mixed"]) if unit.get("mixed") is not None else None
        if items["kind"] == "predictions":
            y = np.asarray(unit["targets"])
            score, mscore = (rec == y).astype(float), None if mix is None else (mix == y).astype(float)
        else:
            score = stats.iou_per_image(rec[..., 0, :], rec[..., 1, :])
            mscore = None if mix is None else stats.iou_per_image(mix[..., 0, :], mix[..., 1, :])
            inter.append(rec[:, :T, 0, :].astype(float))
            union.append(rec[:, :T, 1, :].astype(float))
        views.append(score[:, :T])
        corrs.append(score[:, T:])
        mixed.append(mscore)
    return {"views": views, "corruptions": corrs, "mixed": None if any(m is None for m in mixed) else mixed,
            "inter": inter or None, "union": union or None, "metric": result["metric"]}


def _own_view_statistics(result: dict, scores: dict, n_boot: int, seed: int) -> dict:
    """Own-view (diagonal) quality: balanced accuracy (classifier) or pooled IoU (segmenter)."""
    from . import stats

    T = len(result["presets"])
    eye = np.arange(T)
    out = {}
    if result["items"]["kind"] == "predictions":
        C = result["items"]["num_classes"]
        hit, ind = [], []
        for unit, v in zip(result["items"]["units"], scores["views"]):
            onehot = (np.asarray(unit["targets"])[None] == np.arange(C)[:, None]).astype(float)  # (C, I)
            hit.append(v[eye, eye][None] * onehot[:, None])  # (C, T, I)
            ind.append(onehot[:, None])

        def balanced(m):
            with np.errstate(invalid="ignore", divide="ignore"):
                recall = np.where(m["ind"] > 0, m["hit"] / np.where(m["ind"] > 0, m["ind"], 1), np.nan)
            return np.nanmean(recall, axis=2).mean((1, 2))  # classes, then presets and units

        out["balanced_accuracy_own_view"] = stats.hierarchical_bootstrap({"hit": hit, "ind": ind}, balanced,
                                                                        n_boot, seed)
    else:
        # pooled over each model's test items (a model per unit), then averaged over units and presets
        pooled = lambda m: np.where(m["union"] > 0, m["inter"] / np.maximum(m["union"], 1e-300), 1.0).mean((1, 2))  # noqa: E731
        inter = [x[eye, eye] for x in scores["inter"]]
        union = [x[eye, eye] for x in scores["union"]]
        out["iou_pooled_own_view"] = stats.hierarchical_bootstrap({"inter": inter, "union": union}, pooled, n_boot,
                                                                 seed)
    out[f"{result['metric']}_own_view"] = stats.hierarchical_bootstrap(
        [v[eye, eye] for v in scores["views"]], lambda m: m.mean((1, 2)), n_boot, seed)
    return out


def synthesis_statistics(result: dict, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Intervals for the headline numbers of a :func:`run_synthesis` result, and the verdicts.

    The hierarchical bootstrap (:func:`drifthelpers.stats.protocol_statistics`) resamples the
    units (split x seed) and then the test items of each unit, an item's scores under every
    view and corruption moving together. A Friedman test over the training presets (blocks:
    units) gates every ranking claim: if either protocol's preset scores are not shown to
    differ, the ranking claims are undecided.

    Returns:
        ``{"statistics": {name: {value, low, high, n, ...}}, "tests": {...}, "claims": [verdict dicts]}``;
        ``statistics`` also holds ``cell_mean`` (T x T value/low/high), ``cell_sd`` and
        ``selection_regret_crossfit`` (:mod:`drifthelpers.stats_selection`; the claim uses it).
    """
    from . import stats
    from .stats_selection import crossfit_regret

    scores = unit_scores(result)
    prot = stats.protocol_statistics(scores["views"], scores["corruptions"], n_boot, seed)
    headline = {k: (v.to_dict() if isinstance(v, stats.Estimate) else v) for k, v in prot.items()}
    extra = _own_view_statistics(result, scores, n_boot, seed)
    extra["selection_regret_crossfit"] = crossfit_regret(scores["views"], scores["corruptions"], n_boot, seed)
    if scores["mixed"] is not None:
        T = len(result["presets"])
        off = ~np.eye(T, dtype=bool)
        gain = lambda m: m["mixed"].mean((1, 2)) - (m["views"][..., off].mean(-1)).mean(1)  # noqa: E731
        extra["mixed_minus_single_off_view"] = stats.hierarchical_bootstrap(
            {"mixed": scores["mixed"], "views": scores["views"]}, gain, n_boot, seed)
    headline.update({k: v.to_dict() for k, v in extra.items()})
    T = len(result["presets"])
    off = ~np.eye(T, dtype=bool)
    faithful = np.stack([np.where(off, v.mean(-1), 0).sum(1) / (T - 1) for v in scores["views"]])  # (U, T)
    corrupt = np.stack([c.mean((-1, -2)) for c in scores["corruptions"]])
    tests = {"friedman_faithful": stats.friedman(faithful, alpha), "friedman_corruption": stats.friedman(corrupt, alpha)}
    if len(faithful) > 1:
        tests["reliability_faithful"] = stats.reliability(faithful)
        tests["reliability_corruption"] = stats.reliability(corrupt)
    claims = [_judge_claim(c, headline, tests) for c in PAPER_CLAIMS.get(result["dataset"], [])]
    return {"statistics": headline, "tests": tests, "claims": claims}


def _judge_claim(claim, headline: dict, tests: dict) -> dict:
    """One verdict; ranking claims are gated on both Friedman tests."""
    from . import stats

    gate, need = None, None
    if claim.gate == "friedman":
        f, c = tests["friedman_faithful"], tests["friedman_corruption"]
        passed = f["rejects"] and c["rejects"]
        p = lambda t: "undefined" if t["p_value"] is None else f"{t['p_value']:.2g}"  # noqa: E731
        why = (f"Friedman test over the presets did not reject (p = {p(f)} faithful, {p(c)} corruptions, "
               f"alpha {f['alpha']}): the presets are not shown to differ, so a ranking is not decided")
        gate = (passed, why)
        reps = [tests.get(k, {}).get("repeats_for_target") for k in ("reliability_faithful", "reliability_corruption")]
        if not passed and all(reps):
            need = max(reps)
    verdict = stats.judge(claim, headline[claim.statistic], gate).to_dict()
    if need is not None:
        verdict["units_to_decide"] = need
    return verdict


def merge_results(results: Sequence[dict]) -> dict:
    """Pool the units of several :func:`run_synthesis` results of the same experiment (e.g. a
    sweep over training seeds) into one result without statistics; pass it to
    :func:`synthesis_statistics` for intervals over all the units."""
    if not results:
        raise ValueError("merge_results needs at least one result")
    first = results[0]
    for r in results[1:]:
        if r["presets"] != first["presets"] or r["corruptions"] != first["corruptions"] or r["metric"] != first["metric"]:
            raise ValueError("results to merge must have the same presets, corruptions and metric")
    units = [u for r in results for u in r["items"]["units"]]
    mats = np.concatenate([np.asarray(r["matrices"]) for r in results])
    corr = np.concatenate([np.asarray(r["corruption_tables"]) for r in results])
    return {**{k: first[k] for k in ("dataset", "metric", "config", "presets", "corruptions")},
            "units": [u for r in results for u in r["units"]], "matrices": mats.tolist(),
            "matrix_mean": mats.mean(0).tolist(), "corruption_tables": corr.tolist(),
            "corruption_mean": corr.mean(0).tolist(), "items": {**first["items"], "units": units}}


def default_cache_dir() -> Path:
    """Where trained checkpoints are cached: ``<data root>/cache/checkpoints`` (git-ignored)."""
    from .datasets import data_root

    return data_root() / "cache" / "checkpoints"


def data_fingerprint(dataset, config: SynthesisConfig) -> dict:
    """What identifies the training data in a cache key: size, intensity, and a hash of
    the first mosaics (so a regenerated or different data set never reuses a model)."""
    import hashlib

    h = hashlib.sha256()
    for i in range(min(4, len(dataset))):
        h.update(dataset[i]["raw"].numpy().tobytes())
    return {"n": len(dataset), "intensity": config.intensity, "dataset": config.dataset, "checksum": h.hexdigest()[:16]}


def train_config(config: SynthesisConfig, preset: str, split: int, fingerprint: dict,
                 seed_index: int = 0) -> TrainConfig:
    """The :class:`TrainConfig` (and so the cache key) of one model of the experiment: split
    ``split`` (drawn with ``config.seed + split``), training seed ``config.seed + seed_index``."""
    return TrainConfig(task=config.task, model=config.model, epochs=config.epochs, batch_size=config.batch_size,
                       lr=config.lr, weight_decay=config.weight_decay, seed=config.seed + seed_index,
                       augment=config.augment, data_model=preset, schedule=config.schedule,
                       extra={"split": split, "fractions": list(config.fractions), "size": config.image_size,
                              **fingerprint, **fid.cache_extra(config)})


def trained_model(dataset, config: SynthesisConfig, preset: str = "bi,s,ga", split: int = 0,
                  cache_dir: str | Path | None = None, progress: bool = False, seed_index: int = 0, device="cpu"):
    """The task model the synthesis experiment trains for one preset, split and training seed.

    Loaded from the checkpoint cache when notebook 03 (or an earlier call) trained it
    with the same configuration and data; trained and cached otherwise.

    Returns:
        ``(model, meta, split_indices)`` with ``split_indices = (train, val, test)``; the
        model expects views area-resized to ``config.image_size`` (see :func:`resize_image`).
    """
    from .datasets import stratified_split

    num_classes = len(getattr(dataset, "classes", [])) or 1
    parts = stratified_split(np.asarray(dataset.targets), config.fractions, seed=config.seed + split,
                             groups=fid.split_groups(dataset, config))
    parts = (parts[0], parts[1], parts[2] if len(parts) > 2 else parts[1])
    cache = CheckpointCache(cache_dir or default_cache_dir())
    tc = train_config(config, preset, split, data_fingerprint(dataset, config), seed_index=seed_index)
    from .models import build_task_model

    out_classes = num_classes if config.task == "classification" else 1
    model = build_task_model(config.model, num_classes=out_classes)
    views, std = None, None
    if fid.standardises(config):  # the model's first module holds the training view's mean and std
        views = render_views(dataset, [preset], config.image_size, progress=progress, chain=fid.chain(config))
        std = fid.standardiser(views[preset], parts[0])
        model = nn.Sequential(fid.Standardise(*std), model)
    meta = cache.load(config_key(tc), {"task": model})
    if meta is not None:
        return model.eval(), {**meta, "cached": True}, parts
    views = views or render_views(dataset, [preset], config.image_size, progress=progress, device=device,
                                  chain=fid.chain(config))
    targets = _targets(dataset, config.image_size)
    model, meta = train_task_model(ViewDataset(views[preset], targets, parts[0]),
                                   ViewDataset(views[preset], targets, parts[1]), tc, num_classes, cache,
                                   progress=progress, device=device, standardise=std)
    return model.cpu(), meta, parts  # trained on ``device``, returned on the CPU


def save_json(result: dict, path: str | Path) -> Path:
    """Write a result dict as JSON (numbers as floats; atomic replace)."""
    from .fileio import atomic_write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, result, default=float)
