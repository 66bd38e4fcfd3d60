"""Per-op overhead: a chain of tiny elementwise ops on a (4,) tensor, forward + gradient.

The arrays are so small that the time is all bookkeeping: recording each op on the tape
and replaying its rule. Target (issue 2): tape's time per op at most 0.35x PyTorch's.
"""

import numpy as np
import pytest

import tape

N_STEPS = 50  # five ops per step (mul, add, tanh, mul, sub): 250 ops, plus the final sum


def _tape_chain(x):
    with tape.Tape() as t:
        y = x
        for _ in range(N_STEPS):
            y = (y * 0.999 + 0.001).tanh() - y * 0.5
        loss = y.sum()
    return t.gradient(loss, x)


def _torch_chain(torch, x):
    y = x
    for _ in range(N_STEPS):
        y = (y * 0.999 + 0.001).tanh() - y * 0.5
    loss = y.sum()
    return torch.autograd.grad(loss, x)[0]


def test_chain_matches_torch(torch_module):
    torch = torch_module
    x0 = np.linspace(-1, 1, 4)
    g_tape = _tape_chain(tape.tensor(x0, requires_grad=True)).numpy()
    g_torch = _torch_chain(torch, torch.tensor(x0, requires_grad=True)).numpy()
    np.testing.assert_allclose(g_tape, g_torch, rtol=1e-10)


@pytest.mark.benchmark(group="per-op overhead (250-op chain, (4,))")
def test_overhead_tape(benchmark):
    x = tape.tensor(np.linspace(-1, 1, 4, dtype=np.float32), requires_grad=True)
    benchmark(_tape_chain, x)


@pytest.mark.benchmark(group="per-op overhead (250-op chain, (4,))")
def test_overhead_torch(benchmark, torch_module):
    torch = torch_module
    x = torch.linspace(-1, 1, 4, requires_grad=True)
    benchmark(_torch_chain, torch, x)
