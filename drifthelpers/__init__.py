"""drifthelpers: dataset drift controls with physical data models of optical images.

One module per concept (``docs/design.md`` lists them); they are imported on first use,
so that ``import drifthelpers`` and ``python -m drifthelpers --help`` stay fast::

    from drifthelpers import raw, sensor, scenes, datasets, isp, fastisp, models, training
    from drifthelpers import corruptions, synthesis, forensics, optimisation, plotting, widgets, batch
    from drifthelpers import parallel, sweep, fileio, exercises
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "raw",
    "sensor",
    "scenes",
    "datasets",
    "isp",
    "fastisp",
    "models",
    "training",
    "corruptions",
    "synthesis",
    "forensics",
    "optimisation",
    "plotting",
    "widgets",
    "batch",
    "parallel",
    "sweep",
    "fileio",
    "exercises",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
