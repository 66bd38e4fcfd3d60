"""The GPU suite: tape on CuPy against PyTorch on CUDA (cuDNN), on the CPU suites' shapes.

* the LeNet-style CNN (conv 1->8 3x3 pad 1, ReLU, maxpool 2, conv 8->16, ReLU, maxpool 2,
  flatten, linear 784->128, ReLU, linear 128->10) training step at batch 256, SGD;
* conv2d 3x3 pad 1 forward + gradient on (N, Cin -> Cout, H=W) = (64, 1->8, 28),
  (64, 16->32, 14), (32, 64->128, 8), and max_pool2d 2x2 forward + gradient on
  (64, 32, 28, 28), against cuDNN;
* the MLP 784-256-256-10 training step at batch 128.

Every timed call ends with a device synchronize, so the time is the GPU's work, not just
the launches. PyTorch computes in full float32 (no TF32), as tape does. Everything here
skips, with the reason, without CuPy and a CUDA GPU (or PyTorch with CUDA for the twins).
Run: ``python -m pytest bench/test_bench_gpu.py --benchmark-only --ratio-json=PATH``.
"""

import numpy as np
import pytest
from test_bench_conv import CONV_SHAPES, POOL, _data, conv_flops
from test_bench_models import _batch, _tape_step, _torch_step
from workloads import lenet, mlp

import tape
import tape.functional as F
from tape import backend, nn

cp = backend.cupy_or_none()
pytestmark = pytest.mark.skipif(
    cp is None, reason="no CUDA GPU with CuPy here (pip install 'tape[cuda12x]' on a GPU machine)")

MODELS = {"lenet": (lenet, (256, 1, 28, 28)), "mlp": (mlp, (128, 784))}
WARMUP = 3  # untimed calls first: cupy compiles its kernels on first use


def _sync():
    cp.cuda.get_current_stream().synchronize()


@pytest.fixture
def torch_cuda(torch_module):
    torch = torch_module
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here: the GPU twins need a CUDA build of torch")
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32, as cupy computes
    torch.backends.cudnn.allow_tf32 = False
    return torch


def _timed(benchmark, step, sync):
    """Benchmark ``step`` followed by a device synchronize, after a few warm-up calls."""
    def run():
        out = step()
        sync()
        return out

    for _ in range(WARMUP):
        run()
    return benchmark(run)


def _info(benchmark, group):
    benchmark.group = group
    benchmark.extra_info["device"] = "cuda"


# ----- training steps -----
@pytest.mark.parametrize("name", list(MODELS))
def test_gpu_step_tape(benchmark, name):
    make, shape = MODELS[name]
    model = make(nn).to("cuda")
    params = model.parameters()
    opt = tape.optim.SGD(params, lr=0.01, momentum=0.9)
    x, y = _batch(shape)
    x, y = tape.tensor(x, device="cuda"), tape.tensor(y, device="cuda")
    loss_fn = nn.CrossEntropyLoss()
    _info(benchmark, f"gpu {name} training step {shape}")
    _timed(benchmark, lambda: _tape_step(model, params, opt, loss_fn, x, y), _sync)


@pytest.mark.parametrize("name", list(MODELS))
def test_gpu_step_torch(benchmark, torch_cuda, name):
    torch = torch_cuda
    make, shape = MODELS[name]
    model = make(torch.nn).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _batch(shape)
    x, y = torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda")
    _info(benchmark, f"gpu {name} training step {shape}")
    _timed(benchmark, lambda: _torch_step(torch, model, opt, x, y), torch.cuda.synchronize)


@pytest.mark.parametrize("name", list(MODELS))
def test_gpu_steps_agree_with_torch(torch_cuda, name):
    """The benchmarked steps compute the same thing on the GPU: same weights, same losses."""
    torch = torch_cuda
    make, shape = MODELS[name]
    theirs, ours = make(torch.nn).cuda(), make(nn)
    ours.load_state_dict({k: v.detach().cpu().numpy() for k, v in theirs.state_dict().items()})
    ours.to("cuda")
    x, y = _batch(shape)
    params = ours.parameters()
    opt = tape.optim.SGD(params, lr=0.01, momentum=0.9)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda")
    x, y = tape.tensor(x, device="cuda"), tape.tensor(y, device="cuda")
    for _ in range(3):
        a = _tape_step(ours, params, opt, nn.CrossEntropyLoss(), x, y)
        b = _torch_step(torch, theirs, topt, xt, yt)
        assert a.device == "cuda"
        np.testing.assert_allclose(a.item(), b.item(), rtol=1e-4)


# ----- conv2d and max_pool2d, forward + gradient -----
def _tape_conv_step(x, w, g):
    with tape.Tape() as t:
        y = F.conv2d(x, w, padding=1)
    return t.gradient(y, [x, w], output_gradients=g)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gpu_conv2d_tape(benchmark, shape):
    x, w, g = _data(*shape)
    x = tape.tensor(x, requires_grad=True, device="cuda")
    w = tape.tensor(w, requires_grad=True, device="cuda")
    g = cp.asarray(g)
    _info(benchmark, f"gpu conv2d fwd+grad {shape}")
    benchmark.extra_info["gflops"] = conv_flops(*shape) / 1e9
    _timed(benchmark, lambda: _tape_conv_step(x, w, g), _sync)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gpu_conv2d_torch(benchmark, torch_cuda, shape):
    torch = torch_cuda
    x, w, g = (torch.tensor(a, device="cuda") for a in _data(*shape))
    x.requires_grad_(True)
    w.requires_grad_(True)

    def step():
        y = torch.nn.functional.conv2d(x, w, padding=1)
        return torch.autograd.grad(y, [x, w], g)

    _info(benchmark, f"gpu conv2d fwd+grad {shape}")
    _timed(benchmark, step, torch.cuda.synchronize)


def test_gpu_conv2d_gradients_agree(torch_cuda):
    torch = torch_cuda
    x, w, g = _data(*CONV_SHAPES[1])
    ours = _tape_conv_step(tape.tensor(x, requires_grad=True, device="cuda"),
                           tape.tensor(w, requires_grad=True, device="cuda"), cp.asarray(g))
    xt = torch.tensor(x, device="cuda", requires_grad=True)
    wt = torch.tensor(w, device="cuda", requires_grad=True)
    theirs = torch.autograd.grad(torch.nn.functional.conv2d(xt, wt, padding=1), [xt, wt],
                                 torch.tensor(g, device="cuda"))
    for a, b in zip(ours, theirs):
        assert a.device == "cuda"
        np.testing.assert_allclose(a.numpy(), b.cpu().numpy(), rtol=1e-3, atol=1e-3)


def _pool_data():
    rng = np.random.default_rng(0)
    n, c, h, w = POOL
    return (rng.standard_normal(POOL).astype(np.float32),
            rng.standard_normal((n, c, h // 2, w // 2)).astype(np.float32))


def _tape_pool_step(x, g):
    with tape.Tape() as t:
        y = F.max_pool2d(x, 2)
    return t.gradient(y, x, output_gradients=g)


def test_gpu_max_pool2d_tape(benchmark):
    x, g = _pool_data()
    x, g = tape.tensor(x, requires_grad=True, device="cuda"), cp.asarray(g)
    _info(benchmark, f"gpu max_pool2d 2x2 fwd+grad {POOL}")
    _timed(benchmark, lambda: _tape_pool_step(x, g), _sync)


def test_gpu_max_pool2d_torch(benchmark, torch_cuda):
    torch = torch_cuda
    x, g = (torch.tensor(a, device="cuda") for a in _pool_data())
    x.requires_grad_(True)

    def step():
        y = torch.nn.functional.max_pool2d(x, 2)
        return torch.autograd.grad(y, x, g)

    _info(benchmark, f"gpu max_pool2d 2x2 fwd+grad {POOL}")
    _timed(benchmark, step, torch.cuda.synchronize)


def test_gpu_max_pool2d_agrees(torch_cuda):
    torch = torch_cuda
    x, g = _pool_data()
    ours = _tape_pool_step(tape.tensor(x, requires_grad=True, device="cuda"), cp.asarray(g))
    xt = torch.tensor(x, device="cuda", requires_grad=True)
    (theirs,) = torch.autograd.grad(torch.nn.functional.max_pool2d(xt, 2), xt,
                                    torch.tensor(g, device="cuda"))
    np.testing.assert_array_equal(ours.numpy(), theirs.cpu().numpy())
