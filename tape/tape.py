"""The gradient tape: a thread-local stack of active tapes, their entries, and replay.

Recording: every op on watched tensors appends one entry, a tuple
``(op, inputs, ans, out, params, where)``, to each active tape that watches one of its
inputs (``ops/core.py``). Entries keep tensors' nodes (``node.py``) and only the values
the gradient rules read. A tuple is the cheapest record Python has.
Replay (``replay.py``): ``gradient`` walks the entries in reverse in one loop, calls
each op's vector-Jacobian rules, fits each result to its input (the one place where
broadcasting is undone) and accumulates gradients in a dict keyed by node.

Two replay modes share that loop. With no tape recording around the call, rules run
on raw arrays (the fast path). When another tape is recording, rules run on Tensors,
so that tape records the gradient computation and higher derivatives follow.
"""

from __future__ import annotations

import os
import sys
import threading

from . import backend
from .node import node_of
from .tensor import Tensor, wrap


class _ThreadState(threading.local):
    def __init__(self):
        self.stack = []  # active (recording) tapes, innermost last
        self.anomaly = 0  # depth of detect_anomaly() blocks
        self.vmap_level = 0  # depth of func.vmap calls (tape/batching.py)


_local = _ThreadState()


def user_line():
    """``(filename, lineno)`` of the innermost frame outside the tape package."""
    frame = sys._getframe(1)
    package = __file__.rsplit("/", 1)[0]
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame = frame.f_back
    if frame is None:
        return None
    return (frame.f_code.co_filename, frame.f_lineno)


def format_line(where, with_code=False) -> str:
    """'file:line' (and the code on that line) for a ``user_line()`` result."""
    if where is None:
        return "<unknown line>"
    text = f"{where[0]}:{where[1]}"
    if with_code:
        import linecache

        code = linecache.getline(where[0], where[1]).strip()
        text += f": {code}" if code else ""
    return text


def _flatten(structure, out):
    """The leaves of a nested list/tuple/dict structure, in order."""
    if _tensor_list(structure):  # a model's parameters: the common case, without recursion
        out.extend(structure)
        return out
    if isinstance(structure, dict):
        for v in structure.values():
            _flatten(v, out)
    elif isinstance(structure, (list, tuple)):
        for v in structure:
            _flatten(v, out)
    else:
        out.append(structure)
    return out


def _unflatten(structure, leaves):
    """``structure`` with its leaves replaced, in order, by those of the iterator."""
    if _tensor_list(structure):
        return [next(leaves) for _ in structure]
    if isinstance(structure, dict):
        return {k: _unflatten(v, leaves) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(_unflatten(v, leaves) for v in structure)
    return next(leaves)


def _tensor_list(structure):
    """Whether ``structure`` is a plain list of tensors (its own leaves)."""
    return type(structure) is list and all(isinstance(x, Tensor) for x in structure)


class Tape:
    """Records operations on watched tensors so that gradients can be computed.

    >>> x = tape.tensor(3.0, requires_grad=True)
    >>> with tape.Tape() as t:
    ...     y = x * x
    >>> t.gradient(y, x).item()
    6.0

    A tape watches tensors created with ``requires_grad=True`` (unless
    ``watch_accessed_variables=False``), tensors passed to ``watch``, and every output
    of an op it recorded. A non-persistent tape computes gradients once.
    """

    def __init__(self, persistent=False, watch_accessed_variables=True, source_lines=False,
                 check_broadcast=None):
        if check_broadcast is None:
            check_broadcast = os.environ.get("TAPE_CHECK_BROADCAST", "") not in ("", "0")
        self.persistent = persistent
        self.check_broadcast = bool(check_broadcast)
        self._watch_accessed = watch_accessed_variables
        self._keep_lines = bool(source_lines or check_broadcast)  # costs ~1 us per op
        self._entries = []
        self._watched = set()  # nodes of watched tensors (variables and recorded outputs)
        self._variables = {}  # node -> tensor watched as a variable (kept alive, in order)
        self._pauses = 0  # times recording was paused (stop_recording, no_grad)
        self._breaks = []  # non-differentiable ops applied to watched tensors (for explain)
        self._outputs = {}  # node -> weak reference to the tensor (source_lines only)
        self._spent = False
        self._level = 0  # the vmap depth it was entered at (set by __enter__)

    # ----- recording -----
    def __enter__(self):
        self._check_not_spent("record")
        if any(t is self for t in _local.stack):
            raise RuntimeError("this tape is already recording (a `with` of the same tape inside "
                               "its own `with`): every op would be recorded twice; use one "
                               "`with`, or a second tape for higher-order gradients")
        self._level = _local.vmap_level  # it records the ops of examples at this vmap depth
        _local.stack.append(self)
        if self._keep_lines:
            from .ops import core

            core.debug_mode(True)
        return self

    def __exit__(self, *exc):
        self._pop()
        if self._keep_lines:
            from .ops import core

            core.debug_mode(False)
        return False

    def __repr__(self):
        return self.summary()

    def _pop(self):
        stack = _local.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self:
                del stack[i]
                return

    def _watch_one(self, x):
        n = node_of(x)
        self._watched.add(n)
        self._variables[n] = x

    def _watch_variable(self, x):
        """Watch a ``requires_grad`` tensor on first use, if this tape does that."""
        if self._watch_accessed:
            self._watch_one(x)
            return True
        return False

    def watch(self, tensor):
        """Watch a tensor, or every tensor in a (nested) list, tuple or dict."""
        for x in _flatten(tensor, []):
            if not isinstance(x, Tensor):
                raise TypeError(
                    f"Tape.watch expects tape.Tensor objects, got {type(x).__name__}; "
                    "wrap arrays with tape.tensor(...) first"
                )
            self._watch_one(x)

    def watched_variables(self):
        """The tensors this tape watches as variables, in the order they were first watched."""
        return tuple(self._variables.values())

    def reset(self):
        """Forget everything recorded and watched so far (recording goes on if active)."""
        self._entries = []
        self._watched = set()
        self._variables = {}
        self._breaks = []
        self._outputs = {}
        self._spent = False

    def stop_recording(self):
        """Context manager: ops inside it are not recorded on this tape."""
        return _Paused(self)

    # ----- looking at the tape -----
    def summary(self) -> str:
        """A table of the entries: op, shapes and dtypes, bytes kept alive, source line."""
        from .inspect import summary

        return summary(self)

    def memory(self) -> dict:
        """Bytes the tape keeps alive for its gradients: ``{"total": n, op name: n, ...}``."""
        from .inspect import memory

        return memory(self)

    def to_dot(self, target=None, names=None) -> str:
        """Graphviz DOT text of the tape; ``names`` maps variable names to tensors
        (e.g. ``locals()``). Long runs of repeated blocks are collapsed."""
        from .inspect import to_dot

        return to_dot(self, target, names)

    def draw(self, path, target=None, names=None):
        """Render the tape to ``path`` (.png or .svg) with Graphviz; returns the path."""
        from .inspect import draw

        return draw(self, path, target, names)

    def explain(self, target, source) -> str:
        """Why ``source`` gets (or does not get) a gradient from ``target``, in words."""
        from .explain import explain

        return explain(self, target, source)

    def _check_not_spent(self, what):
        if self._spent:
            raise RuntimeError(
                f"cannot {what}: this tape is not persistent and has already computed its "
                "gradients (its entries are released). Use tape.Tape(persistent=True) to call "
                "gradient() or jacobian() more than once."
            )

    # ----- replay -----
    def gradient(self, target, sources, output_gradients=None, unconnected_gradients="none"):
        """Gradients of ``target`` (a tensor or list of tensors) with respect to ``sources``.

        ``sources`` may be a tensor or a nested list/tuple/dict of tensors; the result has
        the same structure. A non-scalar target is differentiated as its sum unless
        ``output_gradients`` gives the vector of the vector-Jacobian product.
        ``unconnected_gradients`` is "none", "zero" or "raise".
        """
        from . import replay

        self._check_not_spent("compute gradients")
        if unconnected_gradients not in ("none", "zero", "raise"):
            raise ValueError(
                f"unconnected_gradients must be 'none', 'zero' or 'raise', "
                f"got {unconnected_gradients!r}"
            )
        targets = target if isinstance(target, (list, tuple)) else [target]
        if output_gradients is None:
            seeds = [None] * len(targets)
        else:
            seeds = output_gradients if isinstance(target, (list, tuple)) else [output_gradients]
            if not isinstance(seeds, (list, tuple)):
                raise TypeError(
                    f"output_gradients must be a list with one entry per target "
                    f"({len(targets)} targets), got {type(seeds).__name__}"
                )
            if len(seeds) != len(targets):
                raise ValueError(
                    f"output_gradients has {len(seeds)} entries for {len(targets)} targets"
                )
        flat_sources = _flatten(sources, [])
        with self._replaying():
            grads = replay.gradients(self, targets, seeds, flat_sources)
            out = [self._finish(g, s, unconnected_gradients, targets) for g, s in
                   zip(grads, flat_sources)]
        return _unflatten(sources, iter(out))

    def jacobian(self, target, sources, unconnected_gradients="none"):
        """The full Jacobian, of shape ``target.shape + source.shape``, for each source.

        One vectorized replay with a stacked batch of one-hot cotangents.
        """
        from . import replay

        self._check_not_spent("compute a jacobian")
        flat_sources = _flatten(sources, [])
        with self._replaying():
            jacs = replay.jacobians(self, target, flat_sources, batch=False)
            out = [self._finish(j, s, unconnected_gradients, [target], target.shape)
                   for j, s in zip(jacs, flat_sources)]
        return _unflatten(sources, iter(out))

    def batch_jacobian(self, target, source, unconnected_gradients="none"):
        """Per-example Jacobian: shape ``(B,) + target.shape[1:] + source.shape[1:]``.

        Assumes example ``b`` of the target depends only on example ``b`` of the source.
        """
        from . import replay

        self._check_not_spent("compute a jacobian")
        for name, t in (("target", target), ("source", source)):
            if not isinstance(t, Tensor) or t.ndim == 0:
                raise ValueError(f"batch_jacobian needs a {name} with a leading batch axis, got "
                                 f"{_describe(t)}")
        if source.shape[0] != target.shape[0]:
            raise ValueError(f"batch_jacobian needs source and target with the same batch size, "
                             f"got source shape {source.shape} and target shape {target.shape}")
        with self._replaying():
            (jac,) = replay.jacobians(self, target, [source], batch=True)
            lead = target.shape
            return self._finish(jac, source, unconnected_gradients, [target], lead, batch=True)

    def _replaying(self):
        return _Replaying(self)

    def _finish(self, grad, source, unconnected, targets, lead=(), batch=False):
        """The user-facing gradient of one source: a Tensor, None, zeros, or an error."""
        if grad is not None:
            return grad if isinstance(grad, Tensor) else wrap(grad)
        if unconnected == "zero":
            shape = lead + source.shape[1:] if batch else lead + source.shape
            return wrap(backend.xp(source.data).zeros(shape, source.dtype))
        if unconnected == "raise":
            from .explain import explain

            raise ValueError(explain(self, targets, source))
        return None


class _Paused:
    """``with t.stop_recording():`` takes the tape off the active stack for a while."""

    def __init__(self, tape):
        self.tape = tape

    def __enter__(self):
        stack = _local.stack
        self.index = next((i for i, t in enumerate(stack) if t is self.tape), None)
        if self.index is None:
            raise RuntimeError("stop_recording() needs the tape to be recording (inside its with)")
        del stack[self.index]
        self.tape._pauses += 1

    def __exit__(self, *exc):
        stack = _local.stack
        stack.insert(min(self.index, len(stack)), self.tape)
        return False


def _describe(x):
    return (f"a tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor)
            else f"a {type(x).__name__}")


class _Replaying:
    """Around a gradient call: a non-persistent tape stops recording itself (as in
    TensorFlow) and releases its entries afterwards."""

    def __init__(self, tape):
        self.tape = tape

    def __enter__(self):
        if not self.tape.persistent:
            self.tape._pop()

    def __exit__(self, *exc):
        if not self.tape.persistent:
            self.tape._entries = []
            self.tape._spent = True
        return False
