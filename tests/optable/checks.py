"""The checks every row of the op table takes, against torch: a tape result's values, a
gradient's or Jacobian's (None standing for zeros where allowed), torch's Jacobian."""

import numpy as np
import torch

import tape


def numpy_of(t):
    return t.detach().numpy(force=True) if isinstance(t, torch.Tensor) else np.asarray(t)


def check_values(got, want, tol, what):
    """``got`` (a tape.Tensor) has the shape, dtype and values of ``want`` (a torch tensor)."""
    assert isinstance(got, tape.Tensor), f"{what}: expected a tape.Tensor, got {type(got)}"
    want = numpy_of(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch has {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, torch has {want.dtype}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got.numpy(), want, err_msg=what)
    else:
        rtol, atol = tol
        np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol, err_msg=what)


def check_grad(got, want, source, tol, what, none_is_zero=False):
    """A gradient (or Jacobian) against torch's; None stands for zeros where allowed."""
    want = None if want is None else numpy_of(want)
    if got is None:
        assert none_is_zero or want is None, f"{what}: tape gave None, torch {want}"
        assert want is None or not want.any(), f"{what}: tape gave None, torch {want}"
        return
    assert isinstance(got, tape.Tensor), f"{what}: expected a tape.Tensor, got {type(got)}"
    assert got.dtype == source.dtype, f"{what}: dtype {got.dtype} != source dtype {source.dtype}"
    if want is None:
        want = np.zeros(got.shape, source.dtype)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch has {want.shape}"
    rtol, atol = tol
    np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol, err_msg=what)


def torch_jacobian(fn, inputs):
    """torch.autograd.functional.jacobian, vectorized (vmap) where torch's rules allow it."""
    try:
        return torch.autograd.functional.jacobian(fn, inputs, vectorize=True)
    except RuntimeError:  # an op without a batching rule (data-dependent shapes, in place)
        return torch.autograd.functional.jacobian(fn, inputs)
