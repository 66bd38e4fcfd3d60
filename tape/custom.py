"""New ops in plain Python: ``custom_gradient`` (TensorFlow style) and ``Function``
(forward/backward on raw arrays, PyTorch style).

Their rules are the user's code, which need not know about the extra leading batch
axes that ``jacobian`` replays with: such a cotangent is fed to them one slice at a time.
"""

from __future__ import annotations

import functools

from . import backend
from .ops.core import Op, lead_axes
from .modes import no_grad
from .tensor import Tensor, wrap


def _per_slice(rule, g, shape, n_inputs):
    """Call ``rule(g)`` for each slice of the leading batch axes of ``g`` (a cotangent for
    an output of ``shape``) and stack."""
    lead = lead_axes(g, len(shape))
    if not lead:
        return rule(g)
    from .ops.shape import reshape, stack

    flat = reshape(g, shape=(-1,) + tuple(shape))
    rows = [rule(flat[i]) for i in range(flat.shape[0])]
    out = []
    for k in range(n_inputs):
        parts = [r[k] for r in rows]
        if any(p is None for p in parts):
            out.append(None)
        else:
            stacked = stack(parts)
            out.append(reshape(stacked, shape=lead + stacked.shape[1:]))
    return out


# ----- custom_gradient -----
def _custom_vjp(g, ans, *inputs, grad_fn, count, value=None):
    """The user's ``grad_fn``; it closes over what it needs, so the entry keeps nothing
    else (the output's values are the unread ``value``)."""

    def call(gs):
        tensor_mode = isinstance(gs, Tensor)
        grads = grad_fn(gs if tensor_mode else wrap(gs))
        grads = list(grads) if isinstance(grads, (list, tuple)) else [grads]
        if len(grads) != count:
            raise ValueError(
                f"custom_gradient: grad_fn returned {len(grads)} gradients for {count} inputs"
            )
        if tensor_mode:
            return grads
        return [gr.data if isinstance(gr, Tensor) else gr for gr in grads]

    return _per_slice(call, g, ans.shape, count)


_custom_op = Op("custom_gradient", lambda *xs, value, grad_fn, count: value, joint=_custom_vjp)


def custom_gradient(fn):
    """Decorator: ``fn(*tensors)`` returns ``(y, grad_fn)`` and ``grad_fn(dy)`` returns one
    gradient per input, as TensorFlow's ``tf.custom_gradient``.

    >>> @tape.custom_gradient
    ... def clip_grad(x):
    ...     def grad_fn(dy):
    ...         return tape.clip(dy, -1.0, 1.0)
    ...     return x * 1.0, grad_fn
    """

    @functools.wraps(fn)
    def wrapper(*inputs):
        with no_grad():  # the user's forward is one op: its insides are not recorded
            result = fn(*inputs)
        if not (isinstance(result, tuple) and len(result) == 2 and callable(result[1])):
            raise TypeError(
                f"custom_gradient: {getattr(fn, '__name__', 'the function')} must return a pair "
                f"(y, grad_fn), got {type(result).__name__}"
            )
        y, grad_fn = result
        value = y.data if isinstance(y, Tensor) else y
        return _custom_op(*inputs, value=value, grad_fn=grad_fn, count=len(inputs))

    return wrapper


# ----- Function -----
class Context:
    """What ``Function.forward`` hands to ``backward``: saved arrays and any attributes."""

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays


class Function:
    """Base class for a new op written on raw arrays.

    >>> class Cube(tape.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x ** 3
    ...     @staticmethod
    ...     def backward(ctx, grad):
    ...         (x,) = ctx.saved_tensors
    ...         return 3 * x ** 2 * grad
    >>> y = Cube.apply(tape.tensor([1.0, 2.0], requires_grad=True))

    ``backward`` returns one array (or None) per input of ``forward``. It runs on raw
    arrays, so its result is a constant for higher-order gradients (as PyTorch's
    ``once_differentiable``).
    """

    @staticmethod
    def forward(ctx, *arrays):
        raise NotImplementedError("a Function subclass defines forward(ctx, *arrays)")

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("a Function subclass defines backward(ctx, grad)")

    @classmethod
    def apply(cls, *inputs):
        op = cls.__dict__.get("_op")
        if op is None:
            op = Op(cls.__name__, _function_forward, joint=_function_vjp)
            cls._op = op
        ctx = Context()
        ctx.needs_input_grad = tuple(isinstance(x, Tensor) for x in inputs)
        return op(*inputs, cls=cls, ctx=ctx)


def _broadcastable(shape, target):
    """Whether a gradient of ``shape`` sums back to ``target`` (the replay does that)."""
    if len(shape) < len(target):
        return False
    return all(s == t or t == 1 for s, t in zip(shape[::-1], target[::-1]))


def _function_forward(*arrays, cls, ctx):
    out = cls.forward(ctx, *arrays)
    return backend.xp(out).asarray(out)


def _function_vjp(g, ans, *inputs, cls, ctx):
    def call(gs):
        raw = gs.data if isinstance(gs, Tensor) else gs
        grads = cls.backward(ctx, raw)
        grads = list(grads) if isinstance(grads, (list, tuple)) else [grads]
        if len(grads) != len(inputs):
            raise ValueError(
                f"{cls.__name__}.backward returned {len(grads)} gradients for {len(inputs)} inputs"
            )
        for k, (gr, x) in enumerate(zip(grads, inputs)):
            shape = getattr(x, "shape", ())
            if gr is not None and hasattr(x, "shape") and not _broadcastable(gr.shape, shape):
                raise ValueError(
                    f"{cls.__name__}.backward returned a gradient of shape {tuple(gr.shape)} for "
                    f"input {k} of shape {tuple(shape)}"
                )
        if not isinstance(gs, Tensor):
            return grads
        # Under an outer tape: record each gradient as a function of the cotangent and the
        # inputs that cannot be differentiated again, so that trying to raises an error
        # instead of silently treating the gradient as a constant.
        return [None if gr is None else _once_differentiable(gs, *inputs, value=gr, cls=cls)
                for gr in grads]

    return _per_slice(call, g, ans.shape, len(inputs))


def _refuse_second_order(g, ans, *inputs, value, cls):
    raise RuntimeError(
        f"{cls.__name__}.backward works on raw arrays, so its result cannot be differentiated "
        "again (a gradient of a gradient went through it). Write the op with tape ops, or "
        "with tape.custom_gradient whose grad_fn uses tape ops, to get higher-order gradients."
    )


_once_differentiable = Op(
    "Function.backward", lambda *xs, value, cls: value, joint=_refuse_second_order
)
