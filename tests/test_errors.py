"""Bad inputs: one table, each row the exception type and a fragment of its message.

Messages should speak the user's language: the op, the shapes, what to do next.
A raw numpy error without the op's name is a failure here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import tape
from tape import backend


def t23():
    return tape.tensor(np.ones((2, 3), np.float32), requires_grad=True)


def t4():
    return tape.tensor(np.ones(4, np.float32), requires_grad=True)


def ones(*shape):
    return tape.tensor(np.ones(shape, np.float32))


# ----- helpers for the cases that need a tape -----


def _grad(target_fn, sources_fn=None, **kwargs):
    """Record target_fn(x) for x = t23() and ask for its gradient."""

    def run():
        x = t23()
        with tape.Tape() as t:
            y = target_fn(x)
        return t.gradient(y, x if sources_fn is None else sources_fn(x, y), **kwargs)

    return run


def _gradient_wrt_integer():
    i = tape.tensor([1, 2, 3])
    with tape.Tape() as t:
        t.watch(i)
        y = (i * 2).sum()
    return t.gradient(y, i)


def _gradient_wrt_bool():
    b = tape.tensor([True, False])
    with tape.Tape() as t:
        t.watch(b)
        y = b * 1.0
    return t.gradient(y, b)


def _spent_tape():
    x = t23()
    with tape.Tape() as t:
        y = (x * x).sum()
    t.gradient(y, x)
    return t.gradient(y, x)


def _reenter_spent_tape():
    x = t23()
    t = tape.Tape()
    with t:
        y = (x * x).sum()
    t.gradient(y, x)
    with t:
        pass


def _list_targets_wrong_count():
    x = t23()
    with tape.Tape() as t:
        y = x * 2.0
        z = x * 3.0
    return t.gradient([y, z], x, output_gradients=[np.ones((2, 3))])


def _list_targets_single_array():
    x = t23()
    with tape.Tape() as t:
        y = x * 2.0
        z = x * 3.0
    return t.gradient([y, z], x, output_gradients=np.ones((2, 3)))


def _jacobian_of_a_list():
    x = t23()
    with tape.Tape() as t:
        y = x * 2.0
    return t.jacobian([y, y], x)


def _batch_jacobian_mismatch():
    x = tape.tensor(np.ones((4, 3)), requires_grad=True)
    s = tape.tensor(np.ones((5, 3)), requires_grad=True)
    with tape.Tape() as t:
        y = x * s.sum()
    return t.batch_jacobian(y, s)


def _batch_jacobian_scalar_target():
    x = tape.tensor(np.ones((4, 3)), requires_grad=True)
    with tape.Tape() as t:
        y = (x * x).sum()
    return t.batch_jacobian(y, x)


def _jacobian_wrt_array():
    x = t23()
    with tape.Tape() as t:
        y = x * 2.0
    return t.jacobian(y, x.numpy())


def _watch_array():
    with tape.Tape() as t:
        t.watch(np.ones(3))


def _watch_list_with_a_float():
    with tape.Tape() as t:
        t.watch([t23(), 3.0])


def _stop_recording_outside_with():
    t = tape.Tape()
    with t.stop_recording():
        pass


def _stop_recording_after_with():
    with tape.Tape() as t:
        pass
    with t.stop_recording():
        pass


def _custom_gradient_wrong_count():
    @tape.custom_gradient
    def f(a, b):
        return a * b, lambda dy: dy * b  # one gradient for two inputs

    a, b = t23(), t23()
    with tape.Tape() as t:
        y = f(a, b).sum()
    return t.gradient(y, [a, b])


def _custom_gradient_not_a_pair():
    @tape.custom_gradient
    def f(a):
        return a * 2.0  # forgot the grad_fn

    with tape.Tape():
        return f(t23())


class _OneGradForTwo(tape.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad * b  # one gradient for two inputs


def _function_wrong_count():
    a, b = t23(), t23()
    with tape.Tape() as t:
        y = _OneGradForTwo.apply(a, b).sum()
    return t.gradient(y, [a, b])


class _WrongShapeGrad(tape.Function):
    @staticmethod
    def forward(ctx, a):
        return a * 2.0

    @staticmethod
    def backward(ctx, grad):
        return np.ones(4, grad.dtype)  # the input has shape (2, 3)


def _function_wrong_shape():
    a = t23()
    with tape.Tape() as t:
        y = _WrongShapeGrad.apply(a)
    return t.gradient(y, a)


def _reenter_recording_tape():
    with tape.Tape() as t:
        with t:
            pass


def _batch_jacobian_0d_source():
    x = tape.tensor(np.ones((4, 3)), requires_grad=True)
    s = tape.tensor(2.0, requires_grad=True)
    with tape.Tape() as t:
        y = x * s
    return t.batch_jacobian(y, s)


def _custom_gradient_broadcast_up():
    @tape.custom_gradient
    def f(x):
        return x * 2.0, lambda dy: dy.sum(keepdims=True)  # (1,) for a (4,) input

    x = t4()
    with tape.Tape() as t:
        y = f(x).sum()
    return t.gradient(y, x)


def _optimizer(grads):
    opt = tape.optim.SGD([t4()], lr=0.1)
    return lambda: opt.step(grads)


def _zero_grad():
    tape.optim.SGD([t4()], lr=0.1).zero_grad()


def _batch_norm_features():
    return tape.nn.BatchNorm1d(3)(ones(2, 4))


_no_gpu = pytest.mark.skipif(backend.cupy_or_none() is not None, reason="a GPU is available")

S23, S4 = r"\(2, ?3\)", r"\(4,\)"

CASES = [
    # ----- shapes that do not fit: the op and both shapes -----
    pytest.param(lambda: t23() + t4(), ValueError, rf"add.*{S23}.*{S4}", id="add-broadcast"),
    pytest.param(lambda: t23() * t4(), ValueError, rf"mul.*{S23}.*{S4}", id="mul-broadcast"),
    pytest.param(
        lambda: tape.maximum(t23(), t4()), ValueError, rf"maximum.*{S23}.*{S4}",
        id="maximum-broadcast",
    ),
    pytest.param(
        lambda: tape.where(ones(2, 3) > 0, t23(), t4()), ValueError, rf"where.*{S23}.*{S4}",
        id="where-broadcast",
    ),
    pytest.param(
        lambda: t23() @ ones(4, 2), ValueError, rf"matmul.*{S23}.*\(4, 2\)", id="matmul-inner",
    ),
    pytest.param(
        lambda: ones(2, 2, 3) @ ones(3, 3, 2), ValueError, r"matmul.*batch.*\(2, 2, 3\)",
        id="matmul-batch",
    ),
    pytest.param(
        lambda: t23() @ tape.tensor(2.0), ValueError, r"matmul.*at least one dimension",
        id="matmul-0d",
    ),
    pytest.param(
        lambda: tape.concatenate([t23(), ones(3, 3)], axis=1), ValueError,
        rf"concatenate.*{S23}.*\(3, 3\)", id="concatenate-shapes",
    ),
    pytest.param(
        lambda: tape.concatenate([]), ValueError, r"concatenate.*at least one", id="concat-empty",
    ),
    pytest.param(
        lambda: tape.stack([t23(), t4()]), ValueError, rf"stack.*{S23}.*{S4}", id="stack-shapes",
    ),
    pytest.param(
        lambda: t23().reshape(4, 2), ValueError, rf"reshape.*{S23}.*\(4, ?2\)", id="reshape-size",
    ),
    pytest.param(
        lambda: t23().reshape(-1, -1), ValueError, r"reshape.*(unknown|-1)",
        id="reshape-two-minus-1",
    ),
    pytest.param(
        lambda: t23().reshape(-2, 3), ValueError, r"reshape.*-2", id="reshape-negative-size",
    ),
    pytest.param(
        lambda: t23().broadcast_to(3, 3), ValueError, rf"broadcast_to.*{S23}.*\(3, 3\)",
        id="broadcast_to",
    ),
    pytest.param(
        lambda: t23().expand(4, 3), ValueError, rf"{S23}.*\(4, 3\)", id="expand",
    ),
    pytest.param(
        lambda: tape.einsum("ijk,jk->ik", t23(), ones(3, 2)), ValueError,
        rf"einsum.*'ijk'.*{S23}", id="einsum-subscripts",
    ),
    pytest.param(
        lambda: tape.einsum("ij,jk->ik", t23(), ones(4, 2)), ValueError,
        rf"einsum.*{S23}.*\(4, ?2\)", id="einsum-sizes",
    ),
    pytest.param(
        lambda: tape.einsum("ij,jk->ik", t23()), ValueError, r"einsum.*2 operands.*got 1",
        id="einsum-operand-count",
    ),
    # ----- axes -----
    pytest.param(lambda: t23().sum(axis=2), ValueError, r"sum.*axis 2.*out of range",
                 id="sum-axis"),
    pytest.param(
        lambda: t23().mean(axis=-3), ValueError, r"mean.*axis -3.*out of range", id="mean-axis",
    ),
    pytest.param(
        lambda: t23().max(dim=5), ValueError, r"max.*axis 5.*out of range", id="max-dim",
    ),
    pytest.param(
        lambda: t23().argmax(axis=3), (ValueError, IndexError), r"argmax.*axis 3", id="argmax-axis",
    ),
    pytest.param(
        lambda: t23().softmax(axis=2), ValueError, r"softmax.*axis 2.*out of range",
        id="softmax-axis",
    ),
    pytest.param(
        lambda: t23().log_softmax(axis=-3), ValueError, r"log_softmax.*axis -3.*out of range",
        id="log_softmax-axis",
    ),
    pytest.param(
        lambda: t23().unsqueeze(4), ValueError, r"unsqueeze.*axis 4.*out of range",
        id="unsqueeze-axis",
    ),
    pytest.param(
        lambda: t23().squeeze(5), (ValueError, IndexError), r"squeeze.*5", id="squeeze-axis",
    ),
    pytest.param(
        lambda: t23().swapaxes(0, 5), (ValueError, IndexError), r"swapaxes.*5", id="swapaxes-axis",
    ),
    pytest.param(
        lambda: t23().flatten(5), (ValueError, IndexError), r"flatten.*5", id="flatten-axis",
    ),
    pytest.param(
        lambda: tape.stack([t23(), t23()], axis=4), ValueError, r"stack.*axis 4", id="stack-axis",
    ),
    pytest.param(
        lambda: tape.concatenate([t23(), t23()], axis=3), ValueError, r"concatenate.*axis 3",
        id="concatenate-axis",
    ),
    pytest.param(
        lambda: tape.split(t23(), 2, axis=5), (ValueError, IndexError), r"split.*5",
        id="split-axis",
    ),
    pytest.param(
        lambda: t23().sum(axis=(0, 0)), ValueError, r"sum.*more than once", id="sum-duplicate-axes",
    ),
    pytest.param(
        lambda: t23().mean(axis=(1, -1)), ValueError, r"mean.*more than once",
        id="mean-duplicate-axes",
    ),
    pytest.param(
        lambda: t23().sum(axis=1.0), TypeError, r"sum.*axis must be an int", id="sum-float-axis",
    ),
    pytest.param(
        lambda: t23().transpose(0, 0), ValueError, r"transpose.*not a permutation",
        id="transpose-not-permutation",
    ),
    # ----- indexing -----
    pytest.param(lambda: t23()[0, 0, 0], IndexError, r"too many indices", id="too-many-indices"),
    pytest.param(
        lambda: t23()[np.array([0.0, 1.0])], IndexError, r"integer or boolean",
        id="float-index-array",
    ),
    pytest.param(
        lambda: t23()[tape.tensor([0.0])], IndexError, r"integer or boolean",
        id="float-index-tensor",
    ),
    pytest.param(lambda: t23()[5], IndexError, r"5.*out of bounds", id="index-out-of-bounds"),
    # ----- gradients: what can be differentiated, and how to ask -----
    pytest.param(_gradient_wrt_integer, TypeError, r"integer", id="grad-wrt-int"),
    pytest.param(_gradient_wrt_bool, TypeError, r"bool", id="grad-wrt-bool"),
    pytest.param(
        lambda: tape.tensor([1, 2], requires_grad=True), TypeError, r"floating-point",
        id="requires-grad-int",
    ),
    pytest.param(
        lambda: tape.zeros(2, dtype=tape.int32, requires_grad=True), TypeError,
        r"floating-point", id="requires-grad-int-zeros",
    ),
    pytest.param(
        _grad(lambda x: (x * 2.0).sum(), lambda x, y: x.numpy()), TypeError,
        r"sources.*Tensor.*ndarray", id="source-ndarray",
    ),
    pytest.param(
        _grad(lambda x: (x * 2.0).sum(), lambda x, y: {"a": [x, 1.0]}), TypeError,
        r"sources.*Tensor.*float", id="source-float-in-structure",
    ),
    pytest.param(
        lambda: tape.Tape().gradient(3.0, t23()), TypeError, r"targets.*Tensor.*float",
        id="target-float",
    ),
    pytest.param(
        _grad(lambda x: [x.sum(), x.numpy()]), TypeError, r"targets.*Tensor.*ndarray",
        id="target-list-with-ndarray",
    ),
    pytest.param(_jacobian_wrt_array, TypeError, r"sources.*Tensor", id="jacobian-source-ndarray"),
    pytest.param(_spent_tape, RuntimeError, r"not persistent", id="spent-tape"),
    pytest.param(_reenter_spent_tape, RuntimeError, r"persistent", id="reenter-spent-tape"),
    pytest.param(
        _grad(lambda x: x.sum(), unconnected_gradients="zeros"), ValueError,
        r"unconnected_gradients.*'zeros'", id="bad-unconnected-gradients",
    ),
    pytest.param(
        _grad(lambda x: x * 2.0, output_gradients=np.ones((3, 2))), ValueError,
        rf"output_gradients.*\(3, 2\).*{S23}", id="output-gradients-shape",
    ),
    pytest.param(
        _grad(lambda x: x.sum(), output_gradients=np.ones(3)), ValueError,
        r"output_gradients.*\(3,\).*\(\)", id="output-gradients-scalar-target",
    ),
    pytest.param(
        _list_targets_wrong_count, ValueError, r"output_gradients.*1.*2 targets",
        id="output-gradients-count",
    ),
    pytest.param(
        _list_targets_single_array, (TypeError, ValueError), r"output_gradients.*2 targets",
        id="output-gradients-not-a-list",
    ),
    pytest.param(_jacobian_of_a_list, TypeError, r"target.*Tensor.*list",
                 id="jacobian-list-target"),
    pytest.param(
        _batch_jacobian_mismatch, ValueError, r"batch_jacobian.*\(5, 3\).*\(4, 3\)",
        id="batch-jacobian-batch",
    ),
    pytest.param(
        _batch_jacobian_scalar_target, ValueError, r"batch_jacobian.*batch axis",
        id="batch-jacobian-scalar-target",
    ),
    pytest.param(_watch_array, TypeError, r"watch.*Tensor.*ndarray", id="watch-ndarray"),
    pytest.param(_watch_list_with_a_float, TypeError, r"watch.*float", id="watch-list-float"),
    pytest.param(
        _stop_recording_outside_with, RuntimeError, r"stop_recording.*recording",
        id="stop-recording-outside",
    ),
    pytest.param(
        _stop_recording_after_with, RuntimeError, r"stop_recording.*recording",
        id="stop-recording-after",
    ),
    # ----- custom gradients and Functions -----
    pytest.param(
        _custom_gradient_wrong_count, ValueError, r"custom_gradient.*1 gradients? for 2 inputs",
        id="custom-gradient-count",
    ),
    pytest.param(
        _custom_gradient_not_a_pair, TypeError, r"custom_gradient.*grad_fn",
        id="custom-gradient-not-a-pair",
    ),
    pytest.param(
        _function_wrong_count, ValueError, r"_OneGradForTwo\.backward.*1 gradients? for 2 inputs",
        id="function-backward-count",
    ),
    pytest.param(
        _function_wrong_shape, ValueError, rf"_WrongShapeGrad.*{S4}.*{S23}",
        id="function-backward-shape",
    ),
    pytest.param(
        lambda: tape.gradcheck(lambda a: 3.0, [tape.tensor([1.0, 2.0])]), TypeError,
        r"gradcheck.*Tensor.*float", id="gradcheck-fn-returns-float",
    ),
    pytest.param(
        lambda: tape.clip(t23()), ValueError, r"clip.*min.*max", id="clip-without-bounds",
    ),
    # ----- devices -----
    pytest.param(
        lambda: tape.tensor([1.0], device="cuda"), RuntimeError, r"pip install",
        id="cuda-without-gpu", marks=_no_gpu,
    ),
    pytest.param(
        lambda: tape.zeros(2, device="cuda"), RuntimeError, r"CuPy.*GPU",
        id="cuda-zeros-without-gpu", marks=_no_gpu,
    ),
    pytest.param(
        lambda: tape.tensor([1.0], device="tpu"), ValueError, r"unknown device 'tpu'",
        id="unknown-device",
    ),
    pytest.param(
        lambda: t23().to("cuda"), RuntimeError, r"pip install", id="to-cuda-without-gpu",
        marks=_no_gpu,
    ),
    pytest.param(lambda: t23().to("tpu"), ValueError, r"unknown device 'tpu'", id="to-unknown"),
    # ----- Python protocol -----
    pytest.param(lambda: t23().item(), ValueError, rf"item.*one element.*{S23}", id="item"),
    pytest.param(lambda: bool(t23()), ValueError, rf"{S23}.*ambiguous", id="bool"),
    pytest.param(lambda: len(tape.tensor(1.0)), TypeError, r"0-d", id="len-0d"),
    pytest.param(lambda: tape.tensor("abc"), TypeError, r"str", id="tensor-of-str"),
    pytest.param(lambda: tape.tensor([object()]), TypeError, r"object", id="tensor-of-objects"),
    # ----- axes out of range never wrap -----
    pytest.param(lambda: t23().transpose(1, 2), ValueError,
                 r"transpose.*axis 2.*out of range", id="transpose-axis-out-of-range"),
    pytest.param(lambda: t23().transpose(0, 3), ValueError,
                 r"transpose.*axis 3.*out of range", id="transpose-axis-3"),
    pytest.param(lambda: ones(2, 3, 4).permute(0, 2, 4), ValueError,
                 r"permute.*axis 4.*out of range", id="permute-axis"),
    pytest.param(lambda: t4().expand(-1, 4), ValueError, r"expand.*-1.*new leading axis",
                 id="expand-minus-1-new-axis"),
    pytest.param(lambda: t23().expand(3), ValueError, r"expand.*at least one size per axis",
                 id="expand-too-few-sizes"),
    # ----- sizes of layers and tensors -----
    pytest.param(lambda: tape.nn.Linear(4.5, 3), TypeError, r"Linear.*in_features.*int.*4\.5",
                 id="linear-float-size"),
    pytest.param(lambda: tape.nn.Linear(-1, 3), ValueError, r"Linear.*in_features.*-1",
                 id="linear-negative-size"),
    pytest.param(lambda: tape.nn.Conv2d(1, 4, 0), ValueError, r"Conv2d.*kernel_size.*positive",
                 id="conv2d-layer-kernel-0"),
    pytest.param(lambda: tape.nn.Conv2d(1, 4, 3, stride=0), ValueError,
                 r"Conv2d.*stride.*positive", id="conv2d-layer-stride-0"),
    pytest.param(lambda: tape.nn.Conv2d(1.0, 4, 3), TypeError, r"Conv2d.*in_channels.*int",
                 id="conv2d-layer-float-channels"),
    pytest.param(lambda: tape.nn.BatchNorm2d(0), ValueError, r"BatchNorm2d.*num_features",
                 id="batchnorm-0-features"),
    pytest.param(_batch_norm_features, ValueError,
                 r"BatchNorm1d.*\(2, 4\).*4 channels.*num_features=3", id="batchnorm-features"),
    pytest.param(lambda: tape.nn.Embedding(-2, 3), ValueError, r"Embedding.*num_embeddings",
                 id="embedding-negative"),
    pytest.param(lambda: tape.randn(-1), ValueError, r"randn.*-1.*negative", id="randn-negative"),
    pytest.param(lambda: tape.zeros(2.5), TypeError, r"zeros.*ints.*2\.5", id="zeros-float-size"),
    pytest.param(lambda: tape.functional.conv2d(ones(1, 1, 4, 4), ones(2, 1, 3, 3), stride=1.5),
                 ValueError, r"conv2d: stride must be an int.*1\.5", id="conv2d-float-stride"),
    pytest.param(lambda: tape.functional.adaptive_avg_pool2d(ones(1, 1, 4, 4), 0), ValueError,
                 r"adaptive_avg_pool2d.*output_size.*positive", id="adaptive-pool-0"),
    # ----- dtypes: what PyTorch refuses, refused with what to do -----
    pytest.param(lambda: tape.nn.Linear(2, 3)(tape.tensor([[1, 2]])), TypeError,
                 r"linear.*input.*int64.*floating", id="linear-int-input"),
    pytest.param(lambda: tape.functional.conv2d(ones(1, 1, 4, 4).astype(tape.float64),
                                                ones(2, 1, 3, 3)), TypeError,
                 r"conv2d.*float64.*float32.*same dtype", id="conv2d-mixed-dtypes"),
    pytest.param(lambda: tape.functional.cross_entropy(tape.tensor([[1, 2]]), tape.tensor([0])),
                 TypeError, r"cross_entropy.*int64.*floating", id="cross-entropy-int-logits"),
    pytest.param(lambda: tape.where(ones(3), ones(3), ones(3)), TypeError,
                 r"where.*condition.*boolean.*float32", id="where-float-condition"),
    pytest.param(lambda: tape.tensor([1, 2]).mean(), TypeError, r"mean.*int64.*floating",
                 id="mean-of-ints"),
    pytest.param(lambda: tape.tensor([1, 2]).var(), TypeError, r"var.*int64", id="var-of-ints"),
    # ----- the tape -----
    pytest.param(_reenter_recording_tape, RuntimeError, r"already recording",
                 id="tape-reentered-while-recording"),
    pytest.param(_batch_jacobian_0d_source, ValueError, r"batch_jacobian.*source.*batch axis",
                 id="batch-jacobian-0d-source"),
    pytest.param(_custom_gradient_broadcast_up, ValueError,
                 rf"custom_gradient.*\(1,\).*input 0.*{S4}", id="gradient-broadcast-up"),
    pytest.param(lambda: tape.gradcheck(lambda a: (a > 0).astype(tape.int64),
                                        [tape.tensor([1.0, 2.0])]), TypeError,
                 r"cannot differentiate an integer or boolean target", id="gradcheck-int-target"),
    # ----- PyTorch habits -----
    pytest.param(lambda: t4().sum().backward(), AttributeError, r"backward.*t\.gradient",
                 id="loss-backward"),
    pytest.param(lambda: t4().grad, AttributeError, r"no \.grad.*t\.gradient", id="x-grad"),
    pytest.param(_zero_grad, AttributeError, r"zero_grad", id="opt-zero-grad"),
    pytest.param(_optimizer([[0.1, 0.2, 0.3, 0.4]]), TypeError, r"step.*gradient 0 is a list",
                 id="opt-step-list-of-lists"),
    pytest.param(_optimizer({"w": np.ones(4)}), TypeError, r"step.*got a dict",
                 id="opt-step-dict"),
    pytest.param(lambda: f"{t4():.2f}", TypeError, r"format.*\(4,\)", id="format-spec-vector"),
    # ----- saving and random state -----
    pytest.param(lambda: tape.set_rng_state(7), ValueError, r"set_rng_state.*get_rng_state",
                 id="rng-state-not-a-dict"),
    pytest.param(lambda: tape.set_rng_state({"bit_generator": "PCG64", "state": {}}),
                 ValueError, r"set_rng_state.*not one get_rng_state returned",
                 id="rng-state-damaged"),
    pytest.param(lambda: tape.load("x.safetensors", names="w"), TypeError,
                 r"tape.load: names takes a list", id="load-names-a-string"),
    pytest.param(lambda: tape.save({"opt": {"fn": print}}, "x.safetensors"), TypeError,
                 r"tape.save: 'opt/fn' is of type builtin_function_or_method",
                 id="save-a-function"),
    # ----- pad and split -----
    pytest.param(lambda: tape.pad(t23(), (-1, 1)), ValueError, r"pad.*negative", id="pad-negative"),
    pytest.param(lambda: tape.pad(t23(), (1,)), ValueError, r"pad.*pairs.*\(1,\)", id="pad-odd"),
    pytest.param(
        lambda: tape.pad(t23(), (1, 1) * 3), ValueError, r"pad.*at most 2 axes",
        id="pad-too-many-axes",
    ),
    pytest.param(
        lambda: tape.split(t23(), 2, axis=1), ValueError, r"split.*size 3.*2 equal",
        id="split-unequal",
    ),
]


@pytest.mark.parametrize("fn, exc, match", CASES)
def test_bad_input_raises_a_clear_error(fn, exc, match):
    with pytest.raises(exc, match=re.compile(match, re.S)), np.errstate(all="ignore"):
        fn()


# ----- warnings: what runs, but is almost always a mistake -----


@pytest.mark.parametrize("loss", [tape.functional.mse_loss, tape.functional.l1_loss])
def test_a_target_that_broadcasts_against_the_input_is_warned_about(loss):
    with pytest.warns(UserWarning, match=r"target's shape \(4,\).*\(4, 1\).*\(4, 4\)"):
        out = loss(ones(4, 1), ones(4))
    assert out.shape == ()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(ones(4), ones(4))  # the same shapes: nothing to say


def test_a_step_with_no_gradients_warns_once():
    opt = tape.optim.SGD([t4()], lr=0.1)
    with pytest.warns(UserWarning, match=r"every gradient is None.*outside `with tape\.Tape"):
        opt.step([None])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step([None])  # said once


def test_a_one_element_tensor_formats_as_its_number():
    loss = tape.tensor(0.123456)
    assert f"{loss:.4f}" == "0.1235" and f"{tape.tensor([2.5]):.1f}" == "2.5"
    assert f"{t4()}" == str(t4())
