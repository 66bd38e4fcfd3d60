"""The MPI tests: every process runs the same tests in the same order, so their
collectives meet. Run with ``mpiexec -n 2 python -m pytest -q -p no:cacheprovider
tests_mpi``; the main ``pytest tests`` never collects them. GPU rows run with CuPy and a
GPU, or on the fake CuPy: ``PYTHONPATH=tests mpiexec -n 2 python -m pytest -p fake_cupy
tests_mpi -k cuda``."""

import pytest

from tape import backend

pytest.importorskip("mpi4py", reason="the MPI tests need the 'mpi' extra")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    backend.cupy_or_none() is None, reason="no CuPy GPU (nor the fake CuPy) here"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
