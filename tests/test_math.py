"""Arithmetic with broadcasting, exp/log and the reductions sum/mean/max (functional/math.py)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minicnn
import minicnn.functional as F
from conftest import to_host

# `device` is a constant string per test, so reusing it across Hypothesis examples is safe.
HYPOTHESIS_SETTINGS = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Each binary operator with input ranges that keep it smooth (no division by ~0, positive bases).
BINARY_OPS = {
    "add": (lambda a, b: a + b, np.add, (-2.0, 2.0), (-2.0, 2.0)),
    "subtract": (lambda a, b: a - b, np.subtract, (-2.0, 2.0), (-2.0, 2.0)),
    "multiply": (lambda a, b: a * b, np.multiply, (-2.0, 2.0), (-2.0, 2.0)),
    "divide": (lambda a, b: a / b, np.divide, (-2.0, 2.0), (0.5, 2.0)),
    "power": (lambda a, b: a**b, np.power, (0.5, 2.0), (-1.5, 1.5)),
}

FIXED_SHAPE_PAIRS = [
    ((3, 1), (1, 4)),
    ((2, 3, 4), (4,)),
    ((), (2, 3)),
    ((2, 3), ()),
    ((4,), (2, 3, 4)),
    ((2, 1, 3), (4, 1)),
    ((2, 3), (2, 3)),
]


def _check_binary(op_name, shape_a, shape_b, device, seed):
    fn, numpy_fn, range_a, range_b = BINARY_OPS[op_name]
    rng = np.random.default_rng(seed)
    a_values = rng.uniform(*range_a, size=shape_a)
    b_values = rng.uniform(*range_b, size=shape_b)
    a = minicnn.tensor(a_values, requires_grad=True, device=device)
    b = minicnn.tensor(b_values, requires_grad=True, device=device)

    out = fn(a, b)
    expected = numpy_fn(a_values, b_values)
    assert out.shape == expected.shape
    np.testing.assert_allclose(to_host(out), expected, rtol=1e-12)

    # Each operand's gradient has the operand's shape, however far it was broadcast.
    (out * 1.5).sum().backward()
    assert a.grad.shape == shape_a
    assert b.grad.shape == shape_b

    errors = minicnn.gradcheck(fn, a, b)
    assert len(errors) == 2


@pytest.mark.parametrize("op_name", sorted(BINARY_OPS))
@pytest.mark.parametrize("shape_a, shape_b", FIXED_SHAPE_PAIRS, ids=str)
def test_binary_op_broadcast_gradients_fixed_shapes(device, op_name, shape_a, shape_b):
    _check_binary(op_name, shape_a, shape_b, device, seed=1)


@pytest.mark.parametrize("op_name", sorted(BINARY_OPS))
@HYPOTHESIS_SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       seed=st.integers(0, 2**16))
def test_binary_op_broadcast_gradients_drawn_shapes(device, op_name, shapes, seed):
    shape_a, shape_b = shapes.input_shapes
    _check_binary(op_name, shape_a, shape_b, device, seed)


def test_broadcast_gradient_values_are_summed(device):
    a = minicnn.tensor(np.ones((2, 3)), requires_grad=True, device=device)
    bias = minicnn.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True, device=device)
    column = minicnn.tensor(np.array([[10.0], [20.0]]), requires_grad=True, device=device)
    (a * bias + column).sum().backward()
    np.testing.assert_array_equal(to_host(bias.grad), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(to_host(column.grad), [[3.0], [3.0]])
    np.testing.assert_array_equal(to_host(a.grad), [[1.0, 2.0, 3.0]] * 2)


def test_only_operand_requiring_grad_gets_grad(device):
    a = minicnn.tensor(np.array([1.0, 2.0]), requires_grad=True, device=device)
    b = minicnn.tensor(np.array([3.0, 4.0]), device=device)
    (a / b).sum().backward()
    assert b.grad is None
    np.testing.assert_allclose(to_host(a.grad), [1 / 3, 1 / 4])


def test_functional_names_match_operators(device):
    values = np.array([0.5, 1.5])
    a = minicnn.tensor(values, device=device)
    b = minicnn.tensor(values[::-1].copy(), device=device)
    np.testing.assert_allclose(to_host(F.add(a, b)), to_host(a + b))
    np.testing.assert_allclose(to_host(F.subtract(a, b)), to_host(a - b))
    np.testing.assert_allclose(to_host(F.multiply(a, b)), to_host(a * b))
    np.testing.assert_allclose(to_host(F.divide(a, b)), to_host(a / b))
    np.testing.assert_allclose(to_host(F.power(a, b)), to_host(a**b))
    np.testing.assert_allclose(to_host(F.negate(a)), -values)


# ----- exp, log ----------------------------------------------------------------------------------------
def test_exp(device):
    values = np.random.default_rng(2).uniform(-2, 2, size=(3, 4))
    x = minicnn.tensor(values, requires_grad=True, device=device)
    np.testing.assert_allclose(to_host(F.exp(x)), np.exp(values), rtol=1e-12)
    np.testing.assert_allclose(to_host(x.exp()), np.exp(values), rtol=1e-12)
    minicnn.gradcheck(F.exp, x)


def test_log(device):
    values = np.random.default_rng(3).uniform(0.2, 3.0, size=(3, 4))
    x = minicnn.tensor(values, requires_grad=True, device=device)
    np.testing.assert_allclose(to_host(F.log(x)), np.log(values), rtol=1e-12)
    F.log(x).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), 1 / values, rtol=1e-12)
    minicnn.gradcheck(lambda t: t.log(), x)


# ----- reductions ------------------------------------------------------------------------------------
AXES = [None, 0, 1, 2, -1, -2, (0, 2), (-1, 0), (0, 1, 2)]
REDUCTION_SHAPE = (2, 3, 4)


def _tie_free(seed):
    """Distinct values at least 0.1 apart, in random order, so max has one winner per window."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(REDUCTION_SHAPE))
    return (rng.permutation(size) * 0.1 - 1.0).reshape(REDUCTION_SHAPE)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions_match_numpy_and_gradcheck(device, name, axis, keepdims):
    values = _tie_free(4)
    x = minicnn.tensor(values, requires_grad=True, device=device)
    out = getattr(x, name)(axis=axis, keepdims=keepdims)
    expected = getattr(np, name)(values, axis=axis, keepdims=keepdims)
    assert out.shape == expected.shape
    np.testing.assert_allclose(to_host(out), expected, rtol=1e-12)
    functional = getattr(F, name)
    np.testing.assert_allclose(to_host(functional(x, axis=axis, keepdims=keepdims)), expected, rtol=1e-12)
    minicnn.gradcheck(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims), x)


def test_sum_and_mean_gradient_values(device):
    x = minicnn.tensor(np.ones((2, 5)), requires_grad=True, device=device)
    x.mean(axis=1).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), np.full((2, 5), 0.2))
    y = minicnn.tensor(np.ones((2, 5)), requires_grad=True, device=device)
    (y.sum(axis=0, keepdims=True) * 3).sum().backward()
    np.testing.assert_allclose(to_host(y.grad), np.full((2, 5), 3.0))


def test_reduction_axis_out_of_range_raises(device):
    x = minicnn.tensor(np.ones((2, 3)), device=device)
    with pytest.raises(ValueError):
        x.sum(axis=2)
    with pytest.raises(ValueError):
        x.max(axis=-3)


def test_max_tie_gradient_goes_to_first_maximum(device):
    x = minicnn.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0], [5.0, 5.0, 5.0]]), requires_grad=True,
                       device=device)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [[0, 1, 0], [1, 0, 0], [1, 0, 0]])


def test_max_tie_over_all_axes_goes_to_first_in_row_major_order(device):
    x = minicnn.tensor(np.array([[0.0, 4.0], [4.0, 4.0]]), requires_grad=True, device=device)
    x.max().backward()
    np.testing.assert_array_equal(to_host(x.grad), [[0, 1], [0, 0]])


def test_max_tie_over_axis_tuple(device):
    # Reducing axes (0, 2): the windows are x[:, j, :], searched in row-major order of (i, k).
    values = np.zeros((2, 2, 2))
    values[0, 0, 1] = values[1, 0, 0] = 7.0  # tie in window j=0: (0, 1) comes first
    values[1, 1, 0] = values[1, 1, 1] = 9.0  # tie in window j=1: (1, 0) comes first
    x = minicnn.tensor(values, requires_grad=True, device=device)
    (x.max(axis=(0, 2)) * minicnn.tensor(np.array([1.0, 2.0]), device=device)).sum().backward()
    expected = np.zeros((2, 2, 2))
    expected[0, 0, 1] = 1.0
    expected[1, 1, 0] = 2.0
    np.testing.assert_array_equal(to_host(x.grad), expected)


# ----- PyTorch cross-check --------------------------------------------------------------------------
def test_composite_expression_matches_pytorch(device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    arrays = {
        "a": rng.uniform(-1, 1, size=(2, 3, 4)),
        "b": rng.uniform(-1, 1, size=(4,)),
        "c": rng.uniform(-1, 1, size=(3, 1)),
        "d": rng.uniform(0.5, 1.5, size=(1, 4)),
        "e": rng.uniform(0.5, 1.5, size=()),
    }

    def expression(a, b, c, d, e, amax, mean):
        z = (a * b - c) / (d + 0.5)
        w = z**2 + (a * 0.3).exp() - (d * e).log() + 2 / (1 + d**e)
        return amax(w, 1).sum() + mean(w, (0, 2)).sum() * 0.5 + (-w).sum() / 7

    ours = {name: minicnn.tensor(value, requires_grad=True, device=device) for name, value in arrays.items()}
    out = expression(**ours, amax=lambda t, axis: t.max(axis=axis), mean=lambda t, axis: t.mean(axis=axis))
    out.backward()

    theirs = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in arrays.items()}
    expected = expression(**theirs, amax=lambda t, axis: t.max(dim=axis).values, mean=lambda t, axis: t.mean(dim=axis))
    expected.backward()

    np.testing.assert_allclose(out.item(), expected.item(), rtol=1e-12)
    for name in arrays:
        assert ours[name].grad.shape == arrays[name].shape, name
        np.testing.assert_allclose(to_host(ours[name].grad), theirs[name].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_argmax_picks_first_maximum_and_has_no_gradient(device):
    x = minicnn.tensor(np.array([[1.0, 3.0, 3.0], [5.0, 2.0, 5.0]]), requires_grad=True, device=device)
    index = x.argmax(axis=1)
    assert to_host(index).tolist() == [1, 0]
    assert index.dtype.kind == "i" and not index.requires_grad
    assert int(to_host(x.argmax())) == 3


def test_comparisons_give_boolean_tensors_for_accuracy(device):
    logits = minicnn.tensor(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), device=device)
    labels = minicnn.tensor(np.array([1, 1, 1]), device=device)
    correct = logits.argmax(axis=1) == labels
    assert to_host(correct).tolist() == [True, False, True]
    assert to_host((logits > 0.5)).sum() == 3 and to_host(logits <= 0.2).sum() == 2
    assert float(to_host(correct.astype(np.float32).mean())) == pytest.approx(2 / 3)
    assert len({logits, labels}) == 2  # tensors stay hashable
