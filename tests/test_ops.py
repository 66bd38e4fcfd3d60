"""Every row of the op table (tests/optable) against PyTorch, through the same checks:
values, gradients in float64 and float32 (dtypes kept strictly), Jacobians (full and
per-example) from one vectorized replay, second derivatives through nested tapes, and
Jacobians of gradients and gradients of Jacobians (every rule on Tensors with a leading
batch axis). A row that cannot take a check says why in the row (``Row.skip``); a
library bug is a strict xfail in the row (``Row.xfail``).

Every row runs on the CPU; on the GPU (the ``device`` fixture's "cuda" rows, skipped
without one) every row's forward (and float32 gradient) runs, and the rows marked
``gpu`` run every check. Torch stays on the CPU as the oracle; tape's results come back
through ``.numpy()``."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from devices import GPU
from optable import BATCH_ROWS, ROWS, TOL32, TOL64
from optable.checks import check_grad, check_values, torch_jacobian

import tape
from tape import backend

DTYPES = ["float64", "float32"]
GRAD_ROWS = [r for r in ROWS if r.grad]
GPU_ROWS = [r for r in GRAD_ROWS if r.gpu]


def _marks(row, check):
    """What the row says about ``check``: a skip with its reason, or a strict xfail."""
    if check in row.skip:
        return (pytest.mark.skip(reason=f"{row.name}: {row.skip[check]}"),)
    if check in row.xfail:
        return (pytest.mark.xfail(strict=True, reason=f"{row.name}: {row.xfail[check]}"),)
    return ()


def _cases(check, rows, dtypes, gpu_rows=(), gpu_dtypes=()):
    """Parameters ``(row, [dtype,] device)``: every row on the CPU, ``gpu_rows`` on the GPU.
    The device goes to the ``device`` fixture (indirect), which skips GPU rows without one."""
    out = []
    for device, rs, ds in (("cpu", rows, dtypes), ("cuda", gpu_rows, gpu_dtypes)):
        suffix, gpu = ("", ()) if device == "cpu" else ("-cuda", (GPU,))
        for r in rs:
            marks = (*_marks(r, check), *gpu)
            if ds is None:  # no dtype parameter
                out.append(pytest.param(r, device, id=r.name + suffix, marks=marks))
            else:
                out += [pytest.param(r, d, device, id=f"{r.name}-{d}{suffix}", marks=marks)
                        for d in ds]
    return out


def _higher_cases(check):
    return _cases(check, GRAD_ROWS, None, GPU_ROWS, None)


def _dev(a, device):
    """A numpy constant on ``device`` (itself on the CPU)."""
    return backend.to_device(a, device)


def _tol(row, dtype):
    return row.tol64 if np.dtype(dtype) == np.float64 else row.tol32


def _rng(row, salt):
    return np.random.default_rng(zlib.crc32(row.name.encode()) + 1000 * salt + 1)


def _inputs(row, arrays, device="cpu"):
    """Tape and torch tensors of ``arrays``; the row's differentiated inputs require grad."""
    xs = [tape.tensor(a, requires_grad=i not in row.nograd, device=device)
          for i, a in enumerate(arrays)]
    txs = [torch.from_numpy(a.copy()).requires_grad_(i not in row.nograd)
           for i, a in enumerate(arrays)]
    return xs, txs


def _src(row, xs):
    return [xs[i] for i in row.sources]


def _torch_of_sources(row, txs):
    """``row.torch`` as a function of the differentiated inputs alone; the others are
    fresh copies on each call (batch_norm updates its running statistics in place)."""
    def fn(*src):
        args = [t.detach().clone() for t in txs]
        for i, s in zip(row.sources, src):
            args[i] = s
        return row.torch(*args)

    return fn


# ----- values -----
# on the GPU only the rows without gradients: test_gradient checks the others' forwards
@pytest.mark.parametrize("row, dtype, device",
                         _cases("forward", ROWS, DTYPES, [r for r in ROWS if not r.grad],
                                ["float32"]), indirect=["device"])
def test_forward(row, dtype, device):
    arrays = row.inputs(dtype)
    y = row.tape(*[tape.tensor(a, device=device) for a in arrays], device=device)
    want = row.torch(*[torch.from_numpy(a.copy()) for a in arrays])
    check_values(y, want, _tol(row, dtype), f"{row.name} forward")
    assert y.device == device, f"{row.name}: the result is on {y.device}, not {device}"


# ----- first-order gradients: a random cotangent, compared with torch.autograd.grad -----
@pytest.mark.parametrize("row, dtype, device",
                         _cases("gradient", GRAD_ROWS, DTYPES, GRAD_ROWS, ["float32"])
                         + _cases("gradient", (), (), GPU_ROWS, ["float64"]),
                         indirect=["device"])
def test_gradient(row, dtype, device):
    arrays = row.inputs(dtype)
    xs, txs = _inputs(row, arrays, device)
    src, tsrc = _src(row, xs), _src(row, txs)
    with tape.Tape() as t:
        y = row.tape(*xs, device=device)
    ty = row.torch(*txs)
    tol = _tol(row, dtype)
    check_values(y, ty, tol, f"{row.name} recorded forward")
    assert y.device == device, f"{row.name}: the result is on {y.device}, not {device}"
    for i in row.nograd:  # inputs updated in place (running statistics), as torch's
        check_values(xs[i], txs[i], tol, f"{row.name} input {i} after the call")
    v = _rng(row, 1).standard_normal(y.shape).astype(y.dtype)
    grads = t.gradient(y, src, output_gradients=v)  # a numpy seed goes to y's device
    want = torch.autograd.grad(ty, tsrc, torch.from_numpy(v), allow_unused=True)
    assert isinstance(grads, list) and len(grads) == len(src)
    for i, g, tg, x in zip(row.sources, grads, want, src):
        check_grad(g, tg, x, tol, f"{row.name} gradient of input {i}")
        assert g is None or g.device == device, f"{row.name}: gradient {i} on {g.device}"


# ----- Jacobians: one vectorized replay, against torch.autograd.functional.jacobian -----
@pytest.mark.parametrize("row, dtype, device",
                         _cases("jacobian", GRAD_ROWS, DTYPES, GPU_ROWS, DTYPES),
                         indirect=["device"])
def test_jacobian(row, dtype, device):
    arrays = row.inputs(dtype)
    xs, txs = _inputs(row, arrays, device)
    src = _src(row, xs)
    with tape.Tape() as t:
        y = row.tape(*xs, device=device)
    jacs = t.jacobian(y, src)
    want = torch_jacobian(_torch_of_sources(row, txs), tuple(_src(row, txs)))
    for i, j, tj, x in zip(row.sources, jacs, want, src):
        assert j is None or j.shape == y.shape + x.shape
        check_grad(j, tj, x, _tol(row, dtype), f"{row.name} jacobian of input {i}",
                    none_is_zero=True)


# ----- second order: d/dx sum(grad(y, x; v) * w) through nested tapes -----
@pytest.mark.parametrize("row, device", _higher_cases("second_order"), indirect=["device"])
def test_second_order(row, device):
    arrays = row.inputs("float64")
    xs, txs = _inputs(row, arrays, device)
    src, tsrc = _src(row, xs), _src(row, txs)
    rng = _rng(row, 2)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = row.tape(*xs, device=device)
        v = rng.standard_normal(y.shape)
        ws = [rng.standard_normal(x.shape) for x in src]
        grads = inner.gradient(y, src, output_gradients=tape.tensor(v, device=device))
        s = sum((g * _dev(w, device)).sum() for g, w in zip(grads, ws) if g is not None)
    second = outer.gradient(s, src) if isinstance(s, tape.Tensor) else [None] * len(src)

    ty = row.torch(*txs)
    tgrads = torch.autograd.grad(ty, tsrc, torch.from_numpy(v), create_graph=True,
                                 allow_unused=True)
    ts = sum((g * torch.from_numpy(w)).sum() for g, w in zip(tgrads, ws) if g is not None)
    if isinstance(ts, torch.Tensor) and ts.requires_grad:
        tsecond = torch.autograd.grad(ts, tsrc, allow_unused=True)
    else:
        tsecond = [None] * len(src)
    for k, (i, x) in enumerate(zip(row.sources, src)):
        check_grad(grads[k], tgrads[k], x, row.tol64, f"{row.name} inner gradient {i}")
        check_grad(second[k], tsecond[k], x, row.tol64, f"{row.name} second order, input {i}",
                    none_is_zero=True)


@pytest.mark.parametrize("row, device", _higher_cases("jacobian_of_gradient"),
                         indirect=["device"])
def test_jacobian_of_gradient(row, device):
    """The Jacobian of a gradient recorded by an outer tape: batched rules on Tensors."""
    arrays = row.inputs("float64")
    xs, txs = _inputs(row, arrays, device)
    src = _src(row, xs)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = row.tape(*xs, device=device)
        v = _rng(row, 3).standard_normal(y.shape)
        g = inner.gradient(y, src[0], output_gradients=tape.tensor(v, device=device))
    assert g is not None, f"{row.name}: no gradient for input {row.sources[0]}"
    jacs = outer.jacobian(g, src)
    of_sources = _torch_of_sources(row, txs)

    def torch_grad(*a):
        (tg,) = torch.autograd.grad(of_sources(*a), a[0], torch.from_numpy(v),
                                    create_graph=True)
        return tg

    want = torch_jacobian(torch_grad, tuple(_src(row, txs)))
    for i, j, tj, x in zip(row.sources, jacs, want, src):
        check_grad(j, tj, x, row.tol64, f"{row.name} jacobian of the gradient, input {i}",
                    none_is_zero=True)


@pytest.mark.parametrize("row, device", _higher_cases("gradient_of_jacobian"),
                         indirect=["device"])
def test_gradient_of_jacobian(row, device):
    """A Jacobian recorded by an outer tape, differentiated: every rule runs on Tensors
    with a leading batch axis."""
    arrays = row.inputs("float64")
    xs, txs = _inputs(row, arrays, device)
    src, tsrc = _src(row, xs), _src(row, txs)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = row.tape(*xs, device=device)
        jac = inner.jacobian(y, src[0])
        w = _rng(row, 4).standard_normal(y.shape + src[0].shape)
        s = (jac * _dev(w, device)).sum() if jac is not None else None
    got = outer.gradient(s, src) if isinstance(s, tape.Tensor) else [None] * len(src)

    ty = row.torch(*txs)
    rows = [torch.autograd.grad(ty.reshape(-1)[k], tsrc[0], create_graph=True,
                                allow_unused=True)[0] for k in range(ty.numel())]
    rows = [torch.zeros_like(tsrc[0]) if r is None else r for r in rows]
    ts = (torch.stack(rows).reshape(ty.shape + tsrc[0].shape) * torch.from_numpy(w)).sum()
    want = (torch.autograd.grad(ts, tsrc, allow_unused=True) if ts.requires_grad
            else [None] * len(src))
    for k, (i, x) in enumerate(zip(row.sources, src)):
        check_grad(got[k], want[k], x, row.tol64, f"{row.name} gradient of the jacobian, "
                    f"input {i}", none_is_zero=True)


@pytest.mark.parametrize("row, dtype, device", _cases("jacobian", BATCH_ROWS, DTYPES,
                                                      BATCH_ROWS, DTYPES), indirect=["device"])
def test_batch_jacobian(row, dtype, device):
    (array,) = row.inputs(dtype)
    x = tape.tensor(array, requires_grad=True, device=device)
    tx = torch.from_numpy(array.copy())
    with tape.Tape() as t:
        y = row.tape(x, device=device)
    got = t.batch_jacobian(y, x)
    full = torch_jacobian(lambda a: row.torch(a), tx)
    k = y.ndim - 1  # full[b] has shape y.shape[1:] + x.shape; take example b of the source
    want = torch.stack([full[b].select(k, b) for b in range(x.shape[0])])
    assert got.shape == y.shape + x.shape[1:]
    check_grad(got, want, x, TOL64 if dtype == "float64" else TOL32, f"{row.name} batch_jacobian")
