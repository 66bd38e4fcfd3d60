"""How an op is defined and recorded: the small machinery every family of ops uses.

An op is a forward on raw arrays plus one vector-Jacobian rule per input, side by
side (``Op("exp", np.exp, lambda g, ans, x: g * ans)``). Every rule has the signature
``rule(g, ans, *inputs, **params)``: ``g`` the incoming gradient (possibly with extra
leading batch axes, for jacobians), ``ans`` the op's output, then the op's inputs.

Calling an op is polymorphic:
- given only raw arrays (or scalars), it returns the raw result and records nothing.
  Gradient rules are written with ops, so first-order replay runs them on raw arrays
  at numpy speed;
- given any Tensor, it returns a Tensor and records one entry on each active tape
  that watches an input. Replay under an outer tape runs the same rules on Tensors,
  so the outer tape records them: higher-order gradients come for free.

``Op`` builds a plain Python function (not a class instance with ``__call__``): it is
the hot path of every training step, and a function call is the cheapest call there
is; it also lets ``Tensor`` use ops directly as methods.
"""

from __future__ import annotations

import inspect
import threading
import weakref

import numpy as np

from .. import backend
from ..node import unread_params
from ..tape import _local
from ..tensor import Batched, Tensor, wrap
from .promotion import _constant, _constants, _with_scalar, promoted
from .record import (
    _note_break, _record, _record1, _record1_checked, _record2, _record2_checked,
    _record_checked,
)

_ndarray = np.ndarray
_array = np.array
_new = object.__new__


def Op(name, forward, *rules, joint=None, differentiable=True, promote=None, extras=(),
       doc=None):
    """A differentiable operation: ``forward`` on arrays and its vector-Jacobian rules.

    ``rules`` holds one rule per positional input (``None``: not differentiable in
    that input); every other argument is passed by keyword. ``joint``, instead, is one
    callable returning a gradient per input (for ops whose inputs share work or come
    in any number). ``differentiable=False`` marks an op that is never recorded
    (comparisons, argmax). ``promote`` ("arithmetic" or "division", two-input ops): the
    operands of a call with a Tensor are first brought to one dtype by PyTorch's rule
    (:func:`promoted`). ``extras``: names of further outputs the forward returns after
    the result (``(out, argmax)``); the call returns them too, as tensors, and the rules
    get them by keyword. ``doc``: the docstring of a public op. The result is a
    function with attributes ``name``, ``forward`` and ``vjp``.
    """
    vjp = None if not differentiable else (joint if joint is not None else rules)
    arity = len(rules) if joint is None and differentiable else None
    if arity == 1 and not extras:
        op = _one_input(name, forward)
    elif arity == 2 and not extras:
        op = _two_inputs(name, forward, promote)
    else:
        op = _any_inputs(name, forward, extras)
    op.name = name
    op.forward = forward
    op.vjp = vjp
    op.extras = extras
    op.plans = {}  # which inputs need a gradient (bits) -> what the entry keeps
    op.unread = unread_params(rules, joint) if differentiable else frozenset()
    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    op.__signature__ = _signature(forward, rules)
    if differentiable:
        DEFINED.add(op)
    return op


DEFINED = weakref.WeakSet()  # every differentiable op defined so far (tests reach them all)


def _signature(forward, rules):
    """The op's call signature: its forward's, or for a forward without one (a numpy
    ufunc) the input names its rules use, ``(x)`` or ``(a, b)``."""
    if not isinstance(forward, np.ufunc):  # a ufunc's signature has out=, where=...
        try:
            return inspect.signature(forward)
        except (TypeError, ValueError):
            pass
    rule = next((r for r in rules if r is not None), None)
    names = getattr(getattr(rule, "__code__", None), "co_varnames", ())[2: 2 + len(rules)]
    if len(names) != len(rules):
        names = ("x",) if len(rules) == 1 else tuple(f"x{i}" for i in range(len(rules)))
    return inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY)
                              for n in names])


# ----- vmap: while any func.vmap runs, an op given a Batched tensor (in its inputs or its
# params) runs its batching rule instead (tape/batching.py sets these two) -----
vmapping = 0
batched_call = None


def _has_batched(args, params):
    for a in args:
        if a.__class__ is Batched:
            return True
    for v in params.values():
        if v.__class__ is Batched or v.__class__ is tuple and any(
                i.__class__ is Batched for i in v):
            return True
    return False


# The three ways an op is called. One and two inputs are the hot path of small models:
# they do what the general one does, without packing and looping over arguments.
def _one_input(name, forward):
    def op(x, **params):
        if vmapping and _has_batched((x,), params):
            return batched_call(op, (x,), params)
        if not isinstance(x, Tensor):
            return forward(x, **params)
        xd = x.data
        try:
            out = forward(xd, **params) if params else forward(xd)
        except (ValueError, TypeError) as e:  # free in Python >= 3.11 when nothing raises
            raise _named(name, (xd,), e) from None
        if type(out) is _ndarray:  # _output(out), inlined
            y = _new(Tensor)
            y.data = out
            y.requires_grad = False
            y._node = None
        else:
            y = wrap(out)
        stack = _local.stack
        if stack:
            _record1(stack, op, x, y, params)
        return y

    return op


def _two_inputs(name, forward, promote):
    division = promote == "division"


    def op(a, b, **params):
        if vmapping and _has_batched((a, b), params):
            return batched_call(op, (a, b), params)
        if isinstance(a, Tensor):
            ad = a.data
            if isinstance(b, Tensor):
                bd = b.data
                if promote and (bd.dtype != ad.dtype or division and ad.dtype.kind in "biu"):
                    ad, bd = promoted(ad, bd, division)
            elif type(b) is float and type(ad) is _ndarray and (  # x * 0.5: _constant
                    ad.dtype.kind == "f" or not promote):  # inlined
                bd = _constants.get((b, ad.dtype))
                if bd is None:
                    bd = _constant(b, ad)
            elif promote:
                ad, bd = _with_scalar(ad, b, division)
            else:
                bd = _constant(b, ad)
        elif isinstance(b, Tensor):
            bd = b.data
            if promote:
                bd, ad = _with_scalar(bd, a, division)
            else:
                ad = _constant(a, bd)
        else:
            return forward(a, b, **params)
        try:
            out = forward(ad, bd, **params) if params else forward(ad, bd)
        except (ValueError, TypeError) as e:
            raise _named(name, (ad, bd), e) from None
        if type(out) is _ndarray:  # _output(out), inlined
            y = _new(Tensor)
            y.data = out
            y.requires_grad = False
            y._node = None
        else:
            y = wrap(out)
        stack = _local.stack
        if stack:
            _record2(stack, op, a, b, ad, bd, y, params)
        return y

    return op


def _any_inputs(name, forward, extras):
    def op(*args, **params):
        if vmapping and _has_batched(args, params):
            return batched_call(op, args, params)
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        if not any(isinstance(a, Tensor) for a in args):  # only arrays: nothing to record
            return forward(*arrays, **params)
        try:
            out = forward(*arrays, **params)
        except (ValueError, TypeError) as e:
            raise _named(name, arrays, e) from None
        more = ()
        if extras:  # (out, *extras): the rules get the extras as params
            out, *more = out
            params = {**params, **dict(zip(extras, more))}
        y = _output(out)
        stack = _local.stack
        if stack:
            if op.vjp is None:  # never recorded; the tape only notes where a path breaks
                _note_break(stack, op, args, y)
            else:
                _record(stack, op, args, arrays, y, params)
        return (y, *(wrap(m) for m in more)) if extras else y

    return op


def lead_axes(g, ndim):
    """The leading axes of a cotangent ``g`` beyond the ``ndim`` axes of the array it is
    the cotangent of: ``jacobian`` replays once with a batch of cotangents stacked in
    front, and every rule must carry such axes through. Call it as
    ``lead_axes(g, ans.ndim)`` (or ``x.ndim``): a rule that reads only the ``ndim`` of its
    output keeps no values of it on the tape."""
    return g.shape[: g.ndim - ndim]


def fold_lead(a, core_ndim=4):
    """``a`` (an array) with its leading jacobian axes folded into its first core axis,
    as kernels taking (N, C, H, W) need, and those axes' shape (for ``unfold_lead``)."""
    lead = a.shape[: a.ndim - core_ndim]
    if lead:
        a = a.reshape((-1,) + a.shape[a.ndim - core_ndim + 1 :])
    return backend.xp(a).ascontiguousarray(a), lead


def unfold_lead(a, lead):
    """The inverse of ``fold_lead``: the leading axes back in front."""
    return a.reshape(lead + (-1,) + a.shape[1:]) if lead else a


def _named(name, arrays, error):
    """A forward's ValueError or TypeError restated with the op's name and its inputs'
    shapes, or, for arrays on different devices, their devices."""
    devices = sorted({backend.device_of(a) for a in arrays if hasattr(a, "shape")})
    if len(devices) > 1:
        return RuntimeError(
            f"{name}: inputs are on different devices ({' and '.join(devices)}); move them to "
            "one device first with .to('cpu') or .to('cuda')"
        )
    if isinstance(error, TypeError):
        return error
    shapes = ", ".join(str(a.shape) for a in arrays if hasattr(a, "shape"))
    message = str(error)
    if message.startswith(f"{name}:"):
        return error
    if "broadcast" in message:
        return ValueError(f"{name}: shapes {shapes} cannot be broadcast together")
    return type(error)(f"{name} (inputs of shapes {shapes}): {message}")


def _output(out):
    """The output Tensor around a forward's result (the inlined fast case of ``wrap``)."""
    if type(out) is _ndarray:
        y = _new(Tensor)
        y.data = out
        y.requires_grad = False
        y._node = None
        return y
    return wrap(out)


# ----- the debug switch -----
_record_plain = _record
_debug_users = 0
_debug_lock = threading.Lock()


_fast = (_record1, _record2)


def debug_mode(on: bool) -> None:
    """Switch recording to ``_record_checked`` while any ``detect_anomaly`` block or tape
    keeping source lines is open (in any thread), so that recording pays nothing for them
    otherwise. ``_record_checked`` itself looks only at this thread's state."""
    global _record, _record1, _record2, _debug_users
    with _debug_lock:
        _debug_users += 1 if on else -1
        checked = bool(_debug_users)
        _record = _record_checked if checked else _record_plain
        _record1, _record2 = (_record1_checked, _record2_checked) if checked else _fast


