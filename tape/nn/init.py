"""Parameter initialisation, in place, with the library RNG (``tape.manual_seed``).

Each function fills the tensor's array (a ``Tensor`` or a raw numpy/cupy array) and
returns it; gains and fans are computed as torch.nn.init does.

>>> w = tape.zeros(64, 32)
>>> tape.nn.init.kaiming_uniform_(w, nonlinearity="relu") is w
True
"""

from __future__ import annotations

import contextlib
import math
import threading

import numpy as np

from .. import backend, creation
from ..tensor import Tensor


def _array(tensor):
    return tensor.data if isinstance(tensor, Tensor) else tensor


_building = threading.local()


@contextlib.contextmanager
def shapes_only():
    """Layers built inside hold zero-byte placeholders of their tensors' shapes and skip
    random initialisation: ``load_model`` checks an architecture against a file's tensors
    this way before allocating anything, then hands the loaded arrays to the layers."""
    _building.shapes_only = True
    try:
        yield
    finally:
        _building.shapes_only = False


def building_shapes_only() -> bool:
    return getattr(_building, "shapes_only", False)


def _fill(tensor, values):
    """Write ``values`` (numpy, any float dtype) into the tensor's array, in place."""
    a = _array(tensor)
    a[...] = backend.to_device(np.asarray(values, dtype=a.dtype), backend.device_of(a))
    return tensor


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity (torch.nn.init.calculate_gain)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor):
    shape = _array(tensor).shape
    if len(shape) < 2:
        raise ValueError("fan in and fan out cannot be computed for a tensor with fewer than "
                         f"2 dimensions (shape {shape})")
    receptive = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode {mode!r} not supported, use 'fan_in' or 'fan_out'")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with samples of U(a, b)."""
    if building_shapes_only():
        return tensor
    return _fill(tensor, creation.generator().uniform(a, b, _array(tensor).shape))


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with samples of N(mean, std**2)."""
    if building_shapes_only():
        return tensor
    return _fill(tensor, creation.generator().normal(mean, std, _array(tensor).shape))


def constant_(tensor, val):
    """Fill with ``val``."""
    _array(tensor)[...] = val
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0)


def ones_(tensor):
    return constant_(tensor, 1)


def xavier_uniform_(tensor, gain=1.0):
    """Glorot uniform: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    a = gain * math.sqrt(2.0 / float(fan_in + fan_out)) * math.sqrt(3.0)
    return uniform_(tensor, -a, a)


def xavier_normal_(tensor, gain=1.0):
    """Glorot normal: N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)))


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """He uniform: U(-b, b) with b = gain * sqrt(3 / fan)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """He normal: N(0, std**2) with std = gain / sqrt(fan)."""
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode)))
