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
from ..tape import _local, format_line, user_line
from ..node import Node, node, unread_params
from ..node import plan as node_plan
from ..tensor import Tensor, wrap

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


# The three ways an op is called. One and two inputs are the hot path of small models:
# they do what the general one does, without packing and looping over arguments.
def _one_input(name, forward):
    def op(x, **params):
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
        arrays = tuple(a.data if isinstance(a, Tensor) else a for a in args)
        if all(x is a for x, a in zip(arrays, args)):  # no Tensor among the inputs
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


def _constant(c, like):
    """A Python number beside a floating-point array, as a 0-d array of its dtype.

    The same value numpy's promotion rules would use, but numpy handles a 0-d array
    twice as fast as a Python scalar, and the rules reuse it in the replay. The arrays
    of the constants a program uses (x * 0.5, y + 1) are made once, read-only."""
    if (type(c) is not float and type(c) is not int) or type(like) is not _ndarray:
        return c
    key = (c, like.dtype)
    array = _constants.get(key)
    if array is not None:
        return array
    if like.dtype.kind != "f":
        return c
    array = _array(c, like.dtype)
    # 0.0 == -0.0 as keys but not as factors; nan != nan would never hit.
    if c != 0 and c == c and len(_constants) < 1024:
        array.flags.writeable = False
        _constants[key] = array
    return array


_constants = {}


# ----- type promotion: PyTorch's rule -----
_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}
_DEFAULT = {0: np.dtype(bool), 1: np.dtype(np.int64), 2: np.dtype(np.float32),
            3: np.dtype(np.complex64)}  # the dtype a Python number of each category takes
_SCALARS = (bool, int, float, complex, np.generic)


def promoted(a, b, division=False):
    """``a`` and ``b`` (arrays, or Python or numpy numbers) as two operands of one dtype,
    by PyTorch's rule: the result has the highest category of the operands (bool < int <
    float < complex); within it, arrays with dimensions decide before 0-d arrays, and
    those before numbers (a number takes its category's default dtype: int64, float32);
    operands that decide together are promoted (float32 and float64 give float64). So a
    float32 tensor stays float32 beside integer tensors, numbers and 0-d values of any
    kind. ``division``: an integer result becomes float32 (true division). Numbers are
    returned as arrays of that dtype, or Python numbers (numpy's rule keeps them weak)."""
    ranked = []
    for x in (a, b):
        if isinstance(x, _SCALARS):
            kind = np.dtype(type(x)).kind if isinstance(x, np.generic) else (
                "b" if type(x) is bool else "i" if type(x) is int else
                "f" if type(x) is float else "c")
            ranked.append((_CATEGORY.get(kind, 2), 0, None))
        else:
            ranked.append((_CATEGORY.get(x.dtype.kind, 2), 2 if x.ndim else 1, x.dtype))
    category = max(r[0] for r in ranked)
    top = max(r[1] for r in ranked if r[0] == category)
    dtypes = [r[2] for r in ranked if r[0] == category and r[1] == top]
    dtype = _DEFAULT[category] if top == 0 else np.result_type(*dtypes)
    if division and category < 2:
        dtype = _DEFAULT[2]
    return tuple(_as(x, dtype) for x in (a, b))


def _as(x, dtype):
    if isinstance(x, np.generic):
        return x.item()  # a Python number: weak beside the array that now has ``dtype``
    if isinstance(x, _SCALARS):
        return x
    return x if x.dtype == dtype else x.astype(dtype)


def _with_scalar(array, c, division):
    """``array`` and the non-Tensor operand ``c`` beside it, promoted; the common case (a
    float array and a Python number) through the constants' cache."""
    if (type(c) is float or type(c) is int) and array.dtype.kind == "f":
        c = _constant(c, array)
    elif isinstance(c, _SCALARS) or hasattr(c, "dtype"):
        array, c = promoted(array, c, division)
    return (array, c)


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


def _record(stack, op, args, arrays, y, params, where=None, keep_all=False):
    """Append one entry to every active tape that watches an input of the op.

    An entry is ``(op, inputs, ans, out, params, where)`` (the names below): ``out`` is the
    output's node, ``ans`` the output itself when a rule reads its values (else its
    node), and ``inputs`` holds per input the tensor when a rule reads its values, else
    its node (constants as they are). Only inputs watched by some tape need rules."""
    mask = 0
    tapes = None
    for tape in stack:
        watched = tape._watched
        hit = 0
        for i, a in enumerate(args):  # a requires_grad tensor is watched on first use
            if isinstance(a, Tensor) and (
                    a._node in watched or (a.requires_grad and tape._watch_variable(a))):
                hit |= 1 << i
        if hit:
            mask |= hit
            tapes = [tape] if tapes is None else tapes + [tape]
    if tapes is None:
        return
    entry = _entry(op, args, arrays, y, params, mask, where, keep_all)
    for tape in tapes:
        tape._entries.append(entry)
        tape._watched.add(entry[OUT])


def _without_unread(unread, params):
    """``params`` without the arrays no rule reads (None in their place), such as the
    output a forward was handed: an entry must not keep them alive."""
    if not any(hasattr(params.get(k), "nbytes") for k in unread):
        return params
    return {k: None if k in unread else v for k, v in params.items()}


# The fields of an entry, for code that reads entries by position
OP, INPUTS, ANS, OUT, PARAMS, WHERE = range(6)


def _entry(op, args, arrays, y, params, mask, where=None, keep_all=False):
    """The entry for one op: only the values the rules of the watched inputs read."""
    if keep_all:
        keep_ans, keep = True, (True,) * len(args)
    else:
        keep_ans, keep = op.plans.get(mask) or _plan(op, mask, len(args))
    inputs = []
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            if a._node is None:  # an input no tape watches: known by a node all the same
                a._node = node(a.data)
            inputs.append(a if keep[i] else a._node)
        else:
            inputs.append(arrays[i])
    out = y._node = node(y.data)
    if op.unread and params:
        params = _without_unread(op.unread, params)
    return (op, tuple(inputs), y if keep_ans else out, out, params, where)


def _plan(op, mask, count):
    """What ``op``'s entries keep when the inputs in ``mask`` need gradients (cached)."""
    vjp = op.vjp
    plan = op.plans[mask] = node_plan(vjp if type(vjp) is tuple else (),
                                      None if type(vjp) is tuple else vjp, mask, count)
    return plan


def _node_for(x):
    """The node of a tensor no tape watches (made now: entries name every tensor input)."""
    n = x._node = node(x.data)
    return n


# The hot path of small models: ``_record`` for one- and two-input ops on one tape,
# without packing arguments or looping. They do exactly what ``_record`` does.
def _record1(stack, op, x, y, params):
    if len(stack) != 1:
        return _record(stack, op, (x,), (x.data,), y, params)
    tape = stack[0]
    n = x._node
    if n not in tape._watched:
        if not (x.requires_grad and tape._watch_variable(x)):
            return None
        n = x._node
    keep_ans, (keep_x,) = op.plans.get(1) or _plan(op, 1, 1)
    data = y.data
    out = y._node = _new(Node)
    out.shape = data.shape
    out.dtype = data.dtype
    if op.unread and params:
        params = _without_unread(op.unread, params)
    tape._entries.append((op, (x if keep_x else n,), y if keep_ans else out, out, params, None))
    tape._watched.add(out)
    return None


def _record2(stack, op, a, b, ad, bd, y, params):
    if len(stack) != 1:
        return _record(stack, op, (a, b), (ad, bd), y, params)
    tape = stack[0]
    watched = tape._watched
    a_tensor = isinstance(a, Tensor)
    b_tensor = isinstance(b, Tensor)
    mask = 1 if a_tensor and (
        a._node in watched or (a.requires_grad and tape._watch_variable(a))) else 0
    if b_tensor and (b._node in watched or (b.requires_grad and tape._watch_variable(b))):
        mask |= 2
    if not mask:
        return None
    keep_ans, (keep_a, keep_b) = op.plans.get(mask) or _plan(op, mask, 2)
    if a_tensor:
        ad = a if keep_a else a._node or _node_for(a)
    if b_tensor:
        bd = b if keep_b else b._node or _node_for(b)
    if keep_a and a_tensor and a._node is None:
        _node_for(a)
    if keep_b and b_tensor and b._node is None:
        _node_for(b)
    data = y.data
    out = y._node = _new(Node)
    out.shape = data.shape
    out.dtype = data.dtype
    if op.unread and params:
        params = _without_unread(op.unread, params)
    tape._entries.append((op, (ad, bd), y if keep_ans else out, out, params, None))
    watched.add(out)
    return None


def _note_break(stack, op, args, y):
    """A non-differentiable op (comparison, argmax) used a watched tensor: the tape notes
    it, outside its entries, so that ``explain`` can say where a gradient path ends."""
    for tape in stack:
        if any(isinstance(a, Tensor) and (a._node in tape._watched or (
                a.requires_grad and tape._watch_accessed)) for a in args):
            where = user_line() if tape._keep_lines else None
            tape._breaks.append((op.name, [a._node for a in args if isinstance(a, Tensor)],
                                 tuple(y.shape), where))


def _record_checked(stack, op, args, arrays, y, params):
    """``_record`` while debugging is on somewhere (``detect_anomaly``, or a tape that keeps
    source lines): check the forward for NaN/inf and keep the user's source line. A tape
    keeping source lines keeps every input and output too, for ``explain`` and pictures."""
    if _local.anomaly:
        _check_forward(op.name, y)
    keep_all = any(tape._keep_lines for tape in stack)
    where = user_line() if keep_all or _local.anomaly else None
    return _record_plain(stack, op, args, arrays, y, params, where, keep_all)


_record_plain = _record
_debug_users = 0
_debug_lock = threading.Lock()


def _record1_checked(stack, op, x, y, params):
    return _record_checked(stack, op, (x,), (x.data,), y, params)


def _record2_checked(stack, op, a, b, ad, bd, y, params):
    return _record_checked(stack, op, (a, b), (ad, bd), y, params)


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


def _check_forward(name, y):
    data = y.data
    if data.dtype.kind == "f" and not bool(np.isfinite(data).all()):
        bad = "nan" if bool(np.isnan(data).any()) else "inf"
        raise FloatingPointError(
            f"detect_anomaly: the forward of '{name}' produced {bad} at {format_line(user_line())}"
        )
