"""Launch the kernels of windows.cu on CuPy arrays: compiled once per dtype, then cached.

Shapes as in minicnn.functional.conv: x (N, C, H, W), col (C*KH*KW, N*OH*OW),
pooled and first_max (N, C, OH, OW). kernel_size, stride, padding are (h, w) pairs.
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


def _geometry(x_shape, kernel_size, stride, padding):
    """(OH, OW) and the int32 arguments every kernel takes after `total`."""
    N, C, H, W = x_shape
    (KH, KW), (SH, SW), (PH, PW) = kernel_size, stride, padding
    out_height, out_width = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    ints = (N, C, H, W, KH, KW, SH, SW, PH, PW, out_height, out_width)
    return out_height, out_width, tuple(np.int32(value) for value in ints)


def im2col(x, kernel_size, stride, padding):
    """x: (N, C, H, W) -> col: (C*KH*KW, N*OH*OW); padding reads as zeros."""
    cupy = get_array_module(x)
    N, C = x.shape[:2]
    out_height, out_width, ints = _geometry(x.shape, kernel_size, stride, padding)
    col = cupy.empty((C * kernel_size[0] * kernel_size[1], N * out_height * out_width), dtype=x.dtype)
    _launch(cupy, "im2col", x.dtype, col.size, cupy.ascontiguousarray(x), col, np.int64(col.size), *ints)
    return col


def col2im(col, x_shape, kernel_size, stride, padding):
    """col: (C*KH*KW, N*OH*OW) -> (N, C, H, W), summing every window that covers each pixel."""
    cupy = get_array_module(col)
    _, _, ints = _geometry(x_shape, kernel_size, stride, padding)
    image = cupy.empty(tuple(x_shape), dtype=col.dtype)
    _launch(cupy, "col2im", col.dtype, image.size, cupy.ascontiguousarray(col), image, np.int64(image.size), *ints)
    return image


def max_pool_forward(x, kernel_size, stride, padding):
    """x: (N, C, H, W) -> (pooled, first_max), both (N, C, OH, OW); first_max is int32."""
    cupy = get_array_module(x)
    N, C = x.shape[:2]
    out_height, out_width, ints = _geometry(x.shape, kernel_size, stride, padding)
    pooled = cupy.empty((N, C, out_height, out_width), dtype=x.dtype)
    first_max = cupy.empty(pooled.shape, dtype=cupy.int32)
    _launch(cupy, "max_pool_forward", x.dtype, pooled.size, cupy.ascontiguousarray(x), pooled, first_max,
            np.int64(pooled.size), *ints, x.dtype.type(-np.inf))
    return pooled, first_max


def max_pool_backward(grad, first_max, x_shape, kernel_size, stride, padding):
    """grad, first_max: (N, C, OH, OW) -> (N, C, H, W)."""
    cupy = get_array_module(grad)
    _, _, ints = _geometry(x_shape, kernel_size, stride, padding)
    grad_x = cupy.empty(tuple(x_shape), dtype=grad.dtype)
    _launch(cupy, "max_pool_backward", grad.dtype, grad_x.size, cupy.ascontiguousarray(grad), first_max, grad_x,
            np.int64(grad_x.size), *ints)
    return grad_x
