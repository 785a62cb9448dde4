"""Tests for minicnn.functional.pooling: max_pool2d and avg_pool2d."""

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
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(params=["fast", "reference"])
def path(request):
    """Run the test through the kernels' doors (fast paths) and through the references (kernels.reference_only())."""
    with contextlib.nullcontext() if request.param == "fast" else kernels.reference_only():
        yield request.param

POOLS = {"max_pool2d": F.max_pool2d, "avg_pool2d": F.avg_pool2d}


def as_pair_or_int(draw, h, w):
    """(h, w), or the int h when h == w and a coin says so: both spellings are part of the API."""
    return h if h == w and draw(st.booleans()) else (h, w)


@st.composite
def pool_cases(draw):
    """A pooling problem: padding at most kernel // 2, padded input at least as large as the window."""
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    PH, PW = draw(st.integers(0, min(2, KH // 2))), draw(st.integers(0, min(2, KW // 2)))
    H = draw(st.integers(max(1, KH - 2 * PH), max(1, KH - 2 * PH) + 3))
    W = draw(st.integers(max(1, KW - 2 * PW), max(1, KW - 2 * PW) + 3))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    if stride is not None:
        stride = as_pair_or_int(draw, *stride)
    return {
        "shape": (draw(st.integers(1, 3)), draw(st.integers(1, 8)), H, W),
        "kernel_size": as_pair_or_int(draw, KH, KW),
        "stride": stride,
        "padding": as_pair_or_int(draw, PH, PW),
        "seed": draw(st.integers(0, 2**16)),
    }


def distinct_values(shape, seed):
    """Tie-free input: a permutation of evenly spaced values in [-2, 2).

    The maximum is not differentiable where two elements tie, so max pooling is
    checked away from ties (Chainer's trick); neighbours differ by far more than eps.
    """
    size = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(size) / size * 4.0 - 2.0).reshape(shape)


def pool_args(case):
    return {"kernel_size": case["kernel_size"], "stride": case["stride"], "padding": case["padding"]}


def pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def naive_max_pool(x, kernel_size, stride, padding):
    """Maximum over the real elements of each window (padding taken as absent)."""
    (KH, KW), (PH, PW) = pair(kernel_size), pair(padding)
    SH, SW = pair(kernel_size if stride is None else stride)
    N, C, H, W = x.shape
    out_height, out_width = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    out = np.empty((N, C, out_height, out_width))
    for i in range(out_height):
        for j in range(out_width):
            top, left = i * SH - PH, j * SW - PW
            rows = slice(max(top, 0), min(top + KH, H))
            cols = slice(max(left, 0), min(left + KW, W))
            out[:, :, i, j] = x[:, :, rows, cols].max(axis=(2, 3))
    return out


# ----- gradients ---------------------------------------------------------------------------------


@CHECKS
@given(case=pool_cases())
def test_max_pool2d_gradcheck_on_tie_free_inputs(device, case):
    x = minicnn.tensor(distinct_values(case["shape"], case["seed"]), requires_grad=True, device=device)
    minicnn.gradcheck(lambda x: F.max_pool2d(x, **pool_args(case)), x)


@CHECKS
@given(case=pool_cases())
def test_avg_pool2d_gradcheck(device, case):
    x_array = np.random.default_rng(case["seed"]).standard_normal(case["shape"])
    x = minicnn.tensor(x_array, requires_grad=True, device=device)
    minicnn.gradcheck(lambda x: F.avg_pool2d(x, **pool_args(case)), x)


@CHECKS
@given(case=pool_cases())
def test_max_pool2d_forward_matches_naive_loop(path, device, case):
    x_array = np.random.default_rng(case["seed"]).standard_normal(case["shape"])
    out = F.max_pool2d(minicnn.tensor(x_array, device=device), **pool_args(case))
    expected = naive_max_pool(x_array, case["kernel_size"], case["stride"], case["padding"])
    assert out.shape == expected.shape
    np.testing.assert_array_equal(to_host(out), expected)


# ----- agreement with PyTorch --------------------------------------------------------------------


def compare_pool_with_torch(device, name, x_array, **args):
    torch = pytest.importorskip("torch")
    x = minicnn.tensor(x_array, requires_grad=True, device=device)
    out = POOLS[name](x, **args)
    x_torch = torch.tensor(x_array, requires_grad=True)
    expected = getattr(torch.nn.functional, name)(x_torch, **args)
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(to_host(out), expected.detach().numpy(), rtol=1e-12, atol=1e-14)

    weights = np.random.default_rng(5).standard_normal(tuple(expected.shape))
    (out * minicnn.tensor(weights, device=device)).sum().backward()
    (expected * torch.from_numpy(weights)).sum().backward()
    assert x.grad.shape == x.shape
    np.testing.assert_allclose(to_host(x.grad), x_torch.grad.numpy(), rtol=1e-12, atol=1e-14)


TORCH_CASES = [
    ((2, 3, 6, 6), {"kernel_size": 2}),  # stride defaults to the kernel size
    ((2, 3, 7, 5), {"kernel_size": 3, "stride": 2}),  # overlapping windows
    ((1, 2, 5, 6), {"kernel_size": 3, "stride": 1, "padding": 1}),  # overlapping and padded
    ((1, 2, 6, 7), {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0)}),
    ((2, 1, 5, 5), {"kernel_size": (4, 2), "stride": (3, 1), "padding": (2, 1)}),
    ((1, 1, 3, 3), {"kernel_size": 2, "stride": 2, "padding": 1}),  # every window partly padding
    ((1, 4, 4, 4), {"kernel_size": 4, "stride": 1}),  # a single window
]


@pytest.mark.parametrize("shape, args", TORCH_CASES)
def test_max_pool2d_matches_torch(path, device, shape, args):
    compare_pool_with_torch(device, "max_pool2d", distinct_values(shape, 11), **args)


@pytest.mark.parametrize("shape, args", TORCH_CASES)
def test_avg_pool2d_matches_torch_counting_padding(device, shape, args):
    """PyTorch's default count_include_pad=True: zero padding counts in each window's mean."""
    compare_pool_with_torch(device, "avg_pool2d", np.random.default_rng(11).standard_normal(shape), **args)


@CHECKS
@given(case=pool_cases(), name=st.sampled_from(sorted(POOLS)))
def test_pooling_matches_torch_on_random_shapes(device, case, name):
    compare_pool_with_torch(device, name, distinct_values(case["shape"], case["seed"]), **pool_args(case))


# ----- padding, ties, dtypes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, args",
    [
        ((1, 1, 3, 3), {"kernel_size": 2, "stride": 2, "padding": 1}),
        ((2, 2, 4, 5), {"kernel_size": 3, "stride": 1, "padding": 1}),
        ((1, 1, 1, 1), {"kernel_size": 2, "stride": 1, "padding": 1}),
    ],
)
def test_max_pool2d_pads_with_minus_infinity(path, device, shape, args):
    """With an all-negative input, a padded window's maximum is its largest real element, never the padding 0."""
    x_array = -1.0 - np.random.default_rng(2).random(shape)
    x = minicnn.tensor(x_array, requires_grad=True, device=device)
    out = F.max_pool2d(x, **args)
    assert (to_host(out) < 0).all()
    expected = naive_max_pool(x_array, args["kernel_size"], args["stride"], args["padding"])
    np.testing.assert_array_equal(to_host(out), expected)
    out.sum().backward()
    # Every window hands its gradient of 1 to a real element; none is lost to the padding.
    assert float(to_host(x.grad).sum()) == out.numel()


def test_max_pool2d_tie_sends_the_whole_gradient_to_the_first_maximum_in_row_major_order(path, device):
    """Tie rule: among equal maxima of a window, the top-left-first (row-major) one gets all the gradient."""
    x_array = np.array(
        [[[[1.0, 5.0, 2.0, 2.0],  # window 1: 5 at (0, 1) and (1, 0) -> (0, 1), which comes first row by row
           [5.0, 3.0, 2.0, 2.0],  # window 2: all equal -> its top-left element
           [7.0, 0.0, 0.0, 4.0],  # window 3: unique maximum
           [0.0, 7.0, 4.0, 4.0]]]]  # window 4: 4 at (2, 3), (3, 2), (3, 3) -> (2, 3)
    )
    x = minicnn.tensor(x_array, requires_grad=True, device=device)
    out = F.max_pool2d(x, kernel_size=2)
    np.testing.assert_array_equal(to_host(out)[0, 0], [[5.0, 2.0], [7.0, 4.0]])
    out.backward(minicnn.tensor(np.array([[[[10.0, 20.0], [30.0, 40.0]]]]), device=device))
    expected = np.array([[0.0, 10.0, 20.0, 0.0], [0.0, 0.0, 0.0, 0.0], [30.0, 0.0, 0.0, 40.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(to_host(x.grad)[0, 0], expected)


def test_max_pool2d_tie_rule_holds_in_overlapping_windows(path, device):
    """A constant image with stride 1: every window's gradient goes to that window's own top-left element."""
    x = minicnn.tensor(np.full((1, 1, 3, 3), 2.0), requires_grad=True, device=device)
    F.max_pool2d(x, kernel_size=2, stride=1).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad)[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_max_pool2d_nan_wins_its_window_and_takes_the_gradient_at_the_first_nan(path, device):
    """A NaN makes its window's maximum NaN; the gradient goes to the window's first NaN (argmax's choice)."""
    nan, inf = np.nan, np.inf
    x_array = np.array(
        [[[[1.0, nan, 2.0, 9.0],  # window 1: NaN at (0, 1) and (1, 1) -> (0, 1)
           [3.0, nan, nan, 0.0],  # window 2: a NaN after the maximum 9 -> the NaN at (1, 2)
           [-inf, -inf, 5.0, 5.0],  # window 3: all -inf -> the first one
           [-inf, -inf, nan, 5.0]]]]  # window 4: NaN at (3, 2) after the 5s
    )
    x = minicnn.tensor(x_array, requires_grad=True, device=device)
    out = F.max_pool2d(x, kernel_size=2)
    np.testing.assert_array_equal(to_host(out)[0, 0], [[nan, nan], [-inf, nan]])
    out.backward(minicnn.tensor(np.array([[[[10.0, 20.0], [30.0, 40.0]]]]), device=device))
    expected = np.array([[0.0, 10.0, 0.0, 0.0], [0.0, 0.0, 20.0, 0.0], [30.0, 0.0, 0.0, 0.0], [0.0, 0.0, 40.0, 0.0]])
    np.testing.assert_array_equal(to_host(x.grad)[0, 0], expected)


@pytest.mark.parametrize("name", sorted(POOLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_keeps_the_input_dtype_in_output_and_gradient(path, device, name, dtype):
    x = minicnn.tensor(distinct_values((2, 3, 5, 5), 4).astype(dtype), requires_grad=True, device=device)
    out = POOLS[name](x, kernel_size=3, stride=2, padding=1)
    assert out.dtype == dtype
    out.sum().backward()
    assert x.grad.dtype == dtype


# ----- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(POOLS))
@pytest.mark.parametrize(
    "kernel_size, padding", [(2, 2), (3, 2), (1, 1), ((4, 2), (1, 2)), ((2, 3), (2, 1))]
)
def test_pooling_padding_above_half_the_kernel_raises_value_error(device, name, kernel_size, padding):
    x = minicnn.tensor(np.zeros((1, 1, 6, 6)), device=device)
    with pytest.raises(ValueError, match=name):
        POOLS[name](x, kernel_size=kernel_size, padding=padding)


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pooling_padding_of_exactly_half_the_kernel_is_allowed(device, name):
    x = minicnn.tensor(np.ones((1, 1, 2, 2)), device=device)
    out = POOLS[name](x, kernel_size=2, stride=1, padding=1)
    assert out.shape == (1, 1, 3, 3)


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pooling_rejects_input_that_is_not_4d(device, name):
    x = minicnn.tensor(np.zeros((3, 4, 4)), device=device)
    with pytest.raises(minicnn.ShapeError, match=name):
        POOLS[name](x, kernel_size=2)


# ----- sizes checked before allocating, empty batches (issue 16) ------------------------------
@pytest.mark.parametrize("pool", ["max_pool2d", "avg_pool2d"])
def test_pooling_refuses_windows_past_the_memory_limit_and_empty_batches(pool):
    from minicnn import backend
    from minicnn.errors import ShapeError
    from minicnn.tensor import Tensor
    operation = getattr(F, pool)
    x = Tensor(np.zeros((16, 4, 32, 32), np.float32))  # 256 KiB
    backend.set_memory_limit(1 << 20)
    try:
        with pytest.raises(ShapeError) as caught:
            operation(x, kernel_size=200, stride=1, padding=100)  # padded (16, 4, 232, 232): 13 MiB
        assert pool in str(caught.value) and "(16, 4, 232, 232)" in str(caught.value)
        assert operation(x, kernel_size=2).shape == (16, 4, 16, 16)
    finally:
        backend.set_memory_limit(None)
    with pytest.raises(ShapeError, match=f"{pool}: the batch is empty"):
        operation(Tensor(np.zeros((0, 4, 8, 8), np.float32)), kernel_size=2)
