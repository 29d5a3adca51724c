"""Ablation of the corrections: from the paper's public protocol to this package's, one fix at a time.

:func:`ablation` runs the drift-synthesis experiment (:func:`drifthelpers.synthesis.run_synthesis`)
with ``fidelity="raw2logit"`` (what the public code computed), then once per correction of
:data:`CORRECTIONS` with that correction alone applied, and once with every correction
(``fidelity="corrected"``). Each row reports the change of every headline number (diagonal
mean, mean faithful drop, mean corruption drop, their ratio, the rank correlation of the two
protocols' rankings of the training views) with a hierarchical-bootstrap interval
(:mod:`drifthelpers.stats`). When both arms test the same items (every correction but the drone
splits) the interval is paired: one resample of units and items serves both arms.

Example (a results file the notebook and the docs read)::

    from drifthelpers import ablation, synthesis
    out = ablation.ablation(dataset, synthesis.SynthesisConfig(**settings), n_boot=1000)
    synthesis.save_json(out, "results/ablation_microscopy.json")
    print(ablation.ablation_table(out))
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from . import stats
from .synthesis import SynthesisConfig, run_synthesis
from .synthesis_fidelity import CORRECTIONS

__all__ = ["CORRECTIONS", "HEADLINE", "applicable_corrections", "arm_scores", "headline_values", "compare_arms",
           "ablation", "ablation_table"]

#: The headline numbers of every arm, in this order (``log_ratio`` = log(corruption / faithful drop)).
HEADLINE = ("diagonal_mean", "mean_drop_faithful", "mean_drop_corruption", "log_ratio", "spearman_rho")


def applicable_corrections(dataset, config: SynthesisConfig) -> list[str]:
    """The corrections that can change this experiment: pooled IoU only for segmentation, frame
    splits only for a data set with frames (the drone tiles)."""
    out = []
    for name in CORRECTIONS:
        if name == "pooled_iou" and config.task != "segmentation":
            continue
        if name == "frame_splits" and getattr(dataset, "frames", None) is None:
            continue
        out.append(name)
    return out


def arm_scores(result: dict) -> dict[str, list[np.ndarray]]:
    """Per-unit per-item scores of one run, named for :func:`headline_values`.

    Returns:
        ``{"s": [U x (T, T+K, I_u)]}`` (correctness, or per-image IoU when the run's metric is
        per-image IoU) or ``{"i": [...], "u": [...]}`` (intersection and union pixel counts of a
        pooled-IoU run); columns: the T test views, then the K corruptions.
    """
    from types import SimpleNamespace

    from . import synthesis_fidelity as fid

    items = result["items"]
    cfg = SimpleNamespace(fidelity=result["config"].get("fidelity", "corrected"),
                          corrections=tuple(result["config"].get("corrections", ())))
    if items["kind"] == "predictions":
        return {"s": [(np.asarray(u["models"]) == np.asarray(u["targets"])).astype(float) for u in items["units"]]}
    recs = [np.asarray(u["models"], float) for u in items["units"]]  # (T, T+K, 2, I)
    if fid.per_image_iou(cfg):
        return {"s": [stats.iou_per_image(r[:, :, 0], r[:, :, 1]) for r in recs]}
    return {"i": [r[:, :, 0] for r in recs], "u": [r[:, :, 1] for r in recs]}


def headline_values(means: dict, prefix: str = "") -> np.ndarray:
    """:data:`HEADLINE` from per-unit cell means.

    Args:
        means: ``{prefix + "s": (B, U, T, T+K)}`` or ``{prefix + "i", prefix + "u"}`` (pooled IoU
            per unit and cell: mean intersection over mean union, 1 when every union is empty).

    Returns:
        (B, 5) array; ``nan`` where undefined (a constant ranking, both drops <= 0).
    """
    if prefix + "s" in means:
        cells = means[prefix + "s"]
    else:
        i, u = means[prefix + "i"], means[prefix + "u"]
        cells = np.where(u > 0, i / np.where(u > 0, u, 1), 1.0)
    T = cells.shape[2]
    prot = stats._protocol_stat({"views": cells[..., :T], "corruptions": cells[..., T:]})
    diag = np.diagonal(cells[..., :T].mean(1), axis1=1, axis2=2).mean(1)
    return np.stack([diag, prot[:, 0], prot[:, 1], prot[:, 2], prot[:, 3]], 1)


def _point(scores: dict) -> np.ndarray:
    return headline_values({k: np.stack([x.mean(-1) for x in v])[None] for k, v in scores.items()})[0]


def _paired(a: dict, b: dict, n_boot: int, seed: int) -> list:
    """Estimates of a's, b's and b - a's headline numbers from one paired resampling."""
    data = {**{"a" + k: v for k, v in a.items()}, **{"b" + k: v for k, v in b.items()}}

    def stat(m):
        x, y = headline_values(m, "a"), headline_values(m, "b")
        return np.concatenate([x, y, y - x], 1)

    return stats.hierarchical_bootstrap(data, stat, n_boot, seed)


def _unpaired(a: dict, b: dict, n_boot: int, seed: int) -> list:
    """As :func:`_paired` for arms that test different items: independent resamplings, the
    change's interval from the differences of their replicates (percentile)."""
    ea, ra = stats.hierarchical_bootstrap(a, headline_values, n_boot, seed, return_replicates=True)
    eb, rb = stats.hierarchical_bootstrap(b, headline_values, n_boot, seed + 1, return_replicates=True)
    value = _point(b) - _point(a)
    n = {"units": ea[0].n["units"], "resamples": n_boot}
    diff = stats.bootstrap_estimates(value, rb - ra, n, 0.95, "percentile")
    return [*ea, *eb, *diff]


def _same_items(ra: dict, rb: dict) -> bool:
    ua, ub = ra["items"]["units"], rb["items"]["units"]
    return len(ua) == len(ub) and all(x["test_index"] == y["test_index"] for x, y in zip(ua, ub))


def compare_arms(base: dict, arm: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    """The change of every headline number from ``base`` to ``arm`` (two run_synthesis results
    with the same presets and corruptions).

    Returns:
        ``{"paired": bool, "numbers": {name: {"baseline", "corrected", "change"}}}``, each an
        Estimate dict (``n_boot=0``: point values, no intervals); the ratio (not a difference)
        is reported as ``ratio_baseline`` and ``ratio_corrected`` beside ``log_ratio``.
    """
    a, b = arm_scores(base), arm_scores(arm)
    paired = _same_items(base, arm)
    if n_boot:
        ests = (_paired if paired else _unpaired)(a, b, n_boot, seed)
        ests = [e.to_dict() for e in ests]
    else:
        va, vb = _point(a), _point(b)
        ests = [{"value": stats._num(v), "low": None, "high": None, "reason": "no bootstrap (n_boot=0)"}
                for v in [*va, *vb, *(vb - va)]]
    H = len(HEADLINE)
    numbers = {name: {"baseline": ests[k], "corrected": ests[H + k], "change": ests[2 * H + k]}
               for k, name in enumerate(HEADLINE)}
    lr = numbers["log_ratio"]
    exp = lambda d: None if d.get("value") is None else float(np.exp(d["value"]))  # noqa: E731
    return {"paired": paired, "numbers": numbers, "ratio_baseline": exp(lr["baseline"]),
            "ratio_corrected": exp(lr["corrected"])}


def ablation(dataset, config: SynthesisConfig, corrections: Sequence[str] | None = None,
             cache_dir: str | Path | bool | None = None, n_boot: int = 1000, seed: int = 0, progress: bool = False,
             workers: int = 0, device="cpu", job_threads: int = 0) -> dict:
    """Each correction alone on top of the public protocol, and all of them, against the public protocol.

    Args:
        dataset: a raw data set (as for :func:`drifthelpers.synthesis.run_synthesis`).
        config: the experiment; its ``fidelity`` and ``corrections`` are replaced.
        corrections: the rows (default: :func:`applicable_corrections`).
        n_boot: bootstrap resamples of each row's intervals (0: point values only).
        workers, job_threads: how the training jobs run (:func:`drifthelpers.parallel.plan_workers`).

    Returns:
        A JSON-ready dict: ``config`` (the public protocol's), ``baseline`` (its headline numbers),
        ``rows`` (one per correction, then ``"all"``: ``correction``, ``explanation`` and the
        :func:`compare_arms` fields).
    """
    names = list(applicable_corrections(dataset, config) if corrections is None else corrections)
    unknown = [n for n in names if n not in CORRECTIONS]
    if unknown:
        raise ValueError(f"unknown corrections {unknown}; known: {sorted(CORRECTIONS)}")
    base_cfg = replace(config, fidelity="raw2logit", corrections=())
    arms = [(n, replace(base_cfg, corrections=(n,))) for n in names]
    arms.append(("all", replace(config, fidelity="corrected", corrections=())))
    run = lambda c: run_synthesis(dataset, c, cache_dir=cache_dir, progress=progress, mixed=False,  # noqa: E731
                                  workers=workers, device=device, n_boot=0, job_threads=job_threads)
    base = run(base_cfg)
    rows = []
    for name, cfg in arms:
        row = compare_arms(base, run(cfg), n_boot, seed)
        explanation = "Every correction above together." if name == "all" else CORRECTIONS[name]
        rows.append({"correction": name, "explanation": explanation, **row})
    baseline = {k: rows[0]["numbers"][k]["baseline"] for k in HEADLINE} if rows else {}
    return {"dataset": config.dataset, "config": asdict(base_cfg), "presets": list(config.presets),
            "baseline": baseline, "rows": rows}


def ablation_table(result: dict, digits: int = 3) -> str:
    """A Markdown table of an :func:`ablation` result: the public protocol's numbers, then each
    correction's change (``value [low, high]``)."""
    head = "| correction | " + " | ".join(HEADLINE) + " |"
    lines = [head, "|" + "---|" * (len(HEADLINE) + 1)]
    lines.append("| public protocol (raw2logit) | "
                 + " | ".join(stats.format_estimate(result["baseline"][k], digits) for k in HEADLINE) + " |")
    for row in result["rows"]:
        cells = [stats.format_estimate(row["numbers"][k]["change"], digits) for k in HEADLINE]
        lines.append(f"| + {row['correction']}{'' if row['paired'] else ' (unpaired)'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
