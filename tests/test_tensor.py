"""Tensor construction, conversion, operators with Python scalars, and backward's graph rules (tensor.py)."""

import gc
import math
import weakref

import numpy as np
import pytest

import minicnn
from conftest import to_host


# ----- construction ---------------------------------------------------------------------------
def test_numpy_float64_array_keeps_float64(device):
    t = minicnn.tensor(np.array([1.5, 2.5], dtype=np.float64), device=device)
    assert t.dtype == np.float64
    np.testing.assert_array_equal(to_host(t), [1.5, 2.5])


def test_numpy_float32_array_keeps_float32(device):
    assert minicnn.tensor(np.ones((2, 2), dtype=np.float32), device=device).dtype == np.float32


def test_python_float_becomes_float32(device):
    t = minicnn.tensor(2.5, device=device)
    assert t.dtype == np.float32
    assert t.shape == ()
    assert t.item() == 2.5


def test_list_of_floats_becomes_float32(device):
    t = minicnn.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    assert t.dtype == np.float32
    assert t.shape == (2, 2)


def test_list_of_ints_stays_integer(device):
    t = minicnn.tensor([0, 3, 1], device=device)
    assert t.dtype.kind == "i"
    np.testing.assert_array_equal(to_host(t), [0, 3, 1])


def test_integer_data_cannot_require_grad(device):
    with pytest.raises(TypeError, match="floating"):
        minicnn.tensor([1, 2, 3], requires_grad=True, device=device)
    with pytest.raises(TypeError):
        minicnn.Tensor(np.arange(3), requires_grad=True)


def test_dtype_argument_converts(device):
    assert minicnn.tensor([1, 2], dtype=np.float64, device=device).dtype == np.float64
    assert minicnn.tensor(np.ones(2, dtype=np.float64), dtype=np.float32, device=device).dtype == np.float32
    # An integer list converted to a floating dtype may then require grad.
    t = minicnn.tensor([1, 2], dtype=np.float32, requires_grad=True, device=device)
    assert t.requires_grad and t.dtype == np.float32


def test_device_attribute(device):
    assert minicnn.tensor([1.0], device=device).device == device
    assert minicnn.Tensor(np.zeros(2)).device == "cpu"
    minicnn.set_default_device("cpu")  # without device=, tensors go to the default device
    assert minicnn.tensor([1.0]).device == "cpu"


def test_tensor_constructor_keeps_array_and_flag():
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = minicnn.Tensor(array, requires_grad=True)
    assert t.shape == (2, 3) and t.dtype == np.float64 and t.requires_grad
    assert t.grad is None and t.creator is None


# ----- conversion -----------------------------------------------------------------------------
def test_numpy_returns_a_copy(device):
    t = minicnn.tensor(np.array([1.0, 2.0, 3.0]), device=device)
    host = t.numpy()
    assert isinstance(host, np.ndarray)
    host[0] = 100.0
    np.testing.assert_array_equal(to_host(t), [1.0, 2.0, 3.0])


def test_numpy_on_cpu_does_not_share_the_input_array():
    array = np.array([1.0, 2.0])
    t = minicnn.tensor(array, device="cpu")
    t.numpy()[1] = -5.0
    assert array[1] == 2.0 and t.data[1] == 2.0


def test_to_cpu(device):
    t = minicnn.tensor(np.array([[1.0, 2.0]]), device=device)
    moved = t.to("cpu")
    assert moved.device == "cpu"
    assert isinstance(moved.data, np.ndarray)
    np.testing.assert_array_equal(moved.data, [[1.0, 2.0]])
    assert moved.to("cpu") is moved  # already there: no copy


def test_item(device):
    value = minicnn.tensor(np.array([[3.25]]), device=device).item()
    assert value == 3.25 and isinstance(value, float)
    assert minicnn.tensor([7], device=device).item() == 7
    with pytest.raises(ValueError, match="one element"):
        minicnn.tensor([1.0, 2.0], device=device).item()


# ----- operators with Python scalars ------------------------------------------------------------
X_VALUES = np.array([0.5, 1.0, 2.0, 3.0])

SCALAR_CASES = [
    # (name, function, expected value, expected derivative) elementwise in x
    ("2 - x", lambda x: 2 - x, lambda v: 2 - v, lambda v: -np.ones_like(v)),
    ("x - 2", lambda x: x - 2, lambda v: v - 2, lambda v: np.ones_like(v)),
    ("2 + x", lambda x: 2 + x, lambda v: 2 + v, lambda v: np.ones_like(v)),
    ("3 * x", lambda x: 3 * x, lambda v: 3 * v, lambda v: 3 * np.ones_like(v)),
    ("2 / x", lambda x: 2 / x, lambda v: 2 / v, lambda v: -2 / v**2),
    ("x / 4", lambda x: x / 4, lambda v: v / 4, lambda v: np.full_like(v, 0.25)),
    ("x ** 2", lambda x: x**2, lambda v: v**2, lambda v: 2 * v),
    ("x ** 0.5", lambda x: x**0.5, lambda v: v**0.5, lambda v: 0.5 * v**-0.5),
    ("2 ** x", lambda x: 2**x, lambda v: 2.0**v, lambda v: 2.0**v * math.log(2.0)),
    ("-x", lambda x: -x, lambda v: -v, lambda v: -np.ones_like(v)),
]


@pytest.mark.parametrize("name, fn, value, derivative", SCALAR_CASES, ids=[case[0] for case in SCALAR_CASES])
def test_operators_with_python_scalars(device, name, fn, value, derivative):
    x = minicnn.tensor(X_VALUES, requires_grad=True, device=device)
    out = fn(x)
    assert isinstance(out, minicnn.Tensor)
    assert out.dtype == np.float64
    np.testing.assert_allclose(to_host(out), value(X_VALUES), rtol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(to_host(x.grad), derivative(X_VALUES), rtol=1e-12)


def test_scalar_operand_keeps_float32(device):
    x = minicnn.tensor([1.0, 2.0], device=device)
    assert (2 - x).dtype == np.float32
    assert (x * 0.5).dtype == np.float32
    assert (2 ** x).dtype == np.float32


def test_numpy_array_on_the_left_defers_to_tensor():
    x = minicnn.tensor(np.array([1.0, 2.0]), requires_grad=True, device="cpu")
    out = np.array([3.0, 4.0]) * x
    assert isinstance(out, minicnn.Tensor)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_view_is_reshape_as_pytorch_spells_it(device):
    """x.view(-1, 16 * 4 * 4) from the PyTorch tutorial: one -1 entry, shape as ints or a tuple."""
    values = np.arange(2 * 16 * 4 * 4, dtype=np.float64).reshape(2, 16, 4, 4)
    x = minicnn.tensor(values, requires_grad=True, device=device)
    flat = x.view(-1, 16 * 4 * 4)
    assert flat.shape == (2, 256)
    np.testing.assert_array_equal(to_host(flat), values.reshape(2, 256))
    assert x.view((4, -1)).shape == (4, 128)
    weights = np.random.default_rng(0).standard_normal((2, 256))
    (flat * minicnn.tensor(weights, device=device)).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), weights.reshape(values.shape))
    with pytest.raises(minicnn.ShapeError, match="reshape"):
        x.view(3, -1)


def test_every_operator_comes_from_the_one_table():
    """Tensor's operators are attached in one place (functional/tensor_methods.py) and nowhere else."""
    from minicnn.functional.tensor_methods import TENSOR_METHODS

    names = [name for name, _ in TENSOR_METHODS]
    assert len(names) == len(set(names))
    for name, function in TENSOR_METHODS:
        assert minicnn.Tensor.__dict__[name] is function, name
    for name in ("__add__", "__matmul__", "__getitem__", "__eq__", "reshape", "view", "T", "sum", "argmax"):
        assert name in names


# ----- gradient accumulation ------------------------------------------------------------------------
def test_gradients_accumulate_across_backward_calls(device):
    x = minicnn.tensor(np.array([1.0, -2.0]), requires_grad=True, device=device)
    (x * 2).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [2.0, 2.0])
    (x * x).sum().backward()  # a separate graph: adds 2x
    np.testing.assert_array_equal(to_host(x.grad), [4.0, -2.0])


def test_tensor_used_twice_gets_summed_gradient(device):
    values = np.array([0.5, -1.5, 3.0])
    x = minicnn.tensor(values, requires_grad=True, device=device)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), 2 * values + 1)


def test_diamond_graph_gradient(device):
    # h feeds two branches that meet again: its gradient must be the sum of both paths.
    values = np.array([1.0, 2.0])
    x = minicnn.tensor(values, requires_grad=True, device=device)
    h = x * 3
    (h * 2 + h * h).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), 3 * (2 + 2 * 3 * values))


def test_leaf_grads_are_separate_arrays(device):
    # Add hands one gradient array to both inputs; each leaf must still own its .grad.
    a = minicnn.tensor(np.zeros(2), requires_grad=True, device=device)
    b = minicnn.tensor(np.zeros(2), requires_grad=True, device=device)
    (a + b).sum().backward()
    a.grad[0] = 100.0
    np.testing.assert_array_equal(to_host(b.grad), [1.0, 1.0])


def test_leaf_without_requires_grad_gets_no_grad(device):
    x = minicnn.tensor(np.array([1.0, 2.0]), requires_grad=True, device=device)
    c = minicnn.tensor(np.array([5.0, 6.0]), device=device)
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(to_host(x.grad), [5.0, 6.0])


# ----- no_grad ------------------------------------------------------------------------------------
def test_no_grad_records_no_graph(device):
    x = minicnn.tensor(np.array([1.0, 2.0]), requires_grad=True, device=device)
    with minicnn.no_grad():
        assert not minicnn.is_grad_enabled()
        y = x * 2 + 1
    assert y.requires_grad is False
    assert y.creator is None
    np.testing.assert_array_equal(to_host(y), [3.0, 5.0])
    assert minicnn.is_grad_enabled()
    z = x * 2
    assert z.requires_grad and z.creator is not None


def test_no_grad_restores_state_after_exception(device):
    x = minicnn.tensor(np.array([1.0]), requires_grad=True, device=device)
    with pytest.raises(ZeroDivisionError):
        with minicnn.no_grad():
            raise ZeroDivisionError
    assert minicnn.is_grad_enabled()
    assert (x * 2).requires_grad


def test_nested_no_grad_restores_outer_state():
    with minicnn.no_grad():
        with minicnn.no_grad():
            pass
        assert not minicnn.is_grad_enabled()
    assert minicnn.is_grad_enabled()


# ----- graph release ---------------------------------------------------------------------------------
def test_backward_releases_intermediate_tensors(device):
    x = minicnn.tensor(np.ones((3, 4)), requires_grad=True, device=device)
    hidden = (x * 2).exp()
    loss = (hidden * 3).sum()
    hidden_ref = weakref.ref(hidden)
    del hidden
    gc.collect()
    assert hidden_ref() is not None  # the graph still holds it before backward
    loss.backward()
    gc.collect()
    assert hidden_ref() is None
    np.testing.assert_allclose(to_host(x.grad), np.full((3, 4), 6 * np.exp(2.0)))


def test_second_backward_without_retain_graph_raises(device):
    x = minicnn.tensor(np.array([1.0, 2.0]), requires_grad=True, device=device)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_retain_graph_allows_second_backward(device):
    x = minicnn.tensor(np.array([1.0, 2.0]), requires_grad=True, device=device)
    hidden = x * x
    loss = (hidden * 3).sum()
    hidden_ref = weakref.ref(hidden)
    del hidden
    loss.backward(retain_graph=True)
    gc.collect()
    assert hidden_ref() is not None
    loss.backward()
    np.testing.assert_allclose(to_host(x.grad), 2 * 6 * np.array([1.0, 2.0]))


def test_deep_chain_backpropagates_without_recursion_error():
    # 100,000 operations in one chain; recursion (depth ~1000) would fail long before.
    x = minicnn.tensor(np.array([2.0]), requires_grad=True, device="cpu")
    y = x
    for _ in range(50_000):
        y = y * 1.0 + x
    y.sum().backward()
    assert y.item() == 2.0 * 50_001
    np.testing.assert_array_equal(x.grad, [50_001.0])


# ----- backward errors and retain_grad ------------------------------------------------------------------
def test_backward_on_non_scalar_without_grad_names_shape(device):
    x = minicnn.tensor(np.ones((2, 3)), requires_grad=True, device=device)
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        (x * 2).backward()


def test_backward_on_tensor_without_grad_raises(device):
    x = minicnn.tensor(np.ones(3), device=device)
    with pytest.raises(RuntimeError, match="does not require grad"):
        (x * 2).sum().backward()


def test_backward_with_explicit_grad(device):
    x = minicnn.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True, device=device)
    y = x * x
    y.backward(minicnn.tensor(np.array([1.0, 0.5, -1.0]), device=device))
    np.testing.assert_allclose(to_host(x.grad), [2.0, 2.0, -6.0])


def test_backward_with_wrong_grad_shape_raises(device):
    x = minicnn.tensor(np.ones((2, 3)), requires_grad=True, device=device)
    y = x * 2
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        y.backward(minicnn.tensor(np.ones((3, 2)), device=device))


def test_retain_grad_keeps_intermediate_grad(device):
    values = np.array([1.0, -2.0])
    x = minicnn.tensor(values, requires_grad=True, device=device)
    kept = (x * 3).retain_grad()
    dropped = x * 3
    (kept * kept).sum().backward()
    (dropped * dropped).sum().backward()
    np.testing.assert_allclose(to_host(kept.grad), 2 * 3 * values)
    assert dropped.grad is None
    np.testing.assert_allclose(to_host(x.grad), 2 * (2 * 9 * values))
