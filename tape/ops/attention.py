"""Attention: ``scaled_dot_product_attention`` as torch.nn.functional's.

Two routes to the same values (up to rounding: the one-op route scales q before the
product):

* one op, ``attention`` (the common case: no dropout, a constant mask, nothing mapped by
  vmap). On the CPU its forward and first-order gradient are numba kernels per (batch,
  head) block (kernels/cpu/attention.py; on charlm's step, 32 x 4 heads x 64 x 64,
  forward and gradient went from ~10 ms per layer in-step to ~7); elsewhere (CuPy) the
  heads are copied once into contiguous (B, L, E) blocks, the softmax is taken in place
  between batched GEMMs, and the gradient is five GEMMs and three passes over the
  scores. The weights are kept for the gradient. Its rule on tensors (higher order,
  jacobians, forward mode) recomputes the weights with ops;
* composed of tape ops (matmul, where, softmax, dropout) and constant masks otherwise:
  under vmap, with dropout, or with a mask that needs a gradient.
"""

from __future__ import annotations

import math

import numpy as np

from kernels.cpu import attention as _cpu

from .. import backend
from ..tensor import Tensor
from ..tape import _local
from .core import Op
from .elementwise import where
from .linalg import gemm, matmul
from .nn import _data, _shape, dropout, softmax
from .reduce import _sum
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
    try:  # a mask broadcasts to the scores without adding axes to them (torch raises too)
        scores = np.broadcast_shapes(qs[:-2], ks[:-2]) + (qs[-2], ks[-2])
        fits = ms is None or np.broadcast_shapes(ms, scores) == scores
    except ValueError:
        scores, fits = "(..., L, S)", False
    if not fits:
        what = f"attn_mask of shape {ms} and " if ms is not None else ""
        raise ValueError(f"{NAME}: {what}query {qs}, key {ks} do not broadcast to the "
                         f"scores {scores}; give the mask as (L, S) or (..., L, S)")


def _bias(attn_mask, qd):
    """The mask as an additive bias for the scores (0 where a pair takes part, -inf where
    not), or None: a bool mask's, or a float mask itself (a tensor stays a tensor: it may
    need a gradient)."""
    if attn_mask is None:
        return None
    m = _mask_array(attn_mask, backend.device_of(qd))
    if m.dtype == bool:
        xp, t = backend.xp(qd), qd.dtype.type
        return _rewrap(attn_mask, xp.where(m, t(0), t(-np.inf)))
    if m.dtype.kind == "f" and m.dtype == qd.dtype:
        return attn_mask if isinstance(attn_mask, Tensor) else m
    raise TypeError(f"{NAME}: attn_mask has dtype {m.dtype}; it must be bool or the "
                    f"query's dtype {qd.dtype}: cast it with .astype(...)")


_CAUSAL = {}  # (L, S, dtype) -> the causal bias, read-only (numpy's; CuPy's made each time)
_CAUSAL_KEPT = 16  # sizes kept: a model's few sequence lengths, not every length it saw


def _causal_bias(big_l, big_s, dtype, xp):
    """0 for keys j <= query i, -inf above (top-left aligned, as torch's is_causal)."""
    bias = _CAUSAL.get((big_l, big_s, dtype)) if xp is np else None
    if bias is None:
        bias = xp.triu(xp.full((big_l, big_s), -np.inf, dtype), 1)
        if xp is np:
            bias.setflags(write=False)
            if len(_CAUSAL) >= _CAUSAL_KEPT:
                _CAUSAL.clear()
            _CAUSAL[(big_l, big_s, dtype)] = bias
    return bias


def _weights(query, key, bias, scale):
    """The attention weights composed of ops (they differentiate again, map under vmap,
    and give a float mask tensor its gradient). A query row with every key masked gets
    zeros: its bias counts as 0 for the softmax, then its weights are replaced."""
    scores = matmul(query, swapaxes(key, -1, -2)) * scale
    if bias is None:
        return softmax(scores, axis=-1)
    dead = (_data(bias) == -np.inf).all(axis=-1, keepdims=True)
    if not dead.any():
        return softmax(scores + bias, axis=-1)
    dead = _rewrap(bias, dead)
    return where(dead, 0.0, softmax(scores + where(dead, 0.0, bias), axis=-1))


def _fusable(query, key, value, bias):
    """Whether the one-op route takes these: arrays of one float dtype with the same
    leading axes, nothing mapped by vmap, and a bias that needs no gradient."""
    if any(isinstance(x, Tensor) and x._mapped for x in (query, key, value, bias)):
        return False
    if isinstance(bias, Tensor) and (bias.requires_grad or any(
            bias._node in tape._watched for tape in _local.stack)):
        return False
    q, k, v = _data(query), _data(key), _data(value)
    return (q.dtype.kind == "f" and k.dtype == q.dtype and v.dtype == q.dtype
            and q.ndim == k.ndim == v.ndim and q.shape[:-2] == k.shape[:-2] == v.shape[:-2])


# ----- the one-op route: forward and gradient side by side -----
def _attention_forward(q, k, v, bias=None, scale=1.0, causal=False):
    """(out, weights): numba's kernels on the CPU (kernels/cpu/attention.py); otherwise
    (CuPy) batched GEMMs on contiguous blocks with the softmax in place between them."""
    if _cpu.applies(q, k, v):
        return _cpu.attention(q, k, v, bias, scale, causal)
    xp = backend.xp(q)
    if causal:
        bias = _causal_bias(q.shape[-2], k.shape[-2], q.dtype, xp)
    s = gemm(_blocks(q, scale), _t(_blocks(k)))  # (B, L, S), a new array
    s = s.reshape(q.shape[:-2] + s.shape[1:])
    if bias is not None:
        s += bias
    top = s.max(axis=-1, keepdims=True)
    if bias is not None:
        top[top == -np.inf] = 0  # a row with every key masked: exp gives zeros...
    s -= top
    xp.exp(s, out=s)
    total = s.sum(axis=-1, keepdims=True)
    if bias is not None:
        total[total == 0] = 1  # ...and they stay zeros
    s /= total
    out = gemm(s.reshape((-1,) + s.shape[-2:]), _blocks(v))
    return out.reshape(q.shape[:-1] + out.shape[-1:]), s


def _attention_vjp(g, ans, q, k, v, bias=None, scale=1.0, causal=False, weights=None):
    if g.ndim == ans.ndim and not any(isinstance(x, Tensor) for x in (g, q, k, v)):
        if _cpu.applies(q, k, v):  # first order on arrays: one kernel...
            return _cpu.attention_backward(g, q, k, v, weights, scale)
        g3, p = _blocks(g), weights.reshape((-1,) + weights.shape[-2:])  # ...or five GEMMs
        dv = gemm(_t(p), g3)
        ds = gemm(g3, _t(_blocks(v)))  # the weights' gradient, then in place the scores'
        ds -= (ds * p).sum(axis=-1, keepdims=True)
        ds *= p
        dq, dk = gemm(ds, _blocks(k, scale)), gemm(_t(ds), _blocks(q, scale))
        return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)
    # tensors (higher order, jacobians' leading axes): the same with ops, the weights
    # recomputed by ops so that they differentiate again
    if causal:
        bias = _causal_bias(_shape(q)[-2], _shape(k)[-2], _data(q).dtype, backend.xp(_data(q)))
    p = _weights(q, k, bias, scale)
    dp = matmul(g, swapaxes(v, -1, -2))
    ds = p * (dp - _sum(dp * p, axes=(-1,), keepdims=True))
    return (matmul(ds, k) * scale, matmul(swapaxes(ds, -1, -2), q) * scale,
            matmul(swapaxes(p, -1, -2), g))


_attention = Op("attention", _attention_forward, joint=_attention_vjp, extras=("weights",))


def _blocks(a, scale=None):
    """``a`` as a new C-contiguous array of (B, rows, last) blocks (times ``scale``)."""
    xp = backend.xp(a)
    out = xp.empty(a.shape, a.dtype)
    if scale is None:
        out[...] = a
    else:
        xp.multiply(a, a.dtype.type(scale), out=out)
    return out.reshape((-1,) + a.shape[-2:])


def _t(blocks):
    return blocks.transpose(0, 2, 1)


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
    scale = 1.0 / math.sqrt(qs[-1]) if scale is None else scale
    bias = _bias(attn_mask, qd)
    if dropout_p == 0.0 and _fusable(query, key, value, bias):
        return _attention(query, key, value, bias=_data(bias), scale=scale,
                          causal=is_causal)[0]
    if is_causal:
        bias = _causal_bias(qs[-2], ks[-2], qd.dtype, backend.xp(qd))
    weights = _weights(query, key, bias, scale)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p)
    return matmul(weights, value)
