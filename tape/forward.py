"""Forward mode: tangents pushed through a recorded tape, oldest entry first.

``func.jvp`` and ``ForwardAccumulator`` record the forward as any tape does, then walk
its entries forwards computing each output's tangent from its inputs' tangents. No op
needs a forward rule of its own: the tangent comes from what every op already has.

* linear ops (sums, reshapes, indexing, pooling's adjoints, add...): the op itself on
  the tangents (zeros for inputs without one), inputs that are not differentiable (a
  mask, an index) as they are;
* multilinear ops (mul, matmul, einsum, conv2d's products): the op with one input
  replaced by its tangent, summed over the inputs that have one;
* elementwise ops (exp, tanh, pow, div...): their Jacobian is diagonal, so the
  gradient rule applied to the tangent (broadcast to the output) is the JVP; softmax's
  and the normalisation's Jacobians are symmetric, so their rule is the JVP too;
* a few written out (log_softmax, logsumexp, max/min, var/std, max_pool2d, linear);
* any other op (prod, checkpoint, custom gradients): its gradient rule transposed, as
  the double-VJP construction does for one entry.

An entry keeps the values its gradient rules read, and each kind reads only those. The
walk runs on arrays, or on tensors when a tape records (forward-over-reverse) or a vmap
maps it: the same ops, recorded or batched. A JVP costs about a forward and a backward.
"""

from __future__ import annotations

from . import backend
from .node import Node
from .ops import elementwise as ew
from .ops import reduce as rd
from .ops.pool import gather_at
from .ops.shape import broadcast_to, sum_to
from .tape import Tape, _local
from .tensor import Tensor, wrap


def push(tape, tangents, start=0):
    """Tangents of the outputs of ``tape``'s entries from ``start`` on; ``tangents``
    maps nodes to tangents on entry (the primals') and gets the new ones."""
    tensor_mode = bool(_local.stack or _local.vmap_level)
    if not tensor_mode:  # first order: the walk runs on arrays
        for key, v in tangents.items():
            if isinstance(v, Tensor):
                tangents[key] = v.data
    entries = tape._entries
    get = tangents.get
    for k in range(start, len(entries)):
        op, inputs, ans, out, params, _ = entries[k]
        vs = [get(x if type(x) is Node else getattr(x, "_node", None)) for x in inputs]
        for v in vs:
            if v is not None:
                break
        else:  # no input carries a tangent
            continue
        if tensor_mode:
            vs = [v if v is None or isinstance(v, Tensor) else wrap(v) for v in vs]
            args, a = inputs, ans
        else:
            args = [x.data if isinstance(x, Tensor) else x for x in inputs]
            a = ans if type(ans) is Node else ans.data
        t = KINDS.get(op.name, _transposed)(op, args, a, out, params, vs)
        if t is None:
            continue
        if t.shape != out.shape:
            t = broadcast_to(t, shape=tuple(out.shape))
        if t.dtype != out.dtype:
            t = ew.cast(t, dtype=out.dtype)
        tangents[out] = t
    return tangents


def _zeros(x, like):
    """Zeros shaped as the input ``x`` (a node or a tensor), on ``like``'s device."""
    if not hasattr(x, "shape"):  # a Python number: its tangent is 0 (x * 0 is NaN for inf)
        return type(x)(0)
    data = like.data if isinstance(like, Tensor) else like
    z = backend.xp(data).zeros(tuple(x.shape), x.dtype)
    return wrap(z) if isinstance(like, Tensor) else z


def _any(vs):
    return next(v for v in vs if v is not None)


def _differentiable(op, i):
    vjp = op.vjp
    return type(vjp) is not tuple or (i < len(vjp) and vjp[i] is not None)


# ----- the kinds -----
def _linear(op, args, ans, out, params, vs):
    """The op on the tangents (zeros where missing); non-differentiable inputs as they are."""
    v0 = _any(vs)
    xs = [v if v is not None else (x if not _differentiable(op, i) else _zeros(x, v0))
          for i, (x, v) in enumerate(zip(args, vs))]
    res = op(*xs, **params)
    return res[0] if op.extras else res


def _multilinear(op, args, ans, out, params, vs):
    """One term per input with a tangent: the op with that input replaced by it."""
    total = None
    for i, v in enumerate(vs):
        if v is None:
            continue
        term = op(*args[:i], v, *args[i + 1:], **params)
        total = term if total is None else total + term
    return total


def _diagonal(op, args, ans, out, params, vs):
    """Elementwise ops: the gradient rule on the tangent broadcast to the output."""
    total = None
    for i, v in enumerate(vs):
        if v is None:
            continue
        if tuple(v.shape) != tuple(out.shape):
            v = broadcast_to(v, shape=tuple(out.shape))
        term = op.vjp[i](v, ans, *args, **params)
        total = term if total is None else total + term
    return total


def _log_softmax(op, args, ans, out, params, vs):
    (v,) = vs
    if not ans.ndim:  # log_softmax of a scalar is 0
        return v * 0
    return v - rd._sum(v * ew.exp(ans), axes=(params["axis"],), keepdims=True)


def _logsumexp(op, args, ans, out, params, vs):
    (v,), (x,) = vs, args
    axes, keepdims = params["axes"], params["keepdims"]
    w = ew.exp(x - rd._kept(ans, ans.ndim, x.shape, axes, keepdims))
    return rd._sum(v * w, axes=axes, keepdims=keepdims)


def _extreme(op, args, ans, out, params, vs):
    (v,), (x,) = vs, args
    axes, keepdims = params["axes"], params["keepdims"]
    mask = ew.cast(x == rd._kept(ans, ans.ndim, x.shape, axes, keepdims), dtype=v.dtype)
    share = mask / rd._sum(mask, axes=axes, keepdims=True)  # ties share, as the gradient
    return rd._sum(v * share, axes=axes, keepdims=keepdims)


def _var_std(op, args, ans, out, params, vs):
    (v,), (x,) = vs, args
    axes, keepdims, ddof = params["axes"], params["keepdims"], params["ddof"]
    centred = x - rd._mean(x, axes=axes, keepdims=True)
    dvar = rd._sum(centred * v, axes=axes, keepdims=keepdims) * (2 / rd._dof(x.shape, axes,
                                                                                 ddof))
    if op.name == "var":
        return dvar
    return ew.where(ans == 0, 0, dvar / (2 * ew.where(ans == 0, 1, ans)))


def _max_pool(op, args, ans, out, params, vs):
    return gather_at(vs[0], argmax=params["argmax"])


def _linear_layer(op, args, ans, out, params, vs):
    """linear(x, w, b) = x w^T + b: bilinear in x and w, plus b."""
    x, w = args[0], args[1]
    total = None
    if vs[0] is not None:
        total = op(vs[0], w, None)
    if vs[1] is not None:
        term = op(x, vs[1], None)
        total = term if total is None else total + term
    if len(vs) > 2 and vs[2] is not None:
        total = vs[2] if total is None else total + vs[2]
    return total


def _pad(op, args, ans, out, params, vs):
    return op(vs[0], pad_width=params["pad_width"], value=0)  # the padding is constant


def _cast(op, args, ans, out, params, vs):
    return op(vs[0], **params) if out.dtype.kind == "f" else None


def _transposed(op, args, ans, out, params, vs):
    """Any op: the gradient rules, linear in their cotangent, transposed (J v is the
    gradient of <J^T u, v> with respect to u)."""
    v0 = _any(vs)
    device_like = v0.data if isinstance(v0, Tensor) else v0
    u = wrap(backend.xp(device_like).zeros(tuple(out.shape), out.dtype))
    targs = [wrap(a) if hasattr(a, "shape") and not isinstance(a, (Tensor, Node)) else a
             for a in args]
    tans = ans if type(ans) is Node or isinstance(ans, Tensor) else wrap(ans)
    with Tape() as tu:
        tu.watch(u)
        joint = type(op.vjp) is not tuple
        gis = op.vjp(u, tans, *targs, **params) if joint else None
        total = None
        for i, v in enumerate(vs):
            if v is None:
                continue
            gi = gis[i] if joint else op.vjp[i](u, tans, *targs, **params)
            if gi is None:
                continue
            x = args[i]
            if tuple(gi.shape) != tuple(x.shape):
                gi = sum_to(gi, shape=tuple(x.shape))
            term = (gi * v).sum()
            total = term if total is None else total + term
    if total is None:
        return None
    jv = tu.gradient(total, u, unconnected_gradients="zero")
    return jv if isinstance(v0, Tensor) else jv.data


KINDS = {}
for _name in ("add", "sub", "neg", "alias", "sum", "mean", "reshape", "transpose", "sum_to",
              "broadcast_to", "concatenate", "gather", "scatter_add", "avg_pool2d",
              "avg_unpool2d", "swap_leading", "im2col", "col2im", "add_bias", "dropout",
              "where", "max_unpool2d", "gather_at", "embedding", "embedding_backward",
              "nll_loss", "winograd_input", "winograd_input_adjoint", "winograd_weight",
              "winograd_weight_adjoint", "winograd_output", "winograd_output_adjoint"):
    KINDS[_name] = _linear
for _name in ("mul", "outer", "matmul", "einsum", "conv_im2col", "direct_conv", "winograd_gemm",
              "winograd_conv"):
    KINDS[_name] = _multilinear
for _name in ("exp", "log", "sqrt", "abs", "sin", "cos", "tanh", "sigmoid", "relu",
              "leaky_relu", "erf", "gelu", "softplus", "clip", "pow", "div", "maximum",
              "minimum", "binary_cross_entropy", "binary_cross_entropy_with_logits",
              "softmax", "standardize"):  # the last two: symmetric Jacobians
    KINDS[_name] = _diagonal
KINDS.update({"log_softmax": _log_softmax, "logsumexp": _logsumexp, "max": _extreme,
              "min": _extreme, "var": _var_std, "std": _var_std, "max_pool2d": _max_pool,
              "linear": _linear_layer, "cast": _cast, "pad": _pad})
