"""Operations that move elements without changing them: reshape, transpose, indexing, flatten."""

import numbers

from ..backend import get_array_module, scatter_add
from ..errors import ShapeError
from ..tensor import Operation, Tensor


class ReshapeOp(Operation):
    """x.reshape(shape); the gradient is reshaped back."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ShapeError(f"reshape: cannot reshape an input of shape {x.shape} into {self.shape}") from None

    def backward(self, grad):
        return grad.reshape(self.in_shape)


class TransposeOp(Operation):
    """x.transpose(axes) (reversed axes when None); the gradient is permuted back."""

    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        self.permutation = tuple(reversed(range(x.ndim))) if self.axes is None else tuple(a % x.ndim for a in self.axes)
        return x.transpose(self.permutation)

    def backward(self, grad):
        inverse = [0] * len(self.permutation)
        for position, axis in enumerate(self.permutation):
            inverse[axis] = position
        return grad.transpose(inverse)


def _is_basic_index(index):
    """True for ints, slices, None and Ellipsis only: such an index never repeats an element."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(part is None or part is Ellipsis or isinstance(part, (numbers.Integral, slice)) for part in parts)


class GetItemOp(Operation):
    """x[index]; the gradient is scattered back, summing over repeated indices."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.in_shape, self.in_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, grad):
        xp = get_array_module(grad)
        grad_x = xp.zeros(self.in_shape, dtype=grad.dtype)
        if _is_basic_index(self.index):
            grad_x[self.index] = grad
        else:
            scatter_add(xp, grad_x, self.index, grad)
        return grad_x


def _index_arrays(index):
    """Replace Tensors inside an index by their arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(part.data if isinstance(part, Tensor) else part for part in index)
    return index


def reshape(x, *shape):
    """x with a new shape (one entry may be -1); shape as separate ints or one tuple."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return ReshapeOp(shape)(x)


def view(x, *shape):
    """x.view(-1, 16 * 4 * 4) as PyTorch spells it: the same as reshape (one entry may be -1)."""
    return reshape(x, *shape)


def transpose(x, *axes):
    """x with its axes permuted; no axes reverses them (x.T)."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return TransposeOp(axes or None)(x)


def get_item(x, index):
    return GetItemOp(_index_arrays(index))(x)


def flatten(x):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...): keeps the batch axis."""
    if x.ndim < 1:
        raise ShapeError(f"flatten: expected an input with a batch axis, got shape {x.shape}")
    return ReshapeOp((x.shape[0], -1))(x)
