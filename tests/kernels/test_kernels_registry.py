"""The kernels registry: dispatch by device, defaults, use(), user registrations (and that
they run through the conformance suite), fallbacks, and error messages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import kernels
from kernels import reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITE = os.path.join(ROOT, "tests", "kernels", "test_kernels_conformance.py")


@pytest.fixture
def scratch_impl():
    """Register a counting wrapper of the reference as impl "mine"; removed afterwards."""
    calls = []

    def make(name):
        def fn(*args):
            calls.append((name, args))
            return getattr(reference, name)(*args)

        return fn

    for name in kernels.KERNELS:
        kernels.register(name, "cpu", make(name), impl="mine")
    yield calls
    for name in kernels.KERNELS:
        kernels.unregister(name, "cpu", "mine")


def test_available_lists_every_kernel_with_the_default_first():
    av = kernels.available()
    assert set(kernels.KERNELS) <= set(av)
    for name in kernels.KERNELS:
        assert av[name]["cpu"][0] == "numba" == kernels.default_impl(name, "cpu")
        assert "reference" in av[name]["cpu"]


def test_device_of_detects_cupy_by_module_name_only():
    fake_cupy_array = type("ndarray", (), {"__module__": "cupy._core.core"})()
    assert kernels.device_of(fake_cupy_array) == "cuda"
    assert kernels.device_of(np.zeros(1)) == "cpu"


def test_user_impl_runs_only_inside_use_and_gets_the_geometry(scratch_impl):
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    kernels.im2col(x, 3, 3, 1, 1, 1)
    assert scratch_impl == []
    with kernels.use("im2col", "mine"):
        cols = kernels.im2col(x, 3, 3, 1, 1, 1)
    assert len(scratch_impl) == 1
    _, (_, g) = scratch_impl[0]
    assert g == kernels.ConvGeometry(1, 2, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5, 5)
    assert (g.stride, g.padding, g.dilation, g.cols_shape) == ((1, 1), (1, 1), (1, 1), (18, 25))
    np.testing.assert_array_equal(cols, reference.im2col(x, g))
    kernels.im2col(x, 3, 3, 1, 1, 1)
    assert len(scratch_impl) == 1  # selection ended with the block


def test_each_kernel_gets_its_named_geometry(scratch_impl):
    x = np.ones((2, 3, 6, 5))
    with kernels.use("*", "mine"):
        cols = kernels.im2col(x, 3, 2, (2, 1), 1, (1, 2))
        kernels.col2im(cols, x.shape, 3, 2, (2, 1), 1, (1, 2))
        out, arg = kernels.max_pool2d_forward(x, 3, None, 1)
        kernels.max_pool2d_backward(out, arg, x.shape)
        kernels.avg_pool2d_forward(x, (2, 1))
        kernels.avg_pool2d_backward(np.ones((2, 3, 3, 5)), x.shape, (2, 1))
    g = {name: args[-1] for name, args in scratch_impl}
    assert g["im2col"] == g["col2im"] == kernels.conv_geometry(x.shape, 3, 2, (2, 1), 1, (1, 2))
    assert g["im2col"].dilation == (1, 2) and g["im2col"].out_shape == (2, 3, 3, 5)
    assert g["max_pool2d_forward"] == kernels.PoolGeometry(2, 3, 6, 5, 3, 3, 3, 3, 1, 1, 2, 2)
    assert g["max_pool2d_backward"] == kernels.ScatterGeometry(2, 3, 6, 5, 2, 2)
    assert g["avg_pool2d_forward"] == g["avg_pool2d_backward"]
    assert g["avg_pool2d_forward"].stride == (2, 1) and g["avg_pool2d_forward"].out_shape == (
        2, 3, 3, 5)


def test_other_dtypes_go_to_the_reference_unless_registered(scratch_impl):
    """The dispatcher, not each implementation, sends the dtypes an implementation was
    not registered for (float32 and float64 by default) to the reference."""
    x = np.arange(32).reshape(1, 2, 4, 4)
    with kernels.use("max_pool2d_forward", "mine"):
        out, _ = kernels.max_pool2d_forward(x, 2)
        assert out.dtype == x.dtype and scratch_impl == []
        kernels.max_pool2d_forward(x.astype(np.float32), 2)
        assert len(scratch_impl) == 1
    kernels.register("max_pool2d_forward", "cpu", lambda x, g: "any", impl="any", dtypes=None)
    try:
        with kernels.use("max_pool2d_forward", "any"):
            assert kernels.max_pool2d_forward(x, 2) == "any"
    finally:
        kernels.unregister("max_pool2d_forward", "cpu", "any")
    kernels.register("foo", "cpu", lambda x: "float", impl="floats")
    try:
        with pytest.raises(TypeError, match="float32.*not int64.*no 'reference'"):
            kernels.registry.call("foo", x)
    finally:
        kernels.unregister("foo", "cpu", "floats")


def test_use_is_thread_local_nestable_and_star(scratch_impl):
    seen = {}

    def other_thread():
        seen["other"] = kernels.get("im2col", "cpu") is kernels.get("im2col", "cpu", "numba")

    with kernels.use("*", "mine"):
        assert all(kernels.get(n, "cpu") is kernels.get(n, "cpu", "mine")
                   for n in kernels.KERNELS)
        with kernels.use(["im2col", "col2im"], "reference"):
            assert kernels.get("im2col", "cpu") is reference.im2col
            assert kernels.get("max_pool2d_forward", "cpu") is kernels.get(
                "max_pool2d_forward", "cpu", "mine")
        assert kernels.get("im2col", "cpu") is kernels.get("im2col", "cpu", "mine")
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert seen["other"] is True


def test_register_as_decorator_and_default(scratch_impl):
    @kernels.register("avg_pool2d_forward", "cpu", impl="deco", default=True)
    def deco(x, g):
        return "deco"

    try:
        assert kernels.avg_pool2d_forward(np.zeros((1, 1, 2, 2)), 2) == "deco"
        assert kernels.available()["avg_pool2d_forward"]["cpu"][0] == "deco"
    finally:
        kernels.unregister("avg_pool2d_forward", "cpu", "deco")
    assert kernels.default_impl("avg_pool2d_forward", "cpu") == "numba"


def test_lookup_errors_are_explicit():
    with pytest.raises(LookupError, match="no 'nope' implementation"):
        with kernels.use("im2col", "nope"):
            pass
    with pytest.raises(LookupError, match="install cupy"):
        kernels.get("im2col", "cuda")
    with pytest.raises(LookupError, match="unknown kernel"):
        kernels.get("conv3d", "cpu")
    with pytest.raises(TypeError):
        kernels.register("im2col", "cpu", 42, impl="bad")


# ----- shape errors: the op, the shapes, what to do -----

ERRORS = [
    (lambda: kernels.im2col(np.zeros((1, 1, 3, 3)), 5, 5, 1, 0, 1),
     r"im2col: kernel 5x5 .* larger than the padded input 3x3 .*\(1, 1, 3, 3\)"),
    (lambda: kernels.im2col(np.zeros((1, 1, 3, 3)), 3, 3, 1, 0, 2),
     r"dilation 2x2, effective 5x5"),
    (lambda: kernels.im2col(np.zeros((1, 1, 3, 3)), 2, 2, 0, 0, 1), r"stride must be positive"),
    (lambda: kernels.im2col(np.zeros((1, 1, 3, 3)), 2, 2, (1, -1), 0, 1),
     r"stride must be positive"),
    (lambda: kernels.im2col(np.zeros((1, 1, 3, 3)), 2, 2, 1, -1, 1),
     r"padding must be non-negative"),
    (lambda: kernels.im2col(np.zeros((3, 3)), 2, 2, 1, 0, 1), r"4-d \(N, C, H, W\)"),
    (lambda: kernels.im2col(np.zeros((1, 1, 3, 3)), 2, 2, (1, 2, 3), 0, 1), r"stride must be"),
    (lambda: kernels.im2col(np.zeros((1, 1, 3, 3)), 2, 2, True, 0, 1), r"stride must be"),
    (lambda: kernels.col2im(np.zeros((4, 5)), (1, 1, 3, 3), 2, 2, 1, 0, 1),
     r"col2im: cols has shape \(4, 5\).* needs \(C\*kh\*kw, N\*Hout\*Wout\) = \(4, 4\)"),
    (lambda: kernels.max_pool2d_forward(np.zeros((1, 1, 4, 4)), 2, 2, 2),
     r"max_pool2d: padding \(2, 2\) must be at most half the kernel size 2x2"),
    (lambda: kernels.max_pool2d_forward(np.zeros((1, 1, 1, 1)), 2, 2, 0),
     r"max_pool2d: kernel 2x2 .* larger than the padded input 1x1"),
    (lambda: kernels.avg_pool2d_forward(np.zeros((1, 1, 4, 4)), 2, 0, 0),
     r"avg_pool2d: stride must be positive"),
    (lambda: kernels.max_pool2d_backward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 3), int),
                                         (1, 1, 4, 4)), r"must have the same shape"),
    (lambda: kernels.avg_pool2d_backward(np.zeros((1, 1, 3, 3)), (1, 1, 4, 4), 2, 2, 0),
     r"avg_pool2d_backward: grad_out has shape \(1, 1, 3, 3\), expected \(1, 1, 2, 2\)"),
]


@pytest.mark.parametrize("impl", ["numba", "reference"])
@pytest.mark.parametrize("call,match", ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_impossible_shapes_raise_value_errors(impl, call, match):
    with kernels.use("*", impl), pytest.raises(ValueError, match=match):
        call()


def test_numba_max_pool_backward_rejects_corrupt_argmax():
    g = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"argmax holds indices outside \[0, 16\)"):
        kernels.max_pool2d_backward(g, np.full((1, 1, 2, 2), 99), (1, 1, 4, 4))


def test_conv_output_shape_and_pair():
    assert kernels.conv_output_shape((2, 3, 28, 28), 3, 3, 1, 1, 1) == (2, 3, 28, 28)
    assert kernels.conv_output_shape((2, 3, 28, 28), 5, 5, 2, 0, 1) == (2, 3, 12, 12)
    assert kernels.conv_output_shape((1, 1, 7, 9), 3, 2, (2, 1), (1, 0), (1, 2)) == (1, 1, 4, 7)
    assert kernels.pair(3) == (3, 3) and kernels.pair((1, 2)) == (1, 2)


# ----- fallbacks and drop-ins, in fresh interpreters -----


def _run(code, env=None, timeout=120):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT, env=e, timeout=timeout)


def test_reference_is_the_default_without_numba():
    res = _run("""
        import sys
        sys.modules["numba"] = None  # import numba now raises ImportError
        import numpy as np, kernels
        assert kernels.default_impl("im2col") == "reference", kernels.available()
        out, arg = kernels.max_pool2d_forward(np.arange(16.0).reshape(1, 1, 4, 4), 2, 2, 0)
        print(out.ravel().tolist(), arg.ravel().tolist())
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[5.0, 7.0, 13.0, 15.0] [5, 7, 13, 15]"


PLUGIN = """
import kernels
from kernels import reference

@kernels.register("avg_pool2d_forward", "cpu", impl="mine")
def my_avg(x, g):  # g: kernels.PoolGeometry
    out = reference.avg_pool2d_forward(x, g)
    {mutation}
    return out
"""


@pytest.mark.parametrize("broken", [False, True], ids=["correct", "broken"])
def test_user_impl_runs_through_the_conformance_suite(tmp_path, broken):
    """What kernels/README.md promises: KERNELS_TEST_PLUGINS=module pytest tests/kernels."""
    mutation = "out[..., 0, 0] += 1e-3" if broken else "pass"
    (tmp_path / "my_kernels.py").write_text(PLUGIN.format(mutation=mutation))
    env = {"KERNELS_TEST_PLUGINS": "my_kernels",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", SUITE, "-o", "addopts=", "-q", "-p",
           "no:cacheprovider", "-k", "mine", "-x"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, **env), timeout=300)
    out = res.stdout + res.stderr
    if broken:
        assert res.returncode == 1 and "test_avg_pool2d_forward" in out, out[-2000:]
    else:
        assert res.returncode == 0, out[-2000:]
        assert re.search(r"\b[1-9]\d* passed, \d+ deselected", out), out[-2000:]


def test_user_impl_is_timed_beside_the_built_in_ones(tmp_path):
    """What bench/README.md promises: KERNELS_TEST_PLUGINS=module pytest bench/test_bench_
    kernels.py times a registered implementation in the same groups as the built-in ones."""
    (tmp_path / "my_kernels.py").write_text(PLUGIN.format(mutation="pass"))
    env = {"KERNELS_TEST_PLUGINS": "my_kernels",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", os.path.join(ROOT, "bench", "test_bench_kernels.py"),
           "-o", "addopts=", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
           "--collect-only", "-k", "avg_pool2d_forward"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, **env), timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-2000:]
    for impl in ("mine", "numba", "reference"):
        assert f"-{impl}-" in out, out[-2000:]  # one benchmark per implementation and case
