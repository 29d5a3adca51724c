"""Drift synthesis: swap the data model, measure what changes, compare with corruption testing.

The first drift control of the paper. One task model is trained per static data model
(the twelve presets of :mod:`drifthelpers.isp`), each is evaluated on all twelve → a 12x12
matrix (rows: the preset a model was trained on; columns: the preset it is tested on),
per split, summarised as mean ± std. The same models are tested under the ten post-hoc
corruptions of :mod:`drifthelpers.corruptions` applied to their own view, and the two
protocols are compared: mean drop, the ratio of the drops, and the model selection each
would make (rank correlation of the training presets, and the preset each would pick).
A model trained on a mix of all presets measures targeted generalisation.

Static views are deterministic, so each preset's view of the data set is rendered once
(batched, on the training device) and reused for every epoch and model; this is exactly
what on-the-fly rendering would produce, without repeating the work.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .training import CheckpointCache, TrainConfig, config_key, evaluate, fit, seed_everything

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
        n_splits: random stratified splits (each gives one matrix; mean ± std over them).
        fractions: train/validation/test fractions of each split.
        image_size: side of the images the task model sees (views are area-downsampled
            after the data model when smaller than the data; ``0`` keeps the data size).
        intensity: light level of the raw data (1.0 … 0.01).
        severity: corruption severity for the baseline (the paper used 3).
        seed: base seed (split k uses seed + k).
        augment: ``"weak"`` or ``"none"``.
        presets: the static data models to train and test (all twelve by default).
    """

    dataset: str = "microscopy"
    model: str = "small_cnn"
    epochs: int = 12
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0
    n_splits: int = 2
    fractions: tuple = (0.6, 0.2, 0.2)
    image_size: int = 64
    intensity: float = 1.0
    severity: int = 3
    seed: int = 0
    augment: str = "weak"
    schedule: str = "constant"
    presets: tuple = ()

    def __post_init__(self):
        if self.dataset not in ("microscopy", "drone"):
            raise ValueError(f"dataset must be 'microscopy' or 'drone', got {self.dataset!r}")
        if self.n_splits < 1:
            raise ValueError(f"n_splits must be >= 1, got {self.n_splits}")
        if not 1 <= self.severity <= 5:
            raise ValueError(f"severity must be 1..5, got {self.severity}")
        if not self.presets:
            from .isp import PRESETS

            object.__setattr__(self, "presets", tuple(PRESETS))

    @property
    def task(self) -> str:
        return "classification" if self.dataset == "microscopy" else "segmentation"


PROFILES = {
    # minutes on 2 CPU cores, on the mini data sets
    "quick": {
        "microscopy": dict(model="small_cnn", epochs=15, batch_size=16, lr=1e-3, n_splits=2, image_size=64),
        "drone": dict(model="small_unet", epochs=12, batch_size=8, lr=1e-3, n_splits=2, image_size=48),
    },
    # the published sizes and hyper-parameters (GPU machine, real data)
    "paper": {
        "microscopy": dict(model="resnet18", epochs=100, batch_size=4, lr=1e-5, n_splits=5, image_size=0,
                           fractions=(0.8, 0.2)),
        "drone": dict(model="unetplusplus", epochs=100, batch_size=4, lr=1e-5, n_splits=5, image_size=0,
                      fractions=(0.8, 0.2)),
    },
}


# --------------------------------------------------------------------------- views


def resize_image(x: torch.Tensor, size: int, mask: bool = False) -> torch.Tensor:
    """Area-downsample (B, C, H, W) images to (size, size); masks are re-binarised. 0 = keep."""
    if not size or x.shape[-1] == size:
        return x
    out = F.interpolate(x, size=(size, size), mode="area")
    return (out > 0.5).to(x.dtype) if mask else out


def render_views(dataset, presets: Sequence[str], image_size: int = 0, batch_size: int = 32, device="cpu",
                 progress: bool = True) -> dict[str, torch.Tensor]:
    """Render every sample of a raw dataset under each static preset.

    Args:
        dataset: a raw dataset (items with ``raw`` (1, H, W) in DN) with a ``camera``.
        presets: static data model labels.
        image_size: downsample views to this side (area averaging); 0 keeps the size.

    Returns:
        ``{preset: (N, 3, S, S) float tensor in [0, 1]}`` on the CPU.
    """
    from .isp import CameraParams, StaticDataModel

    camera = CameraParams.from_dataset_camera(dataset.camera)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    raws = torch.cat([b["raw"] for b in loader])
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
                     progress: bool = False, num_samples: int | None = None, val_every: int = 1, device="cpu"):
    """Train (or load from the cache) one task model on a view dataset.

    ``val_every``: score ``val_ds`` every that many epochs (and after the last one); the
    history records those scores, the trained weights do not depend on it.

    Returns:
        ``(model, meta)`` where meta holds the history and whether it came from the cache.
    """
    from .models import build_task_model

    out_classes = num_classes if config.task == "classification" else 1
    seed_everything(config.seed)
    model = build_task_model(config.model, num_classes=out_classes)
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


def cross_evaluate(models: dict[str, nn.Module], views: dict[str, torch.Tensor], targets: torch.Tensor,
                   test_idx: Sequence[int], task: str, num_classes: int, device="cpu") -> np.ndarray:
    """Metric of every trained model (rows) on every test view (columns)."""
    metric = _metric_name(task)
    rows = []
    for train_preset, model in models.items():
        row = []
        for test_preset, v in views.items():
            loader = _loader(ViewDataset(v, targets, test_idx), 64, False, 0)
            row.append(evaluate(model, nn.Identity(), loader, task, num_classes, device)[metric])
        rows.append(row)
    return np.array(rows)


def drop_matrix(matrix: np.ndarray) -> np.ndarray:
    """Drop of each model's metric relative to its own (diagonal) view: ``M[i, i] - M[i, j]``."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square, got shape {m.shape}")
    return np.diag(m)[:, None] - m


def corruption_table(models: dict[str, nn.Module], views: dict[str, torch.Tensor], targets: torch.Tensor,
                     test_idx: Sequence[int], task: str, num_classes: int, severity: int = 3, seed: int = 0,
                     corruptions: Sequence[str] | None = None, device="cpu") -> tuple[np.ndarray, list[str]]:
    """Metric of each model on its own view corrupted by each corruption (rows: models).

    Corruptions are computed on the CPU (their random draws then do not depend on the device)."""
    from . import corruptions as C

    names = list(corruptions or C.CORRUPTIONS)
    metric = _metric_name(task)
    table = np.zeros((len(models), len(names)))
    for i, (preset, model) in enumerate(models.items()):
        loader = _loader(ViewDataset(views[preset], targets, test_idx), 64, False, 0)
        for j, name in enumerate(names):
            g = torch.Generator().manual_seed(seed * 1000 + j)

            def transform(rgb, name=name, g=g):
                return C.corrupt(rgb.cpu(), name, severity, generator=g).to(rgb.device)

            table[i, j] = evaluate(model, nn.Identity(), loader, task, num_classes, device, transform=transform)[metric]
    return table, names


def compare_protocols(matrix: np.ndarray, corrupted: np.ndarray, presets: Sequence[str]) -> dict:
    """Faithful drift versus corruption testing: severity and model selection.

    Args:
        matrix: cross-evaluation (train x test) of one split or the mean.
        corrupted: corruption table (train x corruption).
        presets: row labels.

    Returns:
        ``mean_drop_faithful`` (mean off-diagonal drop), ``mean_drop_corruption`` (mean of
        clean diagonal minus corrupted), ``ratio`` (corruption / faithful), the two
        rankings' Spearman correlation (a training preset's score under each protocol is its
        mean metric under that protocol's test conditions), and the preset each would pick.
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
    rho = spearmanr(faithful_score, corruption_score).statistic if n > 2 else float("nan")
    return {
        "mean_drop_faithful": mean_faithful,
        "mean_drop_corruption": mean_corr,
        "ratio": mean_corr / mean_faithful if mean_faithful > 0 else float("inf"),
        "spearman_rho": float(rho),
        "pick_faithful": presets[int(np.argmax(faithful_score))],
        "pick_corruption": presets[int(np.argmax(corruption_score))],
        "worst_test_view": presets[int(np.argmax(drops.mean(0)))],
    }


# --------------------------------------------------------------------------- the experiment


def run_synthesis(dataset, config: SynthesisConfig, cache_dir: str | Path | bool | None = None, progress: bool = True,
                  mixed: bool = True, workers: int = 0, device="cpu") -> dict:
    """The whole drift-synthesis experiment on one data set.

    Every task model (one per preset and split, plus the mixed-preset model per split) is an
    independent job: trained (or loaded from the checkpoint cache), then evaluated on every
    view and under every corruption. Jobs run in parallel worker processes
    (:func:`drifthelpers.parallel.run_jobs`; ``workers=0`` picks one per core, ``1`` runs
    them here); each job seeds itself, so the result does not depend on the order. On a GPU
    (``device="cuda"``) the jobs run one after the other in this process.

    Returns a JSON-ready dict: presets, per-split and mean/std matrices, drop matrix,
    corruption table, protocol comparison (per split and on the means), targeted
    generalisation (mixed-preset model) and caching information.
    """
    from .datasets import stratified_split
    from .parallel import run_jobs

    task = config.task
    num_classes = len(getattr(dataset, "classes", [])) or 1
    cache = CheckpointCache(cache_dir or default_cache_dir()) if cache_dir is not False else None
    views = render_views(dataset, config.presets, config.image_size, progress=progress, device=device)
    targets = _targets(dataset, config.image_size)
    strat = np.asarray(dataset.targets)
    groups = getattr(dataset, "frames", None)
    fingerprint = data_fingerprint(dataset, config)

    jobs, labels = [], []
    for k in range(config.n_splits):
        parts = stratified_split(strat, config.fractions, seed=config.seed + k, groups=groups)
        train_idx, val_idx = parts[0], parts[1]
        test_idx = parts[2] if len(parts) > 2 else parts[1]
        for preset in [*config.presets, *(["mixed"] if mixed else [])]:
            jobs.append({"preset": preset, "split": k, "config": train_config(config, preset, k, fingerprint),
                         "train": np.asarray(train_idx), "val": np.asarray(val_idx), "test": np.asarray(test_idx)})
            labels.append(f"{config.dataset} split {k} model {preset}")
    shared = {"views": views, "targets": targets, "task": task, "num_classes": num_classes,
              "severity": config.severity, "cache": str(cache.root) if cache is not None else None,
              "device": str(device)}
    done = run_jobs(_synthesis_job, jobs, shared, workers=workers, device=device, labels=labels,
                    desc=f"{config.dataset}: train and test", progress=progress)

    matrices, corr_tables, mixed_rows, comparisons = [], [], [], []
    names = list(done[0]["corruptions"]) if done and "corruptions" in done[0] else []
    for k in range(config.n_splits):
        rows = {j["preset"]: r for j, r in zip(jobs, done) if j["split"] == k}
        m = np.array([rows[p]["row"] for p in config.presets])
        c = np.array([rows[p]["corruption"] for p in config.presets])
        matrices.append(m)
        corr_tables.append(c)
        if len(config.presets) > 1:
            comparisons.append(compare_protocols(m, c, list(config.presets)))
        if mixed:
            mixed_rows.append(np.array(rows["mixed"]["row"]))
    cached = sum(int(r["cached"]) for r in done)

    mats = np.stack(matrices)
    corr = np.stack(corr_tables)
    mean_m, mean_c = mats.mean(0), corr.mean(0)
    result = {
        "dataset": config.dataset,
        "metric": _metric_name(task),
        "config": asdict(config),
        "presets": list(config.presets),
        "corruptions": names,
        "matrices": mats.tolist(),
        "matrix_mean": mean_m.tolist(),
        "matrix_std": mats.std(0, ddof=1).tolist() if len(mats) > 1 else np.zeros_like(mean_m).tolist(),
        "drop_mean": drop_matrix(mean_m).tolist(),
        "corruption_tables": corr.tolist(),
        "corruption_mean": mean_c.tolist(),
        "comparison_per_split": comparisons,
        "comparison": compare_protocols(mean_m, mean_c, list(config.presets)) if len(config.presets) > 1 else {},
        "models_from_cache": cached,
    }
    if mixed:
        mixed_arr = np.stack(mixed_rows)
        single_off = np.array([[m[i, j] for i in range(len(m)) for j in range(len(m)) if i != j] for m in matrices])
        result["mixed"] = {
            "per_test_view": mixed_arr.mean(0).tolist(),
            "mean": float(mixed_arr.mean()),
            "single_preset_mean_on_own_view": float(np.mean([np.diag(m).mean() for m in matrices])),
            "single_preset_mean_off_view": float(single_off.mean()),
            "single_preset_worst_off_view": float(np.min([m.min() for m in matrices])),
            "mixed_worst_view": float(mixed_arr.mean(0).min()),
        }
    return result


def _synthesis_job(job: dict, shared: dict) -> dict:
    """One model of :func:`run_synthesis`: train (or load) it, test it on every view and
    (single-preset models) under every corruption of its own view. Runs in a worker."""
    views, targets, task, nc = shared["views"], shared["targets"], shared["task"], shared["num_classes"]
    device = shared.get("device", "cpu")
    cache = CheckpointCache(shared["cache"]) if shared["cache"] else None
    preset, split = job["preset"], job["split"]
    if preset == "mixed":
        model, meta = train_task_model(MixedViewDataset(views, targets, job["train"]), None, job["config"], nc, cache,
                                       num_samples=len(job["train"]), device=device)
    else:
        # the experiment reports test metrics only: validate after the last epoch (same weights, less work)
        model, meta = train_task_model(ViewDataset(views[preset], targets, job["train"]),
                                       ViewDataset(views[preset], targets, job["val"]), job["config"], nc, cache,
                                       val_every=job["config"].epochs, device=device)
    out = {"cached": bool(meta["cached"]),
           "row": cross_evaluate({preset: model}, views, targets, job["test"], task, nc, device)[0].tolist()}
    if preset != "mixed":
        table, names = corruption_table({preset: model}, views, targets, job["test"], task, nc, shared["severity"],
                                        seed=split, device=device)
        out.update(corruption=table[0].tolist(), corruptions=names)
    return out


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


def train_config(config: SynthesisConfig, preset: str, split: int, fingerprint: dict) -> TrainConfig:
    """The :class:`TrainConfig` (and so the cache key) of one model of the experiment."""
    return TrainConfig(task=config.task, model=config.model, epochs=config.epochs, batch_size=config.batch_size,
                       lr=config.lr, weight_decay=config.weight_decay, seed=config.seed + split,
                       augment=config.augment, data_model=preset, schedule=config.schedule,
                       extra={"split": split, "fractions": list(config.fractions), "size": config.image_size,
                              **fingerprint})


def trained_model(dataset, config: SynthesisConfig, preset: str = "bi,s,ga", split: int = 0,
                  cache_dir: str | Path | None = None, progress: bool = False):
    """The task model the synthesis experiment trains for one preset and split.

    Loaded from the checkpoint cache when notebook 03 (or an earlier call) trained it
    with the same configuration and data; trained and cached otherwise.

    Returns:
        ``(model, meta, split_indices)`` with ``split_indices = (train, val, test)``; the
        model expects views area-resized to ``config.image_size`` (see :func:`resize_image`).
    """
    from .datasets import stratified_split

    num_classes = len(getattr(dataset, "classes", [])) or 1
    parts = stratified_split(np.asarray(dataset.targets), config.fractions, seed=config.seed + split,
                             groups=getattr(dataset, "frames", None))
    parts = (parts[0], parts[1], parts[2] if len(parts) > 2 else parts[1])
    cache = CheckpointCache(cache_dir or default_cache_dir())
    tc = train_config(config, preset, split, data_fingerprint(dataset, config))
    meta = None
    from .models import build_task_model

    out_classes = num_classes if config.task == "classification" else 1
    model = build_task_model(config.model, num_classes=out_classes)
    meta = cache.load(config_key(tc), {"task": model})
    if meta is not None:
        return model.eval(), {**meta, "cached": True}, parts
    views = render_views(dataset, [preset], config.image_size, progress=progress)
    targets = _targets(dataset, config.image_size)
    model, meta = train_task_model(ViewDataset(views[preset], targets, parts[0]),
                                   ViewDataset(views[preset], targets, parts[1]), tc, num_classes, cache,
                                   progress=progress)
    return model, meta, parts


def save_json(result: dict, path: str | Path) -> Path:
    """Write a result dict as JSON (numbers as floats)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float))
    return path
