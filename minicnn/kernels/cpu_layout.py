"""Fast elementwise and layout passes for NumPy: ReLU, the convolution's output and gradient layouts.

Each function equals a reference in minicnn.functional (named in its docstring;
tests/test_kernels.py checks it) and is cut into parts along the batch, channel
or flat axis (threads.for_each_part). Every element is computed by the same
ufunc call as in the reference and each part writes its own slice, so the
results are the same bit for bit with any thread count.
"""

from ..backend import get_array_module
from .threads import for_each_part


def relu_forward(x):
    """x: any shape, C-contiguous -> (max(x, 0), x > 0), as functional.activations.ReLUOp.forward."""
    xp = get_array_module(x)
    out, positive = xp.empty(x.shape, dtype=x.dtype), xp.empty(x.shape, dtype=bool)
    flat_x, flat_out, flat_positive = x.reshape(-1), out.reshape(-1), positive.reshape(-1)

    def work(start, stop):
        xp.greater(flat_x[start:stop], 0, out=flat_positive[start:stop])
        xp.maximum(flat_x[start:stop], 0, out=flat_out[start:stop])

    for_each_part(work, x.size, 2 * x.size, x)
    return out, positive


def relu_backward(grad, positive):
    """grad, positive: the same shape, C-contiguous -> grad * positive, as ReLUOp.backward."""
    xp = get_array_module(grad)
    grad_x = xp.empty(grad.shape, dtype=xp.result_type(grad, positive))
    flat_grad, flat_positive, flat_out = grad.reshape(-1), positive.reshape(-1), grad_x.reshape(-1)

    def work(start, stop):
        xp.multiply(flat_grad[start:stop], flat_positive[start:stop], out=flat_out[start:stop])

    for_each_part(work, grad.size, 2 * grad.size, grad)
    return grad_x


def conv2d_output(out_matrix, bias, batch, out_size):
    """out_matrix: (F, N*OH*OW), bias: (F,) or None -> (N, F, OH, OW) = out_matrix + bias[:, None], transposed.

    functional.conv.Conv2dOp.forward adds the bias to the product and then copies it into
    (N, F, OH, OW) order: two passes over the output. Here the add writes straight into the
    new layout, one pass, with the same sums (each element gets the one addition it got there).
    """
    xp = get_array_module(out_matrix)
    F = out_matrix.shape[0]
    planes = out_matrix.reshape(F, batch, -1).transpose(1, 0, 2)  # (N, F, OH*OW), a view
    out = xp.empty((batch, F, out_size[0] * out_size[1]), dtype=out_matrix.dtype)

    def work(start, stop):
        if bias is None:
            xp.copyto(out[start:stop], planes[start:stop])
        else:
            xp.add(planes[start:stop], bias[:, None], out=out[start:stop])

    for_each_part(work, batch, out.size, out_matrix)
    return out.reshape(batch, F, *out_size)


def conv2d_grad_matrix(grad, with_bias):
    """grad: (N, F, OH, OW) -> (grad_matrix: (F, N*OH*OW), its row sums (F,) or None), as Conv2dOp.backward.

    Cut along F: each part copies its filters' planes and sums its own rows, so the sums run
    over the same contiguous rows in the same order as grad_matrix.sum(axis=1).
    """
    xp = get_array_module(grad)
    N, F = grad.shape[:2]
    grad_matrix = xp.empty((F, N, grad.shape[2] * grad.shape[3]), dtype=grad.dtype)
    grad_bias = xp.empty(F, dtype=grad.dtype) if with_bias else None
    source = grad.reshape(N, F, -1).transpose(1, 0, 2)  # (F, N, OH*OW), a view

    def work(start, stop):
        xp.copyto(grad_matrix[start:stop], source[start:stop])
        if with_bias:
            grad_bias[start:stop] = grad_matrix[start:stop].reshape(stop - start, -1).sum(axis=1)

    for_each_part(work, F, grad.size, grad)
    return grad_matrix.reshape(F, -1), grad_bias
