"""Matrix products: the general `matmul` and the fused dense layer `linear`."""

from ..backend import get_array_module
from ..errors import ShapeError
from ..tensor import Operation
from .math import sum_to_shape


class MatMulOp(Operation):
    """a @ b with NumPy's rules (1-d operands, broadcast batch axes).

    d(a @ b)/da = grad @ b^T, d(a @ b)/db = a^T @ grad.
    """

    name = "matmul"

    def forward(self, a, b):
        self.a, self.b = a, b
        try:
            return a @ b
        except ValueError:
            raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not fit (inner dimensions differ)") from None

    def backward(self, grad):
        xp = get_array_module(grad)
        a, b = self.a, self.b
        # Treat 1-d operands as a row (a) or a column (b) vector, as matmul does.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:
            grad = grad[..., None]
        if a.ndim == 1:
            grad = xp.expand_dims(grad, -2)
        grad_a = grad_b = None
        if self.needs_input_grad[0]:
            grad_a = sum_to_shape(grad @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            grad_b = sum_to_shape(xp.swapaxes(a2, -1, -2) @ grad, b2.shape).reshape(b.shape)
        return grad_a, grad_b


class LinearOp(Operation):
    """x @ weight + bias.  x: (..., in), weight: (in, out), bias: (out,) -> (..., out)."""

    input_names = ("input", "weight", "bias")

    def forward(self, x, weight, bias=None):
        if weight.ndim != 2 or x.shape[-1:] != weight.shape[:1]:
            raise ShapeError(
                f"linear: input has shape {x.shape}, expected (N, {weight.shape[0]}) to match "
                f"weight of shape {weight.shape} (in_features, out_features)"
            )
        if bias is not None and bias.shape != weight.shape[1:]:
            raise ShapeError(f"linear: bias has shape {bias.shape}, expected ({weight.shape[1]},)")
        self.x, self.weight = x, weight
        out = x @ weight
        return out if bias is None else out + bias

    def backward(self, grad):
        in_features, out_features = self.weight.shape
        grad_x = grad @ self.weight.T if self.needs_input_grad[0] else None
        grad_weight = None
        if self.needs_input_grad[1]:
            grad_weight = self.x.reshape(-1, in_features).T @ grad.reshape(-1, out_features)
        if len(self.needs_input_grad) == 2:
            return grad_x, grad_weight
        grad_bias = grad.reshape(-1, out_features).sum(axis=0) if self.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def matmul(a, b):
    return MatMulOp()(a, b)


def linear(x, weight, bias=None):
    """x @ weight + bias.  x: (N, in), weight: (in, out), bias: (out,) or None -> (N, out)."""
    return LinearOp()(x, weight) if bias is None else LinearOp()(x, weight, bias)

