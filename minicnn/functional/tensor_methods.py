"""Tensor's operators and array methods, installed in one place from one table.

tensor.py defines Tensor with its data, gradient and backward only: it sits below
the operations and cannot import them. `TENSOR_METHODS` gives Tensor its Python
operators and NumPy-like methods, each one the function in functional/ that
records and differentiates it (so `a @ b` is `matmul(a, b)` and `x.T` is
`transpose(x)`). `install_tensor_methods()` puts them on the class; the package's
`__init__` calls it once.
"""

import operator

from ..backend import check_same_device
from ..tensor import Tensor
from .linalg import matmul
from .math import add, argmax, astype, divide, exp, log, max, mean, multiply, negate, power, subtract, sum
from .shape import flatten, get_item, reshape, transpose, view


def reflected(function):
    """The method behind `other OP tensor`, such as 2 - x: Python calls x.__rsub__(2), which is function(2, x)."""

    def method(self, other):
        return function(other, self)

    method.__name__ = f"reflected_{function.__name__}"
    return method


def comparison(name, compare):
    """A method comparing elementwise; the result is a boolean Tensor without gradient."""

    def method(self, other):
        if isinstance(other, Tensor):
            check_same_device(name, [("left", self.data), ("right", other.data)])
            other = other.data
        return Tensor(compare(self.data, other))

    method.__name__ = name
    return method


TENSOR_METHODS = (
    # arithmetic, broadcast as NumPy does; the reflected forms serve a number on the left (2 * x)
    ("__add__", add), ("__radd__", reflected(add)),
    ("__sub__", subtract), ("__rsub__", reflected(subtract)),
    ("__mul__", multiply), ("__rmul__", reflected(multiply)),
    ("__truediv__", divide), ("__rtruediv__", reflected(divide)),
    ("__pow__", power), ("__rpow__", reflected(power)),
    ("__matmul__", matmul), ("__rmatmul__", reflected(matmul)),
    ("__neg__", negate),
    # comparisons (no gradient): accuracy is (predictions == labels).mean()
    ("__eq__", comparison("__eq__", operator.eq)), ("__ne__", comparison("__ne__", operator.ne)),
    ("__lt__", comparison("__lt__", operator.lt)), ("__le__", comparison("__le__", operator.le)),
    ("__gt__", comparison("__gt__", operator.gt)), ("__ge__", comparison("__ge__", operator.ge)),
    # moving elements: x[index], x.reshape(2, -1), x.view(-1, 256) as PyTorch spells it, x.T
    ("__getitem__", get_item),
    ("reshape", reshape), ("view", view), ("flatten", flatten),
    ("transpose", transpose), ("T", property(transpose)),
    # reductions and elementwise functions
    ("sum", sum), ("mean", mean), ("max", max), ("argmax", argmax),
    ("exp", exp), ("log", log), ("astype", astype),
)


def install_tensor_methods():
    """Attach every (name, function) of TENSOR_METHODS to Tensor."""
    for name, function in TENSOR_METHODS:
        setattr(Tensor, name, function)
