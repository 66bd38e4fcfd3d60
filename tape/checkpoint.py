"""Gradient checkpointing: ``checkpoint(fn, *args)`` keeps fn's inputs, not its insides.

The tapes get one entry for the whole call (fn's tensor inputs and the parameters it
uses, then its output); that entry's rule runs ``fn`` again under a tape of its own to
differentiate it, as ``torch.utils.checkpoint`` (non-reentrant) and TensorFlow's
``recompute_grad`` do. Memory for time: one more forward of each checkpointed block.

The rule runs on the original tensors (the entry keeps them, as a plain tape keeps a
layer's input), so closed-over parameters and tensors passed as arguments are one and
the same to it; the replay only tells it whether to work on arrays or on tensors (under
a recording tape, for higher order), and ``replay.run`` is told the same by the stack.
"""

from __future__ import annotations

import numpy as np

from . import backend, replay
from .creation import generator
from .node import node_of
from .ops.core import Op, lead_axes
from .ops.elementwise import cast
from .ops.shape import reshape
from .tape import Tape, _flatten, _local
from .tensor import Tensor


def checkpoint(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, recorded as one entry that keeps only fn's inputs; the
    gradient runs ``fn`` again (with the random state it first saw, so dropout draws
    the same mask) to differentiate it.

    ``fn`` returns a tensor, or a tuple or list of tensors. Its parameters get their
    gradients whether ``fn`` is a Module or closes over them: they are the tensors with
    ``requires_grad=True`` it uses. Other tensors it closes over (results of earlier
    ops) are constants to it: pass them as arguments. Arguments that are not tensors
    are passed through, as are keyword arguments. Inside ``func.vmap`` it is a plain call.

    >>> with tape.Tape() as t:
    ...     h = tape.checkpoint(block, x)   # block's activations are not kept
    ...     loss = head(h).sum()
    >>> grads = t.gradient(loss, model.parameters())
    """
    if not callable(fn):
        raise TypeError(f"checkpoint: fn must be callable (a function or a Module), got "
                        f"{type(fn).__name__}")
    stack = _local.stack
    if not stack or _local.vmap_level:  # nothing records, or inside vmap: a plain call
        # (under vmap fn's ops are recorded one by one: correct gradients, no saving)
        result = fn(*args, **kwargs)
        _outputs(fn, result)
        return result
    rng = _rng_state()
    probe = _Discovery()
    _local.stack = [probe]  # fn's ops reach no tape but the probe, which keeps nothing
    try:
        result = fn(*args, **kwargs)
    finally:
        _local.stack = stack
    outputs = _outputs(fn, result)
    given = [x for x in _flatten((args, kwargs), []) if isinstance(x, Tensor)]
    tensors = _unique(given + list(probe.watched_variables()))
    needed = tuple(_watched(x, stack) for x in tensors)
    layout, value = _pack(outputs, result)
    if not any(needed) or value is None:  # no gradient can flow through fn
        return result
    y = _recomputed(*tensors, value=value, fn=fn, args=args, kwargs=kwargs, tensors=tensors,
                    needed=needed, rng=rng, layout=layout)
    return _unpack(y, result, layout)


class _Discard(list):
    def append(self, entry):
        pass


class _Forget(set):
    def add(self, item):
        pass


class _Discovery(Tape):
    """A tape that keeps no entry and watches no result: it only notes the tensors with
    ``requires_grad=True`` that fn uses (its ``watched_variables()``), fn's parameters.
    So the first run of fn frees its activations as it goes, as under ``no_grad``."""

    def __init__(self):
        super().__init__(check_broadcast=False)
        self._entries = _Discard()
        self._watched = _Forget()


def _rng_state():
    """The library generator's state: a new dict at each read, so it needs none of the
    deep copy ``get_rng_state`` makes (a few percent of a small block's step)."""
    return generator().bit_generator.state


def _unique(tensors):
    """The tensors without repeats (by identity), in order."""
    seen, out = set(), []
    for x in tensors:
        if id(x) not in seen:
            seen.add(id(x))
            out.append(x)
    return tuple(out)


def _watched(x, stack):
    """Whether a tape of ``stack`` may want a gradient for ``x`` (the rule computes
    gradients for those inputs only)."""
    if x.dtype.kind != "f":
        return False
    return any((x._node is not None and x._node in t._watched)
               or (x.requires_grad and t._watch_accessed) for t in stack)


def _name(fn):
    return getattr(fn, "__name__", None) or type(fn).__name__


def _outputs(fn, result):
    """fn's outputs as a list of tensors, or a TypeError saying what fn returned."""
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    bad = next((i for i, x in enumerate(items) if not isinstance(x, Tensor)), None)
    if items and bad is None:
        return items
    if not isinstance(result, (tuple, list)):
        got = f"a {type(result).__name__}"
    elif not items:
        got = f"an empty {type(result).__name__}"
    else:
        got = (f"a {type(result).__name__} whose item {bad} is of type "
               f"{type(items[bad]).__name__}")
    raise TypeError(f"checkpoint: {_name(fn)} must return a tape.Tensor or a tuple or list "
                    f"of them, got {got}")


# ----- one entry, one output: a tuple of outputs travels packed in one flat array -----
def _pack(outputs, result):
    """``(layout, value)``: the entry's output value, and where each floating-point
    output lies in it: ``None`` for a single tensor, else ``(index, start, stop, shape,
    dtype)`` per floating output of a tuple or list, packed flat. ``value`` is None
    when no output is floating point (nothing to differentiate)."""
    if isinstance(result, Tensor):
        return None, result.data if result.dtype.kind == "f" else None
    floats = [(i, x) for i, x in enumerate(outputs) if x.dtype.kind == "f"]
    if not floats:
        return None, None
    dtype = np.result_type(*(x.dtype for _, x in floats))
    layout, start = [], 0
    for i, x in floats:
        layout.append((i, start, start + x.size, x.shape, x.dtype))
        start += x.size
    xp = backend.xp(floats[0][1].data)
    value = xp.concatenate([x.data.reshape(-1).astype(dtype, copy=False) for _, x in floats])
    return tuple(layout), value


def _unpack(y, result, layout):
    """fn's result with its floating outputs taken from the entry's output ``y`` (views:
    the ops that take them out keep nothing for the gradient)."""
    if layout is None:
        return y
    parts = list(result)
    for i, start, stop, shape, dtype in layout:
        part = y[start:stop].reshape(shape)
        parts[i] = part if part.dtype == dtype else part.astype(dtype)
    return tuple(parts) if isinstance(result, tuple) else parts


def _seeds(g, lead, outputs, layout):
    """The cotangent of each recomputed output, by its node, from the entry's ``g``
    (arrays or tensors, with the jacobian's ``lead`` axes)."""
    if layout is None:
        return {node_of(outputs[0]): g}
    seeds = {}
    for i, start, stop, shape, dtype in layout:
        gi = reshape(g[(Ellipsis, slice(start, stop))], shape=lead + tuple(shape))
        if gi.dtype != dtype:
            gi = cast(gi, dtype=dtype)
        n = node_of(outputs[i])
        seeds[n] = gi if n not in seeds else seeds[n] + gi  # one tensor returned twice
    return seeds


def _check_rerun(fn, outputs, layout, shape, dtype):
    """The second run of fn must give outputs of the shapes and dtypes of the first
    (``shape`` and ``dtype``: the entry's output's)."""
    if layout is None:
        before = [(tuple(shape), dtype)]
        after = [(tuple(outputs[0].shape), outputs[0].dtype)] if len(outputs) == 1 else []
    else:
        before = [(tuple(shape), dtype) for _, _, _, shape, dtype in layout]
        after = [(tuple(outputs[i].shape), outputs[i].dtype) if i < len(outputs) else None
                 for i, *_ in layout]
    if before != after:
        raise RuntimeError(
            f"checkpoint: {_name(fn)} gave other outputs when run again for the gradient "
            f"({after} instead of {before}); a checkpointed function must compute the same "
            "thing each time it runs")


# ----- the entry -----
def _recompute_vjp(g, ans, *xs, fn, args, kwargs, tensors, needed, rng, layout, value=None):
    """Run fn again on the kept inputs, under a tape watching those that need a
    gradient, and replay that tape from the entry's cotangent. On arrays at first
    order; on tensors under a recording tape, which then records all of it, so the
    gradient differentiates again. The caller's random state is left as it was."""
    lead = lead_axes(g, ans.ndim)
    sources = [x for x, need in zip(tensors, needed) if need]
    inner = Tape(watch_accessed_variables=False)
    caller_rng = _rng_state()
    generator().bit_generator.state = rng
    try:
        with inner:
            inner.watch(sources)
            result = fn(*args, **kwargs)
    finally:
        generator().bit_generator.state = caller_rng
    outputs = _outputs(fn, result)
    _check_rerun(fn, outputs, layout, ans.shape, ans.dtype)
    grads = iter(replay.run(inner, _seeds(g, lead, outputs, layout), sources, lead))
    return [next(grads) if need else None for need in needed]


def _forward(*arrays, value, **params):
    return value  # fn already ran: its result is the entry's output


_recomputed = Op("checkpoint", _forward, joint=_recompute_vjp)
