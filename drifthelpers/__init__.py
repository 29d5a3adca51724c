"""drifthelpers: dataset drift controls with physical data models of optical images.

One module per concept, in the order of the data path (``docs/design.md`` lists them); they
are imported on first use, so that ``import drifthelpers`` and ``python -m drifthelpers --help``
stay fast::

    from drifthelpers import raw, camera, sensor, scenes, datasets, isp, corruptions
    from drifthelpers import models, training, profiles, synthesis, synthesis_fidelity, ablation
    from drifthelpers import forensics, envelope, optimisation, stats, claims, power
    from drifthelpers import plotting, widgets, exercises, batch, runreport, book
    from drifthelpers import sweep, parallel, fileio

``fastisp``, ``isp_raw2logit`` and ``dataverify`` are the short names of
``drifthelpers.isp.fastisp``, ``drifthelpers.isp.raw2logit`` and ``drifthelpers.datasets.verify``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "raw",
    "camera",
    "sensor",
    "scenes",
    "datasets",
    "isp",
    "corruptions",
    "models",
    "training",
    "profiles",
    "synthesis",
    "synthesis_fidelity",
    "ablation",
    "forensics",
    "envelope",
    "optimisation",
    "stats",
    "claims",
    "power",
    "plotting",
    "widgets",
    "exercises",
    "batch",
    "runreport",
    "book",
    "sweep",
    "parallel",
    "fileio",
)

# short names of modules that live in a subpackage
_ALIASES = {
    "fastisp": "isp.fastisp",
    "isp_raw2logit": "isp.raw2logit",
    "dataverify": "datasets.verify",
}

__all__ = ["__version__", *_SUBMODULES, *_ALIASES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _ALIASES:
        return importlib.import_module(f"{__name__}.{_ALIASES[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
