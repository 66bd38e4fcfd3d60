"""RAdam: Adam with the variance of its adaptive step rectified, as torch.optim.RAdam."""

from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, adam_decayed, adam_moments_, check_betas, counted_step


class RAdam(Optimizer):
    """RAdam (Liu et al.): plain momentum SGD while the second moment's estimate is too young
    (the approximated SMA length ``rho_t <= 5``), then Adam's step times the rectification
    term, so no warmup is needed. ``decoupled_weight_decay=True``: ``p *= 1 - lr * wd``.

    >>> opt = tape.optim.RAdam(model.parameters(), lr=1e-3)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, *, maximize=False):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize}
        super().__init__(params, defaults)

    def _check(self, group):
        super()._check(group)
        check_betas(group)

    def _update_group(self, group, pairs):
        lr, eps, decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        decoupled, maximize = bool(group["decoupled_weight_decay"]), bool(group["maximize"])
        rho_inf = 2 / (1 - beta2) - 1  # the longest the approximated SMA gets
        for p, g, state in pairs:
            xp = backend.xp(p)
            step = counted_step(state, xp, p, "exp_avg", "exp_avg_sq")
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            g, _ = adam_decayed(xp, p, g, lr, decay, decoupled, maximize)

            tmp = adam_moments_(xp, exp_avg, exp_avg_sq, g, beta1, beta2)

            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
            update = xp.divide(exp_avg, bias_correction1, out=tmp)  # the corrected exp_avg
            update *= lr
            if rho_t > 5.0:
                rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                        / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                adaptive = xp.sqrt(exp_avg_sq)
                adaptive += eps
                xp.divide(bias_correction2**0.5, adaptive, out=adaptive)
                update *= adaptive
                update *= rect
            p -= update  # p.add_(update, alpha=-1.0)
