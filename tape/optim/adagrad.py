"""Adagrad, with learning-rate decay and an initial accumulator, as torch.optim.Adagrad."""

from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, weight_decayed


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.): each coordinate's step shrinks with its summed squared gradients.

    ``clr = lr / (1 + (step - 1) * lr_decay)``; ``sum += g * g``;
    ``p -= clr * g / (sqrt(sum) + eps)``. The ``sum`` buffer starts at
    ``initial_accumulator_value`` on a parameter's first step (torch fills it at construction;
    the values are the same).

    >>> opt = tape.optim.Adagrad(model.parameters(), lr=1e-2)
    """

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, maximize=False):
        defaults = {"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "eps": eps,
                    "maximize": maximize}
        super().__init__(params, defaults)

    def _check(self, group):
        super()._check(group)
        for name in ("lr_decay", "initial_accumulator_value", "eps"):
            if not group[name] >= 0:
                raise ValueError(f"invalid {name}={group[name]}: it must be >= 0")

    def _update_group(self, group, pairs):
        lr, lr_decay, eps = float(group["lr"]), float(group["lr_decay"]), float(group["eps"])
        decay, maximize = float(group["weight_decay"]), bool(group["maximize"])
        for p, g, state in pairs:
            xp = backend.xp(p)
            if not state:
                state["step"] = 0
                state["sum"] = xp.full_like(p, float(group["initial_accumulator_value"]))
            state["step"] += 1
            g, _ = weight_decayed(xp, p, g, decay, maximize)
            clr = lr / (1 + (state["step"] - 1) * lr_decay)

            total = state["sum"]
            tmp = xp.multiply(g, g)  # sum.addcmul_(g, g, value=1)
            total += tmp
            std = xp.sqrt(total, out=tmp)
            std += eps
            update = xp.divide(g, std, out=std)  # p.addcdiv_(g, std, value=-clr)
            update *= -clr
            p += update
