"""Resizing (N, C, L) and (N, C, H, W) inputs: ``interpolate`` in mode "nearest".

Composed of existing ops, so that gradients, vmap and forward mode come with them: an
integer upscale is a broadcast (its gradient a sum over each block), any other size a
gather along each resized axis (its gradient a scatter-add).
"""

from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor
from .indexing import getitem
from .shape import broadcast_to, reshape

MODES = ("nearest", "linear", "bilinear", "bicubic", "trilinear", "area", "nearest-exact")


def _shape(x):
    return tuple(x.shape) if isinstance(x, Tensor) else np.shape(x)


def _per_axis(value, n, name):
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"interpolate: {name}={value!r} needs {n} values for an input "
                             f"with {n} spatial axes")
        return tuple(value)
    return (value,) * n


def _source_index(out_size, in_size, scale):
    """torch's nearest index, ``min(floor(i * scale), in - 1)`` in float32, where scale is
    ``1 / scale_factor`` when a scale factor was given and ``in / out`` otherwise."""
    if out_size == in_size:
        return np.arange(out_size)
    if out_size == 2 * in_size:
        return np.arange(out_size) >> 1
    s = np.float32(1.0 / scale if scale is not None and scale > 0 else in_size / out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * s).astype(np.int64)
    return np.minimum(idx, in_size - 1)


def interpolate(input, size=None, scale_factor=None, mode="nearest"):
    """Resize the spatial axes of ``input`` (N, C, L) or (N, C, H, W), as
    ``torch.nn.functional.interpolate``; only mode "nearest" (torch's index formula)."""
    if mode not in MODES:
        raise NotImplementedError(f"interpolate: unknown mode {mode!r}; tape supports "
                                  "'nearest'")
    if mode != "nearest":
        raise NotImplementedError(f"interpolate: mode {mode!r} is not implemented; tape "
                                  "supports 'nearest'")
    shape = _shape(input)
    if len(shape) not in (3, 4):
        raise ValueError(f"interpolate: expects input (N, C, L) or (N, C, H, W), got shape "
                         f"{shape}")
    nsp = len(shape) - 2
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor, got "
                         f"size={size!r}, scale_factor={scale_factor!r}")
    if size is not None:
        out = tuple(int(s) for s in _per_axis(size, nsp, "size"))
        scales = (None,) * nsp
    else:
        scales = tuple(float(s) for s in _per_axis(scale_factor, nsp, "scale_factor"))
        out = tuple(math.floor(i * s) for i, s in zip(shape[2:], scales))
    if min(out) < 1:
        raise ValueError(f"interpolate: input of shape {shape} with size={size!r}, "
                         f"scale_factor={scale_factor!r} gives an empty output {out}")
    index = [_source_index(o, i, s) for o, i, s in zip(out, shape[2:], scales)]
    factors = [o // i if o >= i and np.array_equal(ix, np.arange(o) // (o // i)) else 0
               for ix, o, i in zip(index, out, shape[2:])]
    if all(factors):  # each output element repeats one input element f times: a broadcast
        lead = tuple(shape[:2])
        wide = lead + tuple(a for i in shape[2:] for a in (i, 1))
        blocks = lead + tuple(a for i, f in zip(shape[2:], factors) for a in (i, f))
        return reshape(broadcast_to(reshape(input, shape=wide), shape=blocks),
                       shape=lead + out)
    y = input
    for axis, ix in enumerate(index):
        if not np.array_equal(ix, np.arange(shape[2 + axis])):
            y = getitem(y, (slice(None),) * (2 + axis) + (ix,))
    return y
