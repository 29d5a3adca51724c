"""Drift forensics over several trained task models: drops whose interval covers training noise.

A search probes one trained model. Another training run of the same experiment (another split,
another seed, even another thread count) gives a slightly different model, and the settings
that harm it, and by how much, differ too. An interval over the probe images of one model says
nothing about that. Notebook 04 therefore searches ``n`` of notebook 03's models (the same view,
consecutive splits) in the same way, scores each model's most harmful settings on that model's
held-out images, and :func:`harm_over_models` pools them: each model is a unit of the
hierarchical bootstrap (:func:`drifthelpers.stats.paired_difference`), which resamples models,
then each model's images, an image's score at the reference and at the harmful setting moving
together. With one model this is :func:`drifthelpers.forensics.harm_statistics`.

How many models a profile searches: ``PROFILES[profile]["forensics_models"]``
(:mod:`drifthelpers.profiles`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["harm_over_models", "model_splits"]


def model_splits(profile: str, split: int, n_splits: int, n_models: int = 0) -> list[int]:
    """The splits of notebook 03 whose task models are searched: ``split`` and the next ones.

    Args:
        profile: the run profile (its ``forensics_models`` is the default count).
        split: the first split (the model the notebook's lessons use).
        n_splits: how many splits notebook 03 trains (its ``SynthesisConfig.n_splits``).
        n_models: how many models; 0: the profile's.

    Raises:
        ValueError: a negative count, or more models than the splits from ``split`` on.
    """
    from .profiles import PROFILES, check_name

    count = int(n_models) or int(PROFILES[check_name(profile)].get("forensics_models", 1))
    if n_models < 0 or count < 1:
        raise ValueError(f"n_models must be >= 0 (0: the profile's), got {n_models}")
    if split < 0 or split + count > n_splits:
        raise ValueError(f"n_models {count} from split {split} needs splits {split}..{split + count - 1}, "
                         f"but notebook 03 trains splits 0..{n_splits - 1}")
    return list(range(split, split + count))


def harm_over_models(units: Sequence[tuple], n_boot: int = 2000, seed: int = 0) -> dict[str, dict]:
    """The drop of each configuration below the reference, pooled over trained models.

    Args:
        units: one ``(problem, states)`` per trained model: a
            :class:`~drifthelpers.forensics.ForensicsProblem` on images its search did not see,
            and ``{label: configuration}`` found for that model (the same labels in every unit).

    Returns:
        ``{label: {value, low, high, n, ...}}`` (:class:`drifthelpers.stats.Estimate`): the mean
        over models of each model's mean drop, with ``n["units"]`` models.

    Raises:
        ValueError: no units, or units with different labels.
    """
    from . import stats
    from .forensics import item_scores

    if not units:
        raise ValueError("harm_over_models needs at least one (problem, states) unit")
    labels = list(units[0][1])
    if any(set(states) != set(labels) for _, states in units):
        raise ValueError(f"every unit must hold the configurations {labels}")
    refs: list[np.ndarray] = []
    scores: dict[str, list[np.ndarray]] = {label: [] for label in labels}
    for problem, states in units:
        refs.append(item_scores(problem))
        for label in labels:
            scores[label].append(item_scores(problem, states[label]))
    return {label: stats.paired_difference(refs, scores[label], n_boot, seed).to_dict() for label in labels}
