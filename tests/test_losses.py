"""Tests for minicnn.functional.losses: softmax, log_softmax and cross_entropy."""

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

SOFTMAXES = {"softmax": F.softmax, "log_softmax": F.log_softmax}

# log(1 + e^-1): the log-sum-exp correction when the two largest logits differ by exactly 1.
LOG1P_EXP_MINUS_1 = math.log1p(math.exp(-1.0))


@st.composite
def shape_and_axis(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    return shape, draw(st.integers(-len(shape), len(shape) - 1)), draw(st.integers(0, 2**16))


@st.composite
def classification_cases(draw):
    count, classes = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return 3.0 * rng.standard_normal((count, classes)), rng.integers(0, classes, size=count)


def labels_tensor(labels, device):
    return minicnn.tensor(np.asarray(labels, dtype=np.int64), device=device)


# ----- gradients ---------------------------------------------------------------------------------


@CHECKS
@given(case=shape_and_axis(), name=st.sampled_from(sorted(SOFTMAXES)))
def test_softmax_and_log_softmax_gradcheck_along_any_axis(device, case, name):
    shape, axis, seed = case
    x = minicnn.tensor(2.0 * np.random.default_rng(seed).standard_normal(shape), requires_grad=True, device=device)
    minicnn.gradcheck(lambda x: SOFTMAXES[name](x, axis=axis), x)


@CHECKS
@given(case=classification_cases())
def test_cross_entropy_gradcheck(device, case):
    logits_array, labels = case
    logits = minicnn.tensor(logits_array, requires_grad=True, device=device)
    labels = labels_tensor(labels, device)
    minicnn.gradcheck(lambda z: F.cross_entropy(z, labels), logits)


# ----- agreement with PyTorch --------------------------------------------------------------------


@CHECKS
@given(case=shape_and_axis(), name=st.sampled_from(sorted(SOFTMAXES)))
def test_softmax_and_log_softmax_match_torch(device, case, name):
    torch = pytest.importorskip("torch")
    shape, axis, seed = case
    rng = np.random.default_rng(seed)
    x_array = 3.0 * rng.standard_normal(shape)
    x = minicnn.tensor(x_array, requires_grad=True, device=device)
    out = SOFTMAXES[name](x, axis=axis)
    x_torch = torch.tensor(x_array, requires_grad=True)
    expected = getattr(torch.nn.functional, name)(x_torch, dim=axis)
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(to_host(out), expected.detach().numpy(), rtol=1e-12, atol=1e-14)

    weights = rng.standard_normal(shape)
    (out * minicnn.tensor(weights, device=device)).sum().backward()
    (expected * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), x_torch.grad.numpy(), rtol=1e-10, atol=1e-12)


@CHECKS
@given(case=classification_cases())
def test_cross_entropy_matches_torch(device, case):
    torch = pytest.importorskip("torch")
    logits_array, labels = case
    logits = minicnn.tensor(logits_array, requires_grad=True, device=device)
    loss = F.cross_entropy(logits, labels_tensor(labels, device))
    logits_torch = torch.tensor(logits_array, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(logits_torch, torch.from_numpy(labels))
    assert loss.shape == ()
    assert float(to_host(loss)) == pytest.approx(expected.item(), rel=1e-12, abs=1e-14)

    loss.backward()
    expected.backward()
    np.testing.assert_allclose(to_host(logits.grad), logits_torch.grad.numpy(), rtol=1e-10, atol=1e-14)


@CHECKS
@given(case=classification_cases(), soft=st.booleans())
def test_cross_entropy_with_class_probabilities_matches_torch(device, case, soft):
    # One-hot labels (Keras's categorical_crossentropy) and soft ones, as torch's cross_entropy takes them.
    torch = pytest.importorskip("torch")
    logits_array, labels = case
    count, classes = logits_array.shape
    targets = np.eye(classes)[labels]
    if soft:
        targets = np.random.default_rng(count).dirichlet(np.ones(classes), size=count)
    logits = minicnn.tensor(logits_array, requires_grad=True, device=device)
    loss = F.cross_entropy(logits, minicnn.tensor(targets, device=device))
    logits_torch = torch.tensor(logits_array, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(logits_torch, torch.from_numpy(targets))
    assert loss.shape == ()
    assert float(to_host(loss)) == pytest.approx(expected.item(), rel=1e-12, abs=1e-14)
    loss.backward()
    expected.backward()
    np.testing.assert_allclose(to_host(logits.grad), logits_torch.grad.numpy(), rtol=1e-10, atol=1e-14)
    if not soft:  # one-hot rows: the same loss as their class indices
        assert float(to_host(loss)) == pytest.approx(
            float(to_host(F.cross_entropy(logits, labels_tensor(labels, device)))), rel=1e-12, abs=1e-14)


def test_cross_entropy_with_class_probabilities_by_hand_and_shape_checked():
    logits = minicnn.tensor(np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]]), requires_grad=True)
    targets = np.array([[0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])
    log_softmax = logits.data - np.log(np.exp(logits.data).sum(axis=1, keepdims=True))
    loss = F.cross_entropy(logits, targets)
    assert loss.item() == pytest.approx(-(targets * log_softmax).sum() / 2, rel=1e-12)
    minicnn.gradcheck(lambda z: F.cross_entropy(z, targets), logits)
    with pytest.raises(minicnn.ShapeError, match=r"class probabilities must have the logits' shape \(2, 3\)"):
        F.cross_entropy(logits, np.ones((2, 4)) / 4)


def test_cross_entropy_is_the_mean_of_minus_log_softmax_at_the_labels(device):
    logits_array = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    log_probs = logits_array - np.log(np.exp(logits_array).sum(axis=1, keepdims=True))
    loss = F.cross_entropy(minicnn.tensor(logits_array, device=device), labels_tensor([1, 2], device))
    assert float(to_host(loss)) == pytest.approx(-(log_probs[0, 1] + log_probs[1, 2]) / 2, rel=1e-12)


def test_cross_entropy_accepts_labels_as_a_list_or_array(device, xp):
    logits = minicnn.tensor(np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]]), device=device)
    reference = float(to_host(F.cross_entropy(logits, labels_tensor([1, 0], device))))
    assert float(to_host(F.cross_entropy(logits, [1, 0]))) == reference
    assert float(to_host(F.cross_entropy(logits, xp.asarray([1, 0])))) == reference


# ----- numerics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_softmax_and_softmax_stay_finite_and_exact_for_logits_of_magnitude_1e4(device, dtype):
    x_array = np.array([[1e4, 1e4 - 1, -1e4], [-1e4, -1e4, -1e4 + 1]], dtype=dtype)
    # Row 1: logits (a, a - 1, -a) with a = 1e4; row 2: logits (b, b, b + 1) give -log(2 + e) twice and 1 - log(2 + e).
    log_2_plus_e = math.log(2 + math.e)
    expected_log = np.array(
        [
            [-LOG1P_EXP_MINUS_1, -1 - LOG1P_EXP_MINUS_1, -2e4 - LOG1P_EXP_MINUS_1],
            [-log_2_plus_e, -log_2_plus_e, 1 - log_2_plus_e],
        ]
    )
    tolerance = {"rtol": 1e-6, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would warn before giving inf or nan
        log_probs = F.log_softmax(minicnn.tensor(x_array, device=device), axis=1)
        probs = F.softmax(minicnn.tensor(x_array, device=device), axis=-1)
        log_probs_axis0 = F.log_softmax(minicnn.tensor(x_array.T.copy(), device=device), axis=0)
    assert log_probs.dtype == dtype and probs.dtype == dtype
    np.testing.assert_allclose(to_host(log_probs), expected_log, **tolerance)
    np.testing.assert_allclose(to_host(log_probs_axis0), expected_log.T, **tolerance)
    np.testing.assert_allclose(to_host(probs), np.exp(expected_log), **tolerance)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_stays_finite_and_exact_for_logits_of_magnitude_1e4(device, dtype):
    logits_array = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4 - 1]], dtype=dtype)
    # Sample 0 picks the -1e4 logit: its loss is 2e4 (+ log(1 + e^-1e4 + e^-2e4), 0 in floating point).
    # Sample 1 picks the runner-up 1e4 - 1: its loss is 1 + log(1 + e^-1) (+ a term below e^-1e4).
    expected_loss = (2e4 + 1 + LOG1P_EXP_MINUS_1) / 2
    softmax_row_1 = np.array([0.0, 1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))])
    expected_grad = np.array([[1.0, -1.0, 0.0], softmax_row_1 - [0.0, 0.0, 1.0]]) / 2
    logits = minicnn.tensor(logits_array, requires_grad=True, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.cross_entropy(logits, labels_tensor([1, 2], device))
        loss.backward()
    assert loss.dtype == dtype and logits.grad.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    assert float(to_host(loss)) == pytest.approx(expected_loss, rel=rtol)
    assert np.isfinite(to_host(logits.grad)).all()
    np.testing.assert_allclose(to_host(logits.grad), expected_grad, rtol=rtol, atol=rtol)


def test_cross_entropy_of_a_confident_correct_prediction_is_zero_not_nan(device):
    logits = minicnn.tensor(np.array([[1e4, -1e4]]), requires_grad=True, device=device)
    loss = F.cross_entropy(logits, labels_tensor([0], device))
    loss.backward()
    assert float(to_host(loss)) == 0.0
    np.testing.assert_array_equal(to_host(logits.grad), [[0.0, 0.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_keeps_the_logits_dtype_in_loss_and_gradient(device, dtype):
    logits_array = np.random.default_rng(0).standard_normal((4, 5)).astype(dtype)
    logits = minicnn.tensor(logits_array, requires_grad=True, device=device)
    loss = F.cross_entropy(logits, labels_tensor([0, 4, 2, 2], device))
    assert loss.dtype == dtype
    loss.backward()
    assert logits.grad.dtype == dtype


# ----- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [5, 1]])
def test_cross_entropy_labels_out_of_range_raise_value_error_naming_the_range(device, labels):
    logits = minicnn.tensor(np.zeros((2, 3)), device=device)
    with pytest.raises(ValueError, match=r"cross_entropy.*\[0, 3\)"):
        F.cross_entropy(logits, labels_tensor(labels, device))


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [5, 1]])
def test_cross_entropy_without_the_label_check_gives_nan_for_labels_out_of_range(device, labels):
    """check_labels=False (the GPU training path, no host sync) turns a bad label into a NaN loss."""
    logits = minicnn.tensor(np.zeros((2, 3)), device=device)
    loss = F.cross_entropy(logits, labels_tensor(labels, device), check_labels=False)
    assert np.isnan(float(loss.item()))


def test_cross_entropy_without_the_label_check_is_unchanged_for_valid_labels(device):
    logits_array = np.random.default_rng(3).standard_normal((4, 5))
    results = []
    for check in (True, False):
        logits = minicnn.tensor(logits_array, device=device, requires_grad=True)
        loss = F.cross_entropy(logits, labels_tensor([0, 4, 2, 2], device), check_labels=check)
        loss.backward()
        results.append((float(loss.item()), to_host(logits.grad)))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_cross_entropy_float_labels_raise_type_error(device):
    logits = minicnn.tensor(np.zeros((2, 3)), device=device)
    with pytest.raises(TypeError, match="cross_entropy"):
        F.cross_entropy(logits, minicnn.tensor(np.array([0.0, 1.0]), device=device))


def test_cross_entropy_labels_of_the_wrong_length_raise_shape_error(device):
    logits = minicnn.tensor(np.zeros((2, 3)), device=device)
    with pytest.raises(minicnn.ShapeError, match="cross_entropy"):
        F.cross_entropy(logits, labels_tensor([0, 1, 2], device))


def test_an_empty_batch_is_refused_rather_than_a_nan_loss(device):
    # Dense layers pass an empty batch on; the loss is where the mean over no sample would turn NaN.
    logits = minicnn.tensor(np.zeros((0, 3), dtype=np.float32), device=device)
    labels = minicnn.tensor(np.zeros(0, dtype=np.int64), device=device)
    with pytest.raises(minicnn.ShapeError, match=r"cross_entropy: the batch is empty \(logits \(0, 3\)\)"):
        F.cross_entropy(logits, labels)
