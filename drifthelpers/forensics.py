"""Drift forensics: search the data model's parameters for settings that break a frozen task model.

The second drift control of the paper. The task model is frozen; the parametrized data model
(:class:`drifthelpers.isp.ParametrizedDataModel`) is the only thing that moves. For the
images ``x`` of a held-out split we *maximise*

    J(θ) = L(task(resize(φ_θ(x))), y) − λ · d(φ_θ(x), φ_ref(x))

over the parameters θ of one group of the data model (or all of them), where ``L`` is the task
loss (cross-entropy), ``φ_ref`` the reference data model (the static ``bi,s,ga`` view the task
model was trained on) and ``d`` a dissimilarity of the full-resolution sRGB images: the mean
squared RGB difference (``"mse"``, the paper's penalty) or ``1 − SSIM`` (``"ssim"``). Both are
0 at the reference and grow as the image moves away, so the penalty is *subtracted*: a large λ
keeps the search near the reference. (The public code added the SSIM term with the wrong sign,
which rewarded moving away.) Every Adam step is followed by the data model's ``project_()``,
so every evaluated configuration is physically meaningful (gains > 0, gamma ≥ 1, kernels that
sum to 1, ...).

The search is deterministic (it starts at the reference and uses no randomness), counts every
task-model evaluation, stops early when the objective stalls, and returns the best
configuration it evaluated (the reference itself is evaluation 1, so a huge λ returns the
reference exactly). A random-search baseline spends the same number of evaluations on random
configurations in the same bounded space.

The *operating envelope* answers the practical question "how far may each stage drift before
the model suffers?": one parameter (or one 1-D path through a kernel or matrix) at a time,
others at the reference, the contiguous range around the reference value in which the metric
stays within a tolerance of the reference metric. It is written as a JSON specification and
printed as a table (:mod:`drifthelpers.envelope`; ``python -m drifthelpers forensics``,
:mod:`drifthelpers.cli_forensics`).

Example:
    >>> problem = ForensicsProblem(data_model, task_model, raw, labels, image_size=64)  # doctest: +SKIP
    >>> result = gradient_search(problem, "black_level", lam=100.0, steps=20)          # doctest: +SKIP
    >>> result.metric, problem.reference_metric                                        # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .claims import FORENSICS_CLAIMS, judge_forensics
from .envelope import EnvelopeAxis, envelope_axes, envelope_table, operating_envelope, plot_envelope

__all__ = [
    "GROUPS",
    "PUBLIC_LAMBDAS",
    "ForensicsProblem",
    "SearchResult",
    "dissimilarity",
    "gradient_search",
    "random_search",
    "lambda_sweep",
    "compare_search",
    "best_so_far",
    "harm_vs_change",
    "most_harmful",
    "item_scores",
    "harm_statistics",
    "judge_claims",
    "PAPER_CLAIMS",
    "EnvelopeAxis",
    "envelope_axes",
    "operating_envelope",
    "envelope_table",
    "save_json",
    "plot_lambda_curves",
    "plot_search_budget",
    "plot_harm_vs_change",
    "plot_envelope",
]

#: The parameter groups of the data model searched one at a time (the paper's figure order).
GROUPS: tuple[str, ...] = ("black_level", "white_balance", "colour_matrix", "gamma", "sharpen", "denoise")
ALL = "all"
#: The λ grid of the paper's public code (with its ``"sse"`` closeness term; see :func:`dissimilarity`).
PUBLIC_LAMBDAS: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)

State = dict  # parameter name -> tensor copy


# --------------------------------------------------------------------------- the frozen pipeline


def _resize(x: Tensor, size: int, mask: bool = False) -> Tensor:
    from .synthesis import resize_image

    return resize_image(x, size, mask=mask)


def _snapshot(data_model: nn.Module) -> State:
    return {name: p.detach().clone() for name, (p,) in data_model.param_groups().items()}


@torch.no_grad()
def _load(data_model: nn.Module, state: State) -> None:
    for name, (p,) in data_model.param_groups().items():
        p.copy_(state[name])


def dissimilarity(rgb: Tensor, rgb_ref: Tensor, kind: str = "mse") -> Tensor:
    """How far images are from their reference: 0 when equal, growing as they diverge.

    Args:
        rgb: images, shape (B, 3, H, W), values in [0, 1].
        rgb_ref: reference images, same shape.
        kind: ``"mse"`` (mean squared RGB difference over all pixels and channels) or
            ``"ssim"`` (``1 − mean SSIM``, 11x11 Gaussian window, via :func:`kornia.metrics.ssim`;
            in [0, 2], 0 for identical images). Both are *dissimilarities*, to be subtracted
            from the objective with a positive λ. ``"sse"``: the sum of squares over the whole
            batch, the public code's closeness term (its λ scale: :data:`PUBLIC_LAMBDAS`).

    Returns:
        A scalar tensor (differentiable w.r.t. ``rgb``).

    Example:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> float(dissimilarity(x, x)), float(dissimilarity(x, x, "ssim")) < 1e-5
        (0.0, True)
    """
    if rgb.shape != rgb_ref.shape or rgb.ndim != 4:
        raise ValueError(f"rgb and rgb_ref must both have shape (B, 3, H, W), got {tuple(rgb.shape)}, "
                         f"{tuple(rgb_ref.shape)}")
    if kind == "mse":
        return (rgb - rgb_ref).square().mean()
    if kind == "sse":
        return (rgb - rgb_ref).square().sum()
    if kind == "ssim":
        import kornia

        window = min(11, rgb.shape[-1] // 2 * 2 - 1, rgb.shape[-2] // 2 * 2 - 1)
        return 1.0 - kornia.metrics.ssim(rgb, rgb_ref, window_size=window).mean()
    raise ValueError(f"distance must be 'mse', 'sse' or 'ssim', got {kind!r}")


class ForensicsProblem:
    """The frozen pipeline ``raw → data model → resize → task model`` and the images it is probed on.

    Args:
        data_model: a :class:`~drifthelpers.isp.ParametrizedDataModel`; it is reset to its
            reference (initial) values, which define ``φ_ref``.
        task_model: the trained task model; put in eval mode and frozen (BatchNorm statistics
            are the trained ones).
        raw: raw mosaics (N, 1, H, W) in DN (the whole split, one batch).
        targets: class indices (N,) for classification, or masks (N, 1, H, W) for segmentation.
        image_size: side the task model expects (views are area-resized, as in training); 0 = as is.
        task: ``"classification"`` (cross-entropy, accuracy) or ``"segmentation"``
            (binary cross-entropy on mask logits, IoU).
        fast: render with the demosaiced reference cached (see :meth:`render`); checked
            against the data model's own forward at construction and dropped if they differ.

    Attributes:
        metric_name: ``"accuracy"`` or ``"iou"``.
        reference_metric, reference_loss: the task model's score on the reference view.
        evaluations: task-model forward passes made through this problem so far.
    """

    def __init__(self, data_model: nn.Module, task_model: nn.Module, raw: Tensor, targets: Tensor,
                 image_size: int = 0, task: str = "classification", fast: bool = True):
        if task not in ("classification", "segmentation"):
            raise ValueError(f"task must be 'classification' or 'segmentation', got {task!r}")
        if raw.ndim != 4 or raw.shape[1] != 1:
            raise ValueError(f"raw must have shape (N, 1, H, W), got {tuple(raw.shape)}")
        if len(targets) != len(raw):
            raise ValueError(f"{len(raw)} raw images but {len(targets)} targets")
        if not hasattr(data_model, "project_") or not hasattr(data_model, "param_groups"):
            raise TypeError("data_model must be a ParametrizedDataModel (with param_groups() and project_())")
        self.data_model = data_model.eval()
        self.task_model = task_model.eval().requires_grad_(False)
        self.raw = raw
        self.task = task
        self.image_size = int(image_size)
        if task == "segmentation":
            targets = _resize(targets.float(), self.image_size, mask=True)
        self.targets = targets
        self.metric_name = "accuracy" if task == "classification" else "iou"
        self.evaluations = 0
        data_model.reset_parameters()
        self.reference_state = _snapshot(data_model)
        self._cam_ref = self._site_parts = self._site_ones = None
        if fast:
            self._prepare_fast()
        with torch.no_grad():
            self.rgb_ref = self.render()
        ref = self.evaluate()
        self.reference_metric, self.reference_loss = ref["metric"], ref["loss"]

    # -- rendering

    @torch.no_grad()
    def _prepare_fast(self) -> None:
        """Cache what the searched parameters cannot change: the demosaiced mosaic.

        Demosaicing comes before every searched stage but the black level, so it is computed
        once. The black level enters through ``(raw - b_s) / (w - b_s)`` per CFA position s,
        and a *linear* demosaicer D (bilinear, Malvar) gives
        ``D(x) = sum_s (D(m_s * raw / w) - b_s D(m_s)) / (1 - b_s)`` with m_s the position masks
        and b_s the black level as a fraction of w: four cached terms, exact for any black level.
        """
        from . import isp

        dm = self.data_model
        h, w = self.raw.shape[-2:]
        if getattr(dm, "demosaic", None) is not None or h % 2 or w % 2:
            return  # learned demosaic kernels, or an odd crop: use the data model's forward
        white = float(dm.white_level)
        black_dn = self.reference_state["black_level"].double() * white
        x = isp.subtract_black_level(self.raw, black_dn.to(self.raw.dtype), torch.tensor(white, dtype=self.raw.dtype))
        self._cam_ref = isp.demosaic(x, dm.cfa, dm.demosaic_method)
        if dm.demosaic_method in ("bi", "ma"):
            parts, ones = [], []
            for py, px in ((0, 0), (0, 1), (1, 0), (1, 1)):  # TL, TR, BL, BR like the black level
                mask = torch.zeros(1, 1, h, w, dtype=self.raw.dtype)
                mask[..., py::2, px::2] = 1.0
                parts.append(isp.demosaic(self.raw * mask / white, dm.cfa, dm.demosaic_method))
                ones.append(isp.demosaic(mask, dm.cfa, dm.demosaic_method))
            self._site_parts, self._site_ones = torch.stack(parts), torch.stack(ones)
        # the cached path must agree with the data model's forward, at the reference and off it
        probe = {**self.reference_state}
        probe["black_level"] = probe["black_level"] + torch.tensor([0.01, 0.02, 0.0, 0.03]).to(probe["black_level"])
        for state in (self.reference_state, probe):
            _load(dm, state)
            err = float((self.render() - dm(self.raw)).abs().max())
            if err > 1e-4:
                import warnings

                warnings.warn(f"cached rendering differs from the data model by {err:.2g}; using the full forward")
                self._cam_ref = self._site_parts = self._site_ones = None
                break
        _load(dm, self.reference_state)

    def render(self) -> Tensor:
        """The data model's sRGB output (N, 3, H, W) for the current parameters (differentiable).

        Equal to ``data_model(raw)`` (to float rounding); uses the cached demosaic when possible.
        """
        from . import isp

        dm = self.data_model
        if self._cam_ref is None:
            return dm(self.raw)
        bl = dm.black_level
        if bl.requires_grad or not torch.equal(bl.detach(), self.reference_state["black_level"]):
            if self._site_parts is None:
                return dm(self.raw)
            b = bl.to(self.raw.dtype).reshape(4, 1, 1, 1, 1)
            cam = ((self._site_parts - b * self._site_ones) / (1.0 - b)).sum(0)
        else:
            cam = self._cam_ref
        dtype = cam.dtype
        lin = isp.colour_correct(cam, dm.colour_matrix.to(dtype) * dm.white_balance.to(dtype).unsqueeze(-2))
        out = isp.luma_filter(isp.luma_filter(lin, dm.sharpen.to(dtype)), dm.denoise.to(dtype))
        return isp.gamma_encode(out, dm.gamma.to(dtype))

    @property
    def groups(self) -> tuple[str, ...]:
        """The searchable groups of this data model, in :data:`GROUPS` order."""
        known = self.data_model.param_groups()
        return tuple(g for g in GROUPS if g in known) + tuple(g for g in known if g not in GROUPS)

    def reset(self) -> None:
        """Put the data model back at its reference values."""
        _load(self.data_model, self.reference_state)

    def set_state(self, state: State) -> None:
        """Load a configuration (e.g. ``SearchResult.state``) into the data model."""
        _load(self.data_model, state)

    def loss_and_metric(self, rgb: Tensor) -> tuple[Tensor, float]:
        """Task loss (differentiable) and metric of rendered images; counts one evaluation."""
        self.evaluations += 1
        out = self.task_model(_resize(rgb, self.image_size))
        if self.task == "classification":
            loss = F.cross_entropy(out, self.targets)
            metric = float((out.detach().argmax(1) == self.targets).float().mean())
        else:
            loss = F.binary_cross_entropy_with_logits(out, self.targets)
            from .training import iou

            metric = iou(out.detach() > 0, self.targets > 0.5)
        return loss, metric

    @torch.no_grad()
    def evaluate(self, state: State | None = None, distance: str = "mse") -> dict:
        """Loss, metric and image change of the current (or a given) configuration.

        Returns:
            ``{"loss", "metric", "mse", "rms", "distance"}`` (``rms`` = sqrt(mse), in sRGB units).
        """
        if state is not None:
            _load(self.data_model, state)
        rgb = self.render()
        loss, metric = self.loss_and_metric(rgb)
        mse = float(dissimilarity(rgb, self.rgb_ref, "mse"))
        d = mse if distance == "mse" else float(dissimilarity(rgb, self.rgb_ref, distance))
        return {"loss": float(loss), "metric": metric, "mse": mse, "rms": math.sqrt(mse), "distance": d}


def _check_groups(problem: ForensicsProblem, groups) -> tuple[str, ...]:
    if isinstance(groups, str):
        groups = problem.groups if groups == ALL else (groups,)
    groups = tuple(groups)
    unknown = [g for g in groups if g not in problem.groups]
    if unknown or not groups:
        raise ValueError(f"groups must be among {list(problem.groups)} or 'all', got {list(groups) or 'nothing'}")
    return groups


def _label(groups: tuple[str, ...], problem: ForensicsProblem) -> str:
    return ALL if set(groups) == set(problem.groups) and len(groups) > 1 else "+".join(groups)


def _bound_width(data_model: nn.Module, group: str) -> float:
    b = data_model.bounds()[group]
    return float(b["upper"] - b["lower"])


# --------------------------------------------------------------------------- results


@dataclass
class SearchResult:
    """The outcome of one search.

    Attributes:
        method: ``"gradient"`` or ``"random"``.
        groups: the parameter groups that could move; ``label`` names them (``"all"`` for every group).
        lam, distance: penalty weight and dissimilarity.
        state: the best configuration evaluated (parameter tensors), the one reported.
        metric, loss, mse, rms, dissimilarity, objective: its scores (``dissimilarity`` in the
            chosen ``distance``; ``mse``/``rms`` always).
        reference_metric: the metric at the reference configuration.
        evaluations: task-model evaluations spent.
        trace: one dict per evaluation (``objective, loss, metric, mse``), in order.
        stopped_early: the objective stalled before the budget was spent.
        seconds: wall time.
    """

    method: str
    groups: tuple[str, ...]
    label: str
    lam: float
    distance: str
    state: State
    metric: float
    loss: float
    mse: float
    rms: float
    dissimilarity: float
    objective: float
    reference_metric: float
    evaluations: int
    trace: list = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def drop(self) -> float:
        """Reference metric minus the metric reached (positive = harm)."""
        return self.reference_metric - self.metric

    def params(self) -> dict:
        """The moved groups' values as plain lists."""
        return {g: self.state[g].tolist() for g in self.groups}

    def to_dict(self, trace: bool = False) -> dict:
        out = {k: getattr(self, k) for k in ("method", "label", "lam", "distance", "metric", "loss", "mse", "rms",
                                              "dissimilarity", "objective", "reference_metric", "evaluations",
                                              "stopped_early", "seconds")}
        out.update(groups=list(self.groups), drop=self.drop, params=self.params())
        if trace:
            out["trace"] = self.trace
        return out


def _finish(problem, method, groups, lam, distance, best_state, best_index, evaluations, trace, stopped, t0):
    """Package the best configuration; its scores come from the trace (no extra evaluation)."""
    best = trace[best_index]
    problem.reset()
    return SearchResult(method=method, groups=groups, label=_label(groups, problem), lam=float(lam),
                        distance=distance, state=best_state, metric=best["metric"], loss=best["loss"],
                        mse=best["mse"], rms=math.sqrt(best["mse"]), dissimilarity=best["distance"],
                        objective=best["objective"], reference_metric=problem.reference_metric,
                        evaluations=evaluations, trace=trace, stopped_early=stopped, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------- the searches


@torch.no_grad()
def _tangent_grad_(dm: nn.Module, groups) -> None:
    """Remove from the gradients the component that the sum constraints would project away.

    Kernels that must sum to 1 (and colour-matrix rows that keep their sums) can only move
    along directions with zero sum. Adam normalises each coordinate, so a gradient whose
    entries share one sign (typical: "make it all brighter") becomes a uniform step that the
    projection cancels exactly, and the group never moves. Projecting the gradient onto the
    constraint's tangent space first (subtracting its mean per kernel / per row) fixes this;
    ``project_()`` still enforces the box bounds after the step.
    """
    bounds = dm.bounds()
    for g in groups:
        (p,) = dm.param_groups()[g]
        if p.grad is None:
            continue
        b = bounds.get(g, {})
        if "row_sums" in b:
            p.grad.sub_(p.grad.mean(dim=-1, keepdim=True))
        elif "sum" in b:
            if b.get("per") == "kernel":
                flat = p.grad.reshape(p.shape[0], -1)
                p.grad.copy_((flat - flat.mean(dim=1, keepdim=True)).reshape(p.shape))
            else:
                p.grad.sub_(p.grad.mean())


def gradient_search(problem: ForensicsProblem, groups: str | Sequence[str] = ALL, lam: float = 0.0,
                    steps: int = 30, step_fraction: float = 0.01, distance: str = "mse", patience: int = 6,
                    min_delta: float = 1e-3) -> SearchResult:
    """Bounded gradient ascent of ``task loss − λ·d(φ(x), φ_ref(x))`` over some parameter groups.

    Adam, one learning rate per group equal to ``step_fraction`` times the width of the group's
    bounds (so every group moves a comparable fraction of its physical range per step), the
    gradient of sum-constrained groups (kernels, colour-matrix rows) restricted to the
    constraint's tangent space, and ``project_()`` after every step. Starts at the reference.

    Args:
        problem: the frozen pipeline and its images.
        groups: a group name, a list of names, or ``"all"``.
        lam: penalty weight λ ≥ 0 (``float("inf")`` is not allowed; use e.g. 1e6).
        steps: budget of task-model evaluations (the first is the reference; one Adam step
            follows every evaluation but the last).
        step_fraction: Adam step size as a fraction of each group's bound width.
        distance: ``"mse"`` or ``"ssim"`` (see :func:`dissimilarity`).
        patience, min_delta: stop when the best objective has not improved by more than
            ``min_delta`` for ``patience`` consecutive evaluations.

    Returns:
        A :class:`SearchResult` with the best configuration evaluated. The data model is left
        at its reference.
    """
    groups = _check_groups(problem, groups)
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    if steps < 1 or step_fraction <= 0:
        raise ValueError(f"steps must be >= 1 and step_fraction > 0, got {steps}, {step_fraction}")
    dm = problem.data_model
    t0 = time.perf_counter()
    problem.reset()
    was = {name: p.requires_grad for name, (p,) in dm.param_groups().items()}
    dm.freeze_all_but(*groups)
    opt = torch.optim.Adam([{"params": dm.param_groups()[g], "lr": step_fraction * _bound_width(dm, g)}
                            for g in groups])
    best_obj, best_state, best_index, trace, stalled, stopped = -math.inf, None, 0, [], 0, False
    try:
        for k in range(steps):
            rgb = problem.render()
            loss, metric = problem.loss_and_metric(rgb)
            d = dissimilarity(rgb, problem.rgb_ref, distance)
            objective = loss - lam * d
            obj = float(objective.detach())
            mse = float(d.detach()) if distance == "mse" else float(dissimilarity(rgb.detach(), problem.rgb_ref, "mse"))
            trace.append({"objective": obj, "loss": float(loss.detach()), "metric": metric, "mse": mse,
                          "distance": float(d.detach())})
            if obj > best_obj + min_delta or best_state is None:
                stalled = 0
            else:
                stalled += 1
            if obj > best_obj or best_state is None:
                best_obj, best_state, best_index = obj, _snapshot(dm), k
            if k == steps - 1:
                break
            if stalled >= patience:
                stopped = True
                break
            opt.zero_grad(set_to_none=True)
            (-objective).backward()
            _tangent_grad_(dm, groups)
            opt.step()
            dm.project_()
    finally:
        for name, (p,) in dm.param_groups().items():
            p.requires_grad_(was[name])
    return _finish(problem, "gradient", groups, lam, distance, best_state, best_index, len(trace), trace, stopped, t0)


@torch.no_grad()
def _random_candidate(dm: nn.Module, reference: State, groups, generator: torch.Generator,
                      min_scale: float) -> None:
    """Reference + a random offset of random size (log-uniform fraction of the bound widths), projected."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    scale = float(min_scale ** (1.0 - u))  # log-uniform in [min_scale, 1]
    for g in groups:
        (p,) = dm.param_groups()[g]
        width = _bound_width(dm, g)
        offset = (torch.rand(p.shape, generator=generator, dtype=torch.float64) * 2 - 1) * (scale * width / 2)
        p.copy_(reference[g] + offset.to(p))
    dm.project_()


def random_search(problem: ForensicsProblem, groups: str | Sequence[str] = ALL, lam: float = 0.0,
                  evaluations: int = 30, distance: str = "mse", seed: int = 0,
                  min_scale: float = 1e-3) -> SearchResult:
    """The baseline: the same objective, maximised by sampling random bounded configurations.

    Evaluation 1 is the reference (like the gradient search); each further evaluation is the
    reference plus a uniform random offset per parameter whose size is a log-uniform fraction
    in [``min_scale``, 1] of half the bound width (so both small and large changes are tried),
    projected onto the bounds with ``project_()``. Exactly ``evaluations`` task-model
    evaluations; deterministic for a seed.
    """
    groups = _check_groups(problem, groups)
    if evaluations < 1 or not 0 < min_scale <= 1:
        raise ValueError(f"evaluations must be >= 1 and min_scale in (0, 1], got {evaluations}, {min_scale}")
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    dm = problem.data_model
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    best_obj, best_state, best_index, trace = -math.inf, None, 0, []
    with torch.no_grad():
        for k in range(evaluations):
            problem.reset()
            if k:
                _random_candidate(dm, problem.reference_state, groups, gen, min_scale)
            rgb = problem.render()
            loss, metric = problem.loss_and_metric(rgb)
            d = float(dissimilarity(rgb, problem.rgb_ref, distance))
            mse = d if distance == "mse" else float(dissimilarity(rgb, problem.rgb_ref, "mse"))
            obj = float(loss) - lam * d
            trace.append({"objective": obj, "loss": float(loss), "metric": metric, "mse": mse, "distance": d})
            if obj > best_obj:
                best_obj, best_state, best_index = obj, _snapshot(dm), k
    return _finish(problem, "random", groups, lam, distance, best_state, best_index, evaluations, trace, False, t0)


def lambda_sweep(problem: ForensicsProblem, lambdas: Sequence[float], groups: Sequence[str] | None = None,
                 progress: bool = False, **search_kw) -> list[SearchResult]:
    """:func:`gradient_search` for every group (and ``"all"``) and every λ.

    Args:
        groups: labels to search, each a group name or ``"all"``; default every group, then ``"all"``.
        search_kw: passed to :func:`gradient_search` (steps, step_fraction, distance, ...).

    Returns:
        One result per (group, λ), groups outer.
    """
    labels = list(groups) if groups is not None else [*problem.groups, ALL]
    jobs = [(g, lam) for g in labels for lam in lambdas]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="λ sweep", leave=False)
    return [gradient_search(problem, g, lam=float(lam), **search_kw) for g, lam in jobs]


def best_so_far(result: SearchResult) -> tuple[np.ndarray, np.ndarray]:
    """Per evaluation: the metric of the best-objective configuration found up to then.

    Returns:
        ``(evaluations 1..n, metric)``. For a gradient search that stopped early the curve is
        held flat to its budget by :func:`compare_search`.
    """
    best, metric, out = -math.inf, None, []
    for row in result.trace:
        if row["objective"] > best:
            best, metric = row["objective"], row["metric"]
        out.append(metric)
    return np.arange(1, len(out) + 1), np.array(out)


def compare_search(problem: ForensicsProblem, groups: str | Sequence[str] = ALL, lam: float = 0.0,
                   evaluations: int = 30, seeds: Sequence[int] = (0,), **search_kw) -> dict:
    """Gradient search against random search with the same budget of task-model evaluations.

    Returns:
        JSON-ready dict: ``evaluations`` (1..n), ``gradient`` (best-so-far metric per
        evaluation), ``random`` (mean over seeds) and ``random_runs``, the final drops, the
        evaluations each method needed to reach the random search's final drop, and timings.
    """
    grad = gradient_search(problem, groups, lam=lam, steps=evaluations, **search_kw)
    _, g_curve = best_so_far(grad)
    g_curve = np.concatenate([g_curve, np.full(evaluations - len(g_curve), g_curve[-1])])
    distance = search_kw.get("distance", "mse")
    rand = [random_search(problem, groups, lam=lam, evaluations=evaluations, distance=distance, seed=s)
            for s in seeds]
    r_curves = np.stack([best_so_far(r)[1] for r in rand])
    r_mean = r_curves.mean(0)
    ref = problem.reference_metric

    def reach(curve, target):
        hit = np.flatnonzero(ref - curve >= target - 1e-9)
        return int(hit[0]) + 1 if len(hit) else None

    return {
        "label": grad.label, "lam": float(lam), "metric_name": problem.metric_name, "reference_metric": ref,
        "evaluations": list(range(1, evaluations + 1)),
        "gradient": g_curve.tolist(), "random": r_mean.tolist(), "random_runs": r_curves.tolist(),
        "gradient_drop": float(ref - g_curve[-1]), "random_drop": float(ref - r_mean[-1]),
        "gradient_evaluations_used": grad.evaluations, "gradient_stopped_early": grad.stopped_early,
        "gradient_evals_to_random_drop": reach(g_curve, ref - r_mean[-1]),
        "gradient_rms": grad.rms, "random_rms": float(np.mean([r.rms for r in rand])),
        "gradient_seconds": grad.seconds, "random_seconds": float(np.mean([r.seconds for r in rand])),
        "random_trace": [r.trace for r in rand],
    }


# --------------------------------------------------------------------------- summaries


def _spearman(x, y) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def harm_vs_change(results: Sequence[SearchResult], random_traces: Sequence[list] = (),
                   reference_metric: float | None = None) -> dict:
    """Does a larger image change mean a larger drop? Points and rank correlations.

    Args:
        results: search results (their best configurations).
        random_traces: traces of random searches (every random candidate is one point).

    Returns:
        ``{"gradient": {"rms", "drop", "label", "lam", "spearman"}, "random": {"rms", "drop", "spearman"}}``.
    """
    ref = reference_metric if reference_metric is not None else (results[0].reference_metric if results else 0.0)
    g_rms = [r.rms for r in results]
    g_drop = [r.drop for r in results]
    r_rms = [math.sqrt(row["mse"]) for tr in random_traces for row in tr]
    r_drop = [ref - row["metric"] for tr in random_traces for row in tr]
    return {
        "gradient": {"rms": g_rms, "drop": g_drop, "label": [r.label for r in results], "lam": [r.lam for r in results],
                     "spearman": _spearman(g_rms, g_drop)},
        "random": {"rms": r_rms, "drop": r_drop, "spearman": _spearman(r_rms, r_drop)},
    }


def most_harmful(results: Sequence[SearchResult]) -> dict[str, SearchResult]:
    """Per group label, the result with the lowest metric (ties: the smaller image change)."""
    out: dict[str, SearchResult] = {}
    for r in results:
        cur = out.get(r.label)
        if cur is None or (r.metric, r.rms) < (cur.metric, cur.rms):
            out[r.label] = r
    return out


@torch.no_grad()
def item_scores(problem: ForensicsProblem, state: State | None = None) -> np.ndarray:
    """Each probe image's score at a configuration (the reference when ``state`` is None):
    1/0 correctness for a classifier, the image's IoU for a segmenter. Leaves the problem at
    its reference; counts one evaluation.

    Returns:
        (N,) float array in the order of ``problem.raw``.
    """
    from . import stats

    problem.set_state(state if state is not None else problem.reference_state)
    try:
        problem.evaluations += 1
        out = problem.task_model(_resize(problem.render(), problem.image_size))
    finally:
        problem.reset()
    if problem.task == "classification":
        return (out.argmax(1) == problem.targets).double().numpy()
    inter, union = stats.iou_counts((out > 0).numpy(), (problem.targets > 0.5).numpy())
    return stats.iou_per_image(inter, union)


def harm_statistics(problem: ForensicsProblem, states: dict[str, State], n_boot: int = 2000,
                    seed: int = 0) -> dict[str, dict]:
    """The drop of each configuration below the reference, with an interval over probe images.

    The drop is the mean over images of (score at the reference − score at the configuration),
    paired by image; the bootstrap resamples the images (one trained model: one unit, so the
    interval covers the choice of probe images, not the training seed; over several models:
    :func:`drifthelpers.forensics_models.harm_over_models`). Evaluate on images the
    search did not see (e.g. a validation split) for a drop that is not selected on its own noise.

    Args:
        states: ``{label: configuration}``, e.g. ``{label: r.state for label, r in most_harmful(...).items()}``.

    Returns:
        ``{label: {value, low, high, n, ...}}`` (see :class:`drifthelpers.stats.Estimate`).
    """
    from . import stats

    ref = item_scores(problem)
    return {label: stats.paired_difference(ref[None], item_scores(problem, st)[None], n_boot, seed).to_dict()
            for label, st in states.items()}


#: The paper's drift-forensics claims (Raw-Microscopy), judged on the drop of each group's most
#: harmful configuration (:data:`drifthelpers.claims.FORENSICS_CLAIMS`).
PAPER_CLAIMS = FORENSICS_CLAIMS
judge_claims = judge_forensics


def save_json(obj: dict, path: str | Path) -> Path:
    """Write a JSON-ready dict (atomic replace, a unique temporary name)."""
    from .fileio import atomic_write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, obj, indent=1, default=float)


# --------------------------------------------------------------------------- figures


def plot_lambda_curves(results: Sequence[SearchResult], ax=None, metric_name: str = "accuracy"):
    """The paper's figure: metric after the search against λ, one line per group."""
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("no results to plot")
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    lams = sorted({r.lam for r in results})
    xpos = {lam: i for i, lam in enumerate(lams)}
    labels = list(dict.fromkeys(r.label for r in results))
    for label in labels:
        rs = sorted((r for r in results if r.label == label), key=lambda r: r.lam)
        style = dict(color="k", lw=2.5) if label == ALL else dict(lw=1.5)
        ax.plot([xpos[r.lam] for r in rs], [r.metric for r in rs], "o-", label=label, **style)
    ax.axhline(results[0].reference_metric, color="0.5", ls="--", lw=1, label="reference")
    ax.set_xticks(range(len(lams)), [f"{lam:g}" for lam in lams])
    ax.set_xlabel("λ (closeness penalty weight; larger = images must stay closer)")
    ax.set_ylabel(f"{metric_name} after the search")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return fig or ax.figure


def plot_search_budget(comparisons: Sequence[dict], ax=None):
    """Best-so-far metric against task-model evaluations: gradient (solid) vs random (dashed)."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    for k, c in enumerate(comparisons):
        colour = f"C{k}"
        ax.plot(c["evaluations"], c["gradient"], "-", color=colour, lw=2, label=f"{c['label']}: gradient")
        ax.plot(c["evaluations"], c["random"], "--", color=colour, lw=1.5, label=f"{c['label']}: random")
    if comparisons:
        ax.axhline(comparisons[0]["reference_metric"], color="0.5", ls=":", lw=1, label="reference")
        ax.set_ylabel(f"{comparisons[0]['metric_name']} of the best configuration so far")
    ax.set_xlabel("task-model evaluations spent")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig or ax.figure


def plot_harm_vs_change(points: dict, ax=None):
    """Drop against RMS image change: random configurations (grey) and gradient searches (coloured)."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    r = points["random"]
    eps = 1e-4
    ax.scatter(np.maximum(r["rms"], eps), r["drop"], s=12, color="0.6", alpha=0.7,
               label=f"random configurations (ρ = {r['spearman']:.2f})")
    g = points["gradient"]
    labels = list(dict.fromkeys(g["label"]))
    for k, label in enumerate(labels):
        idx = [i for i, lab in enumerate(g["label"]) if lab == label]
        ax.scatter(np.maximum([g["rms"][i] for i in idx], eps), [g["drop"][i] for i in idx], s=40, marker="D",
                   color=f"C{k}", edgecolor="k", lw=0.5, label=f"gradient: {label}")
    ax.set_xscale("log")
    ax.set_xlabel("RMS change of the sRGB image (0–1 scale, log)")
    ax.set_ylabel("accuracy drop")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return fig or ax.figure
