"""Matrix products: matmul (1-D, 2-D, batched, broadcasting) and einsum."""

from __future__ import annotations

import string

import numpy as np
from kernels.cpu import elementwise as _cpu
from kernels.cpu.threads import matmul as _threaded_matmul

from .. import backend
from ..tensor import Tensor
from .core import Op, lead_axes
from .shape import broadcast_to, reshape, swapaxes


def _shape(x):
    return tuple(x.shape) if isinstance(x, Tensor) else np.shape(x)


# ----- matmul -----
def gemm(a, b):
    """``a @ b`` on arrays. numpy's go through kernels/cpu/threads.py: on OpenBLAS's
    threads, or split over tape's while other processes keep a core busy."""
    if type(a) is np.ndarray and type(b) is np.ndarray:
        if a.ndim > 2 and b.ndim == 2:  # a stack of rows times one matrix: one GEMM (numpy
            # would run one small GEMM per leading index, several times slower)
            rows = a.reshape(-1, a.shape[-1])
            return _threaded_matmul(rows, b).reshape(a.shape[:-1] + b.shape[1:])
        return _threaded_matmul(a, b)
    return np.matmul(a, b)


_matmul = Op(
    "matmul",
    gemm,
    lambda g, ans, a, b: _matmul(g, swapaxes(b, -1, -2)),
    lambda g, ans, a, b: _matmul(swapaxes(a, -1, -2), g),
)


def matmul(a, b):
    """Matrix product with numpy's rules: 1-D operands are promoted, batch axes broadcast."""
    sa, sb = _shape(a), _shape(b)
    if not sa or not sb:
        raise ValueError(f"matmul: operands must have at least one dimension, got {sa} and {sb}")
    k_a = sa[-1]
    k_b = sb[0] if len(sb) == 1 else sb[-2]
    if k_a != k_b:
        raise ValueError(
            f"matmul: shapes {sa} and {sb} do not match: {k_a} (last axis of the first) != "
            f"{k_b} ({'only' if len(sb) == 1 else 'second-to-last'} axis of the second)"
        )
    try:
        np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch axes of {sa} and {sb} do not broadcast") from None
    if len(sa) > 1 and len(sb) > 1:
        return _matmul(a, b)
    a2 = reshape(a, shape=(1,) + sa) if len(sa) == 1 else a
    b2 = reshape(b, shape=sb + (1,)) if len(sb) == 1 else b
    out = _matmul(a2, b2)
    shape = _shape(out)
    if len(sb) == 1:
        shape = shape[:-1]
    if len(sa) == 1:
        shape = shape[:-2] + shape[-1:] if len(sb) > 1 else shape[:-1]
    return reshape(out, shape=shape)


# ----- outer products of vectors, in batches -----
def _outer(a, b):
    """``a`` (..., n, 1) times ``b`` (..., 1, m): one product per element, no sums. vmap
    makes these of a vector's weight gradient (a batched GEMM with one term per sum
    would be many times slower); tape's kernel writes them in one pass."""
    if (type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype
            and a.dtype in _cpu.FLOATS and a.shape[:-2] == b.shape[:-2]
            and a.size * b.shape[-1] >= _cpu.MIN_SIZE):
        n, m = a.shape[-2], b.shape[-1]
        lead = a.shape[:-2]
        out = _cpu.outer(np.ascontiguousarray(a).reshape(-1, n),
                         np.ascontiguousarray(b).reshape(-1, m))
        return out.reshape(lead + (n, m))
    return a * b


outer = Op("outer", _outer, lambda g, ans, a, b: g * b, lambda g, ans, a, b: g * a,
           doc="Batched outer products: a (..., n, 1) times b (..., 1, m), elementwise.")


# ----- einsum -----
def _parse(spec, shapes):
    """Explicit subscripts: ``'...'`` spelled out with unused letters, the output given."""
    spec = spec.replace(" ", "")
    lhs, arrow, out = spec.partition("->")
    ins = lhs.split(",")
    if len(ins) != len(shapes):
        raise ValueError(f"einsum: {spec!r} names {len(ins)} operands, got {len(shapes)}")
    spare = [c for c in string.ascii_letters if c not in spec]
    ell_n = max((len(s) - (len(sub) - 3) for sub, s in zip(ins, shapes) if "..." in sub), default=0)
    ell = "".join(spare[:ell_n])
    expanded = []
    for sub, s in zip(ins, shapes):
        if "..." in sub:
            k = len(s) - (len(sub) - 3)
            sub = sub.replace("...", ell[ell_n - k :])
        if len(sub) != len(s):
            raise ValueError(f"einsum: subscripts {sub!r} do not fit an operand of shape {s}")
        expanded.append(sub)
    if arrow:
        out = out.replace("...", ell)
    else:
        letters = "".join(expanded)
        once = (c for c in set(letters) if letters.count(c) == 1 and c not in ell)
        out = ell + "".join(sorted(once))
    return expanded, out


def _einsum_vjp(g, ans, *xs, spec):
    ins, out = spec.split("->")[0].split(","), spec.split("->")[1]
    nb = len(lead_axes(g, ans.ndim))
    lead = "".join(c for c in string.ascii_letters if c not in spec)[:nb]
    grads = []
    for i, (x, sub) in enumerate(zip(xs, ins)):
        others = [(xs[j], ins[j]) for j in range(len(xs)) if j != i]
        available = set(lead + out).union(*[set(s) for _, s in others])
        unique = "".join(dict.fromkeys(sub))
        kept = "".join(c for c in unique if c in available)
        terms = ",".join([lead + out] + [s for _, s in others]) + "->" + lead + kept
        G = einsum(terms, g, *[o for o, _ in others])
        sizes = dict(zip(kept, G.shape[nb:]))
        # one axis per position of ``sub``: the letter's size at its first place, else 1
        seen, shape = set(), []
        for c in sub:
            shape.append(sizes.get(c, 1) if c not in seen else 1)
            seen.add(c)
        G = reshape(G, shape=G.shape[:nb] + tuple(shape))
        if tuple(shape) != _shape(x):  # letters summed away or repeated: size 1 so far
            G = broadcast_to(G, shape=G.shape[:nb] + _shape(x))
        if len(unique) < len(sub):  # a repeated letter: a diagonal
            G = G * _diagonal_mask(sub, _shape(x), G)
        grads.append(G)
    return grads


def _diagonal_mask(sub, shape, like):
    """1 where all the axes that share a letter have equal indices, else 0."""
    xp = backend.xp(like.data if isinstance(like, Tensor) else like)
    mask = xp.ones(shape, dtype=like.dtype)
    # numpy's indices(shape, sparse=True), spelled out: cupy's indices has no ``sparse``
    grids = [xp.arange(n).reshape((1,) * k + (n,) + (1,) * (len(shape) - k - 1))
             for k, n in enumerate(shape)]
    for c in set(sub):
        axes = [k for k, d in enumerate(sub) if d == c]
        for k in axes[1:]:
            mask = mask * (grids[axes[0]] == grids[k])
    return mask


_einsum = Op(
    "einsum",
    lambda *xs, spec: np.einsum(spec, *xs, optimize=len(xs) > 2),
    joint=_einsum_vjp,
)


def einsum(spec, *operands):
    """Einstein summation, numpy's spelling (``'...'`` and implicit outputs included)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    ins, out = _parse(spec, [_shape(x) for x in operands])
    return _einsum(*operands, spec=",".join(ins) + "->" + out)
