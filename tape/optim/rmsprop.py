"""RMSprop, optionally centered and with momentum, as torch.optim.RMSprop."""

from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, lerp_, weight_decayed


class RMSprop(Optimizer):
    """RMSprop (Hinton), PyTorch's formulation: eps is added after the square root.

    >>> opt = tape.optim.RMSprop(model.parameters(), lr=1e-2, momentum=0.9, centered=True)
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False):
        defaults = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                    "momentum": momentum, "centered": centered, "maximize": maximize}
        super().__init__(params, defaults)

    def _check(self, group):
        super()._check(group)
        for name in ("eps", "momentum", "alpha"):
            if not group[name] >= 0:
                raise ValueError(f"invalid {name}={group[name]}: it must be >= 0")

    def _update_group(self, group, pairs):
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        decay, momentum = float(group["weight_decay"]), float(group["momentum"])
        centered, maximize = bool(group["centered"]), bool(group["maximize"])
        for p, g, state in pairs:
            xp = backend.xp(p)
            if not state:
                state["step"] = 0
                state["square_avg"] = xp.zeros_like(p)
            if momentum > 0 and "momentum_buffer" not in state:
                state["momentum_buffer"] = xp.zeros_like(p)
            if centered and "grad_avg" not in state:
                state["grad_avg"] = xp.zeros_like(p)
            state["step"] += 1
            square_avg = state["square_avg"]
            g, _ = weight_decayed(xp, p, g, decay, maximize)

            tmp = xp.empty_like(p)
            square_avg *= alpha  # square_avg.mul_(alpha).addcmul_(g, g, value=1 - alpha)
            xp.multiply(g, 1.0 - alpha, out=tmp)
            tmp *= g
            square_avg += tmp
            if centered:
                grad_avg = state["grad_avg"]
                lerp_(xp, grad_avg, g, 1.0 - alpha, tmp)
                xp.multiply(grad_avg, grad_avg, out=tmp)
                avg = xp.sqrt(xp.subtract(square_avg, tmp, out=tmp), out=tmp)
            else:
                avg = xp.sqrt(square_avg, out=tmp)
            avg += eps

            if momentum > 0:
                buf = state["momentum_buffer"]
                buf *= momentum  # buf.mul_(momentum).addcdiv_(g, avg)
                buf += xp.divide(g, avg, out=avg)
                p += xp.multiply(buf, -lr, out=tmp)
            else:  # p.addcdiv_(g, avg, value=-lr), reusing avg's array
                update = xp.divide(g, avg, out=avg)
                update *= -lr
                p += update
