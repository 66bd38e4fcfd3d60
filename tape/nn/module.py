"""``Module``, the base of every layer and model.

A module registers what is assigned to it: a ``Parameter`` becomes a parameter, a
``Module`` a submodule; ``register_buffer`` adds state that is saved but not trained
(running statistics). Names are torch's dotted paths (``"0.weight"``, ``"bn.running_mean"``).

Every module also remembers its constructor's arguments, so that ``_config()`` can
describe a built-in layer as JSON: see ``architecture.py``.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor, wrap
from .parameter import Parameter

_registry = {}  # built-in layers by class name, for tape.nn.build


class Module:
    """Base class of layers and models: subclass it, assign parameters and submodules in
    ``__init__``, and compute in ``forward``.

    >>> class Net(tape.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = tape.nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return self.fc(x).relu()
    >>> [name for name, _ in Net().named_parameters()]
    ['fc.weight', 'fc.bias']
    """

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        object.__setattr__(self, "_init_args", (args, kwargs))
        return self

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("tape.nn"):
            _registry[cls.__name__] = cls

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", {})

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required '
                                  '"forward" function')

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ----- registration -----
    def _dicts(self, name):
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() call "
                                 "(call super().__init__() first)")
        return d["_parameters"], d["_buffers"], d["_modules"]

    def _forget(self, name):
        params, buffers, modules = self._dicts(name)
        for store in (self.__dict__, params, buffers, modules):
            store.pop(name, None)
        self._non_persistent.discard(name)

    def __setattr__(self, name, value):
        d = self.__dict__
        if isinstance(value, Parameter):
            self._forget(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            self._modules[name] = value
        elif name in d.get("_parameters", ()):
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter {name!r} "
                                "(tape.nn.Parameter or None expected)")
            self._parameters[name] = None
        elif name in d.get("_modules", ()):
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                f"{name!r} (tape.nn.Module or None expected)")
            self._modules[name] = None
        elif name in d.get("_buffers", ()):
            self._buffers[name] = self._buffer_value(name, value)
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        d = self.__dict__
        if any(name in d.get(s, ()) for s in ("_parameters", "_buffers", "_modules")):
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    @staticmethod
    def _buffer_value(name, value):
        if value is None or isinstance(value, Tensor):
            return value
        if isinstance(value, np.ndarray) or backend.is_cupy(value):
            return wrap(value)
        raise TypeError(f"cannot assign '{type(value).__name__}' as buffer {name!r} "
                        "(a tensor, an array or None expected)")

    def _check_name(self, name, what, store):
        if not isinstance(name, str):
            raise TypeError(f"{what} name should be a string, got {type(name).__name__}")
        if "." in name or name == "":
            raise KeyError(f"{what} name can't contain \".\" or be empty, got {name!r}")
        self._dicts(name)
        if hasattr(self, name) and name not in self.__dict__[store]:
            raise KeyError(f"attribute {name!r} already exists")

    def register_buffer(self, name, tensor, persistent=True):
        """Add state that is saved (unless ``persistent=False``) and moved by ``to``, but
        not trained: e.g. BatchNorm's running statistics."""
        self._check_name(name, "buffer", "_buffers")
        value = self._buffer_value(name, tensor)
        self._forget(name)
        self._buffers[name] = value
        if not persistent:
            self._non_persistent.add(name)

    def register_parameter(self, name, param):
        """Add a parameter (or None: a declared, absent parameter such as ``bias=False``)."""
        self._check_name(name, "parameter", "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' as parameter {name!r} "
                            "(tape.nn.Parameter or None expected)")
        self._forget(name)
        self._parameters[name] = param

    def add_module(self, name, module):
        """Add a child module (or None) under ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name(name, "module", "_modules")
        self._forget(name)
        self._modules[name] = module

    register_module = add_module

    # ----- traversal: lists, in torch's order, shared objects once -----
    def named_modules(self, memo=None, prefix=""):
        memo = set() if memo is None else memo
        out = []
        if id(self) not in memo:
            memo.add(id(self))
            out.append((prefix, self))
            for name, m in self._modules.items():
                if m is not None:
                    out.extend(m.named_modules(memo, f"{prefix}.{name}" if prefix else name))
        return out

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_children(self):
        seen, out = set(), []
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                out.append((name, m))
        return out

    def children(self):
        return [m for _, m in self.named_children()]

    def _named_members(self, store, prefix, recurse):
        mods = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        seen, out = set(), []
        for mp, m in mods:
            for name, v in getattr(m, store).items():
                if v is not None and id(v) not in seen:
                    seen.add(id(v))
                    out.append((f"{mp}.{name}" if mp else name, v))
        return out

    def named_parameters(self, prefix="", recurse=True):
        """``(dotted name, parameter)`` pairs, in registration order, as torch."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        """The parameters as a list (frozen ones too), ready for ``t.gradient``."""
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        return [b for _, b in self.named_buffers(recurse=recurse)]

    # ----- modes, devices, dtypes -----
    def train(self, mode=True):
        """Set training mode on this module and every submodule; returns ``self``."""
        if not isinstance(mode, bool):
            raise TypeError(f"training mode is expected to be a bool, got {mode!r}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode (``train(False)``): dropout off, batch norm on running stats."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def apply(self, fn):
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def to(self, device=None, dtype=None):
        """Move (``"cpu"``/``"cuda"``) and/or cast floating-point parameters and buffers, in
        place: the Parameter objects stay the same, their arrays change. A dtype may be
        given alone: ``model.to(tape.float64)``. Returns ``self``."""
        if device is not None and not isinstance(device, str):
            device, dtype = None, device
        if device is not None:
            backend.module_for(device)  # a clear error for an unknown or unusable device
        for m in self.modules():
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is None:
                    continue
                a = t.data
                if dtype is not None and a.dtype.kind == "f":
                    a = a.astype(dtype)
                t.data = backend.to_device(a, device)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    # ----- state -----
    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Parameters and persistent buffers by dotted name (this module's own, then its
        children's, as torch). Values share memory with the model; ``keep_vars=True``
        gives the Parameter objects themselves."""
        out = {} if destination is None else destination
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p if keep_vars else wrap(p.data)
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                out[prefix + name] = b if keep_vars else wrap(b.data)
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(out, prefix + name + ".", keep_vars)
        return out

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy values into the parameters and buffers, in place (cast to each one's dtype
        and device). Shapes must match; with ``strict``, the keys too. Nothing is copied
        when an error is raised. With ``assign``, they take the state dict's arrays
        instead (no copy where dtype and device already match), as in PyTorch.
        Returns ``(missing_keys, unexpected_keys)``."""
        from .state import load_state_dict

        return load_state_dict(self, state_dict, strict, assign)

    # ----- description -----
    def _config(self):
        """The constructor's arguments by name, as JSON-able values (see the module doc)."""
        from .architecture import config_of

        return config_of(self)

    def extra_repr(self):
        """The text between the parentheses of this module's repr (its settings)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = [f"({name}): " + repr(m).replace("\n", "\n  ")
                    for name, m in self._modules.items()]
        body = ""
        if len(lines) == 1 and not children:
            body = lines[0]
        elif lines or children:
            body = "\n  " + "\n  ".join(lines + children) + "\n"
        return f"{type(self).__name__}({body})"


def count(value, name, layer, least=0):
    """``value`` as an int of at least ``least``, for a layer's size arguments
    (``Linear(4.5, 3)`` or ``Linear(-1, 3)`` would otherwise be truncated or fail later)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{layer}: {name} must be an int, got {value!r} "
                        f"({type(value).__name__})")
    if value < least:
        raise ValueError(f"{layer}: {name} must be at least {least}, got {value}")
    return int(value)
