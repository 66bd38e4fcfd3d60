"""conv2d and pooling: the routes conv2d takes (Winograd fused and batched, direct, im2col)
and their agreement, pooling's indices, errors. Their values, gradients, Jacobians and
second order against PyTorch are rows of the op table (tests/optable/conv.py, run by
test_ops.py on each device)."""

import numpy as np
import pytest
import torch
from optable import ROWS

import tape
import tape.functional as F

TF = torch.nn.functional

def test_max_pool2d_return_indices_match_torch(device):
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6))
    _, idx = F.max_pool2d(tape.tensor(x, device=device), 2, return_indices=True)
    assert idx.device == device
    _, want = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), want.numpy())


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: F.conv2d(tape.zeros(2, 3, 5, 5), tape.zeros(4, 2, 3, 3)), ValueError,
         r"conv2d: input of shape \(2, 3, 5, 5\) has 3 channels"),
        (lambda: F.conv2d(tape.zeros(3, 5, 5), tape.zeros(4, 3, 3, 3)), ValueError,
         r"conv2d: expects input \(N, C, H, W\)"),
        (lambda: F.conv2d(tape.zeros(1, 3, 2, 2), tape.zeros(4, 3, 3, 3)), ValueError,
         r"2, 2|kernel|larger"),
        (lambda: F.conv2d(tape.zeros(1, 3, 5, 5), tape.zeros(4, 3, 3, 3), tape.zeros(3)),
         ValueError, r"bias of shape \(3,\) should be \(4,\)"),
        (lambda: F.max_pool2d(tape.zeros(1, 1, 1, 1), 2), ValueError, r"max_pool2d"),
        (lambda: F.max_pool2d(tape.zeros(4, 4), 2), ValueError, r"\(N, C, H, W\)"),
        (lambda: F.avg_pool2d(tape.zeros(1, 1, 4, 4), 2, ceil_mode=True), NotImplementedError,
         r"ceil_mode"),
    ],
)
def test_bad_shapes_raise_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


WINOGRAD_ROWS = [r for r in ROWS if r.name.startswith("winograd")]


@pytest.mark.parametrize("row", WINOGRAD_ROWS, ids=[r.name for r in WINOGRAD_ROWS])
def test_winograd_route_is_taken_on_the_cpu_and_agrees_with_im2col(row):
    """The rows above only test Winograd if conv2d takes that route; and its two forms (the
    fused kernels, the batched GEMMs) and im2col give the same values and gradients."""
    import kernels
    from tape.ops import winograd as conv

    if conv._wino is None:
        pytest.skip("numba is not installed: every convolution takes the im2col route")
    default = {entry[0].name for entry in _recorded(row)[0]._entries}
    assert ("winograd_gemm" in default) == ("batched" in row.name), default
    assert ("winograd_conv" in default) == ("batched" not in row.name), default
    results = {}
    for route, min_channels, fused_max, op in [("fused", 8, 10**9, "winograd_conv"),
                                               ("batched", 8, 0, "winograd_gemm"),
                                               ("im2col", 10**9, 0, "conv_im2col")]:
        with kernels.configure(winograd_min_channels=min_channels,
                               winograd_fused_max_channels=fused_max):
            t, xs, y, loss = _recorded(row)
        assert op in {entry[0].name for entry in t._entries}, route
        results[route] = [y] + t.gradient(loss, xs)
    for route in ["fused", "batched"]:
        for a, b in zip(results[route], results["im2col"]):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)


def _recorded(row):
    xs = [tape.tensor(a, requires_grad=True) for a in row.inputs("float64")]
    with tape.Tape() as t:
        y = row.tape(*xs)
        loss = (y * y).sum()
    return t, xs, y, loss


def test_without_numba_conv2d_takes_the_im2col_route(monkeypatch):
    """Without numba the registry has no Winograd and no direct route."""
    import kernels

    cpu = kernels.registry._impls["conv2d"]["cpu"]
    monkeypatch.setitem(kernels.registry._impls["conv2d"], "cpu", {
        impl: entry for impl, entry in cpu.items() if impl not in ("winograd", "direct")})
    x = tape.tensor(np.ones((1, 8, 4, 4)), requires_grad=True)
    w = tape.tensor(np.ones((2, 8, 3, 3)), requires_grad=True)
    with tape.Tape() as t:
        y = F.conv2d(x, w, padding=1)
        loss = y.sum()
    assert "conv_im2col" in {entry[0].name for entry in t._entries}
    # each weight sees the input in (3 + 4 + 3) ** 2 = 100 of its placements
    assert y.numpy()[0, 0, 1, 1] == 72.0 and t.gradient(loss, w).numpy().sum() == 2 * 8 * 100


def test_without_blas_in_kernels_few_channels_take_the_batched_winograd_route(monkeypatch):
    """No SciPy (or a numba without its GEMM entry): the fused kernels cannot call BLAS."""
    from tape.ops import winograd as conv

    if conv._wino is None:
        pytest.skip("numba is not installed: every convolution takes the im2col route")
    x = tape.tensor(np.random.default_rng(0).standard_normal((2, 8, 5, 5)), requires_grad=True)
    w = tape.tensor(np.random.default_rng(1).standard_normal((4, 8, 3, 3)), requires_grad=True)
    routes = {}
    for has_blas in [True, False]:
        monkeypatch.setattr(conv._wino, "HAS_BLAS", has_blas)
        with tape.Tape() as t:
            y = F.conv2d(x, w, padding=1)
        routes[has_blas] = {entry[0].name for entry in t._entries}, y.numpy()
    assert "winograd_conv" in routes[True][0] and "winograd_gemm" in routes[False][0]
    np.testing.assert_allclose(routes[True][1], routes[False][1], rtol=1e-12, atol=1e-12)


def test_a_drop_in_im2col_takes_every_convolution():
    """With an im2col selected by kernels.use, conv2d runs it even where it would take the
    Winograd route, so that an experiment with the kernel measures the kernel."""
    import kernels

    x = tape.tensor(np.random.default_rng(0).standard_normal((1, 8, 5, 5)), requires_grad=True)
    w = tape.tensor(np.random.default_rng(1).standard_normal((2, 8, 3, 3)), requires_grad=True)
    from tape.ops import winograd as conv

    if conv._wino is None:
        pytest.skip("numba is not installed: every convolution takes the im2col route")
    routes = {}
    for impl in ["numba", "reference"]:
        with kernels.use("im2col", impl), tape.Tape() as t:
            y = F.conv2d(x, w, padding=1)
        routes[impl] = {entry[0].name for entry in t._entries}
        routes[impl + " y"] = y.numpy()
    assert "winograd_conv" in routes["numba"]
    assert not {"winograd_conv", "winograd_gemm"} & routes["reference"]
    assert "conv_im2col" in routes["reference"]
    np.testing.assert_allclose(routes["numba y"], routes["reference y"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride, padding", [(1, 1), ((2, 1), (0, 2))])
def test_one_input_channel_takes_the_direct_kernels_and_agrees_with_im2col(stride, padding):
    """Cin=1 on the CPU: the direct kernels (one entry); with a drop-in im2col selected,
    the im2col route: the same values and gradients."""
    import kernels
    from tape.ops import conv

    if conv._direct is None:
        pytest.skip("numba is not installed: every convolution takes the im2col route")
    rng = np.random.default_rng(0)
    x = tape.tensor(rng.standard_normal((3, 1, 9, 8)), requires_grad=True)
    w = tape.tensor(rng.standard_normal((4, 1, 3, 2)), requires_grad=True)
    g = rng.standard_normal((3, 4) + F.conv2d(x, w, stride=stride, padding=padding).shape[2:])
    runs = {}
    for impl in ["numba", "reference"]:
        with kernels.use("im2col", impl), tape.Tape() as t:
            y = F.conv2d(x, w, stride=stride, padding=padding)
        names = {entry[0].name for entry in t._entries}
        runs[impl] = names, y.numpy(), [d.numpy() for d in t.gradient(y, [x, w],
                                                                      output_gradients=g)]
    assert runs["numba"][0] == {"direct_conv"} and "conv_im2col" in runs["reference"][0]
    for a, b in zip([runs["numba"][1], *runs["numba"][2]],
                    [runs["reference"][1], *runs["reference"][2]]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def _routes_taken(fn, *args):
    with tape.Tape() as t:
        y = fn(*args)
    return {entry[0].name for entry in t._entries} & {"conv_im2col", "winograd_conv",
                                                      "winograd_gemm", "direct_conv"}, y


def test_the_route_is_the_registrys_choice():
    """kernels.use("conv2d", route) takes every convolution of the block down that route
    where the route can take it (else the reference's: tape's im2col route)."""
    import kernels

    rng = np.random.default_rng(0)
    wide = [tape.tensor(rng.standard_normal(s), requires_grad=True)
            for s in [(2, 8, 5, 5), (3, 8, 3, 3)]]
    grey = [tape.tensor(rng.standard_normal(s), requires_grad=True)
            for s in [(2, 1, 5, 5), (3, 1, 3, 2)]]  # 3x2: not Winograd's
    few = [tape.tensor(rng.standard_normal(s), requires_grad=True)
           for s in [(2, 3, 5, 5), (3, 3, 3, 3)]]
    conv = lambda x, w: F.conv2d(x, w, padding=1)  # noqa: E731
    expected = {  # selected implementation -> the route each of wide, grey, few takes
        "auto": ({"winograd_conv"}, {"direct_conv"}, {"conv_im2col"}),
        "im2col": ({"conv_im2col"},) * 3,
        "winograd": ({"winograd_conv"}, {"conv_im2col"}, {"winograd_conv"}),
        "direct": ({"conv_im2col"}, {"direct_conv"}, {"conv_im2col"}),
        "reference": ({"conv_im2col"},) * 3,
    }
    if kernels.available()["conv2d"]["cpu"] != sorted(expected, key=lambda i: (i != "auto", i)):
        pytest.skip("numba is not installed: every convolution takes the im2col route")
    values = {}
    for impl, routes in expected.items():
        with kernels.use("conv2d", impl):
            for name, args, route in zip(["wide", "grey", "few"], [wide, grey, few], routes):
                taken, y = _routes_taken(conv, *args)
                assert taken == route, (impl, name, taken)
                values.setdefault(name, []).append(y.numpy())
    for name, ys in values.items():
        for y in ys[1:]:
            np.testing.assert_allclose(y, ys[0], rtol=1e-12, atol=1e-12)


def test_each_group_with_one_input_channel_takes_the_direct_kernels():
    import kernels

    if "direct" not in kernels.available()["conv2d"]["cpu"]:
        pytest.skip("numba is not installed: every convolution takes the im2col route")
    rng = np.random.default_rng(1)
    x = tape.tensor(rng.standard_normal((2, 3, 6, 5)), requires_grad=True)
    w = tape.tensor(rng.standard_normal((6, 1, 3, 3)), requires_grad=True)
    runs = {}
    for impl in ["auto", "im2col"]:
        with kernels.use("conv2d", impl), tape.Tape() as t:
            y = F.conv2d(x, w, stride=(1, 2), padding=1, groups=3)
            loss = (y * y).sum()
        runs[impl] = {e[0].name for e in t._entries}, [y] + t.gradient(loss, [x, w])
    assert "direct_conv" in runs["auto"][0] and "im2col" not in runs["auto"][0]
    assert "conv_im2col" in runs["im2col"][0]
    for a, b in zip(runs["auto"][1], runs["im2col"][1]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
