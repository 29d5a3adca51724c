"""Fused CPU kernels for the static data models: the chain of :func:`drifthelpers.isp.render`
in a few compiled passes instead of about a hundred tensor operations.

Eager PyTorch runs the chain as one memory pass per operation (a Malvar demosaic alone is
some forty shifted-view additions), so on a CPU the render time is mostly spent moving the
same pixels in and out of memory. Here each stage is one loop over rows that reads its inputs
once, compiled with Numba (LLVM vectorises the inner loops):

1. the mosaic is reflect padded and split into its four CFA planes in one pass;
2. demosaicing, black-level normalisation, white balance, the colour matrix and the luma in
   one pass. For the linear demosaicers (bilinear, Malvar) the loop is generated from the
   taps of :func:`drifthelpers.isp._phase_plan`, the same tables the torch path uses, so
   there is one definition of each demosaicer. Menon's demosaicer (with its refining step)
   runs as nine full-resolution passes written from ``isp.demosaic_menon2007``, the last one
   with the colour matrix and the luma;
3. the luma filters: the 3x3 sharpening kernel or the unsharp mask (separable 9-tap
   Gaussian), then the 3x3 median or the 5x5 Gaussian (separable), each reading a reflect
   padded copy of its input (borders filled like ``F.pad(mode="reflect")``);
4. the luma change added to R, G and B, clip and gamma in one pass. The power law
   ``x ** (1 / gamma)`` is computed as ``2 ** (log2(x) / gamma)`` from the float's exponent
   bits and two short polynomials (``log`` of the mantissa via ``atanh``, ``exp`` of the
   remainder), accurate to about 1e-7 relative, like ``torch.exp(torch.log(x) * inv)`` in
   float32 (tested over all of [1e-6, 1]). This is written by hand because Numba without
   Intel's SVML calls scalar ``libm`` for ``exp``/``log``, which does not vectorise.

Rows are split over ``torch.get_num_threads()`` threads (the kernels release the GIL), so a
process limited to one torch thread (a worker of :mod:`drifthelpers.parallel`) renders on
one thread too. The fast path is taken only where it computes the same function: float32 on
the CPU, no autograd, no stage outputs, even H and W of at least 16, one set of camera values
for the whole batch. Results equal the torch path to float32 rounding (tested for every
preset and CFA pattern against float64); the torch path stays the reference, and runs
everywhere else (GPU, float64, gradients, per-image parameters).

Compiled code is cached on disk (Numba's cache; generated demosaic loops in
``$DRIFTHELPERS_KERNEL_CACHE`` or the user cache folder), so only the first call on a machine
pays the compilation: about 22 s for all twelve presets of one CFA pattern (7 s more for each
further pattern's linear demosaicers); later processes load it in about a second. The
generated loops are compiled from their generated source text (the file in the folder only
anchors Numba's cache, nothing is imported from there), and a folder that is not private to
the user (owned by another user, or writable by group or others) is refused with a warning:
the loops are then compiled in memory in every process. Set
``DRIFTHELPERS_FAST_ISP=0`` to turn the fast path off, or call :func:`set_enabled`.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from .fileio import atomic_write_text

try:  # Numba is a dependency; without it the torch path renders everything
    import numba
    from llvmlite import ir as _ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

__all__ = ["available", "enabled", "set_enabled"]

_ENABLED = os.environ.get("DRIFTHELPERS_FAST_ISP", "1").strip().lower() not in ("0", "false", "no", "off")
_MIN_SIZE = 16  # smaller images (and odd sizes) take the torch path
# Numba options. Fast-math only as fused multiply-adds and signed-zero freedom: no
# reassociation (a pixel's arithmetic does not depend on where it falls in a vector, so results
# are bit-identical for any batch or thread split) and no 'nnan'/'ninf' (NaN and inf propagate
# as in torch). error_model 'numpy' drops Python's zero-division checks, which block
# vectorisation.
_FLAGS = {"contract", "nsz"}
_OPTS = dict(nogil=True, cache=True, fastmath=_FLAGS, error_model="numpy")


def available() -> bool:
    """Whether the compiled kernels can run here (Numba importable)."""
    return numba is not None


def enabled() -> bool:
    """Whether :func:`drifthelpers.isp.render` uses the fused kernels where they apply."""
    return _ENABLED and available()


def set_enabled(flag: bool) -> bool:
    """Turn the fast path on or off for this process; returns the previous setting.

    Example:
        >>> previous = set_enabled(False)  # the torch reference path everywhere
        >>> _ = set_enabled(previous)
    """
    global _ENABLED
    if not isinstance(flag, bool):
        raise TypeError(f"flag must be a bool, got {type(flag).__name__}")
    previous, _ENABLED = _ENABLED, flag
    return previous


def applies(raw: torch.Tensor, black: torch.Tensor, white: torch.Tensor, gains: torch.Tensor,
            ccm: torch.Tensor, gamma) -> bool:
    """Whether the fused kernels compute this call (see the module docstring)."""
    if not enabled() or raw.dtype != torch.float32 or raw.device.type != "cpu":
        return False
    h, w = raw.shape[-2:]
    if h % 2 or w % 2 or h < _MIN_SIZE or w < _MIN_SIZE:
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in (raw, black, white, gains, ccm)):
        return False
    if isinstance(gamma, torch.Tensor) and gamma.numel() != 1:
        return False
    return black.dim() <= 1 and white.dim() == 0 and gains.dim() == 1 and ccm.dim() == 2


# --------------------------------------------------------------------------- threads


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (0, 0)


def _executor(workers: int) -> ThreadPoolExecutor:
    """A thread pool of at least ``workers`` threads, made anew after a fork."""
    global _pool, _pool_key
    with _pool_lock:
        pid = os.getpid()
        if _pool is None or _pool_key[0] != pid or _pool_key[1] < workers:
            # (a replaced pool is not shut down: another thread may still be submitting to it;
            # its idle threads end when it is garbage collected)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drifthelpers-isp")
            _pool_key = (pid, workers)
        return _pool


def _run_rows(kernel, total: int, *args) -> None:
    """``kernel(*args, start, stop)`` over ``range(total)`` rows, split over the torch thread count."""
    parts = max(1, min(torch.get_num_threads(), total // 8))
    if parts == 1:
        kernel(*args, 0, total)
        return
    bounds = [total * i // parts for i in range(parts + 1)]
    pool = _executor(parts - 1)
    futures = [pool.submit(kernel, *args, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    kernel(*args, bounds[0], bounds[1])
    for f in futures:
        f.result()


# --------------------------------------------------------------------------- kernels

_NoAliasCompiler = None
if numba is not None:
    try:  # Numba's compiler-pipeline API; if a future Numba moves it, loops just vectorise less
        from numba.core.compiler import CompilerBase, DefaultPassBuilder

        class _NoAliasCompiler(CompilerBase):
            """Numba's standard pipeline, with the array arguments marked ``noalias``.

            Without it LLVM must check at run time that no output overlaps an input before it
            vectorises a loop, and gives up when a loop touches many arrays: the generated
            demosaic loops ran 2.4x slower. Every caller passes distinct, fresh arrays.
            """

            def define_pipelines(self):
                if hasattr(self.state.flags, "noalias"):
                    self.state.flags.noalias = True
                return [DefaultPassBuilder.define_nopython_pipeline(self.state)]
    except ImportError:  # pragma: no cover
        _NoAliasCompiler = None

    _F = np.float32
    _I = np.int32

    @intrinsic
    def _float_bits(typingctx, x):
        """The bits of a float32 as an int32 (a no-op reinterpretation)."""
        if x != types.float32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], _ir.IntType(32))

        return types.int32(types.float32), codegen

    @intrinsic
    def _bits_float(typingctx, x):
        """An int32 reinterpreted as a float32."""
        if x != types.int32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], _ir.FloatType())

        return types.float32(types.int32), codegen

    _LN2 = _F(math.log(2.0))
    _INV_LN2 = _F(1.0 / math.log(2.0))

    @njit(inline="always", **_OPTS)
    def _power(c, inv):
        """``c ** inv`` for a float32 ``c`` in [1e-6, 1] and ``inv > 0`` (results below 1.6e-38,
        float32's normal range, come out as 1.6e-38).

        ``c = m 2^e`` with the mantissa m in [sqrt(1/2), sqrt(2)); ``ln m = 2 atanh(r)``,
        ``r = (m - 1) / (m + 1)`` (|r| < 0.172, series to r^9); ``z = inv ln c <= 0`` is
        split as ``k ln 2 + f`` (|f| <= ln 2 / 2) and ``exp f`` is its Taylor series to f^7.
        Integer arithmetic stays in int32 (int64 <-> float conversions do not vectorise).
        """
        b = _float_bits(c)
        e = _I(_I(b >> _I(23)) - _I(127))
        mb = _I(b & _I(0x7FFFFF))
        big = _I(_I(_I(3474675) - mb) >> _I(31))  # -1 where the mantissa exceeds sqrt(2), else 0
        m = _bits_float(_I(_I(mb | _I(0x3F800000)) + _I(big << _I(23))))  # halved where big
        e = _I(e - big)
        r = (m - _F(1)) / (m + _F(1))
        r2 = r * r
        ln_m = _F(2) * r * (_F(1) + r2 * (_F(1 / 3) + r2 * (_F(1 / 5) + r2 * (_F(1 / 7) + r2 * _F(1 / 9)))))
        z = (_F(e) * _LN2 + ln_m) * inv
        z = _F(-87.0) if z < _F(-87.0) else z  # (gamma < 1/6 at 1e-6) stay above float32's smallest normal
        k = _I(z * _INV_LN2 - _F(0.5))  # z <= 0: truncation rounds to the nearest integer
        f = z - _F(k) * _LN2
        p = _F(1) + f * (_F(1) + f * (_F(1 / 2) + f * (_F(1 / 6) + f * (_F(1 / 24) + f * (
            _F(1 / 120) + f * (_F(1 / 720) + f * _F(1 / 5040)))))))
        return p * _bits_float(_I(_I(k + _I(127)) << _I(23)))

    @njit(**_OPTS)
    def _tail_rows(lin, filtered, ypad, p, inv, eps, start, stop):
        """Rows [start, stop) of (N*H): ``lin += filtered - y`` on R, G, B, then gamma, in place.

        ``lin`` (N, 3, H, W); ``filtered`` (N, H, W); ``ypad`` the luma padded by ``p``.
        """
        h, w = lin.shape[2], lin.shape[3]
        inv_eps = _F(1) / eps
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            f_row = filtered[b, i]
            y_row = ypad[b, i + p, p:p + w]  # (sliced views: plain [j] indexing vectorises)
            for c in range(3):
                row = lin[b, c, i]
                for j in range(w):
                    v = row[j] + (f_row[j] - y_row[j])
                    cl = eps if v < eps else v
                    cl = _F(1) if cl > _F(1) else cl
                    toe = v * inv_eps
                    toe = _F(0) if toe < _F(0) else toe
                    toe = _F(1) if toe > _F(1) else toe
                    row[j] = _power(cl, inv) * toe

    @njit(**_OPTS)
    def _pad_split_rows(raw, pad, planes, start, stop):
        """Rows [start, stop) of (N*(H + 2 pad)) of the mosaic (N, H, W) reflect padded by an
        even ``pad`` (as ``F.pad(mode="reflect")``), written as its four CFA planes
        (N, 4, H/2 + pad, W/2 + pad), plane = 2 * row parity + column parity."""
        h, w = raw.shape[1], raw.shape[2]
        hh = h + 2 * pad
        half = pad // 2
        wc = planes.shape[3]
        for t in range(start, stop):
            b = t // hh
            r = t - b * hh
            sr = r - pad
            sr = -sr if sr < 0 else sr
            sr = 2 * (h - 1) - sr if sr >= h else sr
            src = raw[b, sr]
            even = planes[b, 2 * (r & 1), r >> 1]
            odd = planes[b, 2 * (r & 1) + 1, r >> 1]
            inner_even = even[half:wc - half]
            inner_odd = odd[half:wc - half]
            for j in range(wc - 2 * half):  # interior: columns 2j and 2j + 1 of the source
                inner_even[j] = src[2 * j]
                inner_odd[j] = src[2 * j + 1]
            for j in range(half):  # reflected borders
                for c in (2 * j, 2 * j + 1, 2 * (wc - 1 - j), 2 * (wc - 1 - j) + 1):
                    sc = c - pad
                    sc = -sc if sc < 0 else sc
                    sc = 2 * (w - 1) - sc if sc >= w else sc
                    if c & 1:
                        odd[c >> 1] = src[sc]
                    else:
                        even[c >> 1] = src[sc]

    @njit(**_OPTS)
    def _reflect_border(x, p, start, stop):
        """Fill the ``p``-wide border of planes [start, stop) of (N, H + 2p, W + 2p) by
        reflection of the interior (rows first, then whole columns, as ``F.pad(mode="reflect")``)."""
        hh, ww = x.shape[1], x.shape[2]
        h, w = hh - 2 * p, ww - 2 * p
        for b in range(start, stop):
            for k in range(1, p + 1):
                top, src_top = x[b, p - k], x[b, p + k]
                bottom, src_bottom = x[b, p + h - 1 + k], x[b, p + h - 1 - k]
                for j in range(p, p + w):
                    top[j] = src_top[j]
                    bottom[j] = src_bottom[j]
            for i in range(hh):
                row = x[b, i]
                for k in range(1, p + 1):
                    row[p - k] = row[p + k]
                    row[p + w - 1 + k] = row[p + w - 1 - k]

    @njit(**_OPTS)
    def _filter3x3_rows(src, k, dst, q, start, stop):
        """Rows [start, stop) of (N*H): 3x3 correlation of ``src`` (padded by 1) with ``k`` (9,),
        into ``dst`` (padded by ``q``)."""
        h, w = src.shape[1] - 2, src.shape[2] - 2
        k0, k1, k2, k3, k4, k5, k6, k7, k8 = k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8]
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            a, c, e = src[b, i], src[b, i + 1], src[b, i + 2]
            out = dst[b, i + q, q:q + w]
            for j in range(w):
                out[j] = (k0 * a[j] + k1 * a[j + 1] + k2 * a[j + 2] + k3 * c[j] + k4 * c[j + 1]
                              + k5 * c[j + 2] + k6 * e[j] + k7 * e[j + 1] + k8 * e[j + 2])

    @njit(**_OPTS)
    def _row_pass(src, taps, tmp, start, stop):
        """Rows [start, stop) of (N*H'): horizontal correlation of ``src`` (N, H', W + 2r) with
        ``taps`` (2r + 1,) into ``tmp`` (N, H', W)."""
        hh = src.shape[1]
        w = tmp.shape[2]
        n_taps = taps.shape[0]
        for t in range(start, stop):
            b = t // hh
            i = t - b * hh
            s = src[b, i]
            out = tmp[b, i]
            t0 = taps[0]
            for j in range(w):
                out[j] = t0 * s[j]
            for m in range(1, n_taps):
                wt = taps[m]
                sm = s[m:m + w]
                for j in range(w):
                    out[j] += wt * sm[j]

    @njit(**_OPTS)
    def _column_pass(tmp, taps, base, base_weight, bp, dst, q, start, stop):
        """Rows [start, stop) of (N*H): vertical correlation of ``tmp`` (N, H + 2r, W) with
        ``taps``, plus ``base_weight * base`` (``base`` padded by ``bp``; weight 0: none),
        into ``dst`` (padded by ``q``)."""
        n_taps = taps.shape[0]
        h = tmp.shape[1] - (n_taps - 1)
        w = tmp.shape[2]
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            out = dst[b, i + q, q:q + w]
            t0 = taps[0]
            s = tmp[b, i]
            for j in range(w):
                out[j] = t0 * s[j]
            for m in range(1, n_taps):
                wt = taps[m]
                s = tmp[b, i + m]
                for j in range(w):
                    out[j] += wt * s[j]
            if base_weight != 0:
                y = base[b, i + bp, bp:bp + w]
                for j in range(w):
                    out[j] += base_weight * y[j]

    @njit(**_OPTS)
    def _median3x3_rows(src, dst, start, stop):
        """Rows [start, stop) of (N*H): exact 3x3 median of ``src`` (padded by 1) into ``dst``."""
        h, w = src.shape[1] - 2, src.shape[2] - 2
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            ra, rb, rc = src[b, i], src[b, i + 1], src[b, i + 2]
            out = dst[b, i]
            for j in range(w):
                # sort each column of three, then med3(max of minima, med3 of medians, min of maxima)
                lo0, hi0 = min(ra[j], rb[j]), max(ra[j], rb[j])
                md0 = max(lo0, min(hi0, rc[j]))
                lo0, hi0 = min(lo0, rc[j]), max(hi0, rc[j])
                lo1, hi1 = min(ra[j + 1], rb[j + 1]), max(ra[j + 1], rb[j + 1])
                md1 = max(lo1, min(hi1, rc[j + 1]))
                lo1, hi1 = min(lo1, rc[j + 1]), max(hi1, rc[j + 1])
                lo2, hi2 = min(ra[j + 2], rb[j + 2]), max(ra[j + 2], rb[j + 2])
                md2 = max(lo2, min(hi2, rc[j + 2]))
                lo2, hi2 = min(lo2, rc[j + 2]), max(hi2, rc[j + 2])
                lo = max(max(lo0, lo1), lo2)
                hi = min(min(hi0, hi1), hi2)
                md = max(min(md0, md1), min(max(md0, md1), md2))
                out[j] = max(min(lo, md), min(max(lo, md), hi))


    # Menon (2007), as demosaic_menon2007 with the refining step, on full-resolution arrays
    # padded by 2 (interior at [2:H+2, 2:W+2], borders filled by _reflect_border before they
    # are read). Site kinds come from per-row-parity masks ``red``/``blue`` (2, W) (green:
    # neither); every loop computes the candidates and selects, which vectorises. Sums are
    # written in the torch path's order; no reassociation (fastmath off), so the direction
    # decision sees the same sums up to FMA contraction.
    _MOPTS = dict(nogil=True, cache=True, error_model="numpy")

    @njit(**_MOPTS)
    def _menon_normalise(raw, scale, offset, xp, start, stop):
        """x = raw * scale + offset per cell position, into the interior of ``xp``."""
        h, w = raw.shape[1], raw.shape[2]
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            s0, s1 = scale[i & 1, 0], scale[i & 1, 1]
            o0, o1 = offset[i & 1, 0], offset[i & 1, 1]
            src = raw[b, i]
            dst = xp[b, i + 2, 2:2 + w]
            for j in range(w // 2):
                dst[2 * j] = src[2 * j] * s0 + o0
                dst[2 * j + 1] = src[2 * j + 1] * s1 + o1

    @njit(**_MOPTS)
    def _menon_directional(xp, red, blue, ghp, gvp, chp, cvp, start, stop):
        """Green interpolated along rows and columns (5 taps) at R/B sites, and the colour
        differences x - g of both."""
        h, w = xp.shape[1] - 4, xp.shape[2] - 4
        q, hf = _F(-0.25), _F(0.5)
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            rr, bb = red[i & 1], blue[i & 1]
            row = xp[b, i + 2]
            xm2, xm1, x0, x1, x2 = row[0:w], row[1:1 + w], row[2:2 + w], row[3:3 + w], row[4:4 + w]
            um2, um1, u1, u2 = xp[b, i, 2:2 + w], xp[b, i + 1, 2:2 + w], xp[b, i + 3, 2:2 + w], xp[b, i + 4, 2:2 + w]
            gh, gv = ghp[b, i + 2, 2:2 + w], gvp[b, i + 2, 2:2 + w]
            ch, cv = chp[b, i + 2, 2:2 + w], cvp[b, i + 2, 2:2 + w]
            for j in range(w):
                lh = xm2[j] * q + xm1[j] * hf + x0[j] * hf + x1[j] * hf + x2[j] * q
                lv = um2[j] * q + um1[j] * hf + x0[j] * hf + u1[j] * hf + u2[j] * q
                rb = rr[j] | bb[j]
                a = lh if rb else x0[j]
                c = lv if rb else x0[j]
                gh[j] = a
                gv[j] = c
                ch[j] = x0[j] - a
                cv[j] = x0[j] - c

    @njit(**_MOPTS)
    def _menon_gradients(chp, cvp, dhp, dvp, start, stop):
        """|C(i, j) - C(i, j + 2)| and |C(i, j) - C(i + 2, j)| (reflected beyond the border)."""
        h, w = chp.shape[1] - 4, chp.shape[2] - 4
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            c0, c2 = chp[b, i + 2, 2:2 + w], chp[b, i + 2, 4:4 + w]
            v0, v2 = cvp[b, i + 2, 2:2 + w], cvp[b, i + 4, 2:2 + w]
            dh, dv = dhp[b, i + 2, 2:2 + w], dvp[b, i + 2, 2:2 + w]
            for j in range(w):
                dh[j] = abs(c0[j] - c2[j])
                dv[j] = abs(v0[j] - v2[j])

    @njit(**_MOPTS)
    def _menon_decide(dhp, dvp, ghp, gvp, hor, gp, start, stop):
        """Menon's classifier windows; horizontal where sum_v >= sum_h; g along the choice."""
        h, w = dhp.shape[1] - 4, dhp.shape[2] - 4
        three = _F(3.0)
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            # horizontal window on D_h: pair(r, j) = D(r, j) + D(r, j - 2) at rows i-2, i, i+2
            hm2a, hm2b = dhp[b, i, 2:2 + w], dhp[b, i, 0:w]
            h0a, h0b = dhp[b, i + 2, 2:2 + w], dhp[b, i + 2, 0:w]
            hp2a, hp2b = dhp[b, i + 4, 2:2 + w], dhp[b, i + 4, 0:w]
            hu, hd = dhp[b, i + 1, 1:1 + w], dhp[b, i + 3, 1:1 + w]
            # vertical window on D_v: pair(i, c) = D(i, c) + D(i - 2, c) at columns j-2, j, j+2
            va, vb = dvp[b, i + 2], dvp[b, i]
            vl, vr = dvp[b, i + 1, 1:1 + w], dvp[b, i + 1, 3:3 + w]
            gh, gv = ghp[b, i + 2, 2:2 + w], gvp[b, i + 2, 2:2 + w]
            hr = hor[b, i]
            g = gp[b, i + 2, 2:2 + w]
            for j in range(w):
                sum_h = ((hm2a[j] + hm2b[j]) + (hp2a[j] + hp2b[j])) + three * (h0a[j] + h0b[j])
                sum_h = sum_h + (hu[j] + hd[j])
                sum_v = ((va[j] + vb[j]) + (va[j + 4] + vb[j + 4])) + three * (va[j + 2] + vb[j + 2])
                sum_v = sum_v + (vl[j] + vr[j])
                choice = sum_v >= sum_h
                hr[j] = choice
                g[j] = gh[j] if choice else gv[j]

    @njit(inline="always", **_MOPTS)
    def _cross(a, b, i, w):
        """Row views (left, centre, right, up, down) of the 3x3 cross around row i of image b
        of a (N, H + 4, W + 4) array padded by 2: element j of each is the neighbour of (i, j)."""
        row = a[b, i + 2]
        return row[1:1 + w], row[2:2 + w], row[3:3 + w], a[b, i + 1, 2:2 + w], a[b, i + 3, 2:2 + w]

    @njit(**_MOPTS)
    def _menon_rb_at_green(xp, gp, red, blue, red_row, rp, bp, start, stop):
        """R and B at G sites from the neighbouring (x - g) along their row / column; R and B
        at their own sites from the mosaic (zero at the other colour's sites, set later)."""
        h, w = xp.shape[1] - 4, xp.shape[2] - 4
        hf = _F(0.5)
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            rr, bb = red[i & 1], blue[i & 1]
            in_red_row = red_row[i & 1] != 0
            xl, x0, xr_, xu, xd = _cross(xp, b, i, w)
            gl, g0, gr, gu, gd = _cross(gp, b, i, w)
            r, bl = rp[b, i + 2, 2:2 + w], bp[b, i + 2, 2:2 + w]
            for j in range(w):
                along_row = (xl[j] - gl[j]) * hf + (xr_[j] - gr[j]) * hf + g0[j]
                along_col = (xu[j] - gu[j]) * hf + (xd[j] - gd[j]) * hf + g0[j]
                green = not (rr[j] | bb[j])
                r_green = along_row if in_red_row else along_col
                b_green = along_col if in_red_row else along_row
                r[j] = x0[j] if rr[j] else (r_green if green else _F(0.0))
                bl[j] = x0[j] if bb[j] else (b_green if green else _F(0.0))

    @njit(inline="always", **_MOPTS)
    def _menon_other_colour(rl, r0, rrt, ru, rd, bl, b0, brt, bu, bd, horizontal, t0, t1, t2):
        """The window mean of (R - B) around a pixel along the chosen direction."""
        c = r0 - b0
        ah = (rl - bl) * t0 + c * t1 + (rrt - brt) * t2
        av = (ru - bu) * t0 + c * t1 + (rd - bd) * t2
        return ah if horizontal else av

    @njit(**_MOPTS)
    def _menon_rb_at_rb(rp, bp, hor, red, blue, taps, rop, bop, start, stop):
        """R at B sites and B at R sites: the other colour plus / minus the mean of (R - B)
        (``taps`` (3,): the half or the third window) along the chosen direction; other
        sites copied. Written into ``rop``, ``bop``."""
        h, w = rp.shape[1] - 4, rp.shape[2] - 4
        t0, t1, t2 = taps[0], taps[1], taps[2]
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            rr, bb = red[i & 1], blue[i & 1]
            rl, r0, rrt, ru, rd = _cross(rp, b, i, w)
            bl, b0, brt, bu, bd = _cross(bp, b, i, w)
            hr = hor[b, i]
            out_r, out_b = rop[b, i + 2, 2:2 + w], bop[b, i + 2, 2:2 + w]
            for j in range(w):
                along = _menon_other_colour(rl[j], r0[j], rrt[j], ru[j], rd[j], bl[j], b0[j], brt[j], bu[j], bd[j],
                                            hr[j], t0, t1, t2)
                out_r[j] = b0[j] + along if bb[j] else r0[j]
                out_b[j] = r0[j] - along if rr[j] else b0[j]

    @njit(**_MOPTS)
    def _menon_final(rp, bp, gp, hor, red, blue, taps, mat, lin, ypad, p, start, stop):
        """The last refining step (R at B, B at R from the third window of R - B), then the
        colour matrix and the luma, into ``lin`` (N, 3, H, W) and ``ypad`` (padded by p)."""
        h, w = rp.shape[1] - 4, rp.shape[2] - 4
        t0, t1, t2 = taps[0], taps[1], taps[2]
        m00, m01, m02 = mat[0, 0], mat[0, 1], mat[0, 2]
        m10, m11, m12 = mat[1, 0], mat[1, 1], mat[1, 2]
        m20, m21, m22 = mat[2, 0], mat[2, 1], mat[2, 2]
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            rr, bb = red[i & 1], blue[i & 1]
            rl, r0, rrt, ru, rd = _cross(rp, b, i, w)
            bl, b0, brt, bu, bd = _cross(bp, b, i, w)
            g0 = gp[b, i + 2, 2:2 + w]
            hr = hor[b, i]
            o0, o1, o2 = lin[b, 0, i], lin[b, 1, i], lin[b, 2, i]
            yy = ypad[b, i + p, p:p + w]
            for j in range(w):
                along = _menon_other_colour(rl[j], r0[j], rrt[j], ru[j], rd[j], bl[j], b0[j], brt[j], bu[j], bd[j],
                                            hr[j], t0, t1, t2)
                vr = b0[j] + along if bb[j] else r0[j]
                vb = r0[j] - along if rr[j] else b0[j]
                vg = g0[j]
                a0 = m00 * vr + m01 * vg + m02 * vb
                a1 = m10 * vr + m11 * vg + m12 * vb
                a2 = m20 * vr + m21 * vg + m22 * vb
                o0[j] = a0
                o1[j] = a1
                o2[j] = a2
                yy[j] = _F(0.299) * a0 + _F(0.587) * a1 + _F(0.114) * a2

    @njit(**_MOPTS)
    def _menon_refine_green(rp, bp, gp, hor, red, blue, g2p, start, stop):
        """Refining step 1: g at R (B) sites = R (B) minus the third-window mean of R - g (B - g)
        along the chosen direction; G sites keep g."""
        h, w = rp.shape[1] - 4, rp.shape[2] - 4
        third = _F(1.0 / 3.0)
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            rr, bb = red[i & 1], blue[i & 1]
            rl, r0, rrt, ru, rd = _cross(rp, b, i, w)
            bl, b0, brt, bu, bd = _cross(bp, b, i, w)
            gl, g0, grt, gu, gd = _cross(gp, b, i, w)
            hr = hor[b, i]
            g2 = g2p[b, i + 2, 2:2 + w]
            for j in range(w):
                rh = (rl[j] - gl[j]) * third + (r0[j] - g0[j]) * third + (rrt[j] - grt[j]) * third
                rv = (ru[j] - gu[j]) * third + (r0[j] - g0[j]) * third + (rd[j] - gd[j]) * third
                bh = (bl[j] - gl[j]) * third + (b0[j] - g0[j]) * third + (brt[j] - grt[j]) * third
                bv = (bu[j] - gu[j]) * third + (b0[j] - g0[j]) * third + (bd[j] - gd[j]) * third
                at_r = r0[j] - (rh if hr[j] else rv)
                at_b = b0[j] - (bh if hr[j] else bv)
                g2[j] = at_r if rr[j] else (at_b if bb[j] else g0[j])

    @njit(**_MOPTS)
    def _menon_refine_rb_at_green(rp, bp, g2p, red, blue, red_row, r2p, b2p, start, stop):
        """Refining step 2: R and B at G sites = g plus the half-window mean of (R - g) and
        (B - g) at the neighbours along their row / column; other sites copied."""
        h, w = rp.shape[1] - 4, rp.shape[2] - 4
        hf = _F(0.5)
        for t in range(start, stop):
            b = t // h
            i = t - b * h
            rr, bb = red[i & 1], blue[i & 1]
            in_red_row = red_row[i & 1] != 0
            rl, r0, rrt, ru, rd = _cross(rp, b, i, w)
            bl, b0, brt, bu, bd = _cross(bp, b, i, w)
            gl, g0, grt, gu, gd = _cross(g2p, b, i, w)
            r2, b2 = r2p[b, i + 2, 2:2 + w], b2p[b, i + 2, 2:2 + w]
            for j in range(w):
                r_row = g0[j] + ((rl[j] - gl[j]) * hf + (rrt[j] - grt[j]) * hf)
                r_col = g0[j] + ((ru[j] - gu[j]) * hf + (rd[j] - gd[j]) * hf)
                b_row = g0[j] + ((bl[j] - gl[j]) * hf + (brt[j] - grt[j]) * hf)
                b_col = g0[j] + ((bu[j] - gu[j]) * hf + (bd[j] - gd[j]) * hf)
                green = not (rr[j] | bb[j])
                r_g = r_row if in_red_row else r_col
                b_g = b_col if in_red_row else b_row
                r2[j] = r_g if green else r0[j]
                b2[j] = b_g if green else b0[j]


# --------------------------------------------------------------------------- generated demosaic loops


def _not_private(folder: Path) -> str | None:
    """Why ``folder`` (or its ``__pycache__``, where Numba keeps compiled code) could hold
    files planted by another user; ``None`` when it is private to this user.

    Private means owned by this user and writable by nobody else. Only checked where POSIX
    owners and modes exist.
    """
    if not hasattr(os, "geteuid"):  # pragma: no cover - Windows: ACLs, not modes
        return None
    for path in (folder, folder / "__pycache__"):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        if info.st_uid != os.geteuid():
            return f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _kernel_folder() -> Path | None:
    """Where generated kernel modules (and Numba's cache of them) are kept: the user's cache
    folder or ``$DRIFTHELPERS_KERNEL_CACHE``.

    ``None`` (the loops are then compiled from memory in each process, without a disk
    cache) where the folder cannot be written, or, with a warning, where it is not private
    to this user: Numba's cache there holds machine code that would be run.
    """
    if os.environ.get("DRIFTHELPERS_KERNEL_CACHE"):
        folder = Path(os.environ["DRIFTHELPERS_KERNEL_CACHE"])
    else:
        import pooch

        folder = Path(pooch.os_cache("drifthelpers")) / "kernels"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # made here, private whatever the umask, before Numba makes it with the umask's mode
        (folder / "__pycache__").mkdir(mode=0o700, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        problem = _not_private(folder)
    except OSError:
        return None
    if problem is not None:
        warnings.warn(f"kernel cache folder refused: {problem}; the demosaic loops are compiled in memory "
                      "instead (make the folder private with 'chmod go-w' or set DRIFTHELPERS_KERNEL_CACHE)",
                      RuntimeWarning, stacklevel=3)
        return None
    return folder


def _demosaic_source(outputs: tuple) -> str:
    """Python source of a demosaic + colour matrix + luma loop for one tap table.

    The weights and constants arrive as arrays (the black level is folded into them at run
    time, see :func:`render_static`); the tap positions are written into the loop, so LLVM
    sees contiguous loads at fixed offsets and vectorises over the columns.
    """
    lines = [
        "# Generated by drifthelpers.fastisp from drifthelpers.isp._phase_plan; do not edit.",
        "import numpy as np",
        "from numba import njit",
        "",
        "from drifthelpers.fastisp import _NoAliasCompiler" if _NoAliasCompiler else "_NoAliasCompiler = None",
        "",
        "_F = np.float32",
        "",
        "",
        f"@njit(nogil=True, cache=True, fastmath={{{', '.join(map(repr, sorted(_FLAGS)))}}}, error_model='numpy',",
        "      pipeline_class=_NoAliasCompiler)" if _NoAliasCompiler else "      )",
        "def kernel(planes, weights, consts, mat, lin, ypad, p, start, stop):",
        "    h2 = lin.shape[2] // 2",
        "    w2 = lin.shape[3] // 2",
    ]
    n_taps = sum(len(taps) for *_, taps in outputs)
    lines += [f"    w_{k} = weights[{k}]" for k in range(n_taps)]
    lines += [f"    c_{o} = consts[{o}]" for o in range(len(outputs))]
    lines += [f"    m_{a}{b} = mat[{a}, {b}]" for a in range(3) for b in range(3)]
    lines += ["    for t in range(start, stop):",
              "        b = t // h2",
              "        i = t - b * h2"]
    k = 0
    by_site = {}
    for o, (py, px, colour, taps) in enumerate(outputs):
        terms = []
        for ch, y0, x0, _ in taps:
            terms.append(f"w_{k} * planes[b, {ch}, i + {y0}, j + {x0}]")
            k += 1
        by_site.setdefault((py, px), {})[colour] = f"c_{o} + " + " + ".join(terms)
    for (py, px), exprs in sorted(by_site.items()):
        # one loop per cell position: with the stores of two positions in one loop LLVM cannot
        # prove them independent (numba's index arithmetic) and does not vectorise
        lines.append("        for j in range(w2):")
        v = [f"v{c}_{py}{px}" for c in range(3)]
        a = [f"a{c}_{py}{px}" for c in range(3)]
        for c in range(3):
            lines.append(f"            {v[c]} = {exprs[c]}")
        for c in range(3):
            lines.append(f"            {a[c]} = m_{c}0 * {v[0]} + m_{c}1 * {v[1]} + m_{c}2 * {v[2]}")
            lines.append(f"            lin[b, {c}, 2 * i + {py}, 2 * j + {px}] = {a[c]}")
        lines.append(f"            ypad[b, 2 * i + {py} + p, 2 * j + {px} + p] = "
                     f"_F(0.299) * {a[0]} + _F(0.587) * {a[1]} + _F(0.114) * {a[2]}")
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=None)
def _demosaic_kernel(cfa: str, kernels: tuple):
    """The compiled loop for one CFA pattern and demosaicer: ``(kernel, outputs, pad)``."""
    from drifthelpers import isp

    radius = len(kernels[0]) // 2
    pad = 2 * ((radius + 1) // 2)  # even, so the padded mosaic keeps the pattern
    _, outputs = isp._phase_plan(cfa, kernels, pad // 2)
    source = _demosaic_source(outputs)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    name = f"drifthelpers_demosaic_{digest}"
    folder = _kernel_folder()
    if folder is None:  # nowhere to write: compile from memory, without a disk cache
        namespace: dict = {}
        exec(compile(source.replace("cache=True", "cache=False"), name, "exec"), namespace)
        return namespace["kernel"], outputs, pad
    # The file on disk is only the anchor of Numba's cache (which keys its entries on the
    # file's path and time stamp); the code run is compiled here from the generated text,
    # never imported from the folder, so no planted bytecode or edited file is executed.
    path = folder / f"{name}.py"
    try:
        current = path.read_text() if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        current = None
    if current != source:
        atomic_write_text(path, source)
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module.kernel, outputs, pad


# --------------------------------------------------------------------------- the chain


def _site_affine(black: torch.Tensor, white: torch.Tensor) -> tuple[list[float], list[float]]:
    """Black-level normalisation ``x = raw * scale + offset`` per cell position (TL, TR, BL, BR)."""
    black4 = black.double().expand(4).tolist()
    scale = [1.0 / (float(white) - bl) for bl in black4]
    return scale, [-bl * s for bl, s in zip(black4, scale)]


def _menon(raw: np.ndarray, cfa: str, affine, mat, lin, ypad, p: int) -> None:
    """Menon's demosaicer with the refining step, then colour matrix and luma (see the kernels)."""
    from drifthelpers.raw import cfa_channel_indices

    n, h, w = raw.shape
    colours = np.array(cfa_channel_indices(cfa)).reshape(2, 2)  # colour index per cell position
    parity = np.arange(w) % 2
    red = (colours[:, parity] == 0).astype(np.uint8)  # (2, W): by row parity
    blue = (colours[:, parity] == 2).astype(np.uint8)
    red_row = red.any(axis=1).astype(np.uint8)
    scale = np.array(affine[0], dtype=np.float32).reshape(2, 2)
    offset = np.array(affine[1], dtype=np.float32).reshape(2, 2)

    def padded():
        return np.empty((n, h + 4, w + 4), dtype=np.float32)

    def fill(*arrays):
        for a in arrays:
            _run_rows(_reflect_border, n, a, 2)

    rows = n * h
    xp, ghp, gvp, chp, cvp = padded(), padded(), padded(), padded(), padded()
    _run_rows(_menon_normalise, rows, raw, scale, offset, xp)
    fill(xp)
    _run_rows(_menon_directional, rows, xp, red, blue, ghp, gvp, chp, cvp)
    fill(chp, cvp)
    dhp, dvp = padded(), padded()
    _run_rows(_menon_gradients, rows, chp, cvp, dhp, dvp)
    fill(dhp, dvp)
    hor = np.empty((n, h, w), dtype=np.bool_)
    gp = padded()
    _run_rows(_menon_decide, rows, dhp, dvp, ghp, gvp, hor, gp)
    fill(gp)
    r1, b1 = chp, cvp  # (buffers reused once their values are no longer read)
    _run_rows(_menon_rb_at_green, rows, xp, gp, red, blue, red_row, r1, b1)
    fill(r1, b1)
    half = np.array((0.5, 0.0, 0.5), dtype=np.float32)
    third = np.full(3, 1.0 / 3.0, dtype=np.float32)
    r2, b2 = dhp, dvp
    _run_rows(_menon_rb_at_rb, rows, r1, b1, hor, red, blue, half, r2, b2)
    fill(r2, b2)
    g2 = ghp
    _run_rows(_menon_refine_green, rows, r2, b2, gp, hor, red, blue, g2)
    fill(g2)
    r3, b3 = r1, b1
    _run_rows(_menon_refine_rb_at_green, rows, r2, b2, g2, red, blue, red_row, r3, b3)
    fill(r3, b3)
    _run_rows(_menon_final, rows, r3, b3, g2, hor, red, blue, third, mat, lin, ypad, p)


def render_static(raw: torch.Tensor, cfa: str, demosaic: str, sharpen: str, denoise: str, black: torch.Tensor,
                  white: torch.Tensor, gains: torch.Tensor, ccm: torch.Tensor, gamma) -> torch.Tensor:
    """One static preset on a batch (N, 1, H, W) float32 CPU mosaic; see :func:`applies`."""
    from drifthelpers import isp

    raw = raw.detach()  # (under no_grad a tensor may still require grad; numpy() refuses it)
    n, _, h, w = raw.shape
    mat = (ccm.double() * gains.double().unsqueeze(-2)).float().numpy()  # ccm @ diag(gains)
    sharpen_reach = 1 if sharpen == "s" else isp._gaussian_size(isp._UNSHARP_RADIUS) // 2
    lin = torch.empty((n, 3, h, w), dtype=torch.float32)
    ypad = torch.empty((n, h + 2 * sharpen_reach, w + 2 * sharpen_reach), dtype=torch.float32)
    lin_np, ypad_np = lin.numpy(), ypad.numpy()

    if demosaic == "me":
        _menon(raw.reshape(n, h, w).numpy(), cfa, _site_affine(black, white), mat, lin_np, ypad_np, sharpen_reach)
    else:
        kernels = isp._BILINEAR_KERNELS if demosaic == "bi" else isp._MALVAR_KERNELS
        kernel, outputs, pad = _demosaic_kernel(cfa, kernels)
        planes = np.empty((n, 4, h // 2 + pad, w // 2 + pad), dtype=np.float32)
        _run_rows(_pad_split_rows, n * (h + 2 * pad), raw.reshape(n, h, w).numpy(), pad, planes)
        scale, offset = _site_affine(black, white)
        weights = np.array([wt * scale[ch] for *_, taps in outputs for ch, _, _, wt in taps], dtype=np.float32)
        consts = np.array([sum(wt * offset[ch] for ch, _, _, wt in taps) for *_, taps in outputs], dtype=np.float32)
        _run_rows(kernel, n * (h // 2), planes, weights, consts, mat, lin_np, ypad_np, sharpen_reach)
    _run_rows(_reflect_border, n, ypad_np, sharpen_reach)

    # luma filters: sharpen (into a buffer padded for the denoiser), then denoise
    denoise_reach = 1 if denoise == "me" else isp._gaussian_size(isp._DENOISE_SIGMA) // 2
    spad = np.empty((n, h + 2 * denoise_reach, w + 2 * denoise_reach), dtype=np.float32)
    if sharpen == "s":
        k = np.array(isp.SHARPEN_KERNEL, dtype=np.float32).reshape(9)
        _run_rows(_filter3x3_rows, n * h, ypad_np, k, spad, denoise_reach)
    else:  # unsharp mask: (1 + a) y - a G y, the column taps weighted by -a (as isp._unsharp_op)
        size, amount = isp._gaussian_size(isp._UNSHARP_RADIUS), isp._UNSHARP_AMOUNT
        gauss = np.array(isp._gaussian_taps(isp._UNSHARP_RADIUS, size))  # float64, like torch's alphas
        tmp = np.empty((n, h + size - 1, w), dtype=np.float32)
        _run_rows(_row_pass, n * (h + size - 1), ypad_np, gauss.astype(np.float32), tmp)
        column = (-amount * gauss).astype(np.float32)
        _run_rows(_column_pass, n * h, tmp, column, ypad_np, np.float32(1.0 + amount), sharpen_reach, spad,
                  denoise_reach)
    _run_rows(_reflect_border, n, spad, denoise_reach)
    filtered = np.empty((n, h, w), dtype=np.float32)
    if denoise == "me":
        _run_rows(_median3x3_rows, n * h, spad, filtered)
    else:
        size = isp._gaussian_size(isp._DENOISE_SIGMA)
        taps = np.array(isp._gaussian_taps(isp._DENOISE_SIGMA, size), dtype=np.float32)
        tmp = np.empty((n, h + size - 1, w), dtype=np.float32)
        _run_rows(_row_pass, n * (h + size - 1), spad, taps, tmp)
        _run_rows(_column_pass, n * h, tmp, taps, spad, np.float32(0.0), 0, filtered, 0)

    inv = np.float32(1.0 / float(gamma))
    _run_rows(_tail_rows, n * h, lin_np, filtered, ypad_np, sharpen_reach, inv, np.float32(isp._GAMMA_EPS))
    return lin
