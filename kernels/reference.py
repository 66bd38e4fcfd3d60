"""Plain-numpy reference kernels: the oracle of the conformance tests, and the fallback.

Vectorised over the batch, channels and pixels; the only Python loops run over the
``kh * kw`` window offsets. Written against the array module of the input, so the same code
also runs on cupy arrays (it is registered for "cuda" too when cupy is installed).

Each takes the arrays and the geometry ``g`` the public dispatchers in :mod:`kernels`
computed (:mod:`kernels.shapes`), as every implementation does, and registers itself as the
"reference" implementation of the kernel it is named after: the one that takes every
dtype, so the dispatcher falls back to it for the dtypes another implementation lacks.
"""

from __future__ import annotations

import importlib

import numpy as np

from .registry import DEVICES, register

__all__ = ["im2col", "col2im", "max_pool2d_forward", "max_pool2d_backward",
           "avg_pool2d_forward", "avg_pool2d_backward", "conv2d", "conv2d_from_cols"]


def _reference(fn):
    """Register ``fn`` as the "reference" implementation of the kernel it is named after,
    for every dtype, on the CPU and (it runs on cupy arrays too) on the GPU where cupy is
    installed."""
    for device in DEVICES:
        register(fn.__name__, device, fn, impl="reference", dtypes=None)
    return fn


def _xp(a):
    mod = type(a).__module__
    return importlib.import_module("cupy") if mod.startswith("cupy") else np


def _window(i0, j0, g):
    """Slices picking, for window offset (i0, j0), one element per output pixel."""
    return (slice(i0, i0 + g.sh * (g.ho - 1) + 1, g.sh),
            slice(j0, j0 + g.sw * (g.wo - 1) + 1, g.sw))


def _padded(x, g, xp):
    return xp.pad(x, ((0, 0), (0, 0), (g.ph, g.ph), (g.pw, g.pw))) if g.ph or g.pw else x


def _unpadded(dxp, g, xp):
    return xp.ascontiguousarray(dxp[:, :, g.ph : g.ph + g.h, g.pw : g.pw + g.w])


# ----- im2col / col2im -----


@_reference
def im2col(x, g):
    """Unfold ``x`` (N, C, H, W) into ``cols`` (C*kh*kw, N*Hout*Wout); see ``kernels.im2col``."""
    xp = _xp(x)
    xpad = _padded(x, g, xp)
    cols = xp.empty((g.c, g.kh, g.kw, g.n, g.ho, g.wo), dtype=x.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            cols[:, i, j] = xpad[(..., *_window(i * g.dh, j * g.dw, g))].transpose(1, 0, 2, 3)
    return cols.reshape(g.cols_shape)


@_reference
def col2im(cols, g):
    """Adjoint of :func:`im2col`: sum ``cols`` back into an (N, C, H, W) array."""
    xp = _xp(cols)
    c6 = cols.reshape(g.c, g.kh, g.kw, g.n, g.ho, g.wo)
    dxp = xp.zeros((g.n, g.c, g.h + 2 * g.ph, g.w + 2 * g.pw), dtype=cols.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            dxp[(..., *_window(i * g.dh, j * g.dw, g))] += c6[:, i, j].transpose(1, 0, 2, 3)
    return _unpadded(dxp, g, xp)


def conv2d_from_cols(cols, w, g, matmul=None):
    """A convolution's output (N, Cout, Hout, Wout) from its im2col ``cols``: one GEMM,
    ``(Cout, K) @ cols`` (``matmul``: numpy's unless given), then (Cout, N) -> (N, Cout)."""
    cout = w.shape[0]
    w2 = w.reshape(cout, -1)
    y = w2 @ cols if matmul is None else matmul(w2, cols)
    return _xp(y).ascontiguousarray(y.reshape(cout, g.n, g.ho, g.wo).transpose(1, 0, 2, 3))


@_reference
def conv2d(x, w, g):
    """conv2d of ``x`` (N, C, H, W) with ``w`` (Cout, C, kh, kw): im2col and one GEMM."""
    return conv2d_from_cols(im2col(x, g), w, g)


# ----- pooling -----


@_reference
def max_pool2d_forward(x, g):
    """Max pooling; returns ``(out, argmax)``, argmax a flat int64 index into each H*W plane.

    Padding acts as -inf. Ties keep the first maximum in row-major window order and a NaN
    wins, as in torch.
    """
    xp = _xp(x)
    xpad = _padded(x, g, xp)
    best = xp.zeros(g.out_shape, dtype=x.dtype)
    arg = xp.full(g.out_shape, -1, dtype=np.int64)
    oh = xp.arange(g.ho).reshape(g.ho, 1) * g.sh - g.ph
    ow = xp.arange(g.wo).reshape(1, g.wo) * g.sw - g.pw
    for i in range(g.kh):
        for j in range(g.kw):
            v = xpad[(..., *_window(i, j, g))]
            valid = (oh + i >= 0) & (oh + i < g.h) & (ow + j >= 0) & (ow + j < g.w)
            take = (arg < 0) | (v > best)
            if x.dtype.kind == "f":
                take |= xp.isnan(v)
            take &= valid
            best = xp.where(take, v, best)
            arg = xp.where(take, (oh + i) * g.w + (ow + j), arg)
    return best, arg


@_reference
def max_pool2d_backward(grad_out, argmax, g):
    """Scatter ``grad_out`` to the positions ``argmax`` recorded by the forward."""
    xp = _xp(grad_out)
    planes = g.n * g.c
    dx = xp.zeros((planes, g.h * g.w), dtype=grad_out.dtype)
    gr = grad_out.reshape(planes, g.ho * g.wo)
    a = argmax.reshape(planes, g.ho * g.wo)
    rows = xp.broadcast_to(xp.arange(planes).reshape(-1, 1), a.shape)
    if xp is np:
        np.add.at(dx, (rows, a), gr)
    else:  # pragma: no cover - cupy path
        importlib.import_module("cupyx").scatter_add(dx, (rows, a), gr)
    return dx.reshape(g.x_shape)


@_reference
def avg_pool2d_forward(x, g):
    """Average pooling; zero padding is counted in the divisor (torch's count_include_pad)."""
    xp = _xp(x)
    xpad = _padded(x, g, xp)
    out = xp.zeros(g.out_shape, dtype=x.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            out += xpad[(..., *_window(i, j, g))]
    out /= g.kh * g.kw
    return out


@_reference
def avg_pool2d_backward(grad_out, g):
    """Spread each ``grad_out`` element evenly over its window (padding included)."""
    xp = _xp(grad_out)
    share = grad_out / (g.kh * g.kw)
    dxp = xp.zeros((g.n, g.c, g.h + 2 * g.ph, g.w + 2 * g.pw), dtype=grad_out.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            dxp[(..., *_window(i, j, g))] += share
    return _unpadded(dxp, g, xp)
