"""The paper's twelve static data models by label: ``PRESETS`` and what each code means.

A preset label ``"d,s,n"`` names a demosaicer ``d`` (``bi`` bilinear, ``ma`` Malvar 2004,
``me`` Menon 2007), a sharpener ``s`` (``s`` the 3x3 kernel, ``u`` the unsharp mask) and a
denoiser ``n`` (``me`` median 3x3, ``ga`` Gaussian sigma 0.5), all on the luma. Rendering a
preset is :func:`drifthelpers.isp.render` (:mod:`drifthelpers.isp.static`).
"""

from __future__ import annotations

from .tables import DEMOSAIC_METHODS

__all__ = ["PRESETS", "DEMOSAIC_METHODS", "parse_preset", "describe_presets"]

_SHARPENERS: dict[str, str] = {"s": "3x3 sharpening kernel [[0,-1,0],[-1,5,-1],[0,-1,0]] on luma",
                               "u": "unsharp mask, radius 1, amount 1, isotropic 2-D, on luma"}
_DENOISERS: dict[str, str] = {"me": "median 3x3 on luma", "ga": "Gaussian sigma 0.5 (5x5 window) on luma"}

#: The twelve static data models in the paper's order: index = 4*d + 2*s + n.
PRESETS: tuple[str, ...] = tuple(f"{d},{s},{n}" for d in DEMOSAIC_METHODS for s in _SHARPENERS for n in _DENOISERS)


def parse_preset(preset: str) -> tuple[str, str, str]:
    """Split a preset label into (demosaic, sharpen, denoise) codes.

    Example:
        >>> parse_preset("ma,u,ga")
        ('ma', 'u', 'ga')
    """
    if not isinstance(preset, str) or preset.replace(" ", "") not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    d, s, n = preset.replace(" ", "").split(",")
    return d, s, n


def describe_presets() -> list[dict]:
    """The twelve static data models in the paper's order, in words.

    Returns:
        One dict per preset: ``index``, ``label``, ``demosaic``, ``sharpen``, ``denoise``.

    Example:
        >>> describe_presets()[5]["label"], describe_presets()[5]["demosaic"]
        ('ma,s,ga', 'malvar2004')
    """
    out = []
    for i, label in enumerate(PRESETS):
        d, s, n = parse_preset(label)
        out.append({"index": i, "label": label, "demosaic": DEMOSAIC_METHODS[d],
                    "sharpen": _SHARPENERS[s], "denoise": _DENOISERS[n]})
    return out
