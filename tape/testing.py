"""Checking gradients: central finite differences in float64, of the function
(``gradcheck``) and of its gradient (``gradgradcheck``)."""

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
        _compare("gradcheck", f"gradient of input {k} (shape {x.shape})",
                 vjps[k].numpy().reshape(-1), numeric_vjp, atol, rtol)
        _compare("gradcheck", f"jacobian of input {k} (shape {x.shape})",
                 analytic_jac.reshape(-1), numeric.reshape(-1), atol, rtol)
    return True


def _compare(check, what, got, want, atol, rtol):
    """Raise ``GradcheckError`` naming ``what`` and its worst element where ``got`` (the
    tape's) and ``want`` (finite differences) differ beyond the tolerances."""
    err = np.abs(got - want) - (atol + rtol * np.abs(want))
    if got.size and (err.max() > 0 or not np.isfinite(got).all()):
        worst = int(np.nanargmax(np.where(np.isfinite(err), err, np.inf)))
        raise GradcheckError(
            f"{check}: {what} differs from finite differences: element {worst} is "
            f"{float(got[worst])!r}, expected {float(want[worst])!r} (atol={atol}, rtol={rtol})"
        )


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check second-order gradients: those of ``s = <gradient of <fn(*inputs), v>, u>``
    (random ``v`` and ``u``), recorded by an outer tape, against central finite
    differences of ``s``, itself computed by first-order gradients, as
    ``torch.autograd.gradgradcheck`` does. ``s`` is also differentiated with respect to
    ``v`` (the output_gradients), so a gradient cut off from its cotangent is caught.

    Works in float64 on copies of the floating-point inputs; returns True, or raises
    ``GradcheckError`` naming the input and the worst element. A first-order mistake
    shows here too: run ``gradcheck`` first.

    >>> tape.gradgradcheck(lambda x: (x * x * x).sum(), [tape.randn(3)])
    True
    """
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    xs = [_as_float64(x) for x in inputs]
    sources = [x for x in xs if isinstance(x, Tensor) and x.dtype.kind == "f"]
    y = fn(*xs)
    if not isinstance(y, Tensor):
        raise TypeError(f"gradgradcheck: fn must return a tape.Tensor, got {type(y).__name__}")
    rng = np.random.default_rng(0)
    v = Tensor(rng.standard_normal(y.shape), requires_grad=True)
    us = [rng.standard_normal(x.shape) for x in sources]

    def projected():  # s: the first-order gradients, projected on the us
        with Tape() as t:
            out = fn(*xs)
        grads = t.gradient(out, sources, output_gradients=v, unconnected_gradients="zero")
        return sum(((g * u).sum() for g, u in zip(grads, us)), Tensor(np.float64(0.0)))

    with Tape() as outer:
        s = projected()
    analytic = outer.gradient(s, sources + [v], unconnected_gradients="zero")
    names = [f"input {k} (shape {x.shape})" for k, x in enumerate(sources)]
    for x, got, name in zip(sources + [v], analytic, names + ["output_gradients"]):
        flat = x.data.reshape(-1)
        numeric = np.empty(x.size)
        for i in range(x.size):
            old = flat[i]
            flat[i] = old + eps
            plus = projected().item()
            flat[i] = old - eps
            minus = projected().item()
            flat[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        _compare("gradgradcheck", f"second-order gradient of {name}",
                 got.numpy().reshape(-1), numeric, atol, rtol)
    return True
