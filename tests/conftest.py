"""Shared fixtures: the ``device`` every device-aware test runs on.

GPU rows skip, with the reason, where CuPy or a CUDA GPU is missing (as in CI).
"""

import pytest
from devices import DEVICES, gpu_skip_reason


@pytest.fixture(params=DEVICES)
def device(request):
    if request.param == "cuda" and gpu_skip_reason():  # a row given "cuda" without the mark
        pytest.skip(gpu_skip_reason())
    return request.param
