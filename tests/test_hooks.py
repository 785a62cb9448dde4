"""Gradient hooks on tensors (tensor.py) and forward / backward hooks on modules (nn/module.py)."""

import numpy as np
import pytest
from conftest import to_host

import minicnn
from minicnn import nn


# ----- Tensor.register_hook --------------------------------------------------------------------
def test_tensor_hook_sees_the_complete_gradient_once(device):
    x = minicnn.tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
    h = x * 2.0
    seen = []
    h.register_hook(lambda grad: seen.append(to_host(grad).copy()))
    # h is used twice, so its gradient has two parts: d/dh (h*h + h) = 2h + 1.
    (h * h + h).sum().backward()
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2 * np.array([2.0, 4.0, 6.0]) + 1)


def test_tensor_hook_can_replace_the_gradient(device):
    x = minicnn.tensor([1.0, 2.0], requires_grad=True, device=device)
    h = x * 3.0
    h.register_hook(lambda grad: grad * 10)
    h.sum().backward()
    np.testing.assert_allclose(to_host(x.grad), [30.0, 30.0])


def test_hook_on_a_leaf_changes_what_is_accumulated(device):
    x = minicnn.tensor([1.0, 2.0], requires_grad=True, device=device)
    x.register_hook(lambda grad: grad * 0)
    (x * x).sum().backward()
    np.testing.assert_array_equal(to_host(x.grad), [0.0, 0.0])


def test_hook_returning_none_keeps_the_gradient_and_hooks_run_in_order(device):
    x = minicnn.tensor([1.0, 2.0], requires_grad=True, device=device)
    calls = []
    x.register_hook(lambda grad: calls.append("first"))
    x.register_hook(lambda grad: calls.append("second") or grad + 1)
    (x * 2.0).sum().backward()
    assert calls == ["first", "second"]
    np.testing.assert_allclose(to_host(x.grad), [3.0, 3.0])


def test_hook_on_the_loss_receives_the_seed_gradient(device):
    x = minicnn.tensor([1.0, 2.0], requires_grad=True, device=device)
    loss = (x * x).sum()
    seen = []
    loss.register_hook(lambda grad: seen.append(to_host(grad)))
    loss.backward()
    assert len(seen) == 1 and seen[0].shape == () and seen[0] == 1.0


def test_removed_tensor_hook_is_not_called_and_remove_twice_is_harmless(device):
    x = minicnn.tensor([1.0], requires_grad=True, device=device)
    calls = []
    handle = x.register_hook(lambda grad: calls.append(1))
    handle.remove()
    handle.remove()
    (x * 2.0).sum().backward()
    assert calls == []


def test_hook_needs_a_tensor_that_requires_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        minicnn.tensor([1.0]).register_hook(lambda grad: None)


def test_hook_returning_the_wrong_shape_is_an_error():
    x = minicnn.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2.0
    h.register_hook(lambda grad: grad[:1])
    with pytest.raises(RuntimeError, match=r"shape \(2,\).*shape \(1,\)"):
        h.sum().backward()


# ----- Module hooks ------------------------------------------------------------------------------
def _small_model():
    return nn.Sequential(nn.Dense(4, 3), nn.ReLU(), nn.Dense(3, 2))


def test_forward_hook_sees_module_inputs_and_output(device):
    model = _small_model().to(device)
    seen = []
    model.layers[0].register_forward_hook(lambda module, inputs, output: seen.append((module, inputs, output)))
    x = minicnn.tensor(np.ones((5, 4)), device=device)
    model(x)
    assert len(seen) == 1
    module, inputs, output = seen[0]
    assert module is model.layers[0]
    assert isinstance(inputs, tuple) and len(inputs) == 1 and inputs[0] is x
    assert output.shape == (5, 3)


def test_forward_hook_can_replace_the_output(device):
    model = _small_model().to(device)
    model.layers[1].register_forward_hook(lambda module, inputs, output: output * 0.0)
    x = minicnn.tensor(np.ones((5, 4)), device=device)
    expected_bias = np.broadcast_to(to_host(model.layers[2].bias), (5, 2))
    np.testing.assert_allclose(to_host(model(x)), expected_bias, rtol=1e-6)


def test_forward_hooks_belong_to_one_instance_and_can_be_removed():
    first, second = nn.ReLU(), nn.ReLU()
    calls = []
    handle = first.register_forward_hook(lambda module, inputs, output: calls.append(module))
    x = minicnn.tensor([-1.0, 1.0])
    first(x)
    second(x)
    assert calls == [first]
    assert nn.ReLU._forward_hooks is None and nn.Module._forward_hooks is None
    handle.remove()
    first(x)
    assert calls == [first]


def test_backward_hook_receives_the_gradient_of_the_output(device):
    model = _small_model().to(device)
    outputs, grads = [], []
    middle = model.layers[1]
    middle.register_forward_hook(lambda module, inputs, output: outputs.append(output.retain_grad()))
    middle.register_backward_hook(lambda module, grad_output: grads.append((module, to_host(grad_output).copy())))
    x = minicnn.tensor(np.random.default_rng(0).standard_normal((5, 4)), device=device)
    (model(x) * model(x)).sum().backward()
    assert len(grads) == 2  # the model ran twice, so the hook watches two outputs
    for (module, grad), output in zip(grads, outputs):
        assert module is middle
        np.testing.assert_allclose(grad, to_host(output.grad))


def test_backward_hook_on_the_last_layer_sees_ones_for_a_sum(device):
    model = _small_model().to(device)
    grads = []
    model.layers[2].register_backward_hook(lambda module, grad_output: grads.append(to_host(grad_output)))
    model(minicnn.tensor(np.ones((3, 4)), device=device)).sum().backward()
    np.testing.assert_array_equal(grads[0], np.ones((3, 2)))


def test_backward_hook_removed_before_backward_is_not_called():
    model = _small_model()
    calls = []
    handle = model.layers[0].register_backward_hook(lambda module, grad_output: calls.append(1))
    loss = model(minicnn.tensor(np.ones((2, 4)))).sum()
    handle.remove()
    loss.backward()
    assert calls == []


def test_backward_hook_is_not_attached_under_no_grad_but_forward_hook_runs():
    model = _small_model()
    forward_calls, backward_calls = [], []
    model.layers[0].register_forward_hook(lambda module, inputs, output: forward_calls.append(1))
    model.layers[0].register_backward_hook(lambda module, grad_output: backward_calls.append(1))
    with minicnn.no_grad():
        output = model(minicnn.tensor(np.ones((2, 4))))
    assert forward_calls == [1] and not output.requires_grad and backward_calls == []


def test_hooks_leave_state_and_traversal_untouched(device):
    model = _small_model()
    plain = _small_model()
    plain.load_state_dict(model.state_dict())
    for layer in model.layers:
        layer.register_forward_hook(lambda module, inputs, output: None)
        layer.register_backward_hook(lambda module, grad_output: None)
    model.register_forward_hook(lambda module, inputs, output: None)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert [name for name, _ in model.named_parameters()] == [name for name, _ in plain.named_parameters()]
    assert [name for name, _ in model.named_children()] == [name for name, _ in plain.named_children()]
    assert len(list(model.modules())) == len(list(plain.modules()))
    assert model.config() == plain.config()
    model.to(device)
    plain.to(device)
    x = minicnn.tensor(np.ones((2, 4)), device=device)
    np.testing.assert_allclose(to_host(model(x)), to_host(plain(x)))
