"""Training steps of small models on tape and on PyTorch (CPU, 2 threads), same data.

Targets (issue 4): MLP 784-256-256-10 at batch 128 at most 0.9x PyTorch's time; the
LeNet-style CNN (conv 1->8, pool, conv 8->16, pool, linear 784->128->10) at batch 64 at
most 1.0x PyTorch's.
"""

import numpy as np
import pytest

import tape
import tape.nn as nn
from workloads import lenet, mlp

CASES = {"mlp": (mlp, (128, 784)), "lenet": (lenet, (64, 1, 28, 28))}


def _batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, shape[0])


def _tape_step(model, params, opt, loss_fn, x, y):
    with tape.Tape() as t:
        loss = loss_fn(model(x), y)
    opt.step(t.gradient(loss, params))
    return loss


def _torch_step(torch, model, opt, x, y):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


@pytest.mark.parametrize("name", list(CASES))
def test_step_tape(benchmark, name):
    make, shape = CASES[name]
    model = make(nn)
    params = list(model.parameters())
    opt = tape.optim.SGD(params, lr=0.01, momentum=0.9)
    x, y = _batch(shape)
    x, y = tape.tensor(x), tape.tensor(y)
    benchmark.group = f"{name} training step {shape}"
    benchmark(_tape_step, model, params, opt, nn.CrossEntropyLoss(), x, y)


@pytest.mark.parametrize("name", list(CASES))
def test_step_torch(benchmark, torch_module, name):
    torch = torch_module
    make, shape = CASES[name]
    model = make(torch.nn)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _batch(shape)
    x, y = torch.tensor(x), torch.tensor(y)
    benchmark.group = f"{name} training step {shape}"
    benchmark(_torch_step, torch, model, opt, x, y)


@pytest.mark.parametrize("name", list(CASES))
def test_steps_agree_with_torch(torch_module, name):
    """The benchmarked steps compute the same thing: same weights in, same loss out."""
    torch = torch_module
    make, shape = CASES[name]
    theirs, ours = make(torch.nn), make(nn)
    ours.load_state_dict({k: tape.tensor(v.detach().numpy()) for k, v in
                          theirs.state_dict().items()})
    x, y = _batch(shape)
    params = list(ours.parameters())
    opt = tape.optim.SGD(params, lr=0.01, momentum=0.9)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        a = _tape_step(ours, params, opt, nn.CrossEntropyLoss(), tape.tensor(x), tape.tensor(y))
        b = _torch_step(torch, theirs, topt, torch.tensor(x), torch.tensor(y))
        np.testing.assert_allclose(a.item(), b.item(), rtol=1e-4)
