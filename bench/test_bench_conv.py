"""conv2d (3x3, padding 1) and max_pool2d (2x2) forward + gradient on tape, on the shapes
bench/compare.py measures against PyTorch."""

import pytest
from workloads import CONV_SHAPES, POOL_SHAPE, conv_name, tape_step


def conv_flops(n, cin, cout, hw):
    """Forward + input gradient + weight gradient: three GEMMs of 2*N*Cout*Cin*9*H*W."""
    return 3 * 2 * n * cout * cin * 9 * hw * hw


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=conv_name)
def test_conv2d(benchmark, shape):
    benchmark.group = f"{conv_name(shape)} fwd+grad"
    benchmark.extra_info["gflops"] = conv_flops(*shape) / 1e9
    benchmark(tape_step(conv_name(shape)))


def test_max_pool2d(benchmark):
    benchmark.group = f"max_pool2d 2x2 fwd+grad {POOL_SHAPE}"
    benchmark(tape_step("max_pool2d"))
