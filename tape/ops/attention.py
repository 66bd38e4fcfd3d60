"""Attention: ``scaled_dot_product_attention`` as torch.nn.functional's.

Composed of tape ops (matmul, where, softmax, dropout) and constant masks, with no ``Op``
of its own: gradients of every order, jacobians, vmap and forward mode come from the
ops it is made of.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..tensor import Tensor
from .elementwise import where
from .linalg import matmul
from .nn import _data, _shape, dropout, softmax
from .shape import swapaxes

NAME = "scaled_dot_product_attention"


def _rewrap(like_mask, array):
    """``array`` (shaped as ``like_mask.data``) mapped as ``like_mask`` inside vmap."""
    if isinstance(like_mask, Tensor) and like_mask._mapped:
        from ..batching import like

        return like(like_mask, array)
    return array


def _mask_array(mask, device):
    """A mask's array on ``device`` (a tensor's data, a list or array otherwise)."""
    return backend.to_device(backend.as_array(_data(mask)), device)


def _check_shapes(qs, ks, vs, ms):
    for name, s in (("query", qs), ("key", ks), ("value", vs)):
        if len(s) < 2:
            raise ValueError(f"{NAME}: {name} of shape {s} needs at least 2 axes, "
                             "(..., L, E) for query and (..., S, E) for key and value")
    if qs[-1] != ks[-1] or ks[-2] != vs[-2]:
        raise ValueError(f"{NAME}: query {qs}, key {ks} and value {vs} do not fit: query is "
                         "(..., L, E), key (..., S, E) and value (..., S, Ev)")
    try:
        scores = np.broadcast_shapes(qs[:-2], ks[:-2]) + (qs[-2], ks[-2])
        if ms is not None:
            np.broadcast_shapes(ms, scores)
    except ValueError:
        what = f"attn_mask of shape {ms} and " if ms is not None else ""
        raise ValueError(f"{NAME}: {what}query {qs}, key {ks} do not broadcast to the "
                         "scores (..., L, S); give the mask as (L, S) or (..., L, S)") from None


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None):
    """``softmax(query @ key^T * scale + mask) @ value`` on (..., L, E), (..., S, E) and
    (..., S, Ev) tensors, as torch: ``scale`` defaults to 1/sqrt(E); a bool ``attn_mask``
    marks with True the pairs that take part, a float one is added to the scores
    (both broadcast to (..., L, S)); ``is_causal`` keeps key j <= query i (top-left
    aligned). A query row with every key masked gives zeros, not NaN (torch's safe
    softmax). Dropout of the weights applies whenever ``dropout_p > 0`` (pass 0.0 in
    evaluation, as with torch).

    >>> F.scaled_dot_product_attention(tape.ones(2, 3, 4), tape.ones(2, 5, 4),
    ...                                tape.ones(2, 5, 6)).shape
    (2, 3, 6)
    """
    qs, ks, vs = _shape(query), _shape(key), _shape(value)
    ms = None if attn_mask is None else _shape(attn_mask)
    _check_shapes(qs, ks, vs, ms)
    if is_causal and attn_mask is not None:
        raise RuntimeError(f"{NAME}: Explicit attn_mask should not be set when is_causal=True "
                           "(pass one of them: is_causal=True builds the causal mask)")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"{NAME}: dropout_p must be between 0 and 1, got {dropout_p}")
    qd = _data(query)
    device = backend.device_of(qd)
    xp = backend.xp(qd)
    big_l, big_s = qs[-2], ks[-2]
    scale = 1.0 / math.sqrt(qs[-1]) if scale is None else scale
    scores = matmul(query, swapaxes(key, -1, -2)) * scale
    dead = None  # query rows with no key left (the safe softmax gives them zeros)
    if is_causal:
        keep = xp.tril(xp.ones((big_l, big_s), dtype=bool))
        scores = where(keep, scores, float("-inf"))
    elif attn_mask is not None:
        m = _mask_array(attn_mask, device)
        if m.dtype == bool:
            dead = ~m.any(axis=-1, keepdims=True)
            keep = _rewrap(attn_mask, m | dead)
            scores = where(keep, scores, float("-inf"))
        elif m.dtype.kind == "f" and m.dtype == qd.dtype:
            dead = (m == -np.inf).all(axis=-1, keepdims=True)
            if isinstance(attn_mask, Tensor):
                mask = where(_rewrap(attn_mask, dead), 0.0, attn_mask) if dead.any() else attn_mask
            else:
                mask = xp.where(dead, m.dtype.type(0), m)
            scores = scores + mask
        else:
            raise TypeError(f"{NAME}: attn_mask has dtype {m.dtype}; it must be bool or the "
                            f"query's dtype {qd.dtype}: cast it with .astype(...)")
    weights = softmax(scores, axis=-1)
    if dead is not None and dead.any():
        weights = where(_rewrap(attn_mask, dead), 0.0, weights)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p)
    return matmul(weights, value)
