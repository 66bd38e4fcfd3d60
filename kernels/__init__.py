"""Hot CPU and GPU kernels on raw arrays, behind a tiny per-device registry.

Every public function here dispatches, per call, on the device of its array argument
("cpu" for numpy arrays, "cuda" for cupy arrays) to the selected implementation:

* ``kernels.use(name, impl)`` selects one for a block (thread-local);
* otherwise the device's default: "numba" on cpu when numba imports, else "reference";
  "cupy" (RawKernels) on cuda when cupy is installed; for ``conv2d``, "auto" on cpu
  (which picks a route: kernels/convolution.py) and "im2col" on cuda.

>>> import numpy as np, kernels
>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> kernels.im2col(x, 2, 2, stride=2, padding=0, dilation=1).shape
(4, 4)
>>> out, argmax = kernels.max_pool2d_forward(x, 2, 2, 0)
>>> out.ravel().tolist(), argmax.ravel().tolist()
([5.0, 7.0, 13.0, 15.0], [5, 7, 13, 15])
>>> with kernels.use("im2col", "reference"):
...     cols = kernels.im2col(x, 2, 2, 2, 0, 1)

Writing a drop-in implementation is one registration (see kernels/README.md)::

    @kernels.register("im2col", "cpu", impl="mine")
    def my_im2col(x, g): ...   # g: a kernels.ConvGeometry (g.kh, g.stride, g.cols_shape...)

The dispatcher validates the arguments once and passes the arrays and their geometry,
a named tuple (:class:`ConvGeometry`, :class:`PoolGeometry`, :class:`ScatterGeometry`).
Arrays of a dtype the implementation was not registered for (float32 and float64 unless
told otherwise) go to the "reference" implementation instead.

The CPU kernels run on tape's own threads (``kernels.num_threads()``, set with
``kernels.set_num_threads(n)`` or ``TAPE_NUM_THREADS``); importing ``kernels`` changes
nothing else in the process (kernels/cpu/threads.py says why). That and the other
process-wide settings are one object, ``kernels.config.current()``, changed with
``kernels.configure(...)`` (kernels/config.py).
"""

from __future__ import annotations

from . import reference  # noqa: F401 (registers the reference implementations first)
from . import config
from .config import configure, num_threads, set_num_threads
from .registry import (
    available,
    default_impl,
    device_of,
    get,
    register,
    resolve,
    selected_impl,
    unregister,
    use,
)
from .registry import call as _call
from .shapes import (
    ConvGeometry,
    PoolGeometry,
    ScatterGeometry,
    check_avg_pool_grad,
    check_cols,
    check_max_pool_grad,
    conv2d_geometry,
    conv_geometry,
    conv_output_shape,
    pair,
    pool_geometry,
)

KERNELS = (  # the raw kernels: each has a reference, a numba and a CUDA implementation
    "im2col",
    "col2im",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
)

__all__ = [
    *KERNELS,
    "conv2d",
    "conv2d_route",
    "register",
    "unregister",
    "get",
    "use",
    "available",
    "default_impl",
    "selected_impl",
    "resolve",
    "device_of",
    "conv_output_shape",
    "conv_geometry",
    "conv2d_geometry",
    "pool_geometry",
    "ConvGeometry",
    "PoolGeometry",
    "ScatterGeometry",
    "pair",
    "KERNELS",
    "config",
    "configure",
    "num_threads",
    "set_num_threads",
]

# ----- public kernels -----


def im2col(x, kh, kw, stride=1, padding=0, dilation=1):
    """Unfold the sliding ``kh x kw`` windows of ``x`` (N, C, H, W) into a matrix.

    Layout: ``cols`` has shape ``(C*kh*kw, N*Hout*Wout)``, C-contiguous, with
    ``cols[c*kh*kw + i*kw + j, n*Hout*Wout + oh*Wout + ow] =
    x_padded[n, c, oh*sh + i*dh, ow*sw + j*dw]`` (zero where that falls in the padding).
    The row index orders like ``weight.reshape(Cout, C*kh*kw)``'s columns, so a conv2d
    forward is one GEMM, ``W2 @ cols -> (Cout, N*Hout*Wout)``, then
    ``.reshape(Cout, N, Hout, Wout).transpose(1, 0, 2, 3)``. It matches
    ``torch.nn.functional.unfold(x, ...)`` (N, C*kh*kw, L) as ``cols.reshape(K, N, L)
    .transpose(1, 0, 2)``. Groups: pass ``x[:, g*Cg:(g+1)*Cg]`` per group.
    Hout/Wout: see :func:`conv_output_shape`.

    >>> import numpy as np
    >>> x = np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5)
    >>> im2col(x, 3, 3, stride=1, padding=1, dilation=1).shape
    (27, 50)
    """
    return _call("im2col", x, conv_geometry(x.shape, kh, kw, stride, padding, dilation))


def col2im(cols, x_shape, kh, kw, stride=1, padding=0, dilation=1):
    """Exact adjoint of :func:`im2col`: sum each column entry back into its (N, C, H, W)
    position, so ``<im2col(x), c> == <x, col2im(c)>``; conv2d's input gradient is
    ``col2im(W2.T @ dY2, x.shape, ...)``.

    >>> import numpy as np
    >>> col2im(np.ones((4, 4), np.float32), (1, 1, 3, 3), 2, 2, 1, 0, 1)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]], dtype=float32)
    """
    return _call("col2im", cols, check_cols(cols.shape, x_shape, kh, kw, stride, padding,
                                            dilation))


def max_pool2d_forward(x, k, stride=None, padding=0):
    """Max pooling over ``k x k`` windows (``stride=None`` means ``k``); padding acts as
    -inf, as in torch. Returns ``(out, argmax)``; ``argmax`` (int64, shape of ``out``) is
    the flat index ``h*W + w`` of each maximum in its (n, c) input plane, as torch's
    ``return_indices=True``.
    """
    return _call("max_pool2d_forward", x, pool_geometry(x.shape, k, stride, padding))


def max_pool2d_backward(grad_out, argmax, x_shape):
    """Input gradient of max pooling: ``grad_out`` scattered (summed) at ``argmax``."""
    g = check_max_pool_grad(grad_out.shape, argmax.shape, x_shape)
    return _call("max_pool2d_backward", grad_out, argmax, g)


def avg_pool2d_forward(x, k, stride=None, padding=0):
    """Average pooling; zero padding counts in the divisor (``kh*kw`` always), as torch's
    default ``count_include_pad=True``."""
    return _call("avg_pool2d_forward", x, pool_geometry(x.shape, k, stride, padding,
                                                        op="avg_pool2d"))


def avg_pool2d_backward(grad_out, x_shape, k, stride=None, padding=0):
    """Input gradient of :func:`avg_pool2d_forward`."""
    g = check_avg_pool_grad(grad_out.shape, x_shape, k, stride, padding)
    return _call("avg_pool2d_backward", grad_out, g)


def conv2d(x, w, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation) of ``x`` (N, C, H, W) with ``w`` (Cout, C, kh, kw),
    as ``torch.nn.functional.conv2d`` without bias and groups: (N, Cout, Hout, Wout).

    Its implementations are the routes (kernels/convolution.py): "im2col", "winograd",
    "direct", and on the CPU the default "auto", which picks one; :func:`conv2d_route`
    says which one a call takes.
    """
    g = conv2d_geometry(x.shape, w.shape, stride, padding, dilation)
    return _call("conv2d", x, w, g)


# ----- built-in implementations: each registers itself where it is defined -----

from .convolution import conv2d_route  # noqa: E402 (registers "im2col" and "auto")

try:
    from .cpu import conv2d as _cpu_conv2d, im2col as _cpu_im2col, pool as _cpu_pool  # noqa: F401
except ImportError:  # numba missing: the numpy reference stays the default
    pass
else:
    from .cpu.jit import start_precompiling

    start_precompiling()  # a fresh install: compile the kernels on a second core meanwhile

from . import gpu as _gpu  # noqa: E402, F401 (registers the cupy kernels where cupy is installed)
