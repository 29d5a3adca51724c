"""The run profiles: one table of experiment sizes that notebooks, experiments and the command line read.

A profile names a size of the whole study. Each entry of :data:`PROFILES` holds

* ``"data_source"``: the data a notebook reads unless told otherwise (``"mini"``: the generated
  mini data sets; ``"zenodo"``: the published data);
* ``"needs_gpu"``: whether the profile is sized for a GPU (notebooks refuse to train it on a
  CPU unless allowed);
* ``"forensics_models"``: how many of notebook 03's task models notebook 04 searches for its
  claims (:mod:`drifthelpers.forensics_models`: each model is a unit of the interval);

and, per drift control, the settings of each data set:

* ``"synthesis"``: the :class:`~drifthelpers.synthesis.SynthesisConfig` fields of notebook 03
  (drift forensics, notebook 04, searches a task model that notebook 03 trained, so it reads
  this section too);
* ``"optimisation"``: the :class:`~drifthelpers.optimisation.JointConfig` fields of notebook 05;
  ``"optimisation_raw2logit"``: its epochs and batch size in fidelity ``"raw2logit"``
  (:func:`drifthelpers.optimisation_fidelity.protocol`).

Adding a profile is one entry of :data:`PROFILES`; ``python -m drifthelpers run/sweep
--profile`` accept every name in it. This module imports nothing heavy (the command line reads
it to build its parser).

Example:
    >>> NAMES
    ('quick', 'study', 'paper')
    >>> settings("synthesis", "quick", "microscopy")["model"]
    'small_cnn'
"""

from __future__ import annotations

__all__ = ["PROFILES", "NAMES", "SECTIONS", "DATASETS", "check_name", "settings", "section"]

#: The drift controls with settings in a profile.
SECTIONS: tuple[str, ...] = ("synthesis", "optimisation")
#: The data sets every section has settings for.
DATASETS: tuple[str, ...] = ("microscopy", "drone")

PROFILES: dict[str, dict] = {
    # minutes on 2 CPU cores, on the mini data sets
    "quick": {
        "data_source": "mini",
        "needs_gpu": False,
        "forensics_models": 1,
        "job_threads": 0,
        "synthesis": {
            "microscopy": dict(model="small_cnn", epochs=15, batch_size=16, lr=1e-3, n_splits=2, image_size=64),
            "drone": dict(model="small_unet", epochs=12, batch_size=8, lr=1e-3, n_splits=2, image_size=48),
        },
        # a few minutes for both mini data sets x 3 arms x 3 seeds
        "optimisation": {
            "microscopy": dict(model="small_cnn", epochs=12, batch_size=8, lr=2e-3, data_lr=2e-3, image_size=64,
                               learn_demosaic=False),
            "drone": dict(model="small_unet", epochs=12, batch_size=4, lr=2e-3, data_lr=2e-3, image_size=48,
                          learn_demosaic=False),
        },
        # the published batch 32; 30 epochs, not 60, keep notebook 05 within ~3x of the corrected run
        "optimisation_raw2logit": dict(epochs=30, batch_size=32),
    },
    # sized to decide the claims the simulated data can decide, on 2 CPU cores (notebooks
    # 03-05 <= 90 min, <= 4 GB: benchmarks/bench_study.py); the task model sees the rendered
    # pixels (image_size 0); the sizes come from the power calculation of docs/statistics.md.
    # "data": the mini sets it reads, built into <data root>/<root> with these sizes;
    # "optimisation_seeds": training seeds per arm of notebook 05 (paired by seed).
    "study": {
        "data_source": "mini",
        "needs_gpu": False,
        "forensics_models": 5,  # one model's search moves with its training noise
        "job_threads": 1,  # the same numbers on one core as on two (jobs side by side)
        "data": {"root": "study", "mini": dict(n_microscopy=288, n_drone=96, size=64)},
        "optimisation_seeds": 20,
        "synthesis": {
            "microscopy": dict(model="small_cnn", epochs=15, batch_size=16, lr=1e-3, n_splits=16, n_seeds=1,
                               image_size=0),
            "drone": dict(model="small_unet", epochs=12, batch_size=8, lr=1e-3, n_splits=8, n_seeds=1,
                          image_size=0),
        },
        "optimisation": {
            "microscopy": dict(model="small_cnn", epochs=12, batch_size=8, lr=2e-3, data_lr=2e-3, image_size=0,
                               learn_demosaic=False),
            "drone": dict(model="small_unet", epochs=12, batch_size=4, lr=2e-3, data_lr=2e-3, image_size=0,
                          learn_demosaic=False),
        },
        "optimisation_raw2logit": dict(epochs=30, batch_size=32),  # as quick
    },
    # the published sizes and hyper-parameters (GPU machine, real Zenodo data)
    "paper": {
        "data_source": "zenodo",
        "needs_gpu": True,
        "forensics_models": 1,
        "job_threads": 0,  # a GPU computes each job; nothing to fix on the CPU
        "synthesis": {
            "microscopy": dict(model="resnet18", epochs=100, batch_size=4, lr=1e-5, n_splits=5, image_size=0,
                               fractions=(0.8, 0.2)),
            "drone": dict(model="unetplusplus", epochs=100, batch_size=4, lr=1e-5, n_splits=5, image_size=0,
                          fractions=(0.8, 0.2)),
        },
        # data_lr is not published; 1e-3 is a guess
        "optimisation": {
            "microscopy": dict(model="resnet18", epochs=100, batch_size=4, lr=1e-5, data_lr=1e-3, image_size=0,
                               fractions=(0.8, 0.2)),
            "drone": dict(model="unetplusplus", epochs=100, batch_size=4, lr=1e-5, data_lr=1e-3, image_size=0,
                          fractions=(0.8, 0.2)),
        },
        "optimisation_raw2logit": dict(epochs=60, batch_size=32),  # the published figure's
    },
}

#: The profile names, in the table's order (the command line's ``--profile`` choices).
NAMES: tuple[str, ...] = tuple(PROFILES)


def check_name(profile: str) -> str:
    """``profile`` if it names a profile.

    Raises:
        ValueError: naming the known profiles.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {NAMES}, got {profile!r}")
    return profile


def section(control: str) -> dict[str, dict[str, dict]]:
    """One drift control's settings of every profile: ``{profile: {dataset: settings}}``.

    Example:
        >>> section("optimisation")["paper"]["drone"]["model"]
        'unetplusplus'
    """
    if control not in SECTIONS:
        raise ValueError(f"control must be one of {SECTIONS}, got {control!r}")
    return {name: entry[control] for name, entry in PROFILES.items()}


def settings(control: str, profile: str, dataset: str) -> dict:
    """A copy of the settings of one drift control, profile and data set.

    Raises:
        ValueError: an unknown control, profile or data set.
    """
    entry = section(control)[check_name(profile)]
    if dataset not in entry:
        raise ValueError(f"dataset must be one of {tuple(entry)}, got {dataset!r}")
    return dict(entry[dataset])
