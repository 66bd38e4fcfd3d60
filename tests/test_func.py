"""tape.func against torch.func: every row of the op table through vjp, jvp, jacrev and
jacfwd (float64 and float32), then compositions, argnums and has_aux, hessians,
ForwardAccumulator (with forward-over-reverse Hessian-vector products) and the errors.

The rows' functions are written once for both libraries (tests/optable); a row's
non-differentiated inputs (``nograd``) are held fixed. jvp pushes tangents through the
recorded entries (tape/forward.py); jacfwd is the double-VJP construction, which
differentiates the gradient rules, so rows whose second derivatives cannot be taken
(``Row.skip``/``xfail`` of second order) skip it."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
import torch.func as tf
from optable import ROWS
from optable.checks import check_grad, check_values

import tape
from tape import func

DTYPES = ["float64", "float32"]
GRAD_ROWS = [r for r in ROWS if r.grad]
MAX_JACOBIAN = 64  # jacrev/jacfwd rows: inputs and output of at most this many elements


def _rng(row, salt):
    return np.random.default_rng(zlib.crc32(row.name.encode()) + 7919 * salt)


def _tol(row, dtype):
    return row.tol64 if dtype == "float64" else row.tol32


def _functions(row, dtype):
    """``(ours, theirs, tape primals, torch primals)``: the row as a function of its
    differentiated inputs alone, the other inputs fixed."""
    arrays = row.inputs(dtype)
    fixed_t = [tape.tensor(a) for a in arrays]

    def ours(*src):
        args = list(fixed_t)
        for i, s in zip(row.sources, src):
            args[i] = s
        return row.tape(*args)

    def theirs(*src):
        args = [torch.from_numpy(a.copy()) for a in arrays]
        for i, s in zip(row.sources, src):
            args[i] = s
        return row.torch(*args)

    src = [arrays[i] for i in row.sources]
    return ours, theirs, [tape.tensor(a) for a in src], [torch.from_numpy(a.copy()) for a in src]


# Forward mode is built from the gradient rules (double VJP): where a row's gradient is
# on purpose not the derivative's transpose, its forward mode follows the gradient.
NOT_THE_TRANSPOSE = {
    "embedding_padding": "padding_idx zeroes the padding row's gradient (a training rule, "
                         "as torch's backward; torch's forward mode gives the derivative)",
}


NO_FORWARD = {  # rows whose forward mode raises, on purpose
    "function": "a tape.Function's backward works on raw arrays (once differentiable): forward "
                "mode, which transposes it, raises saying so, as torch's Function without a "
                "jvp method does",
}


def _params(check, rows=GRAD_ROWS, forward_mode=False, small=False):
    out = []
    for r in rows:
        spared = {**r.skip, **r.xfail}
        reason = spared.get("gradient") or (forward_mode and (
            NOT_THE_TRANSPOSE.get(r.name) or NO_FORWARD.get(r.name) or (
                forward_mode == "double-vjp" and spared.get("second_order"))))
        if small and (sum(int(np.prod(s)) for s in r.shapes) > MAX_JACOBIAN):
            continue
        marks = (pytest.mark.skip(reason=f"{r.name}: {reason}"),) if reason else ()
        out += [pytest.param(r, d, id=f"{r.name}-{d}", marks=marks) for d in DTYPES]
    return out


def _torch_jvp(theirs, primals, tangents):
    """torch.func.jvp; for an op without a forward-mode formula in torch, the double
    backward of torch.autograd.functional.jvp (the same numbers by another road)."""
    try:
        return tf.jvp(theirs, tuple(primals), tuple(tangents))
    except (RuntimeError, NotImplementedError):
        return torch.autograd.functional.jvp(theirs, tuple(primals), tuple(tangents))


@pytest.mark.parametrize("row, dtype", _params("vjp"))
def test_vjp(row, dtype):
    ours, theirs, xs, txs = _functions(row, dtype)
    out, vjp_fn = func.vjp(ours, *xs)
    tout, tvjp_fn = tf.vjp(theirs, *txs)
    tol = _tol(row, dtype)
    check_values(out, tout, tol, f"{row.name} vjp's output")
    ct = _rng(row, 1).standard_normal(out.shape).astype(dtype)
    grads = vjp_fn(tape.tensor(ct))
    want = tvjp_fn(torch.from_numpy(ct))
    assert isinstance(grads, tuple) and len(grads) == len(xs)
    for i, (g, w, x) in enumerate(zip(grads, want, xs)):
        check_grad(g, w, x, tol, f"{row.name} vjp, input {i}")


@pytest.mark.parametrize("row, dtype", _params("jvp", forward_mode="push"))
def test_jvp(row, dtype):
    ours, theirs, xs, txs = _functions(row, dtype)
    vs = [_rng(row, 2 + i).standard_normal(x.shape).astype(dtype) for i, x in enumerate(xs)]
    out, jv = func.jvp(ours, xs, [tape.tensor(v) for v in vs])
    tout, tjv = _torch_jvp(theirs, txs, [torch.from_numpy(v) for v in vs])
    tol = _tol(row, dtype)
    check_values(out, tout, tol, f"{row.name} jvp's output")
    check_grad(jv, tjv, out, tol, f"{row.name} jvp")


@pytest.mark.parametrize("row, dtype", _params("jacrev", small=True))
def test_jacrev(row, dtype):
    ours, theirs, xs, txs = _functions(row, dtype)
    argnums = tuple(range(len(xs)))
    jacs = func.jacrev(ours, argnums=argnums)(*xs)
    want = torch.autograd.functional.jacobian(theirs, tuple(txs))
    want = want if isinstance(want, tuple) else (want,)
    for i, (j, w, x) in enumerate(zip(jacs, want, xs)):
        check_grad(j, w, x, _tol(row, dtype), f"{row.name} jacrev, input {i}")


@pytest.mark.parametrize("row, dtype", _params("jacfwd", forward_mode="double-vjp", small=True))
def test_jacfwd(row, dtype):
    ours, theirs, xs, txs = _functions(row, dtype)
    argnums = tuple(range(len(xs)))
    jacs = func.jacfwd(ours, argnums=argnums)(*xs)
    want = torch.autograd.functional.jacobian(theirs, tuple(txs))
    want = want if isinstance(want, tuple) else (want,)
    out = ours(*xs)  # forward mode's jacobian has the output's dtype, as torch.func.jacfwd's
    for i, (j, w) in enumerate(zip(jacs, want)):
        check_grad(j, w, out, _tol(row, dtype), f"{row.name} jacfwd, input {i}")


# ----- scalar functions: grad, hessian, compositions -----
def _log_softmax(m):
    return tape.functional.log_softmax if m is tape else torch.nn.functional.log_softmax


SCALARS = {  # name -> (f written for a namespace, shapes)
    "cubic": (lambda m: lambda x: (x * x * x).sum(), [(4,)]),
    "sin_times_x": (lambda m: lambda x: (x.sin() * x).sum(), [(3, 2)]),
    "two_args": (lambda m: lambda a, b: (a.exp() * b).sum() + (a * a).sum(), [(3,), (3,)]),
    "mlp": (lambda m: lambda w1, w2, x: (
        -_log_softmax(m)((x @ w1).tanh() @ w2, -1)).mean(), [(4, 5), (5, 3), (2, 4)]),
}


def _scalar_inputs(name, dtype):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return [rng.standard_normal(s).astype(dtype) for s in SCALARS[name][1]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(SCALARS))
def test_grad_value_and_grad_and_hessian(name, dtype):
    make, _ = SCALARS[name]
    arrays = _scalar_inputs(name, dtype)
    xs, txs = [tape.tensor(a) for a in arrays], [torch.from_numpy(a) for a in arrays]
    argnums = tuple(range(len(xs)))
    tol = (1e-9, 1e-9) if dtype == "float64" else (2e-4, 2e-5)
    value, grads = func.value_and_grad(make(tape), argnums=argnums)(*xs)
    check_values(value, make(torch)(*txs), tol, f"{name} value")
    for g, w, x in zip(grads, tf.grad(make(torch), argnums=argnums)(*txs), xs):
        check_grad(g, w, x, tol, f"{name} grad")
    check_grad(func.grad(make(tape))(*xs), tf.grad(make(torch))(*txs), xs[0], tol,
               f"{name} grad, argnums=0")
    hess = func.hessian(make(tape))(*xs)
    check_grad(hess, tf.hessian(make(torch))(*txs), hess, tol, f"{name} hessian")


@pytest.mark.parametrize("dtype", DTYPES)
def test_compositions(dtype):
    x = np.array([0.3, -1.2, 2.0], dtype)
    xt, tt = tape.tensor(x), torch.from_numpy(x)
    tol = (1e-9, 1e-9) if dtype == "float64" else (2e-4, 2e-5)

    def f(m):
        return lambda y: (y.sin() * y * y).sum()

    def g_of(m, fn):  # a scalar of a gradient: grad(grad) needs one
        return lambda y: (fn(y) * fn(y)).sum()

    gg = func.grad(g_of(tape, func.grad(f(tape))))(xt)
    check_grad(gg, tf.grad(g_of(torch, tf.grad(f(torch))))(tt), xt, tol, "grad(grad)")
    fr = func.jacfwd(func.jacrev(f(tape)))(xt)
    check_grad(fr, tf.jacfwd(tf.jacrev(f(torch)))(tt), fr, tol, "jacfwd(jacrev)")
    rr = func.jacrev(func.jacrev(f(tape)))(xt)
    check_grad(rr, tf.jacrev(tf.jacrev(f(torch)))(tt), rr, tol, "jacrev(jacrev)")
    _, jv = func.jvp(func.grad(f(tape)), (xt,), (tape.ones(3, dtype=dtype),))
    _, tjv = tf.jvp(tf.grad(f(torch)), (tt,), (torch.ones(3, dtype=tt.dtype),))
    check_grad(jv, tjv, xt, tol, "jvp(grad): a Hessian-vector product")
    w = tape.tensor(x, requires_grad=True)  # a transform under the user's own tape
    with tape.Tape() as t:
        inner = func.grad(f(tape))(w)
        total = (inner * inner).sum()
    check_grad(t.gradient(total, w), tf.grad(g_of(torch, tf.grad(f(torch))))(tt), w, tol,
               "a user's tape around func.grad")


def test_argnums_and_has_aux():
    a, b = tape.tensor([1.0, 2.0]), tape.tensor([3.0, -1.0])

    def f(a, b):
        return (a * b).sum(), {"aux": a * 2}

    (ga, gb), aux = func.grad(f, argnums=(0, 1), has_aux=True)(a, b)
    assert ga.tolist() == [3.0, -1.0] and gb.tolist() == [1.0, 2.0]
    assert aux["aux"].tolist() == [2.0, 4.0]
    (value, aux), gb = func.value_and_grad(f, argnums=1, has_aux=True)(a, b)
    assert value.item() == 1.0 and gb.tolist() == [1.0, 2.0]
    assert func.grad(lambda p, q: (p * q).sum(), argnums=(0, 1))(a, a)[0].tolist() == [1.0, 2.0]
    assert func.grad(lambda p, q: p.sum())(a, b).tolist() == [1.0, 1.0]
    assert func.grad(lambda p, q: p.sum(), argnums=1)(a, b).tolist() == [0.0, 0.0]  # unused
    d = func.grad(lambda p: (p["w"] * p["w"]).sum() + p["b"].sum())({"w": a, "b": b})
    assert d["w"].tolist() == [2.0, 4.0] and d["b"].tolist() == [1.0, 1.0]  # containers


def test_vjp_fn_is_reusable_and_jvp_of_several_outputs():
    x = tape.tensor([0.5, -0.25])
    out, vjp_fn = func.vjp(lambda x: (x * 2, x.exp()), x)
    for _ in range(2):
        (g,) = vjp_fn((tape.ones(2), tape.zeros(2)))
        assert g.tolist() == [2.0, 2.0]
    (y1, y2), (t1, t2) = func.jvp(lambda x: (x * 2, x.exp()), (x,), (tape.ones(2),))
    assert t1.tolist() == [2.0, 2.0] and np.allclose(t2.numpy(), np.exp([0.5, -0.25]))


# ----- ForwardAccumulator -----
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_accumulator_and_forward_over_reverse(dtype):
    x = np.array([0.3, -1.2, 2.0], dtype)
    v = np.array([1.0, 0.5, -1.0], dtype)
    xt, vt, tt = tape.tensor(x), tape.tensor(v), torch.from_numpy(x)
    tol = (1e-9, 1e-9) if dtype == "float64" else (2e-4, 2e-5)

    def f(m):
        return lambda y: (y.sin() * y).sum()

    with tape.ForwardAccumulator(xt, vt) as acc:
        y = xt.sin() * xt
        with tape.Tape() as t:
            t.watch(xt)
            s = f(tape)(xt)
        g = t.gradient(s, xt)
    _, want = tf.jvp(lambda y: y.sin() * y, (tt,), (torch.from_numpy(v),))
    check_grad(acc.jvp(y), want, y, tol, "acc.jvp")
    hvp = tf.hessian(f(torch))(tt) @ torch.from_numpy(v)
    check_grad(acc.jvp(g), hvp, xt, tol, "forward-over-reverse Hessian-vector product")
    unrelated = tape.ones(2)
    assert acc.jvp(unrelated) is None
    assert acc.jvp(unrelated, unconnected_gradients="zero").tolist() == [0.0, 0.0]
    with acc:  # jvp inside the block, and the block recording on
        z = xt * 3.0
        assert np.allclose(acc.jvp(z).numpy(), 3 * v)


# ----- errors -----
ERRORS = [
    (lambda: func.grad(lambda x: x * 2)(tape.ones(3)), ValueError, "scalar tensor"),
    (lambda: func.grad(lambda x: x.sum(), argnums=2)(tape.ones(3)), ValueError, "argnums=2"),
    (lambda: func.grad(lambda x: x.sum())(tape.tensor([1, 2])), TypeError, "floating-point"),
    (lambda: func.grad(lambda x: x.sum(), has_aux=True)(tape.ones(3)), TypeError,
     "pair (output, aux)"),
    (lambda: func.jvp(lambda x: x, (tape.ones(3),), (tape.ones(2),)), ValueError,
     "tangent's shapes"),
    (lambda: func.jvp(lambda x: x, (tape.ones(3),), ()), ValueError, "1 primals but 0"),
    (lambda: tape.ForwardAccumulator(tape.ones(3), tape.ones(2)), ValueError, "tangent"),
    (lambda: func.vjp(lambda x: 3.0, tape.ones(3)), TypeError, "tape tensor"),
]


@pytest.mark.parametrize("call, error, text", ERRORS, ids=[e[2] for e in ERRORS])
def test_errors_say_what_to_do(call, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        call()
