"""numba im2col / col2im for float32 and float64 (the dispatcher sends other dtypes to the
reference).

Layout: ``cols[c*kh*kw + i*kw + j, n*Hout*Wout + oh*Wout + ow]``, see ``kernels.im2col``.

Speed notes (measured, see kernels/README.md): the kernels index flat arrays with
``uintp`` indices. numba adds a negative-index wrap-around check to every signed index it
cannot prove non-negative, which blocks LLVM's vectoriser and made these loops ~4x slower.
"""

from __future__ import annotations

import numpy as np

from ..registry import register
from . import buffers
from .jit import inline, kernel
from .threads import parallel_for

U = np.uintp


@inline
def valid_range(off, stride, size, n_out):
    """Output indices o in [lo, hi) with 0 <= o*stride + off < size."""
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    last = size - 1 - off
    hi = 0 if last < 0 else last // stride + 1
    if hi > n_out:
        hi = n_out
    if lo > hi:
        lo = hi
    return lo, hi


# ----- im2col -----


@kernel
def _im2col(start, stop, xf, cf, n_, c_, h_, w_, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    plane = ho * wo
    kk = kh * kw
    for t in range(start, stop):  # one (row, image) block of Hout*Wout contiguous outputs
        row = t // n_
        n = t - row * n_
        c = row // kk
        r = row - c * kk
        i = r // kw
        j = r - i * kw
        hoff = i * dh - ph
        woff = j * dw - pw
        olo, ohi = valid_range(hoff, sh, h_, ho)
        lo, hi = valid_range(woff, sw, w_, wo)
        ob = row * (n_ * plane) + n * plane
        xb = (n * c_ + c) * h_ * w_
        for q in range(ob, ob + olo * wo):  # rows above the image
            cf[U(q)] = 0
        for q in range(ob + ohi * wo, ob + plane):  # rows below
            cf[U(q)] = 0
        if sw == 1 and sh == 1 and wo == w_:
            # "same" padding: input and output planes differ by a constant flat offset,
            # so copy the valid rows in one run and zero the wrapped-around columns after.
            d = xb + hoff * w_ + woff - ob
            for q in range(ob + olo * wo, ob + ohi * wo):
                cf[U(q)] = xf[U(q + d)]
            for oh in range(olo, ohi):
                o = ob + oh * wo
                for ow in range(lo):
                    cf[U(o + ow)] = 0
                for ow in range(hi, wo):
                    cf[U(o + ow)] = 0
        else:
            for oh in range(olo, ohi):
                o = ob + oh * wo
                xr = xb + (oh * sh + hoff) * w_ + woff
                for ow in range(lo):
                    cf[U(o + ow)] = 0
                if sw == 1:
                    for ow in range(lo, hi):
                        cf[U(o + ow)] = xf[U(xr + ow)]
                else:
                    for ow in range(lo, hi):
                        cf[U(o + ow)] = xf[U(xr + ow * sw)]
                for ow in range(hi, wo):
                    cf[U(o + ow)] = 0


# ----- col2im -----


def _col2im_blocks(n_, c_):
    """Images per block of col2im's work items: at least 16 items where possible."""
    nblk = max(1, min(n_, (16 + c_ - 1) // c_))
    return nblk, (n_ + nblk - 1) // nblk


@kernel
def _col2im(start, stop, cf, df, n_, c_, h_, w_, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
            nblk, bs):
    # One work item = one channel c and a block of images: it owns those dx planes (no
    # races), zeroes them, then streams each of its kh*kw cols rows in long contiguous runs,
    # adding into the planes while they sit in cache. (One item per (n, c) plane read kh*kw
    # short runs 200 kB apart per plane and was 1.6x slower.)
    plane = ho * wo
    hw = h_ * w_
    for t in range(start, stop):
        c = t // nblk
        n0 = (t - c * nblk) * bs
        n1 = min(n_, n0 + bs)
        for n in range(n0, n1):
            xb = (n * c_ + c) * hw
            for q in range(xb, xb + hw):
                df[U(q)] = 0
        for i in range(kh):
            hoff = i * dh - ph
            olo, ohi = valid_range(hoff, sh, h_, ho)
            for j in range(kw):
                woff = j * dw - pw
                lo, hi = valid_range(woff, sw, w_, wo)
                rb = ((c * kh + i) * kw + j) * (n_ * plane)
                for n in range(n0, n1):
                    xb = (n * c_ + c) * hw
                    ob = rb + n * plane
                    for oh in range(olo, ohi):
                        o = ob + oh * wo
                        xr = xb + (oh * sh + hoff) * w_ + woff
                        if sw == 1:
                            for ow in range(lo, hi):
                                df[U(xr + ow)] += cf[U(o + ow)]
                        else:
                            for ow in range(lo, hi):
                                df[U(xr + ow * sw)] += cf[U(o + ow)]


@register("im2col", "cpu", impl="numba", default=True)
def im2col(x, g):
    """numba im2col; same contract and layout as ``kernels.im2col``."""
    x = np.ascontiguousarray(x)
    cols = buffers.empty(g.cols_shape, x.dtype)
    if cols.size:
        parallel_for(_im2col, g.c * g.kh * g.kw * g.n, x.reshape(-1), cols.reshape(-1), *g,
                     work=cols.size)
    return cols


@register("col2im", "cpu", impl="numba", default=True)
def col2im(cols, g):
    """numba col2im, the exact adjoint of :func:`im2col`."""
    cols = np.ascontiguousarray(cols)
    dx = buffers.empty(g.x_shape, cols.dtype)
    if dx.size:
        nblk, bs = _col2im_blocks(g.n, g.c)
        parallel_for(_col2im, g.c * nblk, cols.reshape(-1), dx.reshape(-1), *g, nblk, bs,
                     work=cols.size)
    return dx
