"""conv2d's route is the registry's choice (kernels/convolution.py): listed, selectable,
"auto" picking by applicability and the settings, a drop-in im2col taking every
convolution, and the registry's ``applies`` fallback."""

from __future__ import annotations

import numpy as np
import pytest

import kernels

pytestmark = pytest.mark.skipif("winograd" not in kernels.available()["conv2d"]["cpu"],
                                reason="numba is not installed: only the im2col route")


def _arrays(x_shape, w_shape, dtype=np.float32):
    rng = np.random.default_rng(0)
    return rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)


WIDE = _arrays((2, 8, 6, 6), (4, 8, 3, 3))  # 3x3, 8 channels: Winograd
FEW = _arrays((2, 3, 6, 6), (4, 3, 3, 3))  # 3x3, 3 channels: im2col
GREY = _arrays((2, 1, 6, 6), (4, 1, 3, 2))  # one channel: direct


def test_every_route_is_listed_with_auto_the_default():
    assert kernels.available()["conv2d"]["cpu"] == [
        "auto", "direct", "im2col", "reference", "winograd"]
    assert kernels.default_impl("conv2d", "cpu") == "auto"


@pytest.mark.parametrize("arrays, auto, selected", [
    (WIDE, "winograd", {"winograd": "winograd", "direct": "reference"}),
    (FEW, "im2col", {"winograd": "winograd", "direct": "reference"}),
    (GREY, "direct", {"winograd": "reference", "direct": "direct"}),
], ids=["wide", "few", "grey"])
def test_the_route_auto_and_a_selection_take(arrays, auto, selected):
    assert kernels.conv2d_route(*arrays, 1, 1) == auto
    for impl, route in {**selected, "im2col": "im2col", "reference": "reference"}.items():
        with kernels.use("conv2d", impl):
            assert kernels.conv2d_route(*arrays, 1, 1) == route


def test_auto_follows_the_settings_and_the_dtypes():
    with kernels.configure(winograd_min_channels=9):
        assert kernels.conv2d_route(*WIDE, 1, 1) == "im2col"
    with kernels.configure(winograd_min_channels=3):
        assert kernels.conv2d_route(*FEW, 1, 1) == "winograd"
    assert kernels.conv2d_route(*WIDE, 2, 1) == "im2col"  # stride 2: not Winograd's
    assert kernels.conv2d_route(*WIDE, 1, 1, 2) == "im2col"  # dilated
    x, w = WIDE
    assert kernels.conv2d_route(x.astype(np.int64), w.astype(np.int64), 1, 1) == "im2col"
    assert kernels.conv2d_route(x, w.astype(np.float64), 1, 1) == "im2col"  # mixed dtypes
    ints = kernels.conv2d(x.astype(np.int64), w.astype(np.int64), 1, 1)
    assert ints.dtype == np.int64


def test_a_drop_in_im2col_takes_every_convolution():
    with kernels.use("im2col", "reference"):
        for arrays in (WIDE, FEW, GREY):
            assert kernels.conv2d_route(*arrays, 1, 1) == "im2col"


def test_conv2d_checks_the_weights():
    x, w = WIDE
    with pytest.raises(ValueError, match=r"conv2d: weight of shape \(4, 3, 3, 3\) should be "
                                         r"\(Cout, C, kh, kw\) with C the input's 8"):
        kernels.conv2d(x, w[:, :3])
    with pytest.raises(ValueError, match="conv2d: kernel 3x3 .* larger than the padded input"):
        kernels.conv2d(x[:, :, :2], w)


def test_an_implementation_may_take_only_some_calls():
    """``applies``: the calls it refuses go to the reference, as other dtypes do."""
    seen = []

    @kernels.register("conv2d", "cpu", impl="stride1", applies=lambda x, w, g: g.stride == (1, 1))
    def stride1(x, w, g):
        seen.append(g.stride)
        return kernels.reference.conv2d(x, w, g)

    try:
        with kernels.use("conv2d", "stride1"):
            assert kernels.conv2d_route(*FEW, 1, 1) == "stride1"
            assert kernels.conv2d_route(*FEW, 2, 1) == "reference"
            kernels.conv2d(*FEW, 2, 1)
            kernels.conv2d(*FEW, 1, 1)
        assert seen == [(1, 1)]
    finally:
        kernels.unregister("conv2d", "cpu", "stride1")
    assert kernels.default_impl("conv2d", "cpu") == "auto"


@pytest.mark.parametrize("n, cin, hw, cout, dtype, fused", [
    (64, 16, 14, 32, np.float32, True),  # few channels: the transforms' traffic dominates
    (32, 64, 8, 128, np.float32, True),  # more channels, 2 images = 32 rows per GEMM
    (32, 64, 8, 128, np.float64, True),  # the 2 MiB budget still allows 2 images
    (16, 128, 8, 128, np.float32, False),  # one image per chunk: 16 rows
    (8, 64, 4, 128, np.float32, False),  # 4 rows
    (16, 128, 8, 256, np.float32, False),  # one image's GEMMs above 2**18
    (2, 16, 8, 32, np.float32, True),  # few channels, small batch: fused all the same
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_winograd_takes_the_fused_kernels_for_few_channels_or_enough_rows(
        n, cin, hw, cout, dtype, fused):
    from kernels.cpu.conv2d import winograd_fused

    itemsize = np.dtype(dtype).itemsize
    assert winograd_fused(n, (hw, hw), cin, cout, itemsize) == fused
    with kernels.configure(winograd_fused_max_channels=0):  # 0: the fused kernels off
        assert not winograd_fused(n, (hw, hw), cin, cout, itemsize)
