"""Scaled-dot-product attention on the CPU, one (batch, head) block at a time.

The attention composed of ops (copies of the heads, matmul, scale, mask, softmax,
matmul, and as many rules) makes about ten passes over the (B, L, S) scores, and numpy's
batched matmul on the heads' strided views ran each head's small GEMM from strided
memory: on charlm's step (32 windows x 4 heads x 64 x 64) forward and gradient took
about 10 ms per layer. Here each block is copied into small contiguous buffers that stay
in the core's cache, and its products are BLAS calls from inside the kernel (numba's
np.dot, SciPy's BLAS; for blocks up to 2**18 multiply-adds, run on the calling thread):

* ``_attention_scores``: ``q @ k^T`` times the scale, plus the bias, less each row's
  maximum, into the weights' buffer (-inf where a causal mask hides a key); then numpy's
  exp (SIMD: a scalar exp in numba costs 5x more) in place;
* ``_attention_mix``: each row normalised into the weights, and ``out = p @ v``;
* ``_attention_backward``: ``dv = p^T @ g``, ``dp = g @ v^T``, the softmax's gradient
  ``ds = p * (dp - sum(p * dp))`` in place, ``dq = ds @ k`` and ``dk = ds^T @ q`` (k and
  q times the scale).

Whether the blocks are dealt out among tape's threads is measured per machine
(kernels/cpu/threads.py): on a 2-core VM they ran no faster on two threads (their small
GEMMs share SciPy's OpenBLAS, which also runs a block's GEMM on several threads once it
has more than 2**18 multiply-adds, for sequences of several hundred).

Arrays: ``q`` (B1, B2, L, E), ``k`` (B1, B2, S, E), ``v`` (B1, B2, S, Ev), the gradients
and the output may have any positive strides with a contiguous last axis (the heads'
permuted views of a projection need no copy; broadcast or flipped views are copied), passed
flat with their element strides; the weights (B1 * B2, L, S) are C-contiguous; an additive
``bias`` (B1, B2, L, S) broadcasts by zero strides. A query row whose keys are all masked
gets zero weights and a zero output (PyTorch's safe softmax).
"""

from __future__ import annotations

import numpy as np

from .jit import inline, kernel
from .threads import parallel_for

U = np.uintp  # unsigned indices: no negative-index wrap-around, so the loops vectorise
FLOATS = (np.float32, np.float64)
_FAST = {"reassoc", "nsz", "contract"}  # vectorised row sums; inf and NaN kept


def applies(q, k, v):
    """Whether these arrays take the kernels: numpy floats of one dtype with 2 to 4 axes
    and the same leading axes (no broadcasting between them)."""
    return (type(q) is np.ndarray and type(k) is np.ndarray and type(v) is np.ndarray
            and q.dtype in FLOATS and k.dtype == q.dtype and v.dtype == q.dtype
            and 2 <= q.ndim <= 4 and k.ndim == q.ndim and v.ndim == q.ndim
            and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and k.shape[-2] == v.shape[-2])


def _four(a):
    """``a`` as 4-D (B1, B2, rows, last), its last axis contiguous and every other stride
    positive (the kernels' indexing, and ``_like``'s layout): a copy only if not (a
    broadcast or flipped view)."""
    if a.strides[-1] != a.itemsize or any(
            s <= 0 for s, n in zip(a.strides[:-1], a.shape[:-1]) if n > 1):
        a = np.ascontiguousarray(a)
    return a.reshape((1,) * (4 - a.ndim) + a.shape)


def _flat(a):
    """``a``'s memory from its first element to its last as a flat array, and its element
    strides: the kernels read ``a[i, j, r, c]`` at ``i*s0 + j*s1 + r*s2 + c``."""
    strides = np.array(a.strides, np.int64) // a.itemsize
    span = int(np.dot(np.array(a.shape) - 1, strides)) + 1
    return np.lib.stride_tricks.as_strided(a, (span,), (a.itemsize,)), strides


def _like(a, last):
    """A new array shaped as ``a`` with ``last`` on its last axis, its axes in ``a``'s
    memory order (a heads' view of an (N, L, heads, E) buffer stays one), the last one
    contiguous (else C order)."""
    out = np.empty_like(a, shape=a.shape[:-1] + (last,))
    return out if out.strides[-1] == out.itemsize else np.empty(out.shape, out.dtype)


@inline
def _block(src, base, rows, cols, rs, out, scale):
    """Rows ``base + r * rs`` (each ``cols`` long) of the flat ``src`` into ``out``
    (rows, cols), times ``scale``."""
    for r in range(rows):
        at = U(base + r * rs)
        for c in range(U(cols)):
            out[r, c] = src[at + c] * scale


@inline
def _unblock(block, dst, base, rows, cols, rs):
    """The inverse of ``_block``: ``block`` (rows, cols) into the flat ``dst``."""
    for r in range(rows):
        at = U(base + r * rs)
        for c in range(U(cols)):
            dst[at + c] = block[r, c]


@kernel(fastmath=_FAST)
def _attention_scores(start, stop, q, k, bias, p, nb2, L, S, E, qs, ks, bs, scale, causal,
                      masked, lo, one):
    qb, kb = np.empty((L, E), q.dtype), np.empty((S, E), q.dtype)
    for t in range(start, stop):
        b1, b2 = t // nb2, t % nb2
        _block(q, b1 * qs[0] + b2 * qs[1], L, E, qs[2], qb, scale)
        _block(k, b1 * ks[0] + b2 * ks[1], S, E, ks[2], kb, one)
        s = p[t]
        np.dot(qb, kb.T, s)
        bb = b1 * bs[0] + b2 * bs[1]
        for i in range(L):
            n = U(min(i + 1, S) if causal else S)
            row = s[i]
            if masked:
                bi = bb + i * bs[2]
                for j in range(n):
                    row[j] += bias[bi + j * bs[3]]
            m0 = m1 = m2 = m3 = lo  # the row's maximum in four chains: 4x the throughput
            j, step = U(0), U(4)
            while j + step <= n:
                m0, m1 = max(m0, row[j]), max(m1, row[j + U(1)])
                m2, m3 = max(m2, row[j + U(2)]), max(m3, row[j + U(3)])
                j += step
            while j < n:
                m0 = max(m0, row[j])
                j += U(1)
            top = max(max(m0, m1), max(m2, m3))
            if top == lo:  # every key masked: -inf everywhere, and exp gives zeros
                top = one - one
            for j in range(n):
                row[j] -= top
            for j in range(n, U(S)):
                row[j] = lo


@kernel(fastmath=_FAST)
def _attention_mix(start, stop, p, v, out, nb2, L, S, Ev, vs, os, one):
    vb, ob = np.empty((S, Ev), v.dtype), np.empty((L, Ev), v.dtype)
    for t in range(start, stop):
        b1, b2 = t // nb2, t % nb2
        w = p[t]
        for i in range(L):
            row = w[i]
            total = one - one
            for j in range(U(S)):
                total += row[j]
            if total > 0:  # else every key masked: the weights stay zeros
                inv = one / total
                for j in range(U(S)):
                    row[j] *= inv
        _block(v, b1 * vs[0] + b2 * vs[1], S, Ev, vs[2], vb, one)
        np.dot(w, vb, ob)
        _unblock(ob, out, b1 * os[0] + b2 * os[1], L, Ev, os[2])


@kernel(fastmath=_FAST)
def _attention_backward(start, stop, g, q, k, v, p, dq, dk, dv, nb2, L, S, E, Ev, gs, qs,
                        ks, vs, dqs, dks, dvs, scale, one):
    gb, vb = np.empty((L, Ev), q.dtype), np.empty((S, Ev), q.dtype)
    qb, kb = np.empty((L, E), q.dtype), np.empty((S, E), q.dtype)
    ds, dvb = np.empty((L, S), q.dtype), np.empty((S, Ev), q.dtype)
    dqb, dkb = np.empty((L, E), q.dtype), np.empty((S, E), q.dtype)
    for t in range(start, stop):
        b1, b2 = t // nb2, t % nb2
        _block(g, b1 * gs[0] + b2 * gs[1], L, Ev, gs[2], gb, one)
        _block(v, b1 * vs[0] + b2 * vs[1], S, Ev, vs[2], vb, one)
        w = p[t]
        np.dot(w.T, gb, dvb)
        np.dot(gb, vb.T, ds)  # the weights' gradient, then in place the scores'
        for i in range(L):
            d = one - one
            for j in range(U(S)):
                d += w[i, j] * ds[i, j]
            for j in range(U(S)):
                ds[i, j] = w[i, j] * (ds[i, j] - d)
        _block(q, b1 * qs[0] + b2 * qs[1], L, E, qs[2], qb, scale)
        _block(k, b1 * ks[0] + b2 * ks[1], S, E, ks[2], kb, scale)
        np.dot(ds, kb, dqb)
        np.dot(ds.T, qb, dkb)
        _unblock(dqb, dq, b1 * dqs[0] + b2 * dqs[1], L, E, dqs[2])
        _unblock(dkb, dk, b1 * dks[0] + b2 * dks[1], S, E, dks[2])
        _unblock(dvb, dv, b1 * dvs[0] + b2 * dvs[1], S, Ev, dvs[2])


def attention(q, k, v, bias, scale, causal):
    """``(out, weights)``: ``softmax(q @ k^T * scale + bias) @ v`` for (..., L, E),
    (..., S, E) and (..., S, Ev) arrays (as :func:`applies` takes), and the weights
    (..., L, S) the gradient needs. ``bias``: None or an additive float array broadcasting
    to the weights; ``causal``: keys j <= query i only (top-left aligned)."""
    lead, big_l, big_s, ev = q.shape[:-2], q.shape[-2], k.shape[-2], v.shape[-1]
    q4, k4, v4 = _four(q), _four(k), _four(v)
    nb1, nb2, _, e = q4.shape
    t = q.dtype.type
    weights = np.empty((nb1 * nb2, big_l, big_s), q.dtype)
    if bias is None:
        b, bs = np.zeros(1, q.dtype), np.zeros(4, np.int64)  # not read
    else:  # broadcast (zero strides), never flipped (negative ones)
        bias = bias.astype(q.dtype, copy=False)
        if any(s < 0 for s in bias.strides):
            bias = np.ascontiguousarray(bias)
        b, bs = _flat(np.broadcast_to(bias, q4.shape[:2] + (big_l, big_s)))
    (qf, qs), (kf, ks), (vf, vs) = _flat(q4), _flat(k4), _flat(v4)
    parallel_for(_attention_scores, nb1 * nb2, qf, kf, b, weights, nb2, big_l, big_s, e, qs,
                 ks, bs, t(scale), bool(causal), bias is not None, t(-np.inf), t(1),
                 work=weights.size * e)
    np.exp(weights, out=weights)
    out = _like(q4, ev)
    of, os = _flat(out)
    parallel_for(_attention_mix, nb1 * nb2, weights, vf, of, nb2, big_l, big_s, ev, vs, os,
                 t(1), work=weights.size * ev)
    return out.reshape(lead + (big_l, ev)), weights.reshape(lead + (big_l, big_s))


def attention_backward(g, q, k, v, weights, scale):
    """``(dq, dk, dv)`` of :func:`attention` for the output's gradient ``g`` (the weights
    hold the masks, causal or not)."""
    shapes = q.shape, k.shape, v.shape
    g4, q4, k4, v4 = _four(g), _four(q), _four(k), _four(v)
    nb1, nb2, big_l, e = q4.shape
    big_s, ev = k4.shape[2], v4.shape[3]
    dq, dk, dv = _like(q4, e), _like(k4, e), _like(v4, ev)
    (gf, gs), (qf, qs), (kf, ks), (vf, vs) = _flat(g4), _flat(q4), _flat(k4), _flat(v4)
    (dqf, dqs), (dkf, dks), (dvf, dvs) = _flat(dq), _flat(dk), _flat(dv)
    t = q.dtype.type
    parallel_for(_attention_backward, nb1 * nb2, gf, qf, kf, vf,
                 np.ascontiguousarray(weights).reshape(nb1 * nb2, big_l, big_s), dqf, dkf,
                 dvf, nb2, big_l, big_s, e, ev, gs, qs, ks, vs, dqs, dks, dvs, t(scale), t(1),
                 work=weights.size * (e + ev))
    return tuple(d.reshape(s) for d, s in zip((dq, dk, dv), shapes))
