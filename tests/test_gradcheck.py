"""The public gradient checker (gradcheck.py), and the custom-operation API it is meant for."""

import numpy as np
import pytest

import minicnn
from conftest import to_host


class Square(minicnn.Operation):
    """x ** 2, elementwise, with the right derivative 2x."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return 2 * self.x * grad


class WrongSquare(minicnn.Operation):
    """x ** 2 with a deliberately wrong derivative (x instead of 2x)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return self.x * grad


class ScaleWithWrongGradForFactor(minicnn.Operation):
    """a * b: right gradient for a, wrong gradient (missing the factor grad) for b."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        grad_a = grad * self.b if self.needs_input_grad[0] else None
        grad_b = self.a if self.needs_input_grad[1] else None
        return grad_a, grad_b


class SquareWithSwappedGrad(minicnn.Operation):
    """x ** 2 whose backward reverses the incoming gradient: right for a summed loss, wrong otherwise."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return 2 * self.x * grad[::-1]


def test_passes_on_correct_op_and_returns_one_float_per_checked_input(device):
    rng = np.random.default_rng(0)
    a = minicnn.tensor(rng.standard_normal((2, 3)), requires_grad=True, device=device)
    b = minicnn.tensor(rng.uniform(0.5, 1.5, size=(3,)), requires_grad=True, device=device)
    errors = minicnn.gradcheck(lambda x, y: (x * y / (y + 1)).sum(), a, b)
    assert len(errors) == 2
    assert all(isinstance(error, float) for error in errors)
    assert all(0.0 <= error < 1e-6 for error in errors)


def test_custom_operation_with_correct_backward_passes(device):
    x = minicnn.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True, device=device)
    (error,) = minicnn.gradcheck(lambda t: Square()(t), x)
    assert error < 1e-6
    # The custom op also trains like a built-in one.
    Square()(x).sum().backward()
    np.testing.assert_allclose(to_host(x.grad), [1.0, -2.0, 4.0])


def test_wrong_custom_operation_raises_naming_input_and_worst_element(device):
    a = minicnn.tensor(np.array([1.0, 2.0]), requires_grad=True, device=device)
    # error |2x - x| = |x| is largest at (1, 0)
    b = minicnn.tensor(np.array([[0.1, -0.2], [3.0, 0.5]]), requires_grad=True, device=device)
    with pytest.raises(minicnn.GradcheckError) as info:
        minicnn.gradcheck(lambda x, y: (x * x).sum() + WrongSquare()(y).sum(), a, b)
    message = str(info.value)
    assert "input 1" in message
    assert "(1, 0)" in message
    assert isinstance(info.value, AssertionError)


def test_wrong_op_caught_in_first_input(device):
    x = minicnn.tensor(np.array([1.5, -0.7]), requires_grad=True, device=device)
    y = minicnn.tensor(np.array([0.3, 0.4]), requires_grad=True, device=device)
    with pytest.raises(minicnn.GradcheckError, match="input 0"):
        minicnn.gradcheck(lambda s, t: WrongSquare()(s).sum() * t.sum(), x, y)


def test_checks_only_inputs_that_require_grad(device):
    a = minicnn.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True, device=device)
    b_values = np.array([0.5, -1.5, 2.5])
    fn = lambda x, y: ScaleWithWrongGradForFactor()(x, y)  # noqa: E731
    # b's gradient is wrong, but b does not require grad, so only a is checked.
    errors = minicnn.gradcheck(fn, a, minicnn.tensor(b_values, device=device))
    assert len(errors) == 1
    with pytest.raises(minicnn.GradcheckError, match="input 1"):
        minicnn.gradcheck(fn, a, minicnn.tensor(b_values, requires_grad=True, device=device))


def test_non_tensor_arguments_are_passed_through(device):
    x = minicnn.tensor(np.array([1.0, 2.0]), requires_grad=True, device=device)
    errors = minicnn.gradcheck(lambda t, power: t**power, x, 3)
    assert len(errors) == 1


def test_works_with_non_scalar_outputs(device):
    x = minicnn.tensor(np.array([[0.3, -1.2, 0.8], [1.1, 0.4, -0.5]]), requires_grad=True, device=device)
    errors = minicnn.gradcheck(lambda t: t * t.exp(), x)
    assert len(errors) == 1 and errors[0] < 1e-6
    with pytest.raises(minicnn.GradcheckError):
        minicnn.gradcheck(lambda t: WrongSquare()(t), x)


def test_non_scalar_output_checks_every_element_not_only_the_sum(device):
    x = minicnn.tensor(np.array([1.0, 1.0]), requires_grad=True, device=device)
    # Summed, the swapped gradient looks right; a random direction over the outputs exposes it.
    minicnn.gradcheck(lambda t: SquareWithSwappedGrad()(t).sum(), x)
    with pytest.raises(minicnn.GradcheckError):
        minicnn.gradcheck(lambda t: SquareWithSwappedGrad()(t), x)


def test_runs_in_float64_for_float32_inputs(device):
    x = minicnn.tensor(np.array([0.3, -0.9, 1.7], dtype=np.float32), requires_grad=True, device=device)
    seen_dtypes = set()

    def fn(t):
        seen_dtypes.add(t.dtype)
        return (t * t * t).sum()

    (error,) = minicnn.gradcheck(fn, x)
    assert seen_dtypes == {np.dtype(np.float64)}
    # float32 could not resolve a 1e-6 perturbation this well.
    assert error < 1e-7
    assert x.dtype == np.float32 and x.grad is None  # the caller's tensor is left alone


def test_raises_value_error_when_nothing_requires_grad(device):
    x = minicnn.tensor(np.array([1.0, 2.0]), device=device)
    with pytest.raises(ValueError, match="requires_grad"):
        minicnn.gradcheck(lambda t: t.sum(), x)
    with pytest.raises(ValueError):
        minicnn.gradcheck(lambda t: t, 3.0)


def test_tolerances_are_applied():
    x = minicnn.tensor(np.array([1.0, 2.0]), requires_grad=True, device="cpu")
    # WrongSquare is off by |x| <= 2: a loose enough tolerance accepts it, the default does not.
    (error,) = minicnn.gradcheck(lambda t: WrongSquare()(t).sum(), x, atol=2.5)
    assert error == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(minicnn.GradcheckError):
        minicnn.gradcheck(lambda t: WrongSquare()(t).sum(), x, atol=1.5)
