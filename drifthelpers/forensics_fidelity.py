"""Drift forensics in each data-model fidelity: the public code's search for ``"raw2logit"``.

:mod:`drifthelpers.forensics` implements the *corrected* protocol (the default fidelity,
``"corrected"``): a bounded, projected gradient search on the held-out split itself, the mean
squared difference as the closeness term, Adam step sizes as a fraction of each group's bound
width, and the best configuration evaluated reported. In ``"raw2logit"`` this module computes
what the paper's public code (``aiaudit-org/raw2logit``, ``train.py --adv_training``) did:

* **Data model**: the public parametrized model
  (:class:`drifthelpers.isp.raw2logit.Raw2LogitParametrizedDataModel`, 132 unbounded scalars)
  on the mosaic divided by its full scale (:func:`drifthelpers.isp.raw2logit.full_scale_input`),
  its output ``BatchNorm2d(3, affine=False)`` in **eval mode** with its initial running
  statistics (mean 0, variance 1): the public search built a fresh processor and its
  ``LitModel.train`` kept the processor in eval mode during adversarial training, so the
  BatchNorm only divides by ``sqrt(1 + 1e-5)``.
* **Task model**: the one trained on the ``"raw2logit"`` static ``bi,s,ga`` view
  (:func:`drifthelpers.synthesis.trained_model` with ``SynthesisConfig(fidelity="raw2logit")``,
  its inputs standardised inside the model), frozen.
* **Objective**: ``-CE + λ · Σ (φ_θ(x) - φ_ref(x))²`` minimised, the sum of squares over the
  whole batch (``forensics.dissimilarity(..., "sse")``, the public ``l2_regularization``), λ
  over :data:`drifthelpers.forensics.PUBLIC_LAMBDAS`.
* **Optimiser**: ``torch.optim.Adam`` with one learning rate for every searched parameter and
  no weight decay (``LitModel.configure_optimizers``), the public script's ``--lr 1e-3`` for
  ``--epochs 7`` (``figures/train.sh``, the adversarial command that sets the flags the search
  requires) on shuffled **training** batches of 32 (the default ``--batch_size``); no
  projection (the parameters are unbounded), no early stop, the **final** configuration kept.
* **Reported**: the metric of that configuration on the **held-out** split (the public
  validation loop after every epoch; the last epoch's value is the result).

The committed public code does not run this search as written (its ``AuxLoss`` reads
``self.processor``, an attribute it lacks); what is computed here is its evident intent, the
penalty between the adversarial processor's output and the reference processor's.

Example:
    >>> search = make_problem(micro, train_idx, model, config, fidelity="raw2logit")   # doctest: +SKIP
    >>> holdout = make_problem(micro, test_idx, model, config, fidelity="raw2logit")   # doctest: +SKIP
    >>> result = public_search(search, holdout, "black_level", lam=1e-4)              # doctest: +SKIP
    >>> result.metric, holdout.reference_metric                                       # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .forensics import ALL, GROUPS, PUBLIC_LAMBDAS, ForensicsProblem, SearchResult, dissimilarity
from .forensics import _check_groups as _groups

__all__ = ["FIDELITIES", "PUBLIC_LR", "PUBLIC_EPOCHS", "PUBLIC_BATCH_SIZE", "PublicSearchResult", "make_problem",
           "public_groups", "public_search", "public_sweep"]

FIDELITIES: tuple[str, ...] = ("corrected", "raw2logit")
#: The public adversarial search's Adam learning rate (``figures/train.sh``: ``--lr 1e-3``).
PUBLIC_LR = 1e-3
#: Its epochs over the training split (``--epochs 7``).
PUBLIC_EPOCHS = 7
#: Its batch size (``train.py``'s default ``--batch_size 32``).
PUBLIC_BATCH_SIZE = 32


def _check_fidelity(fidelity: str) -> str:
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
    return fidelity


def make_problem(dataset, indices, task_model, config, preset: str = "bi,s,ga",
                 fidelity: str = "corrected") -> ForensicsProblem:
    """The frozen pipeline of notebook 04 for some items of a classification data set.

    Args:
        dataset: a raw data set (items with ``raw`` (1, H, W) in DN, ``targets``, ``camera``).
        indices: the items to probe (one batch).
        task_model: the trained task model.
        config: its :class:`drifthelpers.synthesis.SynthesisConfig` (``image_size``).
        preset: the view the task model was trained on; its demosaicer is the data model's
            (``"corrected"``); ``"raw2logit"`` reproduces ``bi,s,ga`` only.
        fidelity: ``"corrected"``: :class:`drifthelpers.isp.ParametrizedDataModel` on the mosaic
            in DN; ``"raw2logit"``: the public parametrized model on the mosaic over its full
            scale (float32, the task model's dtype).

    Returns:
        A :class:`drifthelpers.forensics.ForensicsProblem` (classification).
    """
    from . import isp
    from .isp.raw2logit import full_scale_input

    raw = torch.stack([dataset[int(i)]["raw"] for i in indices])
    targets = torch.as_tensor([dataset.targets[int(i)] for i in indices])
    camera = isp.CameraParams.from_dataset_camera(dataset.camera)
    if _check_fidelity(fidelity) == "corrected":
        data_model = isp.ParametrizedDataModel(camera, demosaic=isp.parse_preset(preset)[0])
    else:
        if preset != "bi,s,ga":
            raise ValueError(f"the raw2logit parametrized model reproduces 'bi,s,ga' only, got {preset!r}")
        raw, camera = full_scale_input(raw, camera)
        raw = raw.float()
        data_model = isp.parametrized_data_model(camera, "raw2logit")
    return ForensicsProblem(data_model, task_model, raw, targets, image_size=config.image_size)


def public_groups(problem: ForensicsProblem) -> list[str]:
    """The labels the public figure searched: each of :data:`~drifthelpers.forensics.GROUPS`
    the data model has, then ``"all"`` (every parameter, the learnable debayer included)."""
    known = problem.data_model.param_groups()
    return [g for g in GROUPS if g in known] + [ALL]


@dataclass
class PublicSearchResult(SearchResult):
    """A :class:`drifthelpers.forensics.SearchResult` of the public protocol.

    ``state`` is the final configuration; ``metric``, ``loss``, ``mse``, ``rms``,
    ``dissimilarity`` (the sum of squares) and ``objective`` are its scores on the held-out
    problem, ``reference_metric`` the held-out reference; ``trace`` has one row per training
    batch (``epoch``, ``objective``, ``loss``, ``metric`` of the batch, ``distance`` its sum of
    squares, ``mse``, ``items`` the batch's positions in the search problem) and
    ``evaluations`` counts them.

    Attributes:
        lr, epochs, batch_size: the optimiser's settings.
        search_items, scored_items: items of the search (training) and the held-out problem.
        holdout_trace: the held-out scores after every epoch (``epoch``, ``loss``, ``metric``,
            ``mse``, ``rms``, ``distance``).
    """

    lr: float = PUBLIC_LR
    epochs: int = PUBLIC_EPOCHS
    batch_size: int = PUBLIC_BATCH_SIZE
    search_items: int = 0
    scored_items: int = 0
    holdout_trace: list = field(default_factory=list)

    def to_dict(self, trace: bool = False) -> dict:
        out = super().to_dict(trace)
        out.update(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size, search_items=self.search_items,
                   scored_items=self.scored_items, holdout_trace=self.holdout_trace)
        return out


def _batch_loss(problem: ForensicsProblem, rgb: Tensor, items: Tensor) -> tuple[Tensor, float]:
    """Task loss (differentiable) and metric of a batch of the problem's items; one evaluation."""
    from .synthesis import resize_image

    problem.evaluations += 1
    out = problem.task_model(resize_image(rgb, problem.image_size))
    targets = problem.targets[items]
    if problem.task == "classification":
        return F.cross_entropy(out, targets), float((out.detach().argmax(1) == targets).float().mean())
    from .training import iou

    return F.binary_cross_entropy_with_logits(out, targets), iou(out.detach() > 0, targets > 0.5)


def _check_search(search: ForensicsProblem, holdout: ForensicsProblem, lam, lr, epochs, batch_size) -> None:
    if search.task != holdout.task or search.image_size != holdout.image_size:
        raise ValueError("the search and held-out problems must share the task and the image size")
    if set(search.reference_state) != set(holdout.reference_state):
        raise ValueError("the search and held-out problems must have data models with the same groups")
    if not (lam >= 0 and math.isfinite(lam)) or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lam must be finite and >= 0 and lr finite and > 0, got {lam}, {lr}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")


def _snapshot(problem: ForensicsProblem) -> dict:
    return {name: p.detach().clone() for name, (p,) in problem.data_model.param_groups().items()}


def public_search(search: ForensicsProblem, holdout: ForensicsProblem, groups: str | Sequence[str] = ALL,
                  lam: float = 1e-4, lr: float = PUBLIC_LR, epochs: int = PUBLIC_EPOCHS,
                  batch_size: int = PUBLIC_BATCH_SIZE, seed: int = 0) -> PublicSearchResult:
    """The public code's adversarial search: Adam on training batches, scored on held-out items.

    Every epoch visits the items of ``search`` once in a random order (a generator seeded with
    ``seed``), in batches of ``batch_size``; each batch takes one Adam step (learning rate
    ``lr`` for every searched parameter) down ``-CE + lam * SSE``, SSE the sum of squared
    differences from the reference view over the whole batch. After every epoch the current
    configuration is scored on ``holdout``; the last one is the result. The data model's
    ``project_()`` follows every step (a no-op for the public model, whose parameters are
    unbounded); its BatchNorm, if any, stays in eval mode.

    Args:
        search: the problem of the training items (its ``rgb_ref`` is the reference view).
        holdout: the problem of the held-out items, with the same task model and image size.
        groups: a group name, a list of names, or ``"all"``.
        lam: penalty weight λ ≥ 0 (the public grid: :data:`~drifthelpers.forensics.PUBLIC_LAMBDAS`).

    Returns:
        A :class:`PublicSearchResult`. Both problems are left at their reference.
    """
    groups = _groups(search, groups)
    _check_search(search, holdout, lam, lr, epochs, batch_size)
    dm = search.data_model.eval()
    t0 = time.perf_counter()
    search.reset()
    was = {name: p.requires_grad for name, (p,) in dm.param_groups().items()}
    dm.freeze_all_but(*groups)
    opt = torch.optim.Adam([p for g in groups for p in dm.param_groups()[g]], lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(int(seed))
    n, trace, held = len(search.raw), [], []
    try:
        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                items = order[start : start + batch_size]
                rgb = dm(search.raw[items])
                loss, metric = _batch_loss(search, rgb, items)
                d = dissimilarity(rgb, search.rgb_ref[items], "sse")
                objective = loss - lam * d
                opt.zero_grad(set_to_none=True)
                (-objective).backward()
                opt.step()
                dm.project_()
                trace.append({"epoch": epoch, "objective": float(objective.detach()), "loss": float(loss.detach()),
                              "metric": metric, "distance": float(d.detach()), "mse": float(d.detach()) / rgb.numel(),
                              "items": items.tolist()})
            e = holdout.evaluate(_snapshot(search), distance="sse")
            held.append({"epoch": epoch, **e})
    finally:
        for name, (p,) in dm.param_groups().items():
            p.requires_grad_(was[name])
    state = _snapshot(search)
    search.reset()
    holdout.reset()
    last = held[-1]
    label = ALL if set(groups) == set(search.groups) and len(groups) > 1 else "+".join(groups)
    return PublicSearchResult(
        method="public", groups=groups, label=label, lam=float(lam), distance="sse", state=state,
        metric=last["metric"], loss=last["loss"], mse=last["mse"], rms=last["rms"], dissimilarity=last["distance"],
        objective=last["loss"] - lam * last["distance"], reference_metric=holdout.reference_metric,
        evaluations=len(trace), trace=trace, stopped_early=False, seconds=time.perf_counter() - t0, lr=float(lr),
        epochs=int(epochs), batch_size=int(batch_size), search_items=n, scored_items=len(holdout.raw),
        holdout_trace=held)


def public_sweep(search: ForensicsProblem, holdout: ForensicsProblem, lambdas: Sequence[float] = PUBLIC_LAMBDAS,
                 groups: Sequence[str] | None = None, progress: bool = False, **search_kw) -> list[PublicSearchResult]:
    """:func:`public_search` for every group label (default :func:`public_groups`) and every λ.

    Returns:
        One result per (group, λ), groups outer (the order of
        :func:`drifthelpers.forensics.lambda_sweep`).
    """
    labels = list(groups) if groups is not None else public_groups(search)
    jobs = [(g, lam) for g in labels for lam in lambdas]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="λ sweep (public protocol)", leave=False)
    return [public_search(search, holdout, g, lam=float(lam), **search_kw) for g, lam in jobs]
