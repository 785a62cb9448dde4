"""Elementwise activations: relu, sigmoid, tanh."""

from .. import kernels
from ..backend import get_array_module
from ..tensor import Operation


class ReLUOp(Operation):
    """max(x, 0); the derivative at 0 is taken as 0 (as PyTorch does)."""

    name = "relu"

    def forward(self, x):
        fast = kernels.relu(x)  # a fast path (the same two passes, over threads), or None
        if fast is not None:
            out, self.positive = fast
            return out
        self.positive = x > 0
        return get_array_module(x).maximum(x, 0)

    def backward(self, grad):
        grad_x = kernels.relu_backward(grad, self.positive)  # a fast path, or None
        return grad * self.positive if grad_x is None else grad_x


class SigmoidOp(Operation):
    """1 / (1 + exp(-x)); d/dx = s (1 - s)."""

    def forward(self, x):
        xp = get_array_module(x)
        # exp(-|x|) never overflows, and each branch avoids 1 - (nearly 1), so small outputs keep their digits.
        decay = xp.exp(-abs(x))
        self.out = xp.where(x >= 0, 1 / (1 + decay), decay / (1 + decay))
        return self.out

    def backward(self, grad):
        return grad * self.out * (1 - self.out)


class TanhOp(Operation):
    """tanh(x); d/dx = 1 - tanh(x)^2."""

    def forward(self, x):
        self.out = get_array_module(x).tanh(x)
        return self.out

    def backward(self, grad):
        return grad * (1 - self.out * self.out)


def relu(x):
    return ReLUOp()(x)


def sigmoid(x):
    return SigmoidOp()(x)


def tanh(x):
    return TanhOp()(x)
