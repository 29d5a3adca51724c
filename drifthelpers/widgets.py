"""The interactive ISP explorer: turn the data model's knobs and watch the image change.

:func:`isp_explorer` shows one raw mosaic rendered through a data model whose components
you choose (demosaicer, sharpener, denoiser) and whose camera values you nudge (black
level, white-balance gains of R and B, display gamma), next to the difference from the
reference view ``bi,s,ga`` and the histogram of the result.

The pixels come from :func:`render_settings`, a pure function that runs the one ISP chain
(:func:`drifthelpers.isp.chain.run_stages`, the stages the static presets and the parametrized
model run too) with the chosen components and values; with zero offsets and camera values it
equals :func:`drifthelpers.isp.render` for each of the twelve presets (tested), and ``"none"``
skips the sharpening or denoising stage.

Interactive or static? ipywidgets need a live front end (JupyterLab, Notebook 7, VS Code);
papermill, nbval and plain scripts have none, and a widget there shows up as a line of text.
``interactive=None`` (the default) therefore decides as follows:

1. the environment variable ``DRIFTHELPERS_STATIC_WIDGETS=1`` forces the static figure;
2. on Google Colab (``google.colab`` imported by its kernel) the widgets are used, after
   switching on Colab's custom widget manager (``output.enable_custom_widget_manager()``),
   without which Colab does not draw third-party ipywidgets;
3. otherwise the widgets are used only inside an IPython *kernel* that a Jupyter server
   started for a notebook session (it sets ``JPY_SESSION_NAME``: JupyterLab, Binder) or that
   VS Code runs (``__vsc_ipynb_file__`` in the user namespace);
4. everything else (papermill, nbval, scripts, a terminal IPython) gets a static
   matplotlib figure: a small grid of settings with their difference maps.

Pass ``interactive=True`` or ``False`` to decide yourself. Batch runs started *from inside*
a JupyterLab kernel inherit its ``JPY_SESSION_NAME``; set ``DRIFTHELPERS_STATIC_WIDGETS=1``
there if you want static figures in them.

Figures are drawn on :class:`matplotlib.figure.Figure` objects, not through ``pyplot``, so
they never pile up in pyplot's figure list and a notebook displays a returned figure once.
The live explorer shows its picture as a PNG in an ``ipywidgets.Image``, which needs no
interactive matplotlib backend.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from typing import Any, Mapping, Sequence

import ipywidgets as W
import numpy as np
import torch
from torch import Tensor

from . import isp
from .isp.chain import ChainValues, component_ops, run_stages

__all__ = [
    "DEMOSAICERS",
    "SHARPENERS",
    "DENOISERS",
    "REFERENCE",
    "STATIC_SETTINGS",
    "render_settings",
    "settings_label",
    "frontend_available",
    "static_explorer",
    "isp_explorer",
    "ISPExplorer",
    "plot_stage_histograms",
]

#: Choices of each component; ``"none"`` skips the stage.
DEMOSAICERS: tuple[str, ...] = ("bi", "ma", "me")
SHARPENERS: tuple[str, ...] = ("s", "u", "none")
DENOISERS: tuple[str, ...] = ("me", "ga", "none")
#: The reference view differences are measured against (the parametrized model's initial view).
REFERENCE: str = "bi,s,ga"
_BLACK_UNITS = ("dn", "fraction")
_DIFF_VMAX = 0.1  # difference maps share one colour scale: 0 ... 10 % of full scale

#: The settings the static fallback shows: components swapped, then camera values nudged.
STATIC_SETTINGS: tuple[dict[str, Any], ...] = (
    {},
    {"demosaic": "ma", "sharpen": "s", "denoise": "me"},
    {"demosaic": "me", "sharpen": "u", "denoise": "ga"},
    {"sharpen": "none", "denoise": "none"},
    {"black_offset": 0.01, "black_unit": "fraction"},
    {"wb_gains": "R x1.3"},
    {"gamma": 1.6},
)


# --------------------------------------------------------------------------- pure rendering


def _as_raw(raw) -> Tensor:
    """A float tensor of shape (*, 1, H, W) from a tensor or array of shape (H, W) or (*, 1, H, W)."""
    if isinstance(raw, np.ndarray):
        raw = torch.from_numpy(np.asarray(raw, dtype=np.float32))
    if not isinstance(raw, Tensor):
        raise ValueError(f"raw must be a torch.Tensor or numpy array mosaic, got {type(raw).__name__}")
    if not raw.is_floating_point():
        raw = raw.float()
    if raw.dim() == 2:
        raw = raw[None]
    if raw.dim() < 3 or raw.shape[-3] != 1:
        raise ValueError(f"raw must have shape (H, W) or (*, 1, H, W), got {tuple(raw.shape)}")
    return raw


def _as_camera(camera) -> isp.CameraParams:
    if isinstance(camera, isp.CameraParams):
        return camera
    if isinstance(camera, Mapping) or all(hasattr(camera, k) for k in ("cfa", "black_level", "white_level")):
        return isp.CameraParams.from_dataset_camera(camera)
    raise ValueError(f"camera must be an isp.CameraParams or a data set camera, got {type(camera).__name__}")


def _choice(value, allowed: Sequence[str], name: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value.strip().lower()


def _finite(value, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _resolve_gains(wb_gains, camera: isp.CameraParams) -> tuple[float, float, float]:
    if wb_gains is None:
        return camera.wb_gains
    if isinstance(wb_gains, str):
        raise ValueError(f"wb_gains must be None, (R, B) or (R, G, B) numbers, got {wb_gains!r}")
    try:
        values = [_finite(g, "wb_gains") for g in wb_gains]
    except TypeError:
        raise ValueError(f"wb_gains must be None, (R, B) or (R, G, B) numbers, got {wb_gains!r}") from None
    if len(values) == 2:
        return (values[0], camera.wb_gains[1], values[1])
    if len(values) == 3:
        return tuple(values)
    raise ValueError(f"wb_gains must have 2 values (R, B) or 3 (R, G, B), got {len(values)}")


def _black_dn(black_offset, black_unit: str, camera: isp.CameraParams) -> tuple[float, ...]:
    unit = _choice(black_unit, _BLACK_UNITS, "black_unit")
    offset = _finite(black_offset, "black_offset")
    dn = offset * camera.white_level if unit == "fraction" else offset
    black = tuple(b + dn for b in camera.black_level)
    if min(black) < 0 or max(black) >= camera.white_level:
        raise ValueError(
            f"black_offset {black_offset} ({unit}) moves the black level to {min(black):g}..{max(black):g} DN, "
            f"outside [0, white level {camera.white_level:g})"
        )
    return black


def render_settings(
    raw,
    camera,
    demosaic: str = "bi",
    sharpen: str = "s",
    denoise: str = "ga",
    black_offset: float = 0.0,
    wb_gains: Sequence[float] | None = None,
    gamma: float | None = None,
    *,
    black_unit: str = "dn",
    return_stages: bool = False,
):
    """Render a raw mosaic with chosen ISP components and nudged camera values.

    The chain of :mod:`drifthelpers.isp.chain` stage by stage
    (:func:`drifthelpers.isp.chain.run_stages`): black level → demosaic → white balance →
    colour matrix → sharpen (luma) → denoise (luma) → clip → gamma. With zero
    ``black_offset`` and ``wb_gains``/``gamma`` left at ``None`` it equals
    :func:`drifthelpers.isp.render` of the preset ``"demosaic,sharpen,denoise"`` (to float
    rounding: ``render`` runs the same stages fused).

    Args:
        raw: mosaic in DN, shape (H, W) or (*, 1, H, W) (a data set item's ``raw`` works).
        camera: :class:`drifthelpers.isp.CameraParams` (or a data set's camera).
        demosaic: ``"bi"`` (bilinear), ``"ma"`` (Malvar 2004) or ``"me"`` (Menon 2007).
        sharpen: ``"s"`` (3x3 kernel), ``"u"`` (unsharp mask) or ``"none"`` (skip the stage).
        denoise: ``"me"`` (median 3x3), ``"ga"`` (Gaussian σ 0.5) or ``"none"`` (skip).
        black_offset: added to the camera's black level at every CFA site, in DN, or as a
            fraction of the white level with ``black_unit="fraction"``. The resulting black
            level must stay in [0, white level).
        wb_gains: ``None`` for the camera's gains, ``(R, B)`` (green kept) or ``(R, G, B)``.
        gamma: display gamma (> 0); ``None`` for the camera's.
        black_unit: ``"dn"`` or ``"fraction"`` (of the white level).
        return_stages: also return an OrderedDict of every stage's output, keyed as
            :data:`drifthelpers.isp.STAGES` (skipped stages absent).

    Returns:
        sRGB-gamma image(s) in [0, 1], shape (*, 3, H, W) (and the stages if asked).

    Raises:
        ValueError: a choice or value out of range; the message names the argument.

    Example:
        >>> cam = isp.CameraParams("RGGB", (0.0,) * 4, 1.0)
        >>> x = torch.rand(1, 1, 16, 16)
        >>> bool((render_settings(x, cam, "ma", "u", "me") - isp.render(x, "ma,u,me", cam)).abs().max() < 1e-5)
        True
    """
    camera = _as_camera(camera)
    raw = _as_raw(raw)
    d = _choice(demosaic, DEMOSAICERS, "demosaic")
    s = _choice(sharpen, SHARPENERS, "sharpen")
    n = _choice(denoise, DENOISERS, "denoise")
    black = _black_dn(black_offset, black_unit, camera)
    gains = _resolve_gains(wb_gains, camera)
    g = camera.gamma if gamma is None else _finite(gamma, "gamma")
    if not g > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")

    like = dict(dtype=raw.dtype, device=raw.device)
    # the unsharp amount as a value of the image (the form of isp.unsharp_mask), not a constant
    ops = component_ops(d, s, n, raw, unsharp_amount=torch.ones((), **like))
    values = ChainValues(camera.cfa, torch.tensor(black, **like), torch.tensor(camera.white_level, **like),
                         torch.tensor(gains, **like), torch.tensor(camera.ccm, **like), g, *ops)
    x, stages = run_stages(raw, values)
    return (x, stages) if return_stages else x


def settings_label(demosaic: str = "bi", sharpen: str = "s", denoise: str = "ga", black_offset: float = 0.0,
                   wb_gains=None, gamma: float | None = None, *, black_unit: str = "dn", camera=None) -> str:
    """A short title for a setting, e.g. ``"ma,s,me"`` or ``"bi,s,ga  black +1 %"``."""
    parts = [f"{demosaic},{sharpen},{denoise}"]
    if black_offset:
        if black_unit == "fraction":
            parts.append(f"black {black_offset:+.1%}".replace("%", " %"))
        else:
            parts.append(f"black {black_offset:+g} DN")
    if wb_gains is not None:
        if camera is not None:
            cam = _as_camera(camera)
            gains = _resolve_gains(wb_gains, cam)
            ratios = [f"{c} x{g / c0:.2g}" for c, g, c0 in zip("RGB", gains, cam.wb_gains) if abs(g - c0) > 1e-9 and c0]
            parts.append("WB " + (", ".join(ratios) or "camera"))
        else:
            parts.append("WB " + ", ".join(f"{g:.3g}" for g in wb_gains))
    if gamma is not None:
        parts.append(f"γ {gamma:g}")
    return "  ".join(parts)


def _mean_abs(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().mean())


def _diff_map(a: Tensor, b: Tensor) -> np.ndarray:
    """Mean over channels of |a - b| as an (H, W) array (first image of a batch)."""
    d = (a - b).abs()
    while d.dim() > 3:
        d = d[0]
    return d.mean(dim=0).detach().cpu().numpy()


def _hwc(rgb: Tensor) -> np.ndarray:
    while rgb.dim() > 3:
        rgb = rgb[0]
    return rgb.detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy()


# --------------------------------------------------------------------------- static fallback


def _expand_static(setting: Mapping[str, Any], camera: isp.CameraParams) -> dict[str, Any]:
    kw = dict(setting)
    wb = kw.get("wb_gains")
    if isinstance(wb, str):  # "R x1.3" / "B x0.8": scale one camera gain
        try:
            chan, factor = wb.split()
            gains = list(camera.wb_gains)
            gains["RGB".index(chan.upper())] *= float(factor.lstrip("x"))
        except ValueError:
            raise ValueError(f"wb_gains as a string must look like 'R x1.3' (channel, factor), got {wb!r}") from None
        kw["wb_gains"] = tuple(gains)
    return kw


def static_explorer(raw, camera, settings: Sequence[Mapping[str, Any]] | None = None, *, size: float = 1.9,
                    title: str = ""):
    """The explorer as a static figure: each setting's image over its difference from ``bi,s,ga``.

    Args:
        raw: one mosaic in DN, shape (H, W) or (1, 1, H, W).
        camera: camera values (see :func:`render_settings`).
        settings: keyword dicts for :func:`render_settings` (default :data:`STATIC_SETTINGS`);
            ``wb_gains`` may also be a string such as ``"R x1.3"`` (scale one camera gain).
        size: inches per panel.
        title: figure title.

    Returns:
        A :class:`matplotlib.figure.Figure` (not registered with pyplot).
    """
    from matplotlib.figure import Figure

    camera = _as_camera(camera)
    raw = _as_raw(raw)
    settings = list(STATIC_SETTINGS if settings is None else settings)
    if not settings:
        raise ValueError("settings must hold at least one setting")
    with torch.no_grad():
        ref = render_settings(raw, camera)
        views = []
        for setting in settings:
            kw = _expand_static(setting, camera)
            label = settings_label(**kw, camera=camera)
            if not kw:
                label += "  (reference)"
            views.append((label, render_settings(raw, camera, **kw)))
    n = len(views)
    fig = Figure(figsize=(size * n, 2 * size + 0.9), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    im = None
    for k, (label, rgb) in enumerate(views):
        top, bottom = axes[0, k], axes[1, k]
        top.imshow(_hwc(rgb), interpolation="nearest")
        top.set_title(label.replace("  ", "\n", 1) if len(label) > 10 else label, fontsize=8)
        im = bottom.imshow(_diff_map(rgb, ref), cmap="magma", vmin=0, vmax=_DIFF_VMAX, interpolation="nearest")
        bottom.set_title(f"mean |Δ| {_mean_abs(rgb, ref):.4f}", fontsize=8)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("rendered view", fontsize=8)
    axes[1, 0].set_ylabel(f"|view − {REFERENCE}|", fontsize=8)
    fig.colorbar(im, ax=list(axes[1, :]), shrink=0.9, label="|Δ| (mean over R, G, B)")
    fig.suptitle(title or f"ISP explorer (static): settings vs the reference {REFERENCE}", fontsize=10)
    return fig


# --------------------------------------------------------------------------- interactive explorer


def frontend_available() -> bool:
    """Whether :func:`isp_explorer` should build live widgets (see the module docstring)."""
    if os.environ.get("DRIFTHELPERS_STATIC_WIDGETS", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return False
    shell = get_ipython()
    if shell is None:
        return False
    if "google.colab" in sys.modules:
        return _enable_colab_widgets()
    if "IPKernelApp" not in shell.config:
        return False
    return bool(os.environ.get("JPY_SESSION_NAME")) or "__vsc_ipynb_file__" in shell.user_ns


def _enable_colab_widgets() -> bool:
    """Switch on Colab's manager for third-party widgets; False where that is impossible."""
    try:
        from google.colab import output
    except ImportError:
        return False
    enable = getattr(output, "enable_custom_widget_manager", None)
    if enable is None:  # a Colab too old to draw ipywidgets 8
        return False
    enable()
    return True


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


class ISPExplorer(W.VBox):
    """Live controls over :func:`render_settings`, an image of the result, its difference
    from ``bi,s,ga`` and its histogram.

    Attributes:
        controls: the input widgets by argument name (``demosaic``, ``sharpen``, ``denoise``,
            ``black_offset`` (% of the white level), ``wb_r``, ``wb_b``, ``gamma``,
            ``show_diff``, ``show_histogram``).
        image: the ``ipywidgets.Image`` holding the drawn PNG.
        status: an ``ipywidgets.HTML`` line with the setting and its mean |Δ|.
        rgb: the last rendered view, a tensor (3, H, W).
        mean_abs_diff: its mean |Δ| from the reference view.
    """

    def __init__(self, raw, camera, show_diff: bool = True, show_histogram: bool = True):
        camera = _as_camera(camera)
        raw = _as_raw(raw)
        while raw.dim() > 3:
            raw = raw[0]
        self.raw, self.camera = raw, camera
        self._muted = False
        with torch.no_grad():
            self.reference = render_settings(raw, camera)
        r0, g0, b0 = camera.wb_gains
        black_pct_min = -100.0 * min(camera.black_level) / camera.white_level
        style = {"description_width": "initial"}
        slider = dict(continuous_update=False, style=style, layout=W.Layout(width="320px"))

        def gain_slider(name: str, value: float) -> W.FloatSlider:
            lo, hi = sorted((0.25 * value, 2.5 * value)) if value else (-1.0, 1.0)
            return W.FloatSlider(value=value, min=lo, max=hi, step=abs(value) / 100 or 0.01,
                                 description=f"{name} gain", readout_format=".3f", **slider)

        self.controls = {
            "demosaic": W.ToggleButtons(options=list(DEMOSAICERS), value="bi", description="demosaic",
                                        tooltips=["bilinear", "Malvar-He-Cutler 2004", "Menon 2007 (DDFAPD)"],
                                        style={"button_width": "48px"}),
            "sharpen": W.ToggleButtons(options=list(SHARPENERS), value="s", description="sharpen",
                                       tooltips=["3x3 kernel", "unsharp mask r=1", "skip"],
                                       style={"button_width": "48px"}),
            "denoise": W.ToggleButtons(options=list(DENOISERS), value="ga", description="denoise",
                                       tooltips=["median 3x3", "Gaussian σ 0.5", "skip"],
                                       style={"button_width": "48px"}),
            "black_offset": W.FloatSlider(value=0.0, min=max(black_pct_min, -5.0), max=5.0, step=0.05,
                                          description="black level offset (% of white)", readout_format=".2f",
                                          **slider),
            "wb_r": gain_slider("R", r0),
            "wb_b": gain_slider("B", b0),
            "gamma": W.FloatSlider(value=camera.gamma, min=1.0, max=3.5, step=0.05, description="gamma",
                                   readout_format=".2f", **slider),
            "show_diff": W.Checkbox(value=bool(show_diff), description=f"difference vs {REFERENCE}", indent=False),
            "show_histogram": W.Checkbox(value=bool(show_histogram), description="histogram", indent=False),
        }
        reset = W.Button(description="reset", tooltip=f"back to {REFERENCE} with the camera's values")
        reset.on_click(lambda _: self.reset())
        self.image = W.Image(format="png")
        self.status = W.HTML()
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        c = self.controls
        super().__init__([
            W.HBox([c["demosaic"], c["sharpen"], c["denoise"]]),
            W.HBox([W.VBox([c["black_offset"], c["gamma"]]), W.VBox([c["wb_r"], c["wb_b"]]),
                    W.VBox([c["show_diff"], c["show_histogram"], reset])]),
            self.status,
            self.image,
        ])
        self.update()

    def settings(self) -> dict[str, Any]:
        """The current keyword arguments of :func:`render_settings`."""
        c = self.controls
        return {"demosaic": c["demosaic"].value, "sharpen": c["sharpen"].value, "denoise": c["denoise"].value,
                "black_offset": c["black_offset"].value / 100.0, "black_unit": "fraction",
                "wb_gains": (c["wb_r"].value, self.camera.wb_gains[1], c["wb_b"].value),
                "gamma": c["gamma"].value}

    def reset(self) -> None:
        """Controls back to ``bi,s,ga`` with the camera's values (one redraw)."""
        c, cam = self.controls, self.camera
        self._muted = True
        try:
            for name, value in (("demosaic", "bi"), ("sharpen", "s"), ("denoise", "ga"), ("black_offset", 0.0),
                                ("wb_r", cam.wb_gains[0]), ("wb_b", cam.wb_gains[2]), ("gamma", cam.gamma)):
                c[name].value = value
        finally:
            self._muted = False
        self.update()

    def _on_change(self, change=None) -> None:
        if not self._muted:
            self.update()

    def update(self) -> None:
        """Render the current setting and redraw (the observer of every control)."""
        kw = self.settings()
        start = time.perf_counter()
        try:
            with torch.no_grad():
                self.rgb = render_settings(self.raw, self.camera, **kw)
        except ValueError as exc:  # e.g. a black level pushed above white: say so, keep the last image
            self.status.value = f"<b>cannot render:</b> {exc}"
            return
        ms = 1000 * (time.perf_counter() - start)
        self.mean_abs_diff = _mean_abs(self.rgb, self.reference)
        self.image.value = _png(self._figure())
        label = ",".join((kw["demosaic"], kw["sharpen"], kw["denoise"]))
        self.status.value = (f"<code>{label}</code> &nbsp; black {kw['black_offset']:+.2%} of white &nbsp; "
                             f"WB R {kw['wb_gains'][0]:.3f}, B {kw['wb_gains'][2]:.3f} &nbsp; "
                             f"γ {kw['gamma']:.2f} &nbsp;|&nbsp; mean |Δ| vs {REFERENCE}: "
                             f"<b>{self.mean_abs_diff:.4f}</b> &nbsp; ({ms:.0f} ms)")

    def _figure(self):
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullLocator

        panels = 1 + self.controls["show_diff"].value + self.controls["show_histogram"].value
        fig = Figure(figsize=(3.2 * panels, 3.2))  # fixed margins: a constrained layout doubles the draw time
        fig.subplots_adjust(left=0.02 if panels == 1 else 0.01, right=0.98 if panels == 1 else 0.97,
                            bottom=0.14, top=0.9, wspace=0.4)
        axes = fig.subplots(1, panels, squeeze=False)[0]
        axes[0].imshow(_hwc(self.rgb), interpolation="nearest")
        axes[0].set_title("rendered view", fontsize=9)
        axes[0].axis("off")
        k = 1
        if self.controls["show_diff"].value:
            im = axes[k].imshow(_diff_map(self.rgb, self.reference), cmap="magma", vmin=0, vmax=_DIFF_VMAX)
            axes[k].set_title(f"|view − {REFERENCE}|, mean {self.mean_abs_diff:.4f}", fontsize=9)
            axes[k].axis("off")
            fig.colorbar(im, ax=axes[k], fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
            k += 1
        if self.controls["show_histogram"].value:
            ax = axes[k]
            bins = np.linspace(0, 1, 65)
            for c, colour in enumerate(("tab:red", "tab:green", "tab:blue")):
                ax.stairs(np.histogram(self.rgb[c].numpy(), bins)[0] + 0.5, bins, color=colour, baseline=0.5)
            ax.stairs(np.histogram(self.reference[1].numpy(), bins)[0] + 0.5, bins, color="0.5", ls="--",
                      baseline=0.5, label=f"G of {REFERENCE}")
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_xlim(0, 1)
            ax.set_xlabel("sRGB-gamma value", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7, loc="upper left")
            ax.set_title("histogram of R, G, B (log)", fontsize=9)
        return fig


def isp_explorer(raw, camera, *, interactive: bool | None = None, show_diff: bool = True,
                 show_histogram: bool = True, settings: Sequence[Mapping[str, Any]] | None = None):
    """An interactive ISP explorer for one raw mosaic, or its static stand-in when headless.

    Controls: demosaicer (``bi``/``ma``/``me``), sharpener (``s``/``u``/``none``), denoiser
    (``me``/``ga``/``none``), black-level offset (in % of the white level), white-balance
    gains of R and B, display gamma; a reset button. Shown: the rendered view, optionally its
    difference from ``bi,s,ga`` (one fixed colour scale, 0 … 0.1) and its histogram.

    Args:
        raw: one mosaic in DN, shape (H, W), (1, H, W) or (1, 1, H, W). Each change re-renders
            it, so keep it small (a crop of a few hundred pixels renders in tens of ms).
        camera: :class:`drifthelpers.isp.CameraParams` or a data set's camera.
        interactive: ``True`` live widgets, ``False`` the static figure, ``None`` decide (see
            the module docstring: static unless a notebook front end is detected, and always
            static with ``DRIFTHELPERS_STATIC_WIDGETS=1``).
        show_diff, show_histogram: initial state of the two optional panels (interactive).
        settings: the settings of the static figure (default :data:`STATIC_SETTINGS`).

    Returns:
        An :class:`ISPExplorer` (an ``ipywidgets.VBox``) when interactive, otherwise a
        :class:`matplotlib.figure.Figure`. Either displays itself as a cell's last value.

    Raises:
        ValueError: ``interactive`` not ``None``/``True``/``False``, or a bad ``raw``/``camera``.
    """
    if interactive is not None and not isinstance(interactive, bool):
        raise ValueError(f"interactive must be None, True or False, got {interactive!r}")
    camera = _as_camera(camera)
    raw = _as_raw(raw)
    if raw.numel() != raw.shape[-1] * raw.shape[-2]:
        raise ValueError(f"raw must hold one mosaic, got shape {tuple(raw.shape)}")
    if interactive is None:
        interactive = frontend_available()
    if not interactive:
        return static_explorer(raw, camera, settings)
    return ISPExplorer(raw, camera, show_diff=show_diff, show_histogram=show_histogram)


# --------------------------------------------------------------------------- stage histograms


def plot_stage_histograms(stages: Mapping[str, Tensor], *, bins: int = 120, ncols: int = 4, size: float = 2.6,
                          title: str = ""):
    """One histogram per stage of a data model (the ``stages`` of ``render(..., return_stages=True)``).

    Colour images are drawn per channel (R, G, B), the mosaic in grey; counts on a log axis;
    dashed lines mark 0 and 1, and each panel reports the share of values outside [0, 1]
    (what the clip stage will cut). All panels share one value axis, so shifts and spreads
    compare across stages.

    Args:
        stages: stage name -> tensor (*, C, H, W) with C = 1 or 3 (first image of a batch is used).
        bins: histogram bins over the shared value range.
        ncols: panels per row.
        size: inches per panel.
        title: figure title.

    Returns:
        The (pyplot) ``Figure``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    if not stages:
        raise ValueError("stages must hold at least one stage")
    arrays = {}
    for name, t in stages.items():
        t = t.detach()
        while t.dim() > 3:
            t = t[0]
        arrays[name] = t.float().cpu().numpy()
    lo = min(-0.05, min(float(a.min()) for a in arrays.values()))
    hi = max(1.05, max(float(a.max()) for a in arrays.values()))
    edges = np.linspace(lo, hi, bins + 1)
    n = len(arrays)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, 0.8 * size * nrows + (0.3 if title else 0)),
                             sharex=True, squeeze=False)
    colours = ("tab:red", "tab:green", "tab:blue")
    for ax, (name, a) in zip(axes.ravel(), arrays.items()):
        channels = [(a[0], "0.3")] if a.shape[0] == 1 else list(zip(a, colours))
        for values, colour in channels:
            counts = np.histogram(values, edges)[0]
            ax.stairs(counts + 0.5, edges, color=colour, baseline=0.5, lw=1)
        for x in (0.0, 1.0):
            ax.axvline(x, color="0.5", ls="--", lw=0.8)
        outside = float(np.mean((a < 0) | (a > 1)))
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(NullLocator())  # no tick search on the log axis (it dominates the draw time)
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_title(f"{name}\n{outside:.2%} outside [0, 1]", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("value", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
