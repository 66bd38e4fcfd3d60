"""Recording: what an op call appends to the active tapes.

An entry is a tuple ``(op, inputs, ans, out, params, where)`` (the names below):
``out`` is the output's node (``tape/node.py``), ``ans`` the output itself when a rule
reads its values (else its node), ``inputs`` per input the tensor when a rule reads its
values, else its node (constants as they are), and ``where`` the user's source line
when a tape keeps them. ``_record`` is the general case; ``_record1`` and ``_record2``
are the same for one- and two-input ops on one tape, the hot path of small models
(about 30% of their recording); ``_record_checked`` adds anomaly checks and source lines.
"""

from __future__ import annotations

import weakref

import numpy as np

from ..node import Node, node
from ..node import plan as node_plan
from ..tape import _local, format_line, user_line
from ..tensor import Tensor

_new = object.__new__


def _record(stack, op, args, arrays, y, params, where=None):
    """Append one entry to every active tape that watches an input of the op (only the
    rules of watched inputs will run: the entry keeps what those read)."""
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
    entry = _entry(op, args, arrays, y, params, mask, where)
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


def _entry(op, args, arrays, y, params, mask, where=None):
    """The entry for one op: only the values the rules of the watched inputs read."""
    key = (mask, len(args))  # ops of any arity: a plan per number of inputs too
    keep_ans, keep = op.plans.get(key) or _plan(op, key, mask, len(args))
    inputs = []
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            if a._node is None:  # an input no tape watches: known by a node all the same
                a._node = node(a if a._mapped else a.data)
            inputs.append(a if keep[i] else a._node)
        else:
            inputs.append(arrays[i])
    out = y._node = node(y if y._mapped else y.data)
    if op.unread and params:
        params = _without_unread(op.unread, params)
    return (op, tuple(inputs), y if keep_ans else out, out, params, where)


def _plan(op, key, mask, count):
    """What ``op``'s entries keep when the inputs in ``mask`` need gradients, cached in
    ``op.plans`` under ``key``."""
    vjp = op.vjp
    plan = op.plans[key] = node_plan(vjp if type(vjp) is tuple else (),
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
    keep_ans, (keep_x,) = op.plans.get(1) or _plan(op, 1, 1, 1)
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
    keep_ans, (keep_a, keep_b) = op.plans.get(mask) or _plan(op, mask, mask, 2)
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
    keeping source lines also notes its outputs weakly, so that ``explain`` can compare
    values the user still holds, without keeping anything alive."""
    if _local.anomaly:
        _check_forward(op.name, y)
    lines = [tape for tape in stack if tape._keep_lines]
    where = user_line() if lines or _local.anomaly else None
    _record(stack, op, args, arrays, y, params, where)
    for tape in lines:
        if y._node in tape._watched:
            tape._outputs[y._node] = weakref.ref(y)


def _record1_checked(stack, op, x, y, params):
    return _record_checked(stack, op, (x,), (x.data,), y, params)


def _record2_checked(stack, op, a, b, ad, bd, y, params):
    return _record_checked(stack, op, (a, b), (ad, bd), y, params)


def _check_forward(name, y):
    data = y.data
    if data.dtype.kind == "f" and not bool(np.isfinite(data).all()):
        bad = "nan" if bool(np.isnan(data).any()) else "inf"
        raise FloatingPointError(
            f"detect_anomaly: the forward of '{name}' produced {bad} at {format_line(user_line())}"
        )
