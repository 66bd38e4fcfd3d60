"""Reductions: sum, mean, max, min, prod, var, std, logsumexp, argmax, argmin.

The public functions normalise ``axis`` (numpy's ``axis``/``keepdims`` or torch's
``dim``/``keepdim``) to a sorted tuple of negative axes, so that every rule also works
when the cotangent carries extra leading batch axes (jacobians).
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from ..backend import as_array
from ..tensor import Tensor
from .core import Op, lead_axes
from .elementwise import cast, exp, where
from .shape import _reshape, broadcast_to


def normalize_axes(axis, ndim, op="reduction"):
    """``axis`` (None, int or tuple) as a sorted tuple of distinct negative axes."""
    if axis is None:
        return tuple(range(-ndim, 0))
    if isinstance(axis, (int, np.integer)):
        axes = (axis,)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        raise TypeError(f"{op}: axis must be an int or a tuple of ints, got {axis!r}")
    out = set()
    for a in axes:
        if not isinstance(a, (int, np.integer)):
            raise TypeError(f"{op}: axis must be an int or a tuple of ints, got {a!r}")
        # a 0-d tensor accepts axis 0 or -1, as torch
        if not -builtins.max(ndim, 1) <= a < builtins.max(ndim, 1):
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
        if ndim and int(a) % ndim - ndim in out:
            raise ValueError(f"{op}: axis {a} appears more than once in {axis!r}")
        if ndim:
            out.add(int(a) % ndim - ndim)
    return tuple(sorted(out))


def _ndim(x):
    return x.ndim if isinstance(x, Tensor) else np.ndim(x)


def _resolve(axis, keepdims, dim, keepdim):
    """Accept torch's ``dim``/``keepdim`` as aliases of ``axis``/``keepdims``."""
    if dim is not None:
        if axis is not None:
            raise TypeError("give either axis= or dim=, not both")
        axis = dim
    return axis, bool(keepdims if keepdim is None else keepdim)


def _kept(g, ndim, shape, axes, keepdims):
    """The cotangent ``g`` of a reduction of an array of ``shape`` to ``ndim`` axes,
    reshaped so that it broadcasts against that array. Rules pass ``ans.ndim`` and
    ``x.shape``: reading only those, their entries keep no values."""
    if keepdims:
        return g
    kshape = list(shape)
    for a in axes:
        kshape[a] = 1
    return _reshape(g, shape=lead_axes(g, ndim) + tuple(kshape))  # a valid shape


def _spread(g, ndim, shape, axes, keepdims):
    """The cotangent of a reduction spread over every element of an array of ``shape``."""
    k = _kept(g, ndim, shape, axes, keepdims)
    return broadcast_to(k, shape=k.shape[: k.ndim - len(shape)] + tuple(shape))


def _count(shape, axes):
    return math.prod([shape[a] for a in axes])


def _dof(shape, axes, ddof):
    """Degrees of freedom as a float (0.0 gives inf/nan gradients, as torch, not an error)."""
    n = float(_count(shape, axes) - ddof)
    return n if n > 0 else 0.0 * float("nan")


# ----- sums and means -----
_sum = Op(
    "sum",
    lambda x, axes, keepdims: as_array(x).sum(axis=axes, keepdims=keepdims),
    lambda g, ans, x, axes, keepdims: _spread(g, ans.ndim, x.shape, axes, keepdims),
)
_mean = Op(
    "mean",
    lambda x, axes, keepdims: as_array(x).mean(axis=axes, keepdims=keepdims),
    lambda g, ans, x, axes, keepdims: (_spread(g, ans.ndim, x.shape, axes, keepdims)
                                       / _count(x.shape, axes)),
)


# ----- extremes: ties share the gradient evenly, as torch.amax -----
def _extreme_vjp(g, ans, x, axes, keepdims):
    best = _kept(ans, ans.ndim, x.shape, axes, keepdims)
    mask = cast(x == best, dtype=g.dtype)
    kept = _kept(g, ans.ndim, x.shape, axes, keepdims)
    return kept * mask / _sum(mask, axes=axes, keepdims=True)


_max = Op("max", lambda x, axes, keepdims: as_array(x).max(axis=axes, keepdims=keepdims),
          _extreme_vjp)
_min = Op("min", lambda x, axes, keepdims: as_array(x).min(axis=axes, keepdims=keepdims),
          _extreme_vjp)


# ----- products: exact with zeros (product of the others), and to second order -----
def _prod_vjp(g, ans, x, axes, keepdims):
    kept = _kept(g, ans.ndim, x.shape, axes, keepdims)
    zero = x == 0
    if not bool((zero.data if isinstance(zero, Tensor) else zero).any()):
        return kept * _kept(ans, ans.ndim, x.shape, axes, keepdims) / x
    zeros = _sum(cast(zero, dtype=g.dtype), axes=axes, keepdims=True)
    safe = where(zero, 1, x)
    nonzero_prod = _prod(safe, axes=axes, keepdims=True)
    # The product of the others is 0 wherever another element is 0; with one or two
    # zeros it is written with those elements (value 0) rather than a constant, so that
    # its own derivative holds (with three or more, that derivative is 0 too).
    zero_sum = _sum(where(zero, x, 0), axes=axes, keepdims=True)
    one_zero = where(zero, nonzero_prod, nonzero_prod / safe * zero_sum)
    two_zeros = where(zero, nonzero_prod * (zero_sum - x), 0)
    others = where(
        zeros == 0,
        nonzero_prod / safe,
        where(zeros == 1, one_zero, where(zeros == 2, two_zeros, 0)),
    )
    return kept * others


_prod = Op("prod", lambda x, axes, keepdims: np.prod(x, axis=axes, keepdims=keepdims), _prod_vjp)


# ----- spread -----
def _var_vjp(g, ans, x, axes, keepdims, ddof):
    centred = x - _mean(x, axes=axes, keepdims=True)
    kept = _kept(g, ans.ndim, x.shape, axes, keepdims)
    return kept * centred * (2 / _dof(x.shape, axes, ddof))


def _std_vjp(g, ans, x, axes, keepdims, ddof):
    std = _kept(ans, ans.ndim, x.shape, axes, keepdims)
    safe = where(std == 0, 1, std)  # as torch: zero gradient where the std is zero
    centred = x - _mean(x, axes=axes, keepdims=True)
    scaled = where(std == 0, 0, centred / (safe * _dof(x.shape, axes, ddof)))
    return _kept(g, ans.ndim, x.shape, axes, keepdims) * scaled


_var = Op(
    "var",
    lambda x, axes, keepdims, ddof: np.var(x, axis=axes, keepdims=keepdims, ddof=ddof),
    _var_vjp,
)
_std = Op(
    "std",
    lambda x, axes, keepdims, ddof: np.std(x, axis=axes, keepdims=keepdims, ddof=ddof),
    _std_vjp,
)


def _logsumexp(x, axes, keepdims):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axes)


_logsumexp_op = Op(
    "logsumexp",
    _logsumexp,
    lambda g, ans, x, axes, keepdims: _kept(g, ans.ndim, x.shape, axes, keepdims)
    * exp(x - _kept(ans, ans.ndim, x.shape, axes, keepdims)),
)

_argmax = Op("argmax", lambda x, axis, keepdims: np.argmax(x, axis, keepdims=keepdims),
             differentiable=False)
_argmin = Op("argmin", lambda x, axis, keepdims: np.argmin(x, axis, keepdims=keepdims),
             differentiable=False)


# ----- the public functions -----
def _floating_only(x, name):
    """mean, var and std of integers have no dtype to give (torch raises too)."""
    dtype = getattr(getattr(x, "data", x), "dtype", None)
    if dtype is not None and dtype.kind in "biu":
        raise TypeError(f"{name}: the input is a tensor of dtype {dtype}; {name} is defined "
                        f"for floating-point tensors only: cast first, "
                        f"x.astype(tape.float32).{name}()")


def _reduction(op, name):
    def reduce(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        if name == "mean":
            _floating_only(x, name)
        axis, keepdims = _resolve(axis, keepdims, dim, keepdim)
        return op(x, axes=normalize_axes(axis, _ndim(x), name), keepdims=keepdims)

    reduce.__name__ = name
    reduce.__doc__ = f"{name} over ``axis`` (int, tuple or None for all); ``keepdims`` as numpy."
    return reduce


sum = _reduction(_sum, "sum")
mean = _reduction(_mean, "mean")
max = _reduction(_max, "max")
min = _reduction(_min, "min")
prod = _reduction(_prod, "prod")
logsumexp = _reduction(_logsumexp_op, "logsumexp")


def var(x, axis=None, ddof=0, keepdims=False, *, dim=None, keepdim=None, correction=None):
    """Variance over ``axis``; ``ddof`` (numpy) or ``correction`` (torch), default 0."""
    _floating_only(x, "var")
    axis, keepdims = _resolve(axis, keepdims, dim, keepdim)
    ddof = ddof if correction is None else correction
    axes = normalize_axes(axis, _ndim(x), "var")
    return _var(x, axes=axes, keepdims=keepdims, ddof=ddof)


def std(x, axis=None, ddof=0, keepdims=False, *, dim=None, keepdim=None, correction=None):
    """Standard deviation over ``axis``; ``ddof`` (numpy) or ``correction`` (torch)."""
    _floating_only(x, "std")
    axis, keepdims = _resolve(axis, keepdims, dim, keepdim)
    ddof = ddof if correction is None else correction
    axes = normalize_axes(axis, _ndim(x), "std")
    return _std(x, axes=axes, keepdims=keepdims, ddof=ddof)


def argmax(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """Indices of the maxima (not differentiable)."""
    axis, keepdims = _resolve(axis, keepdims, dim, keepdim)
    return _argmax(x, axis=axis, keepdims=keepdims)


def argmin(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """Indices of the minima (not differentiable)."""
    axis, keepdims = _resolve(axis, keepdims, dim, keepdim)
    return _argmin(x, axis=axis, keepdims=keepdims)
