"""What a tape keeps of the tensors it recorded: a ``Node`` each, and only the values
that the gradient rules read.

A tensor's node is its identity on tapes: gradients are keyed by it, and it holds the
tensor's shape and dtype, never its values. So a tape does not keep a tensor alive to
know it; an intermediate result the user drops is freed unless a rule needs its values.

Which values a rule needs is read from the rule's own code, as PyTorch's
derivatives.yaml saves only what a formula names: a rule ``lambda g, ans, a, b: g``
(add) needs nothing, ``lambda g, ans, x: g * ans`` (exp) its output, and a rule that
reads only ``x.shape``, ``x.dtype``, ``x.ndim`` or ``x.size`` gets ``x``'s node, which
has those. An entry then keeps an input's values only when the rule of an input that
needs a gradient reads them (``x * 2.0`` keeps nothing: the constant needs no gradient).
Rules whose code cannot be read (not Python functions) keep everything.
"""

from __future__ import annotations

import dis
import math

_new = object.__new__
META = frozenset({"shape", "dtype", "ndim", "size"})  # what a Node answers
_READ = {"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF", "LOAD_CLOSURE", "LOAD_FAST_AND_CLEAR",
         "LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW", "LOAD_FAST_BORROW_LOAD_FAST_BORROW"}


class Node:
    """A tensor as a tape knows it: an identity (gradients are keyed by it), a shape and
    a dtype. Rules that read only ``.shape``/``.dtype``/``.ndim``/``.size`` of an input
    or of the output get its node in place of its values."""

    __slots__ = ("shape", "dtype")

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: math.prod(self.shape))

    def __repr__(self):
        return f"Node({tuple(self.shape)}, {self.dtype})"


def node(array):
    """A new node for a tensor holding ``array``."""
    n = _new(Node)
    n.shape = array.shape
    n.dtype = array.dtype
    return n


def node_of(tensor):
    """``tensor``'s node, made on first need (and again if its array was replaced by one
    of another shape or dtype, as ``load_state_dict(assign=True)`` does)."""
    n = tensor._node
    data = tensor if tensor._mapped else tensor.data  # Batched: one example's shape
    if n is None or n.shape != data.shape or n.dtype is not data.dtype and n.dtype != data.dtype:
        n = tensor._node = node(data)
    return n


def key_of(x):
    """The node an entry's input stands for: its own, a tensor's, or None (a constant)."""
    if type(x) is Node:
        return x
    return getattr(x, "_node", None)  # a Tensor, or None for numbers and raw arrays


# ----- reading a rule's code -----
def reads(rule):
    """``{parameter name: "values" | "meta"}`` for the parameters ``rule`` reads ("meta":
    only their shape, dtype, ndim or size), or None when its code cannot be read."""
    code = getattr(rule, "__code__", None)
    if code is None:
        return None
    out = {name: "values" for name in code.co_cellvars}  # read by an inner function
    instructions = list(dis.get_instructions(code))
    for k, ins in enumerate(instructions):
        if ins.opname not in _READ:
            continue
        names = ins.argval if isinstance(ins.argval, tuple) else (ins.argval,)
        after = instructions[k + 1] if k + 1 < len(instructions) else None
        meta = (len(names) == 1 and after is not None and after.opname == "LOAD_ATTR"
                and after.argval in META)
        for name in names:
            if not meta:
                out[name] = "values"
            else:
                out.setdefault(name, "meta")
    return out


def signature(rule, arity):
    """``(ans name, input names, params name or None)`` of ``rule(g, ans, *inputs,
    **params)`` with ``arity`` inputs (None: any number, as joint rules take)."""
    code = rule.__code__
    names = code.co_varnames
    positional = names[: code.co_argcount]
    ans = positional[1] if len(positional) > 1 else None
    inputs = list(positional[2:]) if arity is None else list(positional[2: 2 + arity])
    extra = code.co_argcount + code.co_kwonlyargcount
    varargs = names[extra] if code.co_flags & 0x04 else None  # CO_VARARGS
    return ans, inputs, varargs


def needs(rule, arity):
    """What ``rule`` needs kept: ``(ans, inputs)`` with ``inputs`` a function of the input
    index giving True when that input's values are read."""
    found = reads(rule)
    if found is None:
        return True, lambda i: True
    ans, inputs, varargs = signature(rule, arity)
    keep_ans = found.get(ans) == "values"
    rest = found.get(varargs) == "values" if varargs else False
    values = [found.get(name) == "values" for name in inputs]
    return keep_ans, lambda i: values[i] if i < len(values) else rest


def plan(rules, joint, mask, count):
    """``(keep the output, keep each input)`` for an entry whose inputs with bit ``i`` set
    in ``mask`` need a gradient: the union of what their rules read."""
    keep_ans, keep = False, [False] * count
    chosen = [joint] if joint is not None else [r for i, r in enumerate(rules)
                                                if mask >> i & 1 and r is not None]
    for rule in chosen:
        ans, inputs = needs(rule, None if joint is not None else len(rules))
        keep_ans = keep_ans or ans
        keep = [k or inputs(i) for i, k in enumerate(keep)]
    return keep_ans, tuple(keep)


def unread_params(rules, joint):
    """Names of keyword parameters no rule reads (their values are not kept), or an empty
    set when some rule cannot be read or takes ``**params`` as a whole."""
    first = 2 + len(rules)  # g, ans and the inputs come before the params
    chosen = [joint] if joint is not None else [r for r in rules if r is not None]
    declared, read = set(), set()
    for rule in chosen:
        found = reads(rule)
        if found is None or rule.__code__.co_flags & 0x08:  # CO_VARKEYWORDS
            return frozenset()
        code = rule.__code__
        start = code.co_argcount if joint is not None else first
        names = code.co_varnames[start: code.co_argcount + code.co_kwonlyargcount]
        declared.update(names)
        read.update(found)
    return frozenset(declared - read)
