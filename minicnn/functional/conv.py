"""2-d convolution by im2col: every receptive field becomes one column of a matrix.

With x: (N, C, H, W) and weight: (F, C, KH, KW), `columns` lays out the windows
as col: (C*KH*KW, N*OH*OW), so the convolution is one matrix product
weight.reshape(F, -1) @ col. Its backward is two matrix products and
col2im, which adds each window's gradient back into the image, looping over the
KH*KW kernel offsets (each offset writes a non-overlapping strided slice); the
layout that makes those writes long runs is explained in `add_wide_columns`.

Why channel-and-offset-major columns rather than one row per window: the copy
that builds them then reads whole image rows, and col2im reads contiguous
(N, OH, OW) blocks; with one row per window both walk memory KW elements at a
time (3.5x slower for the `cnn` model's second layer). The public `im2col` gives
the textbook one-row-per-window matrix as a transposed view of the same array.
"""

from .. import kernels
from ..backend import as_strided, get_array_module
from ..errors import ShapeError
from ..kernels import cupy_windows
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
    if kernels.active_for(x):
        return cupy_windows.im2col(x, kernel_size, stride, padding)
    windows = sliding_windows(pad_image(x, padding), kernel_size, stride)  # (N, C, OH, OW, KH, KW) view
    N, C, out_height, out_width, KH, KW = windows.shape
    col = get_array_module(x).ascontiguousarray(windows.transpose(1, 4, 5, 0, 2, 3))  # (C, KH, KW, N, OH, OW)
    return col.reshape(C * KH * KW, N * out_height * out_width)


def phase_grid(x_shape, kernel_size, stride, padding):
    """Shapes for `add_wide_columns`: (OH, OW, HQ, WQ).

    A stride (SH, SW) splits the padded image into SH*SW phases, the pixels
    (SH*r + a, SW*c + b) for fixed (a, b); each phase is an HQ x WQ grid. Kernel
    offset (i, j) only ever touches phase (i % SH, j % SW), as a stride-1 shift.
    """
    _, _, H, W = x_shape
    (KH, KW), (SH, SW), (ph, pw) = kernel_size, stride, padding
    out_height, out_width = output_size(H, KH, SH, ph), output_size(W, KW, SW, pw)
    return out_height, out_width, -(-(H + 2 * ph) // SH), -(-(W + 2 * pw) // SW)


def widen(a, width):
    """(..., OH, OW) -> (..., OH, width), padded on the right with zeros (width >= OW)."""
    wide = get_array_module(a).zeros(a.shape[:-1] + (width,), dtype=a.dtype)
    wide[..., : a.shape[-1]] = a
    return wide


def add_wide_columns(wide_col, x_shape, kernel_size, stride, padding):
    """wide_col: (C*KH*KW, N*OH*WQ), column gradients whose rows are widened to WQ -> (N, C, H, W).

    The adjoint of `columns`, given its gradient in rows padded with zeros from
    OW to the phase grid's width WQ (`phase_grid`, `widen`). In that layout one
    kernel offset's windows cover a phase as a single run of OH*WQ consecutive
    pixels per image, so each of the KH*KW passes is one `+=` over long
    contiguous rows instead of N*C*OH rows of OW elements (NumPy's cost is per
    row). The padding zeros land on pixels of the same phase, adding nothing; a
    spare grid row past the end catches those of the last rows. Each pass holds
    every pixel at most once, so `+=` is exact.
    """
    N, C, H, W = x_shape
    (KH, KW), (SH, SW), (ph, pw) = kernel_size, stride, padding
    out_height, _, grid_height, grid_width = phase_grid(x_shape, kernel_size, stride, padding)
    run = out_height * grid_width
    wide_col = wide_col.reshape(C, KH, KW, N, run)
    # Rows of phase a, in order, then those of phase a + 1: within phase (a, b) grid pixel (r, c) sits
    # SW * (r * WQ + c) elements after its first, so a run of the grid is a slice with step SW.
    bands = get_array_module(wide_col).zeros((C, N, SH, (grid_height + 1) * grid_width * SW), dtype=wide_col.dtype)
    for i in range(KH):
        for j in range(KW):
            start = ((i // SH) * grid_width + j // SW) * SW + j % SW
            bands[:, :, i % SH, start : start + SW * run : SW] += wide_col[:, i, j]
    bands = bands[..., : grid_height * grid_width * SW].reshape(C, N, SH, grid_height, grid_width * SW)
    image = bands.transpose(1, 0, 3, 2, 4).reshape(N, C, grid_height * SH, grid_width * SW)  # interleave the bands
    return get_array_module(image).ascontiguousarray(image[:, :, ph : ph + H, pw : pw + W])


def add_columns(col, x_shape, kernel_size, stride, padding):
    """col: (C*KH*KW, N*OH*OW) -> (N, C, H, W): the adjoint of `columns` (overlaps are summed)."""
    if kernels.active_for(col):
        return cupy_windows.col2im(col, x_shape, kernel_size, stride, padding)
    out_height, out_width, _, grid_width = phase_grid(x_shape, kernel_size, stride, padding)
    wide_col = widen(col.reshape(-1, out_height, out_width), grid_width)
    return add_wide_columns(wide_col, x_shape, kernel_size, stride, padding)


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
        grad_by_filter = grad.transpose(1, 0, 2, 3)  # (F, N, OH, OW) view
        grad_matrix = grad_by_filter.reshape(F, -1)  # (F, N*OH*OW)
        grad_x = grad_weight = grad_bias = None
        if self.needs_input_grad[0]:
            settings = self.x_shape, self.kernel_size, self.stride, self.padding
            if kernels.active_for(grad):
                grad_x = cupy_windows.col2im(self.weight_matrix.T @ grad_matrix, *settings)
            else:
                # Widening the gradient before the product gives col2im long rows (see `add_wide_columns`);
                # widening (F, ...) costs far less than widening the product's (C*KH*KW, ...).
                grad_wide = widen(grad_by_filter, phase_grid(*settings)[3]).reshape(F, -1)  # (F, N*OH*WQ)
                grad_x = add_wide_columns(self.weight_matrix.T @ grad_wide, *settings)
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
