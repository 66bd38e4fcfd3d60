"""Every op of the table (tests/optable.py) against PyTorch: values, gradients in float64
and float32 (dtypes kept strictly), second derivatives through nested tapes, and
Jacobians (full and per-example) from one vectorized replay.

Every row runs on the CPU; on the GPU (the ``device`` fixture's "cuda" rows, skipped
without one) every row's forward (and float32 gradient) runs, and a subset of one or two
rows per family of ops runs the float64 and higher-order checks. Torch stays on the
CPU as the oracle; tape's results come back through ``.numpy()``."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from devices import GPU
from optable import BATCH_ROWS, ROWS, TOL32, TOL64

import tape
from tape import backend

DTYPES = ["float64", "float32"]
GRAD_ROWS = [r for r in ROWS if r.grad]

# the GPU's share of the higher-order and float64 checks: one or two rows per family
GPU_SUBSET = {
    "add_row", "mul_outer", "div_scalar", "pow_same", "pow_scalar_frac", "maximum_tie",
    "rsub_numpy_const", "exp", "log_0d", "sqrt", "abs_at_kink", "sin", "tanh", "sigmoid_large",
    "relu", "leaky_relu_slope", "gelu", "gelu_tanh", "softplus_beta", "clip", "clip_min",
    "where_broadcast", "where_const_cond", "sum_tuple", "mean_dim_alias", "max_tie",
    "min_tuple_keep", "prod_one_zero", "prod_two_zeros", "var_ddof1_ax1", "std_constant_row",
    "logsumexp_neg_inf", "reshape_method_infer", "transpose_axes", "squeeze_tuple",
    "expand_method_keep", "broadcast_to", "flatten_start", "concatenate", "stack_neg",
    "split_indices", "pad_value", "index_array_neg_repeated", "index_two_arrays_broadcast",
    "index_tensor_index", "index_mask_full", "index_mixed_nonadjacent", "index_bool_list",
    "index_mask_slice", "index_neg_step", "matmul_broadcast", "matmul_vec_batched",
    "einsum_diagonal", "einsum_three", "einsum_hadamard_diag", "softmax_masked",
    "log_softmax_dim_alias", "mlp", "normalize",
}
GPU_ROWS = [r for r in GRAD_ROWS if r.name in GPU_SUBSET]
assert len(GPU_ROWS) == len(GPU_SUBSET), GPU_SUBSET - {r.name for r in GPU_ROWS}


def _cases(rows, dtypes, gpu_rows=(), gpu_dtypes=()):
    """Parameters ``(row, [dtype,] device)``: every row on the CPU, ``gpu_rows`` on the GPU.
    The device goes to the ``device`` fixture (indirect), which skips GPU rows without one."""
    def skip(r):
        return (pytest.mark.skip(reason=r.skip_second),) if r.skip_second else ()

    out = []
    for device, rs, ds in (("cpu", rows, dtypes), ("cuda", gpu_rows, gpu_dtypes)):
        suffix, marks = ("", ()) if device == "cpu" else ("-cuda", (GPU,))
        for r in rs:
            if ds is None:  # no dtype parameter
                out.append(pytest.param(r, device, id=r.name + suffix, marks=(*skip(r), *marks)))
            else:
                out += [pytest.param(r, d, device, id=f"{r.name}-{d}{suffix}", marks=marks)
                        for d in ds]
    return out


def _second_cases():
    return _cases(GRAD_ROWS, None, GPU_ROWS, None)


def _dev(a, device):
    """A numpy constant on ``device`` (itself on the CPU)."""
    return backend.to_device(a, device)


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


def _sources(arrays, device="cpu"):
    return ([tape.tensor(a, requires_grad=True, device=device) for a in arrays],
            [torch.from_numpy(a.copy()).requires_grad_() for a in arrays])


# ----- values -----
# on the GPU only the rows without gradients: test_gradient checks the others' forwards
@pytest.mark.parametrize("row, dtype, device",
                         _cases(ROWS, DTYPES, [r for r in ROWS if not r.grad], ["float32"]),
                         indirect=["device"])
def test_forward(row, dtype, device):
    arrays = row.inputs(dtype)
    y = row.tape(*[tape.tensor(a, device=device) for a in arrays], device=device)
    want = row.torch(*[torch.from_numpy(a.copy()) for a in arrays])
    _check_values(y, want, _tol(row, dtype), f"{row.name} forward")
    assert y.device == device, f"{row.name}: the result is on {y.device}, not {device}"


# ----- first-order gradients: a random cotangent, compared with torch.autograd.grad -----
@pytest.mark.parametrize("row, dtype, device",
                         _cases(GRAD_ROWS, DTYPES, GRAD_ROWS, ["float32"])
                         + _cases((), (), GPU_ROWS, ["float64"]), indirect=["device"])
def test_gradient(row, dtype, device):
    arrays = row.inputs(dtype)
    xs, txs = _sources(arrays, device)
    with tape.Tape() as t:
        y = row.tape(*xs, device=device)
    ty = row.torch(*txs)
    tol = _tol(row, dtype)
    _check_values(y, ty, tol, f"{row.name} recorded forward")
    v = _rng(row, 1).standard_normal(y.shape).astype(y.dtype)
    grads = t.gradient(y, xs, output_gradients=tape.tensor(v, device=device))
    want = torch.autograd.grad(ty, txs, torch.from_numpy(v), allow_unused=True)
    assert isinstance(grads, list) and len(grads) == len(xs)
    for i, (g, tg, x) in enumerate(zip(grads, want, xs)):
        _check_grad(g, tg, x, tol, f"{row.name} gradient of input {i}")
        assert g is None or g.device == device, f"{row.name}: gradient {i} on {g.device}"


# ----- second order: d/dx sum(grad(y, x; v) * w) through nested tapes -----
@pytest.mark.parametrize("row, device", _second_cases(), indirect=["device"])
def test_second_order(row, device):
    arrays = row.inputs("float64")
    xs, txs = _sources(arrays, device)
    rng = _rng(row, 2)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = row.tape(*xs, device=device)
        v = rng.standard_normal(y.shape)
        ws = [rng.standard_normal(x.shape) for x in xs]
        grads = inner.gradient(y, xs, output_gradients=tape.tensor(v, device=device))
        s = sum((g * _dev(w, device)).sum() for g, w in zip(grads, ws) if g is not None)
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
@pytest.mark.parametrize("row, dtype, device", _cases(GRAD_ROWS, DTYPES, GPU_ROWS, DTYPES),
                         indirect=["device"])
def test_jacobian(row, dtype, device):
    arrays = row.inputs(dtype)
    xs, txs = _sources(arrays, device)
    with tape.Tape() as t:
        y = row.tape(*xs, device=device)
    jacs = t.jacobian(y, xs)
    want = _torch_jacobian(lambda *a: row.torch(*a), tuple(txs))
    for i, (j, tj, x) in enumerate(zip(jacs, want, xs)):
        assert j is None or j.shape == y.shape + x.shape
        _check_grad(j, tj, x, _tol(row, dtype), f"{row.name} jacobian of input {i}",
                    none_is_zero=True)


@pytest.mark.parametrize("row, device", _second_cases(), indirect=["device"])
def test_jacobian_of_gradient(row, device):
    """The Jacobian of a gradient recorded by an outer tape: batched rules on Tensors."""
    arrays = row.inputs("float64")
    xs, txs = _sources(arrays, device)
    v = _rng(row, 3).standard_normal(row.tape(*[tape.tensor(a, device=device) for a in arrays],
                                              device=device).shape)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = row.tape(*xs, device=device)
        g = inner.gradient(y, xs[0], output_gradients=tape.tensor(v, device=device))
    assert g is not None, f"{row.name}: no gradient for input 0"
    jacs = outer.jacobian(g, xs)

    def torch_grad(*a):
        (tg,) = torch.autograd.grad(row.torch(*a), a[0], torch.from_numpy(v), create_graph=True)
        return tg

    want = _torch_jacobian(torch_grad, tuple(txs))
    for i, (j, tj, x) in enumerate(zip(jacs, want, xs)):
        _check_grad(j, tj, x, row.tol64, f"{row.name} jacobian of the gradient, input {i}",
                    none_is_zero=True)


@pytest.mark.parametrize("row, device", _second_cases(), indirect=["device"])
def test_gradient_of_jacobian(row, device):
    """A Jacobian recorded by an outer tape, differentiated: every rule runs on Tensors
    with a leading batch axis."""
    arrays = row.inputs("float64")
    xs, txs = _sources(arrays, device)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = row.tape(*xs, device=device)
        jac = inner.jacobian(y, xs[0])
        w = _rng(row, 4).standard_normal(y.shape + xs[0].shape)
        s = (jac * _dev(w, device)).sum() if jac is not None else None
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


@pytest.mark.parametrize("row, dtype, device", _cases(BATCH_ROWS, DTYPES, BATCH_ROWS, DTYPES),
                         indirect=["device"])
def test_batch_jacobian(row, dtype, device):
    (array,) = row.inputs(dtype)
    x = tape.tensor(array, requires_grad=True, device=device)
    tx = torch.from_numpy(array.copy())
    with tape.Tape() as t:
        y = row.tape(x, device=device)
    got = t.batch_jacobian(y, x)
    full = _torch_jacobian(lambda a: row.torch(a), tx)
    k = y.ndim - 1  # full[b] has shape y.shape[1:] + x.shape; take example b of the source
    want = torch.stack([full[b].select(k, b) for b in range(x.shape[0])])
    assert got.shape == y.shape + x.shape[1:]
    _check_grad(got, want, x, TOL64 if dtype == "float64" else TOL32, f"{row.name} batch_jacobian")
