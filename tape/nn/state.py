"""Loading a state dict into a module: shape and key checks, then in-place copies."""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from .. import backend
from ..tensor import Tensor

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _as_array(value, name):
    """A checkpoint value (tape/torch tensor, numpy/cupy array, list) as an array."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.ndarray) or backend.is_cupy(value):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(f"state_dict entry {name!r} of type {type(value).__name__} is not an "
                        "array or tensor") from None


def load_state_dict(module, state_dict, strict=True, assign=False):
    """``module.load_state_dict``: every error is collected first; nothing is copied
    unless all checks pass. Size mismatches raise even when not ``strict`` (as torch).
    With ``assign``, each parameter and buffer takes the loaded array (cast to its dtype
    and device) instead of copying into its own."""
    own = module.state_dict(keep_vars=True)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    errors, copies = [], []
    for name, target in own.items():
        if name in state_dict:
            value = _as_array(state_dict[name], name)
            if tuple(value.shape) != tuple(target.shape):
                errors.append(f"size mismatch for {name}: copying a param with shape "
                              f"{tuple(value.shape)} from checkpoint, the shape in current "
                              f"model is {tuple(target.shape)}.")
            copies.append((target, value))
    if strict:
        if unexpected:
            errors.insert(0, "Unexpected key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if missing:
            errors.insert(0, "Missing key(s) in state_dict: "
                          + ", ".join(f'"{k}"' for k in missing) + ".")
    if errors:
        raise RuntimeError(f"Error(s) in loading state_dict for {type(module).__name__}:\n\t"
                           + "\n\t".join(errors))
    for target, value in copies:
        a = target.data
        value = backend.to_device(value, backend.device_of(a)).astype(a.dtype, copy=False)
        if assign:
            target.data = value
        else:
            a[...] = value
    return IncompatibleKeys(missing, unexpected)
