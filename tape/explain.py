"""Why does a source get no gradient? Plain-language answers from the tape's entries.

A tape is a list of entries, so the path from a source to a target can be followed
entry by entry, and the place where it breaks can be named:

- the source was never watched;
- the path goes through an op that is not differentiable: an integer cast (an entry),
  or a comparison or argmax (never entries: the tape notes them in ``tape._breaks``);
- the path leaves the tape through numpy (``.detach()``, ``.data``, ``.numpy()``);
- the path was computed while recording was paused (``stop_recording``, ``no_grad``);
- or there is simply no path.

Entries are named by index and op, with the user's source line when the tape was
created with ``source_lines=True``.
"""

from __future__ import annotations

import numpy as np

from .node import Node, key_of
from .ops.record import ANS, INPUTS, OUT, PARAMS
from .tape import format_line
from .tensor import Tensor

_PAUSED = "t.stop_recording() or tape.no_grad()"
_MAX_VALUE_CHECKS = 1000  # array comparisons spent looking for copies of the source


def _describe(x):
    return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"


def _at(where):
    return f", created at {format_line(where, with_code=True)}" if where else ""


def _entry_text(tape, k):
    op, _, _, out, _, where = tape._entries[k]
    return f"entry {k} ('{op.name}' -> {tuple(out.shape)} {out.dtype}{_at(where)})"


def _passes_gradient(entry, i):
    """Whether ``entry``'s rule sends a gradient to its input ``i``."""
    op, _, _, out, _, _ = entry
    if out.dtype.kind not in "fc":  # an integer or boolean output: no gradient flows back
        return False
    vjp = op.vjp
    return not (type(vjp) is tuple and (i >= len(vjp) or vjp[i] is None))


def _shares_memory(a, b):
    try:
        return bool(np.may_share_memory(a, b))  # bounds only: never too hard to answer
    except TypeError:  # cupy arrays
        return a is b


def _paused(tape):
    return f"recording was paused {tape._pauses} time(s) ({_PAUSED})" if tape._pauses else ""


# ----- the paths from the source and to the target -----
class _Paths:
    """One forward pass (what depends on the source) and one backward pass (what the
    targets depend on, through any edge and through edges that carry a gradient).
    Tensors are followed by their nodes; values only where the tape kept them."""

    def __init__(self, tape, targets, source):
        entries = tape._entries
        self.from_source = {source._node}
        for entry in entries:
            if any(key_of(a) in self.from_source for a in entry[INPUTS]):
                self.from_source.add(entry[OUT])
        self.produced = {e[OUT] for e in entries}
        self.needed = {t._node for t in targets}  # through any edge
        self.flowing = set(self.needed)  # through edges that carry a gradient
        self.cuts = []  # entries where the gradient stops on a path from the source
        self.constants = []  # (k, value): unrecorded inputs on the target's paths
        for k in range(len(entries) - 1, -1, -1):
            entry = entries[k]
            out = entry[OUT]
            if out not in self.needed:
                continue
            for i, a in enumerate(entry[INPUTS]):
                n = key_of(a)
                if n is None:
                    if hasattr(a, "shape") and hasattr(a, "dtype"):
                        self.constants.append((k, a))  # a raw array, e.g. x.data
                    continue
                self.needed.add(n)
                if n not in self.produced and n not in tape._watched:
                    self.constants.append((k, a))
                if out in self.flowing:
                    if _passes_gradient(entry, i):
                        self.flowing.add(n)
                    elif n in self.from_source:
                        self.cuts.append(k)
            for p in entry[PARAMS].values():  # arrays among the params, e.g. an index
                for a in p if isinstance(p, (list, tuple)) else (p,):
                    if isinstance(a, (Tensor, np.ndarray)):
                        self.constants.append((k, a))
        kept = {}  # tensors derived from the source whose values are still there: held
        for entry in entries:  # by the tape, or by the user (source_lines tapes note them)
            for x in (entry[ANS],) + entry[INPUTS]:
                if isinstance(x, Tensor) and x._node in self.from_source:
                    kept.setdefault(x._node, x)
        for n, ref in tape._outputs.items():
            x = ref()
            if x is not None and n in self.from_source:
                kept.setdefault(n, x)
        kept.pop(source._node, None)
        self.derived = [source] + list(kept.values())


def _copy_of_source(paths, value):
    """A derived tensor whose memory or values ``value`` holds (a leak through numpy).
    Values are compared only when they vary: any two zero tensors are equal."""
    if isinstance(value, Node):  # the tape kept only its shape and dtype
        return None
    data = value.data if isinstance(value, Tensor) else value
    checks = 0 if data.size > 1 and bool((data != data.reshape(-1)[0]).any()) else None
    for d in paths.derived:
        if _shares_memory(data, d.data):
            return d
        if (checks is not None and checks < _MAX_VALUE_CHECKS
                and d.shape == data.shape and d.dtype == data.dtype):
            checks += 1
            if type(data) is type(d.data) and bool((data == d.data).all()):
                return d
    return None


def _kind(value):
    return "tensor" if isinstance(value, (Tensor, Node)) else "numpy array"


# ----- the explanation -----
def explain(tape, target, source) -> str:
    """Why ``source`` gets (or does not get) a gradient from ``target``."""
    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    name = f"The source ({_describe(source)})"
    if tape._spent:
        return ("This tape is not persistent and released its entries after gradient(), so "
                "it cannot explain anything any more. Create it with "
                "tape.Tape(persistent=True) to call explain() after gradient().")
    if source._node not in tape._watched:
        return _never_watched(tape, source, name)
    paths = _Paths(tape, targets, source)
    if source._node in paths.flowing:
        return f"{name} is connected: the target depends on it through differentiable ops."
    if source._node in paths.needed:  # connected, but every path crosses a cut
        k = min(paths.cuts)
        return (f"{name} is watched, but the path to the target goes through "
                f"{_entry_text(tape, k)}, which is not differentiable (an integer cast, or an "
                "op that gives no gradient to that input); no gradient flows back through it.")
    if not any(t._node in paths.produced for t in targets):
        return _target_not_recorded(tape, name)
    for k, value in paths.constants:
        d = _copy_of_source(paths, value)
        if d is not None:
            what = "the source" if d is source else "a tensor computed from the source"
            return (f"{name} is watched, but {_entry_text(tape, k)} takes a {_kind(value)} of "
                    f"shape {tuple(value.shape)} that holds the values of {what} outside the "
                    "tape (made with .detach(), .data or .numpy()), so the tape cannot see the "
                    "connection. Use tape ops on the tensor itself instead.")
    breaks = [b for b in tape._breaks if any(i in paths.from_source for i in b[1])]
    if breaks:
        return _comparison(tape, name, paths, breaks[0])
    floats = [(k, v) for k, v in paths.constants if v.dtype.kind in "fc"]
    if tape._pauses and floats:
        k, value = floats[0]
        return (f"{name} is watched, but the path breaks at {_entry_text(tape, k)}: it takes a "
                f"{_kind(value)} of shape {tuple(value.shape)} that this tape did not record. "
                f"{_paused(tape).capitalize()}; if that value was computed from the source "
                "inside such a block, the path is cut there. Compute it outside the block.")
    users = [k for k, e in enumerate(tape._entries)
             if any(key_of(a) is source._node for a in e[INPUTS])]
    if not users:
        used = " No recorded op uses it."
    elif len(users) == 1:
        used = f" It is used by {_entry_text(tape, users[0])}, which does not lead to the target."
    else:
        used = (f" It is used by {_entry_text(tape, users[0])} and {len(users) - 1} more "
                "entries, none of which leads to the target.")
    hint = f" Also, {_paused(tape)}, which would cut a path too." if tape._pauses else ""
    return (f"{name} is watched, but it is not connected to the target: no recorded op leads "
            f"from it to the target.{used} If the target was computed from it through numpy "
            "(x.numpy(), x.data) or a new tape.tensor(...), the tape could not see that." + hint)


def _never_watched(tape, source, name):
    how = ("Create it with requires_grad=True, or call t.watch(x) inside the tape's with-block "
           "before the first op that uses it.")
    if not source.requires_grad:
        return f"{name} was never watched by this tape, so it gets no gradient. {how}"
    if not tape._watch_accessed:
        return (f"{name} was never watched by this tape: it has requires_grad=True, but the "
                "tape was created with watch_accessed_variables=False. Call t.watch(x) inside "
                "the tape's with-block before the first op that uses it.")
    paused = f" Here {_paused(tape)}." if tape._pauses else ""
    return (f"{name} was never watched by this tape: it has requires_grad=True, but no op "
            "recorded on this tape used it. Ops that are not recorded: comparisons and "
            "argmax/argmin (not differentiable), numpy on x.numpy() or x.data, ops outside "
            f"the tape's with-block, and ops under {_PAUSED}.{paused}")


def _target_not_recorded(tape, name):
    if tape._pauses:
        return (f"{name} is watched, but the target was not recorded by this tape: "
                f"{_paused(tape)}, and ops inside those blocks are not recorded, so a target "
                "computed there has no path back to the source. Compute it outside the block "
                "(or it was computed outside the tape's with-block, or from values taken out "
                "with .detach(), .data or .numpy()).")
    return (f"{name} is watched, but the target was not recorded by this tape: it was "
            "computed outside the tape's with-block, or only from tensors the tape does not "
            "watch (such as values taken out with .detach(), .data or .numpy()).")


def _comparison(tape, name, paths, brk):
    op_name, _, shape, where = brk
    at = f" at {format_line(where, with_code=True)}" if where else ""
    enters = ""
    for k, value in paths.constants:
        if value.dtype.kind not in "fc" and tuple(value.shape) == tuple(shape):
            enters = (f" Its result (shape {tuple(shape)}, dtype {value.dtype}) enters the "
                      f"target's path as a constant at {_entry_text(tape, k)}.")
            break
    return (f"{name} is watched, but the path from it ends at '{op_name}'{at}, which gave a "
            f"result of shape {tuple(shape)}: comparisons and argmax/argmin are not "
            "differentiable, so the tape does not record them and no gradient flows back."
            + enters)
