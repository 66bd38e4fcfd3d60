"""SGD with momentum, dampening, Nesterov momentum and weight decay, as torch.optim.SGD."""

from __future__ import annotations

from kernels.cpu import elementwise as _cpu

from .. import backend
from .optimizer import Optimizer, weight_decayed


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's formulation (the momentum buffer holds the step).

    >>> opt = tape.optim.SGD([w], lr=0.1, momentum=0.9)
    >>> opt.step([grad_w])           # w.data changes in place
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, maximize=False):
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "nesterov": nesterov, "weight_decay": weight_decay, "maximize": maximize}
        super().__init__(params, defaults)

    def _check(self, group):
        super()._check(group)
        if not group["momentum"] >= 0:
            raise ValueError(f"invalid momentum={group['momentum']}: it must be >= 0")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "nesterov=True needs momentum > 0 and dampening=0, got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def _update_group(self, group, pairs):
        lr, momentum = float(group["lr"]), float(group["momentum"])
        dampening, decay = float(group["dampening"]), float(group["weight_decay"])
        nesterov, maximize = bool(group["nesterov"]), bool(group["maximize"])
        plain_momentum = momentum and not (dampening or decay or nesterov or maximize)
        for p, g, state in pairs:
            buf = state.get("momentum_buffer")
            if plain_momentum and buf is not None and _cpu.applies(p, g, buf):
                _cpu.sgd_momentum_(p, g, buf, lr, momentum)  # the common case, in one pass
                continue
            xp = backend.xp(p)
            g, owned = weight_decayed(xp, p, g, decay, maximize)
            spare = g if owned else None  # an array of p's shape free to overwrite
            if momentum:
                buf = state.get("momentum_buffer")
                if buf is None:  # the first step copies the gradient into the buffer
                    buf = state["momentum_buffer"] = g if owned else g.copy()
                    spare = None
                else:
                    buf *= momentum
                    if dampening:  # then g is not needed again: nesterov forbids dampening
                        spare = xp.multiply(g, 1.0 - dampening, out=spare)
                        buf += spare
                    else:
                        buf += g
                if nesterov:
                    direction = xp.multiply(buf, momentum)  # g is still needed: a new array
                    direction += g
                    spare = direction
                else:
                    direction = buf
            else:
                direction = g
            p += xp.multiply(direction, -lr, out=spare)
