"""Fast elementwise and layout passes for NumPy: ReLU, the convolution's output and gradient layouts.

Each function equals a reference in minicnn.functional (named in its docstring;
tests/test_kernels.py checks it) and is cut into parts along the batch, channel
or flat axis (threads.for_each_part). Every element is computed by the same
ufunc call as in the reference and each part writes its own slice, so the
results are the same bit for bit with any thread count.

Channel-major activations. A convolution's product comes out filter-major,
(F, N*OH*OW); the fast path hands it on as it is, viewed as (N, F, OH, OW) with
the first two axes' strides swapped (`channel_major`), instead of copying it into
(N, F, OH, OW) order. Max pooling and ReLU keep the layout they are given
(`empty_like_layout`), and the convolution's backward reads a channel-major
gradient as its (F, N*OH*OW) matrix without a copy. Every tensor keeps its
(N, C, H, W) shape and values; only the memory order differs, and Flatten's
reshape makes the one copy into (N, C*H*W) order.
"""

import math

from ..backend import get_array_module
from .threads import for_each_part


def channel_major(array):
    """True for an (N, C, H, W) array stored as (C, N, H, W): the transpose of a C-contiguous one."""
    return array.ndim == 4 and not array.flags.c_contiguous and array.transpose(1, 0, 2, 3).flags.c_contiguous


def channel_rows(array):
    """(N, C, H, W) channel-major -> its (C, N*H*W) view: each channel's values one contiguous row."""
    return array.transpose(1, 0, 2, 3).reshape(array.shape[1], -1)


def from_channel_rows(matrix, shape):
    """(C, N*H*W) C-contiguous -> the (N, C, H, W) = `shape` channel-major view of it."""
    return matrix.reshape(shape[1], shape[0], *shape[2:]).transpose(1, 0, 2, 3)


def empty_channel_major(shape, dtype, xp):
    """An empty (N, C, H, W) array of `shape` (xp: numpy or cupy), stored channel-major."""
    return from_channel_rows(xp.empty((shape[1], shape[0] * math.prod(shape[2:])), dtype=dtype), shape)


def empty_like_layout(like, shape, dtype):
    """An empty (N, C, ...) array of `shape`, channel-major in memory when `like` is, else C-contiguous."""
    xp = get_array_module(like)
    return empty_channel_major(shape, dtype, xp) if channel_major(like) else xp.empty(shape, dtype=dtype)


def dense(array):
    """True when the array's elements fill one block of memory in C order or channel-major order."""
    return array.flags.c_contiguous or channel_major(array)


def relu_forward(x):
    """x: any shape, `dense` -> (max(x, 0), x > 0) in x's layout, as functional.activations.ReLUOp.forward."""
    xp = get_array_module(x)
    out, positive = empty_like_layout(x, x.shape, x.dtype), empty_like_layout(x, x.shape, bool)
    flat_x, flat_out, flat_positive = (array.ravel(order="K") for array in (x, out, positive))  # views, memory order

    def work(start, stop):
        xp.greater(flat_x[start:stop], 0, out=flat_positive[start:stop])
        xp.maximum(flat_x[start:stop], 0, out=flat_out[start:stop])

    for_each_part(work, x.size, 2 * x.size, x)
    return out, positive


def relu_backward(grad, positive):
    """grad, positive: the same shape and the same `dense` layout -> grad * positive, as ReLUOp.backward."""
    xp = get_array_module(grad)
    grad_x = empty_like_layout(grad, grad.shape, xp.result_type(grad, positive))
    flat_grad, flat_positive, flat_out = (array.ravel(order="K") for array in (grad, positive, grad_x))

    def work(start, stop):
        xp.multiply(flat_grad[start:stop], flat_positive[start:stop], out=flat_out[start:stop])

    for_each_part(work, grad.size, 2 * grad.size, grad)
    return grad_x


def conv2d_output(out_matrix, bias, batch, out_size):
    """out_matrix: (F, N*OH*OW), C-contiguous, bias: (F,) or None -> (N, F, OH, OW), a channel-major view of it.

    functional.conv.Conv2dOp.forward adds the bias to the product and then copies it into
    (N, F, OH, OW) order. Here the bias is added in place and the product stays where it is:
    the same values (each element gets the one addition it got there), one in-place pass
    over contiguous rows instead of a transposing copy.
    """
    xp = get_array_module(out_matrix)
    F = out_matrix.shape[0]
    if bias is not None:
        def work(start, stop):
            xp.add(out_matrix[start:stop], bias[start:stop, None], out=out_matrix[start:stop])

        for_each_part(work, F, out_matrix.size, out_matrix)
    return from_channel_rows(out_matrix, (batch, F, *out_size))


def conv2d_grad_matrix(grad, with_bias):
    """grad: (N, F, OH, OW), `dense` -> (grad_matrix: (F, N*OH*OW), its row sums (F,) or None), as Conv2dOp.backward.

    A channel-major grad already is the matrix (a view). Otherwise the parts, cut along F,
    copy their filters' planes; each part sums its own rows, so the sums run over the same
    contiguous rows in the same order as grad_matrix.sum(axis=1).
    """
    xp = get_array_module(grad)
    N, F = grad.shape[:2]
    grad_bias = xp.empty(F, dtype=grad.dtype) if with_bias else None
    if channel_major(grad):
        grad_matrix, source = channel_rows(grad).reshape(F, N, -1), None
    else:
        grad_matrix = xp.empty((F, N, grad.shape[2] * grad.shape[3]), dtype=grad.dtype)
        source = grad.reshape(N, F, -1).transpose(1, 0, 2)  # (F, N, OH*OW), a view

    def work(start, stop):
        if source is not None:
            xp.copyto(grad_matrix[start:stop], source[start:stop])
        if with_bias:
            grad_bias[start:stop] = grad_matrix[start:stop].reshape(stop - start, -1).sum(axis=1)

    for_each_part(work, F, grad.size, grad)
    return grad_matrix.reshape(F, -1), grad_bias
