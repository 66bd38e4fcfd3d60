"""Datasets: anything with ``__len__`` and ``__getitem__``; tensors held in memory."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor, wrap


class Dataset:
    """The base of map-style datasets: ``len(ds)`` items, ``ds[i]`` for ``0 <= i < len(ds)``.

    Subclasses define ``__len__`` and ``__getitem__``. Those that can gather many items
    at once may also define ``get_batch(indices)``, returning the collated batch, which
    ``DataLoader`` then uses instead of collating one item at a time.
    """

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


def _array(value, position: int):
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.ndarray) or backend.is_cupy(value):
        return value
    try:
        return Tensor(value).data  # lists and scalars, with tape's float32 default
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"TensorDataset: argument {position} is a {type(value).__name__}; "
            "pass tensors or arrays"
        ) from e


class TensorDataset(Dataset):
    """Rows of tensors that share their first dimension: item ``i`` is ``(t[i] for t in ...)``.

    >>> ds = TensorDataset(tape.randn(100, 3), np.arange(100))
    >>> x0, y0 = ds[0]
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        arrays = [_array(t, i) for i, t in enumerate(tensors)]
        for i, a in enumerate(arrays):
            if a.ndim == 0:
                raise ValueError(f"TensorDataset: tensor {i} is 0-d; every tensor needs a "
                                 "first dimension to index")
        lengths = [a.shape[0] for a in arrays]
        if len(set(lengths)) > 1:
            shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
            raise ValueError(f"TensorDataset: the tensors' first dimensions differ ({shapes}); "
                             "they must all hold the same number of rows")
        self.arrays = arrays

    @property
    def tensors(self) -> tuple:
        return tuple(wrap(a) for a in self.arrays)

    def __len__(self) -> int:
        return self.arrays[0].shape[0]

    def __getitem__(self, index):
        return tuple(wrap(a[index]) for a in self.arrays)

    def get_batch(self, indices: np.ndarray) -> tuple:
        """The rows at ``indices`` of every tensor, gathered at once (fancy indexing)."""
        return tuple(wrap(a[backend.xp(a).asarray(indices)]) for a in self.arrays)
