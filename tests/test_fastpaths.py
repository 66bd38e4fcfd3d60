"""The CPU fast paths give exactly what the plain numpy calls they replace give."""

import numpy as np
import pytest

import tape
from tape.ops.elementwise import _where
from tape.ops.indexing import _scatter_add


def _specials(shape, dtype, seed):
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    a.flat[:5] = [np.inf, -np.inf, np.nan, -0.0, 0.0]
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shapes", [((6, 5), (6, 5), (6, 5)), ((6, 1), (6, 5), (5,)), ((5,), (6, 5), ())]
)
def test_where_select_is_bit_exact(dtype, shapes):
    cs, xs, ys = shapes
    cond = np.random.default_rng(0).random(cs) > 0.5
    x = _specials(xs, dtype, 1)
    y = _specials(ys, dtype, 2) if ys else dtype(-0.0)
    for a, b in [(x, y), (x, 0), (0, x), (x, 2.5)]:
        got, want = _where(cond, a, b), np.where(cond, a, b)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got.view(np.uint8), np.ascontiguousarray(want).view(np.uint8))


def test_where_falls_back_for_other_dtypes():
    cond = np.array([True, False])
    assert _where(cond, np.array([1, 2]), 0).tolist() == [1, 0]
    assert _where(cond.astype(np.int8), np.array([1.0, 2.0]), 0.0).tolist() == [1.0, 0.0]


def test_scatter_add_by_rows_matches_add_at():
    rng = np.random.default_rng(0)
    idx = rng.integers(-50, 50, 300)  # negative and repeated
    g = rng.standard_normal((300, 7)).astype(np.float32)
    want = np.zeros((50, 7), np.float32)
    np.add.at(want, (idx,), g)
    got = _scatter_add(g, (idx,), (50, 7))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_python_numbers_beside_tensors_follow_pytorchs_promotion():
    x32 = tape.tensor([1.0, 2.0])
    assert (x32 * 2).dtype == np.float32 and (2.5 * x32).dtype == np.float32
    assert (x32 ** 2).dtype == np.float32
    xi = tape.tensor([1, 2])
    assert (xi * 2).dtype == np.int64 and (xi * 2.5).dtype == np.float32  # default float
    np.testing.assert_array_equal((x32 * 0.1).numpy(), x32.numpy() * 0.1)


@pytest.mark.parametrize("c", [0.5, -0.0, 0.0, float("nan"), float("inf"), 3, -2, 1e300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cached_constants_give_what_numpy_gives(c, dtype):
    """A Python number beside a tensor becomes a cached 0-d array with numpy's value and
    sign (x * -0.0 is not x * 0.0), the first time and every time after."""
    xn = np.array([1.5, -2.0, 0.0, np.inf], dtype)
    x = tape.tensor(xn)
    with np.errstate(over="ignore", invalid="ignore"):
        cn = np.array(c, dtype)  # NEP 50: a Python number takes the array's dtype
        for _ in range(2):
            for got, want in [(x * c, xn * cn), (c - x, cn - xn), (x + c, xn + cn)]:
                assert got.dtype == dtype
                assert np.array_equal(got.numpy().view(np.uint8), want.view(np.uint8))


def test_cached_constants_are_read_only_and_bounded():
    from tape.ops import promotion

    promotion._constants.clear()  # earlier tests may have filled it
    x = tape.tensor([1.0, 2.0])
    with tape.Tape():
        x * 0.25
    cached = promotion._constants[(0.25, np.dtype(np.float32))]
    assert not cached.flags.writeable
    for i in range(3000):  # a learning rate that changes every step must not grow it forever
        x * (1.0 + i / 7)
    assert len(promotion._constants) <= 1024


def test_forwards_calling_array_methods_still_take_numbers_and_lists():
    """The reductions and reshapes call the array's own methods (numpy's module functions
    cost ~1 us more); raw numbers and lists, which ops accept untracked, still work."""
    import tape.functional as F

    assert F.sum(3.0) == 3.0 and F.max([1.0, 5.0]) == 5.0 and F.mean([1.0, 2.0]) == 1.5
    assert F.reshape([1.0, 2.0, 3.0, 4.0], (2, 2)).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    np.testing.assert_allclose(F.softmax([0.0, 0.0]), [0.5, 0.5])


@pytest.mark.parametrize("size", [5, 300_000])  # the generic rule and the one-pass kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_gradient_matches_pytorch_at_nan_zero_and_infinities(size, dtype):
    torch = pytest.importorskip("torch")
    special = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1.0, -1.0], dtype)
    x = np.resize(special, size)
    g = np.random.default_rng(0).standard_normal(size).astype(dtype)
    ours = tape.tensor(x, requires_grad=True)
    with tape.Tape() as t:
        y = tape.relu(ours)
    got = t.gradient(y, ours, output_gradients=tape.tensor(g)).numpy()
    theirs = torch.tensor(x, requires_grad=True)
    torch.relu(theirs).backward(torch.tensor(g))
    np.testing.assert_array_equal(got, theirs.grad.numpy())


@pytest.mark.parametrize("affine", [True, False], ids=["layer_norm_op", "standardize"])
@pytest.mark.parametrize("rows", [3, 300])  # numpy's passes, and the one-pass row kernels
@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_layer_norm_rows_match_pytorch(rows, dtype, tol, affine, monkeypatch):
    """Values and the gradients of input, weight and bias; a row of one repeated value
    (zero variance) and a row holding inf, whose NaNs both libraries give. With a weight
    and a bias, a layer norm is one op; without, the standardize op."""
    torch = pytest.importorskip("torch")
    kernels = _count_calls(monkeypatch, "layer_norm_rows", "layer_norm_rows_grad",
                           "standardize_rows", "standardize_rows_grad")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((rows, 2, 96)) * 3 + 1).astype(dtype)
    x[0, 0] = 2.5
    x[1, 1, 7] = np.inf
    w, b, g = (rng.standard_normal(s).astype(dtype) for s in ((96,), (96,), x.shape))
    arrays = (x, w, b) if affine else (x,)
    ours = [tape.tensor(a, requires_grad=True) for a in arrays]
    with tape.Tape() as t:
        y = tape.functional.layer_norm(*ours[:1], 96, *ours[1:])
    names = {entry[0].name for entry in t._entries}
    assert names == ({"layer_norm"} if affine else {"standardize"})
    grads = t.gradient(y, ours, output_gradients=tape.tensor(g))
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    ty = torch.nn.functional.layer_norm(*theirs[:1], (96,), *theirs[1:])
    ty.backward(torch.tensor(g))
    for a, want in zip([y, *grads], [ty, *(p.grad for p in theirs)]):
        np.testing.assert_allclose(a.numpy(), want.detach().numpy(), rtol=tol, atol=tol)
    prefix = "layer_norm_rows" if affine else "standardize_rows"
    assert kernels == ({prefix: 1, prefix + "_grad": 1} if rows == 300 else {})


def _count_calls(monkeypatch, *names):
    """Count the calls of these kernels/cpu/elementwise.py functions (the fast paths)."""
    from kernels.cpu import elementwise

    counts = {}

    def counting(name, fn):
        def call(*args):
            counts[name] = counts.get(name, 0) + 1
            return fn(*args)
        return call

    for name in names:
        monkeypatch.setattr(elementwise, name, counting(name, getattr(elementwise, name)))
    return counts


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 3), (6, 5), (128, 256), (700, 7)])
def test_linear_bias_rows_are_bit_exact(shape, dtype, monkeypatch):
    """A linear layer's bias added to its rows, and its gradient summed over them, give
    numpy's bits (-0.0, inf and NaN included), and a linear layer uses them."""
    from kernels.cpu import elementwise

    y = _specials(shape, dtype, 0)
    b = _specials(shape[1:], dtype, 1)
    assert elementwise.rows_apply(y, b) and elementwise.rows_apply(y, None)
    got = elementwise.add_to_rows_(y.copy(), b)
    assert np.array_equal(got.view(np.uint8), (y + b).view(np.uint8))
    with np.errstate(invalid="ignore"):  # inf + -inf
        want = y.sum(axis=0)
    assert np.array_equal(elementwise.sum_rows(y).view(np.uint8), want.view(np.uint8))
    assert not elementwise.rows_apply(y[:, ::2], None)  # strided: numpy's
    assert not elementwise.rows_apply(y, b.astype(np.float16))
    kernels = _count_calls(monkeypatch, "add_to_rows_", "sum_rows")
    w = tape.tensor(np.ones((4, shape[1]), dtype), requires_grad=True)
    bias = tape.tensor(np.ones(4, dtype), requires_grad=True)
    with tape.Tape() as t:
        out = tape.functional.linear(tape.tensor(np.ones(shape, dtype)), w, bias)
    t.gradient(out, [w, bias])
    assert kernels == {"add_to_rows_": 1, "sum_rows": 1}


@pytest.mark.parametrize("shape", [(6, 700), (128, 10)])  # numpy's passes; the row loops
@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("ignored", [False, True], ids=["all_counted", "ignore_index"])
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan_inf"])
def test_cross_entropy_rows_match_pytorch(shape, dtype, tol, ignored, special, monkeypatch):
    """The loss and the logits' gradient; ignored targets (their rows count 0); a row
    holding NaN and one holding inf, whose loss and gradient rows both libraries make NaN."""
    torch = pytest.importorskip("torch")
    kernels = _count_calls(monkeypatch, "cross_entropy", "cross_entropy_grad")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    if special:
        x[1, 2], x[3, 0] = np.nan, np.inf
    target = rng.integers(0, shape[1], shape[0])
    target[0] = shape[1] - 1
    if ignored:
        target[2::3] = -100
    ours = tape.tensor(x, requires_grad=True)
    with tape.Tape() as t, np.errstate(invalid="ignore"):
        loss = tape.functional.cross_entropy(ours, tape.tensor(target))
    with np.errstate(invalid="ignore"):  # numpy's passes meet inf - inf
        got = t.gradient(loss, ours).numpy()
    theirs = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.cross_entropy(theirs, torch.tensor(target))
    want.backward()
    assert loss.dtype == dtype and got.dtype == dtype
    assert np.isnan(loss.item()) == special
    np.testing.assert_allclose(loss.item(), want.item(), rtol=tol)
    np.testing.assert_allclose(got, theirs.grad.numpy(), rtol=tol, atol=tol)
    small = shape == (128, 10)
    assert kernels == ({"cross_entropy": 1, "cross_entropy_grad": 1} if small else {})


@pytest.mark.parametrize("rows", [5, 400])  # numpy's bincount, and the one-pass kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_gradient_matches_add_at(rows, dtype, monkeypatch):
    """Rows of the output's gradient added at their (repeated) indices, in order."""
    kernels = _count_calls(monkeypatch, "add_rows")
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 7, (rows, 2))
    g = rng.standard_normal((rows, 2, 48)).astype(dtype)
    w = tape.tensor(rng.standard_normal((7, 48)).astype(dtype), requires_grad=True)
    with tape.Tape() as t:
        y = tape.functional.embedding(tape.tensor(idx), w)
    got = t.gradient(y, w, output_gradients=tape.tensor(g)).numpy()
    want = np.zeros((7, 48), dtype)
    np.add.at(want, idx.reshape(-1), g.reshape(-1, 48))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == np.float64 else 1e-6)
    assert kernels == ({"add_rows": 1} if rows == 400 else {})


@pytest.mark.parametrize("shape, k, stride, pad", [
    ((2, 3, 8, 8), 2, 2, 0),  # disjoint 2x2 blocks: the one-write path
    ((2, 3, 9, 7), 2, 2, 0),  # a row and a column no block covers
    ((2, 3, 8, 8), 3, 2, 1),  # overlapping windows: the scatter
    ((1, 2, 6, 6), 2, 1, 0),
])
def test_max_pool_backward_matches_the_reference(shape, k, stride, pad):
    """The numba scatter against the numpy reference, bit for bit: NaN and inf in the
    output's gradient reach only the argmax positions, every other one gets zero."""
    import kernels

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    _, arg = kernels.max_pool2d_forward(x, k, stride, pad)
    g = rng.standard_normal(arg.shape).astype(np.float32)
    g.flat[:3] = [np.nan, np.inf, -np.inf]
    got = kernels.max_pool2d_backward(g, arg, x.shape)
    with kernels.use("*", "reference"):
        want = kernels.max_pool2d_backward(g, arg, x.shape)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
