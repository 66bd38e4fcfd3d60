"""Adam and AdamW (decoupled weight decay), with AMSGrad, as torch.optim.Adam/AdamW."""

from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, adam_decayed, adam_moments_, check_betas, counted_step


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's single-tensor formulation, updating ``p.data`` in place.

    One temporary the size of the parameter per step (two with weight decay or maximize),
    beside the ``exp_avg``/``exp_avg_sq`` (and AMSGrad's ``max_exp_avg_sq``) buffers.

    >>> opt = tape.optim.Adam(model.parameters(), lr=1e-3)
    >>> opt.step(t.gradient(loss, model.parameters()))
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def _check(self, group):
        super()._check(group)
        check_betas(group)

    def _update_group(self, group, pairs):
        lr, eps, decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        amsgrad, maximize = bool(group["amsgrad"]), bool(group["maximize"])
        decoupled = bool(group["decoupled_weight_decay"])
        for p, g, state in pairs:
            xp = backend.xp(p)
            step = counted_step(state, xp, p, "exp_avg", "exp_avg_sq",
                                *(["max_exp_avg_sq"] if amsgrad else []))
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            g, _ = adam_decayed(xp, p, g, lr, decay, decoupled, maximize)

            tmp = adam_moments_(xp, exp_avg, exp_avg_sq, g, beta1, beta2)

            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            step_size = lr / bias_correction1
            second = exp_avg_sq
            if amsgrad:
                second = state.get("max_exp_avg_sq")
                if second is None:  # amsgrad switched on after some steps
                    second = state["max_exp_avg_sq"] = exp_avg_sq.copy()
                xp.maximum(second, exp_avg_sq, out=second)
            denom = xp.sqrt(second, out=tmp)
            denom /= bias_correction2_sqrt
            denom += eps
            # p.addcdiv_(exp_avg, denom, value=-step_size), reusing denom's array
            update = xp.divide(exp_avg, denom, out=denom)
            update *= -step_size
            p += update


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr * weight_decay``.

    >>> opt = tape.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
