"""Each library alone in its own process: the same workloads as the pytest-benchmark
suites, without the other library's thread pools in the process.

    python bench/alone.py tape
    python bench/alone.py torch

Prints the median time of each workload (after 10 warm-up steps). Run it on an idle
machine, twice: this kind of VM moves by 20-40% between runs.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from workloads import CONV_SHAPES, lenet, mlp  # the same workloads as the suites


MODELS = [("mlp", mlp, (128, 784)), ("lenet", lenet, (64, 1, 28, 28))]


def median_ms(fn, n=60, warm=10):
    """Median of ``n`` calls, in ms, after ``warm`` untimed ones."""
    for _ in range(warm):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def tape_steps():
    """{workload name: a function running one step of it on tape}."""
    import tape
    import tape.functional as F
    import tape.nn as nn

    def training_step(make, shape):
        model = make(nn)
        params = list(model.parameters())
        opt, loss_fn = tape.optim.SGD(params, lr=0.01, momentum=0.9), nn.CrossEntropyLoss()
        x = tape.tensor(rng.standard_normal(shape).astype(np.float32))
        y = tape.tensor(rng.integers(0, 10, shape[0]))

        def step():
            with tape.Tape() as t:
                loss = loss_fn(model(x), y)
            opt.step(t.gradient(loss, params))

        return step

    rng = np.random.default_rng(0)
    out = {f"{name} step": training_step(make, shape) for name, make, shape in MODELS}
    for n, cin, cout, hw in CONV_SHAPES:
        x = tape.tensor(rng.standard_normal((n, cin, hw, hw)).astype(np.float32),
                        requires_grad=True)
        w = tape.tensor(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32),
                        requires_grad=True)
        g = rng.standard_normal((n, cout, hw, hw)).astype(np.float32)

        def conv(x=x, w=w, g=g):
            with tape.Tape() as t:
                y = F.conv2d(x, w, padding=1)
            t.gradient(y, [x, w], output_gradients=g)

        out[f"conv2d {(n, cin, cout, hw)}"] = conv
    x = tape.tensor(np.linspace(-1, 1, 4, dtype=np.float32), requires_grad=True)

    def chain():
        with tape.Tape() as t:
            y = x
            for _ in range(50):
                y = (y * 0.999 + 0.001).tanh() - y * 0.5
            s = y.sum()
        t.gradient(s, x)

    out["250-op chain"] = chain
    return out


def torch_steps():
    """{workload name: a function running one step of it on PyTorch (2 threads)}."""
    import torch

    torch.set_num_threads(2)
    nn, F = torch.nn, torch.nn.functional
    def training_step(make, shape):
        model = make(nn)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.tensor(rng.standard_normal(shape).astype(np.float32))
        y = torch.tensor(rng.integers(0, 10, shape[0]))

        def step():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

        return step

    rng = np.random.default_rng(0)
    out = {f"{name} step": training_step(make, shape) for name, make, shape in MODELS}
    for n, cin, cout, hw in CONV_SHAPES:
        x = torch.randn(n, cin, hw, hw, requires_grad=True)
        w = torch.randn(cout, cin, 3, 3, requires_grad=True)
        g = torch.randn(n, cout, hw, hw)
        out[f"conv2d {(n, cin, cout, hw)}"] = (
            lambda x=x, w=w, g=g: torch.autograd.grad(F.conv2d(x, w, padding=1), [x, w], g))
    x = torch.linspace(-1, 1, 4, requires_grad=True)

    def chain():
        y = x
        for _ in range(50):
            y = (y * 0.999 + 0.001).tanh() - y * 0.5
        torch.autograd.grad(y.sum(), x)

    out["250-op chain"] = chain
    return out


def steps_of(which):
    return tape_steps() if which == "tape" else torch_steps()


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "tape"
    results = {name: median_ms(fn, 290 if "chain" in name else 50)
               for name, fn in steps_of(which).items()}
    for name, ms in results.items():
        print(f"{which:5s} alone  {name:32s} {ms:8.3f} ms")
