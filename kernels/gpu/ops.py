"""The GPU kernels' Python wrappers, written once for any "backend".

Each wrapper is a :class:`KernelOps` method named after its kernel and marked
``@gpu_kernel``; ``KernelOps(backend).register(device, impl)`` registers all of them, as
kernels/gpu/__init__.py does for cupy and the conformance tests for the host emulation.
A backend has ``xp`` (the array module: cupy on a GPU, numpy for the host emulation) and
``launch(name, dtype, total, args)`` which runs ``<name>_<float|double>`` over ``total``
threads. Wrappers take the arrays and the geometry ``g`` the dispatcher computed (float32
or float64 arrays: it sends other dtypes to the reference), allocate the outputs and pass
the geometry's fields as int64 (the kernels' ``long long`` parameters, in the same order).
"""

from __future__ import annotations

import numpy as np

from ..registry import register


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
    def im2col(self, x, g):
        x = self.xp.ascontiguousarray(x)
        cols = self.xp.empty(g.cols_shape, dtype=x.dtype)
        self._launch("im2col", x.dtype, cols.size, x, cols, *_i64(*g))
        return cols

    @gpu_kernel
    def col2im(self, cols, g):
        cols = self.xp.ascontiguousarray(cols)
        dx = self.xp.empty(g.x_shape, dtype=cols.dtype)
        self._launch("col2im", cols.dtype, dx.size, cols, dx, *_i64(*g))
        return dx

    # ----- max pooling -----

    @gpu_kernel
    def max_pool2d_forward(self, x, g):
        x = self.xp.ascontiguousarray(x)
        out = self.xp.empty(g.out_shape, dtype=x.dtype)
        arg = self.xp.empty(g.out_shape, dtype=np.int64)
        self._launch("max_pool2d_forward", x.dtype, out.size, x, out, arg, *_i64(*g))
        return out, arg

    @gpu_kernel
    def max_pool2d_backward(self, grad_out, argmax, g):
        gr = self.xp.ascontiguousarray(grad_out)
        a = self.xp.ascontiguousarray(argmax, dtype=np.int64)
        dx = self.xp.zeros(g.x_shape, dtype=gr.dtype)
        self._launch("max_pool2d_backward", gr.dtype, gr.size, gr, a, dx,
                     *_i64(g.n * g.c, g.h * g.w, g.ho * g.wo))
        return dx

    # ----- average pooling -----

    @gpu_kernel
    def avg_pool2d_forward(self, x, g):
        x = self.xp.ascontiguousarray(x)
        out = self.xp.empty(g.out_shape, dtype=x.dtype)
        self._launch("avg_pool2d_forward", x.dtype, out.size, x, out, *_i64(*g))
        return out

    @gpu_kernel
    def avg_pool2d_backward(self, grad_out, g):
        gr = self.xp.ascontiguousarray(grad_out)
        dx = self.xp.empty(g.x_shape, dtype=gr.dtype)
        self._launch("avg_pool2d_backward", gr.dtype, dx.size, gr, dx, *_i64(*g))
        return dx
