"""The parametrized data model: the chain of :mod:`drifthelpers.isp.chain` with learnable values.

:class:`ParametrizedDataModel` runs the same stages as the static presets
(:func:`drifthelpers.isp.chain.run_chain`), with its continuous values as parameters, each kept
in a physically meaningful range by a projection (:meth:`ParametrizedDataModel.project_`); at
initialisation it equals the static ``bi,s,ga`` view (or the view of its demosaicer).
:func:`parametrized_data_model` also builds the public code's layout (fidelity
``"raw2logit"``, :mod:`drifthelpers.isp.raw2logit`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..camera import Camera as CameraParams
from .chain import ChainValues, _check_camera, run_chain
from .demosaicing import _DEMOSAIC_ALIASES, _DEMOSAICERS, _demosaic_linear
from .stages import _gaussian_kernel, _kernel_op
from .tables import _BILINEAR_KERNELS, _MALVAR_KERNELS, SHARPEN_KERNEL
from .tensors import _check_image

__all__ = ["ParametrizedDataModel", "parametrized_data_model"]


def _project_sum_box(w: Tensor, total: Tensor, lo: float, hi: float, iters: int = 60) -> Tensor:
    """Euclidean projection of each row of ``w`` (N, n) onto {sum = total, lo <= w <= hi}.

    The projection is ``clamp(w - tau, lo, hi)`` with ``tau`` found by bisection (the sum is
    monotone in ``tau``).
    """
    dtype = w.dtype
    w = w.double()
    total = total.reshape(-1, 1).to(device=w.device, dtype=torch.float64)
    lower = w.min(dim=-1, keepdim=True).values - hi  # every entry clamps to hi: sum = n * hi >= total
    upper = w.max(dim=-1, keepdim=True).values - lo  # every entry clamps to lo: sum = n * lo <= total
    for _ in range(iters):
        tau = 0.5 * (lower + upper)
        too_big = (w - tau).clamp(lo, hi).sum(dim=-1, keepdim=True) > total
        lower = torch.where(too_big, tau, lower)
        upper = torch.where(too_big, upper, tau)
    return (w - 0.5 * (lower + upper)).clamp(lo, hi).to(dtype)


class ParametrizedDataModel(nn.Module):
    """The differentiable data model: the static chain with learnable camera and filter values.

    Parameter groups (names as in :meth:`param_groups`) and how each stays physical: after
    every optimiser step call :meth:`project_`, which projects each group onto its set in
    :meth:`bounds` (a Euclidean projection; parameters are stored in natural units, so what
    you read is what the model uses).

    * ``black_level`` (4,): fraction of ``white_level`` per position, in [0, 0.5].
    * ``white_balance`` (3,): gains in [0.1, 10] (widened to hold the camera's values).
    * ``colour_matrix`` (3, 3): each row keeps its initial sum (1 for DNG-style matrices, so
      neutral stays neutral); entries in [-4, 4] (widened likewise).
    * ``sharpen`` (3, 3): sums to 1 (flat areas unchanged); entries in [-4, 8].
    * ``denoise`` (5, 5): non-negative and sums to 1 (a weighted mean); init Gaussian sigma 0.5.
    * ``gamma`` (1,): in [1, 4]; init the camera's gamma (2.2).
    * ``demosaic`` (4, 5, 5), only with ``learn_demosaic=True``: the four interpolation kernels
      of a linear demosaicer (G at R/B; R/B at G from row or from column neighbours; R at B and
      B at R), each summing to 1 with entries in [-2, 2]; init bilinear (``"bi"``) or Malvar
      (``"ma"``).

    That is 51 scalars, 151 with the demosaic kernels (the paper's model had 132, with 81
    debayering taps as a 3 -> 3 channel 3x3 convolution of the masked mosaic; the four 5x5
    kernels here cover both bilinear and Malvar initialisations, and "sums to 1" keeps flat
    grey flat).

    Projection rather than reparametrisation keeps values at the edge of their set (a black
    level of 0, a gain of exactly 1) representable and the stored numbers readable; the price
    is one call after each step. The black level is stored as a fraction of the white level so
    that every group has a scale of about 1 for the optimiser; :meth:`state_as_dict` reports it
    in DN too. A camera gain <= 0 (a fitted calibration can hold one) is folded into the
    matching colour-matrix column, which renders identically. Gains and matrix bounds widen
    to hold the camera's own values when those lie outside the defaults.

    At initialisation the model reproduces :class:`StaticDataModel` ``"bi,s,ga"`` (or the view
    of the chosen demosaicer) up to float rounding.

    Args:
        camera: camera values used for initialisation (pattern and white level stay fixed).
        demosaic: ``"bi"``, ``"ma"`` or ``"me"`` (fixed unless ``learn_demosaic``).
        learn_demosaic: learn the demosaicing kernels (linear demosaicers ``"bi"``/``"ma"`` only).

    Example:
        >>> cam = CameraParams("RGGB", (0.0,) * 4, 1.0)
        >>> model = ParametrizedDataModel(cam)
        >>> out, stages = model(torch.rand(1, 1, 8, 8), return_stages=True)
        >>> out.shape, list(stages)[:2]
        (torch.Size([1, 3, 8, 8]), ['black_level', 'demosaic'])
    """

    GROUPS: tuple[str, ...] = ("black_level", "demosaic", "white_balance", "colour_matrix", "sharpen", "denoise",
                               "gamma")

    def __init__(self, camera: CameraParams, demosaic: str = "bi", learn_demosaic: bool = False):
        super().__init__()
        self.camera = _check_camera(camera)
        key = _DEMOSAIC_ALIASES.get(demosaic) if isinstance(demosaic, str) else None
        if key is None:
            raise ValueError(f"demosaic must be one of {sorted(_DEMOSAIC_ALIASES)}, got {demosaic!r}")
        if learn_demosaic and key == "me":
            raise ValueError("learn_demosaic=True needs a linear demosaic ('bi' or 'ma'); 'me' is not linear")
        self.demosaic_method = key
        self.learn_demosaic = bool(learn_demosaic)
        self.cfa = camera.cfa
        self.white_level = float(camera.white_level)

        gains = torch.tensor(camera.wb_gains, dtype=torch.float64)
        ccm = torch.tensor(camera.ccm, dtype=torch.float64)
        if (gains == 0).any():
            raise ValueError(f"wb_gains must be non-zero, got {camera.wb_gains}")
        sign = torch.where(gains < 0, -1.0, 1.0).to(torch.float64)
        gains, ccm = gains.abs(), ccm * sign  # fold negative gains into the matrix columns
        wb_lo, wb_hi = min(0.1, float(gains.min())), max(10.0, float(gains.max()))
        cm_lo, cm_hi = min(-4.0, float(ccm.min())), max(4.0, float(ccm.max()))
        self._bounds = {
            "black_level": (0.0, 0.5), "white_balance": (wb_lo, wb_hi), "colour_matrix": (cm_lo, cm_hi),
            "sharpen": (-4.0, 8.0), "denoise": (0.0, 1.0), "gamma": (1.0, 4.0), "demosaic": (-2.0, 2.0),
        }
        if not 1.0 <= camera.gamma <= 4.0:
            raise ValueError(f"camera.gamma must lie in [1, 4] for the parametrized model, got {camera.gamma}")
        frac = torch.tensor(camera.black_level, dtype=torch.float64) / camera.white_level
        if float(frac.max()) > 0.5:
            raise ValueError(f"black_level must be at most half the white level, got {camera.black_level}")
        self._ccm_row_sums = ccm.sum(dim=1)
        # initial values in float64, so reset_parameters() is exact in any dtype
        self._init = {
            "black_level": frac, "white_balance": gains, "colour_matrix": ccm,
            "sharpen": torch.tensor(SHARPEN_KERNEL, dtype=torch.float64),
            "denoise": _gaussian_kernel(0.5, 5, frac), "gamma": torch.tensor([camera.gamma], dtype=torch.float64),
        }
        if self.learn_demosaic:
            if key == "bi":
                self._init["demosaic"] = F.pad(torch.tensor(_BILINEAR_KERNELS, dtype=torch.float64), (1, 1, 1, 1))
            else:
                self._init["demosaic"] = torch.tensor(_MALVAR_KERNELS, dtype=torch.float64)
        for name in self.GROUPS:
            if name in self._init:
                self.register_parameter(name, nn.Parameter(self._init[name].float()))
            else:
                self.register_parameter(name, None)

    @torch.no_grad()
    def reset_parameters(self) -> ParametrizedDataModel:
        """Set every parameter back to its initial value (exact in the parameters' dtype)."""
        for name, value in self._init.items():
            p = getattr(self, name)
            p.copy_(value.to(p))
        return self

    # -- groups and bounds

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by stage name (``demosaic`` only when learned).

        Example:
            >>> list(ParametrizedDataModel(CameraParams("RGGB", (0.0,) * 4, 1.0)).param_groups())
            ['black_level', 'white_balance', 'colour_matrix', 'sharpen', 'denoise', 'gamma']
        """
        return {name: [getattr(self, name)] for name in self.GROUPS if getattr(self, name) is not None}

    def freeze_all_but(self, *groups: str) -> ParametrizedDataModel:
        """Let only the named groups require gradients; returns ``self``.

        Raises:
            ValueError: a name that is not one of :meth:`param_groups`.
        """
        known = self.param_groups()
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise ValueError(f"groups must be among {list(known)}, got unknown {unknown}")
        for name, params in known.items():
            for p in params:
                p.requires_grad_(name in groups)
        return self

    def bounds(self) -> dict[str, dict]:
        """The set each group is projected onto, as a readable description."""
        b = self._bounds
        out = {
            "black_level": {"lower": b["black_level"][0], "upper": b["black_level"][1],
                            "unit": "fraction of white_level", "white_level": self.white_level},
            "white_balance": {"lower": b["white_balance"][0], "upper": b["white_balance"][1]},
            "colour_matrix": {"lower": b["colour_matrix"][0], "upper": b["colour_matrix"][1],
                              "row_sums": self._ccm_row_sums.tolist()},
            "sharpen": {"lower": b["sharpen"][0], "upper": b["sharpen"][1], "sum": 1.0},
            "denoise": {"lower": b["denoise"][0], "upper": b["denoise"][1], "sum": 1.0},
            "gamma": {"lower": b["gamma"][0], "upper": b["gamma"][1]},
        }
        if self.demosaic is not None:
            out["demosaic"] = {"lower": b["demosaic"][0], "upper": b["demosaic"][1], "sum": 1.0, "per": "kernel"}
        return out

    @torch.no_grad()
    def project_(self) -> ParametrizedDataModel:
        """Project every parameter onto its set (see :meth:`bounds`) in place; returns ``self``.

        Call it after each optimiser step. It is idempotent and leaves values inside their
        sets unchanged (up to float rounding for the sum constraints).
        """
        b = self._bounds
        self.black_level.clamp_(*b["black_level"])
        self.white_balance.clamp_(*b["white_balance"])
        self.gamma.clamp_(*b["gamma"])
        self.colour_matrix.copy_(_project_sum_box(self.colour_matrix, self._ccm_row_sums, *b["colour_matrix"]))
        one = self.sharpen.new_ones(1)
        self.sharpen.copy_(_project_sum_box(self.sharpen.reshape(1, -1), one, *b["sharpen"]).reshape(3, 3))
        self.denoise.copy_(_project_sum_box(self.denoise.reshape(1, -1), one, *b["denoise"]).reshape(5, 5))
        if self.demosaic is not None:
            k = self.demosaic
            ones = k.new_ones(k.shape[0])
            k.copy_(_project_sum_box(k.reshape(k.shape[0], -1), ones, *b["demosaic"]).reshape(k.shape))
        return self

    # -- forward

    def forward(self, raw: Tensor, return_stages: bool = False):
        """Render raw mosaics (DN) of shape (*, 1, H, W) to sRGB-gamma (*, 3, H, W) in [0, 1].

        With ``return_stages`` also returns an OrderedDict of every stage's output, keyed by
        stage (``black_level, demosaic, white_balance, colour_matrix, sharpen, denoise, clip,
        gamma``).
        """
        _check_image(raw, 1, "raw")
        white = torch.tensor(self.white_level, dtype=raw.dtype, device=raw.device)
        black = self.black_level.to(raw.dtype) * white
        if self.demosaic is not None:
            kernels = self.demosaic

            def demosaic_fn(x: Tensor, cfa: str) -> Tensor:
                return _demosaic_linear(x, cfa, kernels)
        else:
            demosaic_fn = _DEMOSAICERS[self.demosaic_method]
        sharpen_k, denoise_k = self.sharpen.to(raw.dtype), self.denoise.to(raw.dtype)
        values = ChainValues(self.cfa, black, white, self.white_balance.to(raw.dtype),
                             self.colour_matrix.to(raw.dtype), self.gamma.to(raw.dtype),
                             demosaic_fn, _kernel_op(sharpen_k, raw), _kernel_op(denoise_k, raw))
        return run_chain(raw, values, return_stages)

    def state_as_dict(self) -> dict:
        """Current values as plain Python numbers (black level also in DN)."""
        out = {name: p.detach().cpu().tolist() for name, (p,) in self.param_groups().items()}
        out["black_level_dn"] = (self.black_level.detach().cpu().double() * self.white_level).tolist()
        out["gamma"] = float(self.gamma.detach())
        return out

    def extra_repr(self) -> str:
        return f"cfa={self.cfa!r}, demosaic={self.demosaic_method!r}, learn_demosaic={self.learn_demosaic}"


def parametrized_data_model(camera: CameraParams, fidelity: str = "corrected", **kwargs) -> nn.Module:
    """The parametrized data model of a fidelity.

    Args:
        camera: camera values used for initialisation.
        fidelity: ``"corrected"`` -> :class:`ParametrizedDataModel` (``kwargs`` are its
            ``demosaic``/``learn_demosaic``); ``"raw2logit"`` -> the public code's layout,
            :class:`drifthelpers.isp.raw2logit.Raw2LogitParametrizedDataModel` (132 unbounded
            scalars and an output BatchNorm; takes no further arguments; its input is the
            mosaic divided by its full scale, black levels in those units).

    Raises:
        ValueError: an unknown ``fidelity``, or ``kwargs`` with ``"raw2logit"``.

    Example:
        >>> type(parametrized_data_model(CameraParams("RGGB", (0.0,) * 4, 1.0), "raw2logit")).__name__
        'Raw2LogitParametrizedDataModel'
    """
    from .raw2logit import Raw2LogitParametrizedDataModel, check_fidelity

    if check_fidelity(fidelity) == "corrected":
        return ParametrizedDataModel(camera, **kwargs)
    if kwargs:
        raise ValueError(f"fidelity='raw2logit' takes no further arguments, got {sorted(kwargs)}")
    return Raw2LogitParametrizedDataModel(camera)
