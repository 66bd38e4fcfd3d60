"""Samplers: the order in which a ``DataLoader`` visits a dataset's indices.

A sampler is any iterable of indices with ``__len__``; ``DataLoader(..., sampler=s)``
batches what ``iter(s)`` yields, a fresh iteration per epoch. Randomness follows tape's
generator design: ``generator=None`` draws from the library generator (``tape.manual_seed``),
a ``numpy.random.Generator`` is drawn from as it is, and a seed (an int, or anything
``numpy.random.default_rng`` takes) starts a generator of its own.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import creation


def _rng(generator, who: str) -> np.random.Generator:
    """The numpy generator that ``generator`` names: tape's for None, its own for a seed."""
    if generator is None:
        return creation.generator()
    if isinstance(generator, np.random.Generator):
        return generator
    if not isinstance(generator, bool):
        try:
            return np.random.default_rng(generator)
        except (TypeError, ValueError):
            pass
    raise TypeError(
        f"{who}: generator must be None (tape's generator, seeded by tape.manual_seed), a "
        f"numpy.random.Generator or a non-negative int seed, got {generator!r} "
        f"({type(generator).__name__}); e.g. generator=np.random.default_rng(42) or "
        "generator=42"
    )


def _length(data_source, who: str) -> int:
    if not hasattr(data_source, "__len__"):
        raise TypeError(f"{who} needs a data_source with __len__, got "
                        f"{type(data_source).__name__}")
    return len(data_source)


class Sampler:
    """The base of samplers: subclasses define ``__iter__`` (indices) and ``__len__``."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class SequentialSampler(Sampler):
    """``0, 1, ..., len(data_source) - 1``, in order: a loader's order without shuffle."""

    def __init__(self, data_source):
        _length(data_source, "SequentialSampler")
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """Indices in a random order: a permutation per pass, or draws with ``replacement``.

    ``num_samples`` (default ``len(data_source)``) indices per iteration; more than the
    dataset's length without replacement chains whole permutations, as PyTorch does. Each
    iteration draws a new order from ``generator`` (see the module's docstring): a seed
    gives the same sequence of epochs for every sampler made with it.
    """

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        _length(data_source, "RandomSampler")
        if not isinstance(replacement, bool):
            raise TypeError(f"RandomSampler: replacement should be a boolean value, but got "
                            f"replacement={replacement!r}")
        if num_samples is not None and (isinstance(num_samples, bool)
                                        or not isinstance(num_samples, numbers.Integral)
                                        or num_samples <= 0):
            raise ValueError(f"RandomSampler: num_samples should be a positive integer value, "
                             f"but got num_samples={num_samples!r}")
        self.data_source, self.replacement = data_source, replacement
        self._num_samples = None if num_samples is None else int(num_samples)
        self.generator = generator
        self._generator = None if generator is None else _rng(generator, "RandomSampler")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        n, count = len(self.data_source), self.num_samples
        rng = self._generator if self._generator is not None else creation.generator()
        if n == 0:
            if count:
                raise ValueError(f"RandomSampler: cannot draw {count} samples from an empty "
                                 "data_source")
            return iter(())
        if self.replacement:
            order = rng.integers(0, n, count)
        else:
            order = np.concatenate([rng.permutation(n) for _ in range(-(-count // n))])[:count]
        return iter(order.tolist())


class DistributedSampler(Sampler):
    """This process's share of a dataset's indices, as PyTorch's ``DistributedSampler``.

    The (shuffled, with ``seed`` and the epoch) indices are padded by repeating the first
    ones until they divide evenly (or, with ``drop_last``, cut to a multiple of
    ``num_replicas``), then rank ``r`` takes every ``num_replicas``-th from ``r``: the
    shards are disjoint but for the padding, cover the dataset, and have one length, so
    every process takes the same number of steps. Call ``set_epoch(epoch)`` (or the
    loader's) before each epoch for a new order. ``num_replicas`` and ``rank`` default to
    ``tape.distributed``'s world size and rank.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        n = _length(dataset, "DistributedSampler")
        if num_replicas is None or rank is None:
            from .. import distributed

            num_replicas = distributed.world_size() if num_replicas is None else num_replicas
            rank = distributed.rank() if rank is None else rank
        for name, value, least in (("num_replicas", num_replicas, 1), ("rank", rank, 0),
                                   ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
                    or value < least:
                raise ValueError(f"DistributedSampler: {name} must be an integer of at least "
                                 f"{least}, got {value!r}")
        if rank >= num_replicas:
            raise ValueError(f"DistributedSampler: invalid rank {rank}, rank should be in the "
                             f"interval [0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        if self.drop_last and n % self.num_replicas:
            self.num_samples = max(0, -(-(n - self.num_replicas) // self.num_replicas))
        else:
            self.num_samples = -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from now on (the same on every process)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            indices = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            indices = np.arange(n)
        if not self.drop_last:
            pad = self.total_size - n
            if pad > 0 and n:
                indices = np.concatenate([indices, np.resize(indices, pad)])
        else:
            indices = indices[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas].tolist())
