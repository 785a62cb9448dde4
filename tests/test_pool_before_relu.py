"""Sequential runs a ReLU right before a max pool after the pool: the same outputs and gradients, bit for bit."""

import contextlib

import numpy as np
import pytest

import minicnn
from minicnn import kernels, models, nn
from minicnn.functional import cross_entropy
from minicnn.nn.sequential import pools_before_relu


def layer_by_layer(model, x):
    for layer in model:
        x = layer(x)
    return x


def outputs_and_gradients(model, run, x, labels):
    for parameter in model.parameters():
        parameter.grad = None
    inputs = minicnn.tensor(x, requires_grad=True)
    logits = run(model, inputs)
    cross_entropy(logits, minicnn.tensor(labels)).backward()
    return [logits.data, inputs.grad] + [parameter.grad for parameter in model.parameters()]


def assert_same_bits(model, x, labels):
    swapped = outputs_and_gradients(model, lambda model, x: model(x), x, labels)
    written = outputs_and_gradients(model, layer_by_layer, x, labels)
    for got, expected in zip(swapped, written):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def pooled_net(pool, dtype):
    minicnn.manual_seed(3)
    model = nn.Sequential(nn.Conv2D(2, 4, 3, padding=1), nn.ReLU(), pool, nn.Flatten(), nn.Dense(4 * 4 * 4, 5))
    for parameter in model.parameters():
        parameter.data = parameter.data.astype(dtype)
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("pool", [lambda: nn.MaxPool2D(2), lambda: nn.MaxPool2d(3, stride=2, padding=1)],
                         ids=["2x2", "3x3-stride2-pad1"])
def test_same_bits_as_the_written_order(dtype, fast, pool):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 8, 8)).astype(dtype)
    x[0] = -1.0  # a constant image: equal values in most windows after the convolution, negative ones among them
    x[1, :, :4, :4] = 0.5  # ties inside windows
    model = pooled_net(pool(), dtype)
    assert pools_before_relu(model.layers[1:3])  # the swap is what is tested
    with contextlib.nullcontext() if fast else kernels.reference_only():
        assert_same_bits(model, x, rng.integers(0, 5, 6))


def test_same_bits_for_the_models():
    rng = np.random.default_rng(1)
    x = rng.random((5, 1, 28, 28), dtype=np.float32)
    for name in ("cnn", "lenet"):
        minicnn.manual_seed(0)
        assert_same_bits(models.build(name), x, rng.integers(0, 10, 5))


def test_a_nan_stays_where_the_written_order_puts_it():
    x = np.random.default_rng(2).standard_normal((2, 2, 8, 8))
    x[0, 0, 2, 3] = np.nan
    model = pooled_net(nn.MaxPool2D(2), np.float64)
    model.layers[0].weight.data[...] = 0
    model.layers[0].weight.data[:, :, 1, 1] = 1  # the convolution passes the NaN through to one place
    swapped, written = model(minicnn.tensor(x)).data, layer_by_layer(model, minicnn.tensor(x)).data
    np.testing.assert_array_equal(swapped, written)
    assert np.isnan(swapped[0]).any()


@pytest.mark.parametrize("fast", [True, False])
def test_batch_norm_before_the_relu_and_a_padded_pool(fast):
    """Batch norm's backward gets the pool's cropped gradient straight, not the ReLU's: the same bits."""
    minicnn.manual_seed(5)
    model = nn.Sequential(nn.Conv2D(3, 16, 3, padding=1), nn.BatchNorm2D(16), nn.ReLU(), nn.MaxPool2D(3, 2, 1),
                          nn.Flatten(), nn.Dense(16 * 4 * 4, 5))
    assert pools_before_relu(model.layers[2:4])
    x = np.random.default_rng(6).standard_normal((4, 3, 8, 8)).astype(np.float32)
    with contextlib.nullcontext() if fast else kernels.reference_only():
        assert_same_bits(model, x, np.array([0, 1, 2, 3]))


def test_which_pairs_swap():
    assert pools_before_relu([nn.ReLU(), nn.MaxPool2D(2)])
    assert pools_before_relu([nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)])  # PyTorch's spelling
    assert not pools_before_relu([nn.MaxPool2D(2), nn.ReLU()])
    assert not pools_before_relu([nn.ReLU()])
    assert not pools_before_relu([nn.ReLU(), nn.AvgPool2D(2)])  # the mean does not commute with ReLU
    hooked = nn.ReLU()
    hooked.register_forward_hook(lambda module, inputs, output: None)
    assert not pools_before_relu([hooked, nn.MaxPool2D(2)])


def test_the_relu_runs_on_the_pooled_map(monkeypatch):
    seen = []
    forward = nn.ReLU.forward
    monkeypatch.setattr(nn.ReLU, "forward", lambda self, x: seen.append(x.shape) or forward(self, x))
    model = pooled_net(nn.MaxPool2D(2), np.float32)
    model(minicnn.tensor(np.zeros((1, 2, 8, 8), np.float32)))
    assert seen == [(1, 4, 4, 4)]


def test_a_hook_sees_the_relu_of_the_whole_map():
    model = pooled_net(nn.MaxPool2D(2), np.float32)
    seen = []
    model.layers[1].register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    model(minicnn.tensor(np.zeros((1, 2, 8, 8), np.float32)))
    assert seen == [(1, 4, 8, 8)]


def test_shape_errors_name_the_pool():
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2D(2))
    with pytest.raises(minicnn.errors.ShapeError, match="Sequential layer 1"):
        model(minicnn.tensor(np.zeros((1, 2), np.float32)))


def test_resnet18_stem_gives_the_same_bits_as_with_a_hook_that_keeps_the_written_order():
    minicnn.manual_seed(0)
    model = models.build("resnet18", num_classes=4)
    assert pools_before_relu([model.relu, model.maxpool])
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    labels = np.array([1, 3])
    swapped = outputs_and_gradients(model, lambda model, x: model(x), x, labels)
    model.relu.register_forward_hook(lambda module, inputs, output: None)  # hooked: relu, then max pool
    written = outputs_and_gradients(model, lambda model, x: model(x), x, labels)
    for got, expected in zip(swapped, written):
        np.testing.assert_array_equal(got, expected)
