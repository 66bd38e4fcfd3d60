"""numba max / average pooling (NCHW) for float32 and float64 (the dispatcher sends other
dtypes to the reference).

Max pooling stores, for each output, the flat index into its input H*W plane (as torch);
the backward scatters with it. Every kernel's work item is one (n, c) plane, so the
scatters never race.
"""

from __future__ import annotations

import numpy as np

from ..registry import register
from .im2col import valid_range
from . import buffers
from .jit import inline, kernel
from .threads import parallel_for

U = np.uintp


# ----- max pooling -----


@inline
def _take(v, best):
    """Whether ``v`` replaces the running max: strictly greater (first max wins) or NaN."""
    return v > best or v != v


@kernel
def _max_fwd_2x2(start, stop, xf, of, af, h_, w_, ho, wo):
    """2x2 windows, stride 2, no padding: the common CNN case, unrolled and branch-free
    (~2x a version sharing its loop with the general paths, ~5x the general loop)."""
    for t in range(start, stop):
        xb = t * h_ * w_
        ob = t * ho * wo
        for oh in range(ho):
            r0 = 2 * oh * w_
            r1 = r0 + w_
            for ow in range(wo):
                k = r0 + 2 * ow
                best = xf[U(xb + k)]
                bi = k
                v = xf[U(xb + k + 1)]
                c = (v > best) | (v != v)  # strictly greater (first max wins) or NaN
                best = v if c else best
                bi = k + 1 if c else bi
                k = r1 + 2 * ow
                v = xf[U(xb + k)]
                c = (v > best) | (v != v)
                best = v if c else best
                bi = k if c else bi
                v = xf[U(xb + k + 1)]
                c = (v > best) | (v != v)
                best = v if c else best
                bi = k + 1 if c else bi
                of[U(ob + oh * wo + ow)] = best
                af[U(ob + oh * wo + ow)] = bi


@kernel
def _max_fwd(start, stop, xf, of, af, h_, w_, ho, wo, kh, kw, sh, sw, ph, pw):
    for t in range(start, stop):  # one (image, channel) plane per iteration
        xb = t * h_ * w_
        ob = t * ho * wo
        if sw == 1:  # row-wise: the inner loop runs along contiguous memory (~4x faster)
            for oh in range(ho):
                h0 = oh * sh - ph
                o = ob + oh * wo
                hfirst = max(h0, 0) * w_
                for ow in range(wo):  # -inf, at the window's first real element (as torch)
                    of[U(o + ow)] = -np.inf
                    af[U(o + ow)] = hfirst + max(ow - pw, 0)
                for i in range(max(0, -h0), min(kh, h_ - h0)):
                    r = (h0 + i) * w_
                    for j in range(kw):
                        lo, hi = valid_range(j - pw, 1, w_, wo)
                        for ow in range(lo, hi):
                            k = r + ow + j - pw
                            v = xf[U(xb + k)]
                            if _take(v, of[U(o + ow)]):
                                of[U(o + ow)] = v
                                af[U(o + ow)] = k
        else:
            for oh in range(ho):
                h0 = oh * sh - ph
                i0 = max(0, -h0)
                i1 = min(kh, h_ - h0)
                for ow in range(wo):
                    w0 = ow * sw - pw
                    j0 = max(0, -w0)
                    j1 = min(kw, w_ - w0)
                    bi = (h0 + i0) * w_ + w0 + j0
                    best = xf[U(xb + bi)]
                    for i in range(i0, i1):
                        r = (h0 + i) * w_ + w0
                        for j in range(j0, j1):
                            v = xf[U(xb + r + j)]
                            if _take(v, best):
                                best, bi = v, r + j
                    of[U(ob + oh * wo + ow)] = best
                    af[U(ob + oh * wo + ow)] = bi


@kernel
def _max_bwd(start, stop, gf, af, df, bad, hw, m):
    for t in range(start, stop):
        xb = t * hw
        for q in range(xb, xb + hw):
            df[U(q)] = 0
        for o in range(t * m, (t + 1) * m):
            a = af[U(o)]
            if a < 0 or a >= hw:
                bad[t] = 1
            else:
                df[U(xb + a)] += gf[U(o)]


def _window(g):
    """The general kernels' window arguments."""
    return g.kh, g.kw, g.sh, g.sw, g.ph, g.pw


@register("max_pool2d_forward", "cpu", impl="numba", default=True)
def max_pool2d_forward(x, g):
    """numba max pooling; returns ``(out, argmax)`` as ``kernels.max_pool2d_forward``."""
    x = np.ascontiguousarray(x)
    out = buffers.empty(g.out_shape, x.dtype)
    arg = buffers.empty(g.out_shape, np.int64)
    if out.size:
        flat = (x.reshape(-1), out.reshape(-1), arg.reshape(-1), g.h, g.w, g.ho, g.wo)
        if g.plain_2x2:
            parallel_for(_max_fwd_2x2, g.n * g.c, *flat, work=x.size)
        else:
            parallel_for(_max_fwd, g.n * g.c, *flat, *_window(g), work=x.size)
    return out, arg


@register("max_pool2d_backward", "cpu", impl="numba", default=True)
def max_pool2d_backward(grad_out, argmax, g):
    """Scatter ``grad_out`` into a zero (N, C, H, W) array at the forward's ``argmax``."""
    planes, hw = g.n * g.c, g.h * g.w
    gf = np.ascontiguousarray(grad_out).reshape(-1)
    a = np.ascontiguousarray(argmax, dtype=np.int64).reshape(-1)
    dx = buffers.empty((planes, hw), grad_out.dtype)
    bad = np.zeros(planes, dtype=np.uint8)
    if dx.size:
        parallel_for(_max_bwd, planes, gf, a, dx.reshape(-1), bad, hw, g.ho * g.wo,
                     work=dx.size)
    if bad.any():
        raise ValueError(
            f"max_pool2d_backward: argmax holds indices outside [0, {hw}) for x_shape "
            f"{g.x_shape}; pass the argmax returned by max_pool2d_forward"
        )
    return dx.reshape(g.x_shape)


# ----- average pooling -----


@kernel
def _avg_fwd_2x2(start, stop, xf, of, h_, w_, ho, wo, area):
    """2x2 windows, stride 2, no padding, unrolled (~4x the general loop)."""
    for t in range(start, stop):
        xb = t * h_ * w_
        ob = t * ho * wo
        for oh in range(ho):
            r0 = xb + 2 * oh * w_
            r1 = r0 + w_
            o = ob + oh * wo
            for ow in range(wo):
                s = xf[U(r0 + 2 * ow)] + xf[U(r0 + 2 * ow + 1)]
                s = s + xf[U(r1 + 2 * ow)] + xf[U(r1 + 2 * ow + 1)]
                of[U(o + ow)] = s / area


@kernel
def _avg_bwd_2x2(start, stop, gf, df, h_, w_, ho, wo, area):
    for t in range(start, stop):
        xb = t * h_ * w_
        ob = t * ho * wo
        if h_ != 2 * ho or w_ != 2 * wo:  # odd sizes: the last row/column gets nothing
            for q in range(xb, xb + h_ * w_):
                df[U(q)] = 0
        for oh in range(ho):
            r0 = xb + 2 * oh * w_
            r1 = r0 + w_
            o = ob + oh * wo
            for ow in range(wo):
                v = gf[U(o + ow)] / area
                df[U(r0 + 2 * ow)] = v
                df[U(r0 + 2 * ow + 1)] = v
                df[U(r1 + 2 * ow)] = v
                df[U(r1 + 2 * ow + 1)] = v


@kernel
def _avg_fwd(start, stop, xf, of, h_, w_, ho, wo, kh, kw, sh, sw, ph, pw, area):
    for t in range(start, stop):
        xb = t * h_ * w_
        ob = t * ho * wo
        for oh in range(ho):
            h0 = oh * sh - ph
            i0 = max(0, -h0)
            i1 = min(kh, h_ - h0)
            for ow in range(wo):
                w0 = ow * sw - pw
                j0 = max(0, -w0)
                j1 = min(kw, w_ - w0)
                s = area - area  # a zero of the array's dtype
                for i in range(i0, i1):
                    r = xb + (h0 + i) * w_ + w0
                    for j in range(j0, j1):
                        s += xf[U(r + j)]
                of[U(ob + oh * wo + ow)] = s / area


@kernel
def _avg_bwd(start, stop, gf, df, h_, w_, ho, wo, kh, kw, sh, sw, ph, pw, area):
    for t in range(start, stop):
        xb = t * h_ * w_
        ob = t * ho * wo
        for q in range(xb, xb + h_ * w_):
            df[U(q)] = 0
        for oh in range(ho):
            h0 = oh * sh - ph
            i0 = max(0, -h0)
            i1 = min(kh, h_ - h0)
            for ow in range(wo):
                w0 = ow * sw - pw
                j0 = max(0, -w0)
                j1 = min(kw, w_ - w0)
                v = gf[U(ob + oh * wo + ow)] / area
                for i in range(i0, i1):
                    r = xb + (h0 + i) * w_ + w0
                    for j in range(j0, j1):
                        df[U(r + j)] += v


@register("avg_pool2d_forward", "cpu", impl="numba", default=True)
def avg_pool2d_forward(x, g):
    """numba average pooling (padding counted in the divisor, as torch's default)."""
    x = np.ascontiguousarray(x)
    out = buffers.empty(g.out_shape, x.dtype)
    if out.size:
        area = x.dtype.type(g.kh * g.kw)
        flat = (x.reshape(-1), out.reshape(-1), g.h, g.w, g.ho, g.wo)
        if g.plain_2x2:
            parallel_for(_avg_fwd_2x2, g.n * g.c, *flat, area, work=x.size)
        else:
            parallel_for(_avg_fwd, g.n * g.c, *flat, *_window(g), area, work=x.size)
    return out


@register("avg_pool2d_backward", "cpu", impl="numba", default=True)
def avg_pool2d_backward(grad_out, g):
    """Spread each gradient evenly over its window; the adjoint of :func:`avg_pool2d_forward`."""
    gf = np.ascontiguousarray(grad_out)
    dx = buffers.empty(g.x_shape, grad_out.dtype)
    if dx.size:
        area = gf.dtype.type(g.kh * g.kw)
        flat = (gf.reshape(-1), dx.reshape(-1), g.h, g.w, g.ho, g.wo)
        if g.plain_2x2:
            parallel_for(_avg_bwd_2x2, g.n * g.c, *flat, area, work=dx.size)
        else:
            parallel_for(_avg_bwd, g.n * g.c, *flat, *_window(g), area, work=dx.size)
    return dx
