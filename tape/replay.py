"""Replaying a tape in reverse: gradients, vector-Jacobian products and jacobians.

One loop over the entries, newest first. No recursion and no topological sort: the
tape is already in execution order. Gradients wait in a dict keyed by tensor id and
are popped once their entry consumed them.

Every rule may receive a cotangent with extra leading batch axes (``lead``); that is
how ``jacobian`` replays once for all the rows of the Jacobian at once.
"""

from __future__ import annotations

import numpy as np

from . import backend
from .ops.elementwise import cast
from .ops.shape import reshape, sum_to, transpose
from .tape import _local, format_line
from .tensor import Tensor, wrap


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
    array = seed.data if isinstance(seed, Tensor) else xp.asarray(seed)
    if array.shape != target.shape:
        raise ValueError(
            f"output_gradients of shape {array.shape} does not match its target's shape "
            f"{target.shape}"
        )
    if isinstance(seed, Tensor) and array.dtype == target.dtype:
        return seed  # keeps a watched seed connected for higher-order gradients
    return array.astype(target.dtype, copy=False)


def gradients(tape, targets, seeds, sources):
    """Raw gradients (or None) of the summed targets with respect to each source."""
    for s in sources:
        _check_float(s, "sources")
    for t in targets:
        _check_float(t, "targets")
    grads = {}
    for t, s in zip(targets, seeds):
        g = _seed(t, s)
        prev = grads.get(id(t))
        grads[id(t)] = g if prev is None else prev + g
    return run(tape, grads, sources, ())


def jacobians(tape, target, sources, batch):
    """Jacobians of ``target`` for each source in one vectorized replay."""
    for s in sources:
        _check_float(s, "sources")
    _check_float(target, "target")
    xp = backend.xp(target.data)
    shape = target.shape[1:] if batch else target.shape
    m = int(np.prod(shape, dtype=np.int64))
    eye = xp.eye(m, dtype=target.dtype).reshape((m,) + tuple(shape))
    if batch:
        if target.ndim == 0:
            raise ValueError("batch_jacobian needs a target with a leading batch axis")
        eye = xp.ascontiguousarray(xp.broadcast_to(eye[:, None], (m,) + target.shape))
    grads = {id(target): eye}
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


def run(tape, grads, sources, lead):
    """The reverse loop. ``grads`` maps target ids to their cotangents on entry."""
    entries = tape._entries
    n = len(entries)  # the loop may append to a persistent, recording tape: stop here
    source_ids = {id(s) for s in sources}
    tensor_mode = bool(_local.stack)  # another tape is recording: rules run on Tensors
    if tensor_mode:
        grads = {k: v if isinstance(v, Tensor) else wrap(v) for k, v in grads.items()}
    else:  # raw mode: rules take and return arrays from here on
        grads = {k: v.data if isinstance(v, Tensor) else v for k, v in grads.items()}
    dep = _depends_on_sources(tape, entries, n, source_ids)
    if not (tensor_mode or lead or _local.anomaly or tape.check_broadcast):
        return _run_first_order(entries, n, grads, dep, source_ids, sources)
    anomaly = _local.anomaly
    check_broadcast = tape.check_broadcast
    nb = len(lead)
    pop = grads.pop
    results = {}
    for k in range(n - 1, -1, -1):
        op, inputs, arrays, out, params, where = entries[k]
        oid = id(out)
        g = pop(oid, None)
        if g is None:
            continue
        if oid in source_ids:
            results[oid] = g
        if oid not in dep:
            continue
        if tensor_mode:
            args, ans = inputs, out
            if not isinstance(g, Tensor):
                g = wrap(g)
        else:
            args, ans = arrays, out.data
        vjp = op.vjp
        joint = type(vjp) is not tuple
        if joint:  # one rule returns a gradient per input
            gis = vjp(g, ans, *args, **params)
        for i, a in enumerate(inputs):
            if id(a) not in dep:
                continue
            if joint:
                gi = gis[i]
            elif vjp[i] is None:
                continue
            else:
                gi = vjp[i](g, ans, *args, **params)
            if gi is None:
                continue
            if check_broadcast and gi.shape[nb:] != a.shape and id(a) in tape._variables:
                _warn_broadcast(op, a, gi.shape[nb:], where)
            gi = _accumulate(grads, a, gi, nb, op, i)
            if anomaly:
                _check_finite(gi, op, where)
    return _results(results, grads, source_ids, sources)


def _run_first_order(entries, n, grads, dep, source_ids, sources):
    """``run``'s loop for the common case: first order on raw arrays, no jacobian batch
    axes, no anomaly or broadcast checks. The same steps as the general loop, with one-
    and two-input rules unrolled: this loop is most of the per-op cost of small models."""
    pop = grads.pop
    results = {}
    for k in range(n - 1, -1, -1):
        op, inputs, arrays, out, params, _ = entries[k]
        oid = id(out)
        g = pop(oid, None)
        if g is None:
            continue
        if oid in source_ids:
            results[oid] = g
        if oid not in dep:
            continue
        vjp = op.vjp
        if type(vjp) is tuple and not params:
            if len(vjp) == 2:
                a, b = inputs
                ra, rb = vjp
                if ra is not None and id(a) in dep:
                    _accumulate(grads, a, ra(g, out.data, *arrays), 0, op, 0)
                if rb is not None and id(b) in dep:
                    _accumulate(grads, b, rb(g, out.data, *arrays), 0, op, 1)
                continue
            if len(vjp) == 1:
                a = inputs[0]
                if id(a) in dep:
                    _accumulate(grads, a, vjp[0](g, out.data, *arrays), 0, op, 0)
                continue
        ans = out.data
        gis = None if type(vjp) is tuple else vjp(g, ans, *arrays, **params)
        for i, a in enumerate(inputs):
            if id(a) not in dep:
                continue
            if gis is not None:
                _accumulate(grads, a, gis[i], 0, op, i)
            elif vjp[i] is not None:
                _accumulate(grads, a, vjp[i](g, ans, *arrays, **params), 0, op, i)
    return _results(results, grads, source_ids, sources)


def _accumulate(grads, a, gi, nb, op, index):
    """Add ``gi`` to input ``a``'s gradient, fitted to it first: broadcasting undone (the
    one place that does it; ``nb`` leading jacobian axes kept) and the input's dtype.
    Returns the fitted ``gi``. A gradient that does not sum back to the input's shape
    (a rule's mistake) raises, naming ``op`` and the input's ``index``."""
    if gi is None:
        return None
    data = a.data
    core = gi.shape[nb:] if nb else gi.shape
    if core != data.shape:
        if not _sums_to(core, data.shape):
            raise ValueError(
                f"the gradient rule of '{op.name}' returned a gradient of shape {tuple(core)} "
                f"for its input {index}, of shape {tuple(data.shape)}: a gradient must have "
                "its input's shape, or a shape that broadcasting the input gives (it is then "
                "summed back)")
        gi = sum_to(gi, shape=data.shape, nb=nb)
    if gi.dtype is not data.dtype and gi.dtype != data.dtype:
        gi = cast(gi, dtype=data.dtype)
    aid = id(a)
    prev = grads.get(aid)
    grads[aid] = gi if prev is None else prev + gi
    return gi


def _sums_to(shape, target):
    """Whether broadcasting ``target`` gives ``shape`` (then summing undoes it)."""
    if len(shape) < len(target):
        return False
    return all(t == s or t == 1 for s, t in zip(shape[len(shape) - len(target):], target))


def _results(results, grads, source_ids, sources):
    """Each source's gradient, in order: recorded as the loop passed its entry (a source
    that is also an op's output), else what accumulated for it (None if nothing)."""
    for sid in source_ids:
        if sid not in results and sid in grads:
            results[sid] = grads[sid]
    return [results.get(id(s)) for s in sources]


def _depends_on_sources(tape, entries, n, source_ids):
    """Ids of the tensors that depend on a source: only those need gradients."""
    if source_ids.issuperset(tape._variables):
        # Every tensor the tape watches descends from a watched variable, and all of
        # those are sources: the watched set is the answer, no pass over the entries.
        # (A source that is not watched has no entry that uses it anyway.)
        return tape._watched
    dep = source_ids & tape._watched  # an unwatched source gets no gradient, as in TF
    for k in range(n):
        e = entries[k]
        for a in e[1]:
            if id(a) in dep:
                dep.add(id(e[3]))
                break
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
