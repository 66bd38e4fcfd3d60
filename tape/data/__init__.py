"""Datasets and mini-batches: ``Dataset``, ``TensorDataset``, ``Subset``, ``ConcatDataset``,
``random_split``, ``DataLoader`` and its samplers (``DistributedSampler`` too), ``datasets``.

>>> from tape.data import DataLoader, TensorDataset
>>> loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, seed=0)
>>> for xb, yb in loader:
...     ...
"""

from . import datasets  # noqa: F401
from .dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split  # noqa: F401
from .loader import DataLoader, default_collate  # noqa: F401
from .sampler import (DistributedSampler, RandomSampler, Sampler,  # noqa: F401
                      SequentialSampler)
