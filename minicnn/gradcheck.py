"""Finite-difference gradient checking, public so learners can check their own operations.

The analytic gradient comes from one backward pass of sum(fn(*inputs) * direction),
where `direction` is a fixed random array (so every output element matters, not
only their sum). The numeric gradient perturbs each input element by +-eps and
takes the central difference of the same scalar. Everything runs in float64.
"""

import numpy as np

from . import backend
from .errors import GradcheckError
from .tensor import Tensor, no_grad


def _as_float64_leaf(value):
    if isinstance(value, Tensor) and value.dtype.kind == "f":
        return Tensor(value.data.astype(np.float64), requires_grad=value.requires_grad)
    return value


def _projected_output(fn, inputs, direction):
    """sum(fn(*inputs) * direction) as a Tensor, checking that fn returned a Tensor."""
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    return out if direction is None else (out * direction).sum()


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Compare the analytic gradient of `fn` with central differences, in float64.

    fn: called as fn(*inputs), returns a Tensor of any shape.
    inputs: Tensors (those with requires_grad=True are checked) or other arguments.
    An element passes when |analytic - numeric| <= atol + rtol * |numeric|.
    Returns the maximum absolute error of each checked input, in input order;
    raises GradcheckError naming the input and its worst element otherwise.
    """
    inputs = [_as_float64_leaf(value) for value in inputs]
    checked = [i for i, value in enumerate(inputs) if isinstance(value, Tensor) and value.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")

    with no_grad():
        probe = fn(*inputs)
    if not isinstance(probe, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(probe).__name__}")
    xp = backend.get_array_module(probe.data)
    direction = None
    if probe.numel() != 1:
        rng = np.random.default_rng(seed)
        direction = Tensor(backend.to_device(rng.standard_normal(probe.shape), probe.device))

    _projected_output(fn, inputs, direction).backward()

    max_errors = []
    for position in checked:
        tensor = inputs[position]
        analytic = tensor.grad if tensor.grad is not None else xp.zeros_like(tensor.data)
        numeric = _numeric_gradient(fn, inputs, tensor, direction, eps)
        error = abs(analytic - numeric)
        bound = atol + rtol * abs(numeric)
        worst = int((error - bound).argmax()) if error.size else 0
        if error.size and float((error - bound).reshape(-1)[worst]) > 0:
            index = np.unravel_index(worst, error.shape)
            raise GradcheckError(
                f"gradcheck: gradient of input {position} (shape {tensor.shape}) is wrong; worst element "
                f"{tuple(int(i) for i in index)}: analytic {float(analytic[index]):.8g}, numeric "
                f"{float(numeric[index]):.8g}, difference {float(error[index]):.3g} "
                f"(allowed {float(bound[index]):.3g} = atol {atol} + rtol {rtol} * |numeric|)"
            )
        max_errors.append(float(error.max()) if error.size else 0.0)
    return max_errors


def _numeric_gradient(fn, inputs, tensor, direction, eps):
    """Central differences of sum(fn(*inputs) * direction) with respect to each element of `tensor`."""
    xp = backend.get_array_module(tensor.data)
    flat = tensor.data.reshape(-1)  # a view: perturbing it perturbs the input
    gradient = xp.zeros(flat.shape, dtype=np.float64)
    with no_grad():
        for i in range(flat.size):
            original = float(flat[i])
            flat[i] = original + eps
            plus = float(_projected_output(fn, inputs, direction).item())
            flat[i] = original - eps
            minus = float(_projected_output(fn, inputs, direction).item())
            flat[i] = original
            gradient[i] = (plus - minus) / (2 * eps)
    return gradient.reshape(tensor.shape)
