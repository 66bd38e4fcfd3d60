"""Checking gradients: central finite differences in float64 (``gradcheck``)."""

from __future__ import annotations

import numpy as np

from .tape import Tape
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Raised by ``gradcheck`` with the worst mismatch between tape and finite differences."""


def _as_float64(x):
    if isinstance(x, Tensor) and x.dtype.kind == "f":
        return Tensor(x.numpy().astype(np.float64), requires_grad=True)
    return x


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Compare the tape's Jacobian of ``fn(*inputs)`` with central finite differences.

    Works in float64 on copies of the floating-point inputs. Checks both a gradient
    with a random cotangent and the vectorized ``jacobian``. Returns True, or raises
    ``GradcheckError`` naming the input and the worst element. Tensors that ``fn``
    captures from outside (not in ``inputs``) keep their dtype: make them float64 too,
    or the finite differences may be too noisy.

    >>> tape.gradcheck(lambda x: (x * x).sum(), [tape.randn(3)])
    True
    """
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    xs = [_as_float64(x) for x in inputs]
    sources = [x for x in xs if isinstance(x, Tensor) and x.dtype.kind == "f"]
    with Tape(persistent=True) as t:
        y = fn(*xs)
    if not isinstance(y, Tensor):
        raise TypeError(f"gradcheck: fn must return a tape.Tensor, got {type(y).__name__}")
    y_np = y.numpy()
    rng = np.random.default_rng(0)
    v = rng.standard_normal(y_np.shape)
    vjps = t.gradient(y, sources, output_gradients=v, unconnected_gradients="zero")
    jacs = t.jacobian(y, sources, unconnected_gradients="zero")
    for k, x in enumerate(sources):
        flat = x.data.reshape(-1)
        numeric = np.empty((x.size, y_np.size))
        for i in range(x.size):
            old = flat[i]
            flat[i] = old + eps
            plus = fn(*xs).numpy().reshape(-1)
            flat[i] = old - eps
            minus = fn(*xs).numpy().reshape(-1)
            flat[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        numeric_vjp = numeric @ v.reshape(-1)
        analytic_jac = jacs[k].numpy().reshape(y_np.size, x.size).T
        for what, got, want in (
            ("gradient", vjps[k].numpy().reshape(-1), numeric_vjp),
            ("jacobian", analytic_jac.reshape(-1), numeric.reshape(-1)),
        ):
            err = np.abs(got - want) - (atol + rtol * np.abs(want))
            if got.size and (err.max() > 0 or not np.isfinite(got).all()):
                worst = int(np.nanargmax(np.where(np.isfinite(err), err, np.inf)))
                raise GradcheckError(
                    f"gradcheck: {what} of input {k} (shape {x.shape}) differs from finite "
                    f"differences: element {worst} is {float(got[worst])!r}, expected "
                    f"{float(want[worst])!r} "
                    f"(atol={atol}, rtol={rtol})"
                )
    return True
