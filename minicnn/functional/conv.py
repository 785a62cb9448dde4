"""2-d convolution by im2col: every receptive field becomes one row of a matrix.

With x: (N, C, H, W) and weight: (F, C, KH, KW), im2col lays out the windows as
col: (N*OH*OW, C*KH*KW), one row per window, so the convolution is one matrix
product of col with the flattened filters. Its backward is two matrix products
and col2im, which adds each window's gradient back where the window came from.

This module is the reference, written as a textbook would. minicnn.kernels
computes the same numbers faster: forward and backward each ask it once, at
their top (`kernels.conv2d`, `kernels.conv2d_backward`), and run the reference
below when it answers None (the fast paths are off: MINICNN_FAST=0 or
`kernels.reference_only()`).
"""

from .. import kernels
from ..backend import get_array_module
from ..errors import ShapeError
from ..tensor import Operation
from ..windows import add_windows, check_window_sizes, crop_padding, pad_image, pair, sliding_windows


def im2col(x, kernel_size, stride=1, padding=0):
    """x: (N, C, H, W) -> col: (N*OH*OW, C*KH*KW), one row per window, each row laid out as (C, KH, KW).

    kernel_size, stride, padding: an int or an (h, w) pair; padding adds zeros on both sides.
    """
    kernel_size, stride, padding = pair(kernel_size, "kernel_size"), pair(stride, "stride"), pair(padding, "padding")
    out_size = check_window_sizes("im2col", x.shape, x.dtype.itemsize, kernel_size, stride, padding)
    col = kernels.im2col(x, kernel_size, stride, padding, out_size)  # a fast path, or None
    return _im2col(x, kernel_size, stride, padding) if col is None else col


def col2im(col, x_shape, kernel_size, stride=1, padding=0):
    """col: (N*OH*OW, C*KH*KW) -> (N, C, H, W): the adjoint of im2col, summing where windows overlap."""
    kernel_size, stride, padding = pair(kernel_size, "kernel_size"), pair(stride, "stride"), pair(padding, "padding")
    out_size = check_window_sizes("col2im", x_shape, col.dtype.itemsize, kernel_size, stride, padding,
                                  copies_windows=False)  # col exists already; the image is new
    image = kernels.col2im(col, x_shape, kernel_size, stride, padding, out_size)  # a fast path, or None
    return _col2im(col, x_shape, kernel_size, stride, padding, out_size) if image is None else image


def _im2col(x, kernel_size, stride, padding):
    """im2col's reference, on sizes already checked."""
    windows = sliding_windows(pad_image(x, padding), kernel_size, stride)  # (N, C, OH, OW, KH, KW), a view
    N, _, out_height, out_width = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(N * out_height * out_width, -1)  # the one copy


def _col2im(col, x_shape, kernel_size, stride, padding, out_size):
    """col2im's reference, on sizes already checked; out_size: (OH, OW)."""
    N, C, H, W = x_shape
    (KH, KW), (PH, PW) = kernel_size, padding
    window_grads = col.reshape(N, *out_size, C, KH, KW).transpose(0, 3, 1, 2, 4, 5)  # (N, C, OH, OW, KH, KW)
    padded = add_windows(window_grads, (N, C, H + 2 * PH, W + 2 * PW), stride)
    return crop_padding(padded, padding)


class Conv2dOp(Operation):
    """The conv2d operation (cross-correlation).  x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,) -> (N, F, OH, OW).

    OH = (H + 2 PH - KH) // SH + 1, likewise OW (minicnn.windows.output_size).
    """

    input_names = ("input", "weight", "bias")

    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = pair(stride, "stride"), pair(padding, "padding")
        if min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0, got stride={stride}, padding={padding}")

    def forward(self, x, weight, bias=None):
        """x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,) or None -> (N, F, OH, OW)."""
        out_height, out_width = _check_conv(x, weight, bias, self.stride, self.padding)
        self.x_shape, self.weight = x.shape, weight
        fast = kernels.conv2d(x, weight, bias, self.stride, self.padding, (out_height, out_width))  # or None
        if fast is not None:
            out, col = fast
        else:
            N, F = x.shape[0], weight.shape[0]
            col = _im2col(x, weight.shape[2:], self.stride, self.padding)  # (N*OH*OW, C*KH*KW)
            weight_matrix = weight.reshape(F, -1)  # (F, C*KH*KW), one filter per row
            # Every filter against every window. Filter-major (F, N*OH*OW) rather than col @ weight_matrix.T:
            # the same numbers, but then (N, F, OH, OW) is a copy of whole OH*OW planes, not a transpose.
            out = weight_matrix @ col.T
            if bias is not None:
                out += bias[:, None]
            out = out.reshape(F, N, out_height, out_width).transpose(1, 0, 2, 3)
            out = get_array_module(out).ascontiguousarray(out)
        self.col = col if self.needs_input_grad[1] else None  # the weight's gradient needs every window
        return out

    def backward(self, grad):
        """grad: (N, F, OH, OW) -> gradients of x, weight and bias (None where not needed)."""
        wanted = (self.needs_input_grad + (False,))[:3]  # x, weight, bias (False when there is no bias)
        fast = kernels.conv2d_backward(grad, self.weight, self.col, self.x_shape, self.stride, self.padding, wanted)
        if fast is not None:
            return fast
        F = grad.shape[1]
        grad_matrix = grad.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, N*OH*OW), as `out` was laid out
        weight_matrix = self.weight.reshape(F, -1)  # (F, C*KH*KW)
        grad_x = grad_weight = grad_bias = None
        if wanted[0]:
            grad_col = grad_matrix.T @ weight_matrix  # (N*OH*OW, C*KH*KW): each window's gradient
            grad_x = _col2im(grad_col, self.x_shape, self.weight.shape[2:], self.stride, self.padding, grad.shape[2:])
        if wanted[1]:
            grad_weight = (grad_matrix @ self.col).reshape(self.weight.shape)
        if wanted[2]:
            grad_bias = grad_matrix.sum(axis=1)
        return grad_x, grad_weight, grad_bias


def _check_conv(x, weight, bias, stride, padding):
    """Refuse mismatched shapes, an empty batch or windows past the memory limit; return (OH, OW)."""
    if x.ndim != 4 or weight.ndim != 4:
        raise ShapeError(
            f"conv2d: expected input (N, C, H, W) and weight (F, C, KH, KW), got input {x.shape} "
            f"and weight {weight.shape}"
        )
    if x.shape[1] != weight.shape[1]:
        raise ShapeError(
            f"conv2d: input has {x.shape[1]} channels (shape {x.shape}) but weight {weight.shape} "
            f"expects {weight.shape[1]}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ShapeError(f"conv2d: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    padded = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    if padded[0] < weight.shape[2] or padded[1] < weight.shape[3]:
        raise ShapeError(
            f"conv2d: kernel {weight.shape[2:]} (weight {weight.shape}) is larger than the padded input "
            f"{padded} (input {x.shape}, padding {padding})"
        )
    # Before the padded image and the columns exist (in the reference or in a fast path).
    return check_window_sizes("conv2d", x.shape, x.dtype.itemsize, weight.shape[2:], stride, padding)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-d convolution.  x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,) or None -> (N, F, OH, OW).

    stride, padding: an int or an (h, w) pair; padding adds zeros on both sides.
    """
    operation = Conv2dOp(stride, padding)
    return operation(x, weight) if bias is None else operation(x, weight, bias)
