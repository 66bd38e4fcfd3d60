"""The Winograd F(2x2, 3x3) transforms (kernels/cpu/winograd.py): each map against its
adjoint by inner products, and the whole convolution and its two gradients against
torch, on a grid of sizes (odd, even, batch 1), paddings and dtypes; the fused kernels
against the same maps run one by one, for chunks of any size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

winograd = pytest.importorskip("kernels.cpu.winograd", reason="needs numba")

SHAPES = [  # N, Cin, Cout, H, W, padding
    (1, 1, 1, 3, 3, (0, 0)),
    (2, 3, 4, 5, 7, (1, 1)),
    (1, 2, 5, 6, 6, (0, 0)),
    (3, 4, 2, 4, 5, (2, 1)),
    (2, 8, 3, 9, 1, (1, 2)),
]
IDS = ["x".join(map(str, s[:5])) + f"-p{s[5][0]}{s[5][1]}" for s in SHAPES]
DTYPES = [(np.float64, 1e-12), (np.float32, 1e-5)]


def _out_hw(h, w, padding):
    return h + 2 * padding[0] - 2, w + 2 * padding[1] - 2


def _inner(a, b):
    return float(np.sum(a.astype(np.float64) * b.astype(np.float64)))


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_each_transform_is_the_adjoint_of_its_pair(shape, dtype, tol):
    n, cin, cout, h, w, padding = shape
    rng = np.random.default_rng(0)
    ho, wo = _out_hw(h, w, padding)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    v = winograd.transformed_input(x, padding)
    dv = rng.standard_normal(v.shape).astype(dtype)
    assert v.dtype == dtype
    lhs, rhs = _inner(v, dv), _inner(x, winograd.input_adjoint(dv, x.shape, padding))
    assert abs(lhs - rhs) <= tol * max(1.0, abs(lhs))

    m = rng.standard_normal((16, v.shape[1], cout)).astype(dtype)
    g = rng.standard_normal((n, cout, ho, wo)).astype(dtype)
    y = winograd.output(m, n, (ho, wo))
    assert y.shape == g.shape and y.dtype == dtype
    lhs, rhs = _inner(y, g), _inner(m, winograd.transformed_grad(g))
    assert abs(lhs - rhs) <= tol * max(1.0, abs(lhs))

    wt = rng.standard_normal((cout, cin, 3, 3)).astype(dtype)
    du = rng.standard_normal((16, cin, cout)).astype(dtype)
    lhs = _inner(winograd.weight_transform(wt), du)
    rhs = _inner(wt, winograd.weight_transform_adjoint(du))
    assert abs(lhs - rhs) <= tol * max(1.0, abs(lhs))


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_convolution_and_gradients_match_torch(shape, dtype, tol):
    n, cin, cout, h, w, padding = shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    wt = rng.standard_normal((cout, cin, 3, 3)).astype(dtype)
    xt, wtt = torch.tensor(x, requires_grad=True), torch.tensor(wt, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wtt, padding=padding)
    g = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    dxt, dwt = torch.autograd.grad(yt, [xt, wtt], torch.tensor(g))

    u, v = winograd.weight_transform(wt), winograd.transformed_input(x, padding)
    y = winograd.output(v @ u, n, _out_hw(h, w, padding))
    dm = winograd.transformed_grad(g)
    dx = winograd.input_adjoint(dm @ u.swapaxes(-1, -2), x.shape, padding)
    dw = winograd.weight_transform_adjoint(v.swapaxes(-1, -2) @ dm)
    for got, want in [(y, yt), (dx, dxt), (dw, dwt)]:
        want = want.detach().numpy()
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * 10 * np.abs(want).max())


@pytest.mark.parametrize("chunk", [None, 1, 2, 5])
@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(5, 8, 16, 14, 13, (1, 1)), (19, 3, 4, 6, 5, (1, 1))],
                         ids=IDS + ["5x8x16x14x13-p11", "19x3x4x6x5-p11"])
def test_fused_kernels_equal_the_maps_one_by_one(shape, dtype, tol, chunk):
    """fused_forward and fused_backward: the same products as the batched route, whether
    a chunk holds one image, several, or all (the last chunk short or not), and whether
    each of dU's partial sums takes one chunk or several (19 images in chunks of 1 or 2:
    more chunks than FUSED_SLOTS)."""
    n, cin, cout, h, w, padding = shape
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    u = rng.standard_normal((16, cin, cout)).astype(dtype)
    g = rng.standard_normal((n, cout) + _out_hw(h, w, padding)).astype(dtype)
    v = winograd.transformed_input(x, padding)
    dm = winograd.transformed_grad(g)
    want = [winograd.output(v @ u, n, _out_hw(h, w, padding)),
            winograd.input_adjoint(dm @ u.swapaxes(-1, -2), x.shape, padding),
            v.swapaxes(-1, -2) @ dm]
    got = [winograd.fused_forward(x, u, padding, chunk)]
    got += winograd.fused_backward(g, x, u, padding, chunk)
    for a, b in zip(got, want):
        assert a.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())


def test_fused_backward_sums_the_same_way_on_any_number_of_threads():
    """dU's partial sums are a fixed split of the chunks, not one per thread: the result
    is bit-identical whichever thread took which chunk, and with one thread."""
    import kernels

    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6, 9, 9)).astype(np.float32)
    u = rng.standard_normal((16, 6, 5)).astype(np.float32)
    g = rng.standard_normal((40, 5, 9, 9)).astype(np.float32)
    got = []
    for threads in (1, 2, 3):
        with kernels.configure(num_threads=threads, tune_threads=False):
            got.append(winograd.fused_backward(g, x, u, (1, 1), chunk=1))
    for dx, du in got[1:]:
        np.testing.assert_array_equal(dx, got[0][0])
        np.testing.assert_array_equal(du, got[0][1])


def test_images_per_chunk_bounds_a_chunk_and_keeps_each_gemm_on_one_thread():
    assert winograd.images_per_chunk(64, 49, 16, 32, 4) == 8  # (64,16->32,14): 8 work items
    assert winograd.images_per_chunk(3, 1, 1, 1, 4) == 1  # a small batch: one image each
    assert winograd.images_per_chunk(8, 3136, 64, 64, 4) == 1  # never fewer than one
    for n, p, cin, cout in [(64, 49, 16, 32), (32, 16, 64, 128), (16, 49, 32, 32),
                            (256, 49, 8, 16)]:
        b = winograd.images_per_chunk(n, p, cin, cout, 4)
        assert b * p * cin * cout <= 1 << 18 and 16 * b * p * (2 * cin + cout) * 4 <= 1 << 21
        assert n // b >= 8
