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

import numpy as np

from .. import backend
from ..tape import _local, format_line, user_line
from ..tensor import Tensor, wrap

_ndarray = np.ndarray
_array = np.array
_new = object.__new__


def Op(name, forward, *rules, joint=None, differentiable=True, promote=None):
    """A differentiable operation: ``forward`` on arrays and its vector-Jacobian rules.

    ``rules`` holds one rule per positional input (``None``: not differentiable in
    that input); every other argument is passed by keyword. ``joint``, instead, is one
    callable returning a gradient per input (for ops whose inputs share work or come
    in any number). ``differentiable=False`` marks an op that is never recorded
    (comparisons, argmax). ``promote`` ("arithmetic" or "division", two-input ops): the
    operands of a call with a Tensor are first brought to one dtype by PyTorch's rule
    (:func:`promoted`). The result is a function with attributes ``name``, ``forward``
    and ``vjp``.
    """
    division = promote == "division"
    vjp = None if not differentiable else (joint if joint is not None else rules)
    arity = len(rules) if joint is None and differentiable else None

    # The one- and two-input versions are the hot path of small models; they do what
    # the general version does, without packing and looping over arguments.
    if arity == 1:

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
            else:
                y = wrap(out)
            stack = _local.stack
            if stack:
                _record(stack, op, (x,), (xd,), y, params)
            return y

    elif arity == 2:

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
            else:
                y = wrap(out)
            stack = _local.stack
            if stack:
                _record(stack, op, (a, b), (ad, bd), y, params)
            return y

    else:

        def op(*args, **params):
            arrays = tuple(a.data if isinstance(a, Tensor) else a for a in args)
            if all(x is a for x, a in zip(arrays, args)):  # no Tensor among the inputs
                return forward(*arrays, **params)
            try:
                out = forward(*arrays, **params)
            except (ValueError, TypeError) as e:
                raise _named(name, arrays, e) from None
            y = _output(out)
            stack = _local.stack
            if stack:
                if vjp is None:  # never recorded; the tape only notes where a path breaks
                    _note_break(stack, op, args, y)
                else:
                    _record(stack, op, args, arrays, y, params)
            return y

    op.name = name
    op.forward = forward
    op.vjp = vjp
    op.__name__ = op.__qualname__ = name
    return op


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
        return y
    return wrap(out)


def _record(stack, op, args, arrays, y, params, where=None):
    """Append ``(op, inputs, arrays, output, params, where)`` to every active tape that
    watches an input: all that the op's rules need, in the cheapest record there is."""
    entry = None
    for tape in stack:
        watched = tape._watched
        hit = False
        for a in args:  # every input: a requires_grad tensor is watched on first use
            if isinstance(a, Tensor) and (
                id(a) in watched or (a.requires_grad and tape._watch_variable(a))
            ):
                hit = True
        if hit:
            if entry is None:
                entry = (op, args, arrays, y, params, where)
            tape._entries.append(entry)
            watched.add(id(y))


def _note_break(stack, op, args, y):
    """A non-differentiable op (comparison, argmax) used a watched tensor: the tape notes
    it, outside its entries, so that ``explain`` can say where a gradient path ends."""
    for tape in stack:
        if any(isinstance(a, Tensor) and (id(a) in tape._watched or (
                a.requires_grad and tape._watch_accessed)) for a in args):
            where = user_line() if tape._keep_lines else None
            tape._breaks.append((op.name, [id(a) for a in args], tuple(y.shape), where))


def _record_checked(stack, op, args, arrays, y, params):
    """``_record`` while debugging is on somewhere (``detect_anomaly``, or a tape that keeps
    source lines): check the forward for NaN/inf and keep the user's source line."""
    if _local.anomaly:
        _check_forward(op.name, y)
        return _record_plain(stack, op, args, arrays, y, params, user_line())
    for tape in stack:
        if tape._keep_lines:
            return _record_plain(stack, op, args, arrays, y, params, user_line())
    return _record_plain(stack, op, args, arrays, y, params)


_record_plain = _record
_debug_users = 0


def debug_mode(on: bool) -> None:
    """Switch recording to ``_record_checked`` while any ``detect_anomaly`` block or tape
    keeping source lines is open, so that recording pays nothing for them otherwise."""
    global _record, _debug_users
    _debug_users += 1 if on else -1
    _record = _record_checked if _debug_users else _record_plain


def _check_forward(name, y):
    data = y.data
    if data.dtype.kind == "f" and not bool(np.isfinite(data).all()):
        bad = "nan" if bool(np.isnan(data).any()) else "inf"
        raise FloatingPointError(
            f"detect_anomaly: the forward of '{name}' produced {bad} at {format_line(user_line())}"
        )
