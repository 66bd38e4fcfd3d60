"""Training steps of the MLP (batch 128) and the LeNet-style CNN (batch 64) on tape, with
SGD and momentum: forward, gradient and the optimizer's update. (PyTorch's times for the
same steps: bench/compare.py.)"""

import pytest
from workloads import MODELS, model_shape, tape_training_step


@pytest.mark.parametrize("name", list(MODELS))
def test_training_step(benchmark, name):
    benchmark.group = f"{name} training step {model_shape(name)[1]}"
    benchmark(tape_training_step(name)[0])
