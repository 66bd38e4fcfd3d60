"""Indexing: ``x[index]`` is a gather whose gradient is a scatter-add (repeated indices
accumulate), and each is the other's vector-Jacobian product.

Both take ``nb``, the count of leading batch axes the index does not address (jacobian
cotangents carry them): those axes are moved to the end, where no kind of numpy index
(basic, advanced, boolean, mixed) touches them, and moved back afterwards.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor
from .core import Op, lead_axes


def _to_lead_last(x, nb):
    return x if nb == 0 else x.transpose(tuple(range(nb, x.ndim)) + tuple(range(nb)))


def _to_lead_first(x, nb):
    n = x.ndim
    return x if nb == 0 else x.transpose(tuple(range(n - nb, n)) + tuple(range(n - nb)))


def _gather(x, index, nb=0):
    """``x[index]`` where ``index`` addresses the axes after the first ``nb``."""
    return _to_lead_first(_to_lead_last(x, nb)[index], nb)


def _is_mask(i):
    return getattr(i, "dtype", None) is not None and i.dtype.kind == "b"


def _is_basic(index):
    return all(isinstance(i, (int, np.integer, slice)) or i is None for i in index)


def _scatter_add(g, index, shape, nb=0):
    """Zeros of ``lead + shape`` with ``g`` added at ``index``; repeated indices accumulate."""
    xp = backend.xp(g)
    lead = g.shape[:nb]
    out = xp.zeros(tuple(shape) + lead, dtype=g.dtype)
    values = _to_lead_last(g, nb)
    if _is_basic(index) or (len(index) == 1 and _is_mask(index[0])):
        out[index] = values
    elif xp is np and len(index) == 1 and out.size:  # rows picked by one integer array:
        idx = np.asarray(index[0]).reshape(-1, 1) % out.shape[0]  # one bincount is 2-3x
        row = out.size // out.shape[0]  # faster than np.add.at
        pos = (idx * row + np.arange(row)).reshape(-1)
        sums = np.bincount(pos, weights=values.reshape(-1), minlength=out.size)
        out = sums.reshape(out.shape).astype(g.dtype, copy=False)
    elif xp is np:
        np.add.at(out, index, values)
    else:
        import cupyx

        cupyx.scatter_add(out, index, values)
    return _to_lead_first(out, nb)


gather = Op(  # x[index] on arrays; ``getitem`` normalises the index first
    "gather",
    _gather,
    lambda g, ans, x, index, nb=0: scatter_add(
        g, index=index, shape=x.shape[nb:], nb=len(lead_axes(g, ans.ndim)) + nb
    ),
)
scatter_add = Op(
    "scatter_add",
    _scatter_add,
    lambda g, ans, x, index, shape, nb=0: gather(g, index=index, nb=g.ndim - len(shape)),
)


def normalize_index(index, ndim, device="cpu"):
    """An index as a tuple of ints, slices, None and arrays (on ``device``, where the
    indexed array lives), with Ellipsis expanded."""
    if not isinstance(index, tuple):
        index = (index,)
    out = []
    for i in index:
        if isinstance(i, Tensor) and i._mapped:  # an index that differs between examples
            out.append(i)
            continue
        if isinstance(i, Tensor):
            i = i.data
        elif isinstance(i, list):
            i = np.asarray(i)
        if hasattr(i, "dtype") and i.ndim == 0 and i.dtype.kind in "iu":
            i = int(i)
        elif hasattr(i, "dtype"):
            if i.dtype.kind not in "iub":
                raise IndexError(f"tensors used as indices must be integer or boolean, not "
                                 f"{i.dtype}")
            if backend.device_of(i) != device:  # lists and numpy arrays index a GPU array too
                i = backend.to_device(i, device)
        out.append(i)
    used = sum(
        0 if (i is None or i is Ellipsis) else (i.ndim if _is_mask(i) else 1)
        for i in out
    )
    if used > ndim:
        raise IndexError(f"too many indices ({used}) for a tensor with {ndim} dimensions")
    if sum(i is Ellipsis for i in out) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis in [i for i in out if not hasattr(i, "dtype")]:
        k = next(j for j, i in enumerate(out) if i is Ellipsis)
        out[k : k + 1] = [slice(None)] * (ndim - used)
    return tuple(out)


def getitem(x, index):
    """``x[index]``: basic and advanced indexing; the gradient scatter-adds."""
    data = x.data if isinstance(x, Tensor) else x
    ndim = x.ndim if isinstance(x, Tensor) else data.ndim  # one example's, inside vmap
    return gather(x, index=normalize_index(index, ndim, backend.device_of(data)))
