"""Neural-network ops: softmax and log_softmax (conv, pooling, norms and losses join later)."""

from __future__ import annotations

import numpy as np

from .core import Op
from .elementwise import exp
from .reduce import _sum


def _axis(x, axis, dim):
    axis = dim if dim is not None else (-1 if axis is None else axis)
    ndim = np.ndim(x.data if hasattr(x, "data") else x)
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(f"softmax: axis {axis} is out of range for {ndim} dimensions")
    return (axis % ndim - ndim) if ndim else -1


def _softmax(x, axis):
    if np.ndim(x) == 0:
        return np.ones_like(x)
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))  # stable for large inputs
    return z / np.sum(z, axis=axis, keepdims=True)


def _log_softmax(x, axis):
    if np.ndim(x) == 0:
        return np.zeros_like(x)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


_softmax_op = Op(
    "softmax",
    _softmax,
    lambda g, ans, x, axis: ans * (g - _sum(g * ans, axes=(axis,), keepdims=True))
    if np.ndim(x) else g * 0,
)
_log_softmax_op = Op(
    "log_softmax",
    _log_softmax,
    lambda g, ans, x, axis: g - exp(ans) * _sum(g, axes=(axis,), keepdims=True)
    if np.ndim(x) else g * 0,
)


def softmax(x, axis=None, *, dim=None):
    """exp(x) / sum(exp(x)) along ``axis`` (default -1), computed stably."""
    return _softmax_op(x, axis=_axis(x, axis, dim))


def log_softmax(x, axis=None, *, dim=None):
    """log(softmax(x)) along ``axis`` (default -1), computed stably."""
    return _log_softmax_op(x, axis=_axis(x, axis, dim))
