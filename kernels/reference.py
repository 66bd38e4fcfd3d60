"""Plain-numpy reference kernels: the oracle of the conformance tests, and the fallback.

Vectorised over the batch, channels and pixels; the only Python loops run over the
``kh * kw`` window offsets. Written against the array module of the input, so the same code
also runs on cupy arrays (it is registered for "cuda" too when cupy is installed).

Arguments arrive already normalised by the public dispatchers in :mod:`kernels`
(``stride``, ``padding``, ``dilation`` are ``(h, w)`` tuples of ints), but every function
also accepts ints, so they can be called directly. Each registers itself as the
"reference" implementation of the kernel it is named after.
"""

from __future__ import annotations

import importlib

import numpy as np

from .registry import CUPY_INSTALLED, register
from .shapes import (
    check_avg_pool_grad,
    check_cols,
    check_max_pool_grad,
    conv_geometry,
    pool_geometry,
)

__all__ = ["im2col", "col2im", "max_pool2d_forward", "max_pool2d_backward",
           "avg_pool2d_forward", "avg_pool2d_backward"]


def _reference(fn):
    """Register ``fn`` as the "reference" implementation of the kernel it is named after,
    on the CPU and, since it runs on cupy arrays too, on the GPU where cupy is installed."""
    for device in ("cpu", "cuda") if CUPY_INSTALLED else ("cpu",):
        register(fn.__name__, device, fn, impl="reference")
    return fn


def _xp(a):
    mod = type(a).__module__
    return importlib.import_module("cupy") if mod.startswith("cupy") else np


def _window(i0, j0, sh, sw, ho, wo):
    """Slices picking, for window offset (i0, j0), one element per output pixel."""
    return (slice(i0, i0 + sh * (ho - 1) + 1, sh), slice(j0, j0 + sw * (wo - 1) + 1, sw))


# ----- im2col / col2im -----


@_reference
def im2col(x, kh, kw, stride=1, padding=0, dilation=1):
    """Unfold ``x`` (N, C, H, W) into ``cols`` (C*kh*kw, N*Hout*Wout); see ``kernels.im2col``."""
    xp = _xp(x)
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = conv_geometry(
        x.shape, kh, kw, stride, padding, dilation, op="im2col"
    )
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    cols = xp.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, colsl = _window(i * dh, j * dw, sh, sw, ho, wo)
            cols[:, i, j] = xpad[:, :, rows, colsl].transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * ho * wo)


@_reference
def col2im(cols, x_shape, kh, kw, stride=1, padding=0, dilation=1):
    """Adjoint of :func:`im2col`: sum ``cols`` back into an (N, C, H, W) array."""
    xp = _xp(cols)
    n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = check_cols(
        cols.shape, x_shape, kh, kw, stride, padding, dilation
    )
    c6 = cols.reshape(c, kh, kw, n, ho, wo)
    dxp = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, colsl = _window(i * dh, j * dw, sh, sw, ho, wo)
            dxp[:, :, rows, colsl] += c6[:, i, j].transpose(1, 0, 2, 3)
    return xp.ascontiguousarray(dxp[:, :, ph : ph + h, pw : pw + w])


# ----- pooling -----


@_reference
def max_pool2d_forward(x, k, stride=None, padding=0):
    """Max pooling; returns ``(out, argmax)``, argmax a flat int64 index into each H*W plane.

    Padding acts as -inf. Ties keep the first maximum in row-major window order and a NaN
    wins, as in torch.
    """
    xp = _xp(x)
    n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo = pool_geometry(x.shape, k, stride, padding)
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    best = xp.zeros((n, c, ho, wo), dtype=x.dtype)
    arg = xp.full((n, c, ho, wo), -1, dtype=np.int64)
    oh = xp.arange(ho).reshape(ho, 1) * sh - ph
    ow = xp.arange(wo).reshape(1, wo) * sw - pw
    for i in range(kh):
        for j in range(kw):
            v = xpad[(slice(None), slice(None)) + _window(i, j, sh, sw, ho, wo)]
            valid = (oh + i >= 0) & (oh + i < h) & (ow + j >= 0) & (ow + j < w)
            take = (arg < 0) | (v > best)
            if x.dtype.kind == "f":
                take |= xp.isnan(v)
            take &= valid
            best = xp.where(take, v, best)
            arg = xp.where(take, (oh + i) * w + (ow + j), arg)
    return best, arg


@_reference
def max_pool2d_backward(grad_out, argmax, x_shape):
    """Scatter ``grad_out`` to the positions ``argmax`` recorded by the forward."""
    xp = _xp(grad_out)
    n, c, h, w, m = check_max_pool_grad(grad_out.shape, argmax.shape, x_shape)
    dx = xp.zeros((n * c, h * w), dtype=grad_out.dtype)
    g = grad_out.reshape(n * c, m)
    a = argmax.reshape(n * c, m)
    rows = xp.arange(n * c).reshape(-1, 1)
    if xp is np:
        np.add.at(dx, (np.broadcast_to(rows, a.shape), a), g)
    else:  # pragma: no cover - cupy path
        importlib.import_module("cupyx").scatter_add(dx, (xp.broadcast_to(rows, a.shape), a), g)
    return dx.reshape(n, c, h, w)


@_reference
def avg_pool2d_forward(x, k, stride=None, padding=0):
    """Average pooling; zero padding is counted in the divisor (torch's count_include_pad)."""
    xp = _xp(x)
    n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo = pool_geometry(
        x.shape, k, stride, padding, op="avg_pool2d"
    )
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    out = xp.zeros((n, c, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += xpad[(slice(None), slice(None)) + _window(i, j, sh, sw, ho, wo)]
    out /= kh * kw
    return out


@_reference
def avg_pool2d_backward(grad_out, x_shape, k, stride=None, padding=0):
    """Spread each ``grad_out`` element evenly over its window (padding included)."""
    xp = _xp(grad_out)
    n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo = check_avg_pool_grad(
        grad_out.shape, x_shape, k, stride, padding
    )
    g = grad_out / (kh * kw)
    dxp = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[(slice(None), slice(None)) + _window(i, j, sh, sw, ho, wo)] += g
    return xp.ascontiguousarray(dxp[:, :, ph : ph + h, pw : pw + w])
