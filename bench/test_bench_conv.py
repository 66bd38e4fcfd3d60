"""conv2d and max_pool2d, forward + gradient, on tape and on PyTorch (CPU, 2 threads).

Targets (issue 3): conv2d 3x3 pad 1 at most 1.0x PyTorch's time on each shape, at least
100 GFLOP/s on the last; max_pool2d 2x2 on (64, 32, 28, 28) at most 0.5x PyTorch's.
"""

import numpy as np
import pytest

import tape
import tape.functional as F
from workloads import CONV_SHAPES


def conv_flops(n, cin, cout, hw):
    """Forward + input gradient + weight gradient: three GEMMs of 2*N*Cout*Cin*9*H*W."""
    return 3 * 2 * n * cout * cin * 9 * hw * hw


def _data(n, cin, cout, hw, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32)
    g = rng.standard_normal((n, cout, hw, hw)).astype(np.float32)
    return x, w, g


def _tape_conv_step(x, w, g):
    with tape.Tape() as t:
        y = F.conv2d(x, w, padding=1)
    return t.gradient(y, [x, w], output_gradients=g)


def _torch_conv_step(torch, x, w, g):
    y = torch.nn.functional.conv2d(x, w, padding=1)
    return torch.autograd.grad(y, [x, w], g)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv2d_tape(benchmark, shape):
    x, w, g = _data(*shape)
    x, w = tape.tensor(x, requires_grad=True), tape.tensor(w, requires_grad=True)
    benchmark.group = f"conv2d fwd+grad {shape}"
    benchmark.extra_info["gflops"] = conv_flops(*shape) / 1e9
    benchmark(_tape_conv_step, x, w, g)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv2d_torch(benchmark, torch_module, shape):
    torch = torch_module
    x, w, g = (torch.tensor(a) for a in _data(*shape))
    x.requires_grad_(True)
    w.requires_grad_(True)
    benchmark.group = f"conv2d fwd+grad {shape}"
    benchmark(_torch_conv_step, torch, x, w, g)


def test_conv2d_gradients_agree(torch_module):
    torch = torch_module
    x, w, g = _data(4, 3, 5, 8)
    xs, ws = tape.tensor(x, requires_grad=True), tape.tensor(w, requires_grad=True)
    ours = _tape_conv_step(xs, ws, g)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    theirs = _torch_conv_step(torch, xt, wt, torch.tensor(g))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


POOL = (64, 32, 28, 28)


def test_max_pool2d_tape(benchmark):
    rng = np.random.default_rng(0)
    x = tape.tensor(rng.standard_normal(POOL).astype(np.float32), requires_grad=True)
    g = rng.standard_normal((64, 32, 14, 14)).astype(np.float32)

    def step():
        with tape.Tape() as t:
            y = F.max_pool2d(x, 2)
        return t.gradient(y, x, output_gradients=g)

    benchmark.group = f"max_pool2d 2x2 fwd+grad {POOL}"
    benchmark(step)


def test_max_pool2d_torch(benchmark, torch_module):
    torch = torch_module
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal(POOL).astype(np.float32), requires_grad=True)
    g = torch.tensor(rng.standard_normal((64, 32, 14, 14)).astype(np.float32))

    def step():
        y = torch.nn.functional.max_pool2d(x, 2)
        return torch.autograd.grad(y, x, g)

    benchmark.group = f"max_pool2d 2x2 fwd+grad {POOL}"
    benchmark(step)
