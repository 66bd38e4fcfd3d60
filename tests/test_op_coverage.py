"""Every differentiable op is reached by some row of the op table: each row (float64, on
the CPU) is recorded on a persistent tape around two more: its forward, its gradient and
the gradient of that gradient's square (so the ops the rules run count too: col2im, the
*_adjoint and unpool ops, Function.backward, gather_at), and every op of
``tape.ops.core.DEFINED`` must be among the recorded entries' ops."""

import gc
import importlib.util
import pathlib

import numpy as np
from optable import ROWS

import tape
import tape.functional  # noqa: F401  (every module that defines ops)
import tape.nn  # noqa: F401
import tape.optim  # noqa: F401
from tape import custom
from tape.ops import core

TESTS = pathlib.Path(__file__).resolve().parent
NO_NUMBA = importlib.util.find_spec("numba") is None


def _reached(row):
    """The ops a persistent tape records around ``row``'s forward, its gradient and (unless
    the row cannot take second order) the gradient of the gradient's square: a cotangent
    that depends on the inputs, so that the second-order rules' ops are recorded too."""
    xs = [tape.tensor(a, requires_grad=i not in row.nograd)
          for i, a in enumerate(row.inputs("float64"))]
    src = [xs[i] for i in row.sources]
    with tape.Tape(persistent=True) as top:
        with tape.Tape() as outer:
            with tape.Tape() as inner:
                y = row.tape(*xs)
            if row.grad:
                v = np.random.default_rng(0).standard_normal(y.shape)
                grads = inner.gradient(y, src, output_gradients=v)
                penalty = sum((g * g).sum() for g in grads if g is not None)
        if row.grad and "second_order" not in row.skip and isinstance(penalty, tape.Tensor):
            outer.gradient(penalty, src)
    return {entry[0] for entry in top._entries}  # an entry: (op, inputs, ...)


def _library_op(op):
    """Not an op a test made: a tape.Function subclass's own op (named after the class; the
    op table's Function row reaches it), or one built with Op(...) in a test file."""
    if op.forward is custom._function_forward:
        return False
    codes = [op.forward, *(op.vjp if isinstance(op.vjp, tuple) else (op.vjp,))]
    files = {getattr(getattr(f, "__code__", None), "co_filename", "") for f in codes}
    return not any(f.startswith(str(TESTS)) for f in files)


def _route_missing(op):
    """Ops only numba's kernels take conv2d to (without numba: im2col for everything)."""
    return (op.name.startswith("winograd_") or op.name == "direct_conv") and NO_NUMBA


def test_every_differentiable_op_is_reached_by_a_row():
    reached = set()
    for row in ROWS:
        if "gradient" not in row.xfail:  # a library bug keeps the row from recording
            reached |= _reached(row)
    gc.collect()  # ops of finished tests (Op(...) in a test function) leave DEFINED
    unreached = sorted(op.name for op in core.DEFINED if _library_op(op) and op not in reached
                       and not _route_missing(op))
    assert not unreached, f"ops no row of the op table reaches: {', '.join(unreached)}"
