"""How an op is defined and recorded: the small machinery every family of ops uses.

An op is a forward on raw arrays plus one vector-Jacobian rule per input, side by
side (``Op("exp", np.exp, lambda g, ans, x: g * ans)``). Every rule has the signature
``rule(g, ans, *inputs, **params)``: ``g`` the incoming gradient (possibly with extra
leading batch axes, for jacobians), ``ans`` the op's output, then the op's inputs.

Calling an op is polymorphic:
- given only raw arrays (or scalars), it returns the raw result and records nothing.
  Gradient rules are written with ops, so first-order replay runs them on raw arrays
  at numpy speed;
- given any Tensor, it returns a Tensor and records one entry on each active tape
  that watches an input. Replay under an outer tape runs the same rules on Tensors,
  so the outer tape records them: higher-order gradients come for free.
"""

from __future__ import annotations

from ..tape import _local, record, user_line
from ..tensor import Tensor, wrap


class Op:
    """A differentiable operation: ``name``, ``forward`` on arrays, and its ``vjp``.

    ``vjp`` is a tuple with one rule per positional input (``None``: not
    differentiable in that input), or a single callable returning a tuple with one
    gradient per input (for ops whose inputs share work, or come in any number).
    ``vjp=None`` marks an op that is never recorded (comparisons, argmax).
    """

    __slots__ = ("name", "forward", "vjp")

    def __init__(self, name, forward, *rules, joint=None, differentiable=True):
        self.name = name
        self.forward = forward
        if not differentiable:
            self.vjp = None
        elif joint is not None:
            self.vjp = joint
        else:
            self.vjp = rules

    def __call__(self, *args, **params):
        arrays = []
        has_tensor = False
        for a in args:
            if isinstance(a, Tensor):
                arrays.append(a.data)
                has_tensor = True
            else:
                arrays.append(a)
        out = self.forward(*arrays, **params)
        if not has_tensor:
            return out
        y = wrap(out)
        if _local.stack and self.vjp is not None:
            record(self, args, arrays, y, params)
        if _local.anomaly:
            _check_forward(self, y)
        return y

    def __repr__(self):
        return f"<op {self.name}>"


def _check_forward(op, y):
    import numpy as np

    data = y.data
    if data.dtype.kind == "f" and not bool(np.isfinite(data).all()):
        bad = "nan" if bool(np.isnan(data).any()) else "inf"
        raise FloatingPointError(
            f"detect_anomaly: the forward of '{op.name}' produced {bad} at {user_line()}"
        )


def is_tensor(x) -> bool:
    return isinstance(x, Tensor)


def lead_ndim(g, ans) -> int:
    """How many extra leading (batch) axes the cotangent ``g`` carries."""
    return g.ndim - ans.ndim
