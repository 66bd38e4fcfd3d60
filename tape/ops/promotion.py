"""Type promotion, PyTorch's rule, and the constants beside tensors (``x * 0.5``).

Two-input arithmetic ops bring their operands to one dtype before the forward: the
result has the highest category of the operands (bool < int < float < complex), and
within it arrays with dimensions decide before 0-d arrays and those before Python
numbers, so a float32 tensor stays float32 beside integer tensors and numbers.
"""

from __future__ import annotations

import numpy as np

_array = np.array
_ndarray = np.ndarray


def _constant(c, like):
    """A Python number beside a floating-point array, as a 0-d array of its dtype.

    The same value numpy's promotion rules would use, but numpy handles a 0-d array
    twice as fast as a Python scalar, and the rules reuse it in the replay. The arrays
    of the constants a program uses (x * 0.5, y + 1) are made once, read-only."""
    if (type(c) is not float and type(c) is not int) or type(like) is not _ndarray:
        return c
    key = (c, like.dtype)
    array = _constants.get(key)
    if array is not None:
        return array
    if like.dtype.kind != "f":
        return c
    array = _array(c, like.dtype)
    # 0.0 == -0.0 as keys but not as factors; nan != nan would never hit.
    if c != 0 and c == c and len(_constants) < 1024:
        array.flags.writeable = False
        _constants[key] = array
    return array


_constants = {}


# ----- type promotion: PyTorch's rule -----
_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}
_DEFAULT = {0: np.dtype(bool), 1: np.dtype(np.int64), 2: np.dtype(np.float32),
            3: np.dtype(np.complex64)}  # the dtype a Python number of each category takes
_SCALARS = (bool, int, float, complex, np.generic)


def promoted(a, b, division=False):
    """``a`` and ``b`` (arrays, or Python or numpy numbers) as two operands of one dtype,
    by PyTorch's rule: the result has the highest category of the operands (bool < int <
    float < complex); within it, arrays with dimensions decide before 0-d arrays, and
    those before numbers (a number takes its category's default dtype: int64, float32);
    operands that decide together are promoted (float32 and float64 give float64). So a
    float32 tensor stays float32 beside integer tensors, numbers and 0-d values of any
    kind. ``division``: an integer result becomes float32 (true division). Numbers are
    returned as arrays of that dtype, or Python numbers (numpy's rule keeps them weak)."""
    ranked = []
    for x in (a, b):
        if isinstance(x, _SCALARS):
            kind = np.dtype(type(x)).kind if isinstance(x, np.generic) else (
                "b" if type(x) is bool else "i" if type(x) is int else
                "f" if type(x) is float else "c")
            ranked.append((_CATEGORY.get(kind, 2), 0, None))
        else:
            ranked.append((_CATEGORY.get(x.dtype.kind, 2), 2 if x.ndim else 1, x.dtype))
    category = max(r[0] for r in ranked)
    top = max(r[1] for r in ranked if r[0] == category)
    dtypes = [r[2] for r in ranked if r[0] == category and r[1] == top]
    dtype = _DEFAULT[category] if top == 0 else np.result_type(*dtypes)
    if division and category < 2:
        dtype = _DEFAULT[2]
    return tuple(_as(x, dtype) for x in (a, b))


def _as(x, dtype):
    if isinstance(x, np.generic):
        return x.item()  # a Python number: weak beside the array that now has ``dtype``
    if isinstance(x, _SCALARS):
        return x
    return x if x.dtype == dtype else x.astype(dtype)


def _with_scalar(array, c, division):
    """``array`` and the non-Tensor operand ``c`` beside it, promoted; the common case (a
    float array and a Python number) through the constants' cache."""
    if (type(c) is float or type(c) is int) and array.dtype.kind == "f":
        c = _constant(c, array)
    elif isinstance(c, _SCALARS) or hasattr(c, "dtype"):
        array, c = promoted(array, c, division)
    return (array, c)
