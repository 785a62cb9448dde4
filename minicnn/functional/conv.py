"""2-d convolution by im2col: every receptive field becomes one column of a matrix.

With x: (N, C, H, W) and weight: (F, C, KH, KW), `columns` lays out the windows
as col: (C*KH*KW, N*OH*OW), so the convolution is one matrix product
weight.reshape(F, -1) @ col. Its backward is two matrix products and
`add_columns` (col2im), which adds each window's gradient back into the image,
looping over the KH*KW kernel offsets (each offset writes a non-overlapping
strided slice).

Why channel-and-offset-major columns rather than one row per window: the copy
that builds them then reads whole image rows, and col2im reads contiguous
(N, OH, OW) blocks; with one row per window both walk memory KW elements at a
time (3.5x slower for the `cnn` model's second layer). The public `im2col` gives
the textbook one-row-per-window matrix as a transposed view of the same array.
"""

from ..backend import as_strided, get_array_module
from ..errors import ShapeError
from ..tensor import Operation


def pair(value, name):
    """An int or an (h, w) pair as a tuple of two ints."""
    if isinstance(value, int):
        return value, value
    try:
        h, w = value
        return int(h), int(w)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or an (h, w) pair, got {value!r}") from None


def output_size(size, kernel, stride, padding):
    """Number of window positions along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def pad_image(x, padding, value=0.0):
    """Pad the two spatial axes of (N, C, H, W) by (ph, pw) on each side with `value`."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="constant", constant_values=value)


def sliding_windows(x_padded, kernel_size, stride):
    """A read-only view (N, C, OH, OW, KH, KW) of every window of an already padded image."""
    xp = get_array_module(x_padded)
    N, C, H, W = x_padded.shape
    (KH, KW), (SH, SW) = kernel_size, stride
    out_height, out_width = (H - KH) // SH + 1, (W - KW) // SW + 1
    sN, sC, sH, sW = x_padded.strides
    return as_strided(
        xp,
        x_padded,
        shape=(N, C, out_height, out_width, KH, KW),
        strides=(sN, sC, sH * SH, sW * SW, sH, sW),
    )


def add_windows(window_grads, padded_shape, stride):
    """Sum window gradients (N, C, OH, OW, KH, KW) into a zero image of `padded_shape`.

    The adjoint of `sliding_windows`. One pass per kernel offset (i, j): the
    slice it writes holds each pixel at most once, so `+=` is exact there.
    """
    xp = get_array_module(window_grads)
    _, _, out_height, out_width, KH, KW = window_grads.shape
    image = xp.zeros(padded_shape, dtype=window_grads.dtype)
    for i in range(KH):
        for j in range(KW):
            image[offset_slices(i, j, stride, out_height, out_width)] += window_grads[:, :, :, :, i, j]
    return image


def offset_slices(i, j, stride, out_height, out_width):
    """The index of the pixels that kernel offset (i, j) covers in every window: (N, C, OH, OW) of them."""
    SH, SW = stride
    rows = slice(i, i + SH * (out_height - 1) + 1, SH)
    cols = slice(j, j + SW * (out_width - 1) + 1, SW)
    return slice(None), slice(None), rows, cols


def crop_padding(x_padded, padding):
    """Undo `pad_image`."""
    ph, pw = padding
    H, W = x_padded.shape[2:]
    return x_padded[:, :, ph : H - ph, pw : W - pw]


def columns(x, kernel_size, stride, padding):
    """x: (N, C, H, W) -> col: (C*KH*KW, N*OH*OW), one column per window (one strided view, one copy)."""
    windows = sliding_windows(pad_image(x, padding), kernel_size, stride)  # (N, C, OH, OW, KH, KW) view
    N, C, out_height, out_width, KH, KW = windows.shape
    col = get_array_module(x).ascontiguousarray(windows.transpose(1, 4, 5, 0, 2, 3))  # (C, KH, KW, N, OH, OW)
    return col.reshape(C * KH * KW, N * out_height * out_width)


def add_columns(col, x_shape, kernel_size, stride, padding):
    """col: (C*KH*KW, N*OH*OW) -> (N, C, H, W): the adjoint of `columns` (overlaps are summed).

    One pass per kernel offset (i, j): the slice it writes holds each pixel at most
    once, so `+=` is exact there.
    """
    N, C, H, W = x_shape
    (KH, KW), (ph, pw) = kernel_size, padding
    out_height, out_width = output_size(H, KH, stride[0], ph), output_size(W, KW, stride[1], pw)
    col = col.reshape(C, KH, KW, N, out_height, out_width)
    image = get_array_module(col).zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=col.dtype)
    for i in range(KH):
        for j in range(KW):
            image[offset_slices(i, j, stride, out_height, out_width)] += col[:, i, j].transpose(1, 0, 2, 3)
    return crop_padding(image, padding)


def im2col(x, kernel_size, stride=1, padding=0):
    """x: (N, C, H, W) -> col: (N*OH*OW, C*KH*KW), one row per window (a transposed view of `columns`)."""
    kernel_size, stride, padding = pair(kernel_size, "kernel_size"), pair(stride, "stride"), pair(padding, "padding")
    return columns(x, kernel_size, stride, padding).T


def col2im(col, x_shape, kernel_size, stride=1, padding=0):
    """col: (N*OH*OW, C*KH*KW) -> (N, C, H, W): the adjoint of im2col (overlaps are summed)."""
    kernel_size, stride, padding = pair(kernel_size, "kernel_size"), pair(stride, "stride"), pair(padding, "padding")
    return add_columns(col.T, x_shape, kernel_size, stride, padding)


class Conv2d(Operation):
    """Cross-correlation.  x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,) -> (N, F, OH, OW).

    OH = (H + 2 ph - KH) // sh + 1, likewise OW.
    """

    input_names = ("input", "weight", "bias")

    def __init__(self, stride=1, padding=0):
        self.stride, self.padding = pair(stride, "stride"), pair(padding, "padding")
        if min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0, got stride={stride}, padding={padding}")

    def forward(self, x, weight, bias=None):
        _check_conv_shapes(x, weight, bias, self.padding)
        N, C, H, W = x.shape
        F, _, KH, KW = weight.shape
        out_height = output_size(H, KH, self.stride[0], self.padding[0])
        out_width = output_size(W, KW, self.stride[1], self.padding[1])
        col = columns(x, (KH, KW), self.stride, self.padding)
        weight_matrix = weight.reshape(F, -1)
        out = weight_matrix @ col  # (F, N*OH*OW)
        if bias is not None:
            out += bias[:, None]
        self.x_shape, self.kernel_size, self.weight_matrix = x.shape, (KH, KW), weight_matrix
        self.col = col if self.needs_input_grad[1] else None
        out = out.reshape(F, N, out_height, out_width).transpose(1, 0, 2, 3)
        return get_array_module(out).ascontiguousarray(out)

    def backward(self, grad):
        F = grad.shape[1]
        grad_matrix = grad.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, N*OH*OW)
        grad_x = grad_weight = grad_bias = None
        if self.needs_input_grad[0]:
            grad_col = self.weight_matrix.T @ grad_matrix  # (C*KH*KW, N*OH*OW)
            grad_x = add_columns(grad_col, self.x_shape, self.kernel_size, self.stride, self.padding)
        if self.needs_input_grad[1]:
            grad_weight = (grad_matrix @ self.col.T).reshape((F, self.x_shape[1]) + self.kernel_size)
        if len(self.needs_input_grad) == 3 and self.needs_input_grad[2]:
            grad_bias = grad_matrix.sum(axis=1)
        return grad_x, grad_weight, grad_bias


def _check_conv_shapes(x, weight, bias, padding):
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


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-d convolution.  x: (N, C, H, W), weight: (F, C, KH, KW), bias: (F,) or None -> (N, F, OH, OW).

    stride, padding: an int or an (h, w) pair; padding adds zeros on both sides.
    """
    operation = Conv2d(stride, padding)
    return operation(x, weight) if bias is None else operation(x, weight, bias)
