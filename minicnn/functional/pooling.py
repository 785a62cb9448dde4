"""Max and average pooling over (N, C, H, W), built on conv's window view and its adjoint."""

from .. import kernels
from ..backend import get_array_module
from ..errors import ShapeError
from ..kernels import cupy_windows
from ..tensor import Operation
from .conv import add_windows, crop_padding, offset_slices, pad_image, pair, sliding_windows


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


def _check_pool_input(name, x, kernel_size, padding):
    if x.ndim != 4:
        raise ShapeError(f"{name}: input must have shape (N, C, H, W), got {x.shape}")
    padded = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    if padded[0] < kernel_size[0] or padded[1] < kernel_size[1]:
        raise ShapeError(f"{name}: window {kernel_size} is larger than the padded input {padded} (input shape {x.shape})")


class MaxPool2d(Operation):
    """Maximum over each window.  x: (N, C, H, W) -> (N, C, OH, OW).

    Padding is -inf, so it never wins. Tie rule: the window's gradient goes to its
    first maximum in row-major (top-left first) order, as numpy.argmax picks it.
    """

    def __init__(self, kernel_size=2, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = _pool_settings("max_pool2d", kernel_size, stride, padding)

    def forward(self, x):
        xp = get_array_module(x)
        _check_pool_input("max_pool2d", x, self.kernel_size, self.padding)
        self.x_shape, self.with_kernel = x.shape, kernels.active_for(x)
        if self.with_kernel:
            out, self.first_max = cupy_windows.max_pool_forward(x, self.kernel_size, self.stride, self.padding)
            return out
        padded = pad_image(x, self.padding, value=-xp.inf)
        windows = sliding_windows(padded, self.kernel_size, self.stride)  # (N, C, OH, OW, KH, KW) view
        # One pass per kernel offset over (N, C, OH, OW), instead of copying every window out.
        out = windows[..., 0, 0].copy()
        KH, KW = self.kernel_size
        # Row-major offset of each window's maximum; one byte each when it fits (a quarter of int32's traffic).
        self.first_max = xp.zeros(out.shape, dtype=xp.uint8 if KH * KW <= 256 else xp.int32)
        for offset in range(1, KH * KW):
            candidate = windows[..., offset // KW, offset % KW]
            better = candidate > out  # strict, so a later equal value never displaces the first maximum
            # Arithmetic rather than masked writes: a random mask makes those several times slower.
            # offset > first_max here, so the difference never wraps around.
            self.first_max += better * (self.first_max.dtype.type(offset) - self.first_max)
            xp.maximum(out, candidate, out=out)
        self.padded_shape = padded.shape
        return out

    def backward(self, grad):
        if self.with_kernel:
            return cupy_windows.max_pool_backward(grad, self.first_max, self.x_shape, self.kernel_size, self.stride,
                                                  self.padding)
        xp = get_array_module(grad)
        KH, KW = self.kernel_size
        out_height, out_width = grad.shape[2:]
        image = xp.zeros(self.padded_shape, dtype=grad.dtype)
        overlapping = any(s < k for s, k in zip(self.stride, self.kernel_size))
        for offset in range(KH * KW):
            pixels = image[offset_slices(*divmod(offset, KW), self.stride, out_height, out_width)]
            # Each offset's slice holds every pixel at most once, so += is exact even for overlapping windows;
            # when windows do not overlap no other offset touches these pixels, and the product is written in place.
            if overlapping:
                pixels += grad * (self.first_max == offset)
            else:
                xp.multiply(grad, self.first_max == offset, out=pixels)
        return crop_padding(image, self.padding)


class AvgPool2d(Operation):
    """Mean over each window.  x: (N, C, H, W) -> (N, C, OH, OW).

    Zero padding counts towards the mean (PyTorch's count_include_pad=True).
    """

    def __init__(self, kernel_size=2, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = _pool_settings("avg_pool2d", kernel_size, stride, padding)

    def forward(self, x):
        _check_pool_input("avg_pool2d", x, self.kernel_size, self.padding)
        padded = pad_image(x, self.padding)
        windows = sliding_windows(padded, self.kernel_size, self.stride)
        self.padded_shape, self.window_shape = padded.shape, windows.shape
        return windows.mean(axis=(4, 5))

    def backward(self, grad):
        xp = get_array_module(grad)
        area = self.window_shape[4] * self.window_shape[5]
        window_grads = xp.broadcast_to((grad / area)[..., None, None], self.window_shape)
        image = add_windows(window_grads, self.padded_shape, self.stride)
        return crop_padding(image, self.padding)


def max_pool2d(x, kernel_size=2, stride=None, padding=0):
    """Max pooling.  x: (N, C, H, W) -> (N, C, OH, OW); stride defaults to kernel_size."""
    return MaxPool2d(kernel_size, stride, padding)(x)


def avg_pool2d(x, kernel_size=2, stride=None, padding=0):
    """Average pooling.  x: (N, C, H, W) -> (N, C, OH, OW); stride defaults to kernel_size."""
    return AvgPool2d(kernel_size, stride, padding)(x)
