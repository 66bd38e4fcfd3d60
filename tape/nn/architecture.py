"""Describing a model of built-in layers as JSON, and rebuilding it (for save_model).

Every module keeps the arguments its constructor was called with (``Module.__new__``
captures them: no work for subclasses). ``module._config()`` binds them to the
constructor's parameter names, defaults filled in, as JSON-able values (tuples become
lists, dtypes their names, tensors nested lists)::

    Linear(4, 3)._config() == {"in_features": 4, "out_features": 3, "bias": True,
                               "device": None, "dtype": None}

so ``type(m)(**m._config())`` rebuilds a layer (with fresh weights: load them with
``load_state_dict``). The containers (``Sequential``, ``ModuleList``, ``ModuleDict``)
return ``{}``: their children, in ``named_children()`` order, are their arguments.
``architecture(model)`` nests these descriptions; ``build(spec)`` reverses it. Every
``Module`` subclass defined in the ``tape.nn`` package is a built-in layer (so layers
added there later need nothing more); a layer whose constructor takes something JSON
cannot hold (a function, an object) should override ``_config``.
"""

from __future__ import annotations

import inspect

import numpy as np

from .. import backend
from ..tensor import Tensor
from .module import _registry


def _jsonable(value, where):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if isinstance(value, (np.dtype, type)) and np.dtype(value).kind in "biufc":
        return np.dtype(value).name
    if isinstance(value, (Tensor, np.ndarray)) or backend.is_cupy(value):
        return backend.to_numpy(value.data if isinstance(value, Tensor) else value).tolist()
    raise TypeError(f"{where}={value!r}): cannot be described as JSON; override _config()")


def config_of(module):
    """``module._config()``: the constructor's arguments by name, as JSON-able values."""
    args, kwargs = module.__dict__.get("_init_args", ((), {}))
    sig = inspect.signature(type(module).__init__)
    bound = sig.bind(None, *args, **kwargs)
    bound.apply_defaults()
    name = type(module).__name__
    out = {}
    for key, value in list(bound.arguments.items())[1:]:
        kind = sig.parameters[key].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update({k: _jsonable(v, f"{name}({k}") for k, v in value.items()})
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise TypeError(f"{name}: positional *args cannot be described as JSON; "
                                "override _config()")
        else:
            out[key] = _jsonable(value, f"{name}({key}")
    return out


def architecture(module):
    """``{"type": class name, "config": module._config()}`` plus, for containers,
    ``"children": {name: architecture(child)}``: JSON-able, for built-in layers only."""
    cls = type(module)
    if _registry.get(cls.__name__) is not cls:
        raise TypeError(f"{cls.__name__} is not a built-in layer of tape.nn, so its "
                        "architecture cannot be stored; save its state_dict and rebuild the "
                        "model in code")
    spec = {"type": cls.__name__, "config": module._config()}
    if getattr(cls, "_children_are_arguments", False):
        spec["children"] = {k: architecture(m) for k, m in module._modules.items()}
    return spec


def build(spec):
    """The module that ``architecture`` described, with freshly initialised weights."""
    cls = _registry.get(spec.get("type"))
    if cls is None:
        raise ValueError(f"unknown layer type {spec.get('type')!r} in the architecture; "
                         f"known: {sorted(_registry)}")
    if "children" in spec:
        return cls._from_children({k: build(v) for k, v in spec["children"].items()},
                                  **spec["config"])
    return cls(**spec["config"])
