"""Optimizer: parameter groups, per-parameter state, and PyTorch's state_dict format.

Subclasses implement ``_update_group(group, pairs)`` on raw arrays; the base class checks
the gradients against the parameters once, before any parameter moves, so a bad call
never leaves a model half-updated.
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import backend
from ..tensor import Tensor


class Optimizer:
    """Base class of the optimizers: holds ``param_groups`` and ``state`` as PyTorch does.

    ``params`` is an iterable of tensors, or of dicts ``{"params": [...], "lr": ...}`` whose
    settings override the optimizer's defaults for that group. ``step(grads)`` takes one
    gradient per parameter, in the order of
    ``[p for group in opt.param_groups for p in group["params"]]`` (None skips one).
    """

    def __init__(self, params, defaults: dict):
        if isinstance(params, Tensor):
            raise TypeError(
                "an optimizer takes an iterable of tensors (or of parameter-group dicts), "
                "got a single Tensor: wrap it in a list, e.g. SGD([w], lr=0.1)"
            )
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict = {}  # parameter Tensor -> dict of its buffers (arrays) and step count
        groups = [params] if isinstance(params, dict) else list(params)
        if not groups:
            raise ValueError("the optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add a group of parameters with its own settings (the defaults fill the rest)."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a parameter group is a dict with a 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizers update tape Tensors, got {type(p).__name__}")
            if p.dtype.kind != "f":
                raise TypeError(f"optimizers update floating-point tensors, got dtype {p.dtype}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or seen & {id(p) for p in params}:
            raise ValueError("a parameter appears twice in the optimizer's parameter groups")
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(
                f"unknown setting(s) {sorted(unknown)} for {type(self).__name__}; "
                f"it takes {sorted(self.defaults)}"
            )
        new = {"params": params, **{k: group.get(k, v) for k, v in self.defaults.items()}}
        if "initial_lr" in group:
            new["initial_lr"] = group["initial_lr"]
        self._check(new)
        self.param_groups.append(new)

    def _check(self, group: dict) -> None:
        """Raise ValueError for settings the update cannot use (overridden per optimizer)."""
        if not group["lr"] >= 0:
            raise ValueError(f"invalid learning rate lr={group['lr']}: it must be >= 0")
        if not group.get("weight_decay", 0) >= 0:
            raise ValueError(f"invalid weight_decay={group['weight_decay']}: it must be >= 0")

    # ----- the step -----

    def step(self, grads) -> None:
        """Update every parameter in place from its gradient (None leaves it unchanged)."""
        if isinstance(grads, dict):
            raise TypeError(
                "step() takes the gradients as a list, one per parameter in the order of "
                "[p for group in opt.param_groups for p in group['params']], got a dict: ask "
                "t.gradient(loss, list(model.parameters())) (or pass list(grads.values()) if "
                "the dict's order is the parameters')")
        grads = [grads] if isinstance(grads, Tensor) else list(grads)
        n = sum(len(g["params"]) for g in self.param_groups)
        if len(grads) != n:
            raise ValueError(
                f"step() got {len(grads)} gradients for {n} parameters: pass one per parameter, "
                "in the order of [p for group in opt.param_groups for p in group['params']] "
                "(None for a parameter to skip)"
            )
        work, i = [], 0
        for group in self.param_groups:
            pairs = []
            for p in group["params"]:
                g = _gradient_array(grads[i], p, i)
                i += 1
                if g is not None:
                    state = self.state.setdefault(p, {})
                    if state:
                        _follow(state, p.data)
                    pairs.append((p.data, g, state))
            work.append((group, pairs))
        if not any(pairs for _, pairs in work) and n and not self._warned_all_none:
            self._warned_all_none = True
            warnings.warn(
                "step(): every gradient is None, so no parameter changed. That happens when "
                "the forward ran outside `with tape.Tape() as t:` (nothing was recorded), or "
                "when the loss does not depend on these parameters", UserWarning, stacklevel=2)
        for group, pairs in work:
            if pairs:
                self._update_group(group, pairs)

    _warned_all_none = False

    def zero_grad(self, set_to_none=True):
        raise AttributeError(
            "tape's optimizers keep no gradients to zero: each step takes the gradients of "
            "that step, `opt.step(t.gradient(loss, params))`; drop the zero_grad() call")

    def _update_group(self, group: dict, pairs: list) -> None:
        """Apply the update to each (param array, grad array, state dict) of one group."""
        raise NotImplementedError

    # ----- saving and loading -----

    def state_dict(self) -> dict:
        """A snapshot ``{"state": {index: buffers}, "param_groups": [settings]}``, as PyTorch's.

        Parameters are named by their index in the flattened groups; the arrays are copies
        (on the parameter's device), so later steps do not change a saved dict.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            ids = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        params = [p for group in self.param_groups for p in group["params"]]
        state = {
            index[id(p)]: {k: _copy(v) for k, v in self.state[p].items()}
            for p in params
            if self.state.get(p)
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore settings and buffers from ``state_dict()`` of an optimizer shaped like this one.

        Buffers are copied onto each parameter's device and dtype. A torch.optim state dict
        of the same optimizer loads too (its tensors become arrays).
        """
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(
                f"the state dict has {len(saved)} parameter groups, this optimizer "
                f"{len(self.param_groups)}"
            )
        for k, (old, new) in enumerate(zip(saved, self.param_groups)):
            if len(old["params"]) != len(new["params"]):
                raise ValueError(
                    f"parameter group {k} has {len(old['params'])} parameters in the state "
                    f"dict and {len(new['params'])} in this optimizer"
                )
        by_index = {}
        groups = []
        for old, new in zip(saved, self.param_groups):
            known = set(self.defaults) | _SCHEDULE_KEYS  # torch's extras (foreach...) drop out
            group = {**new, **{k: v for k, v in old.items() if k in known}}
            self._check(group)
            groups.append(group)
            by_index.update(zip(old["params"], new["params"]))
        state = {}
        for i, buffers in state_dict["state"].items():
            p = by_index[int(i)]
            state[p] = {k: _restore(k, v, p, self._scalar_state.get(k))
                        for k, v in buffers.items()}
        self.param_groups = groups
        self.state = state

    # state entries that are one number kept as a 0-d array of a fixed dtype (NAdam's
    # mu_product), not a buffer shaped and typed like the parameter
    _scalar_state: dict = {}

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


# the settings schedulers write into a group (OneCycleLR's bounds): a load keeps them, so
# a schedule resumed with last_epoch=k finds them as torch's does
_SCHEDULE_KEYS = {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"}


# ----- helpers shared by the optimizers -----


def _gradient_array(g, p: Tensor, i: int):
    """The raw array of the i-th gradient, checked against its parameter (None passes)."""
    if g is None:
        return None
    g = g.data if isinstance(g, Tensor) else g
    pd = p.data
    if type(g) is type(pd) and g.shape == pd.shape and g.dtype == pd.dtype:
        return g  # the common case: nothing to check or convert
    if not (isinstance(g, np.ndarray) or backend.is_cupy(g)):
        raise TypeError(
            f"step(): gradient {i} is a {type(g).__name__}, not a tensor or array: pass the "
            "list t.gradient(loss, params) returned, one gradient per parameter")
    if g.shape != p.data.shape:
        raise ValueError(f"gradient {i} has shape {g.shape}, its parameter {p.data.shape}")
    if backend.is_cupy(g) != backend.is_cupy(p.data):
        raise ValueError(
            f"gradient {i} is on {backend.device_of(g)}, its parameter on {p.device}: "
            "move one of them with .to(device)"
        )
    if g.dtype != p.data.dtype:
        g = g.astype(p.data.dtype)  # the update keeps the parameter's precision
    return g


def _follow(state, p):
    """Move a parameter's state arrays to its device when the parameter has moved since the
    last step (``model.to("cuda")`` after steps): looks at one array, moves all."""
    for v in state.values():
        if hasattr(v, "shape"):
            if type(v) is not type(p) and backend.is_cupy(v) != backend.is_cupy(p):
                device = backend.device_of(p)
                for k, w in state.items():
                    if hasattr(w, "shape"):
                        state[k] = backend.to_device(w, device)
            return


def _copy(v):
    return v.copy() if hasattr(v, "shape") else v


def _restore(key, value, p: Tensor, scalar_dtype=None):
    """A state entry as this parameter needs it: arrays on its device and dtype (a scalar
    entry, 0-d in ``scalar_dtype``)."""
    if key == "step":
        return int(value)
    if isinstance(value, Tensor):  # as tape.load returns a saved state dict's arrays
        value = value.data
    if scalar_dtype is not None:
        value = backend.to_numpy(value) if hasattr(value, "shape") else value
        return backend.to_device(np.array(value, dtype=scalar_dtype).reshape(()), p.device)
    if not hasattr(value, "shape"):
        return value
    if not backend.is_cupy(value):
        value = np.asarray(value)
    if value.shape != p.shape:
        raise ValueError(
            f"state {key!r} has shape {value.shape}, its parameter {p.shape}: "
            "the state dict belongs to other parameters"
        )
    moved = backend.to_device(value, p.device)
    return moved.astype(p.dtype, copy=moved is value)


def check_betas(group: dict) -> None:
    """Raise ValueError unless the group's eps >= 0 and betas are a pair in [0, 1)."""
    if not group["eps"] >= 0:
        raise ValueError(f"invalid eps={group['eps']}: it must be >= 0")
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas is a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"invalid betas[{i}]={beta}: each beta must be in [0, 1)")


def weight_decayed(xp, p, g, weight_decay: float, maximize: bool):
    """The gradient the formula uses, and whether it is a new array the update may overwrite.

    ``-g`` when maximizing, plus ``weight_decay * p``; PyTorch never modifies ``p.grad``
    either, so a changed gradient is a new array.
    """
    if weight_decay:
        out = xp.multiply(p, weight_decay)
        return (xp.subtract(out, g, out=out) if maximize else xp.add(out, g, out=out)), True
    if maximize:
        return xp.negative(g), True
    return g, False


def adam_decayed(xp, p, g, lr: float, weight_decay: float, decoupled: bool, maximize: bool):
    """The Adam family's weight decay and maximize: decoupled (AdamW's ``p *= 1 - lr *
    weight_decay``, in place) or added to the gradient (:func:`weight_decayed`), whose
    result this returns."""
    if weight_decay and decoupled:
        p *= 1.0 - lr * weight_decay
    return weight_decayed(xp, p, g, 0.0 if decoupled else weight_decay, maximize)


def counted_step(state, xp, p, *buffers) -> int:
    """A parameter's state one step on, its step number returned: at the first step, the
    state starts at step 0 with a zeroed buffer shaped as ``p`` per name in ``buffers``
    (PyTorch's lazy state)."""
    if not state:
        state["step"] = 0
        for name in buffers:
            state[name] = xp.zeros_like(p)
    state["step"] += 1
    return state["step"]


def lerp_(xp, buf, end, weight: float, tmp):
    """``buf += weight * (end - buf)`` in place, with PyTorch's two-sided lerp (exact at 1)."""
    xp.subtract(end, buf, out=tmp)
    if weight < 0.5:
        tmp *= weight
        buf += tmp
    else:
        tmp *= weight - 1.0
        xp.add(end, tmp, out=buf)


def adam_moments_(xp, exp_avg, exp_avg_sq, g, beta1: float, beta2: float):
    """The Adam family's moments in place, as torch's ``exp_avg.lerp_(g, 1 - beta1)`` and
    ``exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)``. Returns the scratch array
    they used, free for the caller's next step."""
    tmp = xp.empty_like(exp_avg)
    lerp_(xp, exp_avg, g, 1.0 - beta1, tmp)
    exp_avg_sq *= beta2
    xp.multiply(g, 1.0 - beta2, out=tmp)
    tmp *= g
    exp_avg_sq += tmp
    return tmp
