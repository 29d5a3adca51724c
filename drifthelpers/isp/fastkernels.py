"""The compiled loops of :mod:`drifthelpers.isp.fastisp` (internal): one Numba function per pass.

Each function processes rows ``[start, stop)`` of its output, so that
:func:`drifthelpers.isp.fastisp._run_rows` can split an image over threads (the loops release
the GIL). They read plain numpy arrays, which the caller allocates and pads; what each pass
computes is described in :mod:`drifthelpers.isp.fastisp`. Without Numba this module defines
only ``numba = None`` and the compiler options.
"""

from __future__ import annotations

import math

import numpy as np

try:  # Numba is a dependency; without it the torch path renders everything
    import numba
    from llvmlite import ir as _ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

# Numba options. Fast-math only as fused multiply-adds and signed-zero freedom: no
# reassociation (a pixel's arithmetic does not depend on where it falls in a vector, so results
# are bit-identical for any batch or thread split) and no 'nnan'/'ninf' (NaN and inf propagate
# as in torch). error_model 'numpy' drops Python's zero-division checks, which block
# vectorisation.
_FLAGS = {"contract", "nsz"}
_OPTS = dict(nogil=True, cache=True, fastmath=_FLAGS, error_model="numpy")


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

