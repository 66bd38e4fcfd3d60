"""The devices the tests run on, and why the GPU rows skip where there is no GPU.

The ``device`` fixture (conftest.py) and tables that pick their own GPU rows
(``pytest.param(..., "cuda", marks=GPU)``) share this mark: a skip decided at collection
costs a fraction of one raised from a fixture, so thousands of skipped GPU rows stay cheap.
"""

import pytest

from tape import backend


def gpu_skip_reason():
    """Why the GPU rows cannot run here, or None when they can."""
    if backend.cupy_or_none() is None:
        return "no CUDA GPU with CuPy here (pip install 'tape[cuda12x]' on a GPU machine)"
    return None


GPU = pytest.mark.skipif(gpu_skip_reason() is not None, reason=gpu_skip_reason() or "")
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]
