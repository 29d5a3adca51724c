"""Drift optimisation: learn the data model jointly with the task model.

The third drift control of the paper. Three *arms* train the same task model on the same
raw mosaics, and differ only in what turns a mosaic into the task model's input:

* ``"learned"`` — the :class:`~drifthelpers.isp.ParametrizedDataModel`, initialised to the
  static ``bi,s,ga`` view, whose parameters are optimised jointly with the task model (their
  own learning rate, projected onto their bounds after every step);
* ``"frozen"`` — the same data model, never updated (it runs under ``no_grad``);
* ``"raw_direct"`` — no ISP: the mosaic packed into four half-resolution channels (one per
  CFA site, ordered R, G, G, B) and normalised by the black and white levels
  (:func:`pack_raw`).

For one seed, every arm gets the same task-model initialisation (up to the first layer's
input channels for ``raw_direct``), the same batches in the same order and the same
augmentation draws (flips and 90° rotations, applied after the data model). The public code
of the paper let a learned ISP fit a BatchNorm layer that the frozen ISP left un-fitted; here
the data model has no normalisation layer and no buffers at all (checked before training),
runs in the same mode in both arms, and the ``learned`` arm with ``data_lr = 0`` reproduces
the ``frozen`` arm exactly (tested). ``JointConfig(fidelity="raw2logit")`` runs the arms as the
public code did, confound included (:mod:`drifthelpers.optimisation_fidelity`).

Measurements (:func:`summarise`): validation curves (mean ± std across seeds per step), the
final and best validation metric, the test metric of the final model, the steps to reach a
target, stability across seeds (spread of the final metric, and mean width of the curve's
band), and the learned data-model parameters against their initial values. Each run keeps its
per-item test scores, so the arms' differences, paired by split and seed and by test item, get
hierarchical-bootstrap intervals and the paper's claims a computed verdict
(:func:`paired_statistics` and :data:`PAPER_CLAIMS`, defined in :mod:`drifthelpers.claims` as
``arm_statistics`` and ``OPTIMISATION_CLAIMS``; :mod:`drifthelpers.stats`).

Runs are cached as small JSON files keyed by the full configuration and a fingerprint of the
data, so re-running a notebook is instant.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import optimisation_fidelity as _fidelity
from .claims import OPTIMISATION_CLAIMS, arm_statistics, judge_optimisation
from .fileio import atomic_write_json
from .isp import CameraParams
from .optimisation_fidelity import learned_data_model
from .profiles import section, settings
from .training import config_key, evaluate, loss_function, predict, seed_everything, train_epoch

__all__ = [
    "ARMS",
    "PROFILES",
    "JointConfig",
    "JointData",
    "ArmRun",
    "pack_raw",
    "RawPacker",
    "RenderAt",
    "prepare_data",
    "build_arm",
    "train_arm",
    "run_arms",
    "curve_band",
    "steps_to_target",
    "stability",
    "parameter_changes",
    "summarise",
    "paired_statistics",
    "judge_claims",
    "PAPER_CLAIMS",
    "learned_data_model",
    "default_cache_dir",
    "config_for",
    "stability_rows",
    "plot_curves",
]

ARMS: tuple[str, ...] = ("learned", "frozen", "raw_direct")

_AUG_SEED_OFFSET = 7919  # augmentation draws use their own generator (seed + offset), shared by all arms


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class JointConfig:
    """What one drift-optimisation run trains.

    Attributes:
        dataset: ``"microscopy"`` (classification) or ``"drone"`` (segmentation).
        model: task model name (:func:`drifthelpers.models.build_task_model`).
        epochs, batch_size: training length and batch size.
        lr: Adam learning rate of the task model.
        data_lr: Adam learning rate of the data model's parameters (``learned`` arm only).
        weight_decay: Adam weight decay of the task model (0 for the data model).
        image_size: side of the task model's input; rendered views are area-downsampled to it
            *after* the data model (``0`` keeps the data size). ``raw_direct`` packs the mosaic
            to half resolution, and is area-downsampled further only if that is still larger.
        intensity: light level of the raw data (1.0 … 0.01).
        fractions: train/validation[/test] fractions of the split.
        split_seed: seed of the split (fixed across training seeds: the spread across seeds
            measures the optimisation, not the split).
        augment: ``"weak"`` (flips and 90° rotations) or ``"none"``.
        eval_every: validate every this many steps; ``0`` = once per epoch.
        learn_demosaic: learn the four demosaicing kernels too (the paper learned its
            debayering convolution).
        groups: data-model parameter groups to learn (empty = all).
        black_level_lr_scale: the black level's learning rate is ``data_lr`` times this. It is
            stored as a fraction of the white level, and at 1 % of the light the whole signal
            spans about 0.005-0.01 of it: a step of ``data_lr`` would move the black level past
            the signal. (Adam's steps are about ``lr`` in size whatever the gradient scale.)
        one_lr: the public code's protocol: the data model learns with ``lr`` (every parameter,
            black level included), ignoring ``data_lr`` and ``black_level_lr_scale``.
        fidelity: ``"corrected"`` or ``"raw2logit"``, the public code's arms (sets ``one_lr`` and
            ``learn_demosaic``; :mod:`drifthelpers.optimisation_fidelity`). In :meth:`to_dict`
            only when not the default, so the default's records and cache keys do not hold it.
    """

    dataset: str = "microscopy"
    model: str = "small_cnn"
    epochs: int = 8
    batch_size: int = 16
    lr: float = 2e-3
    data_lr: float = 1e-2
    weight_decay: float = 0.0
    image_size: int = 64
    intensity: float = 0.01
    fractions: tuple = (0.6, 0.2, 0.2)
    split_seed: int = 0
    augment: str = "weak"
    eval_every: int = 0
    learn_demosaic: bool = True
    groups: tuple = ()
    black_level_lr_scale: float = 0.01
    one_lr: bool = False
    fidelity: str = "corrected"

    def __post_init__(self):
        _fidelity.check_config(self)
        if self.dataset not in ("microscopy", "drone"):
            raise ValueError(f"dataset must be 'microscopy' or 'drone', got {self.dataset!r}")
        if self.augment not in ("weak", "none"):
            raise ValueError(f"augment must be 'weak' or 'none', got {self.augment!r}")
        if int(self.epochs) < 1 or int(self.batch_size) < 2:
            raise ValueError(f"epochs must be >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0 or self.data_lr < 0 or self.weight_decay < 0 or self.black_level_lr_scale < 0:
            raise ValueError("lr must be > 0, data_lr and weight_decay >= 0")
        if self.eval_every < 0 or self.image_size < 0:
            raise ValueError("eval_every and image_size must be >= 0")
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        object.__setattr__(self, "groups", tuple(self.groups))

    @property
    def task(self) -> str:
        return "classification" if self.dataset == "microscopy" else "segmentation"

    @property
    def metric(self) -> str:
        return "accuracy" if self.task == "classification" else "iou"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "fidelity" or v != "corrected"}


#: Each profile's settings of this experiment (the ``"optimisation"`` section of
#: :data:`drifthelpers.profiles.PROFILES`): ``{profile: {dataset: JointConfig fields}}``.
PROFILES = section("optimisation")


# --------------------------------------------------------------------------- raw-direct packing


def _site_order(cfa: str) -> list[int]:
    """Positions (0 = TL, 1 = TR, 2 = BL, 3 = BR) of R, first G, second G, B in the 2x2 cell."""
    from .raw import cfa_channel_indices

    idx = cfa_channel_indices(cfa)
    greens = [p for p in range(4) if idx[p] == 1]
    return [idx.index(0), greens[0], greens[1], idx.index(2)]


def pack_raw(raw: Tensor, cfa: str, black_level: float | Sequence[float], white_level: float) -> Tensor:
    """Pack a Bayer mosaic into four half-resolution channels, one per CFA site.

    Each site is normalised by its own black level, ``(x - black) / (white - black)``, and
    not clipped (read noise below black stays negative, as in the mosaic). Channels are
    ordered by colour, R, G, G, B (the two greens in raster order of the 2x2 cell), so a
    channel means the same colour for every pattern.

    Args:
        raw: mosaic in DN, shape (*, 1, H, W) with even H and W.
        cfa: pattern string of the top-left 2x2 cell (``"RGGB"``, ``"BGGR"``, ``"GRBG"``, ``"GBRG"``).
        black_level: one value or four (TL, TR, BL, BR), in DN.
        white_level: saturation level in DN.

    Returns:
        (*, 4, H/2, W/2) float tensor; 0 at black, 1 at white.

    Example:
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> pack_raw(x, "GRBG", 0.0, 1.0)[0, :, 0, 0]  # R at TR, G at TL and BR, B at BL
        tensor([1., 0., 5., 4.])
    """
    if raw.ndim < 3 or raw.shape[-3] != 1:
        raise ValueError(f"raw must have shape (*, 1, H, W), got {tuple(raw.shape)}")
    h, w = raw.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"raw needs even height and width to pack 2x2 cells, got {(h, w)}")
    black = torch.as_tensor(black_level, dtype=raw.dtype, device=raw.device).flatten()
    if black.numel() == 1:
        black = black.expand(4)
    if black.numel() != 4:
        raise ValueError(f"black_level must be one value or four (TL, TR, BL, BR), got {black_level}")
    white = float(white_level)
    if not white > float(black.max()):
        raise ValueError(f"white_level {white} must exceed every black level {black.tolist()}")
    x = raw[..., 0, :, :]
    sites = [x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]]  # TL TR BL BR
    chans = [(sites[p] - black[p]) / (white - black[p]) for p in _site_order(cfa)]
    return torch.stack(chans, dim=-3)


class RawPacker(nn.Module):
    """:func:`pack_raw` as a parameter-free module (the ``raw_direct`` arm's "data model")."""

    def __init__(self, camera: CameraParams):
        super().__init__()
        self.cfa, self.black_level, self.white_level = camera.cfa, tuple(camera.black_level), camera.white_level

    def forward(self, raw: Tensor) -> Tensor:
        return pack_raw(raw, self.cfa, self.black_level, self.white_level)

    def extra_repr(self) -> str:
        return f"cfa={self.cfa!r}"


class RenderAt(nn.Module):
    """A data model followed by resizing to ``size`` (area down, bilinear up): what the task model sees."""

    def __init__(self, data_model: nn.Module, size: int = 0):
        super().__init__()
        self.data_model, self.size = data_model, int(size)

    def forward(self, raw: Tensor) -> Tensor:
        x = self.data_model(raw)
        if self.size and x.shape[-1] != self.size:  # area down, bilinear up
            x = F.interpolate(x, size=(self.size, self.size), **({"mode": "area"} if x.shape[-1] > self.size
                              else {"mode": "bilinear", "align_corners": False}))
        return x


# --------------------------------------------------------------------------- data


@dataclass
class JointData:
    """Raw mosaics and targets in memory, with the split.

    Attributes:
        raw: (N, 1, H, W) float32 mosaics in DN.
        targets: (N,) class indices, or (N, 1, S, S) binary masks at the task model's size.
        camera: the data set's :class:`~drifthelpers.isp.CameraParams`.
        task: ``"classification"`` or ``"segmentation"``.
        num_classes: classes (1 for a binary segmenter's mask logits).
        split: (train, val, test) index arrays; test may be empty.
        fingerprint: what identifies the data in a cache key.
        classes: class names.
    """

    raw: Tensor
    targets: Tensor
    camera: CameraParams
    task: str
    num_classes: int
    split: tuple
    fingerprint: dict
    classes: tuple = ()


def prepare_data(dataset, config: JointConfig) -> JointData:
    """Load a raw data set (``RawMicroscopy`` / ``RawDrone``) into memory and split it.

    The split is stratified by class (microscopy) or by whole frames (drone), with
    ``config.split_seed``; masks are area-downsampled to ``config.image_size`` and re-binarised.
    """
    from .datasets import stratified_split

    items = [dataset[i] for i in range(len(dataset))]
    raw = torch.stack([it["raw"] for it in items]).float()
    if config.task == "segmentation":
        masks = torch.stack([it["mask"] for it in items]).float()
        if config.image_size and masks.shape[-1] > config.image_size:
            masks = (F.interpolate(masks, size=(config.image_size,) * 2, mode="area") > 0.5).float()
        targets, num_classes = masks, 1
    else:
        targets = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.long)
        num_classes = len(dataset.classes)
    parts = stratified_split(np.asarray(dataset.targets), config.fractions, seed=config.split_seed,
                             groups=getattr(dataset, "frames", None))
    split = (parts[0], parts[1], parts[2] if len(parts) > 2 else np.zeros(0, np.int64))
    h = hashlib.sha256(raw.numpy().tobytes())
    h.update(targets.numpy().tobytes())
    fingerprint = {"n": len(items), "intensity": float(getattr(dataset, "intensity", config.intensity)),
                   "checksum": h.hexdigest()[:16]}
    return JointData(raw, targets, CameraParams.from_dataset_camera(dataset.camera), config.task, num_classes,
                     split, fingerprint, tuple(getattr(dataset, "classes", ())))


# --------------------------------------------------------------------------- one run


@dataclass
class ArmRun:
    """The record of one (arm, seed) training run; JSON-ready.

    Attributes:
        arm, seed, metric: what ran and what ``curve`` measures.
        steps: optimiser steps at which the validation metric was taken.
        curve: validation metric at those steps.
        train_loss: mean training loss over each interval between validations.
        final, best, best_step: last and best validation metric, and the step of the best.
        test: the final model's metric on the test split (``None`` without one).
        test_items: the final model's score on each test item, in split order: 1/0 correctness
            (classification) or the image's IoU (segmentation; their mean is the paper's IoU).
        split_seed: the seed of the data split (runs are paired by split and seed).
        init_params, final_params: data-model parameters (``state_dict`` as nested lists)
            before and after training (empty for ``raw_direct``).
        seconds: training time; ``cached``: loaded from the cache.
    """

    arm: str
    seed: int
    metric: str
    steps: list = field(default_factory=list)
    curve: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    final: float = float("nan")
    best: float = float("nan")
    best_step: int = 0
    test: float | None = None
    test_items: list = field(default_factory=list)
    split_seed: int = 0
    init_params: dict = field(default_factory=dict)
    final_params: dict = field(default_factory=dict)
    seconds: float = 0.0
    cached: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ArmRun:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


_check_no_running_stats = _fidelity.check_no_running_stats


def build_arm(arm: str, config: JointConfig, data: JointData, seed: int) -> tuple[nn.Module, nn.Module]:
    """The ``(task_model, data_model)`` pair of an arm, initialised from ``seed``.

    The task model is built right after seeding, so all arms with the same input channels
    start from identical weights. The data model is parameter-free (``raw_direct``) or a
    :class:`~drifthelpers.isp.ParametrizedDataModel` at ``bi,s,ga`` (in ``"raw2logit"`` the
    public model, on :func:`~drifthelpers.optimisation_fidelity.arm_data`); in the ``frozen`` arm
    none of its parameters require gradients, in the ``learned`` arm those of
    ``config.groups`` (all when empty) do.
    """
    from .models import build_task_model

    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    seed_everything(seed)
    task_model = build_task_model(config.model, num_classes=data.num_classes,
                                  in_channels=4 if arm == "raw_direct" else 3)
    if arm == "raw_direct":
        data_model: nn.Module = RawPacker(data.camera)
    else:
        data_model = _fidelity.data_model(config, data)
        if arm == "frozen":
            data_model.requires_grad_(False)
        elif config.groups:
            data_model.freeze_all_but(*config.groups)
    if config.fidelity == "corrected":
        _check_no_running_stats(data_model)
    return task_model, data_model


def _batch_plan(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """One epoch of shuffled batches; a last batch of one sample (BatchNorm cannot train on it) is dropped."""
    order = torch.randperm(n, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def _items(data: JointData, idx, chunk: int = 64) -> list[dict]:
    key = "label" if data.task == "classification" else "mask"
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    return [{"raw": data.raw[c], key: data.targets[c]} for c in idx.split(chunk)]


def _test_scores(task_model: nn.Module, view: nn.Module, data: JointData, config: JointConfig,
                 device) -> tuple[float, list]:
    """The metric on the test split (accuracy, or pooled IoU) and each test item's score."""
    from . import stats

    pred, target = predict(task_model, view, _items(data, data.split[2]), device=device)
    if config.task == "classification":
        correct = (pred == target).numpy().astype(float)
        return float(correct.mean()), correct.tolist()
    inter, union = stats.iou_counts(pred.numpy(), target.numpy())
    return stats.iou_pooled(inter, union), stats.iou_per_image(inter, union).tolist()


def _params(data_model: nn.Module) -> dict:
    return {k: v.detach().cpu().tolist() for k, v in data_model.state_dict().items()}


def _optimiser(task_model: nn.Module, data_model: nn.Module, config: JointConfig, learn: bool) -> torch.optim.Adam:
    """Adam over the task model (``config.lr``, ``config.weight_decay``) and, when ``learn``, the
    data model's trainable parameters (``config.data_lr``, the black level scaled, no weight decay)."""
    groups = [{"params": [p for p in task_model.parameters() if p.requires_grad], "lr": config.lr,
               "weight_decay": config.weight_decay}]
    if learn:
        for names, scale in (([n for n, _ in data_model.named_parameters() if n != "black_level"], 1.0),
                             (["black_level"], config.black_level_lr_scale)):
            params = [p for n, p in data_model.named_parameters() if n in names and p.requires_grad]
            if params:
                lr = config.lr if config.one_lr else config.data_lr * scale
                groups.append({"params": params, "lr": lr, "weight_decay": 0.0})
    return torch.optim.Adam(groups)


def _arm_batches(data: JointData, train_idx: Tensor, batch_size: int, order: torch.Generator, device):
    """One epoch of training batches ``(raw, target, True)`` in the order :func:`_batch_plan` draws."""
    for b in _batch_plan(len(train_idx), batch_size, order):
        idx = train_idx[b]
        yield data.raw[idx].to(device), data.targets[idx].to(device), True


class _Validation:
    """The ``after_step`` of :func:`~drifthelpers.training.train_epoch` in :func:`train_arm`: counts
    steps, averages the training loss, and records the validation metric every ``every`` steps."""

    def __init__(self, run: ArmRun, every: int, score):
        self.run, self.every, self.score = run, every, score
        self.step, self.loss_sum, self.loss_n = 0, 0.0, 0

    def __call__(self, loss: float, batch_size: int) -> None:
        self.step += 1
        self.loss_sum, self.loss_n = self.loss_sum + loss, self.loss_n + 1
        if self.step % self.every == 0:
            self.record()

    def record(self) -> None:
        self.run.steps.append(self.step)
        self.run.curve.append(float(self.score()))
        self.run.train_loss.append(self.loss_sum / max(self.loss_n, 1))
        self.loss_sum, self.loss_n = 0.0, 0


def _finish_run(run: ArmRun, task_model: nn.Module, view: RenderAt, data: JointData, config: JointConfig,
                device) -> ArmRun:
    """Fill in the final, best and test results of a trained run and its final data-model parameters."""
    run.final = run.curve[-1]
    best = int(np.argmax(run.curve))
    run.best, run.best_step = run.curve[best], run.steps[best]
    if len(data.split[2]):
        run.test, run.test_items = _test_scores(task_model, view, data, config, device)
    run.split_seed = int(config.split_seed)
    run.final_params = _params(view.data_model) if run.arm != "raw_direct" else {}
    return run


def train_arm(arm: str, config: JointConfig, data: JointData, seed: int, device="cpu",
              progress: bool = False) -> ArmRun:
    """Train one arm for one seed and record its validation curve.

    Adam over the task model (``config.lr``) and, in the ``learned`` arm, over the data
    model's trainable parameters (``config.data_lr``, no weight decay), with
    ``data_model.project_()`` after every step. Batch order comes from a generator seeded
    with ``seed``, augmentation draws from a second one (``seed + 7919``): identical across arms.
    The data model stays in eval mode (it has no mode-dependent layers), except the
    ``"raw2logit"`` learned arm's while it trains (its BatchNorm fits). Each
    epoch is one :func:`drifthelpers.training.train_epoch`.

    Returns:
        An :class:`ArmRun`.
    """
    start = time.perf_counter()
    data = _fidelity.arm_data(arm, config, data)  # raw2logit: the mosaics over their full scale, once
    task_model, data_model = build_arm(arm, config, data, seed)
    task_model.to(device)
    data_model.to(device).eval()
    # at full size (image_size 0) a segmenter's packed half-resolution input is brought to the masks' size
    size = config.image_size or (data.targets.shape[-1] if arm == "raw_direct" and data.task == "segmentation" else 0)
    view = RenderAt(data_model, size)
    learn = arm == "learned" and (config.data_lr > 0 or config.fidelity == "raw2logit")  # update, project
    opt = _optimiser(task_model, data_model, config, learn)
    loss_fn = loss_function(config.task)
    order_gen = torch.Generator().manual_seed(int(seed))
    aug_gen = torch.Generator().manual_seed(int(seed) + _AUG_SEED_OFFSET)
    train_idx = torch.as_tensor(np.asarray(data.split[0]), dtype=torch.long)
    val_items = _items(data, data.split[1])
    run = ArmRun(arm=arm, seed=int(seed), metric=config.metric,
                 init_params=_params(data_model) if arm != "raw_direct" else {})
    steps_per_epoch = len(_batch_plan(len(train_idx), config.batch_size, torch.Generator().manual_seed(0)))
    validation = _Validation(run, config.eval_every or steps_per_epoch, lambda: evaluate(
        task_model, view, val_items, config.task, data.num_classes, device)[config.metric])
    epochs = range(config.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"{config.dataset} {arm} seed {seed}", leave=False)
    for _ in epochs:
        # the learned arm renders with gradients (also when data_lr = 0: the forward is the same)
        train_epoch(task_model, view, _arm_batches(data, train_idx, config.batch_size, order_gen, device), opt,
                    loss_fn, config.task, config.augment, aug_gen, render_grad=arm == "learned",
                    data_train=_fidelity.fits_batch_norm(arm, config),
                    project=data_model.project_ if learn else None, after_step=validation)
    if not run.steps or run.steps[-1] != validation.step:  # always end on a validation of the final model
        validation.record()
    _finish_run(run, task_model, view, data, config, device)
    run.seconds = time.perf_counter() - start
    return run


# --------------------------------------------------------------------------- many runs, cached


def default_cache_dir(root=None) -> Path:
    """Where runs are cached: ``<data root>/cache/optimisation`` (git-ignored)."""
    from .datasets import data_root

    return data_root(root) / "cache" / "optimisation"


def _run_key(arm: str, config: JointConfig, data: JointData, seed: int) -> str:
    cfg = {k: v for k, v in config.to_dict().items() if k != "one_lr" or v}  # the default keeps older keys
    return config_key({"arm": arm, "seed": int(seed), "config": cfg, "data": data.fingerprint},
                      version="optimisation-2")


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj, indent=None)


def run_arms(data: JointData, config: JointConfig, seeds: Sequence[int], arms: Sequence[str] = ARMS,
             cache_dir: str | os.PathLike | None = None, device="cpu", progress: bool = False,
             workers: int = 0, job_threads: int = 0) -> dict[str, list[ArmRun]]:
    """Train every arm for every seed (or load it from the JSON cache).

    The runs that are not cached are independent jobs for
    :func:`drifthelpers.parallel.run_jobs` (``workers=0``: in this process on a
    machine with at most two usable cores, worker processes above that; ``1``: in this
    process; ``job_threads=N``: every run on N threads, whatever the cores); each run is
    written to the cache as soon as it finishes, so an interrupted call keeps what it finished.

    Args:
        cache_dir: folder of the JSON cache; ``None`` disables caching.

    Returns:
        ``{arm: [ArmRun per seed]}``.
    """
    from .parallel import run_jobs

    out: dict[str, list] = {arm: [None] * len(seeds) for arm in arms}
    todo = []
    for arm in arms:
        for i, seed in enumerate(seeds):
            path = Path(cache_dir) / f"{_run_key(arm, config, data, seed)}.json" if cache_dir else None
            if path is not None and path.is_file():
                try:
                    out[arm][i] = ArmRun.from_dict(json.loads(path.read_text()))
                    out[arm][i].cached = True
                    continue
                except (ValueError, TypeError, KeyError):  # a damaged entry is retrained, never trusted
                    pass
            todo.append((arm, i, int(seed), str(path) if path is not None else None))
    done = run_jobs(_arm_job, [(arm, seed, path) for arm, _, seed, path in todo], (data, config, str(device)),
                    workers=workers, device=device, labels=[f"{config.dataset} {arm} seed {seed}" for arm, _, seed, _ in todo],
                    desc=f"{config.dataset}: arms x seeds", progress=progress, job_threads=job_threads)
    for (arm, i, _, _), run in zip(todo, done):
        out[arm][i] = ArmRun.from_dict(run)
    return out


def _arm_job(job: tuple, shared: tuple) -> dict:
    """One (arm, seed) run of :func:`run_arms`, cached as soon as it ends. Runs in a worker."""
    arm, seed, path = job
    data, config, device = shared
    run = train_arm(arm, config, data, seed, device=device)
    if path is not None:
        _write_json(Path(path), run.to_dict())
    return run.to_dict()


# --------------------------------------------------------------------------- statistics


def curve_band(curves: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
    """Mean, sample standard deviation (ddof=1; 0 for one curve), min and max across seeds, per point.

    Example:
        >>> b = curve_band([[0.0, 1.0], [2.0, 3.0]])
        >>> b["mean"].tolist(), b["std"].round(4).tolist()
        ([1.0, 2.0], [1.4142, 1.4142])
    """
    c = np.asarray(curves, dtype=float)
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"curves must be (seeds, points), got shape {c.shape}")
    std = c.std(axis=0, ddof=1) if c.shape[0] > 1 else np.zeros(c.shape[1])
    return {"mean": c.mean(axis=0), "std": std, "min": c.min(axis=0), "max": c.max(axis=0)}


def steps_to_target(steps: Sequence[int], curve: Sequence[float], target: float) -> int | None:
    """The first step at which ``curve >= target``; ``None`` if never.

    Example:
        >>> steps_to_target([10, 20, 30], [0.2, 0.6, 0.5], 0.55)
        20
    """
    for s, v in zip(steps, curve):
        if v >= target:
            return int(s)
    return None


def stability(runs: Sequence[ArmRun]) -> dict:
    """Spread across seeds of one arm.

    Returns:
        ``final_mean``, ``final_std`` (ddof=1), ``final_range`` (max − min) of the final
        validation metric; the same for the best metric and the test metric (when present);
        ``curve_std_mean``: the across-seed std averaged over all validation points (the mean
        width of the band); ``curve_std_late``: the same over the second half of the points.
    """
    if not runs:
        raise ValueError("stability needs at least one run")
    band = curve_band([r.curve for r in runs])
    out = {"seeds": len(runs)}
    for name, vals in (("final", [r.final for r in runs]), ("best", [r.best for r in runs]),
                       ("test", [r.test for r in runs if r.test is not None])):
        if not vals:
            continue
        v = np.asarray(vals, float)
        out[f"{name}_mean"] = float(v.mean())
        out[f"{name}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out[f"{name}_range"] = float(v.max() - v.min())
    out["curve_std_mean"] = float(band["std"].mean())
    half = len(band["std"]) // 2
    out["curve_std_late"] = float(band["std"][half:].mean())
    return out


def parameter_changes(init: dict, final: dict) -> dict[str, dict]:
    """Per data-model parameter group: how far training moved it.

    Returns:
        ``{group: {"init", "final", "max_abs_change", "rel_change"}}`` where ``rel_change`` is
        ``‖final − init‖ / ‖init‖`` (Frobenius; ``‖final − init‖`` when ``init`` is zero).

    Example:
        >>> parameter_changes({"gamma": [2.0]}, {"gamma": [1.5]})["gamma"]["rel_change"]
        0.25
    """
    out = {}
    for name, a in init.items():
        a0, a1 = np.asarray(a, float), np.asarray(final[name], float)
        diff = a1 - a0
        norm = float(np.linalg.norm(a0))
        out[name] = {"init": a, "final": final[name], "max_abs_change": float(np.abs(diff).max()),
                     "rel_change": float(np.linalg.norm(diff) / norm) if norm > 0 else float(np.linalg.norm(diff))}
    return out


def summarise(runs: dict[str, list[ArmRun]], target: float | None = None, target_fraction: float = 0.9,
              n_boot: int = 2000, boot_seed: int = 0, dataset: str | None = None) -> dict:
    """The measurements of an experiment, JSON-ready.

    Args:
        runs: ``{arm: [ArmRun per seed]}`` from :func:`run_arms`.
        target: metric to reach for ``steps_to_target``; default ``target_fraction`` times the
            best final mean over the arms (a target every arm could plausibly reach).
        n_boot: bootstrap resamples of :func:`paired_statistics` (0: none; needs per-item test scores).
        dataset: the data set, to judge its :data:`PAPER_CLAIMS` (``"claims"``).

    Returns:
        ``{"metric", "target", "arms": {arm: {stability..., "steps", "mean", "std",
        "steps_to_target": [per seed], "reached": k, "median_steps_to_target"}},
        "params": {group: {"rel_change_mean", "max_abs_change_mean"}},
        "learned_minus_frozen": {...}}`` (point differences of the means), and with ``n_boot``
        the ``"statistics"`` and ``"tests"`` of :func:`paired_statistics` and the ``"claims"``.
    """
    if not runs:
        raise ValueError("summarise needs runs")
    metric = next(iter(runs.values()))[0].metric
    stab = {arm: stability(rs) for arm, rs in runs.items()}
    if target is None:
        target = target_fraction * max(s["final_mean"] for s in stab.values())
    arms = {}
    for arm, rs in runs.items():
        band = curve_band([r.curve for r in rs])
        reach = [steps_to_target(r.steps, r.curve, target) for r in rs]
        hit = [s for s in reach if s is not None]
        arms[arm] = {**stab[arm], "steps": list(rs[0].steps), "mean": band["mean"].tolist(),
                     "std": band["std"].tolist(), "steps_to_target": reach, "reached": len(hit),
                     "median_steps_to_target": float(np.median(hit)) if hit else None,
                     "seconds": float(sum(r.seconds for r in rs)), "cached": all(r.cached for r in rs)}
    out = {"metric": metric, "target": float(target), "arms": arms}
    learned = runs.get("learned")
    if learned and learned[0].init_params:
        changes = [parameter_changes(r.init_params, r.final_params) for r in learned]
        out["params"] = {g: {"rel_change_mean": float(np.mean([c[g]["rel_change"] for c in changes])),
                             "max_abs_change_mean": float(np.mean([c[g]["max_abs_change"] for c in changes]))}
                         for g in changes[0]}
    if "learned" in stab and "frozen" in stab:
        out["learned_minus_frozen"] = {
            k: stab["learned"][k] - stab["frozen"][k] for k in ("final_mean", "best_mean", "test_mean")
            if k in stab["learned"] and k in stab["frozen"]}
    if n_boot and all(r.test_items for rs in runs.values() for r in rs):
        out.update(arm_statistics(runs, n_boot=n_boot, seed=boot_seed))
        if dataset is not None:
            out["claims"] = judge_optimisation(dataset, out["statistics"])
    return out


#: The paper's drift-optimisation claims per data set (:data:`drifthelpers.claims.OPTIMISATION_CLAIMS`),
#: the paired statistics that judge them and the judging (:mod:`drifthelpers.claims`).
PAPER_CLAIMS = OPTIMISATION_CLAIMS
paired_statistics = arm_statistics
judge_claims = judge_optimisation


def config_for(dataset: str, profile: str = "quick", **overrides) -> JointConfig:
    """The :class:`JointConfig` of a profile (:mod:`drifthelpers.profiles`) for a data set, with overrides
    (``fidelity="raw2logit"``: the profile's public protocol, :func:`~drifthelpers.optimisation_fidelity.protocol`)."""
    return JointConfig(dataset=dataset, **{**settings("optimisation", profile, dataset),
                                           **_fidelity.protocol(profile, overrides), **overrides})



ARM_LABELS = {"learned": "learned ISP (joint)", "frozen": "frozen ISP (bi,s,ga)", "raw_direct": "raw direct (no ISP)"}
ARM_COLOURS = {"learned": "tab:orange", "frozen": "tab:blue", "raw_direct": "tab:green"}


def stability_rows(summary: dict) -> list[dict]:
    """One flat row per arm of a :func:`summarise` result (for a table or a DataFrame)."""
    rows = []
    for arm, a in summary["arms"].items():
        rows.append({"arm": arm, "seeds": a["seeds"], "final": a["final_mean"], "final_std": a["final_std"],
                     "final_range": a["final_range"], "best": a["best_mean"], "best_std": a["best_std"],
                     "test": a.get("test_mean"), "test_std": a.get("test_std"),
                     "band_width": a["curve_std_mean"], "band_width_late": a["curve_std_late"],
                     "reached_target": f"{a['reached']}/{a['seeds']}",
                     "median_steps_to_target": a["median_steps_to_target"]})
    return rows


def plot_curves(summary: dict, ax=None, title: str = ""):
    """Validation curves of every arm: mean across seeds with a ± 1 std band, and the target line."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.4))
    for arm, a in summary["arms"].items():
        steps, mean, std = np.asarray(a["steps"]), np.asarray(a["mean"]), np.asarray(a["std"])
        colour = ARM_COLOURS.get(arm)
        ax.plot(steps, mean, "-o", ms=3, color=colour, label=f"{ARM_LABELS.get(arm, arm)} (n={a['seeds']})")
        ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2, lw=0)
    ax.axhline(summary["target"], color="0.5", ls=":", lw=1, label=f"target {summary['target']:.2f}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(f"validation {summary['metric']}")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title)
    return fig or ax.figure
