"""Direct convolution for one input channel: the first layer of a network on grey images.

With Cin = 1, im2col's GEMMs have a shared axis of kh*kw (9): OpenBLAS spends more time
packing than multiplying, and the route streams a (kh*kw, N*Hout*Wout) matrix and a
transposed copy of the output through memory (~1.7 ms for (64, 1, 28, 28) -> 8 channels,
forward and both gradients). Here each output plane is kh*kw shifted multiply-adds of the
input plane, in one pass over memory, and the gradients are the same loops turned round:

    y[n, o]   = sum_ab w[o, a, b] * shift_ab(x[n])
    dx[n]     = sum_oab w[o, a, b] * unshift_ab(g[n, o])
    dw[o, ab] = sum_n <g[n, o], shift_ab(x[n])>

Arrays are flat and C-contiguous; a work item is one (n, o) output plane, one image, or
one output channel, so no two items write the same memory.

Stride 1 (the common case) has its own loops: the plane is first copied into a zero-padded
scratch plane of width ``Wp``, and the output is computed "wide", ``Wp`` columns to a row
(the extra ones are thrown away), so that each of the kh*kw shifts is one long
contiguous loop over the whole plane instead of Hout loops of Wout (28 elements: three
vectors and four scalars each). 3-4x faster.
"""

from __future__ import annotations

import numpy as np

from . import buffers
from .im2col import valid_range
from .jit import kernel
from .threads import parallel_for

U = np.uintp


@kernel
def _forward(start, stop, x, w, y, h_, w_, o_, kh, kw, sh, sw, ph, pw, ho, wo):
    for t in range(start, stop):  # one (n, o) output plane
        n = t // o_
        o = t - n * o_
        yb = t * ho * wo
        for q in range(yb, yb + ho * wo):
            y[U(q)] = 0
        for a in range(kh):
            ilo, ihi = valid_range(a - ph, sh, h_, ho)
            for b in range(kw):
                jlo, jhi = valid_range(b - pw, sw, w_, wo)
                wv = w[U((o * kh + a) * kw + b)]
                for i in range(ilo, ihi):
                    xr = n * h_ * w_ + (i * sh + a - ph) * w_ + b - pw
                    yr = yb + i * wo
                    if sw == 1:  # contiguous on both sides: vectorised
                        for j in range(jlo, jhi):
                            y[U(yr + j)] += wv * x[U(xr + j)]
                    else:
                        for j in range(jlo, jhi):
                            y[U(yr + j)] += wv * x[U(xr + j * sw)]


@kernel
def _input_grad(start, stop, g, w, dx, h_, w_, o_, kh, kw, sh, sw, ph, pw, ho, wo):
    for n in range(start, stop):  # one image: every output channel adds into its plane
        xb = n * h_ * w_
        for q in range(xb, xb + h_ * w_):
            dx[U(q)] = 0
        for o in range(o_):
            gb = (n * o_ + o) * ho * wo
            for a in range(kh):
                ilo, ihi = valid_range(a - ph, sh, h_, ho)
                for b in range(kw):
                    jlo, jhi = valid_range(b - pw, sw, w_, wo)
                    wv = w[U((o * kh + a) * kw + b)]
                    for i in range(ilo, ihi):
                        xr = xb + (i * sh + a - ph) * w_ + b - pw
                        gr = gb + i * wo
                        if sw == 1:
                            for j in range(jlo, jhi):
                                dx[U(xr + j)] += wv * g[U(gr + j)]
                        else:
                            for j in range(jlo, jhi):
                                dx[U(xr + j * sw)] += wv * g[U(gr + j)]


@kernel
def _weight_grad(start, stop, g, x, dw, n_, h_, w_, o_, kh, kw, sh, sw, ph, pw, ho, wo):
    acc = np.empty(wo, dw.dtype)  # partial sums along a row: no reduction chain to wait on
    for o in range(start, stop):  # one output channel: its kh*kw weights
        for a in range(kh):
            ilo, ihi = valid_range(a - ph, sh, h_, ho)
            for b in range(kw):
                jlo, jhi = valid_range(b - pw, sw, w_, wo)
                for j in range(wo):
                    acc[j] = 0
                for n in range(n_):
                    gb = (n * o_ + o) * ho * wo
                    for i in range(ilo, ihi):
                        xr = n * h_ * w_ + (i * sh + a - ph) * w_ + b - pw
                        gr = gb + i * wo
                        if sw == 1:
                            for j in range(jlo, jhi):
                                acc[U(j)] += g[U(gr + j)] * x[U(xr + j)]
                        else:
                            for j in range(jlo, jhi):
                                acc[U(j)] += g[U(gr + j)] * x[U(xr + j * sw)]
                total = 0.0  # (in float64)
                for j in range(wo):
                    total += acc[j]
                dw[U((o * kh + a) * kw + b)] = total


def _geometry(x_shape, w_shape, stride, padding):
    n, _, h, w = x_shape
    o, _, kh, kw = w_shape
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return n, h, w, o, kh, kw, sh, sw, ph, pw, ho, wo


def forward(x, w, stride, padding):
    """conv2d of ``x`` (N, 1, H, W) with ``w`` (Cout, 1, kh, kw): (N, Cout, Hout, Wout)."""
    n, h, wd, o, kh, kw, sh, sw, ph, pw, ho, wo = _geometry(x.shape, w.shape, stride, padding)
    y = buffers.empty((n, o, ho, wo), x.dtype)
    flat = np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(w).reshape(-1)
    if (sh, sw) == (1, 1):
        parallel_for(_forward_s1, n, *flat, y.reshape(-1), h, wd, o, kh, kw, ph, pw, ho, wo,
                     work=y.size * kh * kw)
        return y
    parallel_for(_forward, n * o, np.ascontiguousarray(x).reshape(-1),
                 np.ascontiguousarray(w).reshape(-1), y.reshape(-1), h, wd, o, kh, kw, sh, sw,
                 ph, pw, ho, wo, work=y.size * kh * kw)
    return y


def input_grad(g, w, x_shape, stride, padding):
    """The gradient for ``x`` of :func:`forward`, for the output gradient ``g``."""
    n, h, wd, o, kh, kw, sh, sw, ph, pw, ho, wo = _geometry(x_shape, w.shape, stride, padding)
    dx = buffers.empty(tuple(x_shape), g.dtype)
    if (sh, sw) == (1, 1) and kh - 1 >= ph and kw - 1 >= pw:
        parallel_for(_input_grad_s1, n, np.ascontiguousarray(g).reshape(-1),
                     np.ascontiguousarray(w).reshape(-1), dx.reshape(-1), h, wd, o, kh, kw, ph,
                     pw, ho, wo, work=g.size * kh * kw)
        return dx
    parallel_for(_input_grad, n, np.ascontiguousarray(g).reshape(-1),
                 np.ascontiguousarray(w).reshape(-1), dx.reshape(-1), h, wd, o, kh, kw, sh, sw,
                 ph, pw, ho, wo, work=g.size * kh * kw)
    return dx


def weight_grad(g, x, w_shape, stride, padding):
    """The gradient for ``w`` of :func:`forward`, for the output gradient ``g``."""
    n, h, wd, o, kh, kw, sh, sw, ph, pw, ho, wo = _geometry(x.shape, w_shape, stride, padding)
    dw = np.empty(tuple(w_shape), g.dtype)
    if (sh, sw) == (1, 1):
        parallel_for(_weight_grad_s1, o, np.ascontiguousarray(g).reshape(-1),
                     np.ascontiguousarray(x).reshape(-1), dw.reshape(-1), n, h, wd, o, kh, kw,
                     ph, pw, ho, wo, work=g.size * kh * kw)
        return dw
    parallel_for(_weight_grad, o, np.ascontiguousarray(g).reshape(-1),
                 np.ascontiguousarray(x).reshape(-1), dw.reshape(-1), n, h, wd, o, kh, kw, sh,
                 sw, ph, pw, ho, wo, work=g.size * kh * kw)
    return dw


# ----- stride 1: shifts as whole-plane loops over zero-padded, "wide" planes -----


@kernel
def _pad_plane(src, s0, h, w, dst, top, left, wp, rows):
    """Copy the h x w plane at ``src[s0:]`` into ``dst`` (rows x wp) at (top, left); zeros
    elsewhere."""
    for q in range(rows * wp):
        dst[U(q)] = 0
    for i in range(h):
        for j in range(w):
            dst[U((i + top) * wp + left + j)] = src[U(s0 + i * w + j)]


@kernel
def _forward_s1(start, stop, x, w, y, h_, w_, o_, kh, kw, ph, pw, ho, wo):
    wp, hp = w_ + 2 * pw, h_ + 2 * ph + 1  # one spare row: a wide row may run past the last
    xp = np.empty(hp * wp, x.dtype)
    wide = np.empty(ho * wp, x.dtype)
    for n in range(start, stop):  # one image: every output channel from one padded plane
        _pad_plane(x, n * h_ * w_, h_, w_, xp, ph, pw, wp, hp)
        for o in range(o_):
            for q in range(ho * wp):
                wide[U(q)] = 0
            for a in range(kh):
                for b in range(kw):
                    wv = w[U((o * kh + a) * kw + b)]
                    d = a * wp + b
                    for q in range(ho * wp):
                        wide[U(q)] += wv * xp[U(q + d)]
            yb = (n * o_ + o) * ho * wo
            for i in range(ho):
                for j in range(wo):
                    y[U(yb + i * wo + j)] = wide[U(i * wp + j)]


@kernel
def _input_grad_s1(start, stop, g, w, dx, h_, w_, o_, kh, kw, ph, pw, ho, wo):
    # dx = sum over o of g[n, o] padded by (k - 1 - p) and correlated with w flipped
    qh, qw = kh - 1 - ph, kw - 1 - pw
    wp, hp = wo + 2 * qw, ho + 2 * qh + 1
    gp = np.empty(hp * wp, g.dtype)
    wide = np.empty(h_ * wp, g.dtype)
    for n in range(start, stop):  # one image
        for q in range(h_ * wp):
            wide[U(q)] = 0
        for o in range(o_):
            _pad_plane(g, (n * o_ + o) * ho * wo, ho, wo, gp, qh, qw, wp, hp)
            for a in range(kh):
                for b in range(kw):
                    wv = w[U((o * kh + kh - 1 - a) * kw + kw - 1 - b)]
                    d = a * wp + b
                    for q in range(h_ * wp):
                        wide[U(q)] += wv * gp[U(q + d)]
        xb = n * h_ * w_
        for i in range(h_):
            for j in range(w_):
                dx[U(xb + i * w_ + j)] = wide[U(i * wp + j)]


@kernel
def _weight_grad_s1(start, stop, g, x, dw, n_, h_, w_, o_, kh, kw, ph, pw, ho, wo):
    wp, hp = w_ + 2 * pw, h_ + 2 * ph + 1
    xp = np.empty(hp * wp, x.dtype)
    gw = np.empty(ho * wp, g.dtype)  # g[n, o] widened to wp columns, zeros past wo
    acc = np.empty((kh * kw, ho * wp), dw.dtype)  # partial sums: no reduction chain
    for o in range(start, stop):  # one output channel: its kh*kw weights
        for q in range(kh * kw):
            for r in range(ho * wp):
                acc[q, U(r)] = 0
        for n in range(n_):
            _pad_plane(x, n * h_ * w_, h_, w_, xp, ph, pw, wp, hp)
            _pad_plane(g, (n * o_ + o) * ho * wo, ho, wo, gw, 0, 0, wp, ho)
            for a in range(kh):
                for b in range(kw):
                    row = acc[a * kw + b]
                    d = a * wp + b
                    for q in range(ho * wp):
                        row[U(q)] += gw[U(q)] * xp[U(q + d)]
        for q in range(kh * kw):
            total = 0.0  # (in float64)
            for r in range(ho * wp):
                total += acc[q, U(r)]
            dw[U(o * kh * kw + q)] = total
