"""Gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_ (but not in place)."""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..tensor import Tensor, wrap


def clip_grad_norm(grads, max_norm: float, norm_type: float = 2.0, error_if_nonfinite=False):
    """Scale gradients so that their joint norm is at most ``max_norm``.

    Returns ``(clipped_grads, total_norm)``: new Tensors (None entries stay None; the inputs
    are not modified) scaled by ``min(1, max_norm / (total_norm + 1e-6))``, and the norm of
    all gradients together before clipping, a 0-d Tensor on their device. The scale stays
    on the device, so no GPU synchronization happens unless ``error_if_nonfinite``.

    >>> grads = t.gradient(loss, params)
    >>> grads, norm = tape.optim.clip_grad_norm(grads, max_norm=1.0)
    >>> opt.step(grads)
    """
    norm_type = float(norm_type)
    arrays = [None if g is None else (g.data if isinstance(g, Tensor) else g) for g in grads]
    present = [a for a in arrays if a is not None]
    if not present:
        return list(arrays), wrap(np.zeros((), np.float32))
    xp = backend.xp(*present)
    norms = xp.stack([_norm(xp, a, norm_type) for a in present])
    total = _norm(xp, norms, norm_type)
    if error_if_nonfinite and not math.isfinite(float(total)):
        raise RuntimeError(
            f"the total norm of order {norm_type} of the gradients is {float(total)}; "
            "pass error_if_nonfinite=False to clip anyway"
        )
    scale = xp.minimum(max_norm / (total + 1e-6), 1.0)
    clipped = [None if a is None else wrap(a * scale.astype(a.dtype)) for a in arrays]
    return clipped, wrap(total)


def _norm(xp, a, norm_type):
    """The vector norm of order ``norm_type`` of all of ``a``'s elements, in a's dtype."""
    a = a.ravel()
    if norm_type == math.inf:
        return xp.abs(a).max() if a.size else xp.zeros((), a.dtype)
    if norm_type == -math.inf:
        return xp.abs(a).min()
    if norm_type == 2.0:
        return xp.sqrt(xp.dot(a, a))
    if norm_type == 1.0:
        return xp.abs(a).sum()
    if norm_type == 0.0:
        return xp.count_nonzero(a).astype(a.dtype)
    return (xp.abs(a) ** norm_type).sum() ** (1.0 / norm_type)
