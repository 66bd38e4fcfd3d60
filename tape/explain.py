"""Why does a source get no gradient? Plain-language answers from the tape's entries.

A tape is a list of entries, so the path from a source to a target can be followed
entry by entry, and the place where it breaks can be named: a source never watched, a
non-differentiable op (comparison, argmax, integer cast), a value that left the tape
through numpy (``.numpy()``, ``.data``, ``detach``), ops run while recording was paused
(``stop_recording``, ``no_grad``), or no connection at all.
"""

from __future__ import annotations

import numpy as np

from .tape import format_line
from .tensor import Tensor


def _describe(x):
    return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"


def _entry_text(tape, k):
    op, _, _, out, _, where = tape._entries[k]
    text = f"entry {k} ('{op.name}', output shape {tuple(out.shape)})"
    return text + (f" created at {format_line(where, with_code=True)}" if where else "")


def _breaks_differentiability(entry):
    op, _, _, out, _, _ = entry
    return op.name == "cast" and out.dtype.kind != "f"  # a cast to an integer type


def _shares_memory(a, b):
    try:
        return np.shares_memory(a, b)
    except Exception:  # cupy arrays, or numpy giving up on a complex overlap
        return a is b


def explain(tape, target, source) -> str:
    """Why ``source`` gets (or does not get) a gradient from ``target``."""
    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    name = _describe(source)
    if id(source) not in tape._watched:
        paused = ""
        if tape._pauses and source.requires_grad:
            paused = (f" It has requires_grad=True, but recording was paused {tape._pauses} "
                      "time(s) (t.stop_recording() or tape.no_grad()): ops inside those blocks "
                      "are not recorded and watch nothing.")
        return (
            f"The source ({name}) was never watched by this tape, so it gets no gradient. "
            "Create it with requires_grad=True, or call t.watch(x) inside the tape's "
            "with-block before the first op that uses it." + paused
        )
    entries = tape._entries
    # Forward: every tensor that depends on the source, through any entry.
    from_source = {id(source)}
    for op, inputs, _, out, _, _ in entries:
        if any(id(a) in from_source for a in inputs):
            from_source.add(id(out))
    # Backward: every tensor the targets depend on, and the entries on those paths.
    needed = {id(t) for t in targets}
    produced = {id(e[3]) for e in entries}
    breaks, constants = [], []
    for k in range(len(entries) - 1, -1, -1):
        op, inputs, _, out, _, _ = entries[k]
        if id(out) not in needed:
            continue
        if any(id(a) in from_source for a in inputs) and _breaks_differentiability(entries[k]):
            breaks.append(k)
        for a in inputs:
            if isinstance(a, Tensor):
                needed.add(id(a))
                if id(a) not in produced and id(a) not in tape._watched:
                    constants.append(a)
    if id(source) in needed and not breaks:
        return f"The target depends on the source ({name}) through differentiable ops."
    if breaks:
        k = breaks[-1]  # the first break along the path, in execution order
        return (
            f"The source ({name}) is watched, but the path to the target goes through "
            f"{_entry_text(tape, k)}, which is not differentiable (a comparison, argmax, "
            "or cast to an integer type); no gradient flows through it."
        )
    cut = [b for b in tape._breaks if any(i in from_source for i in b[1])]
    if cut:
        op_name, _, shape, where = cut[-1]
        at = f" at {format_line(where, with_code=True)}" if where else ""
        return (
            f"The source ({name}) is watched, but the path from it ends at '{op_name}'{at}, "
            f"which gave a tensor of shape {shape}: comparisons and argmax/argmin are not "
            "differentiable, so the tape does not follow them and no gradient flows back."
        )
    if not any(id(t) in produced or id(t) == id(source) for t in targets):
        paused = (f" Recording was paused {tape._pauses} time(s) (stop_recording or no_grad)."
                  if tape._pauses else "")
        return (
            f"The source ({name}) is watched, but the target was not recorded by this tape: it "
            "was computed outside the tape's with-block, under tape.no_grad() or "
            "t.stop_recording(), or only from tensors the tape does not watch (such as "
            "values taken out with .detach(), .data or .numpy())." + paused
        )
    derived = [e[3] for e in entries if id(e[3]) in from_source]
    for c in constants:
        if any(_shares_memory(c.data, d.data) for d in [source] + derived):
            return (
                f"The source ({name}) is watched, but the target uses a {_describe(c)} that "
                "holds the source's values outside the tape (made with .detach(), .data or "
                ".numpy()), so the tape cannot see the connection. Use tape ops on the "
                "tensor itself instead."
            )
    hint = (f" Recording was paused {tape._pauses} time(s) (stop_recording or no_grad), "
            "which would also cut the path." if tape._pauses else "")
    return (
        f"The source ({name}) is watched, but it is not connected to the target: no recorded "
        "op leads from it to the target. If the target was computed from it through numpy "
        "(x.numpy(), x.data) or a new tape.tensor(...), the tape could not see that." + hint
    )
