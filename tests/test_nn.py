"""Tests for minicnn.nn: parameters, initialisation, traversal, modes, saving/loading, errors, devices."""

import re
import sys

import numpy as np
import pytest

import minicnn
from minicnn import backend, nn
from minicnn import functional as F
from conftest import to_host


def _host_input(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _small_cnn():
    """(N, 1, 6, 6) -> (N, 3); parameters at positions 0 and 3."""
    return nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dense(2 * 4 * 4, 3))


class _Net(nn.Module):
    """A custom Module holding a Sequential and a Dense."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2D(1, 2, 3), nn.ReLU(), nn.Dropout(0.5), nn.Flatten())
        self.head = nn.Dense(2 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.features(x))


# ----- parameter names, shapes and dtypes ---------------------------------------------------

def test_conv2d_parameter_shapes():
    layer = nn.Conv2D(3, 8, (5, 4))
    parameters = dict(layer.named_parameters())
    assert set(parameters) == {"weight", "bias"}
    assert layer.weight.shape == (8, 3, 5, 4)
    assert layer.bias.shape == (8,)
    assert parameters["weight"] is layer.weight and parameters["bias"] is layer.bias


def test_conv2d_int_kernel_size_is_square():
    assert nn.Conv2D(2, 6, 3).weight.shape == (6, 2, 3, 3)


def test_dense_parameter_shapes():
    layer = nn.Dense(7, 4)
    assert set(dict(layer.named_parameters())) == {"weight", "bias"}
    assert layer.weight.shape == (7, 4)
    assert layer.bias.shape == (4,)


@pytest.mark.parametrize("make_layer", [lambda: nn.Conv2D(3, 8, 3, bias=False), lambda: nn.Dense(7, 4, bias=False)])
def test_bias_false_gives_no_bias_parameter(make_layer):
    layer = make_layer()
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert len(layer.parameters()) == 1


def test_dense_without_bias_computes_x_at_weight(device):
    layer = nn.Dense(5, 3, bias=False).to(device)
    x = _host_input((4, 5))
    out = layer(minicnn.tensor(x, device=device))
    np.testing.assert_allclose(to_host(out), x @ to_host(layer.weight), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make_layer", [lambda: nn.Conv2D(3, 8, 3), lambda: nn.Dense(7, 4)])
def test_layers_create_float32_parameters_that_require_grad(make_layer, device):
    layer = make_layer().to(device)
    for parameter in layer.parameters():
        assert isinstance(parameter, nn.Parameter)
        assert parameter.dtype == np.float32
        assert parameter.requires_grad
        assert parameter.device == device


def test_bias_starts_at_zero():
    assert not np.any(to_host(nn.Dense(7, 4).bias))
    assert not np.any(to_host(nn.Conv2D(3, 8, 3).bias))


def test_parameter_keeps_float64():
    parameter = nn.Parameter(np.ones((2, 3), dtype=np.float64))
    assert parameter.dtype == np.float64
    assert parameter.requires_grad


@pytest.mark.parametrize("data", [np.arange(6).reshape(2, 3), [1, 2, 3], 5])
def test_parameter_of_ints_becomes_float32(data):
    parameter = nn.Parameter(data)
    assert parameter.dtype == np.float32
    np.testing.assert_array_equal(to_host(parameter), np.asarray(data, dtype=np.float32))


# ----- initialisation ------------------------------------------------------------------------

def _he_std(fan_in):
    return np.sqrt(2.0 / fan_in)


def _glorot_limit(fan_in, fan_out):
    return np.sqrt(6.0 / (fan_in + fan_out))


def _assert_he(weight, fan_in, fan_out):
    w = to_host(weight).astype(np.float64)
    assert abs(w.mean()) < 0.05 * _he_std(fan_in)
    np.testing.assert_allclose(w.std(), _he_std(fan_in), rtol=0.02)
    # a normal draw of this size has tails beyond the Glorot bound
    assert np.abs(w).max() > _glorot_limit(fan_in, fan_out)


def _assert_glorot(weight, fan_in, fan_out):
    w = to_host(weight).astype(np.float64)
    limit = _glorot_limit(fan_in, fan_out)
    assert np.abs(w).max() <= limit
    assert abs(w.mean()) < 0.05 * limit
    np.testing.assert_allclose(w.std(), limit / np.sqrt(3.0), rtol=0.02)


def test_dense_followed_by_relu_gets_he_normal():
    model = nn.Sequential(nn.Dense(2000, 500), nn.ReLU())
    _assert_he(model[0].weight, 2000, 500)


@pytest.mark.parametrize("following", [None, nn.Sigmoid, nn.Tanh, nn.Dropout])
def test_dense_not_followed_by_relu_gets_glorot_uniform(following):
    layers = [nn.Dense(2000, 500)] + ([following()] if following else [])
    model = nn.Sequential(*layers)
    _assert_glorot(model[0].weight, 2000, 500)


def test_dense_alone_gets_glorot_uniform():
    _assert_glorot(nn.Dense(2000, 500).weight, 2000, 500)


def test_inner_dense_layers_choose_by_their_own_successor():
    model = nn.Sequential(nn.Dense(1000, 800), nn.ReLU(), nn.Dense(800, 1000))
    _assert_he(model[0].weight, 1000, 800)
    _assert_glorot(model[2].weight, 800, 1000)


def test_conv2d_alone_defaults_to_he():
    layer = nn.Conv2D(64, 128, 3)
    _assert_he(layer.weight, 64 * 9, 128 * 9)


def test_conv2d_followed_by_relu_gets_he():
    model = nn.Sequential(nn.Conv2D(64, 128, 3), nn.ReLU())
    _assert_he(model[0].weight, 64 * 9, 128 * 9)


def test_explicit_glorot_is_respected_before_relu():
    model = nn.Sequential(nn.Dense(2000, 500, init="glorot"), nn.ReLU())
    _assert_glorot(model[0].weight, 2000, 500)
    _assert_glorot(nn.Conv2D(64, 128, 3, init="glorot").weight, 64 * 9, 128 * 9)


def test_explicit_he_is_respected_without_relu():
    model = nn.Sequential(nn.Dense(2000, 500, init="he"))
    _assert_he(model[0].weight, 2000, 500)


def test_unknown_init_is_rejected():
    with pytest.raises(ValueError, match="xavier"):
        nn.Dense(3, 2, init="xavier")


def test_initialisation_follows_manual_seed():
    minicnn.manual_seed(7)
    first = to_host(nn.Dense(20, 10).weight)
    minicnn.manual_seed(7)
    second = to_host(nn.Dense(20, 10).weight)
    minicnn.manual_seed(8)
    third = to_host(nn.Dense(20, 10).weight)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, third)


# ----- traversal ------------------------------------------------------------------------------

def test_sequential_named_parameters():
    model = _small_cnn()
    named = list(model.named_parameters())
    assert sorted(name for name, _ in named) == ["0.bias", "0.weight", "3.bias", "3.weight"]
    by_name = dict(named)
    assert by_name["0.weight"] is model[0].weight
    assert by_name["0.bias"] is model[0].bias
    assert by_name["3.weight"] is model[3].weight
    assert by_name["3.bias"] is model[3].bias


def test_parameters_lists_each_parameter_once_in_named_order():
    model = _small_cnn()
    parameters = model.parameters()
    assert len(parameters) == 4
    assert len({id(p) for p in parameters}) == 4
    assert [id(p) for p in parameters] == [id(p) for _, p in model.named_parameters()]
    assert all(isinstance(p, nn.Parameter) for p in parameters)


def test_parameterless_layers_have_no_parameters():
    for layer in (nn.ReLU(), nn.Sigmoid(), nn.Tanh(), nn.Flatten(), nn.MaxPool2D(2), nn.AvgPool2D(2), nn.Dropout(0.5)):
        assert layer.parameters() == []
        assert list(layer.named_parameters()) == []


def test_nested_module_parameters():
    net = _Net()
    names = sorted(name for name, _ in net.named_parameters())
    assert names == ["features.0.bias", "features.0.weight", "head.bias", "head.weight"]
    by_name = dict(net.named_parameters())
    assert by_name["features.0.weight"] is net.features[0].weight
    assert by_name["head.weight"] is net.head.weight
    assert len(net.parameters()) == 4
    assert set(net.state_dict()) == set(names)


# ----- modes ------------------------------------------------------------------------------------

def test_train_and_eval_propagate_to_sub_modules():
    net = _Net()
    modules = [net, net.features, net.head] + list(net.features)
    assert all(m.training for m in modules)
    assert net.eval() is net
    assert not any(m.training for m in modules)
    assert net.train() is net
    assert all(m.training for m in modules)


def test_dropout_is_identity_in_eval_mode(device):
    layer = nn.Dropout(0.5).eval()
    x = _host_input((50, 40))
    out = layer(minicnn.tensor(x, device=device))
    np.testing.assert_array_equal(to_host(out), x)


def test_dropout_in_train_mode_zeroes_p_and_scales_the_rest(device):
    p = 0.3
    layer = nn.Dropout(p)
    assert layer.training
    x = np.random.default_rng(1).uniform(0.5, 1.5, (200, 500)).astype(np.float32)
    out = to_host(layer(minicnn.tensor(x, device=device)))
    dropped = out == 0
    assert abs(dropped.mean() - p) < 0.01
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1 - p), rtol=1e-6)


def test_model_in_eval_mode_is_deterministic(device):
    net = _Net().to(device)
    x = minicnn.tensor(_host_input((4, 1, 6, 6)), device=device)
    train_outputs = [to_host(net(x)) for _ in range(2)]
    assert not np.array_equal(*train_outputs)  # dropout active: the two draws differ
    net.eval()
    np.testing.assert_array_equal(to_host(net(x)), to_host(net(x)))


# ----- gradients --------------------------------------------------------------------------------

def test_zero_grad_clears_every_gradient(device):
    net = _Net().to(device)
    x = minicnn.tensor(_host_input((4, 1, 6, 6)), device=device)
    F.cross_entropy(net(x), np.array([0, 1, 2, 0])).backward()
    assert all(p.grad is not None and np.any(to_host(p.grad)) for p in net.parameters())
    net.zero_grad()
    for parameter in net.parameters():
        assert parameter.grad is None or not np.any(to_host(parameter.grad))


# ----- state_dict and load_state_dict -------------------------------------------------------------

def _perturb(model):
    for parameter in model.parameters():
        parameter.data += 1


def test_state_dict_holds_copies(device):
    model = _small_cnn().to(device)
    state = model.state_dict()
    saved = {name: to_host(value).copy() for name, value in state.items()}
    _perturb(model)
    for name, value in state.items():
        np.testing.assert_array_equal(to_host(value), saved[name])
        assert not np.array_equal(to_host(value), to_host(dict(model.named_parameters())[name]))


def test_load_state_dict_restores_outputs_exactly(device):
    model = _small_cnn().to(device)
    x = minicnn.tensor(_host_input((3, 1, 6, 6)), device=device)
    before = to_host(model(x))
    state = model.state_dict()
    _perturb(model)
    assert not np.allclose(to_host(model(x)), before)
    model.load_state_dict(state)
    np.testing.assert_array_equal(to_host(model(x)), before)
    # the model does not alias the dict it was loaded from
    for value in state.values():
        value += 5
    np.testing.assert_array_equal(to_host(model(x)), before)


def test_load_state_dict_into_a_fresh_model(device):
    source = _Net().to(device).eval()
    target = _Net().to(device).eval()
    x = minicnn.tensor(_host_input((3, 1, 6, 6)), device=device)
    assert not np.allclose(to_host(target(x)), to_host(source(x)))
    target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(to_host(target(x)), to_host(source(x)))


def _snapshot(model):
    return {name: to_host(p).copy() for name, p in model.named_parameters()}


def _assert_unchanged(model, snapshot):
    for name, parameter in model.named_parameters():
        np.testing.assert_array_equal(to_host(parameter), snapshot[name])


def test_load_state_dict_missing_key_raises_key_error():
    model = _small_cnn()
    snapshot = _snapshot(model)
    state = {name: value + 1 for name, value in model.state_dict().items()}
    del state["3.bias"]
    with pytest.raises(KeyError, match=r"3\.bias"):
        model.load_state_dict(state)
    _assert_unchanged(model, snapshot)


def test_load_state_dict_unexpected_key_raises_key_error():
    model = _small_cnn()
    snapshot = _snapshot(model)
    state = {name: value + 1 for name, value in model.state_dict().items()}
    state["7.weight"] = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(KeyError, match=r"7\.weight"):
        model.load_state_dict(state)
    _assert_unchanged(model, snapshot)


def test_load_state_dict_wrong_shape_raises_shape_error():
    model = _small_cnn()
    snapshot = _snapshot(model)
    state = {name: value + 1 for name, value in model.state_dict().items()}
    state["3.weight"] = np.zeros((32, 4), dtype=np.float32)
    with pytest.raises(minicnn.ShapeError) as excinfo:
        model.load_state_dict(state)
    message = str(excinfo.value)
    assert "3.weight" in message
    assert "(32, 4)" in message and "(32, 3)" in message
    # the well-shaped entries before and after it were not loaded either
    _assert_unchanged(model, snapshot)


# ----- shape errors -------------------------------------------------------------------------------

def test_dense_wrong_input_size_raises_shape_error():
    layer = nn.Dense(576, 64)
    with pytest.raises(minicnn.ShapeError) as excinfo:
        layer(minicnn.tensor(np.zeros((5, 1600), dtype=np.float32)))
    message = str(excinfo.value)
    assert "Dense" in message and "576" in message and "1600" in message


def test_shape_error_is_a_value_error():
    with pytest.raises(ValueError):
        nn.Dense(576, 64)(minicnn.tensor(np.zeros((5, 1600), dtype=np.float32)))


def test_sequential_shape_error_names_layer_and_position():
    # a (1, 14, 14) input would give 4 * 12 * 12 = 576 features; (1, 22, 22) gives 1600
    model = nn.Sequential(nn.Conv2D(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Dense(576, 64))
    assert model(minicnn.tensor(np.zeros((5, 1, 14, 14), dtype=np.float32))).shape == (5, 64)
    with pytest.raises(minicnn.ShapeError) as excinfo:
        model(minicnn.tensor(np.zeros((5, 1, 22, 22), dtype=np.float32)))
    message = str(excinfo.value)
    assert "Dense" in message and "576" in message and "1600" in message
    assert re.search(r"\b3\b", message), message


def test_conv2d_wrong_channel_count_raises_shape_error():
    layer = nn.Conv2D(5, 8, 3)
    with pytest.raises(minicnn.ShapeError) as excinfo:
        layer(minicnn.tensor(np.zeros((2, 7, 9, 9), dtype=np.float32)))
    message = str(excinfo.value)
    assert "Conv2D" in message
    assert re.search(r"\b5\b", message) and re.search(r"\b7\b", message), message


# ----- devices -------------------------------------------------------------------------------------

def test_module_to_cpu():
    model = _small_cnn()
    assert model.to("cpu") is model
    assert all(p.device == "cpu" and isinstance(p.data, np.ndarray) for p in model.parameters())
    assert model(minicnn.tensor(_host_input((2, 1, 6, 6)))).shape == (2, 3)


def test_module_to_moves_parameters_and_gradients(device):
    model = _small_cnn()
    x = minicnn.tensor(_host_input((2, 1, 6, 6)))
    F.cross_entropy(model(x), np.array([0, 2])).backward()
    before = _snapshot(model)
    assert model.to(device) is model
    for name, parameter in model.named_parameters():
        assert parameter.device == device
        assert backend.device_of(parameter.grad) == device
        assert parameter.dtype == np.float32
        np.testing.assert_array_equal(to_host(parameter), before[name])
    out = model(minicnn.tensor(_host_input((2, 1, 6, 6)), device=device))
    assert out.device == device


def test_cpu_input_to_gpu_model_raises_device_mismatch(device):
    if device != "gpu":
        pytest.skip("needs a GPU")
    model = _small_cnn().to("gpu")
    with pytest.raises(minicnn.DeviceMismatchError):
        model(minicnn.tensor(_host_input((2, 1, 6, 6)), device="cpu"))
    with pytest.raises(minicnn.DeviceMismatchError):
        nn.Dense(4, 2).to("gpu")(minicnn.tensor(_host_input((3, 4)), device="cpu"))


def test_module_to_unknown_device_raises_value_error():
    with pytest.raises(ValueError, match="tpu"):
        _small_cnn().to("tpu")


def test_module_to_gpu_without_cupy_raises_backend_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(backend, "_cupy", None)
    model = _small_cnn()
    with pytest.raises(minicnn.BackendUnavailableError, match="CuPy"):
        model.to("gpu")
    assert all(p.device == "cpu" for p in model.parameters())


def test_sequential_looks_past_batch_norm_and_dropout_for_relu():
    model = nn.Sequential(
        nn.Dense(2000, 500), nn.BatchNorm1D(500), nn.Dropout(0.2), nn.ReLU(),
        nn.Dense(500, 400), nn.BatchNorm1D(400), nn.Tanh(),
    )
    assert model[0].init_used == "he"
    assert model[4].init_used == "glorot"
    assert np.std(to_host(model[0].weight)) == pytest.approx(np.sqrt(2 / 2000), rel=0.05)


def test_module_to_dtype_casts_parameters_and_buffers(device):
    model = nn.Sequential(nn.Conv2D(1, 2, 3), nn.BatchNorm2D(2), nn.ReLU(), nn.Flatten(), nn.Dense(8, 3)).to(device)
    model.to(dtype=np.float64)
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float64)}
    assert {b.dtype for b in model.buffers()} == {np.dtype(np.float64)}
    x = minicnn.tensor(np.random.default_rng(0).standard_normal((2, 1, 4, 4)), device=device)
    assert model(x).dtype == np.float64
    with pytest.raises(TypeError, match="floating"):
        model.to(dtype=np.int32)


def test_evaluating_switches_to_eval_and_restores_the_previous_mode():
    model = nn.Sequential(nn.Dense(2, 2), nn.Dropout(0.5))
    with model.evaluating() as inside:
        assert inside is model and not model.training and not model[1].training
    assert model.training and model[1].training
    model.eval()
    with pytest.raises(RuntimeError):
        with model.evaluating():
            model.train()
            raise RuntimeError("boom")
    assert not model.training  # the mode from before the block, even after an error


# ----- PyTorch's spellings ---------------------------------------------------------------------------

def test_pytorch_spellings_are_the_layers_they_name():
    assert nn.Conv2d is nn.Conv2D and nn.BatchNorm2d is nn.BatchNorm2D and nn.BatchNorm1d is nn.BatchNorm1D
    pool = nn.MaxPool2d(2, 2)  # kernel_size, stride, positionally, as PyTorch takes them
    assert isinstance(pool, nn.MaxPool2D) and pool.config() == {"kernel_size": [2, 2], "stride": [2, 2],
                                                                "padding": [0, 0]}
    assert isinstance(nn.AvgPool2d(3, 1, 1), nn.AvgPool2D)


def test_linear_holds_its_weight_as_pytorch_does_and_computes_x_at_weight_transposed(device):
    layer = nn.Linear(4, 3).to(device)
    assert layer.weight.shape == (3, 4) and layer.bias.shape == (3,)
    rng = np.random.default_rng(0)
    layer.weight.data = backend.to_device(rng.standard_normal((3, 4)).astype(np.float32), device)
    layer.bias.data = backend.to_device(rng.standard_normal(3).astype(np.float32), device)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    out = layer(minicnn.tensor(x, device=device))
    expected = x @ to_host(layer.weight).T + to_host(layer.bias)
    np.testing.assert_allclose(to_host(out), expected, rtol=1e-5)
    out.sum().backward()
    np.testing.assert_allclose(to_host(layer.weight.grad), np.tile(x.sum(axis=0), (3, 1)), rtol=1e-5)


def test_linear_draws_with_the_fans_of_its_features():
    # He normal over fan_in = in_features: the spread must follow 400 inputs, not 10 outputs.
    layer = nn.Linear(400, 10, init="he")
    assert np.std(layer.weight.numpy()) == pytest.approx(np.sqrt(2 / 400), rel=0.1)


def test_linear_and_dense_are_siblings_with_their_own_layouts_and_the_same_draw():
    assert not isinstance(nn.Linear(4, 3), nn.Dense) and not isinstance(nn.Dense(4, 3), nn.Linear)
    assert not isinstance(nn.AvgPool2D(2), nn.MaxPool2D)  # the pools are siblings too
    minicnn.manual_seed(3)
    dense = nn.Dense(4, 3)
    minicnn.manual_seed(3)
    linear = nn.Linear(4, 3)
    assert dense.weight.shape == (4, 3) and linear.weight.shape == (3, 4)
    np.testing.assert_array_equal(linear.weight.numpy(), dense.weight.numpy().T)
    assert linear.config() == dense.config() == {"in_features": 4, "out_features": 3, "bias": True, "init": "auto"}
    with pytest.raises(ValueError, match="Linear: out_features must be an integer"):
        nn.Linear(4, 0)


def test_cross_entropy_loss_module_is_the_fused_function():
    rng = np.random.default_rng(1)
    logits = minicnn.tensor(rng.standard_normal((6, 4)), dtype="float64")
    labels = minicnn.tensor(rng.integers(0, 4, size=6))
    assert nn.CrossEntropyLoss()(logits, labels).item() == F.cross_entropy(logits, labels).item()


def test_softmax_layer_rows_sum_to_one():
    out = nn.Softmax(axis=1)(minicnn.tensor(np.array([[1000.0, 0.0], [1.0, 1.0]])))
    np.testing.assert_allclose(out.numpy(), [[1.0, 0.0], [0.5, 0.5]])
