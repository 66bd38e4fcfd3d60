"""tape: a define-by-run automatic differentiation engine on NumPy (and CuPy).

>>> import tape
>>> x = tape.tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> with tape.Tape() as t:
...     y = (x ** 2).sum()
>>> t.gradient(y, x)
tensor([2., 4., 6.], dtype=float32)
"""

import numpy as _np

from .tensor import Tensor  # noqa: F401  (first: it pulls in the ops)
from . import functional  # noqa: F401
from .creation import (  # noqa: F401
    arange, eye, from_dlpack, full, get_rng_state, manual_seed, ones, ones_like, rand, randn,
    set_rng_state, tensor, zeros, zeros_like,
)
from .checkpoint import checkpoint  # noqa: F401
from .custom import Function, custom_gradient  # noqa: F401
from .functional import (  # noqa: F401
    abs, argmax, argmin, broadcast_to, clip, concatenate, cos, einsum, exp, expand, flatten,
    gelu, leaky_relu, log, log_softmax, logsumexp, matmul, max, maximum, mean, min, minimum,
    pad, permute, prod, relu, reshape, sigmoid, sin, softmax, softplus, split, sqrt, squeeze,
    stack, std, sum, swapaxes, tanh, transpose, unsqueeze, var, where,
)
from .modes import detect_anomaly, no_grad  # noqa: F401
from .tape import Tape  # noqa: F401
from . import func  # noqa: F401,E402
from .func import ForwardAccumulator  # noqa: F401,E402
from .testing import GradcheckError, gradcheck, gradgradcheck  # noqa: F401
from .io import load, save  # noqa: F401
from . import data, nn, optim  # noqa: F401,E402

float16, float32, float64 = _np.float16, _np.float32, _np.float64
int8, int16, int32, int64, uint8, bool_ = (
    _np.int8, _np.int16, _np.int32, _np.int64, _np.uint8, _np.bool_,
)


def stop_gradient(x):
    """``x.detach()``: the same values, never recorded (as ``tf.stop_gradient``)."""
    return x.detach()


def detach(x):
    return x.detach()


__version__ = "0.1.0"
