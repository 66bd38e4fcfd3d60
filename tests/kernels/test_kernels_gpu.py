"""The CUDA kernels without a GPU: NVRTC compiles every source (libnvrtc from the
nvidia-cuda-nvrtc-cu12 wheel, through ctypes), and the same sources, compiled for the host
with a thin emulation header, run under several launch shapes against the numpy reference.
With a GPU and cupy, the real kernels run against the reference too."""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os

import numpy as np
import pytest

import kernels
from kernels import reference
from kernels.gpu import emulate, launch
from kernels.gpu.sources import DTYPES, SOURCES

# ----- NVRTC -----


def _libnvrtc_path():
    spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    for root in (spec.submodule_search_locations or []) if spec else []:
        hits = sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so.*")))
        if hits:
            return hits[0]
    return None


@pytest.fixture(scope="module")
def nvrtc():
    path = _libnvrtc_path()
    if path is None:
        pytest.skip("libnvrtc not found: pip install nvidia-cuda-nvrtc-cu12 (the dev extra)")
    lib = ctypes.CDLL(path)
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    return lib


def nvrtc_compile(lib, src, name, options):
    """Compile ``src`` with NVRTC; returns (result code, log, ptx)."""
    prog = ctypes.c_void_p()
    res = lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), f"{name}.cu".encode(), 0,
                                 None, None)
    assert res == 0, lib.nvrtcGetErrorString(res)
    try:
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        res = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        ptx = b""
        if res == 0:
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, buf)
            ptx = buf.value
        return res, log.value.decode(errors="replace"), ptx.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


@pytest.mark.parametrize("arch", ["compute_60", "compute_80", "compute_90"])
@pytest.mark.parametrize("name", list(SOURCES))
def test_cuda_source_compiles_with_nvrtc(nvrtc, name, arch):
    options = [f"--gpu-architecture={arch}", *launch.NVRTC_OPTIONS]
    res, log, ptx = nvrtc_compile(nvrtc, SOURCES[name], name, options)
    assert res == 0, (
        f"NVRTC failed on {name} ({arch}): {nvrtc.nvrtcGetErrorString(res).decode()}\n{log}"
    )
    for ctype in DTYPES.values():  # both entry points, unmangled (extern "C")
        assert f".entry {name}_{ctype}(" in ptx


def test_nvrtc_reports_errors(nvrtc):
    """The harness itself: a broken source must fail, with a log naming the problem."""
    res, log, _ = nvrtc_compile(nvrtc, SOURCES["im2col"] + "\nint broken(", "bad",
                                ["--gpu-architecture=compute_80"])
    assert res != 0 and "error" in log


# ----- host emulation -----


@pytest.fixture(scope="module")
def host_lib():
    if emulate.compiler() is None:
        pytest.skip("no C++ compiler (g++/c++/clang++): cannot emulate the CUDA kernels")
    return emulate.build()


LAUNCHES = [None, (1, 1), (3, 5), (2, 64)]  # None: the real launcher's grid/block


@pytest.mark.parametrize("launch_shape", LAUNCHES, ids=["launcher", "1x1", "3x5", "2x64"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_emulated_kernels_any_launch_shape(host_lib, launch_shape, dtype):
    """Grid-stride loops: every grid/block shape computes the same result."""
    grid, block = launch_shape or (None, None)
    ops = emulate.KernelOps(emulate.HostBackend(host_lib, grid=grid, block=block))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    for args in [(3, 3, 1, 1, 1), (2, 3, (2, 1), (1, 0), (1, 2))]:
        conv = kernels.conv_geometry(x.shape, *args)
        cols = ops.im2col(x, conv)
        np.testing.assert_array_equal(cols, reference.im2col(x, conv))
        c = rng.standard_normal(cols.shape).astype(dtype)
        np.testing.assert_allclose(ops.col2im(c, conv), reference.col2im(c, conv), rtol=1e-5,
                                   atol=1e-5)
    for k, s, p in [(2, 2, 0), (3, 1, 1), (3, 2, 1)]:
        pool = kernels.pool_geometry(x.shape, k, s, p)
        out, arg = ops.max_pool2d_forward(x, pool)
        want, want_arg = reference.max_pool2d_forward(x, pool)
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(arg, want_arg)
        g = rng.standard_normal(out.shape).astype(dtype)
        scatter = kernels.ScatterGeometry(*x.shape, *out.shape[2:])
        np.testing.assert_allclose(ops.max_pool2d_backward(g, arg, scatter),
                                   reference.max_pool2d_backward(g, arg, scatter), rtol=1e-5)
        np.testing.assert_allclose(ops.avg_pool2d_forward(x, pool),
                                   reference.avg_pool2d_forward(x, pool), rtol=1e-5)
        np.testing.assert_allclose(ops.avg_pool2d_backward(g, pool),
                                   reference.avg_pool2d_backward(g, pool), rtol=1e-5, atol=1e-6)


def test_emulation_builds_with_warnings_as_errors(host_lib):
    assert "-Werror" in emulate.CXX_FLAGS  # the build above had no warnings
    for name in SOURCES:
        for ctype in DTYPES.values():
            assert hasattr(host_lib, f"emu_{name}_{ctype}")


def test_launcher_grid_block_shapes():
    assert launch.grid_block(1) == ((1,), (256,))
    assert launch.grid_block(257) == ((2,), (256,))
    assert launch.grid_block(10**12)[0][0] == launch.MAX_GRID  # grid-stride covers the rest
    assert launch.grid_block(0) == ((1,), (256,))


def test_kernels_import_does_not_import_cupy():
    import subprocess
    import sys

    code = "import sys, kernels, kernels.gpu; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ----- the real thing, when there is a GPU -----


def _cupy_with_gpu():
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001 - no cupy, no driver, no device: all mean "skip"
        return None


@pytest.mark.parametrize("name", list(SOURCES))
def test_cupy_kernels_match_reference(name):
    cp = _cupy_with_gpu()
    if cp is None:
        pytest.skip("needs cupy and a CUDA GPU")
    assert "cupy" in kernels.available()[name]["cuda"]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 9, 8))
    gx = cp.asarray(x)
    conv = kernels.conv_geometry(x.shape, 3, 2, (2, 1), 1, (1, 2))
    pool = kernels.pool_geometry(x.shape, 3, 2, 1)
    if name in ("im2col", "col2im"):
        cols = kernels.im2col(gx, 3, 2, (2, 1), 1, (1, 2))
        np.testing.assert_array_equal(cp.asnumpy(cols), reference.im2col(x, conv))
        c = rng.standard_normal(cols.shape)
        np.testing.assert_allclose(
            cp.asnumpy(kernels.col2im(cp.asarray(c), x.shape, 3, 2, (2, 1), 1, (1, 2))),
            reference.col2im(c, conv), rtol=1e-12)
    elif name.startswith("max"):
        out, arg = kernels.max_pool2d_forward(gx, 3, 2, 1)
        want, want_arg = reference.max_pool2d_forward(x, pool)
        np.testing.assert_array_equal(cp.asnumpy(out), want)
        np.testing.assert_array_equal(cp.asnumpy(arg), want_arg)
        g = rng.standard_normal(want.shape)
        np.testing.assert_allclose(
            cp.asnumpy(kernels.max_pool2d_backward(cp.asarray(g), arg, x.shape)),
            reference.max_pool2d_backward(g, want_arg, kernels.ScatterGeometry(*x.shape, 5, 4)),
            rtol=1e-12)
    else:
        np.testing.assert_allclose(cp.asnumpy(kernels.avg_pool2d_forward(gx, 3, 2, 1)),
                                   reference.avg_pool2d_forward(x, pool), rtol=1e-12)
        g = rng.standard_normal((2, 3, 5, 4))
        np.testing.assert_allclose(
            cp.asnumpy(kernels.avg_pool2d_backward(cp.asarray(g), x.shape, 3, 2, 1)),
            reference.avg_pool2d_backward(g, pool), rtol=1e-12)


def test_conv2d_on_cuda_takes_the_im2col_route():
    cp = _cupy_with_gpu()
    if cp is None:
        pytest.skip("needs cupy and a CUDA GPU")
    assert kernels.available()["conv2d"]["cuda"] == ["im2col", "reference"]
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 8, 6, 5)), rng.standard_normal((4, 8, 3, 3))
    gx, gw = cp.asarray(x), cp.asarray(w)
    assert kernels.conv2d_route(gx, gw, 1, 1) == "im2col"
    want = reference.conv2d(x, w, kernels.conv2d_geometry(x.shape, w.shape, 1, 1))
    for impl in ["im2col", "reference"]:
        with kernels.use("conv2d", impl):
            np.testing.assert_allclose(kernels.conv2d(gx, gw, 1, 1).get(), want,
                                       rtol=1e-12, atol=1e-12)
