"""Fast window operations for NumPy: layouts and loops chosen for NumPy's cost model, not for reading.

Each function equals a reference in minicnn.functional (named in its
docstring; tests/test_kernels.py checks it on random shapes). NumPy's cost is
per pass and per row, so these trade the textbook layouts for fewer, longer
passes; benchmarks/NOTES.md (steps 2 to 4) has the measurements behind each
choice. The code is array-module code, so CuPy arrays the raw kernels do not
take (float16) run it too.

Shapes: x (N, C, H, W); kernel_size, stride, padding and out_size = (OH, OW)
are (h, w) pairs, out_size as minicnn.windows.output_shape gives it (the caller
has it from its size check, so it is passed in). The padding and the window
view are minicnn.windows', the ones the references use.

Layout: max pooling keeps the layout of its input, C order or channel-major (cpu_layout.py),
for its output, its argmax and its input's gradient.

Threads: each pass is cut along the batch or channel axis (threads.for_each_part)
and every part writes its own slice of the output, running the same loop as one
thread would, so the results are the same bit for bit with any thread count.
"""

from ..backend import get_array_module
from ..windows import crop_padding, offset_slices, pad_image, sliding_windows
from .cpu_layout import empty_channel_major, empty_like_layout
from .threads import for_each_part, matmul, num_threads


# ----- im2col and col2im ------------------------------------------------------------------------


def columns_by_channel(x, kernel_size, stride, padding, out_size):
    """x -> col: (C*KH*KW, N*OH*OW), one column per window: the transpose of functional.conv.im2col.

    Channel-and-offset-major, so the one copy reads whole image rows; one row per
    window walks memory KW elements at a time (3.5x slower for the `cnn` model's
    second layer).
    """
    windows = sliding_windows(pad_image(x, padding), kernel_size, stride)  # (N, C, OH, OW, KH, KW) view
    source = windows.transpose(1, 4, 5, 0, 2, 3)  # (C, KH, KW, N, OH, OW)
    col = get_array_module(x).empty(source.shape, dtype=x.dtype)
    copy_in_parts(col, source, (0, 3))
    return col.reshape(-1, x.shape[0] * out_size[0] * out_size[1])


def copy_in_parts(destination, source, axes):
    """destination[...] = source, cut along the first of `axes` at least as long as the thread count (else the last)."""
    axis = next((axis for axis in axes if destination.shape[axis] >= num_threads()), axes[-1])
    xp = get_array_module(destination)
    before = (slice(None),) * axis

    def copy(start, stop):
        xp.copyto(destination[before + (slice(start, stop),)], source[before + (slice(start, stop),)])

    for_each_part(copy, destination.shape[axis], destination.size, destination)


def phase_grid(x_shape, stride, padding):
    """(HQ, WQ): the size of one phase of the padded image (see `add_wide_columns`).

    A stride (SH, SW) splits the padded image into SH*SW phases, the pixels
    (SH*r + a, SW*c + b) for fixed (a, b); each phase is an HQ x WQ grid. Kernel
    offset (i, j) only ever touches phase (i % SH, j % SW), as a stride-1 shift.
    """
    _, _, H, W = x_shape
    (SH, SW), (PH, PW) = stride, padding
    return -(-(H + 2 * PH) // SH), -(-(W + 2 * PW) // SW)


def widen(a, width):
    """(..., OH, OW) -> (..., OH, width), padded on the right with zeros (width >= OW)."""
    wide = get_array_module(a).zeros(a.shape[:-1] + (width,), dtype=a.dtype)
    wide[..., : a.shape[-1]] = a
    return wide


def add_wide_columns(wide_col, x_shape, kernel_size, stride, padding, out_size):
    """wide_col: (C*KH*KW, N*OH*WQ), column gradients whose rows are widened to WQ -> (N, C, H, W), channel-major.

    The adjoint of `columns_by_channel`, given its gradient in rows padded with
    zeros from OW to the phase grid's width WQ (`phase_grid`, `widen`). In that
    layout one kernel offset's windows cover a phase as a single run of OH*WQ
    consecutive pixels per image, so each of the KH*KW passes is one `+=` over
    long contiguous rows instead of N*C*OH rows of OW elements (NumPy's cost is
    per row). The padding zeros land on pixels of the same phase, adding nothing;
    a spare grid row past the end catches those of the last rows. Each pass holds
    every pixel at most once, so `+=` is exact.
    """
    N, C, H, W = x_shape
    (KH, KW), (SH, SW), (PH, PW) = kernel_size, stride, padding
    grid_height, grid_width = phase_grid(x_shape, stride, padding)
    run = out_size[0] * grid_width
    wide_col = wide_col.reshape(C, KH, KW, N, run)
    xp = get_array_module(wide_col)
    image = empty_channel_major(x_shape, wide_col.dtype, xp)  # as the bands are laid out

    def add_channels(first, last):
        # Rows of phase a, in order, then those of phase a + 1: within phase (a, b) grid pixel (r, c) sits
        # SW * (r * WQ + c) elements after its first, so a run of the grid is a slice with step SW.
        bands = xp.zeros((last - first, N, SH, (grid_height + 1) * grid_width * SW), dtype=wide_col.dtype)
        for i in range(KH):
            for j in range(KW):
                start = ((i // SH) * grid_width + j // SW) * SW + j % SW
                bands[:, :, i % SH, start : start + SW * run : SW] += wide_col[first:last, i, j]
        bands = bands[..., : grid_height * grid_width * SW].reshape(last - first, N, SH, grid_height, grid_width * SW)
        # Interleave the bands (a copy when SH > 1), then the one copy, cropped, into the channel-major image.
        channels = bands.transpose(1, 0, 3, 2, 4).reshape(N, last - first, grid_height * SH, grid_width * SW)
        image[:, first:last] = channels[:, :, PH : PH + H, PW : PW + W]

    for_each_part(add_channels, C, 2 * wide_col.size, wide_col)
    return image


def add_columns_by_channel(col, x_shape, kernel_size, stride, padding, out_size):
    """col: (C*KH*KW, N*OH*OW) -> (N, C, H, W): the adjoint of `columns_by_channel` (overlaps are summed)."""
    wide_col = widen(col.reshape(-1, *out_size), phase_grid(x_shape, stride, padding)[1])
    return add_wide_columns(wide_col, x_shape, kernel_size, stride, padding, out_size)


def conv2d_input_grad(grad_matrix, weight_matrix, x_shape, kernel_size, stride, padding, out_size):
    """grad_matrix: (F, N*OH*OW), weight_matrix: (F, C*KH*KW) -> (N, C, H, W), col2im of weight_matrix.T @ grad_matrix.

    Widening before the product gives `add_wide_columns` its long rows for the
    price of widening the (F, ...) gradient, far smaller than the (C*KH*KW, ...) product.
    """
    F = grad_matrix.shape[0]
    grid_width = phase_grid(x_shape, stride, padding)[1]
    grad_wide = widen(grad_matrix.reshape(F, -1, *out_size), grid_width).reshape(F, -1)  # (F, N*OH*WQ)
    return add_wide_columns(matmul(weight_matrix.T, grad_wide), x_shape, kernel_size, stride, padding, out_size)


# ----- max pooling ------------------------------------------------------------------------------


def max_pool_forward(x, kernel_size, stride, padding, out_size):
    """x -> (pooled, first_max), both (N, C, OH, OW); first_max is the row-major offset of each window's maximum.

    The same numbers as functional.pooling.MaxPool2dOp's argmax over each window,
    NaN included (the first NaN wins), in one pass per kernel offset over
    (N, C, OH, OW) arrays instead of a copy of every window. first_max is one byte
    when a window has at most 256 elements: a quarter of int32's traffic.
    """
    xp = get_array_module(x)
    windows = sliding_windows(pad_image(x, padding, value=-xp.inf), kernel_size, stride)  # (N, C, OH, OW, KH, KW)
    KH, KW = kernel_size
    pooled = empty_like_layout(x, windows.shape[:4], x.dtype)  # channel-major stays channel-major
    first_max = empty_like_layout(x, windows.shape[:4], xp.uint8 if KH * KW <= 256 else xp.int32)

    def pool(start, stop):
        part, best, offsets = windows[start:stop], pooled[start:stop], first_max[start:stop]
        best[...] = part[..., 0, 0]
        offsets[...] = 0
        for offset in range(1, KH * KW):
            candidate = part[..., offset // KW, offset % KW]
            better = candidate > best  # strict, so a later equal value never displaces the first maximum
            # Arithmetic rather than masked writes: a random mask makes those several times slower.
            # offset > first_max here, so the difference never wraps around.
            offsets += better * (offsets.dtype.type(offset) - offsets)
            xp.maximum(best, candidate, out=best)  # a NaN propagates, and `>` against it is never true
        if xp.isnan(best.max()):  # `>` cannot see a NaN arrive: point those windows at their first NaN, as argmax does
            nan_windows = xp.isnan(best)
            offsets[nan_windows] = xp.isnan(part[nan_windows].reshape(-1, KH * KW)).argmax(axis=1)

    for_each_part(pool, x.shape[0], x.size, x)
    return pooled, first_max


def max_pool_backward(grad, first_max, x_shape, kernel_size, stride, padding):
    """grad, first_max: (N, C, OH, OW) -> (N, C, H, W), each window's gradient at its first maximum."""
    xp = get_array_module(grad)
    N, C, H, W = x_shape
    (KH, KW), (SH, SW), (PH, PW) = kernel_size, stride, padding
    out_height, out_width = grad.shape[2:]
    image = empty_like_layout(first_max, (N, C, H + 2 * PH, W + 2 * PW), grad.dtype)  # the input's layout
    overlapping = SH < KH or SW < KW

    def scatter(start, stop):
        part, grad_part, offsets = image[start:stop], grad[start:stop], first_max[start:stop]
        part[...] = 0
        for offset in range(KH * KW):
            pixels = part[offset_slices(*divmod(offset, KW), stride, out_height, out_width)]
            # Arithmetic again (a finite grad is assumed: 0 * inf would spread NaN over the window).
            # Each offset's slice holds every pixel at most once, so += is exact even for overlapping windows;
            # when windows do not overlap no other offset touches these pixels, and the product is written in place.
            if overlapping:
                pixels += grad_part * (offsets == offset)
            else:
                xp.multiply(grad_part, offsets == offset, out=pixels)

    for_each_part(scatter, N, image.size, grad)
    return crop_padding(image, padding)
