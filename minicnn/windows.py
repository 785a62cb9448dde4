"""Window helpers shared by convolution and pooling: sizes, padding, the strided window view and its adjoint.

Convolution and pooling both slide a KH x KW window over a (N, C, H, W) image
with a stride (SH, SW) after padding it by (PH, PW) on each side. Everything
here works on raw NumPy or CuPy arrays; kernel_size, stride and padding are
(h, w) pairs of ints (`pair` makes them).

This module sits below both minicnn.functional (the references) and
minicnn.kernels (the fast paths), so both use the one copy of each helper.
"""

from .backend import as_strided, format_bytes, get_array_module, memory_limit
from .errors import ShapeError


def pair(value, name):
    """An int or an (h, w) pair as a tuple of two ints; `name` is for the error message."""
    if isinstance(value, int):
        return value, value
    try:
        h, w = value
        return int(h), int(w)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or an (h, w) pair, got {value!r}") from None


def output_size(size, kernel, stride, padding):
    """Number of window positions along one axis: (size + 2 * padding - kernel) // stride + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def output_shape(x_shape, kernel_size, stride, padding):
    """(OH, OW) for an image of shape (N, C, H, W): `output_size` along each spatial axis."""
    H, W = x_shape[2:]
    return output_size(H, kernel_size[0], stride[0], padding[0]), output_size(W, kernel_size[1], stride[1], padding[1])


def check_window_sizes(operation, x_shape, itemsize, kernel_size, stride, padding, copies_windows=True):
    """Refuse, before anything is allocated, a batch that is empty or whose windows need too much memory.

    operation: the name for messages ('conv2d', 'max_pool2d', ...). x_shape: (N, C, H, W);
    itemsize: bytes per element. Counts the padded image (N, C, H + 2 PH, W + 2 PW), when there is
    padding, and, when `copies_windows`, one copy of every window, (N*OH*OW, C*KH*KW): the columns
    of im2col, the rows max pooling takes the maximum of. Sizes are Python ints, so no product
    overflows. Raises ShapeError naming the operation, the shapes and the bytes needed when the sum
    passes backend.memory_limit() (see backend.set_memory_limit). Every window operation calls this
    once, before its fast path or its reference runs. Returns out_size, (OH, OW).
    """
    N, C, H, W = (int(size) for size in x_shape)
    (KH, KW), (PH, PW) = kernel_size, padding
    if N == 0:
        # Refused here rather than passed on: an empty batch has no loss to average (it would be NaN).
        raise ShapeError(f"{operation}: the batch is empty (input shape {tuple(x_shape)}); give at least one image")
    out_height, out_width = output_shape(x_shape, kernel_size, stride, padding)
    padded_shape = (N, C, H + 2 * PH, W + 2 * PW)
    padded_bytes = N * C * padded_shape[2] * padded_shape[3] * itemsize if PH or PW else 0
    windows_shape = (N * out_height * out_width, C * KH * KW)
    windows_bytes = windows_shape[0] * windows_shape[1] * itemsize if copies_windows else 0
    needed, limit = padded_bytes + windows_bytes, memory_limit()
    if needed > limit:
        parts = []
        if padded_bytes:
            parts.append(f"the padded image {padded_shape} takes {format_bytes(padded_bytes)}")
        if windows_bytes:
            parts.append(f"its windows {windows_shape} take {format_bytes(windows_bytes)}")
        raise ShapeError(
            f"{operation}: input {tuple(x_shape)} with kernel {tuple(kernel_size)}, stride {tuple(stride)} and "
            f"padding {tuple(padding)} needs {format_bytes(needed)} ({'; '.join(parts)}), more than the memory "
            f"limit of {format_bytes(limit)}; use a smaller batch, padding or kernel, or raise the limit with "
            "minicnn.backend.set_memory_limit"
        )
    return out_height, out_width


def pad_image(x, padding, value=0.0):
    """Pad the two spatial axes of x: (N, C, H, W) by (PH, PW) on each side with `value`."""
    PH, PW = padding
    if PH == 0 and PW == 0:
        return x
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)), mode="constant", constant_values=value)


def crop_padding(x_padded, padding):
    """Undo `pad_image`: (N, C, H + 2 PH, W + 2 PW) -> (N, C, H, W), a view."""
    PH, PW = padding
    H, W = x_padded.shape[2:]
    return x_padded[:, :, PH : H - PH, PW : W - PW]


def sliding_windows(x_padded, kernel_size, stride):
    """A read-only view (N, C, OH, OW, KH, KW) of every window of an already padded image: nothing is copied.

    windows[n, c, oh, ow] is x_padded[n, c, oh*SH : oh*SH + KH, ow*SW : ow*SW + KW]. Neighbouring
    windows share pixels, so never write through this view (cs231n's warning: `+=` through an
    overlapping view silently drops gradient); `add_windows` is the way back.
    """
    xp = get_array_module(x_padded)
    N, C, H, W = x_padded.shape
    (KH, KW), (SH, SW) = kernel_size, stride
    out_height, out_width = output_size(H, KH, SH, 0), output_size(W, KW, SW, 0)
    sN, sC, sH, sW = x_padded.strides
    return as_strided(
        xp,
        x_padded,
        shape=(N, C, out_height, out_width, KH, KW),
        strides=(sN, sC, sH * SH, sW * SW, sH, sW),
    )


def offset_slices(i, j, stride, out_height, out_width):
    """Index of the pixels that kernel offset (i, j) covers, one per window: an (N, C, OH, OW) slice of the image."""
    SH, SW = stride
    rows = slice(i, i + SH * (out_height - 1) + 1, SH)
    cols = slice(j, j + SW * (out_width - 1) + 1, SW)
    return slice(None), slice(None), rows, cols


def add_windows(window_grads, padded_shape, stride):
    """window_grads: (N, C, OH, OW, KH, KW) -> (N, C, H + 2 PH, W + 2 PW), summing where windows overlap.

    The adjoint of `sliding_windows`: every window's values are added back where
    the window came from. One pass per kernel offset (i, j): the pixels it
    covers are one per window, all different, so each `+=` is exact.
    """
    xp = get_array_module(window_grads)
    _, _, out_height, out_width, KH, KW = window_grads.shape
    image = xp.zeros(padded_shape, dtype=window_grads.dtype)
    for i in range(KH):
        for j in range(KW):
            image[offset_slices(i, j, stride, out_height, out_width)] += window_grads[:, :, :, :, i, j]
    return image
