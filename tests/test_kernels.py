"""The CuPy window kernels (minicnn/kernels/windows.cu) against their NumPy reference twins.

Two ways: the same kernel text compiled for the CPU with a C compiler (a plain
loop in place of CUDA's grid-stride loop), so the index arithmetic is checked on
every machine with `cc`; and on a GPU, the CuPy kernels against the reference
path (`kernels.reference_only()`) on the same CuPy arrays.
"""

import contextlib
import ctypes
import shutil
import subprocess

import numpy as np
import pytest
from conftest import AVAILABLE_DEVICES, to_host
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn import kernels
from minicnn.functional import conv, pooling
from minicnn.kernels import cupy_windows

CPU_PRELUDE = "#define KERNEL\n#define LOOP(i, n) for (long long i = 0; i < (n); ++i)\n"
C_TYPES = {np.float32: ("float", ctypes.c_float), np.float64: ("double", ctypes.c_double)}
CHECKS = settings(max_examples=60, deadline=None, derandomize=True)


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


@st.composite
def window_cases(draw, pooling_case=False):
    """A batch shape, kernel, stride and padding whose padded image fits the kernel."""
    KH, KW = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    limit_h, limit_w = (KH // 2, KW // 2) if pooling_case else (2, 2)
    PH, PW = draw(st.integers(0, limit_h)), draw(st.integers(0, limit_w))
    H = draw(st.integers(max(1, KH - 2 * PH), KH + 6))
    W = draw(st.integers(max(1, KW - 2 * PW), KW + 6))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), H, W)
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return shape, (KH, KW), stride, (PH, PW), draw(st.sampled_from([np.float32, np.float64])), draw(st.integers(0, 999))


@CHECKS
@given(window_cases())
def test_im2col_kernel_text_matches_the_reference(compiled, case):
    shape, kernel_size, stride, padding, dtype, seed = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    expected = conv.columns(x, kernel_size, stride, padding)
    _, _, ints = cupy_windows._geometry(shape, kernel_size, stride, padding)
    col = np.full(expected.shape, np.nan, dtype=dtype)
    run_on_cpu(compiled[dtype], "im2col", x, col, np.int64(col.size), *ints)
    np.testing.assert_array_equal(col, expected)


@CHECKS
@given(window_cases())
def test_col2im_kernel_text_matches_the_reference(compiled, case):
    shape, kernel_size, stride, padding, dtype, seed = case
    out_height, out_width, ints = cupy_windows._geometry(shape, kernel_size, stride, padding)
    rows = shape[1] * kernel_size[0] * kernel_size[1]
    col = np.random.default_rng(seed).standard_normal((rows, shape[0] * out_height * out_width)).astype(dtype)
    expected = conv.add_columns(col, shape, kernel_size, stride, padding)
    image = np.full(shape, np.nan, dtype=dtype)
    run_on_cpu(compiled[dtype], "col2im", col, image, np.int64(image.size), *ints)
    np.testing.assert_allclose(image, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def pool_input(shape, dtype, seed):
    """Values on a coarse grid (many ties), with a sprinkling of -inf and NaN."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(dtype)
    x[rng.random(shape) < 0.05] = -np.inf
    x[rng.random(shape) < 0.03] = np.nan
    return x


@CHECKS
@given(window_cases(pooling_case=True))
def test_max_pool_kernel_text_matches_the_reference_with_ties_nan_and_minus_infinity(compiled, case):
    shape, kernel_size, stride, padding, dtype, seed = case
    x = pool_input(shape, dtype, seed)
    reference = pooling.MaxPool2d(kernel_size, stride, padding)
    expected = reference.forward(x)
    out_height, out_width, ints = cupy_windows._geometry(shape, kernel_size, stride, padding)
    pooled = np.full(expected.shape, 7.0, dtype=dtype)
    first_max = np.full(expected.shape, -1, dtype=np.int32)
    run_on_cpu(compiled[dtype], "max_pool_forward", x, pooled, first_max, np.int64(pooled.size), *ints, dtype(-np.inf))
    np.testing.assert_array_equal(pooled, expected)  # NaN where the reference has NaN
    np.testing.assert_array_equal(first_max, reference.first_max)

    grad = np.random.default_rng(seed + 1).standard_normal(expected.shape).astype(dtype)
    grad_x = np.full(shape, np.nan, dtype=dtype)
    run_on_cpu(compiled[dtype], "max_pool_backward", grad, first_max, grad_x, np.int64(grad_x.size), *ints)
    np.testing.assert_allclose(grad_x, reference.backward(grad), rtol=1e-6)


# ----- on the GPU: the CuPy kernels against the reference path on the same arrays --------------------

needs_gpu = pytest.mark.skipif("gpu" not in AVAILABLE_DEVICES, reason="needs CuPy and a CUDA GPU")


@pytest.mark.gpu
@needs_gpu
@CHECKS
@given(window_cases(pooling_case=True))
def test_cupy_kernels_match_the_reference_path_on_the_gpu(case):
    import cupy

    import minicnn
    import minicnn.functional as F

    shape, kernel_size, stride, padding, dtype, seed = case
    rng = np.random.default_rng(seed)
    x_host = rng.standard_normal(shape).astype(dtype)
    weight_host = rng.standard_normal((3, shape[1]) + kernel_size).astype(dtype)
    results = []
    for use_kernels in (True, False):
        with contextlib.nullcontext() if use_kernels else kernels.reference_only():
            x = minicnn.tensor(cupy.asarray(x_host), requires_grad=True)
            weight = minicnn.tensor(cupy.asarray(weight_host), requires_grad=True)
            out = F.conv2d(x, weight, stride=stride, padding=padding)
            pooled = F.max_pool2d(x, kernel_size, stride, padding)
            (out.sum() * 0.5 + (pooled * pooled).sum()).backward()
            results.append([to_host(t) for t in (out, pooled, x.grad, weight.grad)])
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    for with_kernel, reference in zip(*results):
        np.testing.assert_allclose(with_kernel, reference, rtol=tolerance, atol=tolerance)


@pytest.mark.gpu
@needs_gpu
def test_cupy_max_pool_kernel_keeps_the_tie_rule_and_nan():
    import cupy

    x = cupy.asarray(pool_input((2, 3, 9, 8), np.float32, 5))
    pooled, first_max = cupy_windows.max_pool_forward(x, (3, 2), (2, 2), (1, 1))
    reference = pooling.MaxPool2d((3, 2), (2, 2), (1, 1))
    with kernels.reference_only():
        expected = reference.forward(x)
    np.testing.assert_array_equal(to_host(pooled), to_host(expected))
    np.testing.assert_array_equal(to_host(first_max), to_host(reference.first_max))

