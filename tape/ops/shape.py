"""Shape ops: reshape, transpose, broadcasting, concatenation, split, pad.

``sum_to`` is the one helper that undoes broadcasting; the replay calls it to fit each
gradient to its input. Indexing lives in ``indexing.py``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..backend import as_array
from ..tensor import Tensor
from .core import Op, lead_axes
from .indexing import gather, getitem


# ----- reshaping and transposing -----
_reshape = Op(
    "reshape",
    lambda x, shape: as_array(x).reshape(shape),
    lambda g, ans, x, shape: _reshape(g, shape=lead_axes(g, ans.ndim) + x.shape),
)


def reshape(x, shape):
    """``x`` with a new shape (an int or a tuple; one axis may be -1), as numpy and torch."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    old = _shape_of(x)
    size = math.prod(old)
    known = math.prod([s for s in shape if s != -1])
    unknown = sum(s == -1 for s in shape)
    if (any(s < -1 for s in shape) or unknown > 1 or (not unknown and known != size)
            or (unknown and (known == 0 or size % known))):
        raise ValueError(
            f"reshape: cannot reshape a tensor of shape {old} ({size} elements) into {shape}"
            " (sizes must multiply to the same count; at most one may be -1)"
        )
    return _reshape(x, shape=shape)


def _axis(axis, ndim, op):
    """``axis`` checked against ``ndim`` and made non-negative."""
    if not isinstance(axis, (int, np.integer)) or not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(f"{op}: axis {axis!r} is out of range for a tensor with {ndim} dimensions")
    return int(axis) % max(ndim, 1)


def _transpose_vjp(g, ans, x, axes):
    nb = len(lead_axes(g, ans.ndim))
    inverse = np.argsort(axes)
    return _transpose(g, axes=tuple(range(nb)) + tuple(nb + int(i) for i in inverse))


_transpose = Op("transpose", lambda x, axes: as_array(x).transpose(axes), _transpose_vjp)


def transpose(x, *axes, op="transpose"):
    """Permute the axes as numpy does: no axes reverses them."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    n = len(_shape_of(x))
    if not axes:
        axes = tuple(range(n - 1, -1, -1))
    axes = tuple(_axis(a, n, op) for a in axes)  # out of range raises, as torch: no wrapping
    if sorted(axes) != list(range(n)):
        raise ValueError(f"{op}: {axes} is not a permutation of the {n} axes of a tensor of "
                         f"shape {tuple(_shape_of(x))}")
    return _transpose(x, axes=axes)


# ----- broadcasting, and its adjoint -----
def _sum_to(x, shape, nb=0):
    """Sum ``x`` (leading ``nb`` axes kept) down to ``shape``, the shape that broadcast
    to ``x``'s: over the axes broadcasting added or stretched from 1."""
    shape = tuple(shape)
    lead, core = x.shape[:nb], x.shape[nb:]
    if core == shape:
        return x
    extra = len(core) - len(shape)
    if extra < 0 or any(s != 1 and s != c for s, c in zip(shape, core[extra:])):
        raise ValueError(f"sum_to: shape {tuple(core)} does not sum down to {shape}")
    axes = tuple(range(nb, nb + extra)) + tuple(
        nb + extra + i for i, s in enumerate(shape) if s == 1 and core[extra + i] != 1
    )
    x = x.sum(axis=axes, keepdims=True)
    return x.reshape(lead + x.shape[nb + extra :]) if extra else x


def _sum_to_vjp(g, ans, x, shape, nb=0):
    """Summing down is undone by broadcasting back: ``g`` (any jacobian axes first, then
    the kept ``nb`` axes and ``shape``) broadcast to those axes and ``x``'s."""
    lead = lead_axes(g, ans.ndim)
    kept, core = tuple(x.shape[:nb]), tuple(x.shape[nb:])
    g = reshape(g, shape=lead + kept + (1,) * (len(core) - len(shape)) + tuple(shape))
    return broadcast_to(g, shape=lead + kept + core)


sum_to = Op("sum_to", _sum_to, _sum_to_vjp)


def _broadcast_to(x, shape):
    try:
        return np.broadcast_to(x, shape)
    except ValueError:
        raise ValueError(
            f"broadcast_to: cannot broadcast shape {np.shape(x)} to {tuple(shape)}"
        ) from None


_broadcast_to_op = Op("broadcast_to", _broadcast_to, lambda g, ans, x, shape: g)


def broadcast_to(x, shape):
    """``x`` broadcast to ``shape`` (numpy's rules); the gradient sums back."""
    return _broadcast_to_op(x, shape=tuple(shape))


# ----- joining and splitting -----
def _concat_vjp(g, ans, *xs, axis, sizes):
    """Each input's slice of ``g``; ``sizes`` (along ``axis``) is all it needs of them."""
    grads, start = [], 0
    before = (slice(None),) * (g.ndim + axis)
    for size in sizes:
        grads.append(gather(g, index=before + (slice(start, start + size),)))
        start += size
    return grads


_concatenate = Op(
    "concatenate",
    lambda *xs, axis, sizes: backend.xp(*xs).concatenate(xs, axis=axis),
    joint=_concat_vjp,
)


def concatenate(tensors, axis=0, *, dim=None):
    """Join tensors along an existing axis."""
    axis = axis if dim is None else dim
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    shapes = [tuple(_shape_of(t)) for t in tensors]
    ndim = len(shapes[0])
    if ndim == 0:
        raise ValueError("concatenate: zero-dimensional tensors cannot be concatenated")
    if not -ndim <= axis < ndim:
        raise ValueError(f"concatenate: axis {axis} is out of range for {ndim} dimensions")
    k = axis % ndim
    for s in shapes:
        if len(s) != ndim or s[:k] + s[k + 1 :] != shapes[0][:k] + shapes[0][k + 1 :]:
            raise ValueError(f"concatenate: shapes {shapes[0]} and {s} differ outside axis {k}")
    return _concatenate(*tensors, axis=k - ndim, sizes=tuple(s[k] for s in shapes))


def stack(tensors, axis=0, *, dim=None):
    """Join tensors along a new axis."""
    axis = axis if dim is None else dim
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    shapes = {tuple(_shape_of(t)) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted(shapes)}")
    ndim = len(shapes.pop()) + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"stack: axis {axis} is out of range for {ndim} dimensions")
    return concatenate([unsqueeze(t, axis) for t in tensors], axis=axis)


def split(x, indices_or_sections, axis=0):
    """numpy.split: into ``n`` equal parts, or at the given indices along ``axis``."""
    axis = _axis(axis, len(_shape_of(x)), "split")
    size = x.shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        n = int(indices_or_sections)
        if n <= 0 or size % n:
            raise ValueError(f"split: axis of size {size} cannot be split into {n} equal parts")
        bounds = [i * (size // n) for i in range(n + 1)]
    else:
        bounds = [0] + [int(i) for i in indices_or_sections] + [size]
    before = (slice(None),) * (axis % x.ndim)
    return [getitem(x, before + (slice(a, b),)) for a, b in zip(bounds[:-1], bounds[1:])]


def _pad_vjp(g, ans, x, pad_width, value):
    nb = len(lead_axes(g, ans.ndim))
    index = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, x.shape))
    return gather(g, index=(slice(None),) * nb + index)


_pad = Op(
    "pad",
    lambda x, pad_width, value: backend.xp(x).pad(x, pad_width, constant_values=value),
    _pad_vjp,
)


def pad(x, pad, mode="constant", value=0.0):
    """torch.nn.functional.pad: ``pad`` lists (before, after) pairs from the last axis back."""
    if mode != "constant":
        raise NotImplementedError(f"pad: only mode='constant' is supported, got {mode!r}")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: needs pairs for at most {x.ndim} axes, got {pad}")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding is not supported, got {pad}")
    pairs = [(0, 0)] * (x.ndim - len(pad) // 2) + [
        (pad[2 * i], pad[2 * i + 1]) for i in reversed(range(len(pad) // 2))
    ]
    return _pad(x, pad_width=tuple(pairs), value=value)


# ----- conveniences defined by the ops above -----
def _shape_of(x):
    return tuple(x.shape) if isinstance(x, Tensor) else np.shape(x)


def squeeze(x, axis=None, *, dim=None):
    """Remove axes of size one (all of them, or those in ``axis``)."""
    axis = axis if dim is None else dim
    shape = _shape_of(x)
    if axis is None:
        return reshape(x, shape=tuple(s for s in shape if s != 1))
    axes = {_axis(a, len(shape), "squeeze") for a in ((axis,) if isinstance(axis, int) else axis)}
    return reshape(x, shape=tuple(s for i, s in enumerate(shape) if i not in axes or s != 1))


def unsqueeze(x, axis=None, *, dim=None):
    """Insert an axis of size one at ``axis`` (or torch's ``dim``)."""
    axis = axis if dim is None else dim
    if axis is None:
        raise TypeError("unsqueeze needs the position of the new axis: unsqueeze(x, axis)")
    shape = list(_shape_of(x))
    if not -len(shape) - 1 <= axis <= len(shape):
        raise ValueError(f"unsqueeze: axis {axis} is out of range for shape {tuple(shape)}")
    shape.insert(axis % (len(shape) + 1), 1)
    return reshape(x, shape=tuple(shape))


def flatten(x, start_dim=0, end_dim=-1):
    """Merge the axes from ``start_dim`` to ``end_dim`` (torch.flatten)."""
    shape = _shape_of(x)
    if not shape:
        return reshape(x, shape=(1,))
    s, e = _axis(start_dim, len(shape), "flatten"), _axis(end_dim, len(shape), "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = math.prod(shape[s : e + 1])
    return reshape(x, shape=shape[:s] + (merged,) + shape[e + 1 :])


def expand(x, *sizes):
    """torch's expand: broadcast to ``sizes``, where -1 keeps an axis's size."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    shape = tuple(_shape_of(x))
    offset = len(sizes) - len(shape)
    if offset < 0:
        raise ValueError(f"expand: {len(sizes)} sizes {sizes} for a tensor of shape {shape} "
                         f"({len(shape)} axes): give at least one size per axis")
    if any(s == -1 for s in sizes[:offset]):
        raise ValueError(f"expand: -1 (keep the size) given for a new leading axis in {sizes} "
                         f"for a tensor of shape {shape}: a new axis needs its size")
    target = tuple(shape[i - offset] if s == -1 else s for i, s in enumerate(sizes))
    return broadcast_to(x, shape=target)


def permute(x, *axes):
    """Reorder the axes (torch.permute)."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return transpose(x, axes, op="permute")


def swapaxes(x, axis1, axis2):
    """Exchange two axes."""
    n = len(_shape_of(x))
    axis1, axis2 = _axis(axis1, n, "swapaxes"), _axis(axis2, n, "swapaxes")
    axes = list(range(n))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return _transpose(x, axes=tuple(axes))
