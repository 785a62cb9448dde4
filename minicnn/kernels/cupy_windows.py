"""Launch the kernels of windows.cu on CuPy arrays: compiled once per dtype, then cached.

Shapes: x (N, C, H, W), col (C*KH*KW, N*OH*OW) (columns by channel, the transpose
of functional.conv.im2col), pooled and first_max (N, C, OH, OW). kernel_size, stride,
padding and out_size = (OH, OW) are (h, w) pairs; out_size comes from the caller
(minicnn.windows.output_shape), so the formula exists once.
"""

import functools
import pathlib

import numpy as np

from ..backend import get_array_module

SOURCE = pathlib.Path(__file__).with_name("windows.cu").read_text()
GPU_PRELUDE = """
#define KERNEL extern "C" __global__
#define LOOP(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \\
                        i += (long long)blockDim.x * gridDim.x)
"""
THREADS = 256
MAX_BLOCKS = 65535  # the grid-stride loop covers any size with at most this many blocks


@functools.lru_cache(maxsize=None)
def _module(cupy, type_name):
    return cupy.RawModule(code=f"typedef {type_name} T;\n{GPU_PRELUDE}\n{SOURCE}")


def _launch(cupy, name, dtype, total, *args):
    if total == 0:
        return
    kernel = _module(cupy, {"float32": "float", "float64": "double"}[np.dtype(dtype).name]).get_function(name)
    blocks = min(-(-total // THREADS), MAX_BLOCKS)
    kernel((blocks,), (THREADS,), args)


def geometry(x_shape, kernel_size, stride, padding, out_size):
    """The int32 arguments every kernel takes after `total`; out_size = (OH, OW) from minicnn.windows.output_shape."""
    ints = (*x_shape, *kernel_size, *stride, *padding, *out_size)  # N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW
    return tuple(np.int32(value) for value in ints)


def columns_by_channel(x, kernel_size, stride, padding, out_size):
    """x: (N, C, H, W) -> col: (C*KH*KW, N*OH*OW), one column per window (the transpose of F.im2col).

    Padding reads as zeros.
    """
    cupy = get_array_module(x)
    N, C = x.shape[:2]
    col = cupy.empty((C * kernel_size[0] * kernel_size[1], N * out_size[0] * out_size[1]), dtype=x.dtype)
    _launch(cupy, "columns_by_channel", x.dtype, col.size, cupy.ascontiguousarray(x), col, np.int64(col.size),
            *geometry(x.shape, kernel_size, stride, padding, out_size))
    return col


def add_columns_by_channel(col, x_shape, kernel_size, stride, padding, out_size):
    """col: (C*KH*KW, N*OH*OW) -> (N, C, H, W), summing every window that covers each pixel.

    The adjoint of `columns_by_channel`.
    """
    cupy = get_array_module(col)
    image = cupy.empty(tuple(x_shape), dtype=col.dtype)
    _launch(cupy, "add_columns_by_channel", col.dtype, image.size, cupy.ascontiguousarray(col), image,
            np.int64(image.size), *geometry(x_shape, kernel_size, stride, padding, out_size))
    return image


def conv2d_input_grad(grad_matrix, weight_matrix, x_shape, kernel_size, stride, padding, out_size):
    """grad_matrix: (F, N*OH*OW), weight_matrix: (F, C*KH*KW) -> (N, C, H, W).

    The convolution's input gradient: the product weight_matrix.T @ grad_matrix, then col2im.
    """
    return add_columns_by_channel(weight_matrix.T @ grad_matrix, x_shape, kernel_size, stride, padding, out_size)


def max_pool_forward(x, kernel_size, stride, padding, out_size):
    """x: (N, C, H, W) -> (pooled, first_max), both (N, C, OH, OW); first_max is int32."""
    cupy = get_array_module(x)
    pooled = cupy.empty(x.shape[:2] + tuple(out_size), dtype=x.dtype)
    first_max = cupy.empty(pooled.shape, dtype=cupy.int32)
    _launch(cupy, "max_pool_forward", x.dtype, pooled.size, cupy.ascontiguousarray(x), pooled, first_max,
            np.int64(pooled.size), *geometry(x.shape, kernel_size, stride, padding, out_size), x.dtype.type(-np.inf))
    return pooled, first_max


def max_pool_backward(grad, first_max, x_shape, kernel_size, stride, padding):
    """grad, first_max: (N, C, OH, OW) -> (N, C, H, W); first_max may come from any path (cast to int32 here)."""
    cupy = get_array_module(grad)
    grad_x = cupy.empty(tuple(x_shape), dtype=grad.dtype)
    first_max = cupy.ascontiguousarray(first_max, dtype=cupy.int32)
    _launch(cupy, "max_pool_backward", grad.dtype, grad_x.size, cupy.ascontiguousarray(grad), first_max, grad_x,
            np.int64(grad_x.size), *geometry(x_shape, kernel_size, stride, padding, grad.shape[2:]))
    return grad_x
