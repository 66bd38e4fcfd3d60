"""NAdam: Adam with Nesterov momentum and momentum decay, as torch.optim.NAdam."""

from __future__ import annotations

import numpy as np

from .. import backend
from .optimizer import Optimizer, adam_decayed, adam_moments_, check_betas


class NAdam(Optimizer):
    """NAdam (Dozat), PyTorch's formulation with the momentum schedule
    ``mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))``.

    ``mu_product`` (the running product of the ``mu_t``) is a 0-d float32 array on the
    parameter's device, as torch keeps it (its default scalar dtype): float64 parameters then
    follow torch's to the last bits, and torch's state dicts load unchanged.
    ``decoupled_weight_decay=True`` is NAdamW: ``p *= 1 - lr * weight_decay``.

    >>> opt = tape.optim.NAdam(model.parameters(), lr=2e-3)
    """

    _scalar_state = {"mu_product": np.float32}

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, maximize=False):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "momentum_decay": momentum_decay,
                    "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize}
        super().__init__(params, defaults)

    def _check(self, group):
        super()._check(group)
        check_betas(group)
        if not group["momentum_decay"] >= 0:
            raise ValueError(
                f"invalid momentum_decay={group['momentum_decay']}: it must be >= 0")

    def _update_group(self, group, pairs):
        lr, eps, decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        momentum_decay = float(group["momentum_decay"])
        decoupled, maximize = bool(group["decoupled_weight_decay"]), bool(group["maximize"])
        for p, g, state in pairs:
            xp = backend.xp(p)
            if not state:
                state["step"] = 0
                state["mu_product"] = xp.ones((), dtype=np.float32)
                state["exp_avg"] = xp.zeros_like(p)
                state["exp_avg_sq"] = xp.zeros_like(p)
            state["step"] += 1
            step, mu_product = state["step"], state["mu_product"]
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

            g, owned = adam_decayed(xp, p, g, lr, decay, decoupled, maximize)

            mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
            mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
            xp.multiply(mu_product, mu_product.dtype.type(mu), out=mu_product)  # in float32
            product = float(mu_product)
            product_next = product * mu_next

            tmp = adam_moments_(xp, exp_avg, exp_avg_sq, g, beta1, beta2)
            denom = xp.divide(exp_avg_sq, 1 - beta2**step, out=tmp)
            xp.sqrt(denom, out=denom)
            denom += eps

            # p.addcdiv_(g, denom, value=...) then p.addcdiv_(exp_avg, denom, value=...)
            update = xp.divide(g, denom, out=g if owned else None)
            update *= -lr * (1.0 - mu) / (1.0 - product)
            p += update
            update = xp.divide(exp_avg, denom, out=denom)
            update *= (-lr * mu_next) / (1.0 - product_next)
            p += update
