"""The benchmarked workloads, written once for every library that runs them.

Importing this module imports neither tape nor PyTorch: each ``*_steps`` function imports
its own library when called, so that ``compare.py`` can time each library in a process
that holds only that library. A step is a function of no arguments that runs one whole
step (forward and gradient, and the optimizer's update for the training steps).

Sides:

* ``tape``: the public API, as a user writes it (``with tape.Tape() as t``).
* ``torch``: PyTorch's public API, its default settings (threads included).
* ``numpy``: the MLP step written by hand in plain numpy, reusing its buffers: the floor
  for any engine built on numpy (docs/performance.md).

``device="cuda"``: the same workloads on the GPU (LeNet at batch 256), each step ending
with a device synchronize so that a step's time is the GPU's work, not its launches.
PyTorch then computes in full float32 (TF32 off), as CuPy does.
"""

from __future__ import annotations

import numpy as np

CONV_SHAPES = [(64, 1, 8, 28), (64, 16, 32, 14), (32, 64, 128, 8)]  # N, Cin, Cout, H=W
POOL_SHAPE = (64, 32, 28, 28)  # max_pool2d 2x2, stride 2
CHAIN_REPEATS = 40  # five ops each (mul, add, tanh, mul, sub): 200 ops, then a sum
MLP_BATCH, LENET_BATCH, LENET_BATCH_GPU = 128, 64, 256
PER_EXAMPLE_BATCH = 64  # per-example gradients (func.vmap of func.grad)
LR, MOMENTUM = 0.01, 0.9


def conv_name(shape):
    """"conv2d 64x16x14x14->32": the input's shape, then the output channels."""
    n, cin, cout, hw = shape
    return f"conv2d {n}x{cin}x{hw}x{hw}->{cout}"


CONV_BY_NAME = {}  # filled below: conv_name(shape) -> shape
# name -> what it is; the order of the comparison table
WORKLOADS = {
    "chain": f"chain of {5 * CHAIN_REPEATS} tiny elementwise ops on a (4,) tensor, fwd + grad",
    "mlp": f"MLP 784-256-256-10, batch {MLP_BATCH}, SGD-momentum step",
    "lenet": f"LeNet (conv 1->8, pool, conv 8->16, pool, 784-128-10), batch {LENET_BATCH}, "
             "SGD-momentum step",
    **{conv_name(s): "conv2d 3x3 pad 1, fwd + input and weight gradients"
       for s in CONV_SHAPES},
    "max_pool2d": f"max_pool2d 2x2 on {POOL_SHAPE}, fwd + grad",
    "per_example": f"per-example gradients, MLP 784-256-10, batch {PER_EXAMPLE_BATCH}: "
                   "vmap(grad(loss), in_axes=(None, 0, 0))",
}
CONV_BY_NAME.update((conv_name(s), s) for s in CONV_SHAPES)


def mlp(m):
    """MLP 784-256-256-10 (``m`` is ``tape.nn`` or ``torch.nn``)."""
    return m.Sequential(m.Linear(784, 256), m.ReLU(), m.Linear(256, 256), m.ReLU(),
                        m.Linear(256, 10))


def lenet(m):
    """LeNet-style CNN: conv 1->8, pool, conv 8->16, pool, linear 784->128->10."""
    return m.Sequential(
        m.Conv2d(1, 8, 3, padding=1), m.ReLU(), m.MaxPool2d(2),
        m.Conv2d(8, 16, 3, padding=1), m.ReLU(), m.MaxPool2d(2),
        m.Flatten(), m.Linear(784, 128), m.ReLU(), m.Linear(128, 10),
    )


MODELS = {"mlp": (mlp, (MLP_BATCH, 784)), "lenet": (lenet, (LENET_BATCH, 1, 28, 28))}


def model_shape(name, device="cpu"):
    """(model maker, input shape) of a training workload on ``device``."""
    make, shape = MODELS[name]
    if name == "lenet" and device == "cuda":
        shape = (LENET_BATCH_GPU,) + shape[1:]
    return make, shape


def batch(shape, seed=0):
    """A batch of float32 inputs and integer labels in [0, 10)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, shape[0])


def conv_data(shape, seed=0):
    n, cin, cout, hw = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32)
    g = rng.standard_normal((n, cout, hw, hw)).astype(np.float32)
    return x, w, g


def pool_data(seed=0):
    rng = np.random.default_rng(seed)
    n, c, h, w = POOL_SHAPE
    x = rng.standard_normal(POOL_SHAPE).astype(np.float32)
    g = rng.standard_normal((n, c, h // 2, w // 2)).astype(np.float32)
    return x, g


def chain_input():
    return np.linspace(-1, 1, 4, dtype=np.float32)


def chain(y):
    """The chain's ops, the same code for both libraries."""
    for _ in range(CHAIN_REPEATS):
        y = (y * 0.999 + 0.001).tanh() - y * 0.5
    return y.sum()


def synced(fn, sync):
    """``fn`` followed by ``sync()`` (a device synchronize, or nothing on the CPU)."""

    def step():
        out = fn()
        sync()
        return out

    return step


# ----- tape -----


def _tape_sync(device):
    """A function that waits for ``device`` to finish its queued work."""
    if device == "cpu":
        return lambda: None
    from tape import backend

    cp = backend.cupy_or_none()
    return cp.cuda.get_current_stream().synchronize


def tape_training_step(name, seed=0, device="cpu"):
    """(step, model, optimizer) for one of MODELS on tape."""
    import tape
    import tape.nn as nn

    make, shape = model_shape(name, device)
    model = make(nn).to(device)
    params = list(model.parameters())
    opt = tape.optim.SGD(params, lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    x, y = batch(shape, seed)
    x, y = tape.tensor(x, device=device), tape.tensor(y, device=device)
    sync = _tape_sync(device)

    def step():
        with tape.Tape() as t:
            loss = loss_fn(model(x), y)
        opt.step(t.gradient(loss, params))
        sync()
        return loss

    return step, model, opt


def per_example_data(seed=0):
    """Parameters (784-256-10, float32) and a batch of 64 examples with labels."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((784, 256)) * 0.05, np.zeros(256),
              rng.standard_normal((256, 10)) * 0.05, np.zeros(10)]
    x = rng.standard_normal((PER_EXAMPLE_BATCH, 784))
    y = rng.integers(0, 10, PER_EXAMPLE_BATCH)
    return [p.astype(np.float32) for p in params], x.astype(np.float32), y


def per_example_loss(F, params, x, y):
    """One example's loss (``F``: tape.functional or torch.nn.functional)."""
    w1, b1, w2, b2 = params
    h = F.relu(x @ w1 + b1)
    return F.cross_entropy((h @ w2 + b2)[None], y[None])


def tape_per_example(device="cpu", loop=False):
    """tape's per-example gradients: vmap(grad), or (``loop``) grad once per example."""
    import tape
    import tape.functional as F
    from tape import func

    params, x, y = per_example_data()
    params = [tape.tensor(p, device=device) for p in params]
    x, y = tape.tensor(x, device=device), tape.tensor(y, device=device)
    grad = func.grad(lambda ps, xi, yi: per_example_loss(F, ps, xi, yi))
    if loop:
        return lambda: [grad(params, x[i], y[i]) for i in range(len(x))]
    return synced(lambda: func.vmap(grad, in_axes=(None, 0, 0))(params, x, y),
                  _tape_sync(device))


def tape_step(name, device="cpu"):
    """One step of workload ``name`` on tape (only that workload's data is made)."""
    if name in MODELS:
        return tape_training_step(name, device=device)[0]
    if name == "per_example":
        return tape_per_example(device)
    import tape
    import tape.functional as F

    sync = _tape_sync(device)

    if name == "chain":
        x0 = tape.tensor(chain_input(), requires_grad=True, device=device)

        def chain_step():
            with tape.Tape() as t:
                s = chain(x0)
            return t.gradient(s, x0)

        return synced(chain_step, sync)
    if name == "max_pool2d":
        xa, ga = pool_data()
        x, g = tape.tensor(xa, requires_grad=True, device=device), tape.tensor(ga, device=device)

        def pool_step():
            with tape.Tape() as t:
                y = F.max_pool2d(x, 2)
            return t.gradient(y, x, output_gradients=g)

        return synced(pool_step, sync)
    xa, wa, ga = conv_data(CONV_BY_NAME[name])
    x = tape.tensor(xa, requires_grad=True, device=device)
    w = tape.tensor(wa, requires_grad=True, device=device)
    g = tape.tensor(ga, device=device)

    def conv_step():
        with tape.Tape() as t:
            y = F.conv2d(x, w, padding=1)
        return t.gradient(y, [x, w], output_gradients=g)

    return synced(conv_step, sync)


# ----- PyTorch -----


def _torch_sync(device):
    import torch

    if device == "cpu":
        return lambda: None
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32, as CuPy computes
    torch.backends.cudnn.allow_tf32 = False
    return torch.cuda.synchronize


def torch_training_step(name, seed=0, device="cpu"):
    """(step, model, optimizer) for one of MODELS on PyTorch."""
    import torch

    make, shape = model_shape(name, device)
    model = make(torch.nn).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    x, y = batch(shape, seed)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    sync = _torch_sync(device)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sync()
        return loss

    return step, model, opt


def torch_step(name, device="cpu"):
    """One step of workload ``name`` on PyTorch (only that workload's data is made)."""
    if name in MODELS:
        return torch_training_step(name, device=device)[0]
    import torch

    F = torch.nn.functional
    sync = _torch_sync(device)
    if name == "per_example":
        params, x, y = per_example_data()
        params = [torch.from_numpy(p).to(device) for p in params]
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        grad = torch.func.grad(lambda ps, xi, yi: per_example_loss(F, ps, xi, yi))
        return synced(lambda: torch.func.vmap(grad, in_dims=(None, 0, 0))(params, x, y), sync)
    if name == "chain":
        x0 = torch.tensor(chain_input(), requires_grad=True, device=device)
        return synced(lambda: torch.autograd.grad(chain(x0), x0), sync)
    if name == "max_pool2d":
        x, g = (torch.from_numpy(a).to(device) for a in pool_data())
        x.requires_grad_(True)
        return synced(lambda: torch.autograd.grad(F.max_pool2d(x, 2), x, g), sync)
    x, w, g = (torch.from_numpy(a).to(device) for a in conv_data(CONV_BY_NAME[name]))
    x.requires_grad_(True)
    w.requires_grad_(True)
    return synced(lambda: torch.autograd.grad(F.conv2d(x, w, padding=1), [x, w], g), sync)


# ----- the MLP step by hand, in plain numpy -----


class NumpyMLP:
    """The MLP step written by hand in numpy: every buffer allocated once and reused
    (``out=``, in-place updates), the gradients of each layer in closed form. Parameters
    are (out, in) weights and biases, as ``nn.Linear``'s, so they can be loaded from a
    model to check the step against the libraries."""

    def __init__(self, params, x, y, lr=LR, momentum=MOMENTUM):
        self.params = [np.array(p, dtype=np.float32) for p in params]  # w1, b1, w2, b2, w3, b3
        self.bufs = [np.zeros_like(p) for p in self.params]
        self.grads = [np.empty_like(p) for p in self.params]
        self.x, self.y, self.lr, self.momentum = x, y, lr, momentum
        n = x.shape[0]
        widths = [p.shape[0] for p in self.params[::2]]  # 256, 256, 10
        self.z = [np.empty((n, w), np.float32) for w in widths]  # pre-activations
        self.h = [np.empty((n, w), np.float32) for w in widths[:-1]]  # activations
        self.dz = [np.empty((n, w), np.float32) for w in widths]
        self.mask = [np.empty((n, w), bool) for w in widths[:-1]]
        self.rows = np.arange(n)
        self.tmp = [np.empty_like(p) for p in self.params]

    def step(self):
        w1, b1, w2, b2, w3, b3 = self.params
        z1, z2, z3 = self.z
        h1, h2 = self.h
        x, n = self.x, self.x.shape[0]
        np.matmul(x, w1.T, out=z1)
        z1 += b1
        np.maximum(z1, 0, out=h1)
        np.matmul(h1, w2.T, out=z2)
        z2 += b2
        np.maximum(z2, 0, out=h2)
        np.matmul(h2, w3.T, out=z3)
        z3 += b3
        # cross entropy: softmax - one_hot, over the batch
        d3 = self.dz[2]
        top = z3.max(axis=1, keepdims=True)
        np.subtract(z3, top, out=d3)
        np.exp(d3, out=d3)
        total = d3.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(total[:, 0]) + top[:, 0] - z3[self.rows, self.y]))
        d3 /= total
        d3[self.rows, self.y] -= 1
        d3 *= 1.0 / n
        gw1, gb1, gw2, gb2, gw3, gb3 = self.grads
        np.matmul(d3.T, h2, out=gw3)
        d3.sum(axis=0, out=gb3)
        d2 = self.dz[1]
        np.matmul(d3, w3, out=d2)
        np.greater(z2, 0, out=self.mask[1])
        d2 *= self.mask[1]
        np.matmul(d2.T, h1, out=gw2)
        d2.sum(axis=0, out=gb2)
        d1 = self.dz[0]
        np.matmul(d2, w2, out=d1)
        np.greater(z1, 0, out=self.mask[0])
        d1 *= self.mask[0]
        np.matmul(d1.T, x, out=gw1)
        d1.sum(axis=0, out=gb1)
        for p, g, buf, tmp in zip(self.params, self.grads, self.bufs, self.tmp):
            buf *= self.momentum  # PyTorch's SGD: buf = momentum * buf + g; p -= lr * buf
            buf += g
            np.multiply(buf, self.lr, out=tmp)
            p -= tmp
        return loss


def numpy_step(name, device="cpu"):
    """The MLP step by hand in numpy (CPU only; the only workload written so)."""
    if name != "mlp" or device != "cpu":
        raise ValueError("the numpy side has the MLP step on the CPU only")
    rng = np.random.default_rng(0)
    params = []
    for fan_in, fan_out in [(784, 256), (256, 256), (256, 10)]:
        bound = 1 / np.sqrt(fan_in)
        params += [rng.uniform(-bound, bound, (fan_out, fan_in)),
                   rng.uniform(-bound, bound, fan_out)]
    x, y = batch((MLP_BATCH, 784))
    return NumpyMLP(params, x, y).step


STEPS = {"tape": tape_step, "torch": torch_step, "numpy": numpy_step}  # (workload, device)
