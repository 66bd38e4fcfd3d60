"""Datasets: anything with ``__len__`` and ``__getitem__``; tensors held in memory."""

from __future__ import annotations

import math
import numbers
import operator
import warnings

import numpy as np

from .. import backend
from ..tensor import Tensor, wrap
from .sampler import _rng


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


def _positions(indices, who: str) -> np.ndarray:
    """``indices`` as a 1-D int64 array, or a TypeError naming ``who``."""
    array = indices.numpy() if isinstance(indices, Tensor) else np.asarray(indices)
    if array.size == 0:
        return np.zeros(0, np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{who}: indices must be a 1-D sequence of integers, got "
                        f"{type(indices).__name__} of dtype {array.dtype} and shape "
                        f"{array.shape}")
    return array.astype(np.int64, copy=False)


class Subset(Dataset):
    """The items of ``dataset`` at ``indices``, in that order: ``subset[i]`` is
    ``dataset[indices[i]]``.

    ``indices`` is kept as given (``random_split`` gives lists); batches of a dataset
    with ``get_batch`` are still gathered at once.

    >>> train = Subset(dataset, range(1000))
    """

    def __init__(self, dataset, indices):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"Subset needs a dataset with __len__ and __getitem__, got "
                            f"{type(dataset).__name__}")
        index = _positions(indices, "Subset")
        n = len(dataset)
        if index.size and (index.min() < -n or index.max() >= n):
            bad = int(index.min() if index.min() < -n else index.max())
            raise IndexError(f"Subset: index {bad} is out of range for a dataset of {n} items; "
                             f"indices must be in [-{n}, {n})")
        self.dataset, self.indices, self._index = dataset, indices, index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[int(i) for i in self._index[idx]]]
        return self.dataset[int(self._index[idx])]

    @property
    def get_batch(self):
        """The wrapped dataset's ``get_batch`` at the subset's indices (only when it has one)."""
        gather = getattr(self.dataset, "get_batch", None)
        if gather is None:
            raise AttributeError(f"{type(self.dataset).__name__} has no get_batch, so neither "
                                 "has a Subset of it")
        return lambda indices: gather(self._index[np.asarray(indices)])

    def __repr__(self):
        return f"Subset({len(self)} of {type(self.dataset).__name__} of {len(self.dataset)})"


def _concat(parts: list, inverse: np.ndarray):
    """The batches ``parts`` joined along the first axis, rows then put back by ``inverse``."""
    first = parts[0]
    if isinstance(first, Tensor):
        xp = backend.xp(first.data)
        return wrap(xp.concatenate([p.data for p in parts])[xp.asarray(inverse)])
    if isinstance(first, (tuple, list)):
        return tuple(_concat([p[k] for p in parts], inverse) for k in range(len(first)))
    if isinstance(first, dict):
        return {key: _concat([p[key] for p in parts], inverse) for key in first}
    raise TypeError(f"ConcatDataset: get_batch returned a {type(first).__name__}; batches "
                    "drawn across datasets can join tensors, or tuples and dicts of them")


class ConcatDataset(Dataset):
    """Datasets one after another: indices ``0 .. len(datasets[0]) - 1`` are the first's,
    and so on. ``cumulative_sizes[k]`` is where dataset ``k`` ends.

    >>> both = ConcatDataset([train, extra])
    """

    @staticmethod
    def cumsum(sequence) -> list:
        total, ends = 0, []
        for dataset in sequence:
            total += len(dataset)
            ends.append(total)
        return ends

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        for k, d in enumerate(self.datasets):
            if not (hasattr(d, "__len__") and hasattr(d, "__getitem__")):
                raise TypeError(f"ConcatDataset: datasets[{k}] is a {type(d).__name__}; every "
                                "dataset needs __len__ and __getitem__")
        self.cumulative_sizes = self.cumsum(self.datasets)
        self._ends = np.array(self.cumulative_sizes, np.int64)

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def _locate(self, idx: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"ConcatDataset: index {idx} is out of range for {n} items")
        idx = idx + n if idx < 0 else idx
        k = int(np.searchsorted(self._ends, idx, side="right"))
        return k, idx - (self.cumulative_sizes[k - 1] if k else 0)

    def __getitem__(self, idx):
        k, i = self._locate(operator.index(idx))
        return self.datasets[k][i]

    @property
    def get_batch(self):
        """Gathers from each dataset at once (only when every dataset has ``get_batch``)."""
        gathers = [getattr(d, "get_batch", None) for d in self.datasets]
        if any(g is None for g in gathers):
            raise AttributeError("ConcatDataset has get_batch only when all its datasets have")
        return lambda indices: self._gather(gathers, indices)

    def _gather(self, gathers, indices):
        idx, n = np.asarray(indices, np.int64), len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = int(idx.min() if idx.min() < -n else idx.max())
            raise IndexError(f"ConcatDataset: index {bad} is out of range for {n} items")
        idx = np.where(idx < 0, idx + n, idx)
        which = np.searchsorted(self._ends, idx, side="right")
        starts = self._ends - [len(d) for d in self.datasets]
        if idx.size == 0 or which.min() == which.max():  # one dataset: no joining
            k = int(which[0]) if idx.size else 0
            return gathers[k](idx - starts[k])
        parts, rows = [], []
        for k in np.unique(which):
            picked = np.flatnonzero(which == k)
            parts.append(gathers[k](idx[picked] - starts[k]))
            rows.append(picked)
        return _concat(parts, np.argsort(np.concatenate(rows)))


def random_split(dataset, lengths, generator=None) -> list:
    """Split ``dataset`` into non-overlapping random ``Subset``\\ s of the given ``lengths``.

    ``lengths`` are item counts summing to ``len(dataset)``, or fractions summing to 1: each
    split gets ``floor(fraction * len(dataset))`` and the items left over go one each to
    the splits in turn from the first, as in PyTorch. ``generator`` is None (tape's
    generator, seeded by ``tape.manual_seed``), a ``numpy.random.Generator`` (drawn from),
    or a seed such as 42 (the same seed gives the same split).

    >>> train, val = random_split(dataset, [0.8, 0.2], generator=42)
    """
    try:
        lengths = list(lengths)
    except TypeError:
        raise TypeError(f"random_split: lengths must be a sequence of ints or fractions, got "
                        f"{lengths!r}") from None
    for i, x in enumerate(lengths):
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            raise TypeError(f"random_split: lengths[{i}] is {x!r}; give ints (item counts) "
                            "or floats (fractions summing to 1)")
    n, total = len(dataset), sum(lengths)
    if math.isclose(total, 1) and total <= 1:
        for i, fraction in enumerate(lengths):
            if not 0 <= fraction <= 1:
                raise ValueError(f"random_split: fraction at index {i} is not between 0 and 1 "
                                 f"(got {fraction})")
        counts = [int(math.floor(n * fraction)) for fraction in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        for i, count in enumerate(counts):
            if count == 0:
                warnings.warn(f"random_split: length of split at index {i} is 0; this might "
                              "result in an empty dataset", stacklevel=2)
        lengths = counts
    for i, x in enumerate(lengths):
        if not (x >= 0 and float(x).is_integer()):
            raise ValueError(f"random_split: lengths[{i}] is {x!r}; give item counts "
                             f"(non-negative integers summing to {n}) or fractions summing to "
                             f"1 (these sum to {total})")
    lengths = [int(x) for x in lengths]
    if sum(lengths) != n:
        raise ValueError(f"random_split: sum of input lengths ({sum(lengths)}) does not equal "
                         f"the length of the input dataset ({n})")
    order = _rng(generator, "random_split").permutation(n).tolist()
    ends = np.cumsum(lengths).tolist()
    return [Subset(dataset, order[end - length:end]) for end, length in zip(ends, lengths)]
