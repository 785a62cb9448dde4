"""Max and average pooling over (N, C, H, W), built on the window view of minicnn.windows and its adjoint;
global average pooling (a ResNet's head) as the mean over the spatial axes.

This is the reference. minicnn.kernels computes max pooling faster (one-byte
argmax, gradients written in place, CuPy kernels), tested equal to it: forward
and backward each ask it once, at their top (`kernels.max_pool2d`,
`kernels.max_pool2d_backward`), and run the reference below when it answers
None. Average pooling has no fast path.
"""

from .. import kernels
from ..backend import get_array_module
from ..errors import ShapeError
from ..tensor import Operation
from ..windows import add_windows, check_window_sizes, crop_padding, pad_image, pair, sliding_windows
from .math import mean


def _pool_settings(name, kernel_size, stride, padding):
    kernel_size = pair(kernel_size, "kernel_size")
    stride = kernel_size if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding")
    if min(kernel_size) < 1 or min(stride) < 1:
        raise ValueError(f"{name}: kernel_size and stride must be >= 1, got {kernel_size} and {stride}")
    if any(p < 0 or 2 * p > k for p, k in zip(padding, kernel_size)):
        # A window made only of padding would have no element to take the maximum of.
        raise ValueError(f"{name}: padding must lie in [0, kernel_size / 2], got padding {padding} for kernel {kernel_size}")
    return kernel_size, stride, padding


def _check_pool_input(name, x, kernel_size, stride, padding, copies_windows):
    """Refuse a wrong shape, an empty batch or windows past the memory limit; return (OH, OW)."""
    if x.ndim != 4:
        raise ShapeError(f"{name}: input must have shape (N, C, H, W), got {x.shape}")
    padded = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    if padded[0] < kernel_size[0] or padded[1] < kernel_size[1]:
        raise ShapeError(f"{name}: window {kernel_size} is larger than the padded input {padded} (input shape {x.shape})")
    return check_window_sizes(name, x.shape, x.dtype.itemsize, kernel_size, stride, padding, copies_windows)


class MaxPool2dOp(Operation):
    """The max_pool2d operation: the maximum over each window.  x: (N, C, H, W) -> (N, C, OH, OW).

    Padding is -inf, so it never wins (unless a window holds only -inf; its gradient then falls on the
    padding and is dropped). Tie rule: a window's gradient goes to its
    first maximum in row-major (top-left first) order, as argmax picks it. A NaN
    in a window makes its maximum NaN, and the gradient goes to the first NaN.
    """

    def __init__(self, kernel_size=2, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = _pool_settings("max_pool2d", kernel_size, stride, padding)

    def forward(self, x):
        """x: (N, C, H, W) -> (N, C, OH, OW), each window's maximum (padding is -inf, never the maximum)."""
        # The reference copies every window (rows below); the fast paths are held to the same bound.
        out_size = _check_pool_input("max_pool2d", x, self.kernel_size, self.stride, self.padding,
                                     copies_windows=True)
        self.x_shape = x.shape
        fast = kernels.max_pool2d(x, self.kernel_size, self.stride, self.padding, out_size)  # a fast path, or None
        if fast is not None:
            out, self.argmax = fast
            return out
        xp = get_array_module(x)
        N, C, _, _ = x.shape
        KH, KW = self.kernel_size
        windows = sliding_windows(pad_image(x, self.padding, value=-xp.inf), self.kernel_size, self.stride)
        rows = windows.reshape(N, C, *out_size, KH * KW)  # a copy: each window as one row, in row-major order
        self.argmax = rows.argmax(axis=-1)  # (N, C, OH, OW): the offset of each window's first maximum
        return rows.max(axis=-1)

    def backward(self, grad):
        """grad: (N, C, OH, OW) -> (N, C, H, W): each window's gradient goes to its argmax; overlaps add."""
        fast = kernels.max_pool2d_backward(grad, self.argmax, self.x_shape, self.kernel_size, self.stride,
                                           self.padding)  # a fast path, or None
        if fast is not None:
            return fast
        xp = get_array_module(grad)
        N, C, H, W = self.x_shape
        (KH, KW), (PH, PW) = self.kernel_size, self.padding
        winner = self.argmax[..., None] == xp.arange(KH * KW)  # (N, C, OH, OW, KH*KW), one True per window
        window_grads = xp.where(winner, grad[..., None], 0).astype(grad.dtype, copy=False)
        window_grads = window_grads.reshape(grad.shape + (KH, KW))
        padded = add_windows(window_grads, (N, C, H + 2 * PH, W + 2 * PW), self.stride)
        return crop_padding(padded, self.padding)


class AvgPool2dOp(Operation):
    """The avg_pool2d operation: the mean over each window.  x: (N, C, H, W) -> (N, C, OH, OW).

    Zero padding counts towards the mean (PyTorch's count_include_pad=True).
    """

    def __init__(self, kernel_size=2, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = _pool_settings("avg_pool2d", kernel_size, stride, padding)

    def forward(self, x):
        """x: (N, C, H, W) -> (N, C, OH, OW), each window's mean (padding counts as zeros)."""
        # The mean reads the windows through a view: only the padded image is new.
        _check_pool_input("avg_pool2d", x, self.kernel_size, self.stride, self.padding, copies_windows=False)
        padded = pad_image(x, self.padding)
        windows = sliding_windows(padded, self.kernel_size, self.stride)
        self.padded_shape, self.window_shape = padded.shape, windows.shape
        return windows.mean(axis=(4, 5))

    def backward(self, grad):
        """grad: (N, C, OH, OW) -> (N, C, H, W): each window's gradient shared equally by its pixels."""
        xp = get_array_module(grad)
        area = self.window_shape[4] * self.window_shape[5]
        window_grads = xp.broadcast_to((grad / area)[..., None, None], self.window_shape)
        image = add_windows(window_grads, self.padded_shape, self.stride)
        return crop_padding(image, self.padding)


def max_pool2d(x, kernel_size=2, stride=None, padding=0):
    """Max pooling.  x: (N, C, H, W) -> (N, C, OH, OW); stride defaults to kernel_size."""
    return MaxPool2dOp(kernel_size, stride, padding)(x)


def avg_pool2d(x, kernel_size=2, stride=None, padding=0):
    """Average pooling.  x: (N, C, H, W) -> (N, C, OH, OW); stride defaults to kernel_size."""
    return AvgPool2dOp(kernel_size, stride, padding)(x)


def global_avg_pool2d(x):
    """Global average pooling: the mean of each channel's feature map.  x: (N, C, H, W) -> (N, C).

    The mean over axes 2 and 3 is functional.mean, whose backward shares each channel's
    gradient equally among its H * W pixels; no window machinery is needed.
    """
    if x.ndim != 4:
        raise ShapeError(f"global_avg_pool2d: input must have shape (N, C, H, W), got {x.shape}")
    return mean(x, axis=(2, 3))


def adaptive_avg_pool2d(x, output_size):
    """PyTorch's adaptive_avg_pool2d for output_size 1 (or (1, 1)): x: (N, C, H, W) -> (N, C, 1, 1).

    Only the global case is supported, the one every ResNet head uses; other sizes raise ValueError.
    """
    if output_size not in (1, (1, 1), [1, 1]):
        raise ValueError(f"adaptive_avg_pool2d: only output_size 1 (global average pooling) is supported, "
                         f"got {output_size!r}; use avg_pool2d with a window for other sizes")
    if x.ndim != 4:
        raise ShapeError(f"adaptive_avg_pool2d: input must have shape (N, C, H, W), got {x.shape}")
    return mean(x, axis=(2, 3), keepdims=True)
