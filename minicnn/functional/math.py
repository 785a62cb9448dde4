"""Elementwise arithmetic and reductions, with NumPy broadcasting.

A broadcast operand's gradient is summed back to the operand's shape
(`sum_to_shape`), the rule that makes `x + bias` train a bias of shape (F,).
"""

from ..backend import get_array_module
from ..tensor import Operation, Tensor


def sum_to_shape(grad, shape):
    """Sum `grad` over the axes that broadcasting stretched, giving an array of `shape`."""
    if grad.shape == shape:
        return grad
    leading = grad.ndim - len(shape)
    stretched = tuple(range(leading)) + tuple(
        leading + axis for axis, size in enumerate(shape) if size == 1 and grad.shape[leading + axis] != 1
    )
    return grad.sum(axis=stretched).reshape(shape) if stretched else grad.reshape(shape)


def normalize_axes(axis, ndim):
    """`axis` (None, int or tuple, negatives allowed) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an array of {ndim} dimensions")
    return tuple(sorted(int(a) % ndim for a in axes))


def _kept_shape(shape, axes):
    """`shape` with the reduced `axes` set to 1, as keepdims=True would leave it."""
    return tuple(1 if i in axes else size for i, size in enumerate(shape))


class AddOp(Operation):
    """a + b, broadcast."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, grad):
        shape_a, shape_b = self.shapes
        return sum_to_shape(grad, shape_a), sum_to_shape(grad, shape_b)


class SubtractOp(Operation):
    """a - b, broadcast."""

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, grad):
        shape_a, shape_b = self.shapes
        return sum_to_shape(grad, shape_a), sum_to_shape(-grad, shape_b)


class MultiplyOp(Operation):
    """a * b, broadcast."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        grad_a = sum_to_shape(grad * self.b, self.a.shape) if self.needs_input_grad[0] else None
        grad_b = sum_to_shape(grad * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class DivideOp(Operation):
    """a / b, broadcast."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        grad_a = sum_to_shape(grad / self.b, self.a.shape) if self.needs_input_grad[0] else None
        grad_b = (
            sum_to_shape(-grad * self.a / (self.b * self.b), self.b.shape) if self.needs_input_grad[1] else None
        )
        return grad_a, grad_b


class NegateOp(Operation):
    """-x."""

    def forward(self, x):
        return -x

    def backward(self, grad):
        return -grad


class PowerOp(Operation):
    """a ** b, broadcast; d/da = b a^(b-1), d/db = a^b log(a)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a**b
        return self.out

    def backward(self, grad):
        xp = get_array_module(grad)
        a, b = self.a, self.b
        grad_a = sum_to_shape(grad * b * a ** (b - 1), a.shape) if self.needs_input_grad[0] else None
        grad_b = sum_to_shape(grad * self.out * xp.log(a), b.shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class ExpOp(Operation):
    """exp(x)."""

    def forward(self, x):
        self.out = get_array_module(x).exp(x)
        return self.out

    def backward(self, grad):
        return grad * self.out


class LogOp(Operation):
    """Natural logarithm log(x)."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, grad):
        return grad / self.x


class CastOp(Operation):
    """x.astype(dtype); the gradient is cast back to x's dtype."""

    name = "astype"

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.in_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, grad):
        return grad.astype(self.in_dtype)


class SumOp(Operation):
    """x.sum(axis, keepdims): the gradient is broadcast back over the summed axes."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = normalize_axes(self.axis, x.ndim)
        self.in_shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad):
        xp = get_array_module(grad)
        grad = grad.reshape(_kept_shape(self.in_shape, self.axes))
        return xp.broadcast_to(grad, self.in_shape)


class MeanOp(Operation):
    """x.mean(axis, keepdims): each element receives grad / (number of elements averaged)."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = normalize_axes(self.axis, x.ndim)
        self.in_shape = x.shape
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad):
        xp = get_array_module(grad)
        count = 1
        for axis in self.axes:
            count *= self.in_shape[axis]
        grad = grad.reshape(_kept_shape(self.in_shape, self.axes)) / count
        return xp.broadcast_to(grad, self.in_shape)


class MaxOp(Operation):
    """x.max(axis, keepdims).

    Tie rule: the whole gradient goes to the first maximum in row-major order over
    the reduced axes (as max pooling does), so the gradient is a subgradient.
    """

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        xp = get_array_module(x)
        self.axes = normalize_axes(self.axis, x.ndim)
        self.in_shape = x.shape
        # Bring the reduced axes to the end and flatten them, so one argmax finds the first maximum.
        kept = [axis for axis in range(x.ndim) if axis not in self.axes]
        self.permutation = kept + list(self.axes)
        moved = x.transpose(self.permutation)
        flat = moved.reshape(moved.shape[: len(kept)] + (-1,))
        self.first_max = flat.argmax(axis=-1)
        self.flat_shape = flat.shape
        out = xp.take_along_axis(flat, self.first_max[..., None], axis=-1)[..., 0]
        return out.reshape(_kept_shape(x.shape, self.axes)) if self.keepdims else out

    def backward(self, grad):
        xp = get_array_module(grad)
        grad = grad.reshape(self.flat_shape[:-1])
        window_positions = xp.arange(self.flat_shape[-1])
        flat_grad = (window_positions == self.first_max[..., None]) * grad[..., None]
        moved_shape = tuple(self.in_shape[axis] for axis in self.permutation)
        inverse = [self.permutation.index(axis) for axis in range(len(self.in_shape))]
        return flat_grad.reshape(moved_shape).transpose(inverse)


def add(a, b):
    return AddOp()(a, b)


def subtract(a, b):
    return SubtractOp()(a, b)


def multiply(a, b):
    return MultiplyOp()(a, b)


def divide(a, b):
    return DivideOp()(a, b)


def negate(x):
    return NegateOp()(x)


def power(a, b):
    return PowerOp()(a, b)


def exp(x):
    return ExpOp()(x)


def log(x):
    return LogOp()(x)


def astype(x, dtype):
    """x converted to `dtype` (e.g. numpy.float64), differentiably."""
    return CastOp(dtype)(x)


def sum(x, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy.sum
    return SumOp(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    return MeanOp(axis, keepdims)(x)


def max(x, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy.max
    return MaxOp(axis, keepdims)(x)


def argmax(x, axis=None):
    """Index of the first maximum along `axis` (flattened when None), as an integer Tensor; no gradient."""
    return Tensor(get_array_module(x.data).asarray(x.data.argmax(axis=axis)))
