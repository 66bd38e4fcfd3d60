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
