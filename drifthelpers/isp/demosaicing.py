"""Stage 2 of the chain: demosaicing, the paper's three methods.

* :func:`demosaic_bilinear` and :func:`demosaic_malvar2004` are linear: each missing colour is
  a fixed combination of its neighbours, given as four source-form kernels
  (:data:`drifthelpers.isp.tables._BILINEAR_KERNELS`, ``_MALVAR_KERNELS``). They evaluate each
  missing colour only at its own sites, as sums of stride-2 views of the reflect-padded mosaic
  written straight into the output's sites (no ``pixel_unshuffle``/``stack``/``pixel_shuffle``
  copies), with a hand-written adjoint as backward (:class:`_PlaneDemosaic`); at G sites
  Malvar's two estimates share their centre and diagonal taps, summed once
  (:func:`drifthelpers.isp.tables._phase_plan`, the table the compiled kernels read too).
  Without autograd a black-level normalisation can be folded into the taps (one pass over the
  mosaic less). Learned kernels (:class:`drifthelpers.isp.ParametrizedDataModel`) run as
  stride-2 convolutions (:func:`_demosaic_linear`).
* :func:`demosaic_menon2007` is directional (DDFAPD). Without autograd and for even sizes it
  evaluates every interpolation after the direction decision only at the sites it sets, from
  strided views of reflect-padded full-resolution inputs (:func:`_menon_on_sites`): about 1.8x
  faster, same arithmetic.

All of them pad with ``reflect``, which keeps the CFA phase of the padded samples right, so
demosaicing near the border uses true same-colour samples.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..raw import cfa_channel_indices
from .tables import _BILINEAR_KERNELS, _MALVAR_KERNELS, DEMOSAIC_METHODS, _phase_plan, _phase_sources
from .tensors import _check_cfa, _check_image, _flat, _grad_needed, _line, _pad_reflect, _require_size, _site_map

__all__ = ["demosaic", "demosaic_bilinear", "demosaic_malvar2004", "demosaic_menon2007"]


def _site_masks(cfa: str, h: int, w: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Boolean (1, 1, H, W) masks of the R, G and B sites."""
    idx = torch.tensor(cfa_channel_indices(cfa), device=like.device)
    sites = _site_map(idx, h, w)
    return sites == 0, sites == 1, sites == 2


def _demosaic_linear(raw: Tensor, cfa: str, kernels: Tensor) -> Tensor:
    """Linear demosaicing from four source-form kernels (4, k, k), reflect borders.

    Sources: 0 the mosaic itself; 1 G interpolated at an R/B site; 2 R/B from row neighbours
    at a G site; 3 R/B from column neighbours at a G site; 4 R at B / B at R (diagonals).
    Each kernel is evaluated only at the sites that need it (a stride-2 convolution per
    position of the 2x2 cell) and the four positions are interleaved with ``pixel_shuffle``.
    """
    flat, shape = _flat(raw)
    n, _, h, w = flat.shape
    k = kernels.shape[-1]
    kernels = kernels.to(flat.dtype)
    padded = _pad_reflect(flat, k // 2, k // 2)
    table = _phase_sources(cfa)
    if h % 2 or w % 2:  # odd sizes: evaluate every kernel everywhere and pick per pixel
        planes = F.conv2d(padded, kernels.unsqueeze(1))
        sources = torch.cat([flat, planes], dim=1)
        cell = torch.tensor(table, device=flat.device).T  # (3, 4)
        index = _site_map(cell, h, w).reshape(1, 3, h, w).expand(n, 3, h, w)
        return torch.gather(sources, 1, index).reshape(shape[:-3] + (3, h, w))
    phases = []
    for pos, sources in enumerate(table):
        py, px = divmod(pos, 2)
        need = [src - 1 for src in sources if src]
        src = padded[..., py:, px:]
        weight = kernels[need].unsqueeze(1).repeat(n, 1, 1, 1)  # batch folded into groups (see _filter2d)
        est = F.conv2d(src.reshape(1, n, *src.shape[-2:]), weight, stride=2, groups=n)
        est = est.reshape(n, len(need), *est.shape[-2:])[..., : h // 2, : w // 2].unbind(1)
        phases.append(_assemble_phase(flat, py, px, sources, est))
    return _interleave(phases, shape)


def _assemble_phase(flat: Tensor, py: int, px: int, sources, estimates) -> list[Tensor]:
    """The (R, G, B) half-resolution planes of one cell position: measured or estimated."""
    it = iter(estimates)
    own = flat[:, 0, py::2, px::2]
    return [own if src == 0 else next(it) for src in sources]


def _interleave(phases: list[list[Tensor]], shape: torch.Size) -> Tensor:
    """Per position (TL, TR, BL, BR) the (R, G, B) planes (N, H/2, W/2) -> (*, 3, H, W).

    Without autograd each plane is copied straight into its strided sites of the output (one
    pass, about twice as fast as ``stack`` + ``pixel_shuffle``); with autograd the stacked form
    is kept, whose backward is a single ``pixel_unshuffle``.
    """
    n, h2, w2 = phases[0][0].shape
    if not _grad_needed(*(t for planes in phases for t in planes)):
        out = phases[0][0].new_empty((n, 3, h2, 2, w2, 2))
        for pos, planes in enumerate(phases):
            py, px = divmod(pos, 2)
            for c in range(3):
                out[:, c, :, py, :, px].copy_(planes[c])
        return out.reshape(shape[:-3] + (3, 2 * h2, 2 * w2))
    cells = torch.stack([phases[pos][c] for c in range(3) for pos in range(4)], dim=1)  # colour * 4 + position
    return F.pixel_shuffle(cells, 2).reshape(shape[:-3] + (3, 2 * h2, 2 * w2))


def _demosaic_fixed(raw: Tensor, cfa: str, kernels: tuple, affine: tuple | None = None) -> Tensor:
    """:func:`_demosaic_linear` for constant kernels, on the four half-resolution planes.

    The mosaic is reflect padded; each needed value is then a weighted sum of shifted views of
    its four CFA planes, evaluated only at its own sites, which on CPU beats a convolution for
    these sparse 4- to 13-tap kernels (and its backward pass touches quarter-size planes only).
    ``affine``, four scales and four offsets by cell position, is a black-level normalisation
    folded into the taps (see :func:`drifthelpers.isp.chain.run_chain`); even H and W only.
    """
    flat, shape = _flat(raw)
    h, w = flat.shape[-2:]
    if h % 2 or w % 2:
        return _demosaic_linear(raw, cfa, torch.tensor(kernels, dtype=raw.dtype, device=raw.device))
    r = len(kernels[0]) // 2
    pad = 2 * ((r + 1) // 2)  # even, so the padded mosaic keeps the pattern
    plan = _phase_plan(cfa, kernels, pad // 2)
    padded = _pad_reflect(flat, pad, pad)
    return _PlaneDemosaic.apply(padded, plan, h // 2, w // 2, affine).reshape(shape[:-3] + (3, h, w))


class _PlaneDemosaic(torch.autograd.Function):
    """Linear demosaicing with constant kernels on the four CFA planes (see :func:`_demosaic_fixed`).

    Forward: each output plane (cell position x colour) is a weighted sum of shifted views of
    the planes (following the steps of :func:`_phase_plan`), read as stride-2 views of the
    padded (N, 1, H', W') mosaic (no ``pixel_unshuffle`` copy) and accumulated straight into
    its strided sites of the (N, 3, H, W) output (no ``stack``/``pixel_shuffle`` pass).
    ``affine`` (scales and offsets by cell position) folds a black-level normalisation into the
    taps: ``sum_k w_k (s_k raw_k + o_k) = sum_k (w_k s_k) raw_k + sum_k w_k o_k``. Backward: the
    adjoint, the same views scatter-added into one zero gradient (autograd's own backward would
    allocate a full-size zero tensor per tap for the slice and select views).
    """

    @staticmethod
    def forward(ctx, padded: Tensor, plan: tuple, h2: int, w2: int, affine: tuple | None = None) -> Tensor:
        steps, ctx.outputs = plan
        ctx.padded_shape = padded.shape
        plane = _plane_view(padded.contiguous(), h2, w2)
        out = padded.new_empty((padded.shape[0], 3, h2, 2, w2, 2))
        full_const: dict[tuple, float] = {}  # with affine: sum_k w_k o_k of each output
        if affine is not None:
            scale, offset = affine
            full_const = {(py, px, c): sum(wt * offset[ch] for ch, _, _, wt in entry)
                          for py, px, c, entry in ctx.outputs}
        for py, px, colour, base, entry in steps:
            site = out[:, colour, :, py, :, px]
            if affine is not None:
                entry = tuple((ch, y0, x0, wt * scale[ch]) for ch, y0, x0, wt in entry)
            parts = [(plane(ch, y0, x0), wt) for ch, y0, x0, wt in entry]
            if base == colour:  # add the rest to the shared part (whose step set the whole constant)
                for part, wt in parts:
                    site.add_(part, alpha=wt)
                continue
            const = full_const.get((py, px, colour), 0.0)
            if base is not None:  # the shared part (+ the base's constant) + the rest
                const -= full_const.get((py, px, base), 0.0)
                (source, alpha), rest = (out[:, base, :, py, :, px], 1.0), parts
            else:
                (source, alpha), rest = parts[0], parts[1:]
            if const:
                torch.add(padded.new_full((), const), source, alpha=alpha, out=site)
            elif alpha == 1.0:
                site.copy_(source)
            else:
                torch.mul(source, alpha, out=site)
            for part, wt in rest:
                site.add_(part, alpha=wt)
        return out.reshape(padded.shape[0], 3, 2 * h2, 2 * w2)

    @staticmethod
    def backward(ctx, grad: Tensor):
        n, _, h, w = grad.shape
        h2, w2 = h // 2, w // 2
        grad6 = grad.reshape(n, 3, h2, 2, w2, 2)
        grad_padded = grad.new_zeros(ctx.padded_shape)
        plane = _plane_view(grad_padded, h2, w2)
        for py, px, colour, entry in ctx.outputs:
            g = grad6[:, colour, :, py, :, px]
            for ch, y0, x0, wt in entry:
                plane(ch, y0, x0).add_(g, alpha=wt)
        return grad_padded, None, None, None, None


def _plane_view(mosaic: Tensor, h2: int, w2: int):
    """For a contiguous (N, 1, H, W) mosaic, even H and W: ``view(plane, y0, x0)``, the
    (N, h2, w2) window at (y0, x0) of CFA plane ``plane`` (= 2 * row parity + column parity),
    as a single strided view (cheaper to build than chained indexing)."""
    n, _, h, w = mosaic.shape
    size, stride, base = (n, h2, w2), (mosaic.stride(0), 2 * w, 2), mosaic.storage_offset()

    def view(plane: int, y0: int, x0: int) -> Tensor:
        return mosaic.as_strided(size, stride, base + (2 * y0 + plane // 2) * w + 2 * x0 + plane % 2)

    return view


def demosaic_bilinear(raw: Tensor, cfa: str) -> Tensor:
    """Bilinear demosaicing: each missing colour is the mean of its nearest same-colour sites.

    Each missing value is evaluated only at its own sites, from reflect-padded neighbours. It
    equals :func:`kornia.color.raw_to_rgb` (pattern mapped with
    :func:`drifthelpers.raw.cfa_to_kornia`) on every pixel, borders included, for even H and W
    (tested: kornia's replicate padding of the sub-sampled planes amounts to reflect padding of
    the mosaic), is faster on CPU, and also takes odd sizes. Interior pixels equal
    ``colour_demosaicing.demosaicing_CFA_Bayer_bilinear``.

    Args:
        raw: normalised mosaic, shape (*, 1, H, W), H, W >= 2.
        cfa: pattern string, one of ``"RGGB", "BGGR", "GRBG", "GBRG"``.

    Returns:
        Camera RGB, shape (*, 3, H, W); the measured samples are kept unchanged.

    Example:
        >>> demosaic_bilinear(torch.full((1, 1, 4, 4), 0.5), "RGGB")[0, :, 1, 1]
        tensor([0.5000, 0.5000, 0.5000])
    """
    _check_image(raw, 1, "raw")
    cfa = _check_cfa(cfa)
    return _demosaic_fixed(raw, cfa, _BILINEAR_KERNELS)


def demosaic_malvar2004(raw: Tensor, cfa: str) -> Tensor:
    """Malvar-He-Cutler (2004) gradient-corrected linear demosaicing with the 5x5 filters.

    Each missing colour is a 5x5 linear combination of the mosaic (the bilinear estimate
    plus a Laplacian correction from the site's own colour). Borders: reflect padding.
    Interior pixels equal ``colour_demosaicing.demosaicing_CFA_Bayer_Malvar2004``.

    Args:
        raw: normalised mosaic, shape (*, 1, H, W), H, W >= 3.
        cfa: pattern string.

    Returns:
        Camera RGB, shape (*, 3, H, W) (not clipped: the correction can overshoot).

    Example:
        >>> demosaic_malvar2004(torch.full((1, 1, 6, 6), 0.25), "GRBG")[0, :, 2, 2]
        tensor([0.2500, 0.2500, 0.2500])
    """
    _check_image(raw, 1, "raw")
    return _demosaic_fixed(raw, _check_cfa(cfa), _MALVAR_KERNELS)


def demosaic_menon2007(raw: Tensor, cfa: str, refining_step: bool = True) -> Tensor:
    """Menon, Andriani & Calvagno (2007) directional filtering and a-posteriori decision (DDFAPD).

    1. Green is interpolated horizontally and vertically with the 5-tap filter
       ``[-1/4, 1/2, 1/2, 1/2, -1/4]``.
    2. The direction with the smaller summed gradient of the colour differences (R-G, B-G)
       over a 5x5 window is chosen per pixel (ties go to horizontal).
    3. R and B are filled from the colour differences along that direction.
    4. Optional refining step (default, as in the paper): green, then R/B at green sites,
       then R/B at B/R sites are re-estimated from 3-tap means of colour differences.

    Borders: reflect padding at every filter, so pixels within ~10 px of the border may
    differ from implementations that pad differently. Interior pixels equal
    ``colour_demosaicing.demosaicing_CFA_Bayer_Menon2007`` (float64). The direction choice
    is piecewise constant, so gradients flow through the interpolation values only.

    Args:
        raw: normalised mosaic, shape (*, 1, H, W), H, W >= 5.
        cfa: pattern string.
        refining_step: run step 4.

    Returns:
        Camera RGB, shape (*, 3, H, W).

    Example:
        >>> demosaic_menon2007(torch.full((1, 1, 8, 8), 0.5), "BGGR")[0, :, 4, 4]
        tensor([0.5000, 0.5000, 0.5000])
    """
    _check_image(raw, 1, "raw")
    cfa = _check_cfa(cfa)
    x, shape = _flat(raw)
    h, w = x.shape[-2:]
    if not _grad_needed(x) and h % 2 == 0 and w % 2 == 0 and h > 2 and w > 2:
        return _menon_on_sites(x, cfa, refining_step).reshape(shape[:-3] + (3, h, w))
    m_r, m_g, m_b = _site_masks(cfa, h, w, x)
    rows = torch.arange(h, device=x.device).reshape(1, 1, h, 1)
    colours = cfa_channel_indices(cfa)
    r_pos, b_pos = colours.index(0), colours.index(2)
    r_row = (rows % 2) == r_pos // 2  # rows that hold R sites
    b_row = (rows % 2) == b_pos // 2
    g_in_r_row = m_g & r_row  # R neighbours left/right, B neighbours above/below
    g_in_b_row = m_g & b_row  # B left/right, R above/below
    zero = x.new_zeros(())

    # 1. directional green
    taps = (-0.25, 0.5, 0.5, 0.5, -0.25)
    g_h = torch.where(m_g, x, _line(x, taps, vertical=False))
    g_v = torch.where(m_g, x, _line(x, taps, vertical=True))

    # 2. decision from colour-difference gradients
    c_h = x - g_h  # colour differences R-G / B-G; exactly 0 at G sites, where g_h = x
    c_v = x - g_v
    d_h = _abs_diff_ahead(c_h, vertical=False)  # |C(i, j) - C(i, j + 2)|
    d_v = _abs_diff_ahead(c_v, vertical=True)
    # Menon's classifier window (colour-demosaicing's kernel used as a convolution): the
    # gradient at the pixel and two to its left (above, for vertical) weigh 3, the others 1.
    sum_h = _menon_window(d_h, vertical=False)
    sum_v = _menon_window(d_v, vertical=True)
    horizontal = sum_v >= sum_h
    g = torch.where(horizontal, g_h, g_v)

    # 3. red and blue along the chosen direction: X = G + mean of the neighbours' (X - G)
    #    (the filters are linear, so this is G + filter(X) - filter(G) with X zero off its sites)
    half = (0.5, 0.0, 0.5)
    rb = torch.cat([torch.where(m_r, x, zero), torch.where(m_b, x, zero)], dim=1)  # (N, 2, H, W)
    diff = rb - g
    rb_h = g + _line(diff, half, False)
    rb_v = g + _line(diff, half, True)
    # R from row neighbours where the G site sits in an R row, from column neighbours otherwise.
    r = torch.where(g_in_r_row, rb_h[:, :1], torch.where(g_in_b_row, rb_v[:, :1], rb[:, :1]))
    b = torch.where(g_in_b_row, rb_h[:, 1:], torch.where(g_in_r_row, rb_v[:, 1:], rb[:, 1:]))
    other = torch.cat([b, r], dim=1)
    diff = torch.cat([r, b], dim=1) - other
    rb_at_other = other + torch.where(horizontal, _line(diff, half, False), _line(diff, half, True))
    r = torch.where(m_b, rb_at_other[:, :1], r)  # R at B sites (ch 0), B at R sites (ch 1)
    b = torch.where(m_r, rb_at_other[:, 1:], b)

    if refining_step:
        r, g, b = _menon_refine(r, g, b, m_r, m_g, m_b, g_in_r_row, g_in_b_row, horizontal)
    return torch.cat([r, g, b], dim=1).reshape(shape[:-3] + (3, h, w))


def _sites_at(t: Tensor, pad: int, pos: int, dy: int = 0, dx: int = 0) -> Tensor:
    """Strided view (N, C, H/2, W/2) of ``t`` (N, C, H + 2 pad, W + 2 pad), padded by ``pad``:
    the samples at offset (dy, dx) from every site of one position of the 2x2 cell."""
    py, px = divmod(pos, 2)
    h, w = t.shape[-2] - 2 * pad, t.shape[-1] - 2 * pad
    y0, x0 = pad + py + dy, pad + px + dx
    return t[..., y0 : y0 + h : 2, x0 : x0 + w : 2]


def _line_at(padded: Tensor, pad: int, pos: int, taps: Sequence[float], vertical: bool,
             out: Tensor | None = None) -> Tensor:
    """:func:`_line` evaluated only at the sites of cell position ``pos``, from the reflect
    padded input (same taps in the same order); optionally written into ``out``."""
    c = len(taps) // 2
    first = True
    for i, wt in enumerate(taps):
        if not wt:
            continue
        part = _sites_at(padded, pad, pos, i - c, 0) if vertical else _sites_at(padded, pad, pos, 0, i - c)
        if first:
            out = part * wt if out is None else torch.mul(part, wt, out=out)
            first = False
        else:
            out.add_(part, alpha=wt)
    return out


def _padded_difference(a: Tensor, b: Tensor, pad: int = 1) -> Tensor:
    """``_pad_reflect(a - b, pad, pad)`` written straight into the padded buffer (no copy of
    the difference), the border then filled by reflection like ``F.pad(mode="reflect")``."""
    h, w = a.shape[-2:]
    _require_size(a, pad, pad)
    out = a.new_empty(a.shape[:-2] + (h + 2 * pad, w + 2 * pad))
    torch.sub(a, b, out=out[..., pad : pad + h, pad : pad + w])
    for k in range(1, pad + 1):  # rows first, then whole columns (which fills the corners)
        out[..., pad - k, pad : pad + w] = out[..., pad + k, pad : pad + w]
        out[..., pad + h - 1 + k, pad : pad + w] = out[..., pad + h - 1 - k, pad : pad + w]
    for k in range(1, pad + 1):
        out[..., :, pad - k] = out[..., :, pad + k]
        out[..., :, pad + w - 1 + k] = out[..., :, pad + w - 1 - k]
    return out


def _menon_on_sites(x: Tensor, cfa: str, refining_step: bool) -> Tensor:
    """:func:`demosaic_menon2007` without autograd for even H and W (N, 1, H, W) -> (N, 3, H, W).

    The same arithmetic, but every interpolation after the direction decision is evaluated
    only at the sites whose value it sets (a quarter of the pixels), through strided views
    of the reflect-padded full-resolution inputs (so the borders are the same), and written
    in place into the output. Tested equal to the general path to float rounding.
    """
    colours = cfa_channel_indices(cfa)
    r_pos, b_pos = colours.index(0), colours.index(2)
    gr_pos, gb_pos = r_pos ^ 1, b_pos ^ 1  # the G site in an R row, in a B row
    n, _, h, w = x.shape
    taps5, third, half = (-0.25, 0.5, 0.5, 0.5, -0.25), (1 / 3, 1 / 3, 1 / 3), (0.5, 0.0, 0.5)
    at = _sites_at

    # 1. directional green at R and B sites (G sites keep the mosaic)
    xp = _pad_reflect(x, 2, 2)
    g_h, g_v = x.clone(), x.clone()
    for pos in (r_pos, b_pos):
        _line_at(xp, 2, pos, taps5, False, out=at(g_h, 0, pos))
        _line_at(xp, 2, pos, taps5, True, out=at(g_v, 0, pos))

    # 2. decision (full resolution, as in the general path)
    d_h = _abs_diff_ahead(x - g_h, vertical=False)
    d_v = _abs_diff_ahead(x - g_v, vertical=True)
    horizontal = _menon_window(d_v, vertical=True) >= _menon_window(d_h, vertical=False)
    out = x.new_zeros((n, 3, h, w))
    r, g, b = out[:, 0:1], out[:, 1:2], out[:, 2:3]
    torch.where(horizontal, g_h, g_v, out=g)

    # 3. R and B at G sites along the row / column of their neighbours, then R at B and B at R
    at(r, 0, r_pos).copy_(at(x, 0, r_pos))
    at(b, 0, b_pos).copy_(at(x, 0, b_pos))
    r_diff, b_diff = _padded_difference(r, g), _padded_difference(b, g)
    for dst, diff, pos, vertical in ((r, r_diff, gr_pos, False), (r, r_diff, gb_pos, True),
                                     (b, b_diff, gr_pos, True), (b, b_diff, gb_pos, False)):
        _line_at(diff, 1, pos, half, vertical, out=at(dst, 0, pos)).add_(at(g, 0, pos))
    rb = _padded_difference(r, b)  # (B - R is its exact negative)
    for pos, sign, dst, other in ((b_pos, 1.0, r, b), (r_pos, -1.0, b, r)):
        along = torch.where(at(horizontal, 0, pos), _line_at(rb, 1, pos, half, False),
                            _line_at(rb, 1, pos, half, True))
        torch.add(at(other, 0, pos), along, alpha=sign, out=at(dst, 0, pos))

    if refining_step:
        # green at R and B sites from the smoothed colour difference along the chosen direction
        r_diff, b_diff = _padded_difference(r, g), _padded_difference(b, g)
        for pos, own, diff in ((r_pos, r, r_diff), (b_pos, b, b_diff)):
            along = torch.where(at(horizontal, 0, pos), _line_at(diff, 1, pos, third, False),
                                _line_at(diff, 1, pos, third, True))
            torch.sub(at(own, 0, pos), along, out=at(g, 0, pos))
        # R and B at G sites from the neighbouring colour differences
        r_diff, b_diff = _padded_difference(r, g), _padded_difference(b, g)
        for dst, diff, pos, vertical in ((r, r_diff, gr_pos, False), (r, r_diff, gb_pos, True),
                                         (b, b_diff, gb_pos, False), (b, b_diff, gr_pos, True)):
            torch.add(at(g, 0, pos), _line_at(diff, 1, pos, half, vertical), out=at(dst, 0, pos))
        # R at B sites and B at R sites from the smoothed R-B difference
        rb = _padded_difference(r, b)
        for pos, sign, dst, other in ((b_pos, 1.0, r, b), (r_pos, -1.0, b, r)):
            along = torch.where(at(horizontal, 0, pos), _line_at(rb, 1, pos, third, False),
                                _line_at(rb, 1, pos, third, True))
            torch.add(at(other, 0, pos), along, alpha=sign, out=at(dst, 0, pos))
    return out


def _abs_diff_ahead(c: Tensor, vertical: bool) -> Tensor:
    """``|C(i, j) - C(i, j + 2)|`` (or ``C(i + 2, j)``), reflect borders: the last two columns
    (rows) compare with ``C(W - 2)`` and ``C(W - 3)``. Without autograd no padded copy is made."""
    dim = -2 if vertical else -1
    size = c.shape[dim]
    if _grad_needed(c) or size < 3:
        pad = (0, 2, 0, 0) if not vertical else (0, 0, 0, 2)
        _require_size(c, *((2, 0) if vertical else (0, 2)))
        ahead = F.pad(c, pad, mode="reflect").narrow(dim, 2, size)
        return (c - ahead).abs()
    out = torch.empty_like(c)
    torch.sub(c.narrow(dim, 0, size - 2), c.narrow(dim, 2, size - 2), out=out.narrow(dim, 0, size - 2))
    torch.sub(c.narrow(dim, size - 2, 2), c.narrow(dim, size - 3, 2).flip(dim), out=out.narrow(dim, size - 2, 2))
    return out.abs_()


def _menon_refine(r, g, b, m_r, m_g, m_b, g_in_r_row, g_in_b_row, horizontal):
    third = (1 / 3, 1 / 3, 1 / 3)
    half = (0.5, 0.0, 0.5)

    def along(t: Tensor, taps) -> Tensor:
        return torch.where(horizontal, _line(t, taps, False), _line(t, taps, True))

    # green at R and B sites from the smoothed colour difference along the chosen direction
    diff = along(torch.cat([r - g, b - g], dim=1), third)
    g = torch.where(m_r, r - diff[:, :1], torch.where(m_b, b - diff[:, 1:], g))
    # R and B at G sites from the neighbouring colour differences
    d = torch.cat([r - g, b - g], dim=1)
    d_h, d_v = _line(d, half, False), _line(d, half, True)
    r = torch.where(g_in_r_row, g + d_h[:, :1], torch.where(g_in_b_row, g + d_v[:, :1], r))
    b = torch.where(g_in_b_row, g + d_h[:, 1:], torch.where(g_in_r_row, g + d_v[:, 1:], b))
    # R at B sites and B at R sites from the smoothed R-B difference
    rb = along(r - b, third)
    r, b = torch.where(m_b, b + rb, r), torch.where(m_r, r - rb, b)
    return r, g, b


def _menon_window(d: Tensor, vertical: bool) -> Tensor:
    """Menon's classifier window, reflect borders. Horizontal:
    ``3 (D[i, j] + D[i, j-2]) + D[i-1, j-1] + D[i+1, j-1] + D[i-2, j] + D[i+2, j] + D[i-2, j-2] + D[i+2, j-2]``
    (vertical: the transpose), computed as the rows {-2, 0, 2}, weighted (1, 3, 1), of
    ``D[., j] + D[., j-2]`` plus the two remaining taps.
    """
    h, w = d.shape[-2:]
    p = _pad_reflect(d, 2, 2)
    if vertical:
        pair = p[..., 2 : 2 + h, :] + p[..., 0:h, :]
        out = torch.add(pair[..., :, 0:w] + pair[..., :, 4 : 4 + w], pair[..., :, 2 : 2 + w], alpha=3.0)
        return out + (p[..., 1 : 1 + h, 1 : 1 + w] + p[..., 1 : 1 + h, 3 : 3 + w])
    pair = p[..., :, 2 : 2 + w] + p[..., :, 0:w]
    out = torch.add(pair[..., 0:h, :] + pair[..., 4 : 4 + h, :], pair[..., 2 : 2 + h, :], alpha=3.0)
    return out + (p[..., 1 : 1 + h, 1 : 1 + w] + p[..., 3 : 3 + h, 1 : 1 + w])


_DEMOSAICERS = {"bi": demosaic_bilinear, "ma": demosaic_malvar2004, "me": demosaic_menon2007}
_FIXED_KERNELS = {demosaic_bilinear: _BILINEAR_KERNELS, demosaic_malvar2004: _MALVAR_KERNELS}
_DEMOSAIC_ALIASES = {**{k: k for k in DEMOSAIC_METHODS}, **{v: k for k, v in DEMOSAIC_METHODS.items()}}


def demosaic(raw: Tensor, cfa: str, method: str = "bi") -> Tensor:
    """Demosaic with one of the paper's three methods.

    Args:
        raw: normalised mosaic, shape (*, 1, H, W).
        cfa: pattern string.
        method: ``"bi"``/``"bilinear"``, ``"ma"``/``"malvar2004"`` or ``"me"``/``"menon2007"``.

    Returns:
        Camera RGB, shape (*, 3, H, W).

    Example:
        >>> demosaic(torch.rand(2, 1, 8, 8), "RGGB", "ma").shape
        torch.Size([2, 3, 8, 8])
    """
    key = _DEMOSAIC_ALIASES.get(method) if isinstance(method, str) else None
    if key is None:
        raise ValueError(f"method must be one of {sorted(_DEMOSAIC_ALIASES)}, got {method!r}")
    return _DEMOSAICERS[key](raw, cfa)
