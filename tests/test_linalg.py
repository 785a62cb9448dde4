"""Tests for minicnn.functional.linalg: matmul and linear."""

import numpy as np
import pytest
from conftest import to_host
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicnn
import minicnn.functional as F

# The `device` fixture only names a backend, so reusing it across Hypothesis examples is safe.
CHECKS = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def matmul_shapes(draw):
    """Operand shapes for a @ b: 1-d vectors, plain matrices, and batch axes that broadcast (size 1 or missing)."""
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))

    def batch_axes():
        axes = [size if draw(st.booleans()) else 1 for size in batch]
        return tuple(axes[draw(st.integers(0, len(axes))) :])  # leading axes may be missing altogether

    a_shape = (k,) if draw(st.booleans()) else batch_axes() + (m, k)
    b_shape = (k,) if draw(st.booleans()) else batch_axes() + (k, n)
    return a_shape, b_shape, draw(st.integers(0, 2**16))


@st.composite
def linear_cases(draw):
    """x: (N, in) or (B, N, in), weight: (in, out), optional bias (out,)."""
    in_features, out_features = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    leading = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    return leading + (in_features,), (in_features, out_features), draw(st.booleans()), draw(st.integers(0, 2**16))


def linear_inputs(case, device, dtype=np.float64):
    x_shape, w_shape, bias, seed = case
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape)]
    if bias:
        arrays.append(rng.standard_normal(w_shape[1]))
    return [minicnn.tensor(a.astype(dtype), requires_grad=True, device=device) for a in arrays]


def compare_with_torch(device, ours_fn, torch_fn, arrays):
    """Outputs, and the gradients of every input after backward of a random-weighted sum, agree with PyTorch."""
    torch = pytest.importorskip("torch")
    ours = [minicnn.tensor(a, requires_grad=True, device=device) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, expected = ours_fn(*ours), torch_fn(torch, *theirs)
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(to_host(out), expected.detach().numpy(), rtol=1e-12, atol=1e-12)

    weights = np.asarray(np.random.default_rng(9).standard_normal(tuple(expected.shape)), dtype=np.float64)
    (out * minicnn.tensor(weights, device=device)).sum().backward()
    (expected * torch.from_numpy(weights)).sum().backward()
    for position, (mine, reference) in enumerate(zip(ours, theirs)):
        assert mine.grad.shape == mine.shape
        np.testing.assert_allclose(
            to_host(mine.grad), reference.grad.numpy(), rtol=1e-12, atol=1e-12, err_msg=f"gradient of input {position}"
        )


# ----- matmul ------------------------------------------------------------------------------------


@CHECKS
@given(case=matmul_shapes())
def test_matmul_gradcheck_with_vectors_and_broadcast_batches(device, case):
    a_shape, b_shape, seed = case
    rng = np.random.default_rng(seed)
    a = minicnn.tensor(rng.standard_normal(a_shape), requires_grad=True, device=device)
    b = minicnn.tensor(rng.standard_normal(b_shape), requires_grad=True, device=device)
    minicnn.gradcheck(F.matmul, a, b)


@CHECKS
@given(case=matmul_shapes())
def test_matmul_matches_torch(device, case):
    a_shape, b_shape, seed = case
    rng = np.random.default_rng(seed)
    compare_with_torch(
        device,
        F.matmul,
        lambda torch, a, b: torch.matmul(a, b),
        [rng.standard_normal(a_shape), rng.standard_normal(b_shape)],
    )


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((4, 1, 2, 3), (5, 3, 2)), ((3,), (2, 3, 4)), ((2, 2, 3), (3,))],
)
def test_matmul_operator_agrees_with_numpy_on_vector_and_batched_shapes(device, a_shape, b_shape):
    rng = np.random.default_rng(0)
    a_array, b_array = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    a, b = minicnn.tensor(a_array, requires_grad=True, device=device), minicnn.tensor(b_array, device=device)
    out = a @ b
    expected = a_array @ b_array
    assert out.shape == expected.shape
    np.testing.assert_allclose(to_host(out), expected, rtol=1e-12, atol=1e-12)
    minicnn.gradcheck(lambda a: a @ b, a)


def test_matmul_inner_dimension_mismatch_raises_shape_error(device):
    a = minicnn.tensor(np.zeros((2, 3)), device=device)
    b = minicnn.tensor(np.zeros((4, 2)), device=device)
    with pytest.raises(minicnn.ShapeError, match=r"matmul.*\(2, 3\).*\(4, 2\)"):
        F.matmul(a, b)


# ----- linear ------------------------------------------------------------------------------------


@CHECKS
@given(case=linear_cases())
def test_linear_gradcheck(device, case):
    inputs = linear_inputs(case, device)
    errors = minicnn.gradcheck(F.linear, *inputs)
    assert len(errors) == len(inputs)


@CHECKS
@given(case=linear_cases())
def test_linear_matches_torch(device, case):
    """minicnn's weight is (in, out), PyTorch's is (out, in): torch receives weight.T."""
    x_shape, w_shape, bias, seed = case
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape)]
    if bias:
        arrays.append(rng.standard_normal(w_shape[1]))
    compare_with_torch(
        device, F.linear, lambda torch, x, w, b=None: torch.nn.functional.linear(x, w.T, b), arrays
    )


@pytest.mark.parametrize("bias", [True, False])
def test_linear_is_x_times_weight_plus_bias(device, bias):
    rng = np.random.default_rng(1)
    x_array, w_array, b_array = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
    x, w = minicnn.tensor(x_array, device=device), minicnn.tensor(w_array, device=device)
    out = F.linear(x, w, minicnn.tensor(b_array, device=device) if bias else None)
    np.testing.assert_allclose(to_host(out), x_array @ w_array + (b_array if bias else 0), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_keeps_the_input_dtype_in_output_and_gradients(device, dtype):
    inputs = linear_inputs(((4, 3), (3, 5), True, 0), device, dtype)
    out = F.linear(*inputs)
    assert out.dtype == dtype
    out.sum().backward()
    for tensor in inputs:
        assert tensor.grad.dtype == dtype


@pytest.mark.parametrize("x_shape, w_shape", [((4, 3), (5, 2)), ((2, 6), (3, 6)), ((2, 2, 4), (2, 4))])
def test_linear_feature_mismatch_raises_shape_error_naming_both_shapes(device, x_shape, w_shape):
    x = minicnn.tensor(np.zeros(x_shape), device=device)
    w = minicnn.tensor(np.zeros(w_shape), device=device)
    with pytest.raises(minicnn.ShapeError) as excinfo:
        F.linear(x, w)
    message = str(excinfo.value)
    assert "linear" in message
    assert str(x_shape) in message and str(w_shape) in message


def test_linear_bias_of_the_wrong_size_raises_shape_error(device):
    x, w = minicnn.tensor(np.zeros((4, 3)), device=device), minicnn.tensor(np.zeros((3, 2)), device=device)
    with pytest.raises(minicnn.ShapeError, match=r"linear.*\(3,\)"):
        F.linear(x, w, minicnn.tensor(np.zeros(3), device=device))
