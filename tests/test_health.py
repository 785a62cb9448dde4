"""HealthMonitor (minicnn/viz/health.py): per-layer statistics recorded by hooks during training."""

import math

import numpy as np
import pytest

import minicnn
from minicnn import nn
from minicnn.training import Trainer
from minicnn.viz.health import HealthMonitor

from conftest import BARS_CLASSES, bars_dataset


def bars_model():
    minicnn.manual_seed(0)
    return nn.Sequential(
        nn.Conv2D(1, 4, 3), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Dense(4 * 5 * 5, 16), nn.ReLU(), nn.Dense(16, len(BARS_CLASSES)),
    )


@pytest.fixture(scope="module")
def two_epochs():
    """A monitor that watched two epochs of training on the bars task (with validation)."""
    images, labels = bars_dataset()
    model = bars_model()
    monitor = HealthMonitor(model)
    trainer = Trainer(model, "adam", lr=0.01)
    trainer.fit(images, labels, epochs=2, batch_size=32, validation_data=(images[:30], labels[:30]),
                callbacks=[monitor], verbose=0)
    return model, monitor, trainer


def test_every_statistic_of_every_layer_has_one_value_per_epoch(two_epochs):
    model, monitor, _ = two_epochs
    history = monitor.history
    assert list(history) == ["0 Conv2D", "1 ReLU", "2 MaxPool2D", "3 Flatten", "4 Dense", "5 ReLU", "6 Dense"]
    for layer, stats in history.items():
        expected = {"activation_mean", "activation_std", "gradient_mean", "gradient_std"}
        expected |= {"dead_relu_share"} if "ReLU" in layer else set()
        expected |= {"weight_grad_ratio", "bias_grad_ratio"} if layer.split()[1] in ("Conv2D", "Dense") else set()
        assert set(stats) == expected, layer
        for stat, values in stats.items():
            assert len(values) == 2 and all(isinstance(v, float) and math.isfinite(v) for v in values), (layer, stat)
    for layer in ("1 ReLU", "5 ReLU"):
        assert all(0 <= share <= 1 for share in history[layer]["dead_relu_share"])
    for layer in ("0 Conv2D", "4 Dense", "6 Dense"):
        assert all(ratio > 0 for ratio in history[layer]["weight_grad_ratio"])
    assert all(std > 0 for stats in history.values() for std in stats["activation_std"] + stats["gradient_std"])
    assert monitor.epochs == 2


def test_one_batch_epoch_records_exactly_the_numbers_of_that_batch():
    images, labels = bars_dataset(count_per_class=4)
    model = bars_model()
    x = minicnn.tensor(images.astype(np.float32))
    # The statistics of the single batch, computed before the step changes the weights.
    conv = model[0](x).numpy()
    relu = np.maximum(conv, 0)
    monitor = HealthMonitor(model)
    Trainer(model, "sgd", lr=0.1).fit(images, labels, epochs=1, batch_size=len(labels), shuffle=False,
                                     callbacks=[monitor], verbose=0)
    history = monitor.history
    assert history["0 Conv2D"]["activation_mean"][0] == pytest.approx(conv.mean(), rel=1e-5)
    assert history["0 Conv2D"]["activation_std"][0] == pytest.approx(conv.std(), rel=1e-5)
    assert history["1 ReLU"]["activation_mean"][0] == pytest.approx(relu.mean(), rel=1e-5)
    dead_channels = (relu == 0).all(axis=(0, 2, 3)).mean()
    assert history["1 ReLU"]["dead_relu_share"][0] == pytest.approx(dead_channels)
    weight = model[4].weight  # after the step, with its gradient still in place
    expected_ratio = np.linalg.norm(weight.grad) / np.linalg.norm(weight.data)
    assert history["4 Dense"]["weight_grad_ratio"][0] == pytest.approx(expected_ratio, rel=1e-5)
    # The gradient reaching the last layer's output is (softmax - one_hot) / N: its rows sum to 0, so its mean is 0.
    assert history["6 Dense"]["gradient_mean"][0] == pytest.approx(0, abs=1e-8)


def test_a_dead_unit_is_zero_for_every_sample_of_the_batch():
    relu = nn.Sequential(nn.ReLU())
    monitor = HealthMonitor(relu)
    images = -np.ones((2, 4, 2, 2))  # channel 0 negative everywhere: dead
    images[0, 1, 0, 0] = 1           # channel 1 fires once, in one sample at one pixel: alive
    images[1, 2] = 1                 # channel 2 fires in the second sample only: alive
    images[:, 3, 1, 1] = 1           # channel 3 fires in both samples: alive
    relu(minicnn.tensor(images))
    features = -np.ones((3, 4))      # dense features 0 and 3 never fire: dead
    features[2, 1] = features[0, 2] = 0.5
    relu(minicnn.tensor(features))
    monitor.on_epoch_end(None, 0, {})
    assert monitor.history["0 ReLU"]["dead_relu_share"] == [pytest.approx((1 / 4 + 2 / 4) / 2)]


def test_only_training_mode_is_recorded_and_remove_detaches_the_hooks(two_epochs):
    model, monitor, trainer = two_epochs
    images, labels = bars_dataset(count_per_class=2)
    trainer.evaluate(images, labels)  # eval mode: nothing recorded
    monitor.on_epoch_end(trainer, 2, {})
    assert all(math.isnan(values[-1]) for stats in monitor.history.values() for values in stats.values())

    fresh = HealthMonitor(model)
    fresh.remove()
    model.train()
    loss = minicnn.functional.cross_entropy(model(minicnn.tensor(images.astype(np.float32))), minicnn.tensor(labels))
    loss.backward()
    fresh.on_epoch_end(trainer, 0, {})
    assert fresh.history == {name: {} for name in monitor.history}  # the hooks saw nothing
    monitor.remove()
    assert not any(module._forward_hooks or module._backward_hooks for module in model.modules())
