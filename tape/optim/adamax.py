"""Adamax: Adam with the infinity norm in place of the second moment, as torch.optim.Adamax."""

from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, check_betas, counted_step, lerp_, weight_decayed


class Adamax(Optimizer):
    """Adamax (Kingma & Ba, section 7): ``exp_inf = max(beta2 * exp_inf, |g| + eps)``.

    No square root and no second bias correction, so large rare gradients move a parameter
    no further than the largest seen; ``p -= lr / (1 - beta1**step) * exp_avg / exp_inf``.

    >>> opt = tape.optim.Adamax(model.parameters(), lr=2e-3)
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 maximize=False):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "maximize": maximize}
        super().__init__(params, defaults)

    def _check(self, group):
        super()._check(group)
        check_betas(group)

    def _update_group(self, group, pairs):
        lr, eps, decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        maximize = bool(group["maximize"])
        for p, g, state in pairs:
            xp = backend.xp(p)
            counted_step(state, xp, p, "exp_avg", "exp_inf")
            exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
            g, _ = weight_decayed(xp, p, g, decay, maximize)

            tmp = xp.empty_like(p)
            lerp_(xp, exp_avg, g, 1.0 - beta1, tmp)
            exp_inf *= beta2  # torch.maximum(exp_inf.mul_(beta2), |g| + eps): NaN propagates
            xp.abs(g, out=tmp)
            tmp += eps
            xp.maximum(exp_inf, tmp, out=exp_inf)

            clr = lr / (1 - beta1 ** state["step"])
            update = xp.divide(exp_avg, exp_inf, out=tmp)  # p.addcdiv_(exp_avg, exp_inf, -clr)
            update *= -clr
            p += update
