"""Function transforms with JAX's and torch.func's names, built on the tape.

    from tape import func
    func.grad(f)(x)                     # f returns a scalar
    func.vjp(f, x)  -> (out, vjp_fn)    # vjp_fn(cotangent) -> one gradient per primal
    func.jvp(f, (x,), (v,)) -> (out, J v)
    func.jacrev(f)(x), func.jacfwd(f)(x), func.hessian(f)(x)

Each transform runs ``f`` under a tape of its own that watches fresh aliases of the
differentiated arguments (so ``f(x, x)`` differentiates each argument on its own), then
replays it. A replay under another recording tape is itself recorded, so transforms
compose: ``grad(grad(f))``, ``jacfwd(jacrev(f))``, a transform under a user's tape.

Forward mode: ``jvp`` records ``f`` once, then pushes the tangents through the recorded
entries, oldest first (``tape/forward.py``: each op's tangent from the rules it already
has, no forward rule to write); a JVP costs about a forward and a backward.
``ForwardAccumulator`` is the same under TensorFlow's interface. ``jacfwd`` is
TensorFlow's double-VJP construction: the VJP ``u -> J^T u`` is linear in ``u``, so the
gradient of ``<J^T u, v>`` with respect to ``u`` is ``J v``; recorded on a tape watching
``u``, that last backward is replayed once for all the basis tangents (a jacobian).
"""

from __future__ import annotations

import functools
import threading

from . import forward
from .creation import zeros_like
from .node import node_of
from .ops.core import Op
from .tape import Tape, _flatten, _local, _unflatten
from .tensor import Batched, Tensor, batched, wrap

# A new tensor for the same array, with a node of its own, recorded (gradient: the
# identity) on any tape that watches the original: so the transform's tape can watch it
# alone, and an outer transform still sees the connection.
_alias = Op("alias", lambda x: x, lambda g, ans, x: g)


def _argnums(argnums, args, name):
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums or any(not isinstance(i, int) or not -len(args) <= i < len(args) for i in nums):
        raise ValueError(f"{name}: argnums={argnums!r} does not name positional arguments of a "
                         f"call with {len(args)} of them")
    return tuple(i % len(args) for i in nums)


def _aliased(tree, name):
    """``tree`` (a tensor, or lists/tuples/dicts of them) with every tensor aliased."""
    leaves = _flatten(tree, [])
    for x in leaves:
        if not isinstance(x, Tensor) or x.dtype.kind != "f":
            what = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"{name}: differentiated arguments must be floating-point tape "
                            f"tensors (or containers of them), got {what}")
    return _unflatten(tree, iter([_alias(x) for x in leaves]))


def _trace(f, argnums, args, kwargs, name, persistent=False):
    """Run ``f`` on tape ``t`` with aliases of the differentiated arguments watched:
    ``(t, out, differentiated arguments as a tuple)``."""
    nums = _argnums(argnums, args, name)
    args = list(args)
    for i in nums:
        args[i] = _aliased(args[i], name)
    diff = tuple(args[i] for i in nums)
    with Tape(persistent=persistent) as t:
        t.watch(list(diff))
        out = f(*args, **kwargs)
    return t, out, diff


def _split(out, has_aux, name):
    if not has_aux:
        return out, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"{name}(..., has_aux=True): f must return a pair (output, aux), got "
                        f"{type(out).__name__}")
    return out[0], out[1]


def _picked(grads, argnums):
    """One gradient per argnum: a tuple for a tuple of argnums, else the one."""
    return tuple(grads) if not isinstance(argnums, int) else grads[0]


# ----- reverse mode -----
def value_and_grad(f, argnums=0, has_aux=False):
    """``f``'s value and its gradient with respect to argument(s) ``argnums``; ``f``
    returns a scalar (``(scalar, aux)`` with ``has_aux``)."""

    @functools.wraps(f)
    def value_and_grad_f(*args, **kwargs):
        t, out, diff = _trace(f, argnums, args, kwargs, "grad")
        value, aux = _split(out, has_aux, "grad")
        if not isinstance(value, Tensor) or value.shape != ():
            shape = f"shape {value.shape}" if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"grad: f must return a scalar tensor (shape ()), got {shape}; "
                             "for other outputs use func.vjp or func.jacrev")
        grads = t.gradient(value, list(diff), unconnected_gradients="zero")
        grads = _picked(grads, argnums)
        return ((value, aux), grads) if has_aux else (value, grads)

    return value_and_grad_f


def grad(f, argnums=0, has_aux=False):
    """The gradient of scalar-valued ``f`` with respect to argument(s) ``argnums``."""
    vg = value_and_grad(f, argnums, has_aux)

    @functools.wraps(f)
    def grad_f(*args, **kwargs):
        out, grads = vg(*args, **kwargs)
        return (grads, out[1]) if has_aux else grads

    return grad_f


def vjp(f, *primals, has_aux=False):
    """``(f(*primals), vjp_fn)``; ``vjp_fn(cotangent)`` (shaped as the output) gives one
    gradient per primal, as a tuple. ``vjp_fn`` may be called more than once."""
    t, out, diff = _trace(f, tuple(range(len(primals))), primals, {}, "vjp", persistent=True)
    out, aux = _split(out, has_aux, "vjp")
    leaves = _flatten(out, [])
    if not leaves or not all(isinstance(y, Tensor) for y in leaves):
        raise TypeError("vjp: f must return a tape tensor or containers of them")

    def vjp_fn(cotangents):
        cts = _flatten(cotangents, [])
        if len(cts) != len(leaves):
            raise ValueError(f"vjp_fn: {len(cts)} cotangents for {len(leaves)} outputs")
        return tuple(t.gradient(leaves, list(diff), output_gradients=cts,
                                unconnected_gradients="zero"))

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


def jacrev(f, argnums=0, has_aux=False):
    """The Jacobian of ``f`` (shape ``out.shape + arg.shape``) in reverse mode: one
    vectorized replay per output."""

    @functools.wraps(f)
    def jacrev_f(*args, **kwargs):
        t, out, diff = _trace(f, argnums, args, kwargs, "jacrev", persistent=True)
        out, aux = _split(out, has_aux, "jacrev")
        jacs = [_picked(t.jacobian(y, list(diff), unconnected_gradients="zero"), argnums)
                for y in _outputs(out, "jacrev")]
        jac = _unflatten(out, iter(jacs))
        return (jac, aux) if has_aux else jac

    return jacrev_f


def _outputs(out, name):
    leaves = _flatten(out, [])
    if not leaves or not all(isinstance(y, Tensor) for y in leaves):
        raise TypeError(f"{name}: f must return a tape tensor or containers of them")
    return leaves


# ----- forward mode, by the double-VJP construction -----
def _transposed_vjp(vjp_fn, y):
    """``(tape, u, g)``: ``g = vjp_fn(u)`` for a watched zero cotangent ``u`` shaped as
    ``y``, recorded on ``tape``; ``g`` is linear in ``u``, its transpose the JVP."""
    with Tape(persistent=True) as tu:
        u = zeros_like(y)
        tu.watch(u)
        g = vjp_fn(u)
    return tu, u, g


def jvp(f, primals, tangents, has_aux=False):
    """``(f(*primals), J v)``: the directional derivative along ``tangents`` (one per
    primal, each of its primal's shape and dtype). ``f`` is recorded once, then the
    tangents are pushed through its entries (``tape/forward.py``)."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    for p, v in zip(primals, tangents):
        ps, vs = _flatten(p, []), _flatten(v, [])
        if [x.shape for x in ps] != [x.shape for x in vs]:
            raise ValueError(f"jvp: a tangent's shapes {[x.shape for x in vs]} differ from its "
                             f"primal's {[x.shape for x in ps]}")
        for x, t in zip(ps, vs):
            if not isinstance(t, Tensor) or t.dtype != x.dtype:
                what = f"dtype {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
                raise TypeError(f"jvp: tangents must be tape tensors of their primal's dtype "
                                f"({x.dtype}), got {what}")
    t, out, diff = _trace(f, tuple(range(len(primals))), primals, {}, "jvp")
    out, aux = _split(out, has_aux, "jvp")
    seeds = {node_of(d): v for d, v in zip(_flatten(list(diff), []),
                                           _flatten(list(tangents), []))}
    tans = forward.push(t, seeds)
    tangent_out = _unflatten(out, iter([_tangent(tans.get(y._node), y, "zero")
                                        for y in _outputs(out, "jvp")]))
    return (out, tangent_out, aux) if has_aux else (out, tangent_out)


def _tangent(v, y, unconnected):
    """A pushed tangent as the user gets it: a tensor, or zeros / None where ``y`` does
    not depend on the primals."""
    if v is None:
        return zeros_like(y) if unconnected == "zero" else None
    return v if isinstance(v, Tensor) else wrap(v)


def jacfwd(f, argnums=0, has_aux=False):
    """The Jacobian of ``f`` (shape ``out.shape + arg.shape``) in forward mode: the
    transposed VJP replayed once for all the basis tangents of the arguments."""

    @functools.wraps(f)
    def jacfwd_f(*args, **kwargs):
        nums = _argnums(argnums, args, "jacfwd")

        def of_diff(*diff):
            full = list(args)
            for i, d in zip(nums, diff):
                full[i] = d
            return f(*full, **kwargs)

        res = vjp(of_diff, *[args[i] for i in nums], has_aux=has_aux)
        out, vjp_fn = res[0], res[1]
        jacs = []
        for k, y in enumerate(_outputs(out, "jacfwd")):
            def one_output(u, k=k):
                cts = [u if j == k else zeros_like(z) for j, z in enumerate(_outputs(out, ""))]
                return vjp_fn(_unflatten(out, iter(cts)))

            tu, u, gs = _transposed_vjp(one_output, y)
            per_arg = []
            for g, a in zip(gs, (args[i] for i in nums)):
                jt = tu.jacobian(g, u, unconnected_gradients="zero")  # a.shape + y.shape
                axes = tuple(range(a.ndim, a.ndim + y.ndim)) + tuple(range(a.ndim))
                per_arg.append(jt.permute(*axes) if axes else jt)
            jacs.append(_picked(per_arg, argnums))
        jac = _unflatten(out, iter(jacs))
        return (jac, res[2]) if has_aux else jac

    return jacfwd_f


def hessian(f, argnums=0):
    """The Hessian of scalar-valued ``f``: ``jacfwd(jacrev(f))``."""
    return jacfwd(jacrev(f, argnums), argnums)


class ForwardAccumulator:
    """Forward-mode derivatives as TensorFlow's ``tf.autodiff.ForwardAccumulator``.

    >>> with tape.ForwardAccumulator(x, v) as acc:
    ...     y = f(x)
    >>> acc.jvp(y)          # J v; None if y does not depend on x

    The block is recorded on a tape of its own; ``jvp`` pushes the tangents through its
    entries (``tape/forward.py``). Under a recording tape (forward-over-reverse: take a
    gradient inside the block, then ``acc.jvp(gradient)``) it gives Hessian-vector
    products.
    """

    def __init__(self, primals, tangents):
        self._primals = _flatten(primals, [])
        self._tangents = _flatten(tangents, [])
        if len(self._primals) != len(self._tangents):
            raise ValueError(f"ForwardAccumulator: {len(self._primals)} primals but "
                             f"{len(self._tangents)} tangents")
        for p, v in zip(self._primals, self._tangents):
            if not isinstance(p, Tensor) or p.dtype.kind != "f":
                raise TypeError("ForwardAccumulator: primals must be floating-point tape tensors")
            if tuple(v.shape) != tuple(p.shape):
                raise ValueError(f"ForwardAccumulator: a tangent of shape {tuple(v.shape)} for "
                                 f"a primal of shape {tuple(p.shape)}")
        self._tape = Tape(persistent=True)

    def __enter__(self):
        self._tape.__enter__()
        self._tape.watch(self._primals)
        return self

    def __exit__(self, *exc):
        return self._tape.__exit__(*exc)

    def jvp(self, primals, unconnected_gradients="none"):
        """The directional derivative of ``primals`` (a tensor or containers of them)."""
        if unconnected_gradients not in ("none", "zero"):
            raise ValueError(f"jvp: unconnected_gradients must be 'none' or 'zero', got "
                             f"{unconnected_gradients!r}")
        recording = any(t is self._tape for t in _local.stack)
        pause = self._tape.stop_recording() if recording else _Nothing()
        out = []
        with pause:
            for y in _flatten(primals, []):
                out.append(self._one(y, unconnected_gradients))
        return _unflatten(primals, iter(out))

    def _one(self, y, unconnected):
        if not isinstance(y, Tensor) or y._node not in self._tape._watched:
            return zeros_like(y) if unconnected == "zero" else None
        seeds = {node_of(p): v for p, v in zip(self._primals, self._tangents)}
        return _tangent(forward.push(self._tape, seeds).get(y._node), y, unconnected)


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ----- vmap -----
def vmap(f, in_axes=0, out_axes=0):
    """``f`` mapped over an axis of its arguments, as ``jax.vmap`` and ``torch.func.vmap``.

    ``in_axes``: an int (the axis of every tensor argument), None (not mapped), or one of
    those per positional argument (applying to every tensor inside it). ``out_axes``: where
    the mapped axis goes in each output (an int, or one per output). Keyword arguments
    are not mapped. ``f`` sees one example (``x.shape`` without the mapped axis) and runs
    once on the whole batch: every op runs its batching rule (``tape/batching.py``).
    Per-example gradients: ``vmap(grad(loss), in_axes=(None, 0, 0))(params, x, y)``.
    Dropout inside draws a different mask for each example (torch's
    ``randomness="different"``).
    """
    from . import batching  # noqa: F401  (installs the batching rules)

    @functools.wraps(f)
    def vmapped(*args, **kwargs):
        axes = _per_argument(in_axes, len(args), "in_axes")
        sizes = []
        mapped = [_map_tree(a, ax, i, sizes) for i, (a, ax) in enumerate(zip(args, axes))]
        if not sizes:
            raise ValueError("vmap: in_axes maps no tensor argument; map at least one "
                             "(in_axes=0, or an int for one argument)")
        n = sizes[0][0]
        for size, where in sizes[1:]:
            if size != n:
                raise ValueError(f"vmap: mapped axes of different sizes: {sizes[0][1]} has "
                                 f"{n}, {where} has {size}")
        level = _local.vmap_level + 1
        _set_level(level)
        try:
            mapped = [_unflatten(a, iter([batched(v, level) if m else v for v, m in leaves]))
                      for a, leaves in mapped]
            out = f(*mapped, **kwargs)
        finally:
            _set_level(level - 1)
        single = not isinstance(out, (tuple, list))
        outs = [out] if single else list(out)
        oax = _per_argument(out_axes, len(outs), "out_axes")
        res = [_unflatten(o, iter([_unmap(y, ax, level, n) for y in _flatten(o, [])]))
               for o, ax in zip(outs, oax)]
        return res[0] if single else type(out)(res)

    return vmapped


def _per_argument(axes, count, name):
    if axes is None or isinstance(axes, int):
        return [axes] * count
    axes = list(axes)
    if len(axes) != count or any(a is not None and not isinstance(a, int) for a in axes):
        what = "arguments" if name == "in_axes" else "outputs"
        raise ValueError(f"vmap: {name}={tuple(axes)!r} must be an int, None, or one int or None "
                         f"for each of the {count} {what}")
    return axes


def _map_tree(arg, axis, index, sizes):
    """``(arg, [(batch value or leaf, mapped?)...])``: each tensor's mapped axis moved first."""
    leaves = []
    for x in _flatten(arg, []):
        if axis is None or not isinstance(x, Tensor):
            leaves.append((x, False))
            continue
        nd = x.ndim
        if not -nd <= axis < max(nd, 0) or nd == 0:
            raise ValueError(f"vmap: in_axes {axis} is out of range for argument {index} of "
                             f"shape {tuple(x.shape)}")
        axis_ = axis % nd
        sizes.append((x.shape[axis_], f"argument {index} (axis {axis_} of shape "
                                      f"{tuple(x.shape)})"))
        if axis_:
            x = x.transpose((axis_,) + tuple(k for k in range(nd) if k != axis_))
        leaves.append((x, True))
    return arg, leaves


def _unmap(y, axis, level, n):
    """An output of the mapped function as the whole batch, mapped axis at ``axis``."""
    from .ops.shape import broadcast_to, unsqueeze

    if not isinstance(y, Tensor):
        return y
    if axis is None:
        if y.__class__ is Batched and y.level == level:
            raise ValueError("vmap: out_axes=None for an output that differs between examples")
        return y
    nd = y.ndim + 1
    if not -nd <= axis < nd:
        raise ValueError(f"vmap: out_axes {axis} is out of range for an output of shape "
                         f"{tuple(y.shape)} (plus the mapped axis)")
    axis %= nd
    if y.__class__ is Batched and y.level == level:
        v = y.value
        return v if axis == 0 else v.transpose(tuple(range(1, axis + 1)) + (0,)
                                               + tuple(range(axis + 1, nd)))
    shape = tuple(y.shape)  # the same for every example: repeated along the mapped axis
    return broadcast_to(unsqueeze(y, axis), shape=shape[:axis] + (n,) + shape[axis:])


_level_lock = threading.Lock()


def _set_level(level):
    """This thread's vmap depth; ops check for Batched inputs while any vmap runs."""
    from .ops import core

    with _level_lock:
        core.vmapping += 1 if level > _local.vmap_level else -1
    _local.vmap_level = level


def functional_call(module, tensors, args=(), kwargs=None):
    """``module(*args, **kwargs)`` with some of its parameters and buffers replaced by
    ``tensors`` (a dict from ``named_parameters()`` names), as ``torch.func.functional_call``:
    the module differentiated, or mapped, as a function of its parameters
    (``vmap(grad(loss), in_axes=(None, 0, 0))(dict(model.named_parameters()), x, y)``).
    The module is put back as it was afterwards."""
    args = args if isinstance(args, tuple) else (args,)
    saved = []
    try:
        for name, value in tensors.items():
            *path, leaf = name.split(".")
            owner = module
            for part in path:
                owner = getattr(owner, part)
            store = next((s for s in ("_parameters", "_buffers") if leaf in owner.__dict__[s]),
                         None)
            if store is None:
                raise KeyError(f"functional_call: the module has no parameter or buffer "
                               f"named {name!r}")
            saved.append((owner.__dict__[store], leaf, owner.__dict__[store][leaf]))
            owner.__dict__[store][leaf] = value
        return module(*args, **(kwargs or {}))
    finally:
        for store, leaf, old in reversed(saved):
            store[leaf] = old
