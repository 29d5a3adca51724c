"""Fit and evaluate task models on raw data rendered on the fly by a data model.

The path of every batch: raw mosaic (B, 1, H, W) in DN → data model (static preset
or parametrized ISP) → RGB (B, 3, H, W) → weak augmentation (flips and 90°
rotations, applied to masks too, *after* the data model so the CFA phase the
data model sees is never disturbed) → task model → loss.

Also here: metrics (accuracy and macro-F1; IoU), explicit seeding, and a
checkpoint cache keyed by the full configuration so that re-running a notebook
reuses trained models (state dicts only, checksummed, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from .fileio import atomic_write_bytes, atomic_write_text

__all__ = [
    "resolve_device",
    "seed_everything",
    "weak_augment",
    "confusion_matrix",
    "accuracy",
    "macro_f1",
    "iou",
    "TrainConfig",
    "History",
    "fit",
    "train_epoch",
    "loss_function",
    "evaluate",
    "predict",
    "CheckpointCache",
    "config_key",
]


# --------------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device = "auto") -> str:
    """The device to compute on: ``"auto"`` picks ``"cuda"`` when a GPU is usable, then Apple's
    ``"mps"``, else ``"cpu"``.

    Raises:
        ValueError: an unknown device name, or ``"cuda"``/``"mps"`` asked for where it is not usable.
    """
    name = str(device).strip().lower()
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu"
    try:
        kind = torch.device(name).type
    except RuntimeError as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {device!r}") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but PyTorch sees no usable GPU here; use 'cpu' or 'auto'")
    if kind == "mps" and not mps_ok:
        raise ValueError(f"device {device!r} is not usable here: PyTorch sees no Apple GPU (MPS); "
                         "device must be 'auto', 'cpu', or a usable 'cuda[:N]' or 'mps'")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {device!r}")
    return name


# --------------------------------------------------------------------------- seeds


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch Generator seeded the same way.

    Call it explicitly at the start of a notebook or experiment (the package
    never seeds at import time).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    return torch.Generator().manual_seed(int(seed))


# --------------------------------------------------------------------------- augmentation


def weak_augment(
    images: torch.Tensor, masks: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The paper's weak augmentation: random flips and 90° rotations, per sample.

    Each sample gets one of the 8 symmetries of the square (the dihedral group
    D4), drawn uniformly; a mask, when given, gets the same one.

    Args:
        images: (B, C, H, W), H == W for rotations to keep the shape.
        masks: optional (B, K, H, W).
        generator: torch Generator for reproducible draws.

    Returns:
        ``(images, masks)`` transformed (``masks`` is ``None`` when not given).
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"weak_augment needs square images for 90° rotations, got {tuple(images.shape[-2:])}")
    if masks is not None and (masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]):
        raise ValueError(f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
    codes = torch.randint(0, 8, (images.shape[0],), generator=generator)
    out_i, out_m = [], []
    for b, code in enumerate(codes.tolist()):
        k, flip = code % 4, code >= 4
        x = images[b]
        x = torch.flip(x, dims=(-1,)) if flip else x
        out_i.append(torch.rot90(x, k, dims=(-2, -1)))
        if masks is not None:
            m = masks[b]
            m = torch.flip(m, dims=(-1,)) if flip else m
            out_m.append(torch.rot90(m, k, dims=(-2, -1)))
    return torch.stack(out_i), (torch.stack(out_m) if masks is not None else None)


# --------------------------------------------------------------------------- metrics


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``C[i, j]`` of samples of true class i predicted as j."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    idx = target * num_classes + pred
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of correct predictions."""
    if pred.numel() == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((pred.reshape(-1) == target.reshape(-1)).float().mean())


def macro_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in target or prediction."""
    cm = confusion_matrix(pred, target, num_classes).double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    present = (support + predicted) > 0
    f1 = torch.where(present, 2 * tp / (support + predicted).clamp_min(1), torch.zeros_like(tp))
    return float(f1[present].mean()) if present.any() else 0.0


def iou(pred_mask: torch.Tensor, target_mask: torch.Tensor) -> float:
    """Intersection over union of two binary masks, pooled over the whole set.

    An empty union (no positives anywhere) counts as a perfect 1.0.
    """
    p, t = pred_mask.bool(), target_mask.bool()
    union = (p | t).sum()
    if union == 0:
        return 1.0
    return float((p & t).sum().double() / union.double())


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained task model (and so its cache key).

    Attributes:
        task: ``"classification"`` or ``"segmentation"``.
        model: a name from :data:`drifthelpers.models.TASK_MODELS`.
        epochs, batch_size, lr, weight_decay: optimiser settings (Adam).
        seed: seed of initialisation, shuffling and augmentation.
        augment: ``"weak"`` (flips and 90° rotations) or ``"none"``.
        data_model: label of the data model the task model trains on (a preset,
            ``"learned"``, ...); part of the key only.
        data_lr: learning rate of a learnable data model (0 = frozen).
        schedule: ``"constant"`` learning rate (the paper) or ``"cosine"`` annealing to
            zero over the epochs (steadier last-epoch models in short runs).
        extra: anything else that identifies the data (data set fingerprint,
            split seed, intensity, ...), as JSON-ready values.
    """

    task: str = "classification"
    model: str = "small_cnn"
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    augment: str = "weak"
    data_model: str = "bi,s,ga"
    data_lr: float = 0.0
    schedule: str = "constant"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in ("classification", "segmentation"):
            raise ValueError(f"task must be 'classification' or 'segmentation', got {self.task!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.augment not in ("weak", "none"):
            raise ValueError(f"augment must be 'weak' or 'none', got {self.augment!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.data_lr < 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0, data_lr and weight_decay >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def config_key(config: TrainConfig | dict, version: str = "1") -> str:
    """A stable 16-hex-digit key for a configuration (canonical JSON, SHA-256)."""
    payload = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    text = json.dumps({"v": version, "config": payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class History:
    """Per-epoch training loss and validation metrics."""

    train_loss: list[float] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"train_loss": self.train_loss, "val": self.val}

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(list(d.get("train_loss", [])), list(d.get("val", [])))


# --------------------------------------------------------------------------- loops


def loss_function(task: str) -> Callable:
    """The training loss of a task: cross-entropy (classification) or Dice on mask logits (segmentation)."""
    if task == "classification":
        return nn.CrossEntropyLoss()
    from segmentation_models_pytorch.losses import DiceLoss

    return DiceLoss(mode="binary", from_logits=True)


_loss_fn = loss_function  # the name benchmarks/bench_gpu.py imports


def _batches(loader: Iterable, device) -> Iterable[tuple[torch.Tensor, torch.Tensor, bool]]:
    """Yield ``(inputs, target, is_raw)``: items carry a raw mosaic (``raw``) or an
    already rendered view (``rgb``, which bypasses the data model)."""
    for batch in loader:
        is_raw = "raw" in batch
        x = (batch["raw"] if is_raw else batch["rgb"]).to(device)
        target = batch["label"] if "label" in batch else batch["mask"]
        yield x, target.to(device), is_raw


def _render(data_model: nn.Module, x: torch.Tensor, is_raw: bool) -> torch.Tensor:
    return data_model(x) if is_raw else x


def _progress(iterable, enabled: bool, **kw):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)


def predict(task_model: nn.Module, data_model: nn.Module, loader: Iterable, device="cpu", transform=None):
    """Run data model and task model over a loader; returns (predictions, targets).

    Classification: class indices. Segmentation: binary masks (logit > 0).
    ``transform`` (optional) is applied to the rendered RGB batch (e.g. a corruption).
    """
    task_model.eval()
    data_model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for x, target, is_raw in _batches(loader, device):
            rgb = _render(data_model, x, is_raw)
            if transform is not None:
                rgb = transform(rgb)
            out = task_model(rgb)
            preds.append(out.argmax(1) if out.ndim == 2 else (out > 0).to(torch.uint8))
            targets.append(target if target.ndim == 1 else (target > 0.5).to(torch.uint8))
    return torch.cat(preds).cpu(), torch.cat(targets).cpu()


def evaluate(task_model: nn.Module, data_model: nn.Module, loader: Iterable, task: str, num_classes: int = 9,
             device="cpu", transform=None) -> dict:
    """Metrics of a task model on a loader rendered by a data model.

    Returns:
        ``{"accuracy", "macro_f1"}`` for classification, ``{"iou"}`` for segmentation.
    """
    pred, target = predict(task_model, data_model, loader, device=device, transform=transform)
    if task == "classification":
        return {"accuracy": accuracy(pred, target), "macro_f1": macro_f1(pred, target, num_classes)}
    if task == "segmentation":
        return {"iou": iou(pred, target)}
    raise ValueError(f"task must be 'classification' or 'segmentation', got {task!r}")


def train_epoch(task_model: nn.Module, data_model: nn.Module, batches: Iterable, opt: torch.optim.Optimizer,
                loss_fn: Callable, task: str, augment: str, generator: torch.Generator | None, *,
                render_grad: bool = False, data_train: bool = False, project: Callable[[], None] | None = None,
                after_step: Callable[[float, int], None] | None = None) -> None:
    """One pass over ``batches``, one optimiser step per batch: the training loop of every experiment.

    Each step: task model in training mode, data model in ``data_train`` mode; render the
    batch (a raw mosaic through the data model, an already rendered view as it is), with
    gradients only when ``render_grad``; weak augmentation (``augment == "weak"``, draws from
    ``generator``, masks moved with their images); forward, loss, backward, ``opt.step()``;
    then ``project()`` (e.g. a learned data model's ``project_``, keeping its parameters
    inside their bounds) and ``after_step(loss, batch_size)`` (bookkeeping, validation).
    The step touches no random numbers besides ``generator``'s.

    Args:
        batches: ``(inputs, target, is_raw)`` triples (see :func:`_batches`), on the device.
        task: ``"classification"`` (class-index targets) or ``"segmentation"`` (mask targets).
    """
    for x, target, is_raw in batches:
        task_model.train()
        data_model.train(data_train)
        if render_grad:
            rgb = _render(data_model, x, is_raw)
        else:
            with torch.no_grad():
                rgb = _render(data_model, x, is_raw)
        mask = target.float() if task == "segmentation" else None
        if augment == "weak":
            rgb, mask = weak_augment(rgb, mask, generator=generator)
        out = task_model(rgb)
        loss = loss_fn(out, mask if mask is not None else target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if project is not None:
            project()
        if after_step is not None:
            after_step(float(loss.detach()), x.shape[0])


def fit(
    task_model: nn.Module,
    data_model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    config: TrainConfig,
    num_classes: int = 9,
    device="cpu",
    progress: bool = True,
    generator: torch.Generator | None = None,
    val_every: int = 1,
) -> History:
    """Train a task model (and, when ``config.data_lr > 0``, the data model too).

    Adam on the task model with ``config.lr``; when the data model has
    parameters and ``config.data_lr > 0`` they join with their own learning
    rate, and ``data_model.project_()`` (if it has one) keeps them inside their
    bounds after every step. Otherwise the data model runs under ``no_grad``.
    Each epoch is one :func:`train_epoch`. The validation set is scored every
    ``val_every`` epochs and after the last one (scoring uses no random numbers and
    changes no weight, so it never alters training).

    Returns:
        The :class:`History` of per-epoch training loss and validation metrics.
    """
    if val_every < 1:
        raise ValueError(f"val_every must be >= 1, got {val_every}")
    task_model.to(device)
    data_model.to(device)
    loss_fn = loss_function(config.task)
    groups = [{"params": [p for p in task_model.parameters() if p.requires_grad], "lr": config.lr}]
    learn_data = config.data_lr > 0 and any(p.requires_grad for p in data_model.parameters())
    if learn_data:
        groups.append({"params": [p for p in data_model.parameters() if p.requires_grad], "lr": config.data_lr})
    opt = torch.optim.Adam(groups, weight_decay=config.weight_decay)
    scheduler = None
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    gen = generator if generator is not None else torch.Generator().manual_seed(config.seed)
    project = data_model.project_ if learn_data and hasattr(data_model, "project_") else None
    history = History()
    epochs = _progress(range(config.epochs), progress, desc=f"train {config.data_model}", leave=False)
    for epoch in epochs:
        sums = [0.0, 0]  # loss x samples, samples

        def tally(loss: float, n: int, sums=sums) -> None:
            sums[0] += loss * n
            sums[1] += n

        train_epoch(task_model, data_model, _batches(train_loader, device), opt, loss_fn, config.task,
                    config.augment, gen, render_grad=learn_data, data_train=learn_data, project=project,
                    after_step=tally)
        if scheduler is not None:
            scheduler.step()
        history.train_loss.append(sums[0] / max(sums[1], 1))
        if val_loader is not None and ((epoch + 1) % val_every == 0 or epoch + 1 == config.epochs):
            metrics = evaluate(task_model, data_model, val_loader, config.task, num_classes, device)
            history.val.append(metrics)
            if progress and hasattr(epochs, "set_postfix"):
                epochs.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()})
    task_model.eval()
    data_model.eval()
    return history


# --------------------------------------------------------------------------- checkpoint cache

_CACHE_FORMAT = 2  # the JSON holds {"format", "checkpoint_sha256", "meta"}


class CheckpointCache:
    """Trained state dicts on disk, keyed by the full configuration.

    Files: ``<root>/<key>.pt`` (a dict of state dicts and tensors only, so it loads with
    ``torch.load(weights_only=True)``) and ``<key>.json`` (the configuration and history,
    human-readable, with the SHA-256 of the ``.pt`` file). Both are written atomically,
    the ``.pt`` first, so the JSON commits the entry.

    Loading trusts nothing on disk: the checksum is verified, the state dicts are loaded
    into scratch copies of the modules, and the real modules are changed only when every
    state dict fits. A damaged or mismatched entry is reported with a warning naming the
    file and treated as a miss, leaving the modules exactly as they were (so the retrain
    that follows starts from the same freshly seeded weights).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.pt", self.root / f"{key}.json"

    def has(self, key: str) -> bool:
        pt, js = self._paths(key)
        return pt.is_file() and js.is_file()

    def save(self, key: str, modules: dict[str, nn.Module], meta: dict) -> None:
        """Store the state dicts of ``modules`` (on the CPU) and ``meta`` under ``key``."""
        self.root.mkdir(parents=True, exist_ok=True)
        pt, js = self._paths(key)
        # on the CPU, so that a model trained on a GPU loads anywhere
        states = {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
        buf = io.BytesIO()
        torch.save(states, buf)
        data = buf.getvalue()
        record = {"format": _CACHE_FORMAT, "checkpoint_sha256": hashlib.sha256(data).hexdigest(), "meta": meta}
        text = json.dumps(record, indent=1, default=str)  # before any file is touched
        atomic_write_bytes(pt, data)
        atomic_write_text(js, text + "\n")

    def _damaged(self, path: Path, why: str) -> None:
        warnings.warn(f"checkpoint cache entry {path} is unusable ({why}); it is ignored and the model "
                      "is trained again", RuntimeWarning, stacklevel=3)

    def _read(self, key: str) -> tuple[dict, dict] | None:
        pt, js = self._paths(key)
        try:
            record = json.loads(js.read_text())
        except (OSError, ValueError) as exc:
            self._damaged(js, f"unreadable record: {type(exc).__name__}: {exc}")
            return None
        if not (isinstance(record, dict) and record.get("format") == _CACHE_FORMAT
                and isinstance(record.get("checkpoint_sha256"), str) and "meta" in record):
            self._damaged(js, "no checksum recorded (an older or foreign format)")
            return None
        digest, meta = record["checkpoint_sha256"], record["meta"]
        try:
            data = pt.read_bytes()
        except OSError as exc:
            self._damaged(pt, f"{type(exc).__name__}: {exc}")
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            self._damaged(pt, "its SHA-256 differs from the one recorded in " + js.name)
            return None
        try:
            states = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # refused pickles land here too (weights_only)
            self._damaged(pt, f"{type(exc).__name__}: {exc}")
            return None
        return states, meta

    def load(self, key: str, modules: dict[str, nn.Module]) -> dict | None:
        """Load the entry ``key`` into ``modules``; return its meta, or ``None`` on a miss.

        A missing entry is a silent miss. A damaged one (checksum, unreadable file, a state
        dict that does not fit a module) warns with :class:`RuntimeWarning` naming the file
        and is a miss too; ``modules`` are then left untouched.
        """
        if not self.has(key):
            return None
        found = self._read(key)
        if found is None:
            return None
        states, meta = found
        scratch = {}
        for name, module in modules.items():
            try:
                if not isinstance(states, dict) or name not in states:
                    raise KeyError(f"no state dict for {name!r}")
                trial = copy.deepcopy(module)
                trial.load_state_dict(states[name], strict=True)
            except Exception as exc:
                self._damaged(self._paths(key)[0], f"does not fit module {name!r}: {type(exc).__name__}: {exc}")
                return None
            scratch[name] = trial
        for name, module in modules.items():
            module.load_state_dict(scratch[name].state_dict(), strict=True)
        return meta
