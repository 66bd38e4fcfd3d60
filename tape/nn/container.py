"""Containers: ``Sequential``, ``ModuleList`` and ``ModuleDict``, as in torch."""

from __future__ import annotations

import operator
from collections import OrderedDict

from .module import Module


class _Container(Module):
    _children_are_arguments = True  # for tape.nn.architecture: children, not _config

    def _config(self):
        return {}


class _Listed(_Container):
    """What Sequential and ModuleList share: modules numbered "0", "1", ... in order."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def _renumber(self, items):
        self._modules.clear()
        for i, m in enumerate(items):
            self.add_module(str(i), m)

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        items = list(self._modules.values())
        items.insert(index, module)
        self._renumber(items)
        return self


class Sequential(_Listed):
    """Modules applied one after the other; ``Sequential(*modules)`` names them "0", "1",
    ...; ``Sequential(OrderedDict(name=module, ...))`` keeps the given names.

    >>> model = tape.nn.Sequential(tape.nn.Linear(4, 8), tape.nn.ReLU(), tape.nn.Linear(8, 2))
    >>> model(tape.randn(3, 4)).shape
    (3, 2)
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], dict):
            for name, m in args[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), m)

    @classmethod
    def _from_children(cls, children):
        return cls(OrderedDict(children))

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def _key(self, idx):
        n = len(self._modules)
        idx = operator.index(idx)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for a Sequential of {n} modules")
        return list(self._modules)[idx % n]

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return self._modules[self._key(idx)]

    def __setitem__(self, idx, module):
        self.add_module(self._key(idx), module)

    def __delitem__(self, idx):
        keys = list(self._modules)[idx] if isinstance(idx, slice) else [self._key(idx)]
        for k in keys:
            del self._modules[k]
        if all(k.isdigit() for k in self._modules):  # renumber, as torch
            self._renumber(list(self._modules.values()))



class ModuleList(_Listed):
    """A list of modules whose parameters the parent module sees ("0", "1", ...)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    @classmethod
    def _from_children(cls, children):
        return cls(children.values())

    def __repr__(self):  # repeated identical entries compressed, as torch: "(0-2): 3 x ..."
        if not self._modules:
            return "ModuleList()"
        groups = []  # [first index, last index, repr]
        for i, m in enumerate(self._modules.values()):
            r = repr(m)
            if groups and groups[-1][2] == r:
                groups[-1][1] = i
            else:
                groups.append([i, i, r])
        lines = [(f"({a}): " if a == b else f"({a}-{b}): {b - a + 1} x ") + r.replace("\n", "\n  ")
                 for a, b, r in groups]
        return "ModuleList(\n  " + "\n  ".join(lines) + "\n)"

    def __getitem__(self, idx):
        items = list(self._modules.values())
        if isinstance(idx, slice):
            return ModuleList(items[idx])
        return items[operator.index(idx)]

    def __setitem__(self, idx, module):
        key = str(operator.index(idx) % len(self))
        self.add_module(key, module)

    def __delitem__(self, idx):
        items = list(self._modules.values())
        del items[idx]
        self._renumber(items)

    def __iadd__(self, modules):
        return self.extend(modules)


class ModuleDict(_Container):
    """A dict of modules (insertion-ordered) whose parameters the parent module sees."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    @classmethod
    def _from_children(cls, children):
        return cls(children)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        items = modules.items() if isinstance(modules, dict) else modules
        for key, m in items:
            self[key] = m

    def pop(self, key):
        m = self._modules[key]
        del self[key]
        return m

    def clear(self):
        self._modules.clear()
