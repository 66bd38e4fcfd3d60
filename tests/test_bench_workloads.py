"""The workloads bench/compare.py times compute the same thing on every side: tape,
PyTorch and the MLP step by hand in numpy, from the same weights and data (so the
comparison is of speed, not of different work)."""

import os
import sys

import numpy as np
import pytest

import tape

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
import workloads  # noqa: E402

torch = pytest.importorskip("torch")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    tape.backend.cupy_or_none() is None or not torch.cuda.is_available(),
    reason="needs a CUDA GPU with CuPy and a CUDA build of PyTorch"))]


def _same_weights(ours, theirs):
    ours.load_state_dict({k: tape.tensor(v.detach().cpu().numpy()) for k, v in
                          theirs.state_dict().items()})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(workloads.MODELS))
def test_training_steps_agree(name, device):
    step, ours, _ = workloads.tape_training_step(name, device=device)
    tstep, theirs, _ = workloads.torch_training_step(name, device=device)
    _same_weights(ours, theirs)
    ours.to(device)
    for _ in range(3):
        np.testing.assert_allclose(step().item(), tstep().item(), rtol=1e-4)


def test_numpy_mlp_step_agrees():
    tstep, theirs, _ = workloads.torch_training_step("mlp")
    params = [p.detach().numpy().copy() for p in theirs.parameters()]
    x, y = workloads.batch(workloads.model_shape("mlp")[1])
    ours = workloads.NumpyMLP(params, x, y)  # the same class numpy_step times
    for _ in range(3):
        np.testing.assert_allclose(ours.step(), tstep().item(), rtol=1e-4)
    for a, b in zip(ours.params, theirs.parameters()):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["chain", "max_pool2d",
                                  *map(workloads.conv_name, workloads.CONV_SHAPES)])
def test_gradient_steps_agree(name, device):
    ours = workloads.tape_step(name, device)()
    theirs = workloads.torch_step(name, device)()
    ours = ours if isinstance(ours, list) else [ours]
    for a, b in zip(ours, theirs):
        b = b.detach().cpu().numpy()
        # float32 sums of thousands of terms: the error scales with the largest values
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a.numpy(), b, rtol=2e-4, atol=2e-5 * scale)
