"""Shared fixtures: the ``device`` every device-aware test runs on.

GPU rows skip, with the reason, where CuPy or a CUDA GPU is missing (as in CI).
"""

import pytest

from tape import backend


def gpu_skip_reason():
    """Why the GPU rows cannot run here, or None when they can."""
    if backend.cupy_or_none() is None:
        return "no CUDA GPU with CuPy here (pip install 'tape[cuda12x]' on a GPU machine)"
    return None


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda" and gpu_skip_reason():
        pytest.skip(gpu_skip_reason())
    return request.param
