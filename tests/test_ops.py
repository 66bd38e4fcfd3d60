"""Every op of the table (tests/optable.py) against PyTorch: values, gradients in float64
and float32 (dtypes kept strictly), second derivatives through nested tapes, and
Jacobians (full and per-example) from one vectorized replay."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from optable import BATCH_ROWS, ROWS, TOL32, TOL64

import tape

DTYPES = ["float64", "float32"]
GRAD_ROWS = [r for r in ROWS if r.grad]


def _ids(rows):
    return [r.name for r in rows]


def _tol(row, dtype):
    return row.tol64 if np.dtype(dtype) == np.float64 else row.tol32


def _rng(row, salt):
    return np.random.default_rng(zlib.crc32(row.name.encode()) + 1000 * salt + 1)


def _numpy(t):
    return t.detach().numpy(force=True) if isinstance(t, torch.Tensor) else np.asarray(t)


def _check_values(got, want, tol, what):
    """``got`` (a tape.Tensor) has the shape, dtype and values of ``want`` (a torch tensor)."""
    assert isinstance(got, tape.Tensor), f"{what}: expected a tape.Tensor, got {type(got)}"
    want = _numpy(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch has {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, torch has {want.dtype}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got.numpy(), want, err_msg=what)
    else:
        rtol, atol = tol
        np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol, err_msg=what)


def _check_grad(got, want, source, tol, what, none_is_zero=False):
    """A gradient (or Jacobian) against torch's; None stands for zeros where allowed."""
    want = None if want is None else _numpy(want)
    if got is None:
        assert none_is_zero or want is None, f"{what}: tape gave None, torch {want}"
        assert want is None or not want.any(), f"{what}: tape gave None, torch {want}"
        return
    assert isinstance(got, tape.Tensor), f"{what}: expected a tape.Tensor, got {type(got)}"
    assert got.dtype == source.dtype, f"{what}: dtype {got.dtype} != source dtype {source.dtype}"
    if want is None:
        want = np.zeros(got.shape, source.dtype)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch has {want.shape}"
    rtol, atol = tol
    np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol, err_msg=what)


def _torch_jacobian(fn, inputs):
    """torch.autograd.functional.jacobian, vectorized (vmap) where torch's rules allow it."""
    try:
        return torch.autograd.functional.jacobian(fn, inputs, vectorize=True)
    except RuntimeError:  # an op without a batching rule (data-dependent shapes)
        return torch.autograd.functional.jacobian(fn, inputs)


def _sources(arrays):
    return ([tape.tensor(a, requires_grad=True) for a in arrays],
            [torch.from_numpy(a.copy()).requires_grad_() for a in arrays])


# ----- values -----
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_forward(row, dtype):
    arrays = row.inputs(dtype)
    y = row.tape(*[tape.tensor(a) for a in arrays])
    want = row.torch(*[torch.from_numpy(a.copy()) for a in arrays])
    _check_values(y, want, _tol(row, dtype), f"{row.name} forward")


# ----- first-order gradients: a random cotangent, compared with torch.autograd.grad -----
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", GRAD_ROWS, ids=_ids(GRAD_ROWS))
def test_gradient(row, dtype):
    arrays = row.inputs(dtype)
    xs, txs = _sources(arrays)
    with tape.Tape() as t:
        y = row.tape(*xs)
    ty = row.torch(*txs)
    tol = _tol(row, dtype)
    _check_values(y, ty, tol, f"{row.name} recorded forward")
    v = _rng(row, 1).standard_normal(y.shape).astype(y.dtype)
    grads = t.gradient(y, xs, output_gradients=tape.tensor(v))
    want = torch.autograd.grad(ty, txs, torch.from_numpy(v), allow_unused=True)
    assert isinstance(grads, list) and len(grads) == len(xs)
    for i, (g, tg, x) in enumerate(zip(grads, want, xs)):
        _check_grad(g, tg, x, tol, f"{row.name} gradient of input {i}")


# ----- second order: d/dx sum(grad(y, x; v) * w) through nested tapes -----
SECOND_ROWS = [pytest.param(r, marks=pytest.mark.skip(reason=r.skip_second)) if r.skip_second
               else r for r in GRAD_ROWS]


@pytest.mark.parametrize("row", SECOND_ROWS, ids=_ids(GRAD_ROWS))
def test_second_order(row):
    arrays = row.inputs("float64")
    xs, txs = _sources(arrays)
    rng = _rng(row, 2)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = row.tape(*xs)
        v = rng.standard_normal(y.shape)
        ws = [rng.standard_normal(x.shape) for x in xs]
        grads = inner.gradient(y, xs, output_gradients=tape.tensor(v))
        s = sum((g * w).sum() for g, w in zip(grads, ws) if g is not None)
    second = outer.gradient(s, xs) if isinstance(s, tape.Tensor) else [None] * len(xs)

    ty = row.torch(*txs)
    tgrads = torch.autograd.grad(ty, txs, torch.from_numpy(v), create_graph=True,
                                 allow_unused=True)
    ts = sum((g * torch.from_numpy(w)).sum() for g, w in zip(tgrads, ws) if g is not None)
    if isinstance(ts, torch.Tensor) and ts.requires_grad:
        tsecond = torch.autograd.grad(ts, txs, allow_unused=True)
    else:
        tsecond = [None] * len(xs)
    for i, x in enumerate(xs):
        _check_grad(grads[i], tgrads[i], x, row.tol64, f"{row.name} inner gradient {i}")
        _check_grad(second[i], tsecond[i], x, row.tol64, f"{row.name} second order, input {i}",
                    none_is_zero=True)


# ----- Jacobians: one vectorized replay, against torch.autograd.functional.jacobian -----
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", GRAD_ROWS, ids=_ids(GRAD_ROWS))
def test_jacobian(row, dtype):
    arrays = row.inputs(dtype)
    xs, txs = _sources(arrays)
    with tape.Tape() as t:
        y = row.tape(*xs)
    jacs = t.jacobian(y, xs)
    want = _torch_jacobian(lambda *a: row.torch(*a), tuple(txs))
    for i, (j, tj, x) in enumerate(zip(jacs, want, xs)):
        assert j is None or j.shape == y.shape + x.shape
        _check_grad(j, tj, x, _tol(row, dtype), f"{row.name} jacobian of input {i}",
                    none_is_zero=True)


@pytest.mark.parametrize("row", SECOND_ROWS, ids=_ids(GRAD_ROWS))
def test_jacobian_of_gradient(row):
    """The Jacobian of a gradient recorded by an outer tape: batched rules on Tensors."""
    arrays = row.inputs("float64")
    xs, txs = _sources(arrays)
    v = _rng(row, 3).standard_normal(row.tape(*[tape.tensor(a) for a in arrays]).shape)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = row.tape(*xs)
        g = inner.gradient(y, xs[0], output_gradients=tape.tensor(v))
    assert g is not None, f"{row.name}: no gradient for input 0"
    jacs = outer.jacobian(g, xs)

    def torch_grad(*a):
        (tg,) = torch.autograd.grad(row.torch(*a), a[0], torch.from_numpy(v), create_graph=True)
        return tg

    want = _torch_jacobian(torch_grad, tuple(txs))
    for i, (j, tj, x) in enumerate(zip(jacs, want, xs)):
        _check_grad(j, tj, x, row.tol64, f"{row.name} jacobian of the gradient, input {i}",
                    none_is_zero=True)


@pytest.mark.parametrize("row", SECOND_ROWS, ids=_ids(GRAD_ROWS))
def test_gradient_of_jacobian(row):
    """A Jacobian recorded by an outer tape, differentiated: every rule runs on Tensors
    with a leading batch axis."""
    arrays = row.inputs("float64")
    xs, txs = _sources(arrays)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = row.tape(*xs)
        jac = inner.jacobian(y, xs[0])
        w = _rng(row, 4).standard_normal(y.shape + xs[0].shape)
        s = (jac * w).sum() if jac is not None else None
    got = outer.gradient(s, xs) if isinstance(s, tape.Tensor) else [None] * len(xs)

    ty = row.torch(*txs)
    rows = [torch.autograd.grad(ty.reshape(-1)[k], txs[0], create_graph=True,
                                allow_unused=True)[0] for k in range(ty.numel())]
    rows = [torch.zeros_like(txs[0]) if r is None else r for r in rows]
    ts = (torch.stack(rows).reshape(ty.shape + txs[0].shape) * torch.from_numpy(w)).sum()
    want = (torch.autograd.grad(ts, txs, allow_unused=True) if ts.requires_grad
            else [None] * len(xs))
    for i, x in enumerate(xs):
        _check_grad(got[i], want[i], x, row.tol64, f"{row.name} gradient of the jacobian, "
                    f"input {i}", none_is_zero=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", BATCH_ROWS, ids=_ids(BATCH_ROWS))
def test_batch_jacobian(row, dtype):
    (array,) = row.inputs(dtype)
    x, tx = tape.tensor(array, requires_grad=True), torch.from_numpy(array.copy())
    with tape.Tape() as t:
        y = row.tape(x)
    got = t.batch_jacobian(y, x)
    full = _torch_jacobian(lambda a: row.torch(a), tx)
    k = y.ndim - 1  # full[b] has shape y.shape[1:] + x.shape; take example b of the source
    want = torch.stack([full[b].select(k, b) for b in range(x.shape[0])])
    assert got.shape == y.shape + x.shape[1:]
    _check_grad(got, want, x, TOL64 if dtype == "float64" else TOL32, f"{row.name} batch_jacobian")
