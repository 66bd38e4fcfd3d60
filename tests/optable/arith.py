"""The op table's arithmetic, elementwise, comparison and reduction rows."""

import numpy as np
from optable.row import (TOL32, Table, away, distinct, fixed, normal, positive, rounded,
                         shifted, with_zeros)

T = Table()

BINARY_SHAPES = {  # broadcasting, 0-d and size-1 axes
    "same": ((3, 4), (3, 4)),
    "row": ((3, 4), (4,)),
    "col": ((2, 3, 1), (4,)),
    "outer": ((3, 1), (1, 4)),
    "scalar": ((), (2, 3)),
    "0d": ((), ()),
}

# ----- arithmetic -----
for tag, (sa, sb) in BINARY_SHAPES.items():
    T.row(f"add_{tag}", lambda m, a, b: a + b, sa, sb)
    T.row(f"sub_{tag}", lambda m, a, b: a - b, sa, sb)
    T.row(f"mul_{tag}", lambda m, a, b: a * b, sa, sb)
    T.row(f"div_{tag}", lambda m, a, b: a / b, sa, sb, gen=(normal, away(0, eps=0.5)))
    T.row(f"maximum_{tag}", lambda m, a, b: m.maximum(a, b), sa, sb)
    T.row(f"minimum_{tag}", lambda m, a, b: m.minimum(a, b), sa, sb)
    T.row(f"pow_{tag}", lambda m, a, b: a**b, sa, sb, gen=(positive, normal))
T.row("add_python_scalar", lambda m, a: 2.5 + a - 1.0, (3,))
T.row("mul_numpy_const", lambda m, a: a * m.const(np.array([1.0, -2.0, 0.5])), (2, 3))
T.row("rsub_rdiv", lambda m, a: 1.0 - 3.0 / a, (2, 3), gen=away(0, eps=0.5))
T.row("rsub_numpy_const", lambda m, a: m.const(np.array([1.0, 2.0, 3.0]), like=a) - a, (2, 3))
T.row("neg", lambda m, a: -a, (2, 3))
T.row("neg_0d", lambda m, a: -a, ())
T.row("pow_scalar_2", lambda m, a: a**2, (2, 3))
T.row("pow_scalar_3_negative_base", lambda m, a: a**3, (4,))
T.row("pow_scalar_frac", lambda m, a: a**2.5, (2, 3), gen=positive)
T.row("pow_scalar_neg", lambda m, a: a**-1.5, (2, 3), gen=positive)
T.row("pow_scalar_0", lambda m, a: a**0, (3,))
T.row("pow_zero_base", lambda m, a, b: a**b, (4,), (4,),
    gen=(fixed([0.0, 1.5, 0.0, 0.5]), lambda rng, s: rng.uniform(2.0, 3.0, s)),
    skip_second="d2(a**b)/da db = a**(b-1) (1 + b log a) -> 0 at a = 0 (b > 1): "
                "tape gives the limit 0, torch gives nan")
T.row("rpow", lambda m, a: 2.0**a, (2, 3))
T.row("rpow_0d", lambda m, a: 0.5**a, ())
T.row("maximum_tie", lambda m, a, b: m.maximum(a, b), (4,), (4,),
    gen=(fixed([1.0, 2.0, -1.0, 0.5]), fixed([1.0, 1.0, -1.0, 3.0])))
T.row("minimum_tie", lambda m, a, b: m.minimum(a, b), (4,), (4,),
    gen=(fixed([1.0, 2.0, -1.0, 0.5]), fixed([1.0, 1.0, -1.0, 3.0])))
T.row("maximum_python_scalar", lambda m, a: m.maximum(a, 0.25), (3, 4), gen=away(0.25))
T.row("minimum_python_scalar", lambda m, a: m.minimum(a, -0.25), (3, 4), gen=away(-0.25))

# ----- unary elementwise -----
UNARY = {
    "exp": (lambda m, a: m.exp(a), normal),
    "log": (lambda m, a: m.log(a), positive),
    "sqrt": (lambda m, a: m.sqrt(a), positive),
    "abs": (lambda m, a: m.abs(a), away(0)),
    "sin": (lambda m, a: m.sin(a), normal),
    "cos": (lambda m, a: m.cos(a), normal),
    "tanh": (lambda m, a: m.tanh(a), normal),
    "sigmoid": (lambda m, a: m.sigmoid(a), normal),
    "relu": (lambda m, a: m.relu(a), away(0)),
    "leaky_relu": (lambda m, a: m.leaky_relu(a), away(0)),
    "leaky_relu_slope": (lambda m, a: m.leaky_relu(a, negative_slope=0.2), away(0)),
    "gelu": (lambda m, a: m.gelu(a), normal),
    "gelu_tanh": (lambda m, a: m.gelu(a, approximate="tanh"), normal),
    "softplus": (lambda m, a: m.softplus(a), normal),
    "softplus_beta": (lambda m, a: m.softplus(a, beta=2.0, threshold=3.0), away(1.5, scale=3)),
    "clip": (lambda m, a: m.clip(a, -0.5, 0.5), away(-0.5, 0.5)),
    "clip_min": (lambda m, a: m.clip(a, min=-0.3), away(-0.3)),
    "clip_max": (lambda m, a: m.clip(a, max=0.3), away(0.3)),
}
for name, (fn, gen) in UNARY.items():
    T.row(name, fn, (3, 4), gen=gen)
    T.row(f"{name}_0d", fn, (), gen=gen)
KINKS = fixed([-1.0, -0.5, 0.0, 0.3, 0.5, 2.0])  # exactly on the kinks: torch's conventions
T.row("relu_at_kink", lambda m, a: m.relu(a), (6,), gen=KINKS)
T.row("abs_at_kink", lambda m, a: m.abs(a), (6,), gen=KINKS)
T.row("leaky_relu_at_kink", lambda m, a: m.leaky_relu(a, 0.1), (6,), gen=KINKS,
    torch_fn=lambda m, a: m.leaky_relu(a, negative_slope=0.1))
T.row("clip_at_bounds", lambda m, a: m.clip(a, -0.5, 0.5), (6,), gen=KINKS)
T.row("clip_min_at_bound", lambda m, a: m.clip(a, min=0.3), (6,), gen=KINKS)
T.row("softplus_large", lambda m, a: m.softplus(a), (5,), gen=shifted(0, 15))
T.row("sigmoid_large", lambda m, a: m.sigmoid(a), (6,), gen=fixed([-800, -30, -1, 1, 30, 800]))
T.row("abs_method", lambda m, a: a.abs() + abs(a), (4,), gen=away(0))
T.row("methods", lambda m, a: a.exp().sin() + a.cos().tanh() + a.sigmoid() * a.relu(), (2, 3),
    gen=away(0))
T.row("sqrt_log_methods", lambda m, a: a.sqrt().log() + a.clip(0.7, 1.5), (2, 3),
    gen=away(0.7, 1.5, eps=0.05, base=positive))
T.row("clamp_method", lambda m, a: a.clamp(min=-0.5, max=0.5), (5,), gen=away(-0.5, 0.5))
T.row("where", lambda m, a, b: m.where(a > 0, a, b), (3, 4), (3, 4))
T.row("where_broadcast", lambda m, a, b: m.where(a > 0, a * 2, b), (3, 1), (4,))
T.row("where_scalar", lambda m, a: m.where(a < 0, 0.0, a), (2, 3))
T.row("where_const_cond", lambda m, a, b: m.where(m.idx(np.array([True, False, True])), a, b),
    (2, 3), ())

# ----- comparisons: values only -----
BOOLEANS = "comparisons give booleans: no derivative to take (the tape records nothing)"
for op_name, fn in {
    "lt": lambda m, a, b: a < b,
    "le": lambda m, a, b: a <= b,
    "gt": lambda m, a, b: a > b,
    "ge": lambda m, a, b: a >= b,
    "eq": lambda m, a, b: a == b,
    "ne": lambda m, a, b: a != b,
}.items():
    T.row(f"cmp_{op_name}", fn, (3, 4), (4,), gen=rounded, values_only=BOOLEANS)
T.row("cmp_scalar", lambda m, a: (a >= 0.0) & (a < 1.0), (3, 4), gen=rounded,
      values_only=BOOLEANS)
T.row("cmp_reflected", lambda m, a: (0.5 < a) | ~(a != 0.0), (3, 4), gen=rounded,
      values_only=BOOLEANS)

# ----- reductions -----
AXES = {
    "all": {"axis": None},
    "all_keep": {"axis": None, "keepdims": True},
    "ax1": {"axis": 1},
    "neg": {"axis": -1},
    "tuple": {"axis": (0, 2)},
    "tuple_keep": {"axis": (0, -1), "keepdims": True},
    "keep": {"axis": 1, "keepdims": True},
    "dim_alias": {"dim": 1, "keepdim": True},
}
REDUCTIONS = {
    "sum": (lambda m, x, kw: m.sum(x, **kw), normal, TOL32),
    "mean": (lambda m, x, kw: m.mean(x, **kw), normal, TOL32),
    "max": (lambda m, x, kw: m.max(x, **kw), distinct, TOL32),
    "min": (lambda m, x, kw: m.min(x, **kw), distinct, TOL32),
    "prod": (lambda m, x, kw: m.prod(x, **kw), shifted(0, 1.2), (3e-4, 1e-5)),
    "var": (lambda m, x, kw: m.var(x, **kw), normal, (3e-4, 1e-5)),
    "var_ddof1": (lambda m, x, kw: m.var(x, ddof=1, **kw), normal, (3e-4, 1e-5)),
    "std": (lambda m, x, kw: m.std(x, **kw), normal, (3e-4, 1e-5)),
    "std_ddof1": (lambda m, x, kw: m.std(x, ddof=1, **kw), normal, (3e-4, 1e-5)),
    "logsumexp": (lambda m, x, kw: m.logsumexp(x, **kw), normal, TOL32),
}
for rname, (rfn, gen, tol) in REDUCTIONS.items():
    for tag, kw in AXES.items():
        T.row(f"{rname}_{tag}", lambda m, x, rfn=rfn, kw=kw: rfn(m, x, kw), (2, 3, 4), gen=gen,
            tol32=tol)
    T.row(f"{rname}_size1", lambda m, x, rfn=rfn: rfn(m, x, {"axis": (1, 2)}), (3, 1, 2), gen=gen,
        tol32=tol)
    if not rname.endswith("ddof1"):  # ddof=1 over one element is nan, in torch too
        T.row(f"{rname}_0d", lambda m, x, rfn=rfn: rfn(m, x, {}), (), gen=gen, tol32=tol)
T.row("sum_method", lambda m, x: x.sum(1) + x.mean(axis=-1, keepdims=False), (3, 4))
T.row("reduce_methods", lambda m, x: x.var(0) + x.std(0) + x.logsumexp(axis=0), (3, 4),
    torch_fn=lambda m, x: x.var(0, correction=0) + x.std(0, correction=0) + x.logsumexp(0),
    tol32=(3e-4, 1e-5))
T.row("max_tie", lambda m, x: m.max(x, axis=1), (2, 3), gen=fixed([[1, 3, 3], [2, 2, 2]]))
T.row("min_tie_all", lambda m, x: m.min(x), (2, 3), gen=fixed([[1, 3, 1], [2, 5, 4]]))
T.row("prod_one_zero", lambda m, x: m.prod(x, axis=1), (3, 4), gen=with_zeros(1, 4, 7))
T.row("prod_two_zeros", lambda m, x: m.prod(x, axis=1), (3, 4), gen=with_zeros(1, 2, 5))
T.row("prod_three_zeros", lambda m, x: m.prod(x, axis=-1), (2, 4), gen=with_zeros(0, 1, 3))
T.row("prod_zeros_all", lambda m, x: m.prod(x), (2, 3), gen=with_zeros(4))
T.row("logsumexp_neg_inf", lambda m, x: m.logsumexp(x, axis=-1), (2, 3),
    gen=fixed([[-np.inf, 1.0, 2.0], [0.5, -np.inf, -1.0]]))
T.row("std_constant_row", lambda m, x: m.std(x, axis=1), (2, 3),
    gen=fixed([[1.5, 1.5, 1.5], [1.0, 2.0, 4.0]]))
T.row("logsumexp_large", lambda m, x: m.logsumexp(x, axis=-1), (3, 4), gen=shifted(1000, 5))
T.row("var_large_offset", lambda m, x: m.var(x, axis=0), (5, 2), gen=shifted(100, 1),
    tol32=(2e-3, 1e-4))
INDICES = "argmax and argmin give integer indices: no derivative to take"
for tag, kw in [("all", {}), ("ax1", {"axis": 1}), ("neg_keep", {"axis": -1, "keepdims": True}),
                ("dim_alias", {"dim": 0, "keepdim": True})]:
    T.row(f"argmax_{tag}", lambda m, x, kw=kw: m.argmax(x, **kw), (3, 4), gen=distinct,
          values_only=INDICES)
    T.row(f"argmin_{tag}", lambda m, x, kw=kw: m.argmin(x, **kw), (3, 4), gen=distinct,
          values_only=INDICES)
T.row("argmax_method", lambda m, x: x.argmax(), (5,), gen=distinct, values_only=INDICES)

