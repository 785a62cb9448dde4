"""minicnn.kernels: every fast path against its reference in minicnn.functional, and the doors to them.

The doors: each operation asks its door once per phase, every door answers None
under `kernels.reference_only()` and MINICNN_FAST=0, and then the results are the
references' to the bit. The fast paths, three ways:
- the fast paths of cpu_windows (NumPy layouts and loops) and the convolution's
  doors on every backend present, against the references run under
  `kernels.reference_only()`;
- the CuPy kernel text (windows.cu) compiled for the CPU with a C compiler (a plain
  loop in place of CUDA's grid-stride loop), so its index arithmetic is checked on
  every machine with `cc`;
- on a GPU, the CuPy kernels themselves against the references on the same arrays.
The window modules' functions are called directly, so these tests check them under MINICNN_FAST=0 too.
"""

import contextlib
import ctypes
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import AVAILABLE_DEVICES, to_host
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicnn
import minicnn.functional as F
from minicnn import backend, kernels
from minicnn.functional import conv, pooling
from minicnn.windows import output_shape
from minicnn.kernels import cpu_layout, cpu_windows, cupy_windows

CPU_PRELUDE = "#define KERNEL\n#define LOOP(i, n) for (long long i = 0; i < (n); ++i)\n"
C_TYPES = {np.float32: ("float", ctypes.c_float), np.float64: ("double", ctypes.c_double)}
# The `device` fixture only names a backend, so reusing it across Hypothesis examples is safe.
CHECKS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
needs_gpu = pytest.mark.skipif("gpu" not in AVAILABLE_DEVICES, reason="needs CuPy and a CUDA GPU")
needs_fast_paths = pytest.mark.skipif(os.environ.get("MINICNN_FAST", "1") == "0",
                                      reason="the fast paths are off (MINICNN_FAST=0)")


@st.composite
def window_cases(draw, pooling_case=False):
    """A batch shape, kernel, stride, padding (at most kernel // 2 for pooling) whose padded image fits the kernel,
    a dtype and a seed."""
    KH, KW = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    limit_h, limit_w = (KH // 2, KW // 2) if pooling_case else (2, 2)
    PH, PW = draw(st.integers(0, limit_h)), draw(st.integers(0, limit_w))
    H = draw(st.integers(max(1, KH - 2 * PH), KH + 6))
    W = draw(st.integers(max(1, KW - 2 * PW), KW + 6))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), H, W)
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return shape, (KH, KW), stride, (PH, PW), draw(st.sampled_from([np.float32, np.float64])), draw(st.integers(0, 999))


def tolerance(dtype):
    """Sums taken in another order: a few units in the last place."""
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def pool_input(shape, dtype, seed):
    """Values on a coarse grid (many ties), with a sprinkling of -inf and NaN."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(dtype)
    x[rng.random(shape) < 0.05] = -np.inf
    x[rng.random(shape) < 0.03] = np.nan
    return x


def reference_max_pool(x, kernel_size, stride, padding):
    """(pooled, argmax, the operation) from functional.pooling's reference."""
    operation = pooling.MaxPool2dOp(kernel_size, stride, padding)
    with kernels.reference_only():
        pooled = operation.forward(x)
    return pooled, operation.argmax, operation


# ----- the switch ---------------------------------------------------------------------------------


DOORS = ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "im2col", "col2im", "relu",
         "relu_backward")


def door_calls():
    """{door name: arguments}: one small call of every door of minicnn.kernels, on NumPy arrays."""
    x, weight = np.ones((1, 1, 4, 4)), np.ones((2, 1, 2, 2))
    geometry = ((2, 2), (1, 1), (0, 0), (3, 3))
    grad, first_max = np.ones((1, 1, 3, 3)), np.zeros((1, 1, 3, 3), dtype=np.uint8)
    return {
        "conv2d": (x, weight, np.ones(2), (1, 1), (0, 0), (3, 3)),
        "conv2d_backward": (np.ones((1, 2, 3, 3)), weight, np.ones((9, 4)), x.shape, (1, 1), (0, 0),
                            (True, True, True)),
        "max_pool2d": (x, *geometry),
        "max_pool2d_backward": (grad, first_max, x.shape, *geometry[:3]),
        "im2col": (x, *geometry),
        "col2im": (np.ones((9, 4)), x.shape, *geometry),
        "relu": (x,),
        "relu_backward": (x, x > 0),
    }


def test_reference_only_closes_every_door_and_opens_them_again():
    calls = door_calls()
    assert sorted(calls) == sorted(DOORS)
    with kernels.reference_only():
        assert {name: getattr(kernels, name)(*args) for name, args in calls.items()} == dict.fromkeys(DOORS)
    if os.environ.get("MINICNN_FAST", "1") != "0":
        assert [name for name, args in calls.items() if getattr(kernels, name)(*args) is None] == []


def engine_results():
    """conv2d (with a bias) and max_pool2d, forward and backward, on fixed float32 inputs: a list of arrays."""
    rng = np.random.default_rng(4)
    x = minicnn.tensor(rng.standard_normal((3, 2, 9, 8)).astype(np.float32), requires_grad=True)
    weight = minicnn.tensor(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), requires_grad=True)
    bias = minicnn.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    out = F.conv2d(x, weight, bias, stride=(2, 1), padding=1)
    pooled = F.max_pool2d(out, 3, 2, 1)
    (pooled * pooled).sum().backward()
    return [to_host(array) for array in (out, pooled, x.grad, weight.grad, bias.grad)]


def test_minicnn_fast_0_in_the_environment_runs_the_references(tmp_path):
    """With MINICNN_FAST=0 every door answers None and the results are the references' to the bit."""
    script = (
        "import sys, numpy as np\n"
        "sys.path.insert(0, 'tests')\n"
        "from minicnn import kernels\n"
        "import test_kernels\n"
        "doors = [getattr(kernels, name)(*args) for name, args in test_kernels.door_calls().items()]\n"
        "print(all(answer is None for answer in doors))\n"
        "np.savez(sys.argv[1], *test_kernels.engine_results())\n"
    )
    root = pathlib.Path(__file__).resolve().parents[1]  # this checkout's minicnn, not an installed one
    saved = tmp_path / "results.npz"
    result = subprocess.run([sys.executable, "-c", script, str(saved)], capture_output=True, text=True, check=True,
                            cwd=root, env={**os.environ, "MINICNN_FAST": "0", "PYTHONPATH": str(root)})
    with np.load(saved) as loaded:
        from_environment = [loaded[f"arr_{index}"] for index in range(len(loaded.files))]
    assert result.stdout == "True\n"
    with kernels.reference_only():
        references = engine_results()
    assert len(from_environment) == len(references) == 5
    for got, expected in zip(from_environment, references):
        assert got.tobytes() == expected.tobytes()


class DoorCounter:
    """Wraps every door of minicnn.kernels to count its calls (monkeypatch undoes it)."""

    def __init__(self, monkeypatch):
        self.calls = []
        for name in DOORS:
            monkeypatch.setattr(kernels, name, self.counting(name, getattr(kernels, name)))

    def counting(self, name, door):
        def counted(*args):
            self.calls.append(name)
            return door(*args)

        return counted

    def take(self):
        calls, self.calls = self.calls, []
        return calls


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_each_operation_asks_its_door_once_per_phase(monkeypatch, fast):
    counter = DoorCounter(monkeypatch)
    rng = np.random.default_rng(0)
    x = minicnn.tensor(rng.standard_normal((2, 3, 6, 6)), requires_grad=True)
    weight = minicnn.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    bias = minicnn.tensor(rng.standard_normal(4), requires_grad=True)
    with contextlib.nullcontext() if fast else kernels.reference_only():
        out = F.conv2d(x, weight, bias, padding=1)
        assert counter.take() == ["conv2d"]
        out.sum().backward()
        assert counter.take() == ["conv2d_backward"]
        pooled = F.max_pool2d(x, 2)
        assert counter.take() == ["max_pool2d"]
        pooled.sum().backward()
        assert counter.take() == ["max_pool2d_backward"]
        F.avg_pool2d(x, 2).sum().backward()
        assert counter.take() == []  # no fast path
        F.im2col(x.data, 3, 1, 1), F.col2im(np.ones((72, 27)), x.shape, 3, 1, 1)
        assert counter.take() == ["im2col", "col2im"]


def test_sizes_are_checked_once_per_call(monkeypatch):
    from minicnn import windows
    from minicnn.functional import conv

    checked = []

    def counting(operation, *args, **kwargs):
        checked.append(operation)
        return windows.check_window_sizes(operation, *args, **kwargs)

    monkeypatch.setattr(conv, "check_window_sizes", counting)
    monkeypatch.setattr(pooling, "check_window_sizes", counting)
    x = minicnn.tensor(np.ones((2, 3, 6, 6)), requires_grad=True)
    F.conv2d(x, minicnn.tensor(np.ones((4, 3, 3, 3)), requires_grad=True), padding=1).sum().backward()
    F.max_pool2d(x, 2).sum().backward()
    F.avg_pool2d(x, 2).sum().backward()
    F.col2im(F.im2col(x.data, 3), x.shape, 3)
    assert checked == ["conv2d", "max_pool2d", "avg_pool2d", "im2col", "col2im"]


@needs_fast_paths
def test_numpy_arrays_take_the_numpy_fast_path_and_its_layout():
    """The im2col door's rows are a transposed view of cpu_windows' columns by channel, not a copy."""
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    col = kernels.im2col(x, (3, 3), (1, 1), (1, 1), (5, 5))
    assert col.shape == (2 * 5 * 5, 3 * 3 * 3) and col.T.flags.c_contiguous


# ----- cpu_windows against the references, on every backend present ---------------------------


@CHECKS
@given(case=window_cases())
def test_columns_by_channel_is_the_transpose_of_the_reference_im2col(xp, case):
    shape, kernel_size, stride, padding, dtype, seed = case
    x = xp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))
    with kernels.reference_only():
        expected = F.im2col(x, kernel_size, stride, padding)
    out_size = output_shape(shape, kernel_size, stride, padding)
    col = cpu_windows.columns_by_channel(x, kernel_size, stride, padding, out_size)
    assert col.dtype == dtype and col.flags.c_contiguous
    np.testing.assert_array_equal(to_host(col), to_host(expected).T)


@CHECKS
@given(case=window_cases())
def test_add_columns_by_channel_equals_the_reference_col2im(xp, case):
    shape, kernel_size, stride, padding, dtype, seed = case
    out_size = output_shape(shape, kernel_size, stride, padding)
    rows = shape[0] * out_size[0] * out_size[1]
    col = xp.asarray(np.random.default_rng(seed).standard_normal((rows, shape[1] * kernel_size[0] * kernel_size[1]))
                     .astype(dtype))
    with kernels.reference_only():
        expected = F.col2im(col, shape, kernel_size, stride, padding)
    image = cpu_windows.add_columns_by_channel(xp.ascontiguousarray(col.T), shape, kernel_size, stride, padding,
                                               out_size)
    assert image.shape == shape and image.dtype == dtype
    np.testing.assert_allclose(to_host(image), to_host(expected), **tolerance(dtype))


@CHECKS
@given(case=window_cases(), filters=st.integers(1, 4))
def test_conv2d_input_grad_with_widened_rows_equals_col2im_of_the_product(xp, case, filters):
    shape, kernel_size, stride, padding, dtype, seed = case
    out_size = output_shape(shape, kernel_size, stride, padding)
    rng = np.random.default_rng(seed)
    grad_matrix = xp.asarray(rng.standard_normal((filters, shape[0] * out_size[0] * out_size[1])).astype(dtype))
    weight_matrix = xp.asarray(rng.standard_normal((filters, shape[1] * kernel_size[0] * kernel_size[1])).astype(dtype))
    with kernels.reference_only():
        expected = F.col2im(grad_matrix.T @ weight_matrix, shape, kernel_size, stride, padding)
    grad_x = cpu_windows.conv2d_input_grad(grad_matrix, weight_matrix, shape, kernel_size, stride, padding, out_size)
    np.testing.assert_allclose(to_host(grad_x), to_host(expected), **tolerance(dtype))


@needs_fast_paths
@CHECKS
@given(case=window_cases(), filters=st.integers(1, 4), with_bias=st.booleans(),
       wanted=st.sampled_from([(True, True), (True, False), (False, True)]))
def test_conv2d_doors_equal_the_reference_operation(xp, case, filters, with_bias, wanted):
    """kernels.conv2d and conv2d_backward (the CuPy kernels on a GPU) against Conv2dOp's reference body."""
    shape, kernel_size, stride, padding, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal(shape).astype(dtype))
    weight = xp.asarray(rng.standard_normal((filters, shape[1]) + kernel_size).astype(dtype))
    bias = xp.asarray(rng.standard_normal(filters).astype(dtype)) if with_bias else None
    operation = conv.Conv2dOp(stride, padding)
    operation.needs_input_grad = wanted + ((True,) if with_bias else ())
    with kernels.reference_only():
        expected = operation.forward(x, weight, bias)
        grad = xp.asarray(rng.standard_normal(expected.shape).astype(dtype))
        expected_grads = operation.backward(grad)
    out_size = output_shape(shape, kernel_size, operation.stride, operation.padding)
    out, col = kernels.conv2d(x, weight, bias, operation.stride, operation.padding, out_size)
    # NumPy's im2col output stays the product's filter-major matrix (cpu_layout.channel_major)
    assert out.shape == expected.shape and out.dtype == dtype
    assert out.flags.c_contiguous or (xp is np and cpu_layout.channel_major(out))
    np.testing.assert_allclose(to_host(out), to_host(expected), **tolerance(dtype))
    grads = kernels.conv2d_backward(grad, weight, col if wanted[1] else None, shape, operation.stride,
                                    operation.padding, (*wanted, with_bias))
    for got, reference in zip(grads, expected_grads):
        assert (got is None) == (reference is None)
        if got is not None:
            assert got.shape == reference.shape and got.dtype == dtype
            np.testing.assert_allclose(to_host(got), to_host(reference), **tolerance(dtype))


@needs_fast_paths
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv2d_layouts_for_other_arrays_equal_the_reference(monkeypatch, with_bias):
    """The layouts convolution.py gives CuPy arrays (and non-contiguous NumPy gradients), tried here on NumPy."""
    from minicnn.kernels import convolution

    rng = np.random.default_rng(8)
    x, weight = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    bias = rng.standard_normal(4) if with_bias else None
    operation = conv.Conv2dOp((2, 1), 1)
    operation.needs_input_grad = (True, True) + ((True,) if with_bias else ())
    with kernels.reference_only():
        expected = operation.forward(x, weight, bias)
        grad = rng.standard_normal(expected.shape)
        expected_grads = operation.backward(grad)
    monkeypatch.setattr(convolution, "_numpy_c_contiguous", lambda array: False)
    out, col = kernels.conv2d(x, weight, bias, (2, 1), (1, 1), expected.shape[2:])
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    grads = kernels.conv2d_backward(grad, weight, col, x.shape, (2, 1), (1, 1), (True, True, with_bias))
    for got, reference in zip(grads, expected_grads):
        assert (got is None) == (reference is None)
        if got is not None:
            np.testing.assert_allclose(got, reference, rtol=1e-12, atol=1e-12)


@CHECKS
@given(case=window_cases(pooling_case=True))
def test_one_byte_max_pool_equals_the_reference_with_ties_nan_and_minus_infinity(xp, case):
    shape, kernel_size, stride, padding, dtype, seed = case
    x = xp.asarray(pool_input(shape, dtype, seed))
    expected, argmax, operation = reference_max_pool(x, kernel_size, stride, padding)
    pooled, first_max = cpu_windows.max_pool_forward(x, kernel_size, stride, padding, expected.shape[2:])
    np.testing.assert_array_equal(to_host(pooled), to_host(expected))  # NaN where the reference has NaN
    np.testing.assert_array_equal(to_host(first_max), to_host(argmax))

    grad = xp.asarray(np.random.default_rng(seed + 1).standard_normal(expected.shape).astype(dtype))
    with kernels.reference_only():
        expected_grad = operation.backward(grad)
    grad_x = cpu_windows.max_pool_backward(grad, first_max, shape, kernel_size, stride, padding)
    assert grad_x.dtype == dtype
    np.testing.assert_allclose(to_host(grad_x), to_host(expected_grad), **tolerance(dtype))


def test_one_byte_max_pool_switches_to_int32_for_windows_over_256_elements(xp):
    x = xp.asarray(np.random.default_rng(3).standard_normal((1, 2, 17, 17)))
    expected, argmax, _ = reference_max_pool(x, (17, 16), (1, 1), (0, 0))
    pooled, first_max = cpu_windows.max_pool_forward(x, (17, 16), (1, 1), (0, 0), (1, 2))
    assert first_max.dtype == np.int32
    np.testing.assert_array_equal(to_host(first_max), to_host(argmax))


# ----- the CuPy kernels' text, compiled for the CPU ----------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{dtype: the kernels compiled for the CPU as a ctypes library}."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("needs a C compiler (cc) to run the kernels' text on the CPU")
    libraries = {}
    for dtype, (type_name, _) in C_TYPES.items():
        folder = tmp_path_factory.mktemp(type_name)
        (folder / "windows.c").write_text(f"typedef {type_name} T;\n{CPU_PRELUDE}\n{cupy_windows.SOURCE}")
        subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-Wall", "-Werror", "-o", str(folder / "windows.so"),
                        str(folder / "windows.c")], check=True, capture_output=True)
        libraries[dtype] = ctypes.CDLL(str(folder / "windows.so"))
    return libraries


def run_on_cpu(library, name, *args):
    """Call a compiled kernel: NumPy arrays become pointers, np.int32/np.int64/floats their C types."""
    converted = []
    for arg in args:
        if isinstance(arg, np.ndarray):
            assert arg.flags.c_contiguous
            converted.append(arg.ctypes.data_as(ctypes.c_void_p))
        elif isinstance(arg, np.int64):
            converted.append(ctypes.c_longlong(int(arg)))
        elif isinstance(arg, np.int32):
            converted.append(ctypes.c_int(int(arg)))
        else:
            converted.append(C_TYPES[type(arg)][1](arg))
    getattr(library, name)(*converted)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=window_cases())
def test_columns_by_channel_kernel_text_matches_the_reference(compiled, case):
    shape, kernel_size, stride, padding, dtype, seed = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    with kernels.reference_only():
        expected = np.ascontiguousarray(F.im2col(x, kernel_size, stride, padding).T)
    ints = cupy_windows.geometry(shape, kernel_size, stride, padding, output_shape(shape, kernel_size, stride, padding))
    col = np.full(expected.shape, np.nan, dtype=dtype)
    run_on_cpu(compiled[dtype], "columns_by_channel", x, col, np.int64(col.size), *ints)
    np.testing.assert_array_equal(col, expected)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=window_cases())
def test_add_columns_by_channel_kernel_text_matches_the_reference(compiled, case):
    shape, kernel_size, stride, padding, dtype, seed = case
    out_size = output_shape(shape, kernel_size, stride, padding)
    rows = shape[1] * kernel_size[0] * kernel_size[1]
    col = np.random.default_rng(seed).standard_normal((rows, shape[0] * out_size[0] * out_size[1])).astype(dtype)
    with kernels.reference_only():
        expected = F.col2im(col.T, shape, kernel_size, stride, padding)
    image = np.full(shape, np.nan, dtype=dtype)
    ints = cupy_windows.geometry(shape, kernel_size, stride, padding, out_size)
    run_on_cpu(compiled[dtype], "add_columns_by_channel", col, image, np.int64(image.size), *ints)
    np.testing.assert_allclose(image, expected, **tolerance(dtype))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=window_cases(pooling_case=True))
def test_max_pool_kernel_text_matches_the_reference_with_ties_nan_and_minus_infinity(compiled, case):
    shape, kernel_size, stride, padding, dtype, seed = case
    x = pool_input(shape, dtype, seed)
    expected, argmax, operation = reference_max_pool(x, kernel_size, stride, padding)
    ints = cupy_windows.geometry(shape, kernel_size, stride, padding, expected.shape[2:])
    pooled = np.full(expected.shape, 7.0, dtype=dtype)
    first_max = np.full(expected.shape, -1, dtype=np.int32)
    run_on_cpu(compiled[dtype], "max_pool_forward", x, pooled, first_max, np.int64(pooled.size), *ints, dtype(-np.inf))
    np.testing.assert_array_equal(pooled, expected)  # NaN where the reference has NaN
    np.testing.assert_array_equal(first_max, argmax)

    grad = np.random.default_rng(seed + 1).standard_normal(expected.shape).astype(dtype)
    grad_x = np.full(shape, np.nan, dtype=dtype)
    run_on_cpu(compiled[dtype], "max_pool_backward", grad, first_max, grad_x, np.int64(grad_x.size), *ints)
    with kernels.reference_only():
        np.testing.assert_allclose(grad_x, operation.backward(grad), **tolerance(dtype))


# ----- the whole engine: fast paths against references, on every backend present ----------------


@CHECKS
@given(case=window_cases(pooling_case=True))
def test_conv2d_and_max_pool2d_give_the_same_numbers_with_and_without_fast_paths(device, case):
    """Through the doors: on the GPU the CuPy kernels, on the CPU cpu_windows (unless MINICNN_FAST=0)."""
    shape, kernel_size, stride, padding, dtype, seed = case
    rng = np.random.default_rng(seed)
    x_host = rng.standard_normal(shape).astype(dtype)
    weight_host = rng.standard_normal((3, shape[1]) + kernel_size).astype(dtype)
    results = []
    for fast in (True, False):
        with contextlib.nullcontext() if fast else kernels.reference_only():
            x = minicnn.tensor(x_host, requires_grad=True, device=device)
            weight = minicnn.tensor(weight_host, requires_grad=True, device=device)
            out = F.conv2d(x, weight, stride=stride, padding=padding)
            pooled = F.max_pool2d(x, kernel_size, stride, padding)
            (out.sum() * 0.5 + (pooled * pooled).sum()).backward()
            results.append([to_host(t) for t in (out, pooled, x.grad, weight.grad)])
    for fast, reference in zip(*results):
        np.testing.assert_allclose(fast, reference, rtol=1e-4 if dtype == np.float32 else 1e-10,
                                   atol=1e-4 if dtype == np.float32 else 1e-10)


# ----- on the GPU: the CuPy kernels themselves ---------------------------------------------------


@pytest.mark.gpu
@needs_gpu
@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=window_cases(pooling_case=True))
def test_cupy_kernels_match_the_references_with_ties_nan_and_minus_infinity(case):
    cupy = backend.array_module_for("gpu")
    shape, kernel_size, stride, padding, dtype, seed = case
    out_size = output_shape(shape, kernel_size, stride, padding)
    x = cupy.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))
    with kernels.reference_only():
        expected_col = F.im2col(x, kernel_size, stride, padding)
        expected_image = F.col2im(expected_col, shape, kernel_size, stride, padding)
    col = cupy_windows.columns_by_channel(x, kernel_size, stride, padding, out_size)
    np.testing.assert_array_equal(to_host(col), to_host(expected_col).T)
    image = cupy_windows.add_columns_by_channel(col, shape, kernel_size, stride, padding, out_size)
    np.testing.assert_allclose(to_host(image), to_host(expected_image), **tolerance(dtype))
    weight_matrix = cupy.asarray(np.random.default_rng(seed).standard_normal((2, col.shape[0])).astype(dtype))
    grad_matrix = cupy.asarray(np.random.default_rng(seed + 2).standard_normal((2, col.shape[1])).astype(dtype))
    with kernels.reference_only():
        expected_grad_x = F.col2im(grad_matrix.T @ weight_matrix, shape, kernel_size, stride, padding)
    grad_x = cupy_windows.conv2d_input_grad(grad_matrix, weight_matrix, shape, kernel_size, stride, padding, out_size)
    np.testing.assert_allclose(to_host(grad_x), to_host(expected_grad_x), **tolerance(dtype))

    x = cupy.asarray(pool_input(shape, dtype, seed))
    expected, argmax, operation = reference_max_pool(x, kernel_size, stride, padding)
    pooled, first_max = cupy_windows.max_pool_forward(x, kernel_size, stride, padding, out_size)
    np.testing.assert_array_equal(to_host(pooled), to_host(expected))
    np.testing.assert_array_equal(to_host(first_max), to_host(argmax))
    grad = cupy.asarray(np.random.default_rng(seed + 1).standard_normal(expected.shape).astype(dtype))
    with kernels.reference_only():
        expected_grad = operation.backward(grad)
    grad_x = cupy_windows.max_pool_backward(grad, first_max, shape, kernel_size, stride, padding)
    np.testing.assert_allclose(to_host(grad_x), to_host(expected_grad), **tolerance(dtype))


@pytest.mark.gpu
@needs_gpu
def test_cupy_max_pool_backward_takes_an_argmax_from_any_path():
    """The reference's int64 argmax and the NumPy path's uint8 both mean row-major offsets."""
    cupy = backend.array_module_for("gpu")
    x = cupy.asarray(pool_input((2, 3, 9, 8), np.float32, 5))
    expected, argmax, operation = reference_max_pool(x, (3, 2), (2, 2), (1, 1))
    grad = cupy.ones(expected.shape, dtype=cupy.float32)
    with kernels.reference_only():
        expected_grad = operation.backward(grad)
    for first_max in (argmax, argmax.astype(cupy.uint8)):
        grad_x = cupy_windows.max_pool_backward(grad, first_max, (2, 3, 9, 8), (3, 2), (2, 2), (1, 1))
        np.testing.assert_array_equal(to_host(grad_x), to_host(expected_grad))


def channel_major_copy(array):
    """The same (N, C, H, W) values stored as (C, N, H, W)."""
    return np.ascontiguousarray(array.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


@needs_fast_paths
def test_channel_major_arrays_give_the_same_bits_and_keep_their_layout():
    """The fast paths take the convolution's channel-major output as they take C order, value for value."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 6, 7)).astype(np.float32)
    major = channel_major_copy(x)
    assert cpu_layout.channel_major(major) and not cpu_layout.channel_major(x)
    pooled, first_max = kernels.max_pool2d(x, (2, 2), (2, 2), (0, 0), (3, 3))
    pooled_major, first_max_major = kernels.max_pool2d(major, (2, 2), (2, 2), (0, 0), (3, 3))
    assert cpu_layout.channel_major(pooled_major) and cpu_layout.channel_major(first_max_major)
    np.testing.assert_array_equal(pooled_major, pooled)
    np.testing.assert_array_equal(first_max_major, first_max)
    grad = rng.standard_normal(pooled.shape).astype(np.float32)
    grad_x = kernels.max_pool2d_backward(grad, first_max, x.shape, (2, 2), (2, 2), (0, 0))
    grad_x_major = kernels.max_pool2d_backward(grad, first_max_major, x.shape, (2, 2), (2, 2), (0, 0))
    assert cpu_layout.channel_major(grad_x_major)
    np.testing.assert_array_equal(grad_x_major, grad_x)
    out, positive = kernels.relu(major)
    assert cpu_layout.channel_major(out) and cpu_layout.channel_major(positive)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    np.testing.assert_array_equal(kernels.relu_backward(channel_major_copy(x), positive), x * (x > 0))
    assert kernels.relu_backward(x, positive) is None  # two layouts: the reference's product


@needs_fast_paths
def test_the_convolution_reads_a_channel_major_gradient_as_its_matrix():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    weight, bias = rng.standard_normal((5, 2, 3, 3)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    with kernels.im2col_only():
        out, col = kernels.conv2d(x, weight, bias, (1, 1), (0, 0), (4, 4))
        assert cpu_layout.channel_major(out)
        np.testing.assert_array_equal(out, np.ascontiguousarray(out))
        grad = rng.standard_normal(out.shape).astype(np.float32)
        in_c_order = kernels.conv2d_backward(grad, weight, col, x.shape, (1, 1), (0, 0), (True, True, True))
        major = kernels.conv2d_backward(channel_major_copy(grad), weight, col, x.shape, (1, 1), (0, 0),
                                        (True, True, True))
    for got, expected in zip(major, in_c_order):
        np.testing.assert_array_equal(got, expected)
    assert cpu_layout.channel_major(major[0])  # col2im adds channel by channel and keeps that layout
    grad_matrix, _ = cpu_layout.conv2d_grad_matrix(channel_major_copy(grad), False)
    assert not grad_matrix.flags.owndata  # a view: no copy


@needs_fast_paths
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("wants_x", [True, False])
def test_batch_norm_on_channel_major_arrays_equals_the_reference(dtype, training, wants_x):
    from minicnn.functional.normalization import BatchNormOp

    rng = np.random.default_rng(7)
    shape = (5, 3, 6, 7)
    x = channel_major_copy(rng.standard_normal(shape).astype(dtype) * 3 + 1)
    grad = channel_major_copy(rng.standard_normal(shape).astype(dtype))
    gamma, beta = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)

    def run():
        running = (rng.standard_normal(3) ** 2, rng.random(3) + 0.5)
        operation = BatchNormOp(*[array.copy() for array in running], training, 0.1, 1e-5)
        operation.needs_input_grad = (wants_x, True, True)
        out = operation.forward(x, gamma, beta)
        return (out, *operation.backward(grad), operation.running_mean, operation.running_var)

    rng_state = rng.bit_generator.state
    with kernels.reference_only():
        expected = run()
    rng.bit_generator.state = rng_state
    assert kernels.batch_norm(x, gamma, beta, None, 1e-5) is not None  # the fast path is taken
    got = run()
    assert cpu_layout.channel_major(got[0])
    for fast, reference in zip(got, expected):
        assert (fast is None) == (reference is None)
        if fast is not None:
            np.testing.assert_allclose(fast, reference, **tolerance(dtype))


@needs_fast_paths
def test_batch_norm_leaves_other_layouts_to_the_reference():
    x = np.zeros((2, 3, 4, 4), np.float32)
    gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    assert kernels.batch_norm(x, gamma, beta, None, 1e-5) is None  # C order
    assert kernels.batch_norm(np.zeros((2, 3), np.float32), gamma, beta, None, 1e-5) is None
    assert kernels.batch_norm_backward(x, x, gamma, gamma, True, True) is None  # forward ran the reference


@needs_fast_paths
def test_batch_norm_backward_does_not_depend_on_the_gradients_layout():
    """Backward runs where forward ran: a gradient in C order or a cropped view gives the same bits."""
    rng = np.random.default_rng(8)
    x_hat = channel_major_copy(rng.standard_normal((4, 3, 5, 5)).astype(np.float32))
    gamma, inv_std = rng.standard_normal(3).astype(np.float32), rng.random(3).astype(np.float32) + 0.5
    grad = rng.standard_normal((4, 3, 7, 7)).astype(np.float32)[:, :, 1:6, 1:6]  # neither layout
    expected = kernels.batch_norm_backward(channel_major_copy(grad), x_hat, gamma, inv_std, True, True)
    for layout in (grad, np.ascontiguousarray(grad)):
        for got, want in zip(kernels.batch_norm_backward(layout, x_hat, gamma, inv_std, True, True), expected):
            np.testing.assert_array_equal(got, want)


def test_numpy_hands_users_c_order_whatever_layout_the_engine_kept():
    out = minicnn.nn.Conv2D(1, 4, 3)(minicnn.tensor(np.zeros((2, 1, 6, 6), np.float32)))
    assert out.numpy().flags.c_contiguous
    np.testing.assert_array_equal(out.numpy(), out.data)
