"""The operating envelope: how far each stage of the data model may drift before a task model suffers.

One parameter (or one 1-D path through a kernel or matrix) at a time, the others at the
reference, :func:`operating_envelope` finds the contiguous range around the reference value in
which the task model's metric stays within a tolerance of its reference metric. The result is
a JSON-ready specification, printed by :func:`envelope_table` and drawn by
:func:`plot_envelope` (``python -m drifthelpers forensics`` writes it for a saved task model).

The problem it probes is a :class:`drifthelpers.forensics.ForensicsProblem` (anything with
``data_model``, ``reset()``, ``evaluate()``, ``reference_metric`` and ``metric_name``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["EnvelopeAxis", "envelope_axes", "operating_envelope", "envelope_table", "plot_envelope"]

State = dict  # parameter name -> tensor copy


@dataclass
class EnvelopeAxis:
    """One direction in which the data model may drift, as a scalar value.

    Attributes:
        name: e.g. ``"gamma"``, ``"wb_gain_r"``, ``"path:denoise"``.
        group: the data-model group it changes.
        meaning, unit: what the value is (written into the specification).
        reference: the value at the reference data model.
        lower, upper: the range swept (inside the physical bounds).
        apply: ``apply(data_model, value)`` sets the group's parameters for a value (others
            stay at the reference); :func:`operating_envelope` projects afterwards.
        scale: optional factor to report the value in a second unit (black level in DN).
    """

    name: str
    group: str
    meaning: str
    unit: str
    reference: float
    lower: float
    upper: float
    apply: Callable[[nn.Module, float], None]
    scale: tuple[str, float] | None = None


def _gaussian5(sigma: float, like: Tensor) -> Tensor:
    r = torch.arange(-2, 3, dtype=torch.float64)
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * max(sigma, 1e-3) ** 2))
    return (g / g.sum()).to(like)


def _reference(data_model: nn.Module) -> State:
    return {name: p.detach().clone() for name, (p,) in data_model.param_groups().items()}


def _black_level_axis(data_model: nn.Module, ref: State, bounds: dict) -> EnvelopeAxis:
    bl = ref["black_level"].double()
    b_lo, b_hi = bounds["black_level"]["lower"], bounds["black_level"]["upper"]
    mean_bl = float(bl.mean())

    def set_black(dm, v, bl=bl, mean_bl=mean_bl):
        dm.black_level.copy_((bl + (v - mean_bl)).to(dm.black_level))

    return EnvelopeAxis("black_level", "black_level", "black level (common shift of the 4 CFA sites)",
                        "fraction of white level", mean_bl, b_lo + mean_bl - float(bl.min()),
                        b_hi - (float(bl.max()) - mean_bl), set_black, scale=("DN", float(data_model.white_level)))


def _white_balance_axes(ref: State, bounds: dict) -> list[EnvelopeAxis]:
    wb = ref["white_balance"]
    w_lo, w_hi = bounds["white_balance"]["lower"], bounds["white_balance"]["upper"]
    axes = []
    for i, c in enumerate("rgb"):
        def set_gain(dm, v, i=i):
            dm.white_balance[i] = v

        axes.append(EnvelopeAxis(f"wb_gain_{c}", "white_balance", f"white-balance gain of the {'RGB'[i]} channel",
                                 "gain", float(wb[i]), w_lo, w_hi, set_gain))
    return axes


def _colour_matrix_axis(ref: State, bounds: dict) -> EnvelopeAxis:
    m = ref["colour_matrix"].double()
    d = torch.diag(m.sum(1))
    dev = m - d
    c_lo, c_hi = bounds["colour_matrix"]["lower"], bounds["colour_matrix"]["upper"]
    s_max = 4.0
    for s_try in np.linspace(4.0, 1.0, 61):
        if float((d + s_try * dev).min()) >= c_lo and float((d + s_try * dev).max()) <= c_hi:
            s_max = float(s_try)
            break

    def set_ccm(dm, v, d=d, dev=dev):
        dm.colour_matrix.copy_((d + v * dev).to(dm.colour_matrix))

    return EnvelopeAxis("ccm_strength", "colour_matrix", "colour-correction strength s in D + s(M - D)",
                        "x reference", 1.0, 0.0, s_max, set_ccm)


def _sharpen_axis(ref: State, bounds: dict) -> EnvelopeAxis:
    k = ref["sharpen"].double()
    delta = torch.zeros(3, 3, dtype=torch.float64)
    delta[1, 1] = 1.0
    kd = k - delta
    k_lo, k_hi = bounds["sharpen"]["lower"], bounds["sharpen"]["upper"]
    a_max = min([(k_hi - float(delta[i, j])) / float(kd[i, j]) if kd[i, j] > 0 else
                 (k_lo - float(delta[i, j])) / float(kd[i, j]) for i in range(3) for j in range(3) if kd[i, j] != 0]
                or [4.0])

    def set_sharpen(dm, v, delta=delta, kd=kd):
        dm.sharpen.copy_((delta + v * kd).to(dm.sharpen))

    return EnvelopeAxis("sharpen_amount", "sharpen", "sharpening amount a in delta + a(K - delta)",
                        "x reference", 1.0, 0.0, float(min(a_max, 4.0)), set_sharpen)


def _denoise_axis() -> EnvelopeAxis:
    def set_sigma(dm, v):
        dm.denoise.copy_(_gaussian5(v, dm.denoise))

    return EnvelopeAxis("denoise_sigma", "denoise", "sigma of the 5x5 Gaussian denoising kernel", "pixels",
                        0.5, 0.05, 3.0, set_sigma)


def _gamma_axis(ref: State, bounds: dict) -> EnvelopeAxis:
    g_lo, g_hi = bounds["gamma"]["lower"], bounds["gamma"]["upper"]

    def set_gamma(dm, v):
        dm.gamma.fill_(v)

    return EnvelopeAxis("gamma", "gamma", "gamma of the encoding x^(1/gamma)", "", float(ref["gamma"]),
                        g_lo, g_hi, set_gamma)


def _path_axes(ref: State, harmful: dict[str, State]) -> list[EnvelopeAxis]:
    axes = []
    for group, state in harmful.items():
        if group not in ref:
            continue
        start, end = ref[group].double(), state[group].double()
        if torch.equal(start, end):
            continue

        def set_path(dm, t, group=group, start=start, end=end):
            p = getattr(dm, group)
            p.copy_((start + t * (end - start)).to(p))

        axes.append(EnvelopeAxis(f"path:{group}", group, f"fraction of the way to the most harmful {group} found",
                                 "fraction", 0.0, 0.0, 1.0, set_path))
    return axes


def envelope_axes(data_model: nn.Module, harmful: dict[str, State] | None = None) -> list[EnvelopeAxis]:
    """The default axes of the operating envelope, and paths toward harmful settings.

    Scalar axes (others at the reference): ``black_level`` (a common shift of the four sites,
    as a fraction of the white level), ``wb_gain_r/g/b``, ``gamma``; 1-D families for the
    matrices and kernels: ``ccm_strength`` s in ``D + s·(M − D)`` with D the diagonal of the
    row sums (0 = no colour correction, 1 = reference), ``sharpen_amount`` a in
    ``δ + a·(K − δ)`` (0 = no sharpening), ``denoise_sigma`` (σ of the 5x5 Gaussian, 0.5 =
    reference). With ``harmful`` (group → configuration, e.g. the most harmful found by a
    search) also ``path:<group>``: t in ``θ_ref + t·(θ_harmful − θ_ref)``, t ∈ [0, 1].
    """
    ref = _reference(data_model)
    bounds = data_model.bounds()
    return [_black_level_axis(data_model, ref, bounds), *_white_balance_axes(ref, bounds),
            _colour_matrix_axis(ref, bounds), _sharpen_axis(ref, bounds), _denoise_axis(), _gamma_axis(ref, bounds),
            *_path_axes(ref, harmful or {})]


def _sweep_side(problem, axis, floor, distance_max, sign, points, refine, min_fraction):
    """Walk away from the reference on one side; return (edge value, failed, evaluated points)."""
    dm = problem.data_model
    seen = []

    def ok_at(v):
        problem.reset()
        with torch.no_grad():
            axis.apply(dm, v)
            dm.project_()
        metric = problem.evaluate()["metric"]
        seen.append((v, metric))
        return metric >= floor

    if distance_max <= 0:
        return axis.reference, False, seen
    fractions = np.geomspace(min_fraction, 1.0, points)
    last_ok, first_bad = 0.0, None
    for f in fractions:
        if ok_at(axis.reference + sign * f * distance_max):
            last_ok = f
        else:
            first_bad = f
            break
    if first_bad is None:
        return axis.reference + sign * distance_max, False, seen
    for _ in range(refine):
        mid = 0.5 * (last_ok + first_bad)
        if ok_at(axis.reference + sign * mid * distance_max):
            last_ok = mid
        else:
            first_bad = mid
    return axis.reference + sign * last_ok * distance_max, True, seen


def operating_envelope(problem, tolerance: float = 0.05, axes: Sequence[EnvelopeAxis] | None = None,
                       points: int = 8, refine: int = 4, min_fraction: float = 1e-2, progress: bool = False) -> dict:
    """The safe operating envelope: per axis, the range where the metric stays within tolerance.

    For each axis (default :func:`envelope_axes`), the value moves away from the reference on
    each side along a geometric grid of ``points`` fractions (from ``min_fraction`` to 1) of the
    distance to the end of its range, stops at the first value whose metric falls below
    ``reference_metric − tolerance`` and bisects ``refine`` times between the last safe and the
    first unsafe value. The reported edge is the last *safe* value: the contiguous interval
    around the reference within which every tested value kept the metric (dips narrower than
    the grid can be missed). One axis at a time, all others at the reference; joint drift of
    several stages is not covered.

    Returns:
        A JSON-ready specification: ``{"metric", "reference_metric", "tolerance", "floor",
        "parameters": {name: {"group", "meaning", "unit", "reference", "lower", "upper",
        "lower_limited", "upper_limited", "range": [lo, hi], "tolerance", "curve": [[value, metric], ...]}}}``;
        ``*_limited`` is true when the metric limits that side (false: safe up to the physical bound).
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    if points < 1 or refine < 0:
        raise ValueError(f"points must be >= 1 and refine >= 0, got {points}, {refine}")
    axes = list(axes) if axes is not None else envelope_axes(problem.data_model)
    floor = problem.reference_metric - tolerance
    spec = {"metric": problem.metric_name, "reference_metric": problem.reference_metric, "tolerance": tolerance,
            "floor": floor, "points": points, "refine": refine, "parameters": {}}
    it = axes
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(axes, desc="envelope", leave=False)
    try:
        for axis in it:
            lo, lo_lim, seen_lo = _sweep_side(problem, axis, floor, axis.reference - axis.lower, -1, points, refine,
                                              min_fraction)
            hi, hi_lim, seen_hi = _sweep_side(problem, axis, floor, axis.upper - axis.reference, +1, points, refine,
                                              min_fraction)
            curve = sorted(seen_lo + [(axis.reference, problem.reference_metric)] + seen_hi)
            entry = {"group": axis.group, "meaning": axis.meaning, "unit": axis.unit, "reference": axis.reference,
                     "lower": lo, "upper": hi, "lower_limited": lo_lim, "upper_limited": hi_lim,
                     "range": [axis.lower, axis.upper], "tolerance": tolerance,
                     "curve": [[float(v), float(m)] for v, m in curve]}
            if axis.scale is not None:
                unit, factor = axis.scale
                entry[f"reference_{unit}"] = axis.reference * factor
                entry[f"lower_{unit}"] = lo * factor
                entry[f"upper_{unit}"] = hi * factor
            spec["parameters"][axis.name] = entry
    finally:
        problem.reset()
    return spec


def envelope_table(spec: dict) -> str:
    """The envelope specification as a readable fixed-width table."""
    head = (f"Operating envelope: {spec['metric']} >= {spec['floor']:.3f} "
            f"(reference {spec['reference_metric']:.3f} - tolerance {spec['tolerance']:.3f}); one parameter at a time")
    rows = [("parameter", "reference", "safe from", "safe to", "unit", "limited by")]
    for name, e in spec["parameters"].items():
        lim = [side for side, flag in (("low", e["lower_limited"]), ("high", e["upper_limited"])) if flag]
        unit = e["unit"]
        ref, lo, hi = e["reference"], e["lower"], e["upper"]
        if "reference_DN" in e:
            unit = f"{unit} ({e['lower_DN']:.0f}..{e['upper_DN']:.0f} DN)"
        rows.append((name, f"{ref:.4g}", f"{lo:.4g}", f"{hi:.4g}", unit,
                     "metric: " + ", ".join(lim) if lim else "physical bounds only"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)



def plot_envelope(spec: dict, ncols: int = 4, size: float = 2.6):
    """One panel per envelope axis: the metric along the axis, the safe range shaded."""
    import matplotlib.pyplot as plt

    params = spec["parameters"]
    n = len(params)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * 1.2, size * nrows), squeeze=False)
    for ax, (name, e) in zip(axes.ravel(), params.items()):
        v, m = np.array(e["curve"]).T
        ax.axvspan(e["lower"], e["upper"], color="tab:green", alpha=0.15)
        ax.plot(v, m, ".-", color="k", lw=1)
        ax.axvline(e["reference"], color="tab:blue", lw=1)
        ax.axhline(spec["floor"], color="tab:red", ls="--", lw=1)
        if name == "black_level" and e["upper"] - e["lower"] < 0.05 * (e["range"][1] - e["range"][0]):
            ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(e["unit"] or "value", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle("operating envelope: safe range (green), reference (blue), tolerance floor (red)", fontsize=10)
    fig.tight_layout()
    return fig
