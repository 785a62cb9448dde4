"""Fast paths, each with a reference twin in minicnn.functional: the window operations, ReLU, the conv layouts.

minicnn.functional holds each operation as a textbook writes it; this package
holds the faster ways to compute the same numbers:

- cupy_windows.py + windows.cu: CuPy raw kernels, for float32/float64 CuPy arrays;
- cpu_windows.py: NumPy layouts and loops tuned for NumPy (phase-grid col2im,
  one-byte argmax), for every other array;
- cpu_layout.py: ReLU and the convolution's output and gradient layouts, NumPy only
  (CuPy arrays take the references);
- threads.py: the thread pool both NumPy modules cut their passes over
  (`set_num_threads`, MINICNN_NUM_THREADS).

Each operation has ONE dispatch point below. It returns the fast result, or
None when the fast paths are off, and then functional runs its reference. They
are off with MINICNN_FAST=0 in the environment (read at import) and inside
`with kernels.reference_only():`. MINICNN_CUPY_KERNELS=0 turns off only the raw
CuPy kernels (CuPy arrays then take cpu_windows' array-module code).

kernel_size, stride, padding and out_size = (OH, OW) are (h, w) pairs; out_size
comes from functional.windows.output_size.
"""

import contextlib
import os

from ..backend import is_cupy_array
from . import cpu_layout, cpu_windows, cupy_windows, threads
from .threads import num_threads, set_num_threads, share_cores_with_blas

_fast = os.environ.get("MINICNN_FAST", "1") != "0"
_cupy_kernels = os.environ.get("MINICNN_CUPY_KERNELS", "1") != "0"


@contextlib.contextmanager
def reference_only():
    """Within the block every operation runs its reference in minicnn.functional."""
    global _fast
    saved, _fast = _fast, False
    try:
        yield
    finally:
        _fast = saved


def _fast_module(array):
    """cupy_windows for float32/float64 CuPy arrays, cpu_windows for the rest, None when the fast paths are off."""
    if not _fast:
        return None
    if _cupy_kernels and is_cupy_array(array) and array.dtype.kind == "f" and array.dtype.itemsize in (4, 8):
        return cupy_windows
    return cpu_windows


def im2col(x, kernel_size, stride, padding, out_size):
    """x: (N, C, H, W) -> (N*OH*OW, C*KH*KW), one row per window (a transposed view of columns by channel), or None."""
    fast = _fast_module(x)
    return None if fast is None else fast.columns_by_channel(x, kernel_size, stride, padding, out_size).T


def col2im(col, x_shape, kernel_size, stride, padding, out_size):
    """col: (N*OH*OW, C*KH*KW) -> (N, C, H, W), the adjoint of `im2col`, or None."""
    fast = _fast_module(col)
    return None if fast is None else fast.add_columns_by_channel(col.T, x_shape, kernel_size, stride, padding, out_size)


def conv2d_input_grad(grad_matrix, weight_matrix, x_shape, kernel_size, stride, padding, out_size):
    """grad_matrix: (F, N*OH*OW), weight_matrix: (F, C*KH*KW) -> col2im(grad_matrix.T @ weight_matrix), or None."""
    fast = _fast_module(grad_matrix)
    if fast is None:
        return None
    settings = x_shape, kernel_size, stride, padding, out_size
    if fast is cpu_windows:
        return cpu_windows.conv2d_input_grad(grad_matrix, weight_matrix, *settings)
    return fast.add_columns_by_channel(weight_matrix.T @ grad_matrix, *settings)


def max_pool2d(x, kernel_size, stride, padding, out_size):
    """x: (N, C, H, W) -> (pooled, first_max), both (N, C, OH, OW), or None.

    first_max is each window's argmax as a row-major offset (padding -inf, first maximum or first NaN).
    """
    fast = _fast_module(x)
    return None if fast is None else fast.max_pool_forward(x, kernel_size, stride, padding, out_size)


def max_pool2d_backward(grad, first_max, x_shape, kernel_size, stride, padding):
    """grad, first_max: (N, C, OH, OW) -> (N, C, H, W), each window's gradient at its first_max, or None."""
    fast = _fast_module(grad)
    return None if fast is None else fast.max_pool_backward(grad, first_max, x_shape, kernel_size, stride, padding)


def _numpy_fast(*arrays):
    """True when the fast paths are on and every array is a C-contiguous NumPy array (cpu_layout's case)."""
    return _fast and all(not is_cupy_array(array) and array.flags.c_contiguous for array in arrays)


def relu(x):
    """x -> (max(x, 0), x > 0), or None."""
    return cpu_layout.relu_forward(x) if _numpy_fast(x) else None


def relu_backward(grad, positive):
    """grad, positive (x > 0) -> grad * positive, or None."""
    if not (_numpy_fast(grad, positive) and grad.shape == positive.shape):
        return None
    return cpu_layout.relu_backward(grad, positive)


def conv2d_output(out_matrix, bias, batch, out_size):
    """out_matrix: (F, N*OH*OW), bias: (F,) or None -> (N, F, OH, OW), the bias added, or None."""
    return cpu_layout.conv2d_output(out_matrix, bias, batch, out_size) if _numpy_fast(out_matrix) else None


def conv2d_grad_matrix(grad, with_bias):
    """grad: (N, F, OH, OW) -> (grad_matrix: (F, N*OH*OW), grad.sum(axis=(0, 2, 3)) or None), or None."""
    return cpu_layout.conv2d_grad_matrix(grad, with_bias) if _numpy_fast(grad) else None


def matmul(a, b):
    """a: (M, K) @ b: (K, N) cut over the thread pool while threads.share_cores_with_blas() is on, or None."""
    if not (_fast and threads.sharing_cores_with_blas()) or is_cupy_array(a):
        return None
    return threads.matmul(a, b)
