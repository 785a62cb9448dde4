"""Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p)."""

from ..backend import random_uniform
from ..tensor import Operation


class DropoutOp(Operation):
    """x * mask / (1 - p) with mask ~ Bernoulli(1 - p), same shape as x; identity when p == 0."""

    def __init__(self, p):
        if not 0 <= p < 1:
            raise ValueError(f"dropout: p must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        keep = 1.0 - self.p
        self.scale = (random_uniform(x, x.shape) < keep) / x.dtype.type(keep)
        return x * self.scale

    def backward(self, grad):
        return grad * self.scale


def dropout(x, p=0.5, training=True):
    """Randomly zero elements of x during training; the identity in evaluation (training=False)."""
    if not training or p == 0:
        return x
    return DropoutOp(p)(x)
