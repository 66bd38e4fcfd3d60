"""Devices: the same code on numpy and cupy, clear errors when mixing or missing a GPU,
and zero-copy DLPack exchange with PyTorch."""

import numpy as np
import pytest
import torch

import tape
from tape import backend


def test_ops_and_gradients_on_each_device(device):
    x = tape.tensor([[1.0, -2.0], [3.0, 4.0]], requires_grad=True, device=device)
    w = tape.ones(2, 3, device=device, requires_grad=True)
    with tape.Tape() as t:
        y = (tape.tanh(x @ w) * 2.0).sum()
    gx, gw = t.gradient(y, [x, w])
    assert gx.device == device and gw.device == device
    assert y.device == device
    xn = torch.tensor(x.numpy(), requires_grad=True)
    wn = torch.ones(2, 3, requires_grad=True)
    want = torch.autograd.grad((torch.tanh(xn @ wn) * 2).sum(), [xn, wn])
    np.testing.assert_allclose(gx.numpy(), want[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(gw.numpy(), want[1].numpy(), rtol=1e-5)


def test_to_moves_and_comes_back(device):
    x = tape.tensor([1.0, 2.0])
    y = x.to(device)
    assert y.device == device
    assert y.to("cpu").device == "cpu"
    np.testing.assert_array_equal(y.numpy(), [1.0, 2.0])


def test_cuda_without_gpu_says_what_to_install(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", False)
    with pytest.raises(RuntimeError, match=r"needs CuPy and a CUDA GPU.*cuda12x"):
        tape.zeros(3, device="cuda")
    with pytest.raises(RuntimeError, match="needs CuPy"):
        tape.tensor([1.0]).to("cuda")


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        tape.zeros(2, device="tpu")


class _FakeCupyArray(np.ndarray):
    """A numpy array that reports itself as a cupy one: enough to test device checks."""


_FakeCupyArray.__module__ = "cupy._core.core"


def test_mixing_devices_names_both():
    gpu_like = np.ones(3).view(_FakeCupyArray)
    assert backend.device_of(gpu_like) == "cuda"

    def refuse(*args, **kwargs):
        raise TypeError("Unsupported type <class 'numpy.ndarray'>")  # what cupy says

    a = tape.tensor([1.0, 2.0, 3.0])
    b = tape.Tensor.__new__(tape.Tensor)
    b.data, b.requires_grad = gpu_like, False
    from tape.ops import core

    op = core.Op("add", refuse, lambda g, ans, a, b: g, lambda g, ans, a, b: g)
    match = r"add: inputs are on different devices \(cpu and cuda\)"
    with pytest.raises(RuntimeError, match=match):
        op(a, b)


def test_dlpack_shares_memory_with_torch_both_ways():
    t = torch.arange(4.0)
    x = tape.from_dlpack(t)
    assert x.dtype == np.float32 and x.shape == (4,)
    x.data[0] = 7.0
    assert t[0].item() == 7.0  # same memory: no copy
    back = torch.from_dlpack(x)
    back[1] = -1.0
    assert x.data[1] == -1.0


def test_dlpack_on_gpu(device):
    if device != "cuda":
        pytest.skip("the GPU half of the DLPack test")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA here: the GPU DLPack exchange needs a CUDA build")
    cp = backend.cupy_or_none()
    t = torch.arange(3.0, device="cuda")
    x = tape.from_dlpack(t)
    assert x.device == "cuda"
    x.data[0] = 5.0
    assert t[0].item() == 5.0
    c = cp.from_dlpack(x)
    assert int(c.size) == 3


def test_mixing_cpu_and_gpu_tensors_raises_clearly(device):
    if device != "cuda":
        pytest.skip("mixing needs a second device")
    a, b = tape.ones(3), tape.ones(3, device="cuda")
    for call in (lambda: a + b, lambda: b * a.data, lambda: tape.matmul(a, b)):
        with pytest.raises(RuntimeError, match=r"different devices \(cpu and cuda\)"):
            call()
    opt = tape.optim.SGD([b], lr=0.1)
    with pytest.raises(ValueError, match="gradient 0 is on cpu, its parameter on cuda"):
        opt.step([a])
