"""Neural-network ops: softmax, log_softmax, linear, dropout, layer and batch norm, embedding.

Losses live in ``losses.py``, convolution and pooling in ``conv.py``. Each forward sits
beside its rules; the rules are written with ops, so they differentiate again.
"""

from __future__ import annotations

import math

import numpy as np
from kernels.cpu import elementwise as _cpu

from .. import backend
from ..backend import as_array
from ..tensor import Tensor
from .core import Op, lead_axes
from .elementwise import exp, sqrt, where
from .linalg import _matmul, gemm, matmul
from .reduce import _mean, _sum, _var
from .shape import reshape, swapaxes


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _shape(x):
    """The shape of a tensor (one example's, inside vmap) or of an array."""
    return tuple(x.shape) if isinstance(x, Tensor) else tuple(np.shape(x))


def _axis(x, axis, dim, op="softmax"):
    axis = dim if dim is not None else (-1 if axis is None else axis)
    ndim = x.ndim if isinstance(x, Tensor) else np.ndim(x)
    if not isinstance(axis, (int, np.integer)) or not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(f"{op}: axis {axis} is out of range for {ndim} dimensions")
    return (axis % ndim - ndim) if ndim else -1


# ----- softmax -----
def _softmax(x, axis):
    if np.ndim(x) == 0:
        return np.ones_like(x)
    x = as_array(x)
    if type(x) is np.ndarray and x.dtype.kind == "f":  # in place: one new array, not three
        z = np.subtract(x, x.max(axis=axis, keepdims=True))  # stable for large inputs
        np.exp(z, out=z)
        z /= z.sum(axis=axis, keepdims=True)
        return z
    z = np.exp(x - x.max(axis=axis, keepdims=True))  # stable for large inputs
    return z / z.sum(axis=axis, keepdims=True)


def _log_softmax(x, axis):
    if np.ndim(x) == 0:
        return np.zeros_like(x)
    x = as_array(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _softmax_vjp(g, ans, x, axis):
    if not ans.ndim:
        return g * 0
    if type(g) is np.ndarray and g.ndim == ans.ndim and _last_axis(ans, (axis,)):
        out = g - _row_dot(g, ans)  # first order along the rows: two passes, one new array
        out *= ans
        return out
    return ans * (g - _sum(g * ans, axes=(axis,), keepdims=True))


_softmax_op = Op("softmax", _softmax, _softmax_vjp)
_log_softmax_op = Op(
    "log_softmax",
    _log_softmax,
    lambda g, ans, x, axis: g - exp(ans) * _sum(g, axes=(axis,), keepdims=True)
    if ans.ndim else g * 0,
)


def softmax(x, axis=None, *, dim=None):
    """exp(x) / sum(exp(x)) along ``axis`` (default -1), computed stably."""
    return _softmax_op(x, axis=_axis(x, axis, dim))


def log_softmax(x, axis=None, *, dim=None):
    """log(softmax(x)) along ``axis`` (default -1), computed stably."""
    return _log_softmax_op(x, axis=_axis(x, axis, dim, "log_softmax"))


def same_dtype(op, *named):
    """A layer's input and parameters share one floating dtype (PyTorch raises too):
    an int64 batch, or a float64 one into float32 weights, says so and what to do."""
    dtypes = [(name, getattr(_data(v), "dtype", None)) for name, v in named if v is not None]
    first = dtypes[0][1]
    if first is not None and first.kind != "f":
        raise TypeError(f"{op}: the {dtypes[0][0]} has dtype {first}; it must be a "
                        f"floating-point tensor: cast it, x.astype(tape.float32)")
    for name, dtype in dtypes[1:]:
        if dtype is not None and first is not None and dtype != first:
            raise TypeError(f"{op}: the {dtypes[0][0]} has dtype {first} and the {name} "
                            f"{dtype}: they must have the same dtype; cast the "
                            f"{dtypes[0][0]} with .astype(tape.{dtype}) (or the layer with "
                            f"dtype=...)")


# ----- linear: x @ weight.T + bias in one entry -----
def _linear_forward(x, w, b=None):
    if x.ndim > 2:  # one GEMM over all the leading axes
        y = gemm(x.reshape(-1, x.shape[-1]), w.T).reshape(x.shape[:-1] + (w.shape[0],))
    else:
        y = gemm(x, w.T)
    if b is None:
        return y
    if b.dtype == y.dtype:  # y is the GEMM's new array: add in place, no second one
        if _cpu.rows_apply(y, b):  # a batch of rows: one loop
            return _cpu.add_to_rows_(y, b)
        y += b
        return y
    return y + b


def _linear_dx(g, ans, x, w, b=None):
    if type(g) is np.ndarray and g.ndim == 2:  # first order, a batch of rows: one GEMM
        return gemm(g, w)
    return _matmul(g, w) if g.ndim > 1 else matmul(g, w)


def _linear_dw(g, ans, x, w, b=None):
    if type(g) is np.ndarray and g.ndim == 2 == x.ndim:  # first order, as the forward
        return gemm(g.T, x)
    nb = len(lead_axes(g, ans.ndim))
    out_f, in_f = w.shape
    rows = math.prod(x.shape[:-1])
    g2 = reshape(g, shape=g.shape[:nb] + (rows, out_f))
    return _matmul(swapaxes(g2, -1, -2), reshape(x, shape=(rows, in_f)))


def _linear_db(g, ans, x, w, b):
    """First order, a batch of rows and one bias: the rows' sum. Otherwise ``g``, which
    the replay sums down to the bias's shape."""
    if type(g) is np.ndarray and g.ndim == 2 == ans.ndim and b.ndim == 1:
        return _cpu.sum_rows(g) if _cpu.rows_apply(g, None) else g.sum(axis=0)
    return g


_linear = Op("linear", _linear_forward, _linear_dx, _linear_dw, _linear_db)


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` with torch's layout: ``weight`` is (out_features, in_features).

    >>> F.linear(tape.ones(2, 3), tape.ones(4, 3)).shape
    (2, 4)
    """
    dtype = getattr(_data(x), "dtype", None)
    if (dtype is None or dtype.kind != "f" or getattr(_data(weight), "dtype", None) != dtype
            or bias is not None and getattr(_data(bias), "dtype", None) != dtype):
        same_dtype("linear", ("input", x), ("weight", weight), ("bias", bias))
    xs, ws = _shape(x), _shape(weight)
    if len(ws) != 2 or not xs or xs[-1] != ws[1]:
        raise ValueError(
            f"linear: input of shape {xs} does not fit a weight of shape {ws} "
            "(weight is (out_features, in_features); the input's last axis is in_features)"
        )
    if bias is None:
        return _linear(x, weight, None)
    if _shape(bias) != ws[:1]:
        raise ValueError(f"linear: bias of shape {_shape(bias)}, expected {ws[:1]}")
    return _linear(x, weight, bias)


# ----- dropout: the scaled keep-mask is a parameter of the entry -----
_dropout = Op("dropout", lambda x, mask: x * mask, lambda g, ans, x, mask: g * mask)


def dropout(x, p=0.5, training=True, inplace=False):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by
    1/(1-p); the identity when not ``training``. Uses the library RNG (``manual_seed``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability must be between 0 and 1, got {p}")
    if not training or p == 0.0:
        return x
    from ..creation import generator

    xd = _data(x)
    dtype = xd.dtype if xd.dtype.kind == "f" else np.dtype(np.float32)
    if p == 1.0:
        mask = np.zeros(xd.shape, dtype)
    else:
        rng_dtype = np.float32 if dtype == np.float32 else np.float64
        keep = generator().random(xd.shape, dtype=rng_dtype) >= p
        mask = keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))
    mask = backend.to_device(mask, backend.device_of(xd))
    if isinstance(x, Tensor) and x._mapped:  # inside vmap: a mask of its own per example
        from ..batching import like

        mask = like(x, mask)
    return _dropout(x, mask=mask)


# ----- normalisation: (x - mean) / sqrt(var + eps) over ``axes`` in one entry -----
def _last_axis(a, axes):
    """Whether ``axes`` is only the last axis of a float numpy array (a layer norm's
    rows): then the row sums of products are einsum's, with no squared temporary."""
    return (type(a) is np.ndarray and a.dtype.kind == "f" and len(axes) == 1
            and axes[0] % a.ndim == a.ndim - 1)


def _row_dot(a, b):
    """Sum over the last axis of ``a * b``, kept as an axis of size 1."""
    return np.einsum("...i,...i->...", a, b)[..., None]


def _standardize_forward(x, axes, eps):
    if _last_axis(x, axes) and _cpu.applies(x):  # a layer norm's rows: one pass, numba's
        return _cpu.standardize_rows(x, eps)
    centred = x - x.mean(axis=axes, keepdims=True)
    if _last_axis(centred, axes):  # the rows' variance without a squared copy; one pass
        var = _row_dot(centred, centred)  # out, in place
        var /= x.shape[-1]
        var += eps
        centred /= np.sqrt(var, out=var)
        return centred
    var = (centred * centred).mean(axis=axes, keepdims=True)
    return centred / np.sqrt(var + eps)


def _standardize_vjp(g, ans, x, axes, eps):
    if type(g) is np.ndarray and g.ndim == ans.ndim and _last_axis(x, axes):
        # first order on a layer norm's rows: the same sums in one pass (numba's), or in
        # fewer whole-array passes
        if _cpu.applies(g, ans, x):
            return _cpu.standardize_rows_grad(g, ans, x, eps)
        n = x.shape[-1]
        centred = x - x.mean(axis=-1, keepdims=True)
        var = _row_dot(centred, centred)
        var /= n
        var += eps
        rstd = np.sqrt(var, out=var)
        np.divide(1, rstd, out=rstd)
        gx_mean = _row_dot(g, ans)
        gx_mean /= n
        out = g - g.mean(axis=-1, keepdims=True)
        centred = np.multiply(ans, gx_mean, out=centred)  # reuses the buffer
        out -= centred
        out *= rstd
        return out
    rstd = 1 / sqrt(_var(x, axes=axes, keepdims=True, ddof=0) + eps)
    g_mean = _mean(g, axes=axes, keepdims=True)
    gx_mean = _mean(g * ans, axes=axes, keepdims=True)
    return (g - g_mean - ans * gx_mean) * rstd


_standardize = Op("standardize", _standardize_forward, _standardize_vjp)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last ``len(normalized_shape)`` axes, then scale and shift."""
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(int(s) for s in normalized_shape)
    k = len(normalized_shape)
    shape = _shape(x)
    if k == 0 or tuple(shape[len(shape) - k :]) != normalized_shape or len(shape) < k:
        raise ValueError(
            f"layer_norm: normalized_shape {normalized_shape} does not match the last axes of "
            f"an input of shape {tuple(shape)}"
        )
    if k == 1 and _affine_fits(x, weight, bias, shape[-1]):
        return _layer_norm(x, weight, bias, eps=eps)
    y = _standardize(x, axes=tuple(range(-k, 0)), eps=eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _affine_fits(x, weight, bias, n):
    """Whether a layer norm over the last axis takes the one-op route: a weight and a
    bias of that axis's length and of x's dtype, nothing mapped by vmap (a layer norm
    without them, or mapped, is the composition of ops)."""
    if weight is None or bias is None or any(
            getattr(a, "_mapped", False) for a in (x, weight, bias)):
        return False
    xd, wd, bd = _data(x), _data(weight), _data(bias)
    return (getattr(xd, "dtype", None) is not None and xd.dtype.kind == "f"
            and getattr(wd, "shape", None) == (n,) == getattr(bd, "shape", None)
            and wd.dtype == xd.dtype == bd.dtype)


# ----- a layer norm with its weight and bias: one entry, forward and rule side by side -----
def _layer_norm_forward(x, weight, bias, eps):
    if _cpu.layer_norm_applies(x, weight, bias):  # one pass, numba's
        return _cpu.layer_norm_rows(x, weight, bias, eps)
    y = _standardize_forward(x, (-1,), eps)
    y *= weight
    y += bias
    return y


def _layer_norm_vjp(g, ans, x, weight, bias, eps):
    if (type(g) is np.ndarray and g.ndim == ans.ndim and _cpu.applies(g, x)
            and _cpu.layer_norm_applies(x, weight, bias)):  # first order: one pass, numba's
        return _cpu.layer_norm_rows_grad(g, x, weight, eps)
    xhat = _standardize(x, axes=(-1,), eps=eps)  # otherwise with ops (they differentiate)
    rows = tuple(range(len(lead_axes(g, ans.ndim)), g.ndim - 1))  # jacobians' axes first
    return (_standardize_vjp(g * weight, xhat, x, (-1,), eps),
            _sum(g * xhat, axes=rows, keepdims=False), _sum(g, axes=rows, keepdims=False))


_layer_norm = Op("layer_norm", _layer_norm_forward, joint=_layer_norm_vjp)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over every axis but the channels (axis 1): (N, C) or (N, C, ...).

    In training, normalises with the batch statistics and updates ``running_mean`` and
    ``running_var`` (tensors or arrays, in place; unbiased variance) as torch does;
    otherwise normalises with the running statistics.
    """
    xd, shape = _data(x), _shape(x)  # shape: one example's, inside vmap
    if len(shape) < 2:
        raise ValueError(f"batch_norm: expected an input of shape (N, C, ...), got {shape}")
    c = shape[1]
    bshape = (1, c) + (1,) * (len(shape) - 2)
    axes = tuple(a - len(shape) for a in range(len(shape)) if a != 1)
    if training:
        n = math.prod(shape) // max(c, 1)
        if n <= 1:
            raise ValueError(
                f"batch_norm: expected more than 1 value per channel when training, got input "
                f"of shape {shape}"
            )
        y = _standardize(x, axes=axes, eps=eps)
        if (running_mean is not None or running_var is not None) and getattr(x, "_mapped", 0):
            raise NotImplementedError(
                "batch_norm: updating running_mean and running_var inside vmap would mix the "
                "examples' statistics into one buffer; pass running_mean=None and "
                "running_var=None, or use eval mode (as torch.func asks too)")
        if running_mean is not None or running_var is not None:
            pos = tuple(a % xd.ndim for a in axes)
            if running_mean is not None:
                rm = _data(running_mean)
                rm *= 1 - momentum
                rm += (momentum * xd.mean(axis=pos)).astype(rm.dtype, copy=False)
            if running_var is not None:
                rv = _data(running_var)
                rv *= 1 - momentum
                rv += (momentum * xd.var(axis=pos, ddof=1)).astype(rv.dtype, copy=False)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are needed when not "
                             "training")
        if any(getattr(s, "_mapped", 0) for s in (running_mean, running_var)):  # vmap
            from .elementwise import sqrt

            rm, rv = reshape(running_mean, shape=bshape), reshape(running_var, shape=bshape)
            y = (x - rm) / sqrt(rv + eps)
            return _affine(y, weight, bias, bshape)
        rm, rv = _data(running_mean), _data(running_var)
        inv = (1 / np.sqrt(rv + eps)).astype(xd.dtype, copy=False).reshape(bshape)
        y = (x - rm.astype(xd.dtype, copy=False).reshape(bshape)) * inv
    return _affine(y, weight, bias, bshape)


def _affine(y, weight, bias, bshape):
    if weight is not None:
        y = y * reshape(weight, shape=bshape)
    if bias is not None:
        y = y + reshape(bias, shape=bshape)
    return y


def _channel_param(op, name, p, c):
    if p is not None and _shape(p) != (c,):
        raise ValueError(f"{op}: {name} of shape {_shape(p)}, expected ({c},): one per channel "
                         "(axis 1 of the input)")


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise (N, C, ...) over each group of C // num_groups channels and every axis
    after them, then scale and shift per channel: one standardize on an (N, G, rest) view."""
    shape = _shape(input)
    if len(shape) < 2:
        raise ValueError(f"group_norm: expected an input of shape (N, C, ...) with at least 2 "
                         f"dimensions, got {shape}")
    c = shape[1]
    if not isinstance(num_groups, (int, np.integer)) or num_groups <= 0 or c % num_groups:
        raise ValueError(f"group_norm: num_groups={num_groups!r} must be a positive divisor of "
                         f"the number of channels {c} (axis 1 of an input of shape {shape})")
    same_dtype("group_norm", ("input", input), ("weight", weight), ("bias", bias))
    _channel_param("group_norm", "weight", weight, c)
    _channel_param("group_norm", "bias", bias, c)
    grouped = reshape(input, shape=(shape[0], num_groups, math.prod(shape[1:]) // num_groups))
    y = reshape(_standardize(grouped, axes=(-1,), eps=eps), shape=shape)
    return _affine(y, weight, bias, (1, c) + (1,) * (len(shape) - 2))


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """x / sqrt(mean(x**2) + eps) over the last ``len(normalized_shape)`` axes, times
    ``weight``; ``eps=None`` is the input dtype's machine epsilon, as torch."""
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(int(s) for s in normalized_shape)
    k, shape = len(normalized_shape), _shape(input)
    if k == 0 or len(shape) < k or tuple(shape[len(shape) - k:]) != normalized_shape:
        raise ValueError(f"rms_norm: normalized_shape {normalized_shape} does not match the "
                         f"last axes of an input of shape {shape}")
    same_dtype("rms_norm", ("input", input), ("weight", weight))
    if weight is not None and _shape(weight) != normalized_shape:
        raise ValueError(f"rms_norm: weight of shape {_shape(weight)}, expected "
                         f"normalized_shape {normalized_shape}")
    if eps is None:
        eps = float(np.finfo(_data(input).dtype).eps)
    y = input / sqrt(_mean(input * input, axes=tuple(range(-k, 0)), keepdims=True) + eps)
    return y if weight is None else y * weight


# ----- embedding: rows gathered; the gradient adds the rows of repeated indices -----
def _embedding_grad_forward(g, idx, num):
    """Zeros of ``lead + (num, dim)`` plus the rows of ``g`` (``lead + idx.shape + (dim,)``)
    at ``idx``: on the CPU without jacobian axes, one numba pass summing in g's dtype (as
    torch); otherwise one bincount (float64 sums), 2-3x faster than ``np.add.at``."""
    xp = backend.xp(g)
    dim = g.shape[-1]
    lead = g.shape[: g.ndim - idx.ndim - 1]
    if not lead and _cpu.applies(g) and idx.dtype.kind in "iu":  # one pass, numba's
        out = _cpu.add_rows(g, idx, num)
        if out is not None:
            return out
    n_lead = math.prod(lead)
    flat = (xp.arange(n_lead).reshape(-1, 1, 1) * (num * dim)
            + idx.reshape(1, -1, 1) * dim + xp.arange(dim).reshape(1, 1, -1))
    sums = xp.bincount(flat.reshape(-1), weights=g.reshape(-1), minlength=n_lead * num * dim)
    return sums.reshape(lead + (num, dim)).astype(g.dtype, copy=False)


_embedding = Op(
    "embedding",
    lambda w, idx: backend.xp(w).take(w, idx, axis=-2),
    lambda g, ans, w, idx: _embedding_grad(g, idx=idx, num=w.shape[-2]),
)
_embedding_grad = Op(
    "embedding_backward",
    _embedding_grad_forward,
    lambda g, ans, gy, idx, num: _embedding(g, idx=idx),
)


def embedding(indices, weight, padding_idx=None):
    """Rows of ``weight`` (num_embeddings, dim) at integer ``indices`` of any shape.

    The gradient of a row used several times is the sum of its uses; the row
    ``padding_idx``, if given, gets no gradient (as torch).
    """
    idx = _data(indices)
    idx = idx if hasattr(idx, "dtype") else np.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
    shape = _shape(weight)
    if len(shape) != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got shape {shape}")
    n = shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
        raise IndexError(f"embedding: index {bad} is out of range for {n} embeddings")
    idx = backend.to_device(idx, backend.device_of(_data(weight)))
    if isinstance(indices, Tensor) and indices._mapped:  # inside vmap: indices per example
        from ..batching import like

        idx = like(indices, idx)
    out = _embedding(weight, idx=idx)
    if padding_idx is not None and isinstance(out, Tensor):
        keep = (idx != padding_idx % n).reshape(idx.shape + (1,))
        out = where(keep, out, out.detach())
    return out
