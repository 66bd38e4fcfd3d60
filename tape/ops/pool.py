"""Pooling (NCHW) on the kernels of the ``kernels`` package. Each kernel is paired with
its adjoint, as im2col with col2im: max pooling's gradient scatters at the argmax,
whose VJP gathers there; average pooling's forward and backward are each other's VJP.
"""

from __future__ import annotations

import numpy as np

import kernels
from kernels import pair

from .. import backend
from ..tensor import Tensor
from .core import Op, fold_lead, unfold_lead
from .linalg import einsum


def _shape(x):
    return tuple(x.shape) if isinstance(x, Tensor) else np.shape(x)


# ----- max pooling: scatter at the argmax, and gather there -----
def _unpool(g, argmax, x_shape):
    """Scatter-add ``g`` at the argmax positions into zeros of ``lead + x_shape``."""
    g, lead = fold_lead(g)
    idx = argmax if not lead else _tile(argmax, g.shape[0] // argmax.shape[0])
    shape = (g.shape[0],) + tuple(x_shape[1:])
    return unfold_lead(kernels.max_pool2d_backward(g, idx, shape), lead)


def _tile(a, times):
    return backend.xp(a).concatenate([a] * times) if times > 1 else a


def _gather_at(g, argmax):
    """``g`` (lead + (N, C, H, W)) read at the argmax positions: lead + (N, C, Ho, Wo)."""
    flat = g.reshape(g.shape[:-2] + (-1,))
    idx = argmax.reshape((1,) * (g.ndim - 4) + argmax.shape[:2] + (-1,))
    out = backend.xp(g).take_along_axis(flat, idx, axis=-1)
    return out.reshape(g.shape[:-2] + argmax.shape[2:])


max_unpool = Op("max_unpool2d", _unpool,
                 lambda g, ans, x, argmax, x_shape: gather_at(g, argmax=argmax))
gather_at = Op("gather_at", _gather_at,
               lambda g, ans, x, argmax: max_unpool(g, argmax=argmax, x_shape=x.shape[-4:]))
_max_pool = Op(
    "max_pool2d",
    lambda x, k, stride, padding: kernels.max_pool2d_forward(x, k, stride, padding),
    lambda g, ans, x, k, stride, padding, argmax: max_unpool(g, argmax=argmax,
                                                             x_shape=x.shape),
    extras=("argmax",),  # the forward returns (out, argmax); the rule scatters at argmax
)


def _pool_args(op, kernel_size, stride, padding, dilation, ceil_mode):
    if ceil_mode:
        raise NotImplementedError(f"{op}: ceil_mode=True is not supported")
    if pair(dilation) != (1, 1):
        raise NotImplementedError(f"{op}: dilation other than 1 is not supported")
    k = pair(kernel_size)
    return k, k if stride is None or stride == () else pair(stride), pair(padding)


def _check_4d(op, x):
    if len(_shape(x)) != 4:
        raise ValueError(f"{op}: expects an input of shape (N, C, H, W), got {_shape(x)}")


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling, as ``torch.nn.functional.max_pool2d`` (padding acts as -inf)."""
    _check_4d("max_pool2d", x)
    k, s, p = _pool_args("max_pool2d", kernel_size, stride, padding, dilation, ceil_mode)
    y, argmax = _max_pool(x, k=k, stride=s, padding=p)
    return (y, argmax) if return_indices else y


# ----- average pooling: the forward and its adjoint -----
def _avg(x, k, stride, padding):
    x, lead = fold_lead(x)
    return unfold_lead(kernels.avg_pool2d_forward(x, k, stride, padding), lead)


def _avg_adjoint(g, x_shape, k, stride, padding):
    g, lead = fold_lead(g)
    shape = (g.shape[0],) + tuple(x_shape[1:])
    return unfold_lead(kernels.avg_pool2d_backward(g, shape, k, stride, padding), lead)


avg_pool = Op(
    "avg_pool2d",
    _avg,
    lambda g, ans, x, k, stride, padding: avg_unpool(
        g, x_shape=x.shape[-4:], k=k, stride=stride, padding=padding
    ),
)
avg_unpool = Op(  # the adjoint of avg_pool: each is the other's VJP
    "avg_unpool2d",
    _avg_adjoint,
    lambda g, ans, x, x_shape, k, stride, padding: avg_pool(g, k=k, stride=stride, padding=padding),
)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling, as ``torch.nn.functional.avg_pool2d`` (padding counts as zeros)."""
    _check_4d("avg_pool2d", x)
    if not count_include_pad or divisor_override is not None:
        raise NotImplementedError(
            "avg_pool2d: only count_include_pad=True without divisor_override is supported"
        )
    k, s, p = _pool_args("avg_pool2d", kernel_size, stride, padding, 1, ceil_mode)
    return avg_pool(x, k=k, stride=s, padding=p)


def _bins(size, out, dtype):
    """Averaging matrix (out, size) of adaptive pooling: torch's floor/ceil bins."""
    m = np.zeros((out, size), dtype=dtype)
    for i in range(out):
        lo, hi = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool2d(x, output_size):
    """Average over ``output_size`` bins per axis, as torch's ``adaptive_avg_pool2d``."""
    _check_4d("adaptive_avg_pool2d", x)
    n, c, h, w = _shape(x)
    if isinstance(output_size, int) or output_size is None:
        output_size = (output_size, output_size)
    oh, ow = (h if output_size[0] is None else output_size[0],
              w if output_size[1] is None else output_size[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got "
                         f"{output_size}")
    if h % oh == 0 and w % ow == 0:
        k = (h // oh, w // ow)
        return avg_pool(x, k=k, stride=k, padding=(0, 0))
    data = x.data if isinstance(x, Tensor) else x
    xp = backend.xp(data)
    ph, pw = xp.asarray(_bins(h, oh, data.dtype)), xp.asarray(_bins(w, ow, data.dtype))
    return einsum("ih,nchw,jw->ncij", ph, x, pw)
