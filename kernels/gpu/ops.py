"""The GPU kernels' Python wrappers, written once for any "backend".

Each wrapper is a :class:`KernelOps` method named after its kernel and marked
``@gpu_kernel``; ``KernelOps(backend).register(device, impl)`` registers all of them, as
kernels/gpu/__init__.py does for cupy and the conformance tests for the host emulation.
A backend has ``xp`` (the array module: cupy on a GPU, numpy for the host emulation) and
``launch(name, dtype, total, args)`` which runs ``<name>_<float|double>`` over ``total``
threads. Wrappers validate shapes, allocate outputs and convert integer arguments to int64
(the ``long long`` parameters of :data:`kernels.gpu.sources.PARAMS`).
"""

from __future__ import annotations

import numpy as np

from .. import reference
from ..registry import register
from ..shapes import (
    check_avg_pool_grad,
    check_cols,
    check_max_pool_grad,
    conv_geometry,
    pool_geometry,
)

_FLOATS = ("float32", "float64")


def _i64(*vals):
    return tuple(np.int64(v) for v in vals)


def gpu_kernel(method):
    """Mark a :class:`KernelOps` method as the implementation of the kernel it is named
    after."""
    method.is_gpu_kernel = True
    return method


class KernelOps:
    """``im2col`` ... ``avg_pool2d_backward`` over one backend (see module docstring)."""

    def __init__(self, backend):
        self.backend = backend

    @classmethod
    def kernel_names(cls) -> tuple[str, ...]:
        """The kernels implemented here (the methods marked ``@gpu_kernel``)."""
        return tuple(n for n, f in vars(cls).items() if getattr(f, "is_gpu_kernel", False))

    def register(self, device: str, impl: str, default: bool = False) -> None:
        """Register every kernel here, on this backend, as ``impl`` on ``device``."""
        for name in self.kernel_names():
            register(name, device, getattr(self, name), impl=impl, default=default)

    # the array module is looked up per call so that cupy is imported only when used
    @property
    def xp(self):
        return self.backend.xp

    def _launch(self, name, dtype, total, *args):
        if total > 0:
            self.backend.launch(name, dtype, int(total), args)

    # ----- im2col / col2im -----

    @gpu_kernel
    def im2col(self, x, kh, kw, stride=1, padding=0, dilation=1):
        if x.dtype.name not in _FLOATS:
            return reference.im2col(x, kh, kw, stride, padding, dilation)
        n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = conv_geometry(
            x.shape, kh, kw, stride, padding, dilation, op="im2col"
        )
        xp = self.xp
        x = xp.ascontiguousarray(x)
        cols = xp.empty((c * kh * kw, n * ho * wo), dtype=x.dtype)
        self._launch("im2col", x.dtype, cols.size, x, cols,
                     *_i64(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo))
        return cols

    @gpu_kernel
    def col2im(self, cols, x_shape, kh, kw, stride=1, padding=0, dilation=1):
        if cols.dtype.name not in _FLOATS:
            return reference.col2im(cols, x_shape, kh, kw, stride, padding, dilation)
        n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = check_cols(
            cols.shape, x_shape, kh, kw, stride, padding, dilation
        )
        xp = self.xp
        cols = xp.ascontiguousarray(cols)
        dx = xp.empty((n, c, h, w), dtype=cols.dtype)
        self._launch("col2im", cols.dtype, dx.size, cols, dx,
                     *_i64(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo))
        return dx

    # ----- max pooling -----

    @gpu_kernel
    def max_pool2d_forward(self, x, k, stride=None, padding=0):
        if x.dtype.name not in _FLOATS:
            return reference.max_pool2d_forward(x, k, stride, padding)
        n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo = pool_geometry(x.shape, k, stride, padding)
        xp = self.xp
        x = xp.ascontiguousarray(x)
        out = xp.empty((n, c, ho, wo), dtype=x.dtype)
        arg = xp.empty((n, c, ho, wo), dtype=np.int64)
        self._launch("max_pool2d_forward", x.dtype, out.size, x, out, arg,
                     *_i64(n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo))
        return out, arg

    @gpu_kernel
    def max_pool2d_backward(self, grad_out, argmax, x_shape):
        if grad_out.dtype.name not in _FLOATS:
            return reference.max_pool2d_backward(grad_out, argmax, x_shape)
        n, c, h, w, m = check_max_pool_grad(grad_out.shape, argmax.shape, x_shape)
        xp = self.xp
        g = xp.ascontiguousarray(grad_out)
        a = xp.ascontiguousarray(argmax, dtype=np.int64)
        dx = xp.zeros((n, c, h, w), dtype=g.dtype)
        self._launch("max_pool2d_backward", g.dtype, g.size, g, a, dx, *_i64(n * c, h * w, m))
        return dx

    # ----- average pooling -----

    @gpu_kernel
    def avg_pool2d_forward(self, x, k, stride=None, padding=0):
        if x.dtype.name not in _FLOATS:
            return reference.avg_pool2d_forward(x, k, stride, padding)
        n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo = pool_geometry(
            x.shape, k, stride, padding, op="avg_pool2d"
        )
        xp = self.xp
        x = xp.ascontiguousarray(x)
        out = xp.empty((n, c, ho, wo), dtype=x.dtype)
        self._launch("avg_pool2d_forward", x.dtype, out.size, x, out,
                     *_i64(n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo))
        return out

    @gpu_kernel
    def avg_pool2d_backward(self, grad_out, x_shape, k, stride=None, padding=0):
        if grad_out.dtype.name not in _FLOATS:
            return reference.avg_pool2d_backward(grad_out, x_shape, k, stride, padding)
        n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo = check_avg_pool_grad(
            grad_out.shape, x_shape, k, stride, padding
        )
        xp = self.xp
        g = xp.ascontiguousarray(grad_out)
        dx = xp.empty((n, c, h, w), dtype=g.dtype)
        self._launch("avg_pool2d_backward", g.dtype, dx.size, g, dx,
                     *_i64(n, c, h, w, kh, kw, sh, sw, ph, pw, ho, wo))
        return dx
