"""Fast paths behind one door per operation phase, each with a reference twin in minicnn.functional.

minicnn.functional holds each operation as a textbook writes it. At the top of
its forward and of its backward it asks this module once, through the door for
that phase, and runs its reference only when the door answers None:

    door (this module)              asked by (minicnn.functional)     fast path
    conv2d, conv2d_backward         conv.Conv2dOp                     convolution.py: im2col over a window
                                                                      module, or Winograd (winograd.py)
    max_pool2d, max_pool2d_backward pooling.MaxPool2dOp               the window module
    im2col, col2im                  conv.im2col, conv.col2im          the window module
    relu, relu_backward             activations.ReLUOp                cpu_layout.py
    batch_norm, batch_norm_backward normalization.BatchNormOp         normalization.py (channel-major arrays)

A door answers None when the fast paths are off: with MINICNN_FAST=0 in the
environment (read at import) and inside `with kernels.reference_only():` (but
conv2d_backward answers for a forward that kept Winograd's tiles: only winograd.py
reads them). The relu doors also answer None for arrays that are not NumPy arrays
in C order or channel-major (the convolution's output layout, cpu_layout.py);
batch_norm answers for channel-major NumPy arrays only, and batch_norm_backward
wherever batch_norm answered. Otherwise the window doors (all but relu and
batch norm) pick a window module by the input array:

- cupy_windows.py + windows.cu: CuPy raw kernels, for float32/float64 CuPy arrays
  (MINICNN_CUPY_KERNELS=0 turns off only these);
- cpu_windows.py: NumPy layouts and loops tuned for NumPy (phase-grid col2im,
  one-byte argmax), array-module code for every other array (CuPy float16 too);
- convolution.py: the convolution's steps (columns, products, layouts) over the
  chosen window module, the products through threads.matmul and the layouts
  through cpu_layout.py on NumPy arrays; or, for 3x3 stride-1 layers of enough
  channels on NumPy arrays, winograd.py's F(4x4, 3x3), fewer products than im2col
  (`convolution.algorithm` says which; MINICNN_WINOGRAD=0 in the environment and
  `with kernels.im2col_only():` turn off only this);
- threads.py: the thread pool the NumPy passes are cut over (`set_num_threads`,
  MINICNN_NUM_THREADS) and the split products (`share_cores_with_blas`).

kernel_size, stride, padding and out_size = (OH, OW) are (h, w) pairs; out_size is
what minicnn.windows.check_window_sizes returned to the caller, which has already
checked the sizes: the doors check nothing again.
"""

import contextlib
import os

from ..backend import is_cupy_array
from . import convolution, cpu_layout, cpu_windows, cupy_windows, normalization, threads, winograd
from .convolution import im2col_only
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


def _window_module(array):
    """cupy_windows for float32/float64 CuPy arrays, cpu_windows for the rest, None when the fast paths are off."""
    if not _fast:
        return None
    if _cupy_kernels and is_cupy_array(array) and array.dtype.kind == "f" and array.dtype.itemsize in (4, 8):
        return cupy_windows
    return cpu_windows


def conv2d(x, weight, bias, stride, padding, out_size):
    """x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,) or None -> (out: (N, F, OH, OW), col), or None.

    col: (N*OH*OW, C*KH*KW), the windows as functional.conv.im2col lays them out (a transposed
    view), for conv2d_backward; or, where convolution.algorithm picks Winograd, a
    winograd.WinogradTiles (the transformed input and weight), which conv2d_backward takes alike.
    """
    windows = _window_module(x)
    return None if windows is None else convolution.forward(windows, x, weight, bias, stride, padding, out_size)


def conv2d_backward(grad, weight, col, x_shape, stride, padding, wanted):
    """grad: (N, F, OH, OW) -> (grad_x, grad_weight, grad_bias), None where not wanted; or None.

    weight: (F, C, KH, KW); col: from conv2d (None when the weight's gradient is not wanted);
    wanted: three booleans, for x, weight and bias.
    """
    windows = _window_module(grad)
    if windows is None and isinstance(col, winograd.WinogradTiles):
        windows = cpu_windows  # a forward run on Winograd before the fast paths were turned off: only it reads col
    return None if windows is None else convolution.backward(windows, grad, weight, col, x_shape, stride, padding,
                                                             wanted)


def max_pool2d(x, kernel_size, stride, padding, out_size):
    """x: (N, C, H, W) -> (pooled, first_max), both (N, C, OH, OW), or None.

    first_max is each window's argmax as a row-major offset (padding -inf, first maximum or first NaN).
    """
    windows = _window_module(x)
    return None if windows is None else windows.max_pool_forward(x, kernel_size, stride, padding, out_size)


def max_pool2d_backward(grad, first_max, x_shape, kernel_size, stride, padding):
    """grad, first_max: (N, C, OH, OW) -> (N, C, H, W), each window's gradient at its first_max, or None."""
    windows = _window_module(grad)
    return None if windows is None else windows.max_pool_backward(grad, first_max, x_shape, kernel_size, stride,
                                                                  padding)


def im2col(x, kernel_size, stride, padding, out_size):
    """x: (N, C, H, W) -> (N*OH*OW, C*KH*KW), one row per window (a transposed view of columns by channel), or None."""
    windows = _window_module(x)
    return None if windows is None else windows.columns_by_channel(x, kernel_size, stride, padding, out_size).T


def col2im(col, x_shape, kernel_size, stride, padding, out_size):
    """col: (N*OH*OW, C*KH*KW) -> (N, C, H, W), the adjoint of `im2col`, or None."""
    windows = _window_module(col)
    return None if windows is None else windows.add_columns_by_channel(col.T, x_shape, kernel_size, stride, padding,
                                                                       out_size)


def relu(x):
    """x -> (max(x, 0), x > 0) in x's layout, or None (also for an array that is not a `dense` NumPy array)."""
    return cpu_layout.relu_forward(x) if _numpy_fast(x) else None


def relu_backward(grad, positive):
    """grad, positive (x > 0) -> grad * positive, or None (also unless both are NumPy arrays of one `dense` layout)."""
    if not (_numpy_fast(grad, positive) and grad.shape == positive.shape
            and cpu_layout.channel_major(grad) == cpu_layout.channel_major(positive)):
        return None
    return cpu_layout.relu_backward(grad, positive)


def batch_norm(x, gamma, beta, statistics, eps):
    """x: (N, C, H, W), gamma, beta: (C,) -> (out, x_hat, inv_std, mean, var), or None.

    statistics: None (the batch's mean and biased variance) or (running_mean, running_var).
    Answers for channel-major NumPy arrays (the convolutions' output layout) only.
    """
    return normalization.forward(x, gamma, beta, statistics, eps) if _numpy_fast(x) else None


def batch_norm_backward(grad, x_hat, gamma, inv_std, training, wants_x):
    """grad, x_hat: (N, C, H, W); gamma, inv_std: (C,) -> (grad_x or None, grad_gamma, grad_beta), or None.

    Answers where batch_norm answered (x_hat channel-major), for a grad in any layout of NumPy arrays.
    """
    if not (_fast and not is_cupy_array(grad) and not is_cupy_array(x_hat)):
        return None
    return normalization.backward(grad, x_hat, gamma, inv_std, training, wants_x)


def _numpy_fast(*arrays):
    """True when the fast paths are on and every array is a NumPy array that cpu_layout.dense accepts."""
    return _fast and all(not is_cupy_array(array) and cpu_layout.dense(array) for array in arrays)
