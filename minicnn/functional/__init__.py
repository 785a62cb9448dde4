"""Differentiable operations on Tensors; import as `minicnn.functional as F`.

Each family lives in its own module: math (arithmetic, reductions), shape
(reshape, transpose, indexing, flatten), linalg (matmul, linear), activations,
conv (im2col/col2im), pooling, normalization (batch norm), losses, dropout.
"""

from .activations import relu, sigmoid, tanh
from .conv import col2im, conv2d, im2col
from .dropout import dropout
from .linalg import linear, matmul
from .losses import cross_entropy, log_softmax, softmax
from .math import add, argmax, astype, divide, exp, log, max, mean, multiply, negate, power, subtract, sum
from .normalization import batch_norm
from .pooling import adaptive_avg_pool2d, avg_pool2d, global_avg_pool2d, max_pool2d
from .shape import flatten, reshape, transpose
from .tensor_methods import install_tensor_methods

install_tensor_methods()  # Tensor's operators (+, @, indexing, .sum(), ...): the one place they are attached

__all__ = [
    "adaptive_avg_pool2d", "add", "argmax", "astype", "avg_pool2d", "batch_norm", "col2im", "conv2d", "cross_entropy", "divide", "dropout",
    "exp", "flatten", "global_avg_pool2d", "im2col", "linear", "log", "log_softmax", "matmul", "max", "max_pool2d", "mean",
    "multiply", "negate", "power", "relu", "reshape", "sigmoid", "softmax", "subtract", "sum", "tanh",
    "transpose",
]
