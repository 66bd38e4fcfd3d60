"""ONE conformance suite for every registered CPU implementation of every kernel.

Rows are taken from ``kernels.available()`` at collection time, so an implementation
registered before collection runs through the same table: the numba kernels, the numpy
reference, the CUDA sources emulated on the host (when a C++ compiler exists), the
``example_strided`` im2col below, and anything named in ``$KERNELS_TEST_PLUGINS`` (a
comma-separated list of modules imported first; see kernels/README.md).

Oracles: the numpy reference (exact for gathers), torch.nn.functional (unfold, fold,
max_pool2d, avg_pool2d and their autograd gradients), and the adjoint identity
``<im2col(x), c> == <x, col2im(c)>``.
"""

from __future__ import annotations

import importlib
import os
import zlib

import numpy as np
import pytest

import kernels
from kernels.gpu import emulate

from kernels.cpu import threads as _threads

# ----- implementations under test -----


@kernels.register("im2col", "cpu", impl="example_strided")
def example_strided_im2col(x, g):
    """A drop-in im2col from numpy's sliding_window_view (the README's example)."""
    xp = np.pad(x, ((0, 0), (0, 0), (g.ph, g.ph), (g.pw, g.pw)))
    win = np.lib.stride_tricks.sliding_window_view(
        xp, (g.dh * (g.kh - 1) + 1, g.dw * (g.kw - 1) + 1), axis=(2, 3)
    )[:, :, :: g.sh, :: g.sw, :: g.dh, :: g.dw]  # (N, C, Ho, Wo, kh, kw)
    return np.ascontiguousarray(win.transpose(1, 4, 5, 0, 2, 3)).reshape(g.cols_shape)


if emulate.compiler() is not None:  # the C++ build happens on the first call
    emulate.host_ops().register("cpu", "cuda_emulated")

for _mod in filter(None, os.environ.get("KERNELS_TEST_PLUGINS", "").split(",")):
    importlib.import_module(_mod.strip())


def impls(name):
    return kernels.available()[name]["cpu"]


def oracle(name, *args):
    """Kernel ``name`` (its public signature) on the numpy reference."""
    with kernels.use(name, "reference"):
        return getattr(kernels, name)(*args)


# ----- fixtures and helpers -----

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


@pytest.fixture(params=["serial", "parallel"], ids=["1thread", "pool"])
def threads(request, monkeypatch):
    """Run the numba kernels both on one thread and on the pool, whatever the size."""
    monkeypatch.setattr(_threads, "SMALL_WORK", 1 << 62 if request.param == "serial" else 0)
    with kernels.configure(tune_threads=False):  # on the pool: every call dealt out
        yield


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def torch_or_skip():
    return pytest.importorskip("torch")


# x_shape, kh, kw, stride, padding, dilation
CONV_CASES = [
    ((2, 3, 7, 9), 3, 3, 1, 0, 1),
    ((2, 3, 7, 9), 3, 3, 1, 1, 1),
    ((1, 2, 8, 8), 3, 3, 2, 1, 1),
    ((3, 2, 9, 7), 2, 3, (2, 1), (1, 0), (1, 2)),
    ((2, 1, 5, 6), 1, 1, 1, 0, 1),
    ((1, 4, 6, 6), 5, 5, 1, 2, 1),
    ((2, 2, 7, 7), 3, 3, 3, 2, 2),
    ((1, 1, 4, 4), 4, 4, 1, 0, 1),
    ((2, 3, 11, 13), 3, 3, (2, 3), (2, 1), (2, 1)),
    ((5, 1, 3, 3), 2, 2, 1, 0, 1),
    ((1, 2, 5, 5), 3, 3, 4, 3, 1),  # padding wider than the kernel's reach
    ((4, 8, 15, 15), 3, 3, 1, 1, 1),  # "same" conv, the flat-offset fast path
]
CONV_IDS = [f"{s}-k{kh}x{kw}-s{st}-p{p}-d{d}" for s, kh, kw, st, p, d in CONV_CASES]

# x_shape, k, stride, padding
POOL_CASES = [
    ((2, 3, 8, 8), 2, 2, 0),
    ((2, 3, 7, 9), 2, 2, 0),  # odd sizes: the last row/column is dropped
    ((1, 2, 7, 7), 3, 2, 1),
    ((2, 2, 9, 8), 3, 1, 1),  # stride 1: overlapping windows, the row-wise path
    ((3, 1, 6, 5), (3, 2), (1, 2), (1, 1)),
    ((1, 1, 5, 5), 5, 1, 2),
    ((2, 2, 10, 10), 4, 3, 2),
    ((1, 3, 4, 4), 1, 1, 0),
    ((4, 8, 16, 16), 2, 2, 0),
]
POOL_IDS = [f"{s}-k{k}-s{st}-p{p}" for s, k, st, p in POOL_CASES]


def conv_torch_args(kh, kw, stride, padding, dilation):
    return dict(kernel_size=(kh, kw), stride=kernels.pair(stride),
                padding=kernels.pair(padding), dilation=kernels.pair(dilation))


# ----- im2col -----


@pytest.mark.parametrize("impl", impls("im2col"))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_im2col(impl, dtype, case, threads):
    shape, kh, kw, stride, padding, dilation = case
    x = rng_for("im2col", case).standard_normal(shape).astype(dtype)
    with kernels.use("im2col", impl):
        cols = kernels.im2col(x, kh, kw, stride, padding, dilation)
    want = oracle("im2col", x, kh, kw, stride, padding, dilation)
    assert cols.dtype == x.dtype and cols.shape == want.shape
    np.testing.assert_array_equal(cols, want)  # a gather: bit-exact

    torch = torch_or_skip()
    unf = torch.nn.functional.unfold(torch.from_numpy(x), **conv_torch_args(*case[1:])).numpy()
    k, nl = cols.shape
    np.testing.assert_array_equal(cols.reshape(k, shape[0], -1).transpose(1, 0, 2), unf)


@pytest.mark.parametrize("impl", impls("im2col"))
def test_im2col_noncontiguous_input(impl):
    x = rng_for("nc").standard_normal((5, 7, 3, 2)).transpose(3, 2, 0, 1)  # (2, 3, 5, 7) view
    with kernels.use("im2col", impl):
        cols = kernels.im2col(x, 3, 2, 1, 1, 1)
    np.testing.assert_array_equal(cols, oracle("im2col", np.ascontiguousarray(x), 3, 2, 1, 1, 1))


# ----- col2im -----


@pytest.mark.parametrize("impl", impls("col2im"))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_col2im(impl, dtype, case, threads):
    shape, kh, kw, stride, padding, dilation = case
    rng = rng_for("col2im", case)
    x = rng.standard_normal(shape).astype(dtype)
    cshape = oracle("im2col", x, kh, kw, stride, padding, dilation).shape
    c = rng.standard_normal(cshape).astype(dtype)
    with kernels.use("col2im", impl):
        dx = kernels.col2im(c, shape, kh, kw, stride, padding, dilation)
    assert dx.dtype == c.dtype and dx.shape == shape
    np.testing.assert_allclose(dx, oracle("col2im", c, shape, kh, kw, stride, padding, dilation),
                               **TOL[dtype])

    # the adjoint identity, in float64 so that only the kernels' logic can break it
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    with kernels.use("col2im", impl):
        back = kernels.col2im(c64, shape, kh, kw, stride, padding, dilation)
    lhs = np.vdot(oracle("im2col", x64, kh, kw, stride, padding, dilation), c64)
    assert np.isclose(lhs, np.vdot(x64, back), rtol=1e-12, atol=1e-12)

    torch = torch_or_skip()
    k, nl = c.shape
    tc = torch.from_numpy(np.ascontiguousarray(c.reshape(k, shape[0], -1).transpose(1, 0, 2)))
    fold = torch.nn.functional.fold(tc, output_size=shape[2:], **conv_torch_args(*case[1:]))
    np.testing.assert_allclose(dx, fold.numpy(), **TOL[dtype])


# ----- max pooling -----


def _torch_max_pool(x, k, stride, padding, g=None):
    torch = torch_or_skip()
    tx = torch.from_numpy(x).requires_grad_(True)
    out, idx = torch.nn.functional.max_pool2d(tx, k, stride, padding, return_indices=True)
    if g is not None:
        out.backward(torch.from_numpy(g))
    return out.detach().numpy(), idx.numpy(), (tx.grad.numpy() if g is not None else None)


@pytest.mark.parametrize("impl", impls("max_pool2d_forward"))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_max_pool2d_forward(impl, dtype, case, threads):
    shape, k, stride, padding = case
    x = rng_for("maxf", case).standard_normal(shape).astype(dtype)
    with kernels.use("max_pool2d_forward", impl):
        out, arg = kernels.max_pool2d_forward(x, k, stride, padding)
    want, want_arg = oracle("max_pool2d_forward", x, k, stride, padding)
    assert out.dtype == x.dtype and arg.dtype == np.int64 and out.shape == arg.shape
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(arg, want_arg)
    t_out, t_idx, _ = _torch_max_pool(x, k, stride, padding)
    np.testing.assert_array_equal(out, t_out)
    np.testing.assert_array_equal(arg, t_idx)


@pytest.mark.parametrize("impl", impls("max_pool2d_forward"))
def test_max_pool2d_ties_nan_and_minus_inf_like_torch(impl):
    x = np.zeros((2, 2, 6, 6), np.float32)  # all ties: torch takes the first element
    x[1, 0] = -np.inf  # only -inf: value -inf, index of the window's first real element
    x[1, 1, 2, 3] = np.nan  # NaN wins its windows
    x[0, 1, ::2, ::2] = 1.0
    for k, s, p in [(2, 2, 0), (3, 1, 1), (3, 2, 1)]:
        with kernels.use("max_pool2d_forward", impl):
            out, arg = kernels.max_pool2d_forward(x, k, s, p)
        t_out, t_idx, _ = _torch_max_pool(x, k, s, p)
        np.testing.assert_array_equal(out, t_out)
        np.testing.assert_array_equal(arg, t_idx)


@pytest.mark.parametrize("impl", impls("max_pool2d_backward"))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_max_pool2d_backward(impl, dtype, case, threads):
    shape, k, stride, padding = case
    rng = rng_for("maxb", case)
    x = rng.standard_normal(shape).astype(dtype)
    _, arg = oracle("max_pool2d_forward", x, k, stride, padding)
    g = rng.standard_normal(arg.shape).astype(dtype)
    with kernels.use("max_pool2d_backward", impl):
        dx = kernels.max_pool2d_backward(g, arg, shape)
    assert dx.dtype == g.dtype and dx.shape == shape
    np.testing.assert_allclose(dx, oracle("max_pool2d_backward", g, arg, shape), **TOL[dtype])
    _, _, t_grad = _torch_max_pool(x, k, stride, padding, g)
    np.testing.assert_allclose(dx, t_grad, **TOL[dtype])


# ----- average pooling -----


def _torch_avg_pool(x, k, stride, padding, g):
    torch = torch_or_skip()
    tx = torch.from_numpy(x).requires_grad_(True)
    out = torch.nn.functional.avg_pool2d(tx, k, stride, padding, count_include_pad=True)
    out.backward(torch.from_numpy(g))
    return out.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("impl", impls("avg_pool2d_forward"))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_avg_pool2d_forward(impl, dtype, case, threads):
    shape, k, stride, padding = case
    x = rng_for("avgf", case).standard_normal(shape).astype(dtype)
    with kernels.use("avg_pool2d_forward", impl):
        out = kernels.avg_pool2d_forward(x, k, stride, padding)
    want = oracle("avg_pool2d_forward", x, k, stride, padding)
    assert out.dtype == x.dtype and out.shape == want.shape
    np.testing.assert_allclose(out, want, **TOL[dtype])
    t_out, _ = _torch_avg_pool(x, k, stride, padding, np.ones_like(want))
    np.testing.assert_allclose(out, t_out, **TOL[dtype])


@pytest.mark.parametrize("impl", impls("avg_pool2d_backward"))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_avg_pool2d_backward(impl, dtype, case, threads):
    shape, k, stride, padding = case
    rng = rng_for("avgb", case)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(oracle("avg_pool2d_forward", x, k, stride, padding).shape)
    g = g.astype(dtype)
    with kernels.use("avg_pool2d_backward", impl):
        dx = kernels.avg_pool2d_backward(g, shape, k, stride, padding)
    assert dx.dtype == g.dtype and dx.shape == shape
    want = oracle("avg_pool2d_backward", g, shape, k, stride, padding)
    np.testing.assert_allclose(dx, want, **TOL[dtype])
    _, t_grad = _torch_avg_pool(x, k, stride, padding, g)
    np.testing.assert_allclose(dx, t_grad, **TOL[dtype])


# ----- conv2d: every route against the reference and torch -----

# x_shape, w_shape, stride, padding, dilation; the comment: the route "auto" takes
CONV2D_CASES = [
    ((2, 3, 7, 9), (4, 3, 3, 3), 1, 1, 1),  # im2col (Winograd only when selected)
    ((2, 8, 6, 5), (5, 8, 3, 3), 1, (2, 1), 1),  # Winograd, fused
    ((1, 64, 4, 5), (40, 64, 3, 3), 1, 1, 1),  # Winograd, batched GEMMs
    ((3, 1, 9, 8), (4, 1, 3, 2), (2, 1), (0, 2), 1),  # direct
    ((2, 1, 7, 7), (3, 1, 3, 3), 1, 1, 1),  # direct, stride 1
    ((2, 2, 7, 6), (3, 2, 3, 2), 2, 2, 2),  # im2col: dilated
    ((0, 8, 5, 5), (2, 8, 3, 3), 1, 1, 1),  # Winograd, an empty batch
]
CONV2D_IDS = [f"{x}x{w}-s{s}-p{p}-d{d}" for x, w, s, p, d in CONV2D_CASES]


@pytest.mark.parametrize("impl", impls("conv2d"))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONV2D_CASES, ids=CONV2D_IDS)
def test_conv2d(impl, dtype, case, threads):
    """Each route where it applies, and where it does not (the reference's then)."""
    x_shape, w_shape, stride, padding, dilation = case
    rng = rng_for("conv2d", case)
    x, w = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape))
    with kernels.use("conv2d", impl):
        y = kernels.conv2d(x, w, stride, padding, dilation)
    want = oracle("conv2d", x, w, stride, padding, dilation)
    assert y.dtype == x.dtype and y.shape == want.shape
    tol = TOL[dtype]["rtol"] * 10  # Winograd's sums differ by a few ulps
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol * np.abs(want).max(initial=1.0))

    torch = torch_or_skip()
    t = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride,
                                   padding=padding, dilation=dilation).numpy()
    np.testing.assert_allclose(y, t, rtol=tol, atol=tol * np.abs(t).max(initial=1.0))


# ----- edge cases every implementation must take -----


@pytest.mark.parametrize("name", kernels.KERNELS)
def test_empty_batch(name):
    x = np.zeros((0, 3, 6, 6), np.float32)
    for impl in impls(name):
        with kernels.use(name, impl):
            if name == "im2col":
                assert kernels.im2col(x, 3, 3, 1, 1, 1).shape == (27, 0)
            elif name == "col2im":
                assert kernels.col2im(np.zeros((27, 0), np.float32), x.shape, 3, 3, 1, 1,
                                      1).shape == x.shape
            elif name == "max_pool2d_forward":
                out, arg = kernels.max_pool2d_forward(x, 2, 2, 0)
                assert out.shape == arg.shape == (0, 3, 3, 3)
            elif name == "max_pool2d_backward":
                z = np.zeros((0, 3, 3, 3))
                assert kernels.max_pool2d_backward(z, z.astype(np.int64), x.shape).shape == x.shape
            elif name == "avg_pool2d_forward":
                assert kernels.avg_pool2d_forward(x, 2, 2, 0).shape == (0, 3, 3, 3)
            else:
                z = np.zeros((0, 3, 3, 3), np.float32)
                assert kernels.avg_pool2d_backward(z, x.shape, 2, 2, 0).shape == x.shape
