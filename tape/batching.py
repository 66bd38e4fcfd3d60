"""vmap's batching rules: each op run once on a whole batch of examples.

Inside ``func.vmap`` a mapped tensor is a ``Batched`` (``tape/tensor.py``): its shape is
one example's, its ``value`` the whole batch with the mapped axis first. An op given one
calls ``call`` here (``tape/ops/core.py`` checks while a vmap runs), which runs the op's
batching rule on the values and wraps the result as ``Batched`` again: no Python loop
over the examples, one op call on the batch, as JAX's and functorch's batching rules.

Most rules are one of a few kinds, since tape's ops already take leading axes for
jacobians: elementwise ops broadcast once each example's rank is raised to the others'
(``_elementwise``); reductions, softmax and pooling name their axes from the end and run
on the batch as they are (``_as_is``); ops that count axes from the front get the
mapped axis added to their parameters (reshape, transpose, gather's ``nb``...); conv2d's
and max pooling's kernels take the batch folded into their own batch axis N.

Levels: every vmap has a depth, and so has every tape (the depth it was entered at).
An op on examples is recorded, as that op, on the tapes of its depth and deeper (a
``grad`` inside the vmap differentiates the example's function); the batch computation
its rule runs is recorded on the shallower tapes (a gradient taken outside the vmap
differentiates the batch computation). So ``vmap(grad(f))`` and ``grad(vmap(f))`` both
work, and so do nested vmaps.
"""

from __future__ import annotations

import string

import numpy as np

from . import backend
from .ops import conv, core, linalg, shape
from .ops.elementwise import add
from .tape import _local
from .tensor import Batched, Tensor, batched, wrap


def call(op, args, params):
    """``op(*args, **params)`` where some input or param is ``Batched``."""
    level = max(_levels(args, params))
    n = None
    xs, bd = [], []
    for a in args:
        if a.__class__ is Batched and a.level == level:
            xs.append(a.value)
            bd.append(True)
            n = a.value.shape[0]
        else:
            xs.append(a)
            bd.append(False)
    ps, pb = {}, set()
    for k, v in params.items():
        if v.__class__ is Batched and v.level == level:
            ps[k], n = v.value, v.value.shape[0]
            pb.add(k)
        elif type(v) is tuple and any(i.__class__ is Batched and i.level == level for i in v):
            ps[k] = tuple(i.value if i.__class__ is Batched and i.level == level else i for i in v)
            n = next(i.value.shape[0] for i in v if i.__class__ is Batched and i.level == level)
            pb.add(k)
        else:
            ps[k] = v
    rule = RULES.get(op.name)
    if rule is None:
        raise NotImplementedError(
            f"vmap: the op '{op.name}' has no batching rule, so it cannot be mapped over a "
            "batch. Call it outside vmap, or on tensors that are not mapped (in_axes=None)")
    stack = _local.stack
    deeper = [t for t in stack if t._level >= level]
    if deeper:  # the batch computation is recorded only on the tapes outside this vmap
        _local.stack = [t for t in stack if t._level < level]
    try:
        out = rule(op, xs, bd, ps, pb, n)
    finally:
        _local.stack = stack
    outs = out if isinstance(out, tuple) else (out,)
    wrapped = []
    for o in outs:
        o = o if isinstance(o, Tensor) else wrap(o)
        if o.ndim == 0 or o.shape[0] != n:  # a rule's mistake, not the user's
            raise RuntimeError(f"vmap: the batching rule of '{op.name}' returned shape "
                               f"{tuple(o.shape)} for a batch of {n}")
        wrapped.append(batched(o, level))
    y, more = wrapped[0], wrapped[1:]
    if deeper:
        if op.vjp is None:
            core._note_break(deeper, op, args, y)
        else:
            kept = {**params, **dict(zip(op.extras, more))} if more else params
            arrays = tuple(a.data if isinstance(a, Tensor) else a for a in args)
            core._record(deeper, op, args, arrays, y, kept)
    return (y, *more) if op.extras else y


def _levels(args, params):
    for a in args:
        if a.__class__ is Batched:
            yield a.level
    for v in params.values():
        if v.__class__ is Batched:
            yield v.level
        elif type(v) is tuple:
            yield from (i.level for i in v if i.__class__ is Batched)


def like(x, array):
    """``array`` (shaped as ``x.data``: every mapped axis first) as a tensor mapped as ``x``."""
    if x.__class__ is not Batched:
        return array
    inner = like(x.value, array)
    return batched(inner if isinstance(inner, Tensor) else wrap(inner), x.level)


# ----- helpers on batch values (mapped axis first) and on unmapped inputs -----
def _is_array(v):
    return isinstance(v, (Tensor, np.ndarray)) or backend.is_cupy(v)


def _ndim(x, mapped):
    """One example's number of axes."""
    return x.ndim - 1 if mapped else (x.ndim if _is_array(x) else 0)


def _raised(v, nd):
    """A batch value whose examples have fewer than ``nd`` axes, with size-one axes
    after the mapped one: examples then broadcast as the unmapped inputs do."""
    k = nd - (v.ndim - 1)
    return v if k <= 0 else shape._reshape(v, shape=(v.shape[0],) + (1,) * k + tuple(v.shape[1:]))


def _full(x, mapped, n):
    """The batch value of an input: an unmapped one repeated ``n`` times (a view)."""
    if mapped:
        return x
    if isinstance(x, Tensor):
        return shape.broadcast_to(x, shape=(n,) + tuple(x.shape))
    x = backend.xp(x).asarray(x) if _is_array(x) else np.asarray(x)
    return backend.xp(x).broadcast_to(x, (n,) + x.shape)


def _raw(v):
    return v.data if isinstance(v, Tensor) else v


def _fold(v):
    """(n, N, ...) -> (n*N, ...): the batch folded into the kernels' own batch axis."""
    return shape._reshape(v, shape=(-1,) + tuple(v.shape[2:]))


def _unfold(v, n):
    return shape._reshape(v, shape=(n, -1) + tuple(v.shape[1:]))


# ----- the kinds of rules -----
def _elementwise(op, xs, bd, ps, pb, n):
    """Broadcasting ops: each example's rank raised to the largest, then the op itself."""
    nd = max([_ndim(x, b) for x, b in zip(xs, bd)]
             + [_ndim(v, k in pb) for k, v in ps.items() if _is_array(v)])
    xs = [_raised(x, nd) if b else x for x, b in zip(xs, bd)]
    ps = {k: _raised(v, nd) if k in pb else v for k, v in ps.items()}
    return op(*xs, **ps)


def _as_is(op, xs, bd, ps, pb, n):
    """Ops that count their axes from the end (reductions, softmax, normalisation) or fold
    leading axes themselves (average pooling): the batch is one more leading axis."""
    return op(*xs, **ps)


def _softmax(op, xs, bd, ps, pb, n):
    (x,) = xs
    if x.ndim == 1:  # one number per example: softmax of a scalar
        return shape._reshape(op(shape._reshape(x, shape=(n, 1)), **ps), shape=(n,))
    return op(x, **ps)


def _arg_extreme(op, xs, bd, ps, pb, n):
    (x,) = xs
    axis, keepdims = ps["axis"], ps["keepdims"]
    nd = x.ndim - 1
    if axis is None:
        out = op(shape._reshape(x, shape=(n, -1)), axis=-1, keepdims=False)
        return shape._reshape(out, shape=(n,) + (1,) * nd) if keepdims else out
    return op(x, axis=int(axis) % max(nd, 1) - max(nd, 1), keepdims=keepdims)


def _reshape(op, xs, bd, ps, pb, n):
    return op(xs[0], shape=(n,) + tuple(ps["shape"]))


def _transpose(op, xs, bd, ps, pb, n):
    return op(xs[0], axes=(0,) + tuple(a + 1 for a in ps["axes"]))


def _sum_to(op, xs, bd, ps, pb, n):
    return op(xs[0], shape=ps["shape"], nb=ps.get("nb", 0) + 1)


def _broadcast_to(op, xs, bd, ps, pb, n):
    target = tuple(ps["shape"])
    return op(_raised(xs[0], len(target)), shape=(n,) + target)


def _concatenate(op, xs, bd, ps, pb, n):
    return op(*[_full(x, b, n) for x, b in zip(xs, bd)], **ps)


def _pad(op, xs, bd, ps, pb, n):
    return op(xs[0], pad_width=((0, 0),) + tuple(ps["pad_width"]), value=ps["value"])


def _batched_index(index, n, nb, opname):
    """An index holding mapped index arrays as one numpy index on the batch: the example
    number first, as one more advanced index (so the advanced indices must lead)."""
    if nb:
        raise NotImplementedError(f"vmap: {opname} with a mapped index inside a jacobian")
    if any(getattr(i, "dtype", None) is not None and i.dtype.kind == "b" for i in index):
        raise NotImplementedError(
            f"vmap: {opname} with a mapped boolean mask: each example would keep its own "
            "number of elements, and a batch needs one shape (as in torch.func.vmap); use "
            "tape.where(mask, x, 0) instead")
    first = next(k for k, i in enumerate(index) if hasattr(i, "shape") or isinstance(i, int))
    rest = index[first:]
    advanced = [isinstance(i, (int, np.integer)) or hasattr(i, "shape") for i in rest]
    if first or False in advanced[: sum(advanced)]:
        raise NotImplementedError(
            f"vmap: {opname} with a mapped index tensor works when the integer index arrays "
            "come first in the index (x[i], x[i, j], x[i, :]); got another arrangement")
    arrays = [_raw(i) for i in rest if hasattr(i, "shape")]
    rank = max([a.ndim for a in arrays], default=1)
    xp = backend.xp(*arrays) if arrays else np
    examples = xp.arange(n).reshape((n,) + (1,) * max(rank - 1, 0))
    mapped = tuple(_raw(i) for i in rest)
    return (examples,) + mapped


def _gather(op, xs, bd, ps, pb, n):
    nb = ps.get("nb", 0)
    if "index" not in pb:
        return op(xs[0], index=ps["index"], nb=nb + 1)
    index = _batched_index(ps["index"], n, nb, "indexing")
    return op(_full(xs[0], bd[0], n), index=index, nb=0)


def _scatter_add(op, xs, bd, ps, pb, n):
    nb = ps.get("nb", 0)
    if "index" not in pb:
        return op(xs[0], index=ps["index"], shape=ps["shape"], nb=nb + 1)
    index = _batched_index(ps["index"], n, nb, "the gradient of indexing")
    return op(_full(xs[0], bd[0], n), index=index, shape=(n,) + tuple(ps["shape"]), nb=0)


def _matmul(op, xs, bd, ps, pb, n):
    nd = max(_ndim(x, b) for x, b in zip(xs, bd))
    a, b = [_raised(x, nd) if m else x for x, m in zip(xs, bd)]
    if a.shape[-1] == 1:  # outer products (a vector's weight gradient): a batched GEMM
        return linalg.outer(a, b)  # with one term per sum is many times slower
    return op(a, b)


def _einsum(op, xs, bd, ps, pb, n):
    spec = ps["spec"]
    letter = next(c for c in string.ascii_letters if c not in spec)
    ins, out = spec.split("->")
    subs = [letter + s if b else s for s, b in zip(ins.split(","), bd)]
    return op(*xs, spec=",".join(subs) + "->" + letter + out)


def _linear(op, xs, bd, ps, pb, n):
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    if not bd[1] and not (b is not None and bd[2]):  # shared weights: one GEMM for all
        return op(*xs)
    lead = tuple(x.shape[1:-1] if bd[0] else x.shape[:-1])
    x3 = shape._reshape(x, shape=((n,) if bd[0] else ()) + (-1, x.shape[-1]))
    wt = shape.swapaxes(_full(w, bd[1], n), -1, -2)
    y = linalg._matmul(x3, wt)  # (n, rows, out)
    y = shape._reshape(y, shape=(n,) + lead + (y.shape[-1],))
    if b is None:
        return y
    return add(y, _raised(b, len(lead) + 1) if bd[2] else b)


def _embedding(op, xs, bd, ps, pb, n):
    (w,) = xs
    idx = ps["idx"]
    if "idx" not in pb:
        return op(w, idx=idx)
    idx = _raw(idx)
    if not bd[0]:
        return op(w, idx=idx)  # (num, dim) taken at (n, ...) indices
    num = w.shape[1]
    offsets = backend.xp(idx).arange(n).reshape((n,) + (1,) * (idx.ndim - 1)) * num
    flat = shape._reshape(w, shape=(n * num, w.shape[-1]))
    return op(flat, idx=idx + offsets)


def _embedding_backward(op, xs, bd, ps, pb, n):
    (g,) = xs
    idx, num = ps["idx"], ps["num"]
    if "idx" not in pb:
        return op(g, idx=idx, num=num)
    idx = _raw(idx)
    g = _full(g, bd[0], n)
    if g.ndim != idx.ndim + 1:
        raise NotImplementedError("vmap: the gradient of embedding with mapped indices "
                                  "inside a jacobian")
    offsets = backend.xp(idx).arange(n).reshape((n,) + (1,) * (idx.ndim - 1)) * num
    out = op(g, idx=idx + offsets, num=n * num)
    return shape._reshape(out, shape=(n, num, out.shape[-1]))


# conv2d's im2col route: the batch folded into N (im2col's columns are N-major)
def _im2col(op, xs, bd, ps, pb, n):
    cols = op(_fold(xs[0]), **ps)  # (K, n*N*L)
    k = cols.shape[0]
    return shape._transpose(shape._reshape(cols, shape=(k, n, -1)), axes=(1, 0, 2))


def _col2im(op, xs, bd, ps, pb, n):
    cols = xs[0]  # (n, K, N*L)
    k = cols.shape[1]
    flat = shape._reshape(shape._transpose(cols, axes=(1, 0, 2)), shape=(k, -1))
    x_shape = tuple(ps["x_shape"])
    out = op(flat, **{**ps, "x_shape": (n * x_shape[0],) + x_shape[1:]})
    return _unfold(out, n)


def _conv_im2col(op, xs, bd, ps, pb, n):
    x, w2 = xs
    if not bd[1]:  # shared weights: one GEMM over the whole batch
        y = op(_fold(x), w2, **ps)  # (Cout, n*N*L)
        return shape._transpose(shape._reshape(y, shape=(y.shape[0], n, -1)), axes=(1, 0, 2))
    cols = _im2col(conv.im2col, [x], [True], ps, set(), n) if bd[0] else conv.im2col(x, **ps)
    return linalg._matmul(w2, cols)


def _swap_leading(op, xs, bd, ps, pb, n):
    return shape._transpose(xs[0], axes=(0, 2, 1, 3, 4))


def _max_pool(op, xs, bd, ps, pb, n):
    y, argmax = op(_fold(xs[0]), **ps)
    return _unfold(y, n), _unfold(argmax, n)


def _max_unpool(op, xs, bd, ps, pb, n):
    g = xs[0]
    if "argmax" not in pb:
        return op(g, **ps)  # lead axes of g are folded and the argmax tiled by the op
    g = _full(g, bd[0], n)
    if g.ndim != 5:
        raise NotImplementedError("vmap: the gradient of max_pool2d inside a jacobian")
    x_shape = tuple(ps["x_shape"])
    out = op(_fold(g), argmax=_raw(_fold(ps["argmax"])), x_shape=(n * x_shape[0],) + x_shape[1:])
    return _unfold(out, n)


def _gather_at(op, xs, bd, ps, pb, n):
    g = xs[0]
    if "argmax" not in pb:
        return op(g, **ps)
    g = _full(g, bd[0], n)
    if g.ndim != 5:
        raise NotImplementedError("vmap: max_pool2d's second derivative inside a jacobian")
    return _unfold(op(_fold(g), argmax=_raw(_fold(ps["argmax"]))), n)


RULES = {}
for _name in ("add", "sub", "mul", "div", "add_bias", "neg", "pow", "exp", "log", "sqrt",
              "abs", "sin", "cos", "tanh", "sigmoid", "relu", "leaky_relu", "erf", "gelu",
              "softplus", "maximum", "minimum", "where", "clip", "lt", "le", "gt", "ge", "eq",
              "ne", "logical_and", "logical_or", "logical_not", "sign", "cast", "alias",
              "dropout", "binary_cross_entropy", "binary_cross_entropy_with_logits", "outer"):
    RULES[_name] = _elementwise
for _name in ("lstm_cell", "gru_cell"):  # fused recurrent cells: leading axes broadcast
    RULES[_name] = _elementwise
for _name in ("sum", "mean", "max", "min", "prod", "var", "std", "logsumexp", "standardize",
              "avg_pool2d", "avg_unpool2d"):
    RULES[_name] = _as_is
RULES.update({
    "softmax": _softmax, "log_softmax": _softmax, "argmax": _arg_extreme,
    "argmin": _arg_extreme, "reshape": _reshape, "transpose": _transpose, "sum_to": _sum_to,
    "broadcast_to": _broadcast_to, "concatenate": _concatenate, "pad": _pad,
    "gather": _gather, "scatter_add": _scatter_add, "matmul": _matmul, "einsum": _einsum,
    "linear": _linear, "embedding": _embedding, "embedding_backward": _embedding_backward,
    "im2col": _im2col, "col2im": _col2im, "conv_im2col": _conv_im2col,
    "swap_leading": _swap_leading, "max_pool2d": _max_pool, "max_unpool2d": _max_unpool,
    "gather_at": _gather_at,
})

core.batched_call = call
