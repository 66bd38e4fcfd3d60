"""Shared fixtures: the ``device`` every device-aware test runs on, and GEMMs that run
the same way whatever else the machine does (for tests that compare runs bit for bit).

GPU rows skip, with the reason, where CuPy or a CUDA GPU is missing (as in CI).
"""

import kernels
import pytest
from devices import DEVICES, gpu_skip_reason


@pytest.fixture(params=DEVICES)
def device(request):
    if request.param == "cuda" and gpu_skip_reason():  # a row given "cuda" without the mark
        pytest.skip(gpu_skip_reason())
    return request.param


@pytest.fixture
def steady_gemms():
    """Large GEMMs on tape's threads throughout, instead of moving between OpenBLAS's
    threads and tape's with the machine's load (a fresh install's precompiler is load),
    whose sums differ in their last bits: two runs compared bit for bit take one way."""
    with kernels.configure(tune_threads=False):
        yield
