"""Replaying a tape in reverse: gradients, vector-Jacobian products and jacobians.

One loop over the entries, newest first. No recursion and no topological sort: the
tape is already in execution order. Gradients wait in a dict keyed by node (a tensor's
identity on the tape, ``node.py``) and are popped once their entry consumed them.

Every rule may receive a cotangent with extra leading batch axes (``lead``); that is
how ``jacobian`` replays once for all the rows of the Jacobian at once.
"""

from __future__ import annotations

import numpy as np

from . import backend
from .node import Node, key_of, node_of
from .ops.record import INPUTS, OUT
from .ops.elementwise import cast
from .ops.shape import reshape, sum_to, transpose
from .tape import _local, format_line
from .tensor import Tensor, wrap


def _check_floats(xs, role):
    """Each of ``xs`` a floating-point Tensor (one call for a model's parameters: the
    check runs on every ``gradient``), else a TypeError saying what to do."""
    for x in xs:
        if not (isinstance(x, Tensor) and x.data.dtype.kind == "f"):
            _check_float(x, role)


def _check_float(x, role):
    if not isinstance(x, Tensor):
        raise TypeError(
            f"gradient {role} must be tape.Tensor objects, got {type(x).__name__}; "
            "wrap arrays with tape.tensor(...)"
        )
    if x.dtype.kind != "f":
        what = ("with respect to an integer or boolean source" if role == "sources"
                else "an integer or boolean target")
        raise TypeError(
            f"cannot differentiate {what} (dtype {x.dtype}, shape {x.shape}); gradients are "
            "defined for floating-point tensors only. Create it with dtype=tape.float32 or "
            "cast it with .astype(tape.float32)."
        )


def _seed(target, seed):
    """The cotangent to start from for one target, as an array of the target's dtype."""
    xp = backend.xp(target.data)
    if seed is None:
        return xp.ones(target.shape, target.dtype)
    if isinstance(seed, Tensor) and seed._mapped:  # inside vmap: one example's cotangent
        if seed.shape != target.shape:
            raise ValueError(f"output_gradients of shape {seed.shape} does not match its "
                             f"target's shape {target.shape}")
        return seed if seed.dtype == target.dtype else cast(seed, dtype=target.dtype)
    array = seed.data if isinstance(seed, Tensor) else xp.asarray(seed)
    if array.shape != target.shape:
        raise ValueError(
            f"output_gradients of shape {array.shape} does not match its target's shape "
            f"{target.shape}"
        )
    if isinstance(seed, Tensor) and array.dtype == target.dtype:
        return seed  # keeps a watched seed connected for higher-order gradients
    return array.astype(target.dtype, copy=False)


def gradients(tape, targets, seeds, sources, on_final=None):
    """Raw gradients (or None) of the summed targets with respect to each source.

    ``on_final(i, grad)``, when given, is called once for each source ``i`` as soon as its
    gradient is final (after the entry that used it first in the forward pass; ``grad`` is
    None for a source no entry uses), while the replay goes on with the other entries:
    ``tape.distributed`` starts averaging gradients there."""
    _check_floats(sources, "sources")
    _check_floats(targets, "targets")
    grads = {}
    for t, s in zip(targets, seeds):
        g = _seed(t, s)
        n = node_of(t)
        prev = grads.get(n)
        grads[n] = g if prev is None else prev + g
    return run(tape, grads, sources, (), on_final)


def jacobians(tape, target, sources, batch):
    """Jacobians of ``target`` for each source in one vectorized replay."""
    _check_floats(sources, "sources")
    _check_float(target, "target")
    xp = backend.xp(target.data)
    shape = target.shape[1:] if batch else target.shape
    m = int(np.prod(shape, dtype=np.int64))
    eye = xp.eye(m, dtype=target.dtype).reshape((m,) + tuple(shape))
    if batch:
        if target.ndim == 0:
            raise ValueError("batch_jacobian needs a target with a leading batch axis")
        eye = xp.ascontiguousarray(xp.broadcast_to(eye[:, None], (m,) + target.shape))
    grads = {node_of(target): eye}
    raw = run(tape, grads, sources, (m,))
    out = []
    for g, s in zip(raw, sources):
        if g is None:
            out.append(None)
        elif batch:
            if s.ndim == 0 or s.shape[0] != target.shape[0]:
                raise ValueError(
                    f"batch_jacobian needs source and target with the same batch size, got "
                    f"source shape {s.shape} and target shape {target.shape}"
                )
            perm = (1, 0) + tuple(range(2, g.ndim))
            out.append(reshape(transpose(g, perm), shape=target.shape + s.shape[1:]))
        else:
            out.append(reshape(g, shape=target.shape + s.shape))
    return out


def run(tape, grads, sources, lead, on_final=None):
    """The reverse loop. ``grads`` maps the targets' nodes to their cotangents on entry.

    Per entry: take the gradient waiting for its output (none: nothing to do), call the
    rule of each input that leads back to a source, fit the result to that input and
    add it to the input's gradient. With no tape recording around the call, rules get
    raw arrays (an entry's kept tensors as their arrays); under a recording tape, they
    get the tensors themselves, so that tape records the gradient computation.

    The entries are replayed in segments, each ending where sources' gradients become
    final, and ``on_final`` (see ``gradients``) is told between segments; without it there
    is one segment, so the loop is the same either way."""
    entries = tape._entries
    n = len(entries)  # the loop may append to a persistent, recording tape: stop here
    wanted = {node_of(s) for s in sources}
    tensor_mode = bool(_local.stack or _local.vmap_level)  # under vmap: rules on Batched
    if tensor_mode:
        grads = {k: v if isinstance(v, Tensor) else wrap(v) for k, v in grads.items()}
    else:
        grads = {k: v.data if isinstance(v, Tensor) else v for k, v in grads.items()}
    dep = _depends_on_sources(tape, entries, n, wanted)
    checking = bool(_local.anomaly or tape.check_broadcast)
    nb = len(lead)
    simple = not (tensor_mode or checking or nb)  # first order on arrays, no checks
    pop = grads.pop
    results = {}
    segments = ((n - 1, -1, ()),) if on_final is None else _segments(entries, n, sources)
    for top, stop, final in segments:
        for k in range(top, stop, -1):
            op, inputs, ans, out, params, where = entries[k]
            g = pop(out, None)
            if g is None:
                continue
            if out in wanted:
                results[out] = g
            if out not in dep:
                continue
            vjp = op.vjp
            if simple and not params and type(vjp) is tuple and len(vjp) <= 2:
                _simple_rules(grads, dep, op, vjp, g, ans, inputs)
                continue
            if tensor_mode:
                args = inputs
                if not isinstance(g, Tensor):
                    g = wrap(g)
            else:
                args = _raw(inputs)
                if type(ans) is not Node:
                    ans = ans.data
            joint = type(vjp) is not tuple
            gis = vjp(g, ans, *args, **params) if joint else None
            for i, x in enumerate(inputs):
                x = key_of(x)
                if x not in dep:
                    continue
                if joint:
                    gi = gis[i]
                else:
                    rule = vjp[i]
                    gi = None if rule is None else rule(g, ans, *args, **params)
                if gi is None:
                    continue
                if checking:
                    _check(tape, op, x, gi, nb, where)
                _accumulate(grads, x, gi, nb, op, i)
        for i in final:
            node = sources[i]._node
            on_final(i, results.get(node, grads.get(node)))
    return [results.get(s._node, grads.get(s._node)) for s in sources]


def _segments(entries, n, sources):
    """(first entry, entry to stop before, sources final after it) for a replay that
    reports final gradients: a source's gradient is final once the replay has passed the
    first entry that uses it (or makes it); sources no entry touches come last."""
    first = {}
    for i, s in enumerate(sources):
        first.setdefault(s._node, []).append(i)
    at = {}
    for k in range(n):
        if not first:
            break
        entry = entries[k]
        for x in (*entry[INPUTS], entry[OUT]):
            idx = first.pop(key_of(x), None)
            if idx is not None:
                at.setdefault(k, []).extend(idx)
    out, top = [], n - 1
    for k in sorted(at, reverse=True):
        out.append((top, k - 1, at[k]))
        top = k - 1
    out.append((top, -1, [i for idx in first.values() for i in idx]))
    return out


def _simple_rules(grads, dep, op, vjp, g, ans, inputs):
    """``run``'s step for the commonest entry, written out: one or two inputs, no params,
    first order on arrays (the 200-op chain of bench/ replays about 10% faster so). A
    gradient that fits its input is added here as ``_accumulate`` would add it (calling
    it per input cost the chain 2%); one that does not fit goes through it. The inputs
    are written out one by one: a loop over them made the chain 10-20% slower."""
    if type(ans) is not Node:
        ans = ans.data
    if len(vjp) == 1:
        (x,) = inputs
        k, v = (x, x) if type(x) is Node else (x._node, x.data)
        if k in dep:
            gi = vjp[0](g, ans, v)
            if gi.shape == k.shape and gi.dtype is k.dtype:
                prev = grads.get(k)
                grads[k] = gi if prev is None else prev + gi
            else:
                _accumulate(grads, k, gi, 0, op, 0)
        return
    a, b = inputs
    if type(a) is Node:  # not kept: its node stands for it
        ka = va = a
    elif isinstance(a, Tensor):
        ka, va = a._node, a.data
    else:  # a constant
        ka, va = None, a
    if type(b) is Node:
        kb = vb = b
    elif isinstance(b, Tensor):
        kb, vb = b._node, b.data
    else:
        kb, vb = None, b
    ra, rb = vjp
    if ra is not None and ka in dep:
        gi = ra(g, ans, va, vb)
        if gi.shape == ka.shape and gi.dtype is ka.dtype:
            prev = grads.get(ka)
            grads[ka] = gi if prev is None else prev + gi
        else:
            _accumulate(grads, ka, gi, 0, op, 0)
    if rb is not None and kb in dep:
        gi = rb(g, ans, va, vb)
        if gi.shape == kb.shape and gi.dtype is kb.dtype:
            prev = grads.get(kb)
            grads[kb] = gi if prev is None else prev + gi
        else:
            _accumulate(grads, kb, gi, 0, op, 1)


def _raw(inputs):
    """The rules' arguments in a first-order replay: kept tensors as their arrays."""
    if len(inputs) == 2:
        a, b = inputs
        return (a.data if isinstance(a, Tensor) else a, b.data if isinstance(b, Tensor) else b)
    return [x.data if isinstance(x, Tensor) else x for x in inputs]


def _check(tape, op, x, gi, nb, where):
    """The replay's optional checks: ``Tape(check_broadcast=True)`` and anomaly mode."""
    if tape.check_broadcast and gi.shape[nb:] != x.shape and x in tape._variables:
        _warn_broadcast(op, x, gi.shape[nb:], where)
    if _local.anomaly:
        _check_finite(gi, op, where)


def _accumulate(grads, x, gi, nb, op, index):
    """Add ``gi`` to the gradient of the input whose node is ``x``, fitted to it first
    (:func:`_fitted`) unless it fits already, as it mostly does."""
    if nb or gi.shape != x.shape or gi.dtype is not x.dtype:
        gi = _fitted(x, gi, nb, op, index)
    prev = grads.get(x)
    grads[x] = gi if prev is None else prev + gi


def _fitted(x, gi, nb, op, index):
    """``gi`` fitted to the input whose node is ``x``: broadcasting undone (the one place
    that does it; ``nb`` leading jacobian axes kept) and the input's dtype. A gradient
    that does not sum back to the input's shape (a rule's mistake) raises, naming ``op``
    and the input's ``index``."""
    core = gi.shape[nb:] if nb else gi.shape
    if core != x.shape:
        if not _sums_to(core, x.shape):
            raise ValueError(
                f"the gradient rule of '{op.name}' returned a gradient of shape {tuple(core)} "
                f"for its input {index}, of shape {tuple(x.shape)}: a gradient must have "
                "its input's shape, or a shape that broadcasting the input gives (it is then "
                "summed back)")
        gi = sum_to(gi, shape=x.shape, nb=nb)
    if gi.dtype is not x.dtype and gi.dtype != x.dtype:
        gi = cast(gi, dtype=x.dtype)
    return gi


def _sums_to(shape, target):
    """Whether broadcasting ``target`` gives ``shape`` (then summing undoes it)."""
    if len(shape) < len(target):
        return False
    return all(t == s or t == 1 for s, t in zip(shape[len(shape) - len(target):], target))


def _depends_on_sources(tape, entries, n, wanted):
    """The nodes of the tensors that depend on a source: only those need gradients."""
    if wanted.issuperset(tape._variables):
        # Every tensor the tape watches descends from a watched variable, and all of
        # those are sources: the watched set is the answer, no pass over the entries.
        # (A source that is not watched has no entry that uses it anyway.)
        return tape._watched
    dep = wanted & tape._watched  # an unwatched source gets no gradient, as in TF
    for k in range(n):
        entry = entries[k]
        if any(key_of(x) in dep for x in entry[INPUTS]):
            dep.add(entry[OUT])
    return dep


_warned_lines = set()
_EXPLICIT = ("broadcast_to", "sum_to")


def _warn_broadcast(op, variable, shape, where):
    """``Tape(check_broadcast=True)``: a watched variable was broadcast implicitly."""
    if op.name in _EXPLICIT or where in _warned_lines:
        return
    _warned_lines.add(where)
    import warnings

    warnings.warn(
        f"check_broadcast: '{op.name}' broadcast a variable of shape {tuple(variable.shape)} "
        f"to {tuple(shape)} implicitly, so its gradient is summed over the broadcast axes "
        f"(at {format_line(where, with_code=True)}). If that is intended, make it explicit "
        "with broadcast_to/expand or reshape the variable.",
        stacklevel=5,  # the user's t.gradient(...) call
    )


_RERUN = "<run the forward pass under detect_anomaly too to see the line>"


def _check_finite(gi, op, where):
    array = gi.data if isinstance(gi, Tensor) else gi
    if array.dtype.kind == "f" and not bool(backend.xp(array).isfinite(array).all()):
        bad = "nan" if bool(backend.xp(array).isnan(array).any()) else "inf"
        raise FloatingPointError(
            f"detect_anomaly: the gradient of '{op.name}' produced {bad}; the op was "
            f"created at {format_line(where) if where else _RERUN}"
        )
