"""tape on the GPU (CuPy), on the CPU suites' workloads: the LeNet step at batch 256, the
MLP step, conv2d and max_pool2d forward + gradient. Each timed step ends with a device
synchronize, so the time is the GPU's work, not its launches; the first calls (CuPy
compiles its kernels on first use) are warm-up. PyTorch CUDA's times for the same
workloads, each library in its own process: ``python bench/compare.py --device cuda``.
Everything here skips, with the reason, without CuPy and a CUDA GPU.
"""

import pytest
from workloads import CONV_SHAPES, MODELS, conv_name, model_shape, tape_step

from tape import backend

pytestmark = pytest.mark.skipif(
    backend.cupy_or_none() is None,
    reason="no CUDA GPU with CuPy here (pip install 'tape[cuda12x]' on a GPU machine)")

WARMUP = 3


def _timed(benchmark, step):
    for _ in range(WARMUP):
        step()
    benchmark(step)


@pytest.mark.parametrize("name", list(MODELS))
def test_gpu_training_step(benchmark, name):
    benchmark.group = f"gpu {name} training step {model_shape(name, 'cuda')[1]}"
    _timed(benchmark, tape_step(name, "cuda"))


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=conv_name)
def test_gpu_conv2d(benchmark, shape):
    benchmark.group = f"gpu {conv_name(shape)} fwd+grad"
    _timed(benchmark, tape_step(conv_name(shape), "cuda"))


def test_gpu_max_pool2d(benchmark):
    benchmark.group = "gpu max_pool2d 2x2 fwd+grad"
    _timed(benchmark, tape_step("max_pool2d", "cuda"))
