"""Tests for minicnn.functional.conv: conv2d, im2col and col2im."""

import contextlib

import numpy as np
import pytest
from conftest import to_host
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicnn
import minicnn.functional as F
from minicnn import kernels

# The `device` fixture only names a backend, so reusing it across Hypothesis examples is safe.
CHECKS = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(params=["fast", "reference"])
def path(request):
    """Run the test through the kernels' doors (fast paths) and through the references (kernels.reference_only())."""
    with contextlib.nullcontext() if request.param == "fast" else kernels.reference_only():
        yield request.param


def as_pair_or_int(draw, h, w):
    """(h, w), or the int h when h == w and a coin says so: both spellings are part of the API."""
    return h if h == w and draw(st.booleans()) else (h, w)


@st.composite
def conv_cases(draw):
    """A conv2d problem whose padded input always fits the (possibly non-square) kernel."""
    batch = draw(st.integers(1, 3))
    channels, filters = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    SH, SW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    PH, PW = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    H = draw(st.integers(max(1, KH - 2 * PH), max(1, KH - 2 * PH) + 3))
    W = draw(st.integers(max(1, KW - 2 * PW), max(1, KW - 2 * PW) + 3))
    return {
        "x_shape": (batch, channels, H, W),
        "w_shape": (filters, channels, KH, KW),
        "bias": draw(st.booleans()),
        "stride": as_pair_or_int(draw, SH, SW),
        "padding": as_pair_or_int(draw, PH, PW),
        "seed": draw(st.integers(0, 2**16)),
    }


@st.composite
def window_cases(draw):
    """An image shape, kernel, stride and padding for im2col/col2im (padded image fits the kernel)."""
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    PH, PW = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    H = draw(st.integers(max(1, KH - 2 * PH), max(1, KH - 2 * PH) + 4))
    W = draw(st.integers(max(1, KW - 2 * PW), max(1, KW - 2 * PW) + 4))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), H, W)
    stride = as_pair_or_int(draw, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return shape, (KH, KW), stride, as_pair_or_int(draw, PH, PW), draw(st.integers(0, 2**16))


def pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def conv_inputs(case, device, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = minicnn.tensor(rng.standard_normal(case["x_shape"]).astype(dtype), requires_grad=True, device=device)
    w = minicnn.tensor(rng.standard_normal(case["w_shape"]).astype(dtype), requires_grad=True, device=device)
    b = None
    if case["bias"]:
        b = minicnn.tensor(rng.standard_normal(case["w_shape"][0]).astype(dtype), requires_grad=True, device=device)
    return x, w, b


def naive_im2col(x, kernel_size, stride, padding):
    """One row per window, windows in (n, oh, ow) order, each row laid out as (C, KH, KW)."""
    (KH, KW), (SH, SW), (PH, PW) = pair(kernel_size), pair(stride), pair(padding)
    N, C, H, W = x.shape
    padded = np.zeros((N, C, H + 2 * PH, W + 2 * PW))
    padded[:, :, PH : PH + H, PW : PW + W] = x
    out_height, out_width = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    rows = []
    for n in range(N):
        for i in range(out_height):
            for j in range(out_width):
                rows.append(padded[n, :, i * SH : i * SH + KH, j * SW : j * SW + KW].reshape(-1))
    return np.array(rows).reshape(N * out_height * out_width, C * KH * KW)


# ----- gradients ---------------------------------------------------------------------------------


@CHECKS
@given(case=conv_cases())
def test_conv2d_gradcheck(device, case):
    x, w, b = conv_inputs(case, device)
    stride, padding = case["stride"], case["padding"]
    if b is None:
        errors = minicnn.gradcheck(lambda x, w: F.conv2d(x, w, stride=stride, padding=padding), x, w)
    else:
        errors = minicnn.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding), x, w, b)
    assert len(errors) == (2 if b is None else 3)


@CHECKS
@given(case=window_cases())
def test_im2col_matches_naive_loop(path, device, xp, case):
    shape, kernel_size, stride, padding, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    col = F.im2col(xp.asarray(x), kernel_size, stride, padding)
    expected = naive_im2col(x, kernel_size, stride, padding)
    assert col.shape == expected.shape
    np.testing.assert_array_equal(to_host(col), expected)


@CHECKS
@given(case=window_cases())
def test_col2im_is_the_adjoint_of_im2col(path, device, xp, case):
    """<im2col(x), c> == <x, col2im(c)> for every x and c: col2im sums overlapping windows back exactly."""
    shape, kernel_size, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    col_shape = naive_im2col(x, kernel_size, stride, padding).shape
    c = rng.standard_normal(col_shape)
    image = F.col2im(xp.asarray(c), shape, kernel_size, stride, padding)
    assert image.shape == shape
    lhs = float((naive_im2col(x, kernel_size, stride, padding) * c).sum())
    lhs_ours = float((to_host(F.im2col(xp.asarray(x), kernel_size, stride, padding)) * c).sum())
    rhs = float((x * to_host(image)).sum())
    assert lhs_ours == pytest.approx(lhs, rel=1e-12, abs=1e-12)
    assert rhs == pytest.approx(lhs, rel=1e-10, abs=1e-10)


def test_col2im_sums_overlapping_windows(path, device, xp):
    """With stride 1 and a 2x2 kernel, the centre of a 3x3 image lies in all four windows."""
    col = xp.ones((4, 4))  # 4 windows of one channel, 2x2 each
    image = to_host(F.col2im(col, (1, 1, 3, 3), 2, stride=1, padding=0))
    np.testing.assert_array_equal(image[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_and_col2im_keep_the_dtype(path, device, xp, dtype):
    x = xp.ones((2, 3, 5, 4), dtype=dtype)
    col = F.im2col(x, (3, 2), stride=(2, 1), padding=1)
    assert col.dtype == dtype and col.shape == (2 * 3 * 5, 3 * 3 * 2)
    assert F.col2im(col, x.shape, (3, 2), stride=(2, 1), padding=1).dtype == dtype


# ----- agreement with PyTorch --------------------------------------------------------------------


def compare_conv_with_torch(device, x_array, w_array, b_array, stride, padding):
    torch = pytest.importorskip("torch")
    ours = [minicnn.tensor(a, requires_grad=True, device=device) for a in (x_array, w_array, b_array) if a is not None]
    out = F.conv2d(*ours[:2], ours[2] if len(ours) == 3 else None, stride=stride, padding=padding)
    theirs = [torch.tensor(a, requires_grad=True) for a in (x_array, w_array, b_array) if a is not None]
    expected = torch.nn.functional.conv2d(
        theirs[0], theirs[1], theirs[2] if len(theirs) == 3 else None, stride=stride, padding=padding
    )
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(to_host(out), expected.detach().numpy(), rtol=1e-10, atol=1e-12)

    weights = np.random.default_rng(7).standard_normal(tuple(expected.shape))
    (out * minicnn.tensor(weights, device=device)).sum().backward()
    (expected * torch.from_numpy(weights)).sum().backward()
    for name, mine, reference in zip(("x", "weight", "bias"), ours, theirs):
        assert mine.grad.shape == mine.shape
        np.testing.assert_allclose(
            to_host(mine.grad), reference.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"gradient of {name}"
        )


@pytest.mark.parametrize(
    "x_shape, w_shape, bias, stride, padding",
    [
        ((2, 3, 7, 6), (4, 3, 3, 2), True, 1, 0),
        ((2, 3, 7, 6), (4, 3, 3, 3), True, 2, 1),
        ((1, 2, 8, 5), (3, 2, 3, 3), False, (1, 2), (2, 0)),
        ((3, 1, 6, 9), (2, 1, 2, 4), True, (3, 1), (0, 1)),
        ((1, 4, 5, 5), (5, 4, 1, 1), False, 2, 0),
        ((2, 2, 4, 4), (3, 2, 4, 4), True, (2, 2), (2, 2)),
    ],
)
def test_conv2d_matches_torch(path, device, x_shape, w_shape, bias, stride, padding):
    rng = np.random.default_rng(0)
    b_array = rng.standard_normal(w_shape[0]) if bias else None
    x_array, w_array = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    compare_conv_with_torch(device, x_array, w_array, b_array, stride, padding)


@CHECKS
@given(case=conv_cases())
def test_conv2d_matches_torch_on_random_shapes(device, case):
    rng = np.random.default_rng(case["seed"])
    b_array = rng.standard_normal(case["w_shape"][0]) if case["bias"] else None
    x_array, w_array = rng.standard_normal(case["x_shape"]), rng.standard_normal(case["w_shape"])
    compare_conv_with_torch(device, x_array, w_array, b_array, case["stride"], case["padding"])


# ----- dtypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_keeps_the_input_dtype_in_output_and_gradients(path, device, dtype):
    case = {"x_shape": (2, 3, 5, 4), "w_shape": (2, 3, 2, 2), "bias": True, "seed": 3}
    x, w, b = conv_inputs(case, device, dtype)
    out = F.conv2d(x, w, b, stride=1, padding=1)
    assert out.dtype == dtype
    out.sum().backward()
    for tensor in (x, w, b):
        assert tensor.grad.dtype == dtype


# ----- errors ------------------------------------------------------------------------------------


def assert_shape_error_names(excinfo, *shapes):
    message = str(excinfo.value)
    assert "conv2d" in message
    for shape in shapes:
        assert str(tuple(shape)) in message, f"{shape} missing from {message!r}"


def test_conv2d_channel_mismatch_raises_shape_error_naming_both_shapes(device):
    x = minicnn.tensor(np.zeros((1, 3, 5, 5)), device=device)
    w = minicnn.tensor(np.zeros((2, 4, 3, 3)), device=device)
    with pytest.raises(minicnn.ShapeError) as excinfo:
        F.conv2d(x, w)
    assert_shape_error_names(excinfo, x.shape, w.shape)


@pytest.mark.parametrize(
    "x_shape, w_shape",
    [((3, 5, 5), (2, 3, 3, 3)), ((1, 1, 3, 5, 5), (2, 3, 3, 3)), ((1, 3, 5, 5), (3, 3, 3)), ((1, 3, 5, 5), (2, 3, 3))],
    ids=["input-3d", "input-5d", "weight-3d", "weight-3d-no-filters"],
)
def test_conv2d_wrong_ndim_raises_shape_error_naming_both_shapes(device, x_shape, w_shape):
    x = minicnn.tensor(np.zeros(x_shape), device=device)
    w = minicnn.tensor(np.zeros(w_shape), device=device)
    with pytest.raises(minicnn.ShapeError) as excinfo:
        F.conv2d(x, w)
    assert_shape_error_names(excinfo, x_shape, w_shape)


@pytest.mark.parametrize(
    "x_shape, w_shape, padding",
    [((1, 1, 3, 3), (1, 1, 4, 4), 0), ((1, 1, 2, 6), (1, 1, 5, 2), 1), ((2, 2, 6, 1), (1, 2, 1, 4), (0, 1))],
)
def test_conv2d_kernel_larger_than_padded_input_raises_shape_error(device, x_shape, w_shape, padding):
    x = minicnn.tensor(np.zeros(x_shape), device=device)
    w = minicnn.tensor(np.zeros(w_shape), device=device)
    with pytest.raises(minicnn.ShapeError) as excinfo:
        F.conv2d(x, w, padding=padding)
    assert_shape_error_names(excinfo, x_shape, w_shape)


def test_conv2d_kernel_exactly_filling_the_padded_input_is_allowed(device):
    x = minicnn.tensor(np.ones((1, 1, 2, 2)), device=device)
    w = minicnn.tensor(np.ones((1, 1, 4, 4)), device=device)
    out = F.conv2d(x, w, padding=1)
    assert out.shape == (1, 1, 1, 1)
    assert float(to_host(out).item()) == 4.0


# ----- sizes checked before allocating, empty batches (issue 16) ------------------------------
@pytest.fixture
def small_memory_limit():
    from minicnn import backend
    backend.set_memory_limit(64 << 20)  # 64 MiB
    yield 64 << 20
    backend.set_memory_limit(None)


@pytest.mark.parametrize("fast", [True, False])
def test_conv2d_refuses_padding_whose_columns_would_not_fit(small_memory_limit, fast):
    import contextlib
    from minicnn import kernels
    from minicnn.errors import ShapeError
    from minicnn.tensor import Tensor
    x = Tensor(np.zeros((64, 1, 28, 28), np.float32))
    weight = Tensor(np.zeros((8, 1, 3, 3), np.float32))
    with contextlib.nullcontext() if fast else kernels.reference_only():
        with pytest.raises(ShapeError) as caught:
            F.conv2d(x, weight, padding=2000)
    message = str(caught.value)
    assert "conv2d" in message and "(64, 1, 28, 28)" in message and "(64, 1, 4028, 4028)" in message
    padded, columns = 64 * 4028 * 4028 * 4, 64 * 4026 * 4026 * 9 * 4  # OH = OW = 28 + 4000 - 3 + 1
    assert str(padded + columns) in message and str(small_memory_limit) in message
    assert F.conv2d(x, weight, padding=1).shape == (64, 8, 28, 28)  # 1 MiB of columns: fine


def test_empty_batch_is_refused_by_conv2d():
    from minicnn.errors import ShapeError
    from minicnn.tensor import Tensor
    with pytest.raises(ShapeError, match=r"conv2d: the batch is empty \(input shape \(0, 3, 8, 8\)\)"):
        F.conv2d(Tensor(np.zeros((0, 3, 8, 8), np.float32)), Tensor(np.zeros((4, 3, 3, 3), np.float32)))


def test_set_memory_limit_checks_its_argument():
    from minicnn import backend
    for bad in (0, -1, 1.5, True, "1G"):
        with pytest.raises(ValueError):
            backend.set_memory_limit(bad)
    assert backend.memory_limit() > 0
