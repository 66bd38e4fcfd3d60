"""Tape semantics: what gradient() returns and when, checked against known values or torch.

Covers fan-out, long chains, persistence, nesting (higher derivatives), watching,
stop_recording/no_grad, source/target structures, unconnected gradients, threads,
custom gradients, Function, gradcheck, detect_anomaly, dtypes and Tensor basics.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading

import numpy as np
import pytest
import torch

import tape
from tape.node import key_of
from tape.ops.record import INPUTS, OUT

RNG = np.random.default_rng(1234)


def t64(a):
    """A float64 tape tensor that requires gradients."""
    return tape.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def torch64(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def assert_close(got, want, rtol=1e-7, atol=1e-9):
    assert got is not None, "expected a gradient, got None"
    got = got.numpy() if isinstance(got, tape.Tensor) else np.asarray(got)
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _frame_depth():
    depth, f = 0, sys._getframe()
    while f is not None:
        depth, f = depth + 1, f.f_back
    return depth


@contextlib.contextmanager
def shallow_recursion(headroom=150):
    """Lower the recursion limit to a little above the current depth: a replay that
    recursed once per entry would fail loudly instead of passing by luck."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(_frame_depth() + headroom)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


# ----------------------------------------------------------------- fan-out and reuse


def test_fan_out_same_tensor_used_many_times_matches_torch():
    x0 = RNG.standard_normal(5)
    x = t64(x0)
    with tape.Tape() as t:
        y = (x * x + x * 3.0 + x.sin() * x + x / (x * x + 1.0)).sum()
    xt = torch64(x0)
    (xt * xt + xt * 3.0 + xt.sin() * xt + xt / (xt * xt + 1.0)).sum().backward()
    assert_close(t.gradient(y, x), xt.grad)


def test_reused_intermediate_accumulates_matches_torch():
    x0 = RNG.standard_normal((3, 4))
    x = t64(x0)
    with tape.Tape() as t:
        h = x.tanh() * 2.0
        y = (h * h + h + h.exp() - h / 3.0).sum()
    xt = torch64(x0)
    ht = xt.tanh() * 2.0
    (ht * ht + ht + ht.exp() - ht / 3.0).sum().backward()
    assert_close(t.gradient(y, x), xt.grad)


def test_same_tensor_as_both_operands():
    x = t64([1.5, -2.0])
    with tape.Tape(persistent=True) as t:
        mul, add, sub, div = x * x, x + x, x - x, x / x
    assert_close(t.gradient(mul, x), [3.0, -4.0])
    assert_close(t.gradient(add, x), [2.0, 2.0])
    assert_close(t.gradient(sub, x), [0.0, 0.0])
    assert_close(t.gradient(div, x), [0.0, 0.0])


def test_fan_out_to_a_thousand_uses_accumulates_every_path():
    x = t64(2.0)
    with tape.Tape() as t:
        total = x * 0.0
        for k in range(1, 1001):
            total = total + x * float(k)
    assert_close(t.gradient(total, x), 1000 * 1001 / 2)


# ----------------------------------------------------------------- long tapes, no recursion


def test_chain_of_ten_thousand_ops_needs_no_recursion():
    x = t64(1.0)
    with tape.Tape(persistent=True) as t:
        y = x
        for _ in range(10_000):
            y = y * 1.0001
    assert len(t._entries) == 10_000
    with shallow_recursion():
        g = t.gradient(y, x)
    assert_close(g, 1.0001**10_000, rtol=1e-9)


def test_alternating_chain_of_ten_thousand_ops_matches_closed_form():
    # y -> y + 0.001 * sin(y): 5,000 steps, two entries per step plus the sin
    x0 = 0.3
    x = t64(x0)
    with tape.Tape() as t:
        y = x
        for _ in range(5_000):
            y = y + y.sin() * 0.001
    v, d = x0, 1.0
    for _ in range(5_000):
        d *= 1.0 + 0.001 * math.cos(v)
        v = v + 0.001 * math.sin(v)
    with shallow_recursion():
        g = t.gradient(y, x)
    assert_close(y, v, rtol=1e-10)
    assert_close(g, d, rtol=1e-9)


def test_ten_thousand_entry_tape_with_fan_in():
    xs = [t64(float(i)) for i in range(100)]
    with tape.Tape(persistent=True) as t:
        acc = xs[0] * 0.0
        for i in range(5_000):  # one mul and one add each
            acc = acc + xs[i % 100] * (1.0 + (i % 3))
    assert len(t._entries) == 10_001
    with shallow_recursion():
        grads = t.gradient(acc, xs)
    # x_k appears at i = k, k+100, ...: 50 times, with factors 1 + (i % 3)
    for k, g in enumerate(grads):
        assert_close(g, sum(1.0 + (i % 3) for i in range(k, 5_000, 100)))


# ----------------------------------------------------------------- persistent or not


def test_persistent_tape_allows_several_gradients_and_a_jacobian_after():
    x0 = RNG.standard_normal(4)
    x = t64(x0)
    with tape.Tape(persistent=True) as t:
        y = x.sin() * x
        s = y.sum()
        z = (y * y).sum()
    g1 = t.gradient(s, x)
    g2 = t.gradient(s, x)
    gz = t.gradient(z, x)
    jac = t.jacobian(y, x)

    def f(v):
        return v.sin() * v

    xt = torch64(x0)
    want_g = torch.autograd.grad(f(xt).sum(), xt)[0]
    want_gz = torch.autograd.grad((f(xt) ** 2).sum(), xt)[0]
    want_jac = torch.autograd.functional.jacobian(f, torch.tensor(x0))
    assert_close(g1, want_g)
    assert_close(g2, want_g)
    assert_close(gz, want_gz)
    assert_close(jac, want_jac)
    assert jac.shape == (4, 4)


def test_non_persistent_tape_second_gradient_raises_and_releases_entries():
    x = t64([1.0, 2.0])
    with tape.Tape() as t:
        y = (x * x).sum()
    assert len(t._entries) > 0
    assert_close(t.gradient(y, x), [2.0, 4.0])
    assert t._entries == [] or len(t._entries) == 0
    with pytest.raises(RuntimeError, match="persistent"):
        t.gradient(y, x)
    with pytest.raises(RuntimeError, match="persistent"):
        t.jacobian(y, x)


# ----------------------------------------------------------------- higher order


def test_nested_tapes_second_and_third_derivative_of_x4():
    x = t64(1.5)
    with tape.Tape() as t3:
        with tape.Tape() as t2:
            with tape.Tape() as t1:
                y = x**4
            d1 = t1.gradient(y, x)
        d2 = t2.gradient(d1, x)
    d3 = t3.gradient(d2, x)
    assert_close(d1, 4 * 1.5**3)
    assert_close(d2, 12 * 1.5**2)
    assert_close(d3, 24 * 1.5)


def test_nested_tapes_derivatives_of_sin():
    x0 = np.array([-1.0, 0.2, 2.5])
    x = t64(x0)
    with tape.Tape() as t3:
        with tape.Tape() as t2:
            with tape.Tape() as t1:
                y = x.sin()
            d1 = t1.gradient(y, x)
        d2 = t2.gradient(d1, x)
    d3 = t3.gradient(d2, x)
    assert_close(d1, np.cos(x0))
    assert_close(d2, -np.sin(x0))
    assert_close(d3, -np.cos(x0))


def test_hessian_vector_product_matches_torch():
    n = 5
    a0 = RNG.standard_normal((n, n))
    x0 = RNG.standard_normal(n)
    v0 = RNG.standard_normal(n)
    A = tape.tensor(a0)
    x = t64(x0)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            f = ((A @ x).tanh() * x).sum() + (x**3).sum() + (x.exp() * x.sin()).sum()
        g = inner.gradient(f, x)
    hv = outer.gradient(g, x, output_gradients=tape.tensor(v0))

    at = torch.tensor(a0)

    def ft(xt):
        return ((at @ xt).tanh() * xt).sum() + (xt**3).sum() + (xt.exp() * xt.sin()).sum()

    _, want = torch.autograd.functional.hvp(ft, torch.tensor(x0), torch.tensor(v0))
    assert_close(hv, want)


def test_full_hessian_by_jacobian_of_gradient_matches_torch():
    x0 = RNG.standard_normal(3)
    x = t64(x0)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            f = (x.sin() * x * x).sum() + (x[0] * x[1] * x[2])
        g = inner.gradient(f, x)
    hess = outer.jacobian(g, x)

    def ft(xt):
        return (xt.sin() * xt * xt).sum() + xt[0] * xt[1] * xt[2]

    assert_close(hess, torch.autograd.functional.hessian(ft, torch.tensor(x0)))


# ----------------------------------------------------------------- watching


def test_watch_a_plain_tensor():
    x = tape.tensor([1.0, 2.0])  # requires_grad=False
    with tape.Tape() as t:
        t.watch(x)
        y = (x * x * x).sum()
    assert_close(t.gradient(y, x), [3.0, 12.0], rtol=1e-6)


def test_watch_nested_list_and_dict():
    a, b, c, d = (tape.tensor(float(v)) for v in (1.0, 2.0, 3.0, 4.0))
    with tape.Tape() as t:
        t.watch([a, {"b": b, "more": (c, [d])}])
        y = a * b + c * d
    ga, gb, gc, gd = t.gradient(y, [a, b, c, d])
    assert_close(ga, 2.0)
    assert_close(gb, 1.0)
    assert_close(gc, 4.0)
    assert_close(gd, 3.0)


def test_unwatched_plain_tensor_gets_none():
    x = tape.tensor([1.0, 2.0])
    with tape.Tape() as t:
        y = (x * x).sum()
    assert t.gradient(y, x) is None


def test_watch_accessed_variables_false_ignores_requires_grad():
    a = tape.tensor(2.0, requires_grad=True)
    b = tape.tensor(3.0, requires_grad=True)
    with tape.Tape(watch_accessed_variables=False) as t:
        y = a * b
        assert len(t._entries) == 0
        assert t.watched_variables() == ()
    assert t.gradient(y, [a, b]) == [None, None]

    with tape.Tape(watch_accessed_variables=False) as t:
        t.watch(b)
        y = a * b
    ga, gb = t.gradient(y, [a, b])
    assert ga is None
    assert_close(gb, 2.0)
    assert len(t.watched_variables()) == 1 and t.watched_variables()[0] is b


def test_watched_variables_in_order_of_first_watch():
    a = tape.tensor(1.0, requires_grad=True)
    b = tape.tensor(2.0, requires_grad=True)
    c = tape.tensor(3.0)
    d = tape.tensor(4.0, requires_grad=True)
    with tape.Tape() as t:
        t.watch(c)
        y = b * a  # watches b then a
        z = y * b * d  # b again: not repeated
        t.watch(a)  # already watched: no duplicate
    got = t.watched_variables()
    assert [id(v) for v in got] == [id(c), id(b), id(a), id(d)]
    assert isinstance(got, (tuple, list))
    del z


def test_reset_forgets_what_was_recorded():
    x = tape.tensor(2.0, requires_grad=True)
    w = tape.tensor(5.0)
    with tape.Tape() as t:
        t.watch(w)
        y = x * x * w
        t.reset()
        assert len(t._entries) == 0
        assert t.watched_variables() == ()
        x * 3.0  # recorded after the reset: watches x again
    assert t.gradient(y, x) is None  # recorded before the reset: forgotten
    assert [id(v) for v in t.watched_variables()] == [id(x)]


def test_reset_gradient_after_reset():
    x = tape.tensor(2.0, requires_grad=True)
    with tape.Tape() as t:
        _ = x * x
        t.reset()
        z = x * 3.0
    assert_close(t.gradient(z, x), 3.0)


def test_reset_re_arms_a_spent_non_persistent_tape():
    x = tape.tensor(2.0, requires_grad=True)
    t = tape.Tape()
    with t:
        y = x * x
    t.gradient(y, x)
    t.reset()
    with t:
        z = x * 5.0
    assert_close(t.gradient(z, x), 5.0)


# ----------------------------------------------------------------- stop_recording and no_grad


def test_stop_recording_pauses_this_tape_only_inside_the_block():
    x = tape.tensor(2.0, requires_grad=True)
    with tape.Tape(persistent=True) as t:
        a = x * 3.0
        n = len(t._entries)
        with t.stop_recording():
            b = x * 5.0
            c = a * 7.0
        assert len(t._entries) == n
        d = x * 11.0
    assert_close(t.gradient(a, x), 3.0)
    assert t.gradient(b, x) is None
    assert t.gradient(c, x) is None
    assert_close(t.gradient(d, x), 11.0)


def test_stop_recording_leaves_outer_tapes_recording():
    x = tape.tensor(2.0, requires_grad=True)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            with inner.stop_recording():
                y = x * x
    assert inner.gradient(y, x) is None
    assert_close(outer.gradient(y, x), 4.0)


def test_no_grad_context_records_on_no_tape():
    x = tape.tensor(3.0, requires_grad=True)
    with tape.Tape(persistent=True) as outer:
        with tape.Tape(persistent=True) as inner:
            with tape.no_grad():
                y = x * x
            z = y * x  # y is a constant: dz/dx = y
    for t in (outer, inner):
        assert t.gradient(y, x) is None
        assert_close(t.gradient(z, x), 9.0)


def test_no_grad_restores_recording_after_an_exception():
    x = tape.tensor(3.0, requires_grad=True)
    with tape.Tape() as t:
        with pytest.raises(ZeroDivisionError):
            with tape.no_grad():
                raise ZeroDivisionError
        y = x * 2.0
    assert_close(t.gradient(y, x), 2.0)


def test_no_grad_decorator():
    @tape.no_grad()
    def double(v):
        """Doubles."""
        return v * 2.0

    assert double.__name__ == "double" and double.__doc__ == "Doubles."
    x = tape.tensor(3.0, requires_grad=True)
    with tape.Tape() as t:
        y = double(x)
        assert len(t._entries) == 0
        z = y * x
    assert_close(t.gradient(z, x), 6.0)


# ----------------------------------------------------------------- sources and targets


def _same_structure(got, want):
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        for k in want:
            _same_structure(got[k], want[k])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(got, want):
            _same_structure(g, w)
    else:
        assert isinstance(got, tape.Tensor)
        assert_close(got, want)


_A, _B, _C = np.array([1.0, 2.0]), np.array([[3.0]]), np.array(4.0)
# gradients of (a * a).sum() + (b * 3).sum() + c * 4 at those values
_GA, _GB, _GC = 2 * _A, np.full_like(_B, 3.0), np.array(4.0)


@pytest.mark.parametrize(
    "make_sources, expected",
    [
        (lambda a, b, c: a, _GA),
        (lambda a, b, c: [a, b], [_GA, _GB]),
        (lambda a, b, c: (a, c), (_GA, _GC)),
        (lambda a, b, c: {"a": a, "c": c}, {"a": _GA, "c": _GC}),
        (
            lambda a, b, c: {"x": [a, {"y": (b, c)}], "z": c},
            {"x": [_GA, {"y": (_GB, _GC)}], "z": _GC},
        ),
        (lambda a, b, c: [[a], (b,), {"c": [c]}], [[_GA], (_GB,), {"c": [_GC]}]),
    ],
    ids=["tensor", "list", "tuple", "dict", "nested-dict", "nested-list"],
)
def test_sources_structure_is_preserved(make_sources, expected):
    a, b, c = t64(_A), t64(_B), t64(_C)
    with tape.Tape() as t:
        y = (a * a).sum() + (b * 3.0).sum() + c * 4.0
    got = t.gradient(y, make_sources(a, b, c))
    _same_structure(got, expected)


def test_gradient_shape_and_dtype_follow_the_source():
    a = tape.tensor(np.ones((2, 1, 3), np.float32), requires_grad=True)
    b = tape.tensor(np.ones((3,), np.float64), requires_grad=True)
    with tape.Tape() as t:
        y = a * b  # broadcast to (2, 1, 3), float64
    ga, gb = t.gradient(y, [a, b])
    assert ga.shape == (2, 1, 3) and ga.dtype == np.float32
    assert gb.shape == (3,) and gb.dtype == np.float64
    assert_close(gb, [2.0, 2.0, 2.0])


def test_output_gradients_weight_the_target():
    x0 = RNG.standard_normal((2, 3))
    w0 = RNG.standard_normal((2, 3))
    x = t64(x0)
    with tape.Tape() as t:
        y = x * x.exp()
    g = t.gradient(y, x, output_gradients=tape.tensor(w0))
    xt = torch64(x0)
    (xt * xt.exp()).backward(torch.tensor(w0))
    assert_close(g, xt.grad)


def test_output_gradients_as_numpy_array():
    x = t64([1.0, 2.0])
    with tape.Tape() as t:
        y = x * x
    assert_close(t.gradient(y, x, output_gradients=np.array([10.0, -1.0])), [20.0, -4.0])


def test_output_gradients_for_list_targets():
    x = t64([1.0, 2.0])
    with tape.Tape() as t:
        y1 = x * x
        y2 = (x * 3.0).sum()
    g = t.gradient([y1, y2], x, output_gradients=[tape.tensor([1.0, 0.5]), tape.tensor(2.0)])
    assert_close(g, [2.0 * 1.0 + 6.0, 4.0 * 0.5 + 6.0])


def test_non_scalar_target_is_differentiated_as_its_sum():
    x0 = RNG.standard_normal((3, 2))
    x = t64(x0)
    with tape.Tape(persistent=True) as t:
        y = x.sin() * x
        s = y.sum()
    xt = torch64(x0)
    (xt.sin() * xt).sum().backward()
    assert_close(t.gradient(y, x), xt.grad)
    assert_close(t.gradient(y, x), t.gradient(s, x).numpy())


def test_list_of_targets_sums_their_gradients():
    x = t64([1.0, -2.0])
    with tape.Tape() as t:
        y1 = x * x
        y2 = (x * 5.0).sum()
        y3 = x.exp()
    g = t.gradient([y1, y2, y3], x)
    assert_close(g, 2 * np.array([1.0, -2.0]) + 5.0 + np.exp([1.0, -2.0]))


def test_same_target_listed_twice_counts_twice():
    x = t64(3.0)
    with tape.Tape() as t:
        y = x * x
    assert_close(t.gradient([y, y], x), 12.0)


def test_source_that_is_an_intermediate_tensor():
    x = t64(2.0)
    with tape.Tape(persistent=True) as t:
        y = x * 3.0
        z = y * y + y * x  # dz/dy with y held independent: 2y + x
    assert_close(t.gradient(z, y), 2 * 6.0 + 2.0)
    # through y (3 * dz/dy) and directly (the y in y * x)
    assert_close(t.gradient(z, x), 3 * 14.0 + 6.0)
    gy, gx = t.gradient(z, [y, x])
    assert_close(gy, 14.0)
    assert_close(gx, 48.0)


def test_target_that_is_itself_a_source():
    x = t64([1.0, 2.0, 3.0])
    with tape.Tape(persistent=True) as t:
        y = x * 2.0
    assert_close(t.gradient(x, x), np.ones(3))
    assert_close(t.gradient(y, y), np.ones(3))
    assert_close(t.gradient([x, y], x), np.full(3, 3.0))


def test_unconnected_gradients_none_zero_raise():
    x = t64([1.0, 2.0])
    watched = tape.tensor(np.zeros((2, 2)), requires_grad=True)
    never = tape.tensor(np.zeros(3, np.float32))
    with tape.Tape(persistent=True) as t:
        _ = watched * 2.0  # watched, but not on the path to y
        y = (x * x).sum()
    assert t.gradient(y, [watched, never]) == [None, None]

    zw, zn = t.gradient(y, [watched, never], unconnected_gradients="zero")
    assert zw.shape == (2, 2) and zw.dtype == np.float64 and not zw.numpy().any()
    assert zn.shape == (3,) and zn.dtype == np.float32 and not zn.numpy().any()
    assert_close(t.gradient(y, x, unconnected_gradients="raise"), [2.0, 4.0])

    with pytest.raises(ValueError, match="never watched"):
        t.gradient(y, never, unconnected_gradients="raise")
    with pytest.raises(ValueError, match="not connected"):
        t.gradient(y, watched, unconnected_gradients="raise")


def test_unconnected_through_a_comparison_is_none():
    x = t64([1.0, -2.0])
    with tape.Tape() as t:
        mask = x > 0
        y = mask * 3.0
    assert t.gradient(y, x) is None


# ----------------------------------------------------------------- gradient inside the with


def test_gradient_inside_with_on_non_persistent_tape():
    x = t64(3.0)
    with tape.Tape() as t:
        y = x * x
        g = t.gradient(y, x)  # allowed once; the tape stops recording itself
        z = x * 5.0
        assert len(t._entries) == 0
        with pytest.raises(RuntimeError, match="persistent"):
            t.gradient(y, x)
    assert_close(g, 6.0)
    del z


def test_gradient_inside_with_on_persistent_tape_gives_second_derivative():
    x = t64(3.0)
    with tape.Tape(persistent=True) as t:
        y = x**3
        g = t.gradient(y, x)  # recorded on t itself
    assert_close(g, 27.0)
    assert_close(t.gradient(g, x), 18.0)
    assert_close(t.gradient(y, x), 27.0)


# ----------------------------------------------------------------- threads


def _thread_work(x):
    with tape.Tape(persistent=True) as t:
        y = x
        for i in range(200):
            y = y * 0.999 + (x * float(i % 7)).sin() * 0.01
    return t, y, t.gradient(y, x)


def test_threads_record_concurrently_on_their_own_tapes():
    starts = [0.1, 0.7, -1.3, 2.2]
    reference = []
    for s in starts:
        t, y, g = _thread_work(tape.tensor(s, requires_grad=True))
        reference.append((y.numpy().copy(), g.numpy().copy(), len(t._entries)))
    n_entries = reference[0][2]
    assert all(r[2] == n_entries for r in reference)

    barrier = threading.Barrier(len(starts))
    results, errors = {}, []

    def work(k):
        try:
            x = tape.tensor(starts[k], requires_grad=True)
            barrier.wait()
            for _ in range(5):
                t, y, g = _thread_work(x)
                own = {x._node}
                for entry in t._entries:  # every entry belongs to this thread's graph
                    ins = [key_of(a) for a in entry[INPUTS]]
                    assert any(n in own for n in ins), "foreign entry on a thread's tape"
                    own.add(entry[OUT])
                results.setdefault(k, []).append((y.numpy(), g.numpy(), len(t._entries)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with tape.Tape() as main_tape:  # recording in the main thread meanwhile
        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(starts))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors, errors
    assert len(main_tape._entries) == 0  # nothing leaked into another thread's tape
    for k, (y_ref, g_ref, _) in enumerate(reference):
        assert len(results[k]) == 5
        for y, g, n in results[k]:
            assert n == n_entries
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_array_equal(g, g_ref)


def test_a_tape_opened_in_one_thread_does_not_record_another_threads_ops():
    x = tape.tensor(1.0, requires_grad=True)
    with tape.Tape() as t:
        th = threading.Thread(target=lambda: x * 2.0)
        th.start()
        th.join()
        assert len(t._entries) == 0
        y = x * 3.0
    assert_close(t.gradient(y, x), 3.0)


# ----------------------------------------------------------------- stop_gradient / detach


def test_stop_gradient_and_detach_block_the_path():
    x = t64([2.0, -1.0])
    with tape.Tape(persistent=True) as t:
        a = x * tape.stop_gradient(x)
        b = x * x.detach()
        c = x * tape.detach(x * x)
    assert_close(t.gradient(a, x), [2.0, -1.0])
    assert_close(t.gradient(b, x), [2.0, -1.0])
    assert_close(t.gradient(c, x), [4.0, 1.0])


def test_detach_keeps_values_and_drops_requires_grad():
    x = tape.tensor([1.0, 2.0], requires_grad=True)
    d = x.detach()
    assert isinstance(d, tape.Tensor) and not d.requires_grad
    np.testing.assert_array_equal(d.numpy(), x.numpy())
    with tape.Tape() as t:
        y = d * 2.0
        assert len(t._entries) == 0
    assert t.gradient(y, x) is None


# ----------------------------------------------------------------- custom_gradient


@tape.custom_gradient
def clip_gradient(x):
    def grad_fn(dy):
        return tape.clip(dy, -1.0, 1.0)

    return x * 1.0, grad_fn


def test_custom_gradient_clips_the_gradient():
    x = t64([1.0, 2.0, 3.0])
    with tape.Tape(persistent=True) as t:
        y = clip_gradient(x)
        big = (y * 5.0).sum()
        small = (y * 0.25).sum()
        mixed = (y * tape.tensor([-4.0, 0.5, 9.0])).sum()
    assert_close(y, [1.0, 2.0, 3.0])
    assert_close(t.gradient(big, x), [1.0, 1.0, 1.0])
    assert_close(t.gradient(small, x), [0.25, 0.25, 0.25])
    assert_close(t.gradient(mixed, x), [-1.0, 0.5, 1.0])


def test_custom_gradient_forward_is_one_entry():
    @tape.custom_gradient
    def f(x):
        y = x.exp().sin().tanh()
        return y, lambda dy: dy * 0.0

    x = t64([0.1, 0.2])
    with tape.Tape() as t:
        y = f(x)
        assert len(t._entries) == 1
    assert_close(t.gradient(y, x), [0.0, 0.0])


def test_custom_gradient_several_inputs():
    @tape.custom_gradient
    def weird_mul(a, b):
        def grad_fn(dy):
            return dy * b * 10.0, dy * a * 100.0  # deliberately not the true gradient

        return a * b, grad_fn

    a, b = t64(2.0), t64(3.0)
    with tape.Tape() as t:
        y = weird_mul(a, b)
    ga, gb = t.gradient(y, [a, b])
    assert_close(y, 6.0)
    assert_close(ga, 30.0)
    assert_close(gb, 200.0)


@tape.custom_gradient
def softplus_custom(x):
    def grad_fn(dy):
        return dy * tape.sigmoid(x)  # written with ops on x: differentiable again

    return (x.exp() + 1.0).log(), grad_fn


def test_custom_gradient_composes_with_nested_tapes():
    x0 = np.array([-1.0, 0.5, 2.0])
    x = t64(x0)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = softplus_custom(x)
        g = inner.gradient(y, x)
    h = outer.gradient(g, x)
    s = 1 / (1 + np.exp(-x0))
    assert_close(y, np.log1p(np.exp(x0)))
    assert_close(g, s)
    assert_close(h, s * (1 - s))


def test_custom_gradient_jacobian():
    x0 = np.array([-1.0, 0.5, 2.0])
    x = t64(x0)
    with tape.Tape() as t:
        y = softplus_custom(x) * tape.tensor([1.0, 2.0, 3.0])
    jac = t.jacobian(y, x)
    s = 1 / (1 + np.exp(-x0))
    assert_close(jac, np.diag(s * [1.0, 2.0, 3.0]))


# ----------------------------------------------------------------- Function


class Cube(tape.Function):
    seen_types = []

    @staticmethod
    def forward(ctx, x):
        Cube.seen_types.append(type(x))
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        Cube.seen_types.append(type(grad))
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


def test_function_forward_and_backward_run_on_raw_arrays():
    Cube.seen_types.clear()
    x = t64([1.0, -2.0, 0.5])
    with tape.Tape() as t:
        y = Cube.apply(x)
    assert isinstance(y, tape.Tensor)
    assert_close(y, [1.0, -8.0, 0.125])
    assert_close(t.gradient(y, x), [3.0, 12.0, 0.75])
    assert Cube.seen_types == [np.ndarray, np.ndarray]


class MulAdd(tape.Function):
    """a * b + c, with no gradient for c."""

    @staticmethod
    def forward(ctx, a, b, c):
        ctx.save_for_backward(a, b)
        ctx.scale = 1.0
        return a * b + c

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad * b * ctx.scale, grad * a * ctx.scale, None


def test_function_with_several_inputs_and_a_none_gradient():
    a0, b0 = RNG.standard_normal(3), RNG.standard_normal(3)
    a, b, c = t64(a0), t64(b0), t64(np.ones(3))
    with tape.Tape() as t:
        y = (MulAdd.apply(a, b, c) * 2.0).sum()
    ga, gb, gc = t.gradient(y, [a, b, c])
    assert_close(ga, 2 * b0)
    assert_close(gb, 2 * a0)
    assert gc is None


def test_function_in_a_larger_graph_matches_torch():
    x0 = RNG.standard_normal(4)
    x = t64(x0)
    with tape.Tape() as t:
        y = (Cube.apply(x.sin()) * x).sum()
    xt = torch64(x0)
    (xt.sin() ** 3 * xt).sum().backward()
    assert_close(t.gradient(y, x), xt.grad)


# ----------------------------------------------------------------- gradcheck


@pytest.mark.parametrize(
    "fn, shapes",
    [
        (lambda a: (a.sin() * a).sum(), [(3,)]),
        (lambda a, b: a @ b, [(2, 3), (3, 4)]),
        (lambda a: (a * a + 1.0).sqrt().log(), [(2, 2)]),
        (lambda a, b: (a / (b * b + 1.0)).tanh(), [(3,), (1,)]),
        (lambda a: Cube.apply(a), [(4,)]),
    ],
    ids=["sin-mul", "matmul", "sqrt-log", "div-broadcast", "Function"],
)
def test_gradcheck_passes_on_correct_ops(fn, shapes):
    inputs = [tape.tensor(RNG.standard_normal(s)) for s in shapes]
    assert tape.gradcheck(fn, inputs) is True


def test_gradcheck_catches_a_wrong_custom_gradient():
    @tape.custom_gradient
    def wrong_square(x):
        return x * x, lambda dy: dy * x * 3.0  # should be 2x

    with pytest.raises(tape.GradcheckError, match="finite differences"):
        tape.gradcheck(wrong_square, [tape.tensor(RNG.standard_normal(3))])


def test_gradcheck_catches_a_wrong_function_backward():
    class WrongCube(Cube):
        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 2 * x**2 * grad

    with pytest.raises(tape.GradcheckError):
        tape.gradcheck(lambda a: WrongCube.apply(a), [tape.tensor(RNG.standard_normal(3) + 2.0)])


def test_gradcheck_error_is_an_assertion_error():
    assert issubclass(tape.GradcheckError, AssertionError)


# ----------------------------------------------------------------- detect_anomaly


def test_detect_anomaly_nan_forward_names_op_and_line():
    x = tape.tensor([1.0, -1.0], requires_grad=True)
    with tape.detect_anomaly():
        with tape.Tape():
            line = sys._getframe().f_lineno + 2
            with pytest.raises(FloatingPointError) as info, np.errstate(invalid="ignore"):
                x.log()
    msg = str(info.value)
    assert "log" in msg
    assert f"test_tape.py:{line}" in msg


def test_detect_anomaly_inf_gradient_names_op_and_line():
    x = tape.tensor([0.0, 4.0], requires_grad=True)
    with tape.detect_anomaly():
        with tape.Tape() as t:
            line = sys._getframe().f_lineno + 1
            y = x.sqrt()
            z = (y * 2.0).sum()
        with pytest.raises(FloatingPointError) as info, np.errstate(divide="ignore"):
            t.gradient(z, x)
    msg = str(info.value)
    assert "sqrt" in msg
    assert f"test_tape.py:{line}" in msg


def test_detect_anomaly_as_decorator():
    @tape.detect_anomaly()
    def f(v):
        return v.log()

    with pytest.raises(FloatingPointError, match="log"), np.errstate(invalid="ignore"):
        with tape.Tape():
            f(tape.tensor([-1.0], requires_grad=True))


def test_no_anomaly_checks_outside_detect_anomaly(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("anomaly machinery ran outside detect_anomaly()")

    import tape.ops.core as core
    import tape.replay as replay
    import tape.tape as tape_module

    for module in (core, replay, tape_module):
        for name in ("user_line", "_check_forward", "_check_finite"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, boom)
    x = tape.tensor([-1.0, 0.0, 4.0], requires_grad=True)
    with tape.Tape() as t, np.errstate(all="ignore"):
        a = x.log()  # nan, no error
        b = x.sqrt()  # gradient inf at 0, no error
        y = b.sum()
    assert np.isnan(a.numpy()[0])
    with np.errstate(all="ignore"):
        g = t.gradient(y, x)
    assert np.isinf(g.numpy()[1]) and g.numpy()[2] == pytest.approx(0.25)


def test_detect_anomaly_is_off_again_after_an_error():
    x = tape.tensor([-1.0], requires_grad=True)
    with pytest.raises(FloatingPointError), np.errstate(invalid="ignore"):
        with tape.detect_anomaly():
            with tape.Tape():
                x.log()
    with tape.Tape() as t, np.errstate(invalid="ignore"):
        y = x.log()  # no longer checked
    assert np.isnan(y.numpy()[0])
    assert_close(t.gradient(y, x), [-1.0])  # d log(x) / dx = 1 / x


def test_detect_anomaly_lets_finite_computations_through():
    x = t64([1.0, 2.0])
    with tape.detect_anomaly():
        with tape.Tape() as t:
            y = (x.log() * x.sqrt()).sum()
        g = t.gradient(y, x)
    assert_close(g, 1 / np.sqrt([1.0, 2.0]) + np.log([1.0, 2.0]) / (2 * np.sqrt([1.0, 2.0])))


# ----------------------------------------------------------------- what gets recorded


def test_ops_on_tensors_no_tape_watches_record_nothing():
    a = tape.tensor([1.0, 2.0])
    b = tape.tensor([[3.0, 4.0]])
    with tape.Tape() as t:
        y = (a * b + a.sin()).exp() @ tape.tensor([1.0, 1.0])
        z = (y.reshape(1, 1) - 1.0).tanh()[0]
        w = tape.tensor(5.0, requires_grad=False) * z
        assert len(t._entries) == 0
    assert t.gradient(w, a) is None


def test_only_ops_touching_watched_tensors_are_recorded():
    x = tape.tensor(1.0, requires_grad=True)
    c = tape.tensor(2.0)
    with tape.Tape() as t:
        k = c * c  # not recorded
        y = x * k  # recorded
        z = y + 1.0  # recorded (y is watched: an output of a recorded op)
        assert len(t._entries) == 2
    assert_close(t.gradient(z, x), 4.0)


def test_comparisons_are_not_recorded():
    x = tape.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with tape.Tape() as t:
        results = [x < 2.0, x <= 2.0, x > 2.0, x >= 2.0, x == 2.0, x != 2.0]
        assert len(t._entries) == 0
    want = [[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 0, 1]]
    for r, w in zip(results, want):
        assert isinstance(r, tape.Tensor) and r.dtype == np.bool_ and not r.requires_grad
        np.testing.assert_array_equal(r.numpy(), np.array(w, bool))


# ----------------------------------------------------------------- dtypes


def test_python_floats_become_float32():
    assert tape.tensor(1.5).dtype == np.float32
    assert tape.tensor([1.5, 2.0]).dtype == np.float32
    assert tape.tensor([[1, 2.5]]).dtype == np.float32


def test_integer_and_boolean_data_stay_so():
    assert tape.tensor(3).dtype.kind == "i"
    assert tape.tensor([1, 2, 3]).dtype.kind == "i"
    assert tape.tensor([True, False]).dtype == np.bool_


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.int32, np.uint8])
def test_numpy_arrays_keep_their_dtype(dtype):
    x = tape.tensor(np.arange(4).astype(dtype))
    assert x.dtype == dtype
    np.testing.assert_array_equal(x.numpy(), np.arange(4).astype(dtype))


def test_explicit_dtype_overrides():
    assert tape.tensor([1, 2], dtype=tape.float64).dtype == np.float64
    assert tape.tensor(np.ones(2), dtype=tape.float32).dtype == np.float32


def test_float32_stays_float32_with_python_scalars():
    x = tape.tensor([1.0, 2.0], requires_grad=True)
    with tape.Tape() as t:
        y = ((x * 2.5 + 1.0) / 3.0 - 0.5) ** 2
    assert y.dtype == np.float32
    g = t.gradient(y, x)
    assert g.dtype == np.float32


def test_float32_gradients_with_float64_numpy_constants_mixed_in():
    x = tape.tensor([1.0, 2.0], requires_grad=True)
    c64 = np.array([0.5, 3.0], dtype=np.float64)
    with tape.Tape() as t:
        y = (x * c64 + np.float64(2.0) * x + c64 / (x + np.float64(1.0))).sum()
    g = t.gradient(y, x)
    assert g.dtype == np.float32 and g.shape == (2,)
    want = c64 + 2.0 - c64 / (np.array([1.0, 2.0]) + 1.0) ** 2
    assert_close(g, want, rtol=1e-6)


def test_each_source_gets_its_own_dtype():
    a = tape.tensor([1.0, 2.0], dtype=tape.float32, requires_grad=True)
    b = tape.tensor([3.0, 4.0], dtype=tape.float64, requires_grad=True)
    with tape.Tape() as t:
        y = (a * b).sum()
    ga, gb = t.gradient(y, [a, b])
    assert ga.dtype == np.float32 and gb.dtype == np.float64
    assert_close(ga, [3.0, 4.0])
    assert_close(gb, [1.0, 2.0])


# ----------------------------------------------------------------- Tensor basics


def test_tensor_attributes():
    x = tape.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert x.shape == (2, 3)
    assert x.dtype == np.float32
    assert x.ndim == 2
    assert x.size == 6
    assert x.device == "cpu"
    assert isinstance(x.data, np.ndarray)
    assert not x.requires_grad
    assert tape.tensor(1.0, requires_grad=True).requires_grad


def test_tensor_numpy_item_and_to():
    x = tape.tensor([[1.0, 2.0]])
    a = x.numpy()
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    np.testing.assert_array_equal(a, [[1.0, 2.0]])
    v = tape.tensor([7.5]).item()
    assert v == 7.5 and isinstance(v, float)
    n = tape.tensor(3).item()
    assert n == 3 and isinstance(n, int)
    c = x.to("cpu")
    assert isinstance(c, tape.Tensor) and c.device == "cpu"
    np.testing.assert_array_equal(c.numpy(), a)


def test_tensor_copies_its_input():
    a = np.array([1.0, 2.0])
    x = tape.tensor(a)
    a[0] = 100.0
    assert x.numpy()[0] == 1.0


def test_tensor_repr():
    r = repr(tape.tensor([[1.0, 2.0]]))
    assert r.startswith("tensor(") and "1." in r and "2." in r and "float32" in r
    assert "requires_grad=True" in repr(tape.tensor([1.0], requires_grad=True))
    assert "requires_grad" not in r


def test_numpy_array_with_tensor_returns_a_tensor_and_is_recorded():
    x = tape.tensor([1.0, 2.0], requires_grad=True)
    c = np.array([3.0, 4.0], dtype=np.float32)
    with tape.Tape() as t:
        outs = [c + x, c - x, c * x, c / x, c**x]
        assert len(t._entries) == 5
        y = outs[1] + outs[2]
    for o in outs:
        assert isinstance(o, tape.Tensor)
    np.testing.assert_allclose(outs[1].numpy(), [2.0, 2.0])
    np.testing.assert_allclose(outs[3].numpy(), [3.0, 2.0])
    g = t.gradient(y, x)
    assert_close(g, [-1.0 + 3.0, -1.0 + 4.0])


def test_numpy_matrix_matmul_tensor():
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    x = t64([1.0, 1.0])
    with tape.Tape() as t:
        y = m @ x
    assert isinstance(y, tape.Tensor)
    assert_close(y, [3.0, 7.0])
    assert_close(t.gradient(y, x), [4.0, 6.0])


def test_function_backward_refuses_to_be_differentiated_again():
    """A Function's backward runs on raw arrays: a gradient of a gradient through it must
    raise, not silently treat the first gradient as a constant."""

    class Cube(tape.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 3 * x ** 2 * grad

    x = tape.tensor([1.0, 2.0], requires_grad=True)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = Cube.apply(x).sum()
        g = inner.gradient(y, x)
        penalty = (g * g).sum()
    np.testing.assert_allclose(g.numpy(), [3.0, 12.0])  # first order still works
    with pytest.raises(RuntimeError, match="Cube.backward works on raw arrays"):
        outer.gradient(penalty, x)


def test_an_unwatched_source_gets_none_even_beside_a_watched_one():
    x = tape.tensor([1.0, 2.0])  # not watched
    v = tape.tensor([3.0, 4.0], requires_grad=True)
    with tape.Tape() as t:
        y = (v * x).sum()
    assert t.gradient(y, [x]) == [None]


def test_item_assignment_explains_the_alternatives():
    x = tape.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match=r"cannot be changed in place.*x\.data\[index\]"):
        x[0] = 5.0
    x.data[0] = 5.0  # the documented escape hatch, outside any tape
    assert x.numpy()[0] == 5.0
