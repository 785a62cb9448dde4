"""Tests for minicnn.functional.activations: relu, sigmoid, tanh."""

import math
import warnings

import numpy as np
import pytest
from conftest import to_host
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicnn
import minicnn.functional as F

# The `device` fixture only names a backend, so reusing it across Hypothesis examples is safe.
CHECKS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

ACTIVATIONS = {"relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh}

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


def away_from_zero(shape, seed):
    """Values with 0.05 <= |x| <= 3: relu has no derivative at 0, so finite differences must not straddle it."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.05, 3.0, size=shape)


@CHECKS
@given(shape=shapes, name=st.sampled_from(sorted(ACTIVATIONS)), seed=st.integers(0, 2**16))
def test_activation_gradcheck(device, shape, name, seed):
    x = minicnn.tensor(away_from_zero(shape, seed), requires_grad=True, device=device)
    minicnn.gradcheck(ACTIVATIONS[name], x)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_torch(device, name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x_array = 4.0 * rng.standard_normal((2, 3, 4, 5))
    x = minicnn.tensor(x_array, requires_grad=True, device=device)
    out = ACTIVATIONS[name](x)
    x_torch = torch.tensor(x_array, requires_grad=True)
    expected = getattr(torch, name)(x_torch)
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(to_host(out), expected.detach().numpy(), rtol=1e-12, atol=1e-15)

    weights = rng.standard_normal(x_array.shape)
    (out * minicnn.tensor(weights, device=device)).sum().backward()
    (expected * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), x_torch.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_relu_derivative_at_zero_is_zero_as_in_pytorch(device):
    x = minicnn.tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True, device=device)
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [0.0, 0.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_finite_and_saturates_cleanly_at_magnitude_1e4(device, dtype):
    x = minicnn.tensor(np.array([-1e4, -2.0, 0.0, 2.0, 1e4], dtype=dtype), requires_grad=True, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exp(1e4) overflows: an implementation that computes it would warn
        out = F.sigmoid(x)
        out.sum().backward()
    assert out.dtype == dtype and x.grad.dtype == dtype
    values, grads = to_host(out), to_host(x.grad)
    assert np.isfinite(values).all() and np.isfinite(grads).all()
    assert values[0] == 0.0 and values[-1] == 1.0 and values[2] == 0.5
    s = 1 / (1 + math.exp(-2.0))
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(values[1:4], [1 - s, 0.5, s], rtol=rtol)
    np.testing.assert_allclose(grads, [0.0, s * (1 - s), 0.25, s * (1 - s), 0.0], rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_keeps_its_relative_precision_for_large_negative_inputs(device, dtype):
    """sigmoid(-20) = 2.06e-9 and sigmoid(-50) = 1.93e-22 are representable in float32 and float64 alike.

    A formula that forms 1 + tanh(x / 2) (or 1 - sigmoid(-x)) cancels to 0 there, which
    log(sigmoid(x)) would turn into -inf; exp(x) / (1 + exp(x)) for x < 0 keeps full precision.
    """
    inputs = [-10.0, -20.0, -50.0, -80.0]
    x = minicnn.tensor(np.array(inputs, dtype=dtype), device=device)
    expected = [math.exp(v) / (1 + math.exp(v)) for v in inputs]
    np.testing.assert_allclose(to_host(F.sigmoid(x)), expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=0)


def test_tanh_is_finite_at_magnitude_1e4(device):
    x = minicnn.tensor(np.array([-1e4, 1e4]), requires_grad=True, device=device)
    out = F.tanh(x)
    out.sum().backward()
    np.testing.assert_array_equal(to_host(out), [-1.0, 1.0])
    np.testing.assert_array_equal(to_host(x.grad), [0.0, 0.0])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_keeps_the_input_dtype_in_output_and_gradient(device, name, dtype):
    x = minicnn.tensor(away_from_zero((3, 4), 1).astype(dtype), requires_grad=True, device=device)
    out = ACTIVATIONS[name](x)
    assert out.dtype == dtype
    out.sum().backward()
    assert x.grad.dtype == dtype
