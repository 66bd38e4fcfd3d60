"""DataLoader: mini-batches over a dataset, in order or shuffled reproducibly per epoch."""

from __future__ import annotations

import itertools
import numbers

import numpy as np

from .. import backend, creation
from ..tensor import Tensor, wrap


def _stack(arrays):
    return wrap(backend.xp(*arrays).stack(arrays))


def default_collate(items: list):
    """Stack a list of items into one batch along a new first axis.

    An item may be a tensor, an array, a Python or numpy scalar (floats become float32,
    ints int64), or a tuple, list or dict of those; the batch has the same structure
    (tuples and lists both give tuples) with tape tensors in place of the leaves.
    """
    first = items[0]
    if isinstance(first, (Tensor, np.ndarray, np.generic)) or backend.is_cupy(first):
        return _stack([it.data if isinstance(it, Tensor) else it for it in items])
    if isinstance(first, (bool, np.bool_)):
        return wrap(np.array(items, dtype=np.bool_))
    if isinstance(first, numbers.Integral):
        return wrap(np.array(items, dtype=np.int64))
    if isinstance(first, numbers.Real):
        return wrap(np.array(items, dtype=np.float32))
    if isinstance(first, (tuple, list)):
        if any(len(it) != len(first) for it in items):
            raise ValueError("default_collate: the items of a batch have different lengths")
        return tuple(default_collate([it[k] for it in items]) for k in range(len(first)))
    if isinstance(first, dict):
        return {key: default_collate([it[key] for it in items]) for key in first}
    raise TypeError(
        f"default_collate cannot batch items of type {type(first).__name__}; return tensors, "
        "arrays, numbers or tuples of them from __getitem__, or pass collate_fn=..."
    )


class DataLoader:
    """Iterate over a dataset in mini-batches.

    Each batch mirrors the dataset's items with a new first axis: a ``TensorDataset``
    gives tuples of tensors. With ``shuffle=True`` every epoch (every ``iter(loader)``)
    uses a new order: drawn from ``seed`` and the epoch number when ``seed`` is given, so
    two loaders with the same seed agree epoch by epoch, and otherwise from the library
    generator (``tape.manual_seed``). The last, short batch is dropped with ``drop_last``.

    ``sampler`` (an iterable of indices with ``__len__``: ``RandomSampler``, a
    ``DistributedSampler``, a class of your own) chooses the order instead of ``shuffle``
    and ``seed``; it is iterated afresh each epoch, and ``len(loader)`` follows
    ``len(sampler)``.

    >>> loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, seed=0)
    >>> for epoch in range(10):
    ...     for xb, yb in loader:
    ...         ...
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 collate_fn=None, sampler=None):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"DataLoader needs a dataset with __len__ and __getitem__, got {type(dataset)}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got "
                             f"{batch_size!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ValueError(f"DataLoader: seed must be a non-negative integer, got {seed!r}")
        if sampler is not None:
            if not hasattr(sampler, "__iter__"):
                raise TypeError(f"DataLoader: sampler must be an iterable of indices (with "
                                f"__iter__ and __len__), got {type(sampler).__name__}")
            if shuffle:
                raise ValueError("DataLoader: sampler option is mutually exclusive with "
                                 "shuffle; the sampler chooses the order (use RandomSampler "
                                 "to shuffle)")
            if seed is not None:
                raise ValueError(f"DataLoader: seed={seed!r} seeds the loader's own shuffle, "
                                 "which a sampler replaces; seed the sampler instead")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.sampler = sampler
        self.shuffle, self.drop_last, self.seed = bool(shuffle), bool(drop_last), seed
        self.collate_fn = collate_fn
        self.epoch = 0  # the number of the next epoch; set_epoch changes it

    def __len__(self) -> int:
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use the order of ``epoch`` (to resume a seeded run); a
        sampler with ``set_epoch`` (``DistributedSampler``) is told too."""
        self.epoch = int(epoch)
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _order(self) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        if self.seed is None:
            return creation.generator().permutation(n)
        return np.random.default_rng([int(self.seed), self.epoch]).permutation(n)

    def __iter__(self):
        if self.sampler is not None:
            chunks = self._sampled(iter(self.sampler))  # started now, as _order is drawn
        else:
            order = self._order()  # drawn now, so the epoch starts when iteration does
            size = self.batch_size
            stop = len(order) - len(order) % size if self.drop_last else len(order)
            chunks = (order[start:start + size] for start in range(0, stop, size))
        self.epoch += 1
        return self._batches(chunks)

    def _sampled(self, indices):
        """The sampler's indices in arrays of ``batch_size``, read as the batches are drawn."""
        size = self.batch_size
        while True:
            chunk = list(itertools.islice(indices, size))
            if not chunk or (self.drop_last and len(chunk) < size):
                return
            index = np.asarray(chunk)
            if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
                raise TypeError(f"DataLoader: the sampler must yield one integer index at a "
                                f"time, got {chunk[0]!r}; samplers of whole batches are not "
                                "supported")
            yield index

    def _batches(self, chunks):
        gather = None if self.collate_fn else getattr(self.dataset, "get_batch", None)
        collate = self.collate_fn or default_collate
        for index in chunks:
            if gather is not None:
                yield gather(index)
            else:
                yield collate([self.dataset[int(i)] for i in index])

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed}"
                + ("" if self.sampler is None else f", sampler={type(self.sampler).__name__}")
                + ")")
