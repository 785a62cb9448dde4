"""The convolution's fast path, forward and backward: the steps of functional.conv.Conv2dOp, each done faster.

The steps are the reference's: the windows as columns, one product and the output's
layout; in backward the gradient's layout, two products and col2im. Each is taken by
its fast part:
- the columns and col2im by the window module the door in kernels/__init__.py chose
  (cpu_windows or cupy_windows), laid out by channel, (C*KH*KW, N*OH*OW): the
  transpose of functional.conv.im2col's rows, so one copy reads whole image rows;
- the products by threads.matmul (cut over the thread pool while
  share_cores_with_blas is on, else one `@`);
- the layouts of the output and of its gradient by cpu_layout on NumPy arrays: the
  output stays the product's filter-major matrix, viewed as (N, F, OH, OW) (channel-major,
  see cpu_layout), with the bias added in place; a channel-major gradient is read as its
  matrix without a copy. Other arrays (CuPy) take the reference's formulas, which are
  these few lines here because kernels sits below functional.

Winograd: a 3x3 convolution with stride 1 and padding 0 or 1 on NumPy float arrays, with at
least WINOGRAD_MIN_CHANNELS input channels, WINOGRAD_MIN_TILES output tiles (N*TH*TW, the
columns of each of its products) and an output of at least WINOGRAD_MIN_SIDE pixels a side
(ResNet-18 on 32x32 pictures has 2x2 and 1x1 maps), runs F(4x4, 3x3) (winograd.py) instead of im2col, from
the same door; `algorithm` says which, from the shapes alone, so backward picks what forward
picked. The rule was measured (benchmarks/conv_algorithms.py, benchmarks/NOTES.md "Winograd
convolution"; forward + backward, CPU time with one BLAS thread): at batch 64 F(4x4, 3x3)
ran every 3x3 layer of the models with 16 channels or more 1.2-1.9x faster than im2col, and
F(2x2, 3x3) was never clearly the fastest; with 1, 3 or 4 input channels im2col was 1.4-3.4x
faster, at 8 they took turns. Few tiles make F(4x4, 3x3)'s products too narrow: ResNet-18's
512-channel 7x7 layer at batch 8 (32 tiles) ran 1.6x slower than im2col, at batch 16 (64)
even, at batch 32 (128) 1.4x faster. MINICNN_WINOGRAD=0 (read at import) and `im2col_only()`
keep every convolution on im2col, whose float32 rounding is that of the reference; CuPy
arrays always stay on im2col.
"""

import contextlib
import os

from ..backend import get_array_module, is_cupy_array
from . import cpu_layout, winograd
from .threads import matmul

WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_MIN_TILES = 64
WINOGRAD_TILE = 4
# An output under 3 pixels a side fills too little of a 4x4 tile: a 2x2 map computes 16 outputs for 4
# (as many multiplications as im2col, plus the transforms), a 1x1 map 16 for 1. 3x3 (cnn.conv3) still pays.
WINOGRAD_MIN_SIDE = 3
_winograd = os.environ.get("MINICNN_WINOGRAD", "1") != "0"


@contextlib.contextmanager
def im2col_only():
    """Within the block every convolution runs im2col, as under MINICNN_WINOGRAD=0."""
    global _winograd
    saved, _winograd = _winograd, False
    try:
        yield
    finally:
        _winograd = saved


def algorithm(array, weight_shape, stride, padding, batch, out_size):
    """"im2col", or the Winograd tile m of F(m x m, 3 x 3), for a convolution of `batch` images.

    array: its input or output's gradient (for the dtype and the backend); weight_shape: (F, C, KH, KW);
    stride, padding and out_size (OH, OW): (h, w) pairs.
    """
    if not _winograd or is_cupy_array(array) or array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):
        return "im2col"
    if tuple(weight_shape[2:]) != (3, 3) or tuple(stride) != (1, 1) or max(padding) > 1:
        return "im2col"
    tile_rows, tile_columns = winograd.tile_counts(out_size, WINOGRAD_TILE)
    if weight_shape[1] < WINOGRAD_MIN_CHANNELS or batch * tile_rows * tile_columns < WINOGRAD_MIN_TILES:
        return "im2col"
    if min(out_size) < WINOGRAD_MIN_SIDE:
        return "im2col"
    return WINOGRAD_TILE


def forward(windows, x, weight, bias, stride, padding, out_size):
    """x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,) or None -> (out: (N, F, OH, OW), col: (N*OH*OW, C*KH*KW)).

    windows: cpu_windows or cupy_windows. col, kept for the weight's gradient, is a transposed
    view of the columns by channel; or, where `algorithm` picks Winograd, col is winograd.WinogradTiles.
    """
    tile = algorithm(x, weight.shape, stride, padding, x.shape[0], out_size)
    if tile != "im2col":
        return winograd.forward(x, weight, bias, padding, out_size, tile)
    N, F = x.shape[0], weight.shape[0]
    columns = windows.columns_by_channel(x, weight.shape[2:], stride, padding, out_size)  # (C*KH*KW, N*OH*OW)
    out_matrix = matmul(weight.reshape(F, -1), columns)  # (F, N*OH*OW), filter-major as in the reference
    if _numpy_c_contiguous(out_matrix):
        out = cpu_layout.conv2d_output(out_matrix, bias, N, out_size)  # the bias added in place, kept channel-major
    else:
        if bias is not None:
            out_matrix += bias[:, None]
        out = out_matrix.reshape(F, N, *out_size).transpose(1, 0, 2, 3)
        out = get_array_module(out).ascontiguousarray(out)
    return out, columns.T


def backward(windows, grad, weight, col, x_shape, stride, padding, wanted):
    """grad: (N, F, OH, OW) -> (grad_x, grad_weight, grad_bias), None where `wanted` says so.

    windows: cpu_windows or cupy_windows; weight: (F, C, KH, KW); col: forward's (N*OH*OW, C*KH*KW)
    (None when the weight's gradient is not wanted); wanted: three booleans, for x, weight and bias.
    """
    if isinstance(col, winograd.WinogradTiles):
        return winograd.backward(grad, weight, col, x_shape, padding, wanted, col.tile)
    tile = algorithm(grad, weight.shape, stride, padding, grad.shape[0], grad.shape[2:])
    if col is None and tile != "im2col":  # a frozen weight: forward kept nothing; the rule picks what it picked
        return winograd.backward(grad, weight, None, x_shape, padding, wanted, tile)
    wants_x, wants_weight, wants_bias = wanted
    F = grad.shape[1]
    if not is_cupy_array(grad) and cpu_layout.dense(grad):
        grad_matrix, grad_bias = cpu_layout.conv2d_grad_matrix(grad, wants_bias)  # layout and sums: one pass or none
    else:
        grad_matrix = grad.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, N*OH*OW)
        grad_bias = grad_matrix.sum(axis=1) if wants_bias else None
    grad_x = grad_weight = None
    if wants_x:
        settings = x_shape, weight.shape[2:], stride, padding, grad.shape[2:]
        grad_x = windows.conv2d_input_grad(grad_matrix, weight.reshape(F, -1), *settings)
    if wants_weight:
        grad_weight = matmul(grad_matrix, col).reshape(weight.shape)
    return grad_x, grad_weight, grad_bias


def _numpy_c_contiguous(array):
    return not is_cupy_array(array) and array.flags.c_contiguous
