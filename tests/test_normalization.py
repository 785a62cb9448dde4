"""Tests for minicnn.functional.normalization (batch_norm), the BatchNorm layers and Module buffers."""

import re
import sys

import numpy as np
import pytest
from conftest import to_host
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicnn
import minicnn.functional as F
from minicnn import backend, nn, optim

# The `device` fixture only names a backend, so reusing it across Hypothesis examples is safe.
CHECKS = settings(
    max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def batch_norm_cases(draw):
    """A 2-d (N, C) or 4-d (N, C, H, W) input shape with at least two values per channel, and a seed."""
    channels = draw(st.integers(1, 3))
    if draw(st.booleans()):
        shape = (draw(st.integers(2, 5)), channels)
    else:
        shape = (draw(st.integers(1, 3)), channels, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        if shape[0] * shape[2] * shape[3] < 2:  # training needs two values per channel
            shape = (2,) + shape[1:]
    return shape, draw(st.integers(0, 2**16))


def _case_arrays(shape, seed):
    """x (shifted and scaled per channel, so normalising matters), gamma, beta, running stats, upstream grad."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    channel_shape = (1, C) + (1,) * (len(shape) - 2)
    x = 2.0 * rng.standard_normal(shape) * rng.uniform(0.5, 2.0, channel_shape) + rng.standard_normal(channel_shape)
    return {
        "x": x,
        "gamma": rng.uniform(0.5, 1.5, C),
        "beta": rng.standard_normal(C),
        "running_mean": rng.standard_normal(C),
        "running_var": rng.uniform(0.5, 2.0, C),
        "grad": rng.standard_normal(shape),
    }


def _tensors(arrays, device):
    return [minicnn.tensor(arrays[name], requires_grad=True, device=device) for name in ("x", "gamma", "beta")]


# ----- gradients ---------------------------------------------------------------------------------


@CHECKS
@given(case=batch_norm_cases())
def test_batch_norm_training_gradcheck(device, case):
    arrays = _case_arrays(*case)
    x, gamma, beta = _tensors(arrays, device)
    minicnn.gradcheck(lambda x, g, b: F.batch_norm(x, g, b, training=True), x, gamma, beta)


@CHECKS
@given(case=batch_norm_cases())
def test_batch_norm_eval_gradcheck(device, case):
    arrays = _case_arrays(*case)
    xp = backend.array_module_for(device)
    x, gamma, beta = _tensors(arrays, device)
    # copies, since batch_norm updates them in place
    running_mean, running_var = xp.array(arrays["running_mean"]), xp.array(arrays["running_var"])
    minicnn.gradcheck(lambda x, g, b: F.batch_norm(x, g, b, running_mean, running_var, training=False), x, gamma, beta)


def test_batch_norm_is_one_operation_over_its_three_inputs(device):
    x, gamma, beta = _tensors(_case_arrays((4, 3, 2, 2), 0), device)
    out = F.batch_norm(x, gamma, beta)
    assert [id(t) for t in out.creator.inputs] == [id(x), id(gamma), id(beta)]


# ----- agreement with PyTorch --------------------------------------------------------------------


@CHECKS
@given(case=batch_norm_cases(), training=st.booleans(), momentum=st.sampled_from([0.1, 0.5]))
def test_batch_norm_matches_torch(device, case, training, momentum):
    torch = pytest.importorskip("torch")
    arrays = _case_arrays(*case)
    xp = backend.array_module_for(device)
    x, gamma, beta = _tensors(arrays, device)
    # copies, since batch_norm updates them in place
    running_mean, running_var = xp.array(arrays["running_mean"]), xp.array(arrays["running_var"])
    out = F.batch_norm(x, gamma, beta, running_mean, running_var, training=training, momentum=momentum, eps=1e-3)
    out.backward(minicnn.tensor(arrays["grad"], device=device))

    x_t, gamma_t, beta_t = (torch.tensor(arrays[n], requires_grad=True) for n in ("x", "gamma", "beta"))
    running_mean_t, running_var_t = torch.tensor(arrays["running_mean"]), torch.tensor(arrays["running_var"])
    expected = torch.nn.functional.batch_norm(
        x_t, running_mean_t, running_var_t, gamma_t, beta_t, training=training, momentum=momentum, eps=1e-3
    )
    expected.backward(torch.tensor(arrays["grad"]))

    assert out.dtype == np.float64 and out.shape == tuple(expected.shape)
    np.testing.assert_allclose(to_host(out), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for mine, theirs in ((x, x_t), (gamma, gamma_t), (beta, beta_t)):
        np.testing.assert_allclose(to_host(mine.grad), theirs.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(to_host(running_mean), running_mean_t.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(to_host(running_var), running_var_t.numpy(), rtol=1e-12, atol=1e-14)
    if not training:  # evaluation reads the running statistics and leaves them alone
        np.testing.assert_array_equal(to_host(running_mean), arrays["running_mean"])
        np.testing.assert_array_equal(to_host(running_var), arrays["running_var"])


def test_batch_norm_without_running_stats_uses_batch_statistics(device):
    arrays = _case_arrays((6, 2, 3, 3), 1)
    x, gamma, beta = _tensors(arrays, device)
    out = to_host(F.batch_norm(x, gamma, beta))
    mean = arrays["x"].mean(axis=(0, 2, 3), keepdims=True)
    var = arrays["x"].var(axis=(0, 2, 3), keepdims=True)
    expected = (arrays["x"] - mean) / np.sqrt(var + 1e-5) * arrays["gamma"][:, None, None] + arrays["beta"][:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_batch_norm_running_var_uses_the_unbiased_variance(device):
    xp = backend.array_module_for(device)
    x = minicnn.tensor(np.array([[1.0], [3.0]]), device=device)  # mean 2, biased var 1, unbiased var 2
    running_mean, running_var = xp.zeros(1), xp.ones(1)
    F.batch_norm(x, minicnn.tensor(np.ones(1), device=device), minicnn.tensor(np.zeros(1), device=device),
                 running_mean, running_var, training=True, momentum=0.5)
    np.testing.assert_allclose(to_host(running_mean), [1.0])  # 0.5 * 0 + 0.5 * 2
    np.testing.assert_allclose(to_host(running_var), [1.5])  # 0.5 * 1 + 0.5 * 2


# ----- layers ------------------------------------------------------------------------------------


def _host_input(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("layer_class", [nn.BatchNorm1D, nn.BatchNorm2D])
def test_batch_norm_layer_parameters_and_buffers(layer_class, device):
    minicnn.set_default_device(device)
    layer = layer_class(5)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.parameters() == [layer.weight, layer.bias]  # buffers are not trained
    assert [name for name, _ in layer.named_buffers()] == ["running_mean", "running_var"]
    for parameter in layer.parameters():
        assert isinstance(parameter, nn.Parameter) and parameter.requires_grad
        assert parameter.dtype == np.float32 and parameter.shape == (5,) and parameter.device == device
    for buffer in layer.buffers():
        assert buffer.dtype == np.float32 and buffer.shape == (5,) and backend.device_of(buffer) == device
    np.testing.assert_array_equal(to_host(layer.weight), np.ones(5))
    np.testing.assert_array_equal(to_host(layer.bias), np.zeros(5))
    np.testing.assert_array_equal(to_host(layer.running_mean), np.zeros(5))
    np.testing.assert_array_equal(to_host(layer.running_var), np.ones(5))


def test_batch_norm_2d_training_normalises_each_channel_and_updates_running_stats(device):
    layer = nn.BatchNorm2D(3, momentum=0.2).to(device)
    x = _host_input((4, 3, 5, 5))
    out = to_host(layer(minicnn.tensor(x, device=device))).astype(np.float64)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1.0, rtol=1e-3)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(to_host(layer.running_mean), 0.2 * x64.mean(axis=(0, 2, 3)), rtol=1e-5)
    unbiased = x64.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(to_host(layer.running_var), 0.8 + 0.2 * unbiased, rtol=1e-5)


def test_batch_norm_layers_in_eval_use_running_stats_and_leave_them_alone(device):
    for layer, shape in ((nn.BatchNorm2D(3), (2, 3, 4, 4)), (nn.BatchNorm1D(3), (5, 3))):
        layer.to(device)
        layer(minicnn.tensor(_host_input(shape, seed=1), device=device))  # one training step moves the stats
        running_mean, running_var = to_host(layer.running_mean).copy(), to_host(layer.running_var).copy()
        assert np.any(running_mean != 0)
        layer.eval()
        x = _host_input(shape, seed=2)
        out = to_host(layer(minicnn.tensor(x, device=device)))
        channel_shape = (1, 3) + (1,) * (len(shape) - 2)
        expected = (x - running_mean.reshape(channel_shape)) / np.sqrt(running_var.reshape(channel_shape) + 1e-5)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(to_host(layer.running_mean), running_mean)
        np.testing.assert_array_equal(to_host(layer.running_var), running_var)
        # each sample is normalised on its own in eval: a batch of one gives the same row
        single = to_host(layer(minicnn.tensor(x[:1], device=device)))
        np.testing.assert_allclose(single, out[:1], rtol=1e-6, atol=1e-6)


def test_batch_norm_2d_layer_matches_torch_over_train_and_eval_steps(device):
    torch = pytest.importorskip("torch")
    layer = nn.BatchNorm2D(3, momentum=0.3, eps=1e-4).to(device)
    reference = torch.nn.BatchNorm2d(3, momentum=0.3, eps=1e-4)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        reference.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    layer.load_state_dict({name: value.numpy() for name, value in reference.state_dict().items()
                           if name != "num_batches_tracked"})
    for step in range(3):
        x = _host_input((2, 3, 4, 4), seed=step)
        out = layer(minicnn.tensor(x, device=device))
        expected = reference(torch.tensor(x))
        np.testing.assert_allclose(to_host(out), expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_host(layer.running_mean), reference.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_host(layer.running_var), reference.running_var.numpy(), rtol=1e-5, atol=1e-6)
    layer.eval(), reference.eval()
    x = _host_input((2, 3, 4, 4), seed=9)
    np.testing.assert_allclose(to_host(layer(minicnn.tensor(x, device=device))),
                               reference(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


# ----- buffers in state_dict, load_state_dict and to ----------------------------------------------


def _bn_cnn():
    """(N, 1, 6, 6) -> (N, 3); batch norm at positions 1 and 5."""
    return nn.Sequential(
        nn.Conv2D(1, 4, 3), nn.BatchNorm2D(4), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.BatchNorm1D(16),
        nn.Dense(16, 3),
    )


def test_state_dict_contains_buffers_as_copies(device):
    model = _bn_cnn().to(device)
    state = model.state_dict()
    assert set(state) == {
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "5.weight", "5.bias", "5.running_mean", "5.running_var", "6.weight", "6.bias",
    }
    assert len(model.parameters()) == 8
    assert "1.running_mean" not in dict(model.named_parameters())
    model(minicnn.tensor(_host_input((3, 1, 6, 6)), device=device))  # training forward updates buffers
    assert not np.array_equal(to_host(state["1.running_mean"]), to_host(model[1].running_mean))
    np.testing.assert_array_equal(to_host(state["1.running_mean"]), np.zeros(4))


def test_load_state_dict_round_trips_buffers(device):
    source = _bn_cnn().to(device)
    for seed in range(3):
        source(minicnn.tensor(_host_input((4, 1, 6, 6), seed=seed), device=device))
    target = _bn_cnn().to(device)
    source.eval(), target.eval()
    x = minicnn.tensor(_host_input((2, 1, 6, 6), seed=7), device=device)
    assert not np.allclose(to_host(target(x)), to_host(source(x)))
    state = source.state_dict()
    target.load_state_dict(state)
    for name, array in target.named_buffers():
        np.testing.assert_array_equal(to_host(array), to_host(state[name]))
        assert backend.device_of(array) == device and array.dtype == np.float32
    np.testing.assert_array_equal(to_host(target(x)), to_host(source(x)))
    # the model does not alias the dict it was loaded from
    state["1.running_var"] += 5
    assert not np.array_equal(to_host(target[1].running_var), to_host(state["1.running_var"]))


def test_load_state_dict_checks_buffer_names_and_shapes():
    model = _bn_cnn()
    snapshot = {name: to_host(array).copy() for name, array in model.state_dict().items()}
    state = {name: value + 1 for name, value in model.state_dict().items()}
    del state["5.running_var"]
    with pytest.raises(KeyError, match=r"5\.running_var"):
        model.load_state_dict(state)
    state = {name: value + 1 for name, value in model.state_dict().items()}
    state["1.running_mean"] = np.zeros(7, dtype=np.float32)
    with pytest.raises(minicnn.ShapeError) as excinfo:
        model.load_state_dict(state)
    message = str(excinfo.value)
    assert "1.running_mean" in message and "(7,)" in message and "(4,)" in message
    for name, array in model.state_dict().items():  # nothing was loaded
        np.testing.assert_array_equal(to_host(array), snapshot[name])


def test_module_to_cpu_keeps_buffers():
    model = _bn_cnn()
    model(minicnn.tensor(_host_input((3, 1, 6, 6))))
    before = {name: array.copy() for name, array in model.named_buffers()}
    assert model.to("cpu") is model
    for name, array in model.named_buffers():
        assert isinstance(array, np.ndarray)
        np.testing.assert_array_equal(array, before[name])
    assert model(minicnn.tensor(_host_input((3, 1, 6, 6)))).shape == (3, 3)


def test_module_to_moves_buffers(device):
    model = _bn_cnn()
    model(minicnn.tensor(_host_input((3, 1, 6, 6))))
    before = {name: array.copy() for name, array in model.named_buffers()}
    model.to(device)
    for name, array in model.named_buffers():
        assert backend.device_of(array) == device
        np.testing.assert_array_equal(to_host(array), before[name])
    model(minicnn.tensor(_host_input((3, 1, 6, 6)), device=device))
    assert all(backend.device_of(array) == device for array in model.buffers())


def test_module_to_gpu_without_cupy_keeps_buffers_on_cpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(backend, "_cupy", None)
    model = _bn_cnn()
    with pytest.raises(minicnn.BackendUnavailableError):
        model.to("gpu")
    assert all(isinstance(array, np.ndarray) for array in model.buffers())


class _Counter(nn.Module):
    """A custom module with a buffer of its own and a batch-norm child."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", np.zeros(1))
        self.norm = nn.BatchNorm1D(2)

    def forward(self, x):
        self.calls = self.calls + 1  # reassigning keeps it a buffer
        return self.norm(x)


def test_register_buffer_in_a_custom_module():
    module = _Counter()
    module(minicnn.tensor(_host_input((3, 2))))
    assert [name for name, _ in module.named_buffers()] == ["calls", "norm.running_mean", "norm.running_var"]
    assert module.state_dict()["calls"].tolist() == [1.0]
    assert [name for name, _ in module.named_parameters()] == ["norm.weight", "norm.bias"]
    assert list(nn.Dense(2, 2).named_buffers()) == [] and nn.Dense(2, 2).buffers() == []


def test_register_buffer_rejects_non_arrays():
    with pytest.raises(TypeError, match="running_mean"):
        nn.Module().register_buffer("running_mean", [0.0, 0.0])


# ----- training ----------------------------------------------------------------------------------


def test_cnn_with_batch_norm_trains_with_adam(device):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((24, 1, 6, 6)).astype(np.float32)
    labels = rng.integers(0, 3, size=24)
    images[np.arange(24), 0, labels, labels] += 3.0  # a bright pixel whose position gives the class
    model = nn.Sequential(
        nn.Conv2D(1, 4, 3, padding=1), nn.BatchNorm2D(4), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(36, 3)
    ).to(device)
    x, y = minicnn.tensor(images, device=device), minicnn.tensor(labels, device=device)
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model[1].weight.grad is not None and np.any(to_host(model[1].weight.grad))
    assert not np.array_equal(to_host(model[1].weight), np.ones(4))  # gamma was trained
    assert np.any(to_host(model[1].running_mean) != 0)


# ----- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["gamma", "beta", "running_mean", "running_var"])
def test_batch_norm_channel_mismatch_raises_shape_error(device, wrong):
    xp = backend.array_module_for(device)
    arrays = {"gamma": np.ones(3), "beta": np.zeros(3), "running_mean": np.zeros(3), "running_var": np.ones(3)}
    arrays[wrong] = np.ones(5)
    x = minicnn.tensor(np.zeros((2, 3, 4, 4)), device=device)
    with pytest.raises(minicnn.ShapeError) as excinfo:
        F.batch_norm(x, minicnn.tensor(arrays["gamma"], device=device), minicnn.tensor(arrays["beta"], device=device),
                     xp.asarray(arrays["running_mean"]), xp.asarray(arrays["running_var"]))
    message = str(excinfo.value)
    assert "batch_norm" in message and wrong in message
    assert "(5,)" in message and "(3,)" in message and "(2, 3, 4, 4)" in message


def test_batch_norm_input_errors(device):
    gamma, beta = minicnn.tensor(np.ones(3), device=device), minicnn.tensor(np.zeros(3), device=device)
    with pytest.raises(minicnn.ShapeError, match=r"batch_norm.*\(3,\)"):
        F.batch_norm(minicnn.tensor(np.zeros(3), device=device), gamma, beta)
    with pytest.raises(minicnn.ShapeError, match=r"batch_norm.*one value per channel"):
        F.batch_norm(minicnn.tensor(np.zeros((1, 3, 1, 1)), device=device), gamma, beta, training=True)
    with pytest.raises(ValueError, match=r"batch_norm.*running_mean"):
        F.batch_norm(minicnn.tensor(np.zeros((2, 3)), device=device), gamma, beta, training=False)
    with pytest.raises(ValueError, match=r"batch_norm.*both"):
        F.batch_norm(minicnn.tensor(np.zeros((2, 3)), device=device), gamma, beta, running_mean=np.zeros(3))


def test_batch_norm_running_stats_on_another_device_raise(device):
    if device != "gpu":
        pytest.skip("needs a GPU")
    gamma, beta = minicnn.tensor(np.ones(3), device="gpu"), minicnn.tensor(np.zeros(3), device="gpu")
    with pytest.raises(minicnn.DeviceMismatchError, match="running_mean"):
        F.batch_norm(minicnn.tensor(np.zeros((2, 3)), device="gpu"), gamma, beta, np.zeros(3), np.ones(3))


@pytest.mark.parametrize(
    "layer, shape, expected",
    [
        (nn.BatchNorm2D(8), (2, 5, 4, 4), r"\(N, 8, \*, \*\)"),
        (nn.BatchNorm2D(8), (2, 8), r"\(N, 8, \*, \*\)"),
        (nn.BatchNorm1D(6), (2, 4), r"\(N, 6\)"),
        (nn.BatchNorm1D(6), (2, 6, 3, 3), r"\(N, 6\)"),
    ],
)
def test_batch_norm_layer_wrong_input_raises_shape_error(layer, shape, expected):
    with pytest.raises(minicnn.ShapeError) as excinfo:
        layer(minicnn.tensor(np.zeros(shape, dtype=np.float32)))
    message = str(excinfo.value)
    assert type(layer).__name__ in message and re.search(expected, message), message
    assert str(shape) in message


def test_batch_norm_layer_rejects_zero_features():
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm2D(0)
