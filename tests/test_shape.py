"""reshape, transpose, indexing and flatten (functional/shape.py)."""

import numpy as np
import pytest

import minicnn
import minicnn.functional as F
from conftest import to_host


def _values(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----- reshape -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, expected_shape",
    [
        (lambda t: t.reshape(6, 4), (6, 4)),
        (lambda t: t.reshape((4, 6)), (4, 6)),
        (lambda t: t.reshape([3, 8]), (3, 8)),
        (lambda t: t.reshape(-1), (24,)),
        (lambda t: t.reshape(2, -1), (2, 12)),
        (lambda t: t.reshape((-1, 3, 2)), (4, 3, 2)),
        (lambda t: F.reshape(t, 4, 3, 2), (4, 3, 2)),
    ],
    ids=["ints", "tuple", "list", "-1", "2,-1", "tuple-1", "functional"],
)
def test_reshape(device, call, expected_shape):
    values = _values((2, 3, 4))
    x = minicnn.tensor(values, requires_grad=True, device=device)
    out = call(x)
    assert out.shape == expected_shape
    np.testing.assert_array_equal(to_host(out), values.reshape(expected_shape))
    minicnn.gradcheck(call, x)


def test_reshape_gradient_has_input_shape(device):
    x = minicnn.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True, device=device)
    weights = minicnn.tensor(np.arange(6.0).reshape(3, 2), device=device)
    (x.reshape(3, 2) * weights).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), np.arange(6.0).reshape(2, 3))


def test_reshape_to_incompatible_shape_raises_shape_error(device):
    x = minicnn.tensor(np.ones((2, 3)), device=device)
    with pytest.raises(minicnn.ShapeError, match=r"\(2, 3\)"):
        x.reshape(4, 2)
    with pytest.raises(ValueError):  # ShapeError is a ValueError
        x.reshape(-1, 4)


# ----- transpose -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, numpy_call",
    [
        (lambda t: t.transpose(), lambda a: a.transpose()),
        (lambda t: t.T, lambda a: a.T),
        (lambda t: t.transpose(1, 0, 2), lambda a: a.transpose(1, 0, 2)),
        (lambda t: t.transpose((2, 0, 1)), lambda a: a.transpose(2, 0, 1)),
        (lambda t: t.transpose(-1, 0, 1), lambda a: a.transpose(-1, 0, 1)),
        (lambda t: F.transpose(t, 0, 2, 1), lambda a: a.transpose(0, 2, 1)),
    ],
    ids=["default", ".T", "ints", "tuple", "negative", "functional"],
)
def test_transpose(device, call, numpy_call):
    values = _values((2, 3, 4), seed=1)
    x = minicnn.tensor(values, requires_grad=True, device=device)
    out = call(x)
    expected = numpy_call(values)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(to_host(out), expected)
    minicnn.gradcheck(call, x)


def test_transpose_gradient_is_permuted_back(device):
    x = minicnn.tensor(np.zeros((2, 3, 4)), requires_grad=True, device=device)
    weights = np.arange(24.0).reshape(4, 2, 3)
    (x.transpose(2, 0, 1) * minicnn.tensor(weights, device=device)).sum().backward()
    assert x.grad.shape == (2, 3, 4)
    np.testing.assert_array_equal(to_host(x.grad), weights.transpose(1, 2, 0))


# ----- indexing ------------------------------------------------------------------------------------
BASIC_INDICES = [
    1,
    -1,
    (0, 2),
    (1, -1, 3),
    slice(0, 1),
    (slice(None), 1),
    (slice(None), slice(1, 3), slice(None, None, 2)),
    (slice(None, None, -1), slice(None, None, -2)),
    (Ellipsis, slice(3, 0, -1)),
    (None, 0),
]


@pytest.mark.parametrize("index", BASIC_INDICES, ids=str)
def test_basic_indexing(device, index):
    values = _values((2, 3, 4), seed=2)
    x = minicnn.tensor(values, requires_grad=True, device=device)
    out = x[index]
    expected = values[index]
    assert out.shape == expected.shape
    np.testing.assert_array_equal(to_host(out), expected)
    minicnn.gradcheck(lambda t: t[index], x)


def test_basic_index_gradient_is_zero_outside_the_selection(device):
    x = minicnn.tensor(np.ones((3, 4)), requires_grad=True, device=device)
    (x[1:, ::-2] * 5).sum().backward()
    expected = np.zeros((3, 4))
    expected[1:, ::-2] = 5
    np.testing.assert_array_equal(to_host(x.grad), expected)


def test_fancy_index_with_repeats_accumulates_gradient(device):
    x = minicnn.tensor(np.arange(8.0).reshape(4, 2), requires_grad=True, device=device)
    out = x[[0, 2, 0, 0]]
    np.testing.assert_array_equal(to_host(out), np.arange(8.0).reshape(4, 2)[[0, 2, 0, 0]])
    out.sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [[3, 3], [0, 0], [1, 1], [0, 0]])
    minicnn.gradcheck(lambda t: t[[0, 2, 0, 0]], x)


def test_integer_tensor_index_with_repeats(device):
    values = _values((5,), seed=3)
    x = minicnn.tensor(values, requires_grad=True, device=device)
    index = minicnn.tensor([4, 1, 4], device=device)
    out = x[index]
    np.testing.assert_array_equal(to_host(out), values[[4, 1, 4]])
    (out * minicnn.tensor(np.array([1.0, 2.0, 3.0]), device=device)).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [0, 2, 0, 0, 4])


def test_paired_fancy_index_with_repeats(device):
    x = minicnn.tensor(np.zeros((3, 3)), requires_grad=True, device=device)
    rows, cols = [0, 1, 0], [2, 1, 2]
    x[rows, cols].sum().backward()
    expected = np.zeros((3, 3))
    expected[0, 2], expected[1, 1] = 2, 1
    np.testing.assert_array_equal(to_host(x.grad), expected)


def test_boolean_mask_index(device, xp):
    values = _values((3, 4), seed=4)
    mask = values > 0
    x = minicnn.tensor(values, requires_grad=True, device=device)
    out = x[xp.asarray(mask)]
    np.testing.assert_array_equal(to_host(out), values[mask])
    (out * 2).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), np.where(mask, 2.0, 0.0))
    minicnn.gradcheck(lambda t: t[xp.asarray(mask)], x)


# ----- flatten -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, expected", [((2, 3, 4), (2, 12)), ((3, 2, 2, 2), (3, 8)), ((4, 5), (4, 5))])
def test_flatten_keeps_batch_axis(device, shape, expected):
    values = _values(shape, seed=5)
    x = minicnn.tensor(values, requires_grad=True, device=device)
    for out in (F.flatten(x), x.flatten()):
        assert out.shape == expected
        np.testing.assert_array_equal(to_host(out), values.reshape(expected))
    minicnn.gradcheck(F.flatten, x)


def test_flatten_of_scalar_raises_shape_error(device):
    with pytest.raises(minicnn.ShapeError):
        F.flatten(minicnn.tensor(1.0, device=device))
